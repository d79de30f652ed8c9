//! The guest the host tests run. Every function is listed in guest/README.md.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt::Write;
use core::hint::black_box;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use hl_guest::{FromValue, GuestError, IntoValue, LogLevel, call_host_as};

hl_guest::guest_functions![
    add,
    echo,
    echo_bytes,
    echo_all,
    call_host,
    call_host_value_u32,
    call_host_value_i64,
    call_host_value_u64,
    call_host_value_f32,
    call_host_value_f64,
    call_host_value_bool,
    call_host_value_string,
    call_host_value_bytes,
    call_host_void,
    call_host_twice,
    spin,
    panic,
    write_addr,
    read_addr,
    stack_overflow,
    exhaust_heap,
    noop,
    fail,
    log,
    ud2,
    divide,
    sum_bytes,
    counter,
    forbidden,
    forbidden_at,
    exec_addr,
    log_then_spin,
    cpuid,
    log_flood,
    host_call_flood,
    raw_frame,
    peb_write,
    fuzz,
    touch_pages,
    heap_push,
    set_sse,
    get_sse,
    dirty_pages,
    hypercall,
    host_probe,
    host_set,
    get_ymm,
];

fn add(a: i32, b: i32) -> i32 {
    a.wrapping_add(b)
}

fn echo(s: String) -> String {
    s
}

fn echo_bytes(b: Vec<u8>) -> Vec<u8> {
    b
}

/// `i32=<dec> u32=<dec> i64=<dec> u64=<dec> f32=0x<8 hex> f64=0x<16 hex> bool=<true|false>
/// string=<byte len>:"<text>" bytes=<len>:<hex of the first 32 bytes at most>`
#[allow(clippy::too_many_arguments)]
fn echo_all(
    a: i32,
    b: u32,
    c: i64,
    d: u64,
    e: f32,
    f: f64,
    g: bool,
    s: String,
    bytes: Vec<u8>,
) -> String {
    let mut out = String::with_capacity(160 + s.len());
    let _ = write!(
        out,
        "i32={a} u32={b} i64={c} u64={d} f32=0x{:08x} f64=0x{:016x} bool={g} string={}:\"{s}\" bytes={}:",
        e.to_bits(),
        f.to_bits(),
        s.len(),
        bytes.len(),
    );
    for byte in bytes.iter().take(32) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn call_host(name: String, x: i32) -> Result<i32, GuestError> {
    Ok(call_host_as::<i32>(&name, &[x.into_value()])?)
}

/// Sends `v` to the host function `name` and returns its result, of the same type.
fn relay<T: FromValue + IntoValue>(name: String, v: T) -> Result<T, GuestError> {
    Ok(call_host_as::<T>(&name, &[v.into_value()])?)
}

fn call_host_value_u32(name: String, v: u32) -> Result<u32, GuestError> {
    relay(name, v)
}

fn call_host_value_i64(name: String, v: i64) -> Result<i64, GuestError> {
    relay(name, v)
}

fn call_host_value_u64(name: String, v: u64) -> Result<u64, GuestError> {
    relay(name, v)
}

fn call_host_value_f32(name: String, v: f32) -> Result<f32, GuestError> {
    relay(name, v)
}

fn call_host_value_f64(name: String, v: f64) -> Result<f64, GuestError> {
    relay(name, v)
}

fn call_host_value_bool(name: String, v: bool) -> Result<bool, GuestError> {
    relay(name, v)
}

fn call_host_value_string(name: String, v: String) -> Result<String, GuestError> {
    relay(name, v)
}

fn call_host_value_bytes(name: String, v: Vec<u8>) -> Result<Vec<u8>, GuestError> {
    relay(name, v)
}

fn call_host_void(name: String) -> Result<(), GuestError> {
    Ok(call_host_as::<()>(&name, &[])?)
}

fn call_host_twice(name: String, x: i32) -> Result<i32, GuestError> {
    let a = call_host_as::<i32>(&name, &[x.into_value()])?;
    let b = call_host_as::<i32>(&name, &[x.into_value()])?;
    Ok(a.wrapping_add(b))
}

fn spin() {
    loop {
        core::hint::spin_loop();
    }
}

fn panic(message: String) {
    panic!("{message}");
}

/// Writes the byte 0xA5 at `addr`.
fn write_addr(addr: u64) {
    // SAFETY: deliberately writes wherever the host test asks, to provoke page faults (null
    // page, read-only image, guard page, beyond memory); a plain asm store so no Rust-level
    // assumption about the pointer is involved. A write that succeeds changes one byte the
    // test chose.
    unsafe { asm!("mov byte ptr [{}], 0xA5", in(reg) addr, options(nostack, preserves_flags)) }
}

fn read_addr(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: deliberately reads wherever the host test asks (faults are the point); an asm
    // load involves no Rust-level assumption about the pointer.
    unsafe {
        asm!("mov {}, qword ptr [{}]", out(reg) v, in(reg) addr,
            options(nostack, readonly, preserves_flags))
    };
    v
}

/// Recurses until the stack runs into the guard page (#PF with cr2 in the guard page).
fn stack_overflow() {
    black_box(recurse(0));
}

#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    frame[(depth % 1024) as usize] = depth as u8;
    black_box(&mut frame);
    if black_box(true) {
        // Not a tail call: the result is used after the call returns.
        recurse(depth + 1).wrapping_add(u64::from(frame[0]))
    } else {
        depth
    }
}

/// Allocates 1 MiB blocks until the heap is exhausted: ends in a PANIC frame
/// "memory allocation of ... bytes failed".
fn exhaust_heap() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = Vec::<u8>::with_capacity(1 << 20);
        block.push(1);
        blocks.push(black_box(block));
    }
}

fn noop() {}

fn fail(code: u32, message: String) -> Result<(), GuestError> {
    Err(GuestError::new(code, message))
}

fn log(message: String) {
    hl_guest::log(LogLevel::Info, &message);
}

fn ud2() {
    // SAFETY: raises #UD on purpose; the runtime's IDT reports it as FAULT vector 6.
    unsafe { asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// `a / b` with the hardware `idiv`: a zero divisor (or i32::MIN / -1) raises #DE (vector 0).
fn divide(a: i32, b: i32) -> i32 {
    let q: i32;
    // SAFETY: `cdq; idiv` only touches eax/edx and flags; a #DE is handled by the runtime's
    // IDT (FAULT frame), which is the point of this function.
    unsafe {
        asm!("cdq", "idiv {d:e}", d = in(reg) b, inout("eax") a => q, out("edx") _,
            options(nomem, nostack))
    };
    q
}

fn sum_bytes(b: Vec<u8>) -> u64 {
    b.iter().map(|&x| u64::from(x)).sum()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn counter() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed) + 1
}

/// A list on the heap, created on first use; the pointer itself lives in a global.
static HEAP_LIST: AtomicPtr<Vec<u64>> = AtomicPtr::new(core::ptr::null_mut());

/// Appends `x` to a list on the guest heap; returns "length * 2^32 + (sum & 0xffff_ffff)".
fn heap_push(x: u64) -> u64 {
    let mut p = HEAP_LIST.load(Ordering::Relaxed);
    if p.is_null() {
        p = alloc::boxed::Box::into_raw(alloc::boxed::Box::new(Vec::new()));
        HEAP_LIST.store(p, Ordering::Relaxed);
    }
    // SAFETY: `p` came from Box::into_raw above and is never freed; the guest is single-threaded,
    // so this is the only reference while the function runs.
    let list = unsafe { &mut *p };
    list.push(x);
    let sum = list.iter().fold(0u64, |a, &v| a.wrapping_add(v));
    ((list.len() as u64) << 32) | (sum & 0xffff_ffff)
}

/// Loads `xmm` into XMM15 and `mxcsr` into MXCSR (FPU/SSE state a restore must bring back). The
/// runtime never uses XMM15 between calls (it is built without using it; see guest/README.md).
fn set_sse(xmm: u64, mxcsr: u32) {
    let m = mxcsr;
    // SAFETY: loads a register and MXCSR; `m` is a valid stack slot for ldmxcsr, and the caller
    // picks a valid MXCSR value (reserved bits set would #GP, which the test does not do).
    unsafe {
        asm!("movq xmm15, {x}", "ldmxcsr [{m}]", x = in(reg) xmm, m = in(reg) &m,
            out("xmm15") _, options(nostack, preserves_flags))
    }
}

/// XMM15's low 64 bits and MXCSR (see `set_sse`):
/// returns the bytes xmm (8, little-endian) then mxcsr (4, little-endian).
fn get_sse() -> Vec<u8> {
    let x: u64;
    let mut m: u32 = 0;
    // SAFETY: reads a register and stores MXCSR into a valid stack slot.
    unsafe {
        asm!("movq {x}, xmm15", "stmxcsr [{m}]", x = out(reg) x, m = in(reg) &mut m,
            options(nostack, preserves_flags))
    }
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&x.to_le_bytes());
    out.extend_from_slice(&m.to_le_bytes());
    out
}

/// Writes one byte into each of `n` distinct fresh heap pages (for the restore benchmark); the
/// memory is freed again on return. Returns `n`.
fn dirty_pages(n: u32) -> u32 {
    let pages = n as usize;
    let mut v: Vec<u8> = Vec::with_capacity(pages * 4096 + 4096);
    let base = v.as_mut_ptr();
    for i in 0..pages {
        // SAFETY: `i * 4096 < capacity`, inside the allocation; a volatile write so it happens.
        unsafe { base.add(i * 4096).write_volatile(1) };
    }
    black_box(&mut v);
    n
}

/// The instructions a CPL-3 guest must not be able to use (guest/README.md lists them by `op`).
/// Unknown ops return 0 without executing anything.
#[inline(never)]
fn forbidden_instruction(op: u32, execute: bool) -> u64 {
    /// A 10-byte descriptor-table pointer for `lidt` / `lgdt` / `ltr` operands (all zero).
    static DESCRIPTOR: [u8; 16] = [0; 16];
    let table = DESCRIPTOR.as_ptr();
    let at: u64;
    macro_rules! op {
        ($($insn:literal),+) => {
            // SAFETY: returns the instruction's address without running it when `execute` is
            // false; when true, runs one instruction that is privileged or denied at CPL 3 and
            // so faults before it changes anything (the point of the test). Registers it could
            // touch are declared clobbered.
            unsafe {
                asm!(
                    "lea {at}, [rip + 3f] /* {table} */",
                    "test {run:e}, {run:e}",
                    "jz 4f",
                    "3:",
                    $($insn,)+
                    "4:",
                    at = out(reg) at,
                    run = in(reg) u32::from(execute),
                    table = in(reg) table,
                    out("rax") _, out("rcx") _, out("rdx") _, out("r11") _,
                    options(nostack),
                )
            }
        };
    }
    match op {
        0 => op!("lidt [{table}]"),
        1 => op!("lgdt [{table}]"),
        2 => op!("mov rax, cr3", "mov cr3, rax"),
        3 => op!(
            "xor eax, eax",
            "xor edx, edx",
            "mov ecx, 0x4b564d00",
            "wrmsr"
        ),
        4 => op!("mov ecx, 0x10", "rdmsr"),
        5 => op!("hlt"),
        6 => op!("cli", "2:", "jmp 2b"),
        7 => op!("sti", "hlt"),
        8 => op!("syscall"),
        9 => op!("mov al, 1", "out 0x80, al"),
        10 => op!("mov dx, 0x7f08", "out dx, al"),
        11 => op!("int3"),
        12 => op!("mov ax, 0x28", "ltr ax"),
        13 => op!("mov rax, cr0"),
        14 => op!("mov dx, 0x7f00", "in al, dx"),
        15 => op!("mov ecx, 0x4b564d01", "rdmsr"),
        16 => op!(
            "xor eax, eax",
            "xor edx, edx",
            "mov ecx, 0x4b564d02",
            "wrmsr"
        ),
        17 => op!(
            "xor eax, eax",
            "xor edx, edx",
            "mov ecx, 0x4b564d03",
            "wrmsr"
        ),
        18 => op!(
            "xor eax, eax",
            "xor edx, edx",
            "mov ecx, 0x4b564d07",
            "wrmsr"
        ),
        19 => op!("mov ecx, 0xc1", "rdmsr"),
        20 => op!("xor eax, eax", "xor edx, edx", "mov ecx, 0x186", "wrmsr"),
        21 => op!("mov ecx, 0xdeadbeef", "rdmsr"),
        22 => op!("vmcall"),
        23 => op!("vmmcall"),
        24 => op!("xor ecx, ecx", "mov eax, 7", "xor edx, edx", "xsetbv"),
        25 => op!("mov rax, dr7"),
        26 => op!("xor eax, eax", "mov dr0, rax"),
        27 => op!("mov rax, cr4", "mov cr4, rax"),
        28 => op!("mov dx, 0x7f00", "mov rsi, rsp", "outsb"),
        29 => op!("mov dx, 0x7f00", "mov rdi, rsp", "sub rdi, 64", "insb"),
        30 => op!("mov dx, 0x3f8", "mov al, 0x41", "out dx, al"),
        31 => op!("mov dx, 0xcf8", "in eax, dx"),
        32 => op!("mov ecx, 0x10", "rdmsr"),
        33 => op!("rdpmc"),
        34 => op!("int 0x80"),
        35 => op!("mov ax, 0x08", "mov ds, ax"),
        36 => op!("sgdt [rsp - 32]", "mov dx, 0x7f0c", "out dx, al"),
        _ => return 0,
    }
    at
}

/// Runs forbidden instruction `op` (see `forbidden_instruction`); returns only if it did not
/// fault.
fn forbidden(op: u32) -> u64 {
    forbidden_instruction(op, true)
}

/// Like `forbidden`, but first LOGs (level 2) the instruction's address in hex, so the host can
/// check the RIP of the fault.
fn forbidden_at(op: u32) -> u64 {
    let at = forbidden_instruction(op, false);
    hl_guest::log(LogLevel::Info, &alloc::format!("{at:#x}"));
    forbidden_instruction(op, true)
}

/// Calls the code at `addr` (a data page faults with an instruction-fetch #PF).
fn exec_addr(addr: u64) {
    // SAFETY: deliberately transfers control wherever the host test asks; whatever runs there
    // either faults (the point) or returns like a function with the C ABI's clobbers.
    unsafe { asm!("call {}", in(reg) addr, clobber_abi("C")) }
}

/// LOGs `message` (level 2), then spins forever: a stop must land whether it arrives while the
/// host handles the LOG or while the guest spins.
fn log_then_spin(message: String) {
    hl_guest::log(LogLevel::Info, &message);
    spin();
}

/// `cpuid` with EAX = `leaf`, ECX = `subleaf`: EAX, EBX, ECX, EDX as 16 little-endian bytes.
fn cpuid(leaf: u32, subleaf: u32) -> Vec<u8> {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// LOGs `n` messages (level 2, "flood <i>"); returns `n`.
fn log_flood(n: u32) -> u32 {
    for i in 0..n {
        hl_guest::log(LogLevel::Info, &alloc::format!("flood {i}"));
    }
    n
}

/// Calls host function `name` (no arguments, void) `n` times; returns how many succeeded.
fn host_call_flood(name: String, n: u32) -> u32 {
    let mut ok = 0;
    for _ in 0..n {
        if call_host_as::<()>(&name, &[]).is_ok() {
            ok += 1;
        }
    }
    ok
}

/// The PEB's address (docs/abi.md: always 0x1000).
const PEB: u64 = 0x1000;

fn peb_u64(offset: u64) -> u64 {
    // SAFETY: the PEB page is mapped and guest-readable (docs/abi.md); a volatile asm-free read
    // of an 8-aligned field at an offset below 0x70.
    unsafe { core::ptr::with_exposed_provenance::<u64>((PEB + offset) as usize).read_volatile() }
}

/// Writes `frame` (cut to the output buffer's size, as the host's PEB says) at the output
/// buffer by hand and signals port `port` with `out dx, eax`: a frame of any kind, malformed or
/// not, on any port. Returns if the host resumes the guest.
fn raw_frame(port: u32, frame: Vec<u8>) -> u32 {
    let addr = peb_u64(0x20);
    let size = peb_u64(0x28) as usize;
    let n = frame.len().min(size);
    // SAFETY: the output buffer `[addr, addr + size)` is guest memory that no Rust object
    // occupies (docs/abi.md); the host reads it only while the vCPU is stopped in the `out`
    // below, after this copy; at most `size` bytes are written.
    unsafe {
        core::ptr::copy_nonoverlapping(
            frame.as_ptr(),
            core::ptr::with_exposed_provenance_mut::<u8>(addr as usize),
            n,
        );
    }
    signal(port, 0);
    n as u32
}

fn signal(port: u32, value: u32) {
    // SAFETY: an `out` to a port the caller chose: an ABI port is a VM exit the host answers
    // (or not: poisoning is the point of these tests), any other port faults (#GP by the TSS
    // I/O bitmap). It touches no Rust-visible state; not `nomem`, so it orders the writes
    // before it.
    unsafe { asm!("out dx, eax", in("dx") port as u16, in("eax") value, options(nostack)) }
}

/// Writes `value` at byte `offset` of the PEB (the guest rewriting the host's parameters);
/// returns the value read back.
fn peb_write(offset: u32, value: u64) -> u64 {
    let at = (PEB + u64::from(offset & 0xff8)) as usize;
    // SAFETY: the PEB page is guest-writable and no Rust object lives there; the runtime
    // copied what it needs at init. An 8-aligned address inside the page.
    unsafe {
        core::ptr::with_exposed_provenance_mut::<u64>(at).write_volatile(value);
        core::ptr::with_exposed_provenance::<u64>(at).read_volatile()
    }
}

/// A seeded fuzzer of the host's exit handling: `steps` times, builds a LOG or HOST_CALL frame
/// (calling host function `h`, `(i32) -> i32`), sometimes mutates bytes of it or its header,
/// and signals an ABI port (now and then a wrong one). Returns the steps the host let it take.
/// The same seed gives the same frames.
fn fuzz(seed: u64, steps: u32) -> u32 {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = Vec::with_capacity(256);
    for step in 0..steps {
        buf.clear();
        let r = next();
        let log = r & 1 == 0;
        let payload: Vec<u8> = if log {
            let mut p = Vec::new();
            p.extend_from_slice(&((r >> 8) as u32 % 5).to_le_bytes());
            let len = (r >> 16) as usize % 24;
            p.extend_from_slice(&(len as u32).to_le_bytes());
            p.extend((0..len).map(|i| b'a' + (i as u8 % 26)));
            p
        } else {
            let mut p = Vec::new();
            p.extend_from_slice(&1u32.to_le_bytes());
            p.push(b'h');
            p.extend_from_slice(&1u32.to_le_bytes());
            p.push(1);
            p.extend_from_slice(&(step as i32).to_le_bytes());
            p
        };
        let kind: u32 = if log { 10 } else { 4 };
        buf.extend_from_slice(&kind.to_le_bytes());
        buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        buf.extend_from_slice(&payload);
        // One step in 16 mutates 1-4 bytes (header included).
        let m = next();
        if m % 16 == 0 {
            for k in 0..(1 + (m >> 8) % 4) {
                let v = next();
                let i = (v as usize) % buf.len();
                buf[i] = (v >> (8 + 8 * k)) as u8;
            }
        }
        // One step in 64 uses a wrong port (another ABI port or a random one).
        let p = next();
        let port = if p % 64 == 0 {
            0x7F00 + ((p >> 8) % 16) as u32
        } else if log {
            0x7F03
        } else {
            0x7F01
        };
        raw_frame(port, core::mem::take(&mut buf));
    }
    steps
}

/// Writes one byte in each 4 KiB page of `[addr, addr + len)`; returns the pages touched.
fn touch_pages(addr: u64, len: u64) -> u64 {
    let mut n = 0;
    let mut at = addr;
    while at < addr.saturating_add(len) {
        // SAFETY: deliberately writes wherever the host test asks (the heap, to touch every
        // page of a large sandbox; elsewhere a fault is the point); a plain asm store.
        unsafe { asm!("mov byte ptr [{}], 1", in(reg) at, options(nostack, preserves_flags)) }
        n += 1;
        at += 4096;
    }
    n
}

/// `vmcall` (op 0) or `vmmcall` (op 1) with RAX = `nr` and RBX = the address of a 64-byte buffer
/// filled with 0xA5 (where KVM_HC_CLOCK_PAIRING, nr 9, would write the host's clock), RCX = RDX =
/// RSI = 0. Returns RAX after the instruction (8 bytes, little-endian), then the 64 buffer bytes.
/// Where the instruction faults, the call ends in a FAULT instead.
fn hypercall(op: u32, nr: u64) -> Vec<u8> {
    let mut buf = [0xA5u8; 64];
    let p = buf.as_mut_ptr();
    let mut rax = nr;
    // SAFETY: a hypercall instruction; whatever KVM does with it (refuse it, or fault) it can
    // at most write the 64-byte buffer RBX points to, which is ours and live. rbx is reserved by
    // LLVM, so it is swapped in and out around the instruction.
    unsafe {
        if op == 0 {
            asm!("xchg {b}, rbx", "vmcall", "xchg {b}, rbx", b = inout(reg) p => _,
                inout("rax") rax, inout("rcx") 0u64 => _, inout("rdx") 0u64 => _,
                inout("rsi") 0u64 => _, options(nostack))
        } else {
            asm!("xchg {b}, rbx", "vmmcall", "xchg {b}, rbx", b = inout(reg) p => _,
                inout("rax") rax, inout("rcx") 0u64 => _, inout("rdx") 0u64 => _,
                inout("rsi") 0u64 => _, options(nostack))
        }
    }
    let buf = black_box(buf);
    let mut out = Vec::with_capacity(72);
    out.extend_from_slice(&rax.to_le_bytes());
    out.extend_from_slice(&buf);
    out
}

/// Reads one piece of state the CPU lets CPL 3 read (docs/security.md, "What the guest can read
/// about the host"): 0 `rdtscp` (ECX, TSC_AUX), 1 `rdpid`, 2 `rdfsbase`, 3 `rdgsbase`, 4 `xgetbv`
/// (XCR0), 5 an AVX instruction (`vxorps ymm15`, returns 1), 6 an AVX-512 instruction (`vpxord
/// zmm15`, returns 1), 7 an AMX instruction (`tilerelease`, returns 1), 8 `rdpkru`. Where the
/// instruction is not enabled it faults (#UD or #GP); unknown ops return u64::MAX.
fn host_probe(op: u32) -> u64 {
    let v: u64;
    // SAFETY: each arm runs one unprivileged instruction that reads a register (or clears
    // YMM15/ZMM15, which the runtime does not use: guest/README.md), writing only the declared
    // outputs; where the CPU does not enable it, it faults, which is the point.
    unsafe {
        match op {
            0 => asm!("rdtscp", "mov {v:e}, ecx", v = out(reg) v, out("rax") _, out("rdx") _,
                out("rcx") _, options(nomem, nostack)),
            1 => asm!("rdpid {v}", v = out(reg) v, options(nomem, nostack)),
            2 => asm!("rdfsbase {v}", v = out(reg) v, options(nomem, nostack)),
            3 => asm!("rdgsbase {v}", v = out(reg) v, options(nomem, nostack)),
            4 => asm!("xor ecx, ecx", "xgetbv", "shl rdx, 32", "or rax, rdx", out("rax") v,
                out("rdx") _, out("rcx") _, options(nomem, nostack)),
            5 => asm!("vxorps ymm15, ymm15, ymm15", "mov {v:e}, 1", v = out(reg) v,
                out("xmm15") _, options(nomem, nostack)),
            6 => asm!("vpxord zmm15, zmm15, zmm15", "mov {v:e}, 1", v = out(reg) v,
                out("xmm15") _, options(nomem, nostack)),
            7 => asm!("tilerelease", "mov {v:e}, 1", v = out(reg) v, options(nomem, nostack)),
            8 => asm!("xor ecx, ecx", "rdpkru", out("rax") v, out("rdx") _, out("rcx") _,
                options(nomem, nostack)),
            _ => v = u64::MAX,
        }
    }
    v
}

/// Writes one piece of state the CPU lets CPL 3 write, then reads it back the same way:
/// 0 `wrfsbase`, 1 `wrgsbase`, 2 YMM15 = `value` in all four 64-bit lanes (`vmovdqu`; reads back
/// lane 3, the upper half), 3 `wrpkru` (low 32 bits). Faults where the instruction is not
/// enabled; unknown ops return u64::MAX.
fn host_set(op: u32, value: u64) -> u64 {
    let v: u64;
    let lanes = [value; 4];
    let mut back = [0u64; 4];
    // SAFETY: each arm writes one register the runtime does not use (FS/GS base: the guest has
    // no TLS; YMM15: guest/README.md; PKRU: the guest's page tables use key 0 and the test writes
    // values that keep key 0 accessible) and reads it back; `lanes`/`back` are live 32-byte
    // buffers for the YMM load and store.
    unsafe {
        match op {
            0 => asm!("wrfsbase {x}", "rdfsbase {v}", x = in(reg) value, v = out(reg) v,
                options(nomem, nostack)),
            1 => asm!("wrgsbase {x}", "rdgsbase {v}", x = in(reg) value, v = out(reg) v,
                options(nomem, nostack)),
            2 => {
                asm!("vmovdqu ymm15, [{l}]", "vmovdqu [{b}], ymm15", l = in(reg) lanes.as_ptr(),
                    b = in(reg) back.as_mut_ptr(), out("xmm15") _, options(nostack));
                v = back[3];
            }
            3 => asm!("xor ecx, ecx", "xor edx, edx", "wrpkru", "rdpkru", inout("rax") value => v,
                out("rdx") _, out("rcx") _, options(nomem, nostack)),
            _ => v = u64::MAX,
        }
    }
    v
}

/// YMM15's 32 bytes (`vmovdqu`; faults where AVX is not enabled): what `host_set(2, x)` left there,
/// as the next call sees it.
fn get_ymm() -> Vec<u8> {
    let mut back = [0u8; 32];
    // SAFETY: stores YMM15 into a live 32-byte buffer.
    unsafe { asm!("vmovdqu [{b}], ymm15", b = in(reg) back.as_mut_ptr(), options(nostack)) };
    back.to_vec()
}
