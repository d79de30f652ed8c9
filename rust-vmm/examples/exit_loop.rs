//! Times synchronous runs through the C ABI: a CPL-3 guest doing `out 0x10, al; jmp back`, one
//! `IO_OUT` exit per `hl_vcpu_run`. Prints the median and percentiles per run, and the ioctls per
//! run the library counted. Compare with the raw floor (`bench/floor/raw_kvm.c`:
//! `./target/bench/raw_kvm 100 20000`), and count syscalls with
//! `strace -c -f ./target/release/examples/exit_loop 20000`.
//!
//! Usage: `exit_loop [runs]` (default 20000).

use std::time::Instant;

use hl_rust_vmm::*;

const MEM: u64 = 2 << 20;
const CODE: usize = 0x10000;
/// User-mode (CPL 3) start: cr3, no GDT/IDT/TSS, code 0x23 and data 0x1b selectors.
const USER_CONFIG: [u64; 10] = [0x1000, 0, 0, 0, 0, 0, 0, 0x23, 0x1b, 0];
/// `out 0x10, al; jmp back`.
const OUT_LOOP: &[u8] = &[0xe6, 0x10, 0xeb, 0xfc];

fn check(rc: i32, what: &str) {
    if rc < 0 {
        let mut buf = [0u8; 256];
        // SAFETY: 256 writable bytes.
        let n = unsafe { hl_last_error(0, buf.as_mut_ptr(), buf.len() as u32) };
        let n = (n.max(0) as usize).min(buf.len());
        panic!("{what}: {rc}: {}", String::from_utf8_lossy(&buf[..n]));
    }
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("runs must be a number"))
        .unwrap_or(20_000);
    let mut vm = 0u32;
    let mut slot = 0u32;
    // SAFETY: valid out-pointers; the memory pointer covers MEM bytes until destroy, which happens
    // after the last use of `mem`.
    unsafe {
        check(hl_vm_create(&mut vm), "hl_vm_create");
        check(hl_vm_map_memory(vm, 0, MEM, 0, &mut slot), "map");
        let mem = std::slice::from_raw_parts_mut(hl_vm_memory_ptr(vm, slot), MEM as usize);
        // Identity-mapped, user-accessible 2 MiB pages.
        mem[0x1000..0x1008].copy_from_slice(&(0x2000u64 | 7).to_le_bytes());
        mem[0x2000..0x2008].copy_from_slice(&(0x3000u64 | 7).to_le_bytes());
        for i in 0..512u64 {
            let at = 0x3000 + i as usize * 8;
            mem[at..at + 8].copy_from_slice(&((i << 21) | 0x87).to_le_bytes());
        }
        mem[CODE..CODE + OUT_LOOP.len()].copy_from_slice(OUT_LOOP);
        check(hl_vcpu_create(vm, USER_CONFIG.as_ptr()), "hl_vcpu_create");
        let mut regs = [0u64; 18];
        regs[16] = CODE as u64;
        regs[17] = 0x3002; // IOPL 3: `out` is allowed at CPL 3
        regs[6] = 0x80000;
        check(hl_vcpu_set_regs(vm, regs.as_ptr()), "hl_vcpu_set_regs");
    }
    check(hl_vcpu_begin_call(vm), "hl_vcpu_begin_call");
    for _ in 0..1000 {
        check(hl_vcpu_run(vm, 0), "warm-up run");
    }
    let mut before = [0u64; 3];
    // SAFETY: 3 writable u64.
    check(unsafe { hl_vm_stats(vm, before.as_mut_ptr()) }, "stats");
    let mut times = Vec::with_capacity(runs);
    let total = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        let rc = hl_vcpu_run(vm, 0);
        times.push(t.elapsed().as_nanos() as u64);
        if rc != 1 {
            check(rc, "hl_vcpu_run");
            panic!("run ended with exit kind {rc}, not IO_OUT");
        }
    }
    let total = total.elapsed();
    let mut after = [0u64; 3];
    // SAFETY: 3 writable u64.
    check(unsafe { hl_vm_stats(vm, after.as_mut_ptr()) }, "stats");
    check(hl_vm_destroy(vm), "hl_vm_destroy");
    times.sort_unstable();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)] as f64 / 1000.0;
    println!(
        "{runs} sync runs: median {:.2} µs, p10 {:.2}, p90 {:.2}, p99 {:.2}, mean {:.2} µs/run",
        pct(50),
        pct(10),
        pct(90),
        pct(99),
        total.as_secs_f64() * 1e6 / runs as f64
    );
    println!(
        "library counters per run: {:.3} ioctls, {:.3} KVM_RUNs",
        (after[0] - before[0]) as f64 / runs as f64,
        (after[2] - before[2]) as f64 / runs as f64
    );
}
