//! The C ABI exercised from Rust, on a real /dev/kvm (run through `deno task vm` where the host
//! has none). With HL_REQUIRE_KVM=1 a missing /dev/kvm fails instead of skipping.

use std::thread;
use std::time::Duration;

use hl_rust_vmm::*;

const MEM: u64 = 2 << 20;
const CODE: usize = 0x10000;

fn kvm_usable() -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable && std::env::var("HL_REQUIRE_KVM").as_deref() == Ok("1") {
        panic!("HL_REQUIRE_KVM=1 but /dev/kvm is not usable: run through `deno task vm`");
    }
    usable
}

/// User-mode (CPL 3) start: cr3, no GDT/IDT/TSS, code 0x23 and data 0x1b selectors.
const USER_CONFIG: [u64; 10] = [0x1000, 0, 0, 0, 0, 0, 0, 0x23, 0x1b, 0];

/// A VM with 2 MiB at 0, user-accessible identity page tables (2 MiB pages) and `code` at
/// 0x10000, started at CPL 3 with IOPL 3.
fn guest(code: &[u8]) -> u32 {
    let mut vm = 0u32;
    let mut slot = 0u32;
    // SAFETY: valid out-pointers; the memory pointer covers MEM bytes until destroy.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm), 0);
        assert_eq!(hl_vm_map_memory(vm, 0, MEM, 0, &mut slot), 0);
        let mem = std::slice::from_raw_parts_mut(hl_vm_memory_ptr(vm, slot), MEM as usize);
        mem[0x1000..0x1008].copy_from_slice(&(0x2000u64 | 7).to_le_bytes());
        mem[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 7).to_le_bytes());
        for i in 0..512u64 {
            let at = 0x3000 + i as usize * 8;
            mem[at..at + 8].copy_from_slice(&((i << 21) | 0x87).to_le_bytes());
        }
        mem[CODE..CODE + code.len()].copy_from_slice(code);
        assert_eq!(hl_vcpu_create(vm, USER_CONFIG.as_ptr()), 0);
        let mut regs = [0u64; 18];
        regs[16] = CODE as u64;
        regs[17] = 0x3002;
        regs[6] = 0x80000;
        assert_eq!(hl_vcpu_set_regs(vm, regs.as_ptr()), 0);
    }
    vm
}

#[test]
fn reports_port_io_and_runs_at_cpl_3() {
    if !kvm_usable() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    // mov al, 7; out 0x42, al; hlt
    let vm = guest(&[0xb0, 0x07, 0xe6, 0x42, 0xf4]);
    assert_eq!(hl_vcpu_run(vm), 1);
    let mut special = [0u64; 8];
    // SAFETY: 8 writable u64.
    assert_eq!(
        unsafe { hl_vcpu_get_special_regs(vm, special.as_mut_ptr()) },
        0
    );
    assert_eq!((special[2], special[5] & 3, special[6]), (0x1000, 3, 0x1b));
    assert_eq!(special[4] & 1, 0, "EFER.SCE must be off (syscall is #UD)");
    // SAFETY: the exit record is valid until destroy.
    let exit = unsafe { &*hl_vcpu_exit_ptr(vm) };
    assert_eq!(
        (exit.kind, exit.a, exit.b, exit.data_len, exit.data[0]),
        (1, 0x42, 1, 1, 7)
    );
    // `hlt` is privileged: at CPL 3 it is #GP, which with no IDT ends in a triple fault.
    assert_eq!(hl_vcpu_run(vm), 4);
    assert_eq!(hl_vm_destroy(vm), 0);
    assert_eq!(hl_vm_destroy(vm), -1);
    assert_eq!(hl_vcpu_run(vm), -1);
}

#[test]
fn interrupt_from_another_thread_stops_a_spinning_guest() {
    if !kvm_usable() {
        eprintln!("skipped: no usable /dev/kvm");
        return;
    }
    let vm = guest(&[0xeb, 0xfe]);
    let runner = thread::spawn(move || hl_vcpu_run(vm));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(hl_vcpu_interrupt(vm), 0);
    assert_eq!(runner.join().unwrap(), 8);
    // Destroying while a run is in flight interrupts it.
    let runner = thread::spawn(move || hl_vcpu_run(vm));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(hl_vm_destroy(vm), 0);
    let rc = runner.join().unwrap();
    assert!(rc == 8 || rc == -1 || rc == -9, "run ended with {rc}");
}

#[test]
fn bad_arguments_are_errors_not_crashes() {
    let mut vm = 0u32;
    // SAFETY: null pointers are what is being tested; the library checks them.
    unsafe {
        assert_eq!(hl_vm_create(std::ptr::null_mut()), -2);
        assert_eq!(hl_hypervisor_info(std::ptr::null_mut()), -2);
        assert_eq!(hl_vm_stats(999_999, [0u64; 3].as_mut_ptr()), -1);
        if !kvm_usable() {
            assert!(hl_vm_create(&mut vm) < 0);
            return;
        }
        assert_eq!(hl_vm_create(&mut vm), 0);
        let mut slot = 0;
        assert_eq!(hl_vm_map_memory(vm, 0, 0, 0, &mut slot), -2);
        assert_eq!(hl_vm_map_memory(vm, 0, 4095, 0, &mut slot), -2);
        assert_eq!(hl_vm_map_memory(vm, 0, 4096, 2, &mut slot), -2);
        let mut buf = [0u8; 128];
        let n = hl_last_error(vm, buf.as_mut_ptr(), buf.len() as u32);
        let text = std::str::from_utf8(&buf[..n.min(128) as usize]).unwrap();
        assert!(text.contains("flags"), "{text}");
        assert_eq!(hl_vcpu_create(vm, std::ptr::null()), -2);
        let mut bad = USER_CONFIG;
        bad[0] = 0x1001; // cr3 not page-aligned
        assert_eq!(hl_vcpu_create(vm, bad.as_ptr()), -2);
        bad = USER_CONFIG;
        bad[7] = 0x21; // CPL 1
        assert_eq!(hl_vcpu_create(vm, bad.as_ptr()), -2);
        bad = USER_CONFIG;
        bad[8] = 0x18; // data RPL 0 with code RPL 3
        assert_eq!(hl_vcpu_create(vm, bad.as_ptr()), -2);
        bad = USER_CONFIG;
        bad[2] = 0x10000; // GDT limit above 16 bits
        assert_eq!(hl_vcpu_create(vm, bad.as_ptr()), -2);
        assert_eq!(hl_vcpu_get_special_regs(vm, [0u64; 8].as_mut_ptr()), -9);
        assert_eq!(hl_vm_destroy(vm), 0);
    }
}
