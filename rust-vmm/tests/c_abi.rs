//! The C ABI exercised from Rust, on a real /dev/kvm (run through `deno task vm` where the host
//! has none). With HL_REQUIRE_KVM=1 a missing /dev/kvm fails instead of skipping.

use std::sync::mpsc::channel;
use std::thread;
use std::time::{Duration, Instant};

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

/// Returns from the test when there is no usable /dev/kvm (a failure instead, through
/// `kvm_usable`, when HL_REQUIRE_KVM=1).
macro_rules! require_kvm {
    () => {
        if !kvm_usable() {
            eprintln!("skipped: no usable /dev/kvm");
            return;
        }
    };
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
    require_kvm!();
    // mov al, 7; out 0x42, al; hlt
    let vm = guest(&[0xb0, 0x07, 0xe6, 0x42, 0xf4]);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_run(vm, 0), 1);
    let mut special = [0u64; 8];
    // SAFETY: 8 writable u64.
    let rc = unsafe { hl_vcpu_get_special_regs(vm, special.as_mut_ptr()) };
    assert_eq!(rc, 0);
    assert_eq!((special[2], special[5] & 3, special[6]), (0x1000, 3, 0x1b));
    assert_eq!(special[4] & 1, 0, "EFER.SCE must be off (syscall is #UD)");
    // SAFETY: the exit record is valid until destroy.
    let exit = unsafe { &*hl_vcpu_exit_ptr(vm) };
    assert_eq!(
        (exit.kind, exit.a, exit.b, exit.data_len, exit.data[0]),
        (1, 0x42, 1, 1, 7)
    );
    // `hlt` is privileged: at CPL 3 it is #GP, which with no IDT ends in a triple fault.
    assert_eq!(hl_vcpu_run(vm, 0), 4);
    assert_eq!(hl_vm_destroy(vm), 0);
    assert_eq!(hl_vm_destroy(vm), -1);
    assert_eq!(hl_vcpu_run(vm, 0), -1);
    assert_eq!(hl_vcpu_start(vm), -1);
}

/// `hl_hypervisor_info`'s `out[7]` (version 13): what the VM grants beyond SSE. A new vCPU has
/// CR4.OSXSAVE exactly where the AVX state is granted, and there the guest's `xgetbv` reads x87,
/// SSE and AVX enabled and an AVX instruction runs. Where the grant is absent (no AVX in the CPU,
/// no XCRs in KVM, `HL_VCPU_AVX=0`) the SSE-only setup is checked instead.
#[test]
fn the_avx_grant_is_reported_and_set_up() {
    require_kvm!();
    let mut info = [0u64; 8];
    // SAFETY: 8 writable u64.
    assert_eq!(unsafe { hl_hypervisor_info(info.as_mut_ptr()) }, 0);
    let granted = info[7];
    assert_eq!(granted & !0x7f, 0, "{granted:#x}: bits 0-6 only");
    let avx = granted & 1 != 0;
    assert_eq!(
        avx,
        granted & 2 != 0,
        "AVX with the AVX state, and only with it"
    );
    if !avx {
        assert_eq!(granted & 0b1100, 0, "AVX2 and FMA need the AVX state");
    }
    // xor ecx, ecx; xgetbv; out 0x42, al; vxorps ymm0, ymm0, ymm0; mov al, 9; out 0x42, al
    let vm = guest(&[
        0x31, 0xc9, 0x0f, 0x01, 0xd0, 0xe6, 0x42, 0xc5, 0xfc, 0x57, 0xc0, 0xb0, 0x09, 0xe6, 0x42,
    ]);
    let mut special = [0u64; 8];
    // SAFETY: 8 writable u64.
    let rc = unsafe { hl_vcpu_get_special_regs(vm, special.as_mut_ptr()) };
    assert_eq!(rc, 0);
    assert_eq!(special[3] & (1 << 18) != 0, avx, "CR4.OSXSAVE");
    if avx {
        assert_eq!(hl_vcpu_begin_call(vm), 0);
        assert_eq!(hl_vcpu_run(vm, 0), 1, "{}", last_error(vm));
        // SAFETY: the exit record is valid until destroy.
        let xcr0 = unsafe { (*hl_vcpu_exit_ptr(vm)).data[0] };
        assert_eq!(xcr0 & 0b111, 0b111, "XCR0 {xcr0:#x}");
        assert_eq!(hl_vcpu_run(vm, 0), 1, "the AVX instruction ran");
        // SAFETY: as above.
        let marker = unsafe { (*hl_vcpu_exit_ptr(vm)).data[0] };
        assert_eq!(marker, 9);
    }
    assert_eq!(hl_vm_destroy(vm), 0);
}

#[test]
fn interrupt_from_another_thread_stops_a_spinning_guest() {
    require_kvm!();
    let vm = guest(JMP_SELF);
    let runner = thread::spawn(move || hl_vcpu_run(vm, 0));
    thread::sleep(Duration::from_millis(100));
    assert_eq!(hl_vcpu_interrupt(vm), 0);
    assert_eq!(runner.join().unwrap(), 8);
    // Destroying while a run is in flight interrupts it.
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    let runner = thread::spawn(move || hl_vcpu_run(vm, 0));
    thread::sleep(Duration::from_millis(50));
    assert_eq!(hl_vm_destroy(vm), 0);
    let rc = runner.join().unwrap();
    assert!(rc == 8 || rc == -1 || rc == -9, "run ended with {rc}");
}

/// `out 0x10, al; jmp back`: one IO_OUT exit per run, forever.
const OUT_LOOP: &[u8] = &[0xe6, 0x10, 0xeb, 0xfc];
/// `jmp $`: never exits on its own.
const JMP_SELF: &[u8] = &[0xeb, 0xfe];

fn last_error(vm: u32) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: 256 writable bytes.
    let n = unsafe { hl_last_error(vm, buf.as_mut_ptr(), buf.len() as u32) };
    String::from_utf8_lossy(&buf[..(n.max(0) as usize).min(buf.len())]).into_owned()
}

fn stats(vm: u32) -> [u64; 3] {
    let mut out = [0u64; 3];
    // SAFETY: 3 writable u64.
    assert_eq!(unsafe { hl_vm_stats(vm, out.as_mut_ptr()) }, 0);
    out
}

#[test]
fn start_poll_wait_round_trip() {
    require_kvm!();
    let vm = guest(OUT_LOOP);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    // Nothing outstanding yet.
    assert_eq!(hl_vcpu_poll(vm, 0), -9);
    assert_eq!(hl_vcpu_wait(vm), -9);
    assert_eq!(hl_vcpu_start(vm), 0);
    // One outstanding run at a time, until its result is taken.
    assert_eq!(hl_vcpu_start(vm), -9);
    assert_eq!(hl_vcpu_run(vm, 0), -9);
    assert_eq!(hl_vcpu_wait(vm), 1);
    // SAFETY: read after the run's result was taken.
    let exit = unsafe { *hl_vcpu_exit_ptr(vm) };
    assert_eq!((exit.kind, exit.a, exit.b), (1, 0x10, 1));
    assert_eq!(hl_vcpu_wait(vm), -9, "the result was taken");
    for _ in 0..100 {
        assert_eq!(hl_vcpu_start(vm), 0);
        let start = Instant::now();
        let rc = loop {
            let rc = hl_vcpu_poll(vm, 10_000);
            if rc != 0 {
                break rc;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "poll never saw the exit"
            );
        };
        assert_eq!(rc, 1);
    }
    // A waiter on another thread (Deno's pool thread) takes a run started here.
    assert_eq!(hl_vcpu_start(vm), 0);
    assert_eq!(thread::spawn(move || hl_vcpu_wait(vm)).join().unwrap(), 1);
    assert_eq!(hl_vm_destroy(vm), 0);
}

#[test]
fn poll_says_running_until_interrupted() {
    require_kvm!();
    let vm = guest(JMP_SELF);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_start(vm), 0);
    thread::sleep(Duration::from_millis(20));
    assert_eq!(hl_vcpu_poll(vm, 0), 0);
    assert_eq!(hl_vcpu_poll(vm, 100_000), 0);
    assert_eq!(hl_vcpu_interrupt(vm), 0);
    assert_eq!(hl_vcpu_wait(vm), 8);
    // SAFETY: read after the run's result was taken.
    assert_eq!(unsafe { (*hl_vcpu_exit_ptr(vm)).kind }, 8);
    assert_eq!(hl_vm_destroy(vm), 0);
}

#[test]
fn the_stop_is_sticky_until_begin_call() {
    require_kvm!();
    let vm = guest(OUT_LOOP);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_run(vm, 0), 1);
    // An interrupt with no run in flight is not lost: it stops every later run...
    assert_eq!(hl_vcpu_interrupt(vm), 0);
    let runs = stats(vm)[2];
    assert_eq!(hl_vcpu_run(vm, 0), 8);
    assert_eq!(hl_vcpu_run(vm, 0), 8);
    assert_eq!(hl_vcpu_start(vm), 0);
    assert_eq!(hl_vcpu_wait(vm), 8);
    assert_eq!(
        stats(vm)[2],
        runs,
        "an interrupted run must not enter the guest"
    );
    // ...until the next guest call begins.
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_run(vm, 0), 1);
    assert_eq!(hl_vcpu_run(vm, 0), 1);
    assert_eq!(stats(vm)[2], runs + 2);
    assert_eq!(hl_vm_destroy(vm), 0);
    assert_eq!(hl_vcpu_begin_call(vm), -1);
}

#[test]
fn a_run_times_out() {
    require_kvm!();
    let vm = guest(JMP_SELF);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    let start = Instant::now();
    assert_eq!(hl_vcpu_run(vm, 20_000_000), 10);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(20) && took < Duration::from_secs(2),
        "a 20 ms timeout took {took:?}"
    );
    // The timeout set the stop, as an interrupt does.
    assert_eq!(hl_vcpu_run(vm, 0), 8);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_run(vm, 5_000_000), 10);
    assert_eq!(hl_vm_destroy(vm), 0);
}

#[test]
fn destroy_wakes_a_blocked_wait() {
    require_kvm!();
    for guest_code in [JMP_SELF, OUT_LOOP] {
        let vm = guest(guest_code);
        assert_eq!(hl_vcpu_begin_call(vm), 0);
        if guest_code == OUT_LOOP {
            // Leave the run's answer untaken, then wait on a finished run: returns at once.
            assert_eq!(hl_vcpu_start(vm), 0);
            assert_eq!(hl_vcpu_wait(vm), 1);
        }
        assert_eq!(hl_vcpu_start(vm), 0);
        let (tx, rx) = channel();
        let waiter = thread::spawn(move || {
            let rc = hl_vcpu_wait(vm);
            tx.send(rc).unwrap();
            rc
        });
        thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        assert_eq!(hl_vm_destroy(vm), 0);
        let rc = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("hl_vcpu_wait hung after hl_vm_destroy");
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(rc == 8 || rc == 1 || rc == -9, "wait ended with {rc}");
        waiter.join().unwrap();
        assert_eq!(hl_vcpu_wait(vm), -1);
    }
}

#[test]
fn registers_are_refused_while_a_run_is_outstanding() {
    require_kvm!();
    let vm = guest(JMP_SELF);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_start(vm), 0);
    let mut regs = [0u64; 18];
    // SAFETY: 18 readable/writable u64, 8 writable u64.
    unsafe {
        assert_eq!(hl_vcpu_set_regs(vm, regs.as_ptr()), -9);
        assert!(
            last_error(vm).contains("run is in progress"),
            "{}",
            last_error(vm)
        );
        assert_eq!(hl_vcpu_get_regs(vm, regs.as_mut_ptr()), -9);
        assert_eq!(hl_vcpu_get_special_regs(vm, [0u64; 8].as_mut_ptr()), -9);
    }
    assert_eq!(hl_vcpu_interrupt(vm), 0);
    assert_eq!(hl_vcpu_wait(vm), 8);
    // SAFETY: as above.
    unsafe {
        assert_eq!(hl_vcpu_get_regs(vm, regs.as_mut_ptr()), 0);
        assert_eq!(regs[16], CODE as u64, "rip stays on the jmp");
        regs[0] = 0x1234;
        assert_eq!(hl_vcpu_set_regs(vm, regs.as_ptr()), 0);
        let mut back = [0u64; 18];
        assert_eq!(hl_vcpu_get_regs(vm, back.as_mut_ptr()), 0);
        assert_eq!(back[0], 0x1234);
    }
    assert_eq!(hl_vm_destroy(vm), 0);
}

#[test]
fn ten_thousand_sync_runs_cost_one_ioctl_each() {
    require_kvm!();
    let vm = guest(OUT_LOOP);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    let before = stats(vm);
    for i in 0..10_000u32 {
        let rc = hl_vcpu_run(vm, 0);
        assert_eq!(rc, 1, "run {i}");
    }
    // SAFETY: read after the last run's result was taken.
    let exit = unsafe { *hl_vcpu_exit_ptr(vm) };
    assert_eq!((exit.kind, exit.a), (1, 0x10));
    let after = stats(vm);
    assert_eq!(after[0] - before[0], 10_000, "ioctls");
    assert_eq!(after[1] - before[1], 10_000, "exits");
    assert_eq!(after[2] - before[2], 10_000, "runs");
    assert_eq!(hl_vm_destroy(vm), 0);
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

/// Each run: `movq rcx, xmm0; mov rax, [0x20000]; inc rax; mov [0x20000], rax; movq xmm0, rax;
/// add rbx, 1; out 0x10, al`, then back to the start. Memory, a GPR and an SSE register all change
/// on every run, so what a restore brings back is visible in rax/rbx/rcx after the next run.
const STATEFUL: &[u8] = &[
    0x66, 0x48, 0x0f, 0x7e, 0xc1, // movq rcx, xmm0
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // mov rax, [0x20000]
    0x48, 0xff, 0xc0, // inc rax
    0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, // mov [0x20000], rax
    0x66, 0x48, 0x0f, 0x6e, 0xc0, // movq xmm0, rax
    0x48, 0x83, 0xc3, 0x01, // add rbx, 1
    0xe6, 0x10, // out 0x10, al
    0xeb, 0xdb, // jmp start
];

fn get_state(vm: u32) -> Vec<u8> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: `buf` has 16384 writable bytes.
    let n = unsafe { hl_vcpu_get_state(vm, buf.as_mut_ptr(), buf.len() as u32) };
    assert!(
        n > 0 && (n as usize) <= buf.len(),
        "get_state: {n} {}",
        last_error(vm)
    );
    buf.truncate(n as usize);
    buf
}

/// rax (memory counter), rbx (GPR counter) and rcx (xmm0 at the start of the run) after one run.
fn run_counters(vm: u32) -> (u64, u64, u64) {
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_run(vm, 0), 1, "{}", last_error(vm));
    let mut regs = [0u64; 18];
    // SAFETY: 18 writable u64.
    assert_eq!(unsafe { hl_vcpu_get_regs(vm, regs.as_mut_ptr()) }, 0);
    (regs[0], regs[1], regs[2])
}

fn global() -> [u64; 4] {
    let mut out = [0u64; 4];
    // SAFETY: 4 writable u64.
    assert_eq!(unsafe { hl_global_stats(out.as_mut_ptr()) }, 0);
    out
}

#[test]
fn snapshot_restore_and_map_bring_back_memory_registers_and_sse() {
    require_kvm!();
    let vm = guest(STATEFUL);
    assert_eq!(run_counters(vm), (1, 1, 0));
    let mut snap = 0u32;
    // SAFETY: one writable u32.
    let rc = unsafe { hl_snapshot_memory(vm, 0, &mut snap) };
    assert_eq!(rc, 0, "{}", last_error(vm));
    let state = get_state(vm);
    let mut info = [0u64; 2];
    // SAFETY: 2 writable u64.
    assert_eq!(unsafe { hl_snapshot_info(snap, info.as_mut_ptr()) }, 0);
    assert_eq!(info[0], MEM);
    // Page tables (3 pages), the code page and the counter page: sparse, not 512 pages.
    assert!(info[1] >= 4 && info[1] <= 8, "data pages {}", info[1]);
    assert_eq!(run_counters(vm), (2, 2, 1));
    assert_eq!(run_counters(vm), (3, 3, 2));

    // Restore in place: memory (MADV_DONTNEED), GPRs and xmm0 are back.
    for _ in 0..3 {
        // Version 8: the pages put back (the guest wrote at least its counter page since).
        let pages = hl_vm_rebase_memory(vm, 0, snap);
        assert!(
            pages >= 1 && (pages as u64) < MEM / 4096,
            "{pages}: {}",
            last_error(vm)
        );
        // SAFETY: `state` is readable for its length.
        let rc = unsafe { hl_vcpu_set_state(vm, state.as_ptr(), state.len() as u32) };
        assert_eq!(rc, 0, "{}", last_error(vm));
        assert_eq!(run_counters(vm), (2, 2, 1));
    }

    // The same in one call, overlapped.
    for _ in 0..3 {
        // SAFETY: `state` is readable for its length.
        let rc = unsafe { hl_vm_restore(vm, 0, snap, state.as_ptr(), state.len() as u32) };
        assert!(
            rc >= 1 && (rc as u64) < MEM / 4096,
            "{rc}: {}",
            last_error(vm)
        );
        assert_eq!(run_counters(vm), (2, 2, 1));
    }

    // A new VM from the snapshot, copy-on-write: it starts where the snapshot was taken, and
    // neither VM sees the other's writes.
    let mut vm2 = 0u32;
    let mut slot = 0u32;
    // SAFETY: valid out-pointers, config and state buffers.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm2), 0);
        assert_eq!(
            hl_vm_map_snapshot(vm2, 0, snap, &mut slot),
            0,
            "{}",
            last_error(vm2)
        );
        assert_eq!(hl_vcpu_create(vm2, USER_CONFIG.as_ptr()), 0);
        assert_eq!(
            hl_vcpu_set_state(vm2, state.as_ptr(), state.len() as u32),
            0
        );
    }
    assert_eq!(run_counters(vm2), (2, 2, 1));
    assert_eq!(run_counters(vm2), (3, 3, 2));
    assert_eq!(run_counters(vm), (3, 3, 2));

    // Released: the handle is gone, the VMs based on it run on.
    assert_eq!(hl_snapshot_release(snap), 0);
    assert_eq!(hl_snapshot_release(snap), -1);
    assert_eq!(hl_vm_rebase_memory(vm, 0, snap), -1);
    assert_eq!(run_counters(vm2), (4, 4, 3));

    // A blob that is not ours is refused before any ioctl.
    let mut bad = state.clone();
    bad[0] ^= 1;
    // SAFETY: readable buffers of the given lengths.
    unsafe {
        assert_eq!(hl_vcpu_set_state(vm, bad.as_ptr(), bad.len() as u32), -2);
        assert_eq!(hl_vcpu_set_state(vm, state.as_ptr(), 10), -2);
    }
    // A buffer too small: the length comes back, nothing is written.
    let mut small = [0u8; 4];
    // SAFETY: 4 writable bytes.
    let n = unsafe { hl_vcpu_get_state(vm, small.as_mut_ptr(), 4) };
    assert_eq!(n as usize, state.len());
    assert_eq!(small, [0; 4]);
    assert_eq!(hl_vm_destroy(vm), 0);
    assert_eq!(hl_vm_destroy(vm2), 0);
}

#[test]
fn snapshot_calls_check_their_arguments() {
    require_kvm!();
    let vm = guest(STATEFUL);
    let mut snap = 0u32;
    // SAFETY: null and valid out-pointers as stated.
    unsafe {
        assert_eq!(hl_snapshot_memory(vm, 0, std::ptr::null_mut()), -2);
        assert_eq!(hl_snapshot_memory(vm, 7, &mut snap), -2);
        assert_eq!(hl_snapshot_memory(0xdead, 0, &mut snap), -1);
        assert_eq!(hl_snapshot_memory(vm, 0, &mut snap), 0);
    }
    assert!(global()[2] >= 1);
    // A run outstanding: no snapshot, no rebase, no state.
    let state = get_state(vm);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_start(vm), 0);
    let mut other = 0u32;
    // SAFETY: one writable u32.
    assert_eq!(unsafe { hl_snapshot_memory(vm, 0, &mut other) }, -9);
    assert_eq!(hl_vm_rebase_memory(vm, 0, snap), -9);
    // SAFETY: `state` is readable for its length.
    let rc = unsafe { hl_vcpu_set_state(vm, state.as_ptr(), state.len() as u32) };
    assert_eq!(rc, -9);
    // SAFETY: as above.
    let rc = unsafe { hl_vm_restore(vm, 0, snap, state.as_ptr(), state.len() as u32) };
    assert_eq!(rc, -9);
    assert_eq!(hl_vcpu_wait(vm), 1);
    // A snapshot of another size does not fit this region.
    let mut vm2 = 0u32;
    let mut slot = 0u32;
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm2), 0);
        assert_eq!(hl_vm_map_memory(vm2, 0, 4096, 0, &mut slot), 0);
        assert_eq!(hl_vm_rebase_memory(vm2, 0, snap), -2);
        // Overlaps slot 0.
        assert_eq!(hl_vm_map_snapshot(vm2, 0, snap, &mut slot), -2);
        assert_eq!(hl_vm_map_snapshot(vm2, 1 << 30, snap, &mut slot), 0);
    }
    assert_eq!(hl_snapshot_release(snap), 0);
    assert_eq!(hl_vm_destroy(vm), 0);
    assert_eq!(hl_vm_destroy(vm2), 0);
}

/// Whether a thread of this process is named `name` (names are cut at 15 bytes).
fn thread_named(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
        let comm = t.unwrap().path().join("comm");
        std::fs::read_to_string(comm).is_ok_and(|c| c.trim_end() == name)
    })
}

/// Version 5: `hl_vm_destroy` leaves the teardown to a background thread, but the guest never
/// runs again once it returns, and `hl_teardown_wait` returns only once the vCPU thread is gone.
#[test]
fn destroy_stops_the_guest_at_once_and_teardown_wait_frees_the_rest() {
    require_kvm!();
    // jmp $: a guest that never exits by itself.
    let vm = guest(&[0xeb, 0xfe]);
    assert_eq!(hl_vcpu_begin_call(vm), 0);
    assert_eq!(hl_vcpu_start(vm), 0);
    let name = format!("hl-vcpu-{vm}");
    assert!(thread_named(&name));
    assert_eq!(hl_vm_destroy(vm), 0);
    // The handle is gone at once, and so is every way to the guest.
    assert_eq!(hl_vcpu_start(vm), -1);
    assert_eq!(hl_vm_destroy(vm), -1);
    assert!(hl_teardown_wait() >= 0);
    assert!(!thread_named(&name), "the vCPU thread was joined");
}

/// Version 7: `hl_vcpu_create_start` returns before the vCPU exists; memory can be mapped and
/// filled meanwhile, and the next vCPU call waits for the creation.
#[test]
fn an_overlapped_creation_lets_memory_be_filled_meanwhile() {
    require_kvm!();
    let mut vm = 0u32;
    let mut slot = 0u32;
    // SAFETY: valid out-pointers; the memory pointer covers MEM bytes until destroy.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm), 0);
        assert_eq!(hl_vcpu_create_start(vm, USER_CONFIG.as_ptr()), 0);
        // A second creation is refused whether or not the first has finished.
        assert_eq!(hl_vcpu_create_start(vm, USER_CONFIG.as_ptr()), -9);
        assert_eq!(hl_vm_map_memory(vm, 0, MEM, 0, &mut slot), 0);
        let mem = std::slice::from_raw_parts_mut(hl_vm_memory_ptr(vm, slot), MEM as usize);
        mem[0x1000..0x1008].copy_from_slice(&(0x2000u64 | 7).to_le_bytes());
        mem[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 7).to_le_bytes());
        mem[0x3000..0x3008].copy_from_slice(&0x87u64.to_le_bytes());
        // out 0x10, al; jmp $-2
        mem[CODE..CODE + 4].copy_from_slice(&[0xe6, 0x10, 0xeb, 0xfc]);
        let mut regs = [0u64; 18];
        regs[16] = CODE as u64;
        regs[17] = 0x3002;
        regs[6] = 0x80000;
        assert_eq!(hl_vcpu_set_regs(vm, regs.as_ptr()), 0);
        assert_eq!(hl_vcpu_begin_call(vm), 0);
        assert_eq!(hl_vcpu_run(vm, 0), 1, "{}", last_error(vm));
        assert_eq!((*hl_vcpu_exit_ptr(vm)).a, 0x10);
    }
    assert_eq!(hl_vm_destroy(vm), 0);
    // Destroyed while the creation may still be under way: nothing hangs or leaks.
    let mut vm2 = 0u32;
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm2), 0);
        assert_eq!(hl_vcpu_create_start(vm2, USER_CONFIG.as_ptr()), 0);
    }
    assert_eq!(hl_vm_destroy(vm2), 0);
    assert!(hl_teardown_wait() >= 0);
}

/// A creation that KVM refuses (a page-table root beyond any physical address width: SET_SREGS
/// fails on the vCPU thread) is reported by the next vCPU call and every one after it with an
/// overlapped creation, and by the creation itself otherwise (the VM then has no vCPU; KVM keeps
/// vCPU 0's id taken, so it cannot be created again in that VM).
#[test]
fn a_refused_creation_is_reported_by_the_calls_that_follow() {
    require_kvm!();
    let mut bad = USER_CONFIG;
    bad[0] = 1 << 62;
    let regs = [0u64; 18];
    let mut vm = 0u32;
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm), 0);
        assert_eq!(hl_vcpu_create_start(vm, bad.as_ptr()), 0);
        for _ in 0..2 {
            assert_eq!(hl_vcpu_set_regs(vm, regs.as_ptr()), -6);
            assert!(
                last_error(vm).contains("KVM_SET_SREGS"),
                "{}",
                last_error(vm)
            );
        }
        assert_eq!(hl_vcpu_run(vm, 0), -6);
    }
    assert_eq!(hl_vm_destroy(vm), 0);
    let mut vm = 0u32;
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(hl_vm_create(&mut vm), 0);
        assert_eq!(hl_vcpu_create(vm, bad.as_ptr()), -6);
        assert_eq!(
            hl_vcpu_set_regs(vm, regs.as_ptr()),
            -9,
            "no vCPU after a failed creation"
        );
    }
    assert_eq!(hl_vm_destroy(vm), 0);
    assert!(hl_teardown_wait() >= 0);
}

/// Calls `hl_op` with `args` (padded to `OP_WORDS`), returning the status and the block after.
fn op_call(code: u32, args: &[u64]) -> (i32, [u64; OP_WORDS]) {
    let mut block = [0u64; OP_WORDS];
    block[..args.len()].copy_from_slice(args);
    // SAFETY: `block` is OP_WORDS aligned u64; the callers pass pointer words that are valid for
    // the entry point they name.
    let rc = unsafe { hl_op(code, block.as_mut_ptr()) };
    (rc, block)
}

#[test]
fn hl_op_refuses_what_it_cannot_dispatch() {
    assert_eq!(hl_abi_version(), 13);
    // SAFETY: a null block is refused before it is read.
    assert_eq!(unsafe { hl_op(op::VM_DESTROY, std::ptr::null_mut()) }, -2);
    let mut message = [0u8; 256];
    let last = |message: &mut [u8; 256]| {
        // SAFETY: 256 writable bytes.
        let n = unsafe { hl_last_error(0, message.as_mut_ptr(), 256) } as usize;
        String::from_utf8_lossy(&message[..n.min(256)]).into_owned()
    };
    assert_eq!(op_call(0, &[]).0, -2);
    assert!(
        last(&mut message).contains("unknown op 0"),
        "{}",
        last(&mut message)
    );
    assert_eq!(op_call(op::SNAPSHOT_MAP_FILE_KNOWN + 1, &[]).0, -2);
    assert!(last(&mut message).contains("unknown op"));
    // The newest op with null pointers: refused, never read through.
    assert_eq!(op_call(op::SNAPSHOT_MAP_FILE_KNOWN, &[]).0, -2);
    // A 32-bit argument out of range is refused, not truncated to another handle.
    assert_eq!(op_call(op::VM_DESTROY, &[1 << 32]).0, -2);
    assert!(last(&mut message).contains("32 bits"));
    // A misaligned block.
    let mut words = [0u64; OP_WORDS + 1];
    // SAFETY: one byte into `words` leaves OP_WORDS * 8 readable bytes; it is refused as misaligned
    // before it is read.
    let rc = unsafe {
        hl_op(
            op::VM_DESTROY,
            words.as_mut_ptr().cast::<u8>().add(1).cast(),
        )
    };
    assert_eq!(rc, -2);
    // The entry points' own checks still apply: a null out-pointer, an unknown handle.
    assert_eq!(op_call(op::GLOBAL_STATS, &[0]).0, -2);
    assert_eq!(op_call(op::VM_DESTROY, &[0xdead]).0, -1);
    assert_eq!(op_call(op::SNAPSHOT_RELEASE, &[0xdead]).0, -1);
    assert_eq!(op_call(op::VM_MEMORY_DROP, &[0xdead, 0, 0, 4096]).0, -1);
}

#[test]
fn hl_op_reaches_the_same_entry_points() {
    // Snapshots need no KVM: made, described, released through hl_op.
    let data = vec![7u8; 8192];
    let mut snap = 0u32;
    let (rc, _) = op_call(
        op::SNAPSHOT_FROM_BYTES,
        &[
            data.as_ptr() as u64,
            data.len() as u64,
            &mut snap as *mut u32 as u64,
        ],
    );
    assert_eq!(rc, 0);
    assert_ne!(snap, 0);
    let mut info = [0u64; 2];
    assert_eq!(
        op_call(op::SNAPSHOT_INFO, &[snap.into(), info.as_mut_ptr() as u64]).0,
        0
    );
    assert_eq!(info, [8192, 2]);
    assert_eq!(op_call(op::SNAPSHOT_RELEASE, &[snap.into()]).0, 0);
    assert_eq!(op_call(op::SNAPSHOT_RELEASE, &[snap.into()]).0, -1);
    require_kvm!();
    let mut vm = 0u32;
    assert_eq!(op_call(op::VM_CREATE, &[&mut vm as *mut u32 as u64]).0, 0);
    let mut slot = 0u32;
    let (rc, _) = op_call(
        op::VM_MAP_MEMORY,
        &[vm.into(), 0, 4096, 0, &mut slot as *mut u32 as u64],
    );
    assert_eq!(rc, 0);
    // A pointer result comes back in the last word.
    let (rc, block) = op_call(op::VM_MEMORY_PTR, &[vm.into(), slot.into()]);
    assert_eq!(rc, 0);
    assert_eq!(block[OP_WORDS - 1], hl_vm_memory_ptr(vm, slot) as u64);
    assert_ne!(block[OP_WORDS - 1], 0);
    let (rc, block) = op_call(op::VM_MEMORY_PTR, &[vm.into(), 9]);
    assert_eq!((rc, block[OP_WORDS - 1]), (0, 0));
    assert_eq!(op_call(op::VM_DESTROY, &[vm.into()]).0, 0);
    assert_eq!(op_call(op::VM_DESTROY, &[vm.into()]).0, -1);
}
