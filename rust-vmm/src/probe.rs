//! A functional check of the hypervisor: can it run the code our guests are made of, the way
//! we run it (long mode, CPL 3, SSE)?
//!
//! Opening `/dev/kvm` is not enough. Some hosts expose a KVM that is not hardware virtualization
//! (for example kvm_pvm, a paravirtual, page-table-based KVM running inside another VM): it runs
//! guest user mode natively but emulates guest supervisor code, and its emulator does not know
//! SSE. Our guests run at CPL 3 (docs/abi.md), so this probe runs a tiny CPL-3 guest of SSE
//! instructions, a store to memory and two port writes, and checks every exit.

use crate::backend::ExitKind::IoOut;
use crate::backend::{TableRef, VcpuConfig};
use crate::vm;

/// xorps xmm0,xmm0; pxor xmm1,xmm1; addps xmm0,xmm1; movaps xmm2,xmm0; mov al,0x2a;
/// out 0x10,al; movups [0x20000],xmm2; out 0x11,al; jmp $-2 (back to the last out)
const PROBE_CODE: [u8; 30] = [
    0x0f, 0x57, 0xc0, 0x66, 0x0f, 0xef, 0xc9, 0x0f, 0x58, 0xc1, 0x0f, 0x28, 0xd0, 0xb0, 0x2a, 0xe6,
    0x10, 0x0f, 0x11, 0x14, 0x25, 0x00, 0x00, 0x02, 0x00, 0xe6, 0x11, 0xeb, 0xfc, 0x90,
];
const MEMORY: u64 = 2 << 20;
const CODE_ADDR: usize = 0x10000;
const DATA_ADDR: usize = 0x20000;
/// User-mode selectors (RPL 3); no GDT is read unless an exception happens, and then the probe
/// fails anyway (a triple fault).
const USER_CODE: u16 = 0x23;
const USER_DATA: u16 = 0x1b;
/// IOPL 3 (so `out` is allowed at CPL 3), interrupts off, the always-one bit.
const USER_RFLAGS: u64 = 0x3002;

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
    // Identity page tables for the first 1 GiB with 2 MiB pages, every level user-accessible
    // (present | writable | user): PML4 0x1000, PDPT 0x2000, PD 0x3000.
    bytes[0x1000..0x1008].copy_from_slice(&(0x2000u64 | 7).to_le_bytes());
    bytes[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 7).to_le_bytes());
    for i in 0..512u64 {
        let at = 0x3000 + i as usize * 8;
        bytes[at..at + 8].copy_from_slice(&((i << 21) | 0x87).to_le_bytes());
    }
    bytes[CODE_ADDR..CODE_ADDR + PROBE_CODE.len()].copy_from_slice(&PROBE_CODE);
    bytes[DATA_ADDR..DATA_ADDR + 16].fill(0xff);
    vm.create_vcpu(
        VcpuConfig {
            cr3: 0x1000,
            gdt: TableRef::default(),
            idt: TableRef::default(),
            tss: TableRef::default(),
            code_selector: USER_CODE,
            data_selector: USER_DATA,
            tss_selector: 0,
        },
        true,
    )
    .map_err(|e| e.message)?;
    let vcpu = vm.vcpu().map_err(|e| e.message)?;
    let mut regs = [0u64; 18];
    regs[6] = 0x80000; // rsp
    regs[16] = CODE_ADDR as u64; // rip
    regs[17] = USER_RFLAGS;
    vcpu.set_regs(regs).map_err(|e| e.message)?;
    for port in [0x10u64, 0x11] {
        let kind = vcpu.run(None).map_err(|e| e.message)?;
        // SAFETY: read after the run returned; see ExitCell.
        let exit = unsafe { *vcpu.exit_ptr() };
        if kind != IoOut || exit.a != port || exit.data[0] != 0x2a {
            return Err(format!(
                "a CPL-3 probe guest of SSE instructions ended with {kind:?} (exit detail \
                 {:#x}) where it should write to port {port:#x}: this KVM cannot run our guests",
                exit.a
            ));
        }
    }
    if bytes[DATA_ADDR..DATA_ADDR + 16].iter().any(|&b| b != 0) {
        return Err("a CPL-3 probe guest's SSE store (movups) did not reach memory".into());
    }
    Ok(())
}
