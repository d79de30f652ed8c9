//! A functional check of the hypervisor: can it run the code our guests are made of?
//!
//! Opening `/dev/kvm` is not enough. Some hosts expose a KVM that is not hardware virtualization
//! (for example a paravirtual, page-table-based KVM running inside another VM) and cannot run a
//! freestanding guest: every SSE instruction traps to KVM's instruction emulator, which does not
//! know most of them (`xorps` ends in an emulation failure). The stable Rust target our guests
//! are built on uses SSE everywhere, so such a KVM is unusable for them. This probe runs a tiny
//! long-mode guest with the instructions that broke there and checks it reaches `hlt`.

use crate::backend::ExitKind::{Halt, IoOut};
use crate::vm;

/// xorps xmm0,xmm0; pxor xmm1,xmm1; addps xmm0,xmm1; movaps xmm2,xmm0; out 0x10,al; hlt
const PROBE_CODE: [u8; 18] = [
    0x0f, 0x57, 0xc0, 0x66, 0x0f, 0xef, 0xc9, 0x0f, 0x58, 0xc1, 0x0f, 0x28, 0xd0, 0xb0, 0x2a, 0xe6,
    0x10, 0xf4,
];
const MEMORY: u64 = 2 << 20;
const CODE_ADDR: usize = 0x10000;

/// Runs the probe guest. `Ok` when the hypervisor ran it correctly; otherwise a message that
/// says what went wrong.
pub fn run() -> Result<(), String> {
    let handle = vm::create().map_err(|e| e.message)?;
    let result = run_in(handle);
    let _ = vm::destroy(handle);
    result
}

fn run_in(handle: u32) -> Result<(), String> {
    let vm = vm::lookup(handle).map_err(|e| e.message)?;
    let slot = vm.map_memory(0, MEMORY, false).map_err(|e| e.message)?;
    let memory = vm.memory(slot).map_err(|e| e.message)?;
    // SAFETY: the mapping is MEMORY bytes long and stays alive while `memory` is held; no vCPU
    // runs yet, so nothing else accesses it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), MEMORY as usize) };
    // Identity page tables for the first 1 GiB with 2 MiB pages: PML4 0x1000, PDPT 0x2000,
    // PD 0x3000.
    bytes[0x1000..0x1008].copy_from_slice(&(0x2000u64 | 3).to_le_bytes());
    bytes[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 3).to_le_bytes());
    for i in 0..512u64 {
        let at = 0x3000 + i as usize * 8;
        bytes[at..at + 8].copy_from_slice(&((i << 21) | 0x83).to_le_bytes());
    }
    bytes[CODE_ADDR..CODE_ADDR + PROBE_CODE.len()].copy_from_slice(&PROBE_CODE);
    vm.create_vcpu(0x1000).map_err(|e| e.message)?;
    let vcpu = vm.vcpu().map_err(|e| e.message)?;
    let mut regs = [0u64; 18];
    regs[6] = 0x80000; // rsp
    regs[16] = CODE_ADDR as u64; // rip
    regs[17] = 2; // rflags
    vcpu.set_regs(regs).map_err(|e| e.message)?;
    let first = vcpu.run().map_err(|e| e.message)?;
    let second = if first == IoOut {
        Some(vcpu.run().map_err(|e| e.message)?)
    } else {
        None
    };
    // SAFETY: read after the run returned; see ExitCell.
    let exit = unsafe { *vcpu.exit_ptr() };
    match (first, second) {
        (IoOut, Some(Halt)) => Ok(()),
        _ => Err(format!(
            "a probe guest of SSE instructions ended with {:?} (exit detail {:#x}), not out+hlt: \
             this KVM cannot run guests built with SSE (it is not hardware virtualization)",
            second.unwrap_or(first),
            exit.a
        )),
    }
}
