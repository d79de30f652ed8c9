//! `hl-wasm-compile`: the child process that compiles one untrusted Wasm module with Cranelift
//! (docs/security.md, "The isolated compile"; docs/cdylib-abi.md, "The compiler library").
//!
//! Started only by `hlc_compile_isolated` (compiler/src/isolate.rs) as `hl-wasm-compile <flags>
//! <memory bytes> <cpu seconds> <parent pid> <parallel 0|1> [fault]`, with an empty environment. Before it
//! touches any input it sets its own rlimits (address space, CPU time, no core dumps),
//! `PR_SET_NO_NEW_PRIVS` and `PR_SET_PDEATHSIG` (done here rather than between fork and exec so
//! that the host can spawn it with `posix_spawn`, without forking its own large address space).
//! It builds the engine from its trusted settings, starts its compile threads if `parallel` (one per
//! CPU, at most 16; rayon's pool, waited for until each has started), closes every descriptor but 0, 1
//! and 2, installs a seccomp filter on every thread
//! that allows only what the compile needs (no open, no socket, no exec, no new thread or
//! process, no executable memory), and only then reads the module from stdin. The artifact goes
//! to stdout (exit 0); a module wasmtime refuses is exit 2 with its message on stderr; anything
//! else is exit 3. A forbidden system call kills the process (SIGSYS).
//!
//! Progress: while it compiles, the process writes records `\x1eP <translated> <compiled>
//! <functions>\n` to stderr (one per thousandth of the functions translated: about 1,000, and one
//! with the final counts when the compile returns), which the host takes out of the message
//! (isolate.rs) and hands to its caller. `functions` is the module's
//! code-section count (0 when the header cannot be read); `translated` and `compiled` count the
//! Wasm-to-CLIF translations and finished Cranelift compiles that wasmtime reports through the
//! `log` crate at debug level (its `wasmtime_internal_cranelift::compiler` target; the pinned
//! wasmtime 48.0.8 logs one of each per function, trampolines included in `compiled`).
//!
//! `fault` exists for the tests only (tests/kvm/wasmtime_isolate.test.ts): after the filter is
//! in place and the module is read, `crash` writes to address 0, `loop` spins forever, `alloc`
//! allocates without bound and `syscall` tries to open a file.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::exit;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Exit status: the module was refused (message on stderr).
const EXIT_MODULE: i32 = 2;
/// Exit status: anything else went wrong before or after the compile (message on stderr).
const EXIT_INTERNAL: i32 = 3;

fn fail(code: i32, message: &str) -> ! {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(message.as_bytes());
    let _ = err.flush();
    exit(code)
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
        .unwrap_or_else(|e| fail(EXIT_INTERNAL, &format!("seccomp condition: {e}")))
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions)
        .unwrap_or_else(|e| fail(EXIT_INTERNAL, &format!("seccomp rule: {e}")))
}

/// The allow-list, found with `strace -f` on compiles of the test modules and a 1 MB module
/// (docs/design.md, "The isolated compile"). Everything else kills the process.
fn filter() -> BpfProgram {
    let pid = std::process::id() as u64;
    let no_exec = || cond(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // The module in, the artifact and messages out: only the three standard descriptors.
    rules.insert(
        libc::SYS_read,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, 0)])],
    );
    for fd in [1, 2] {
        rules
            .entry(libc::SYS_write)
            .or_default()
            .push(rule(vec![cond(0, SeccompCmpOp::Eq, fd)]));
    }
    // Memory: the allocator and Cranelift's buffers; never executable.
    rules.insert(libc::SYS_mmap, vec![rule(vec![no_exec()])]);
    rules.insert(libc::SYS_mprotect, vec![rule(vec![no_exec()])]);
    for sys in [
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
    ] {
        rules.insert(sys, vec![]);
    }
    // Locks, time, randomness (hash maps), signal returns; the exit.
    for sys in [
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_clock_gettime,
        libc::SYS_getrandom,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        rules.insert(sys, vec![]);
    }
    // `abort` after a failed allocation (Rust's out-of-memory path): it unblocks SIGABRT and
    // sends it to this process only.
    rules.insert(libc::SYS_rt_sigprocmask, vec![]);
    rules.insert(libc::SYS_rt_sigaction, vec![]);
    rules.insert(libc::SYS_gettid, vec![]);
    rules.insert(libc::SYS_getpid, vec![]);
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![
            cond(0, SeccompCmpOp::Eq, pid),
            cond(2, SeccompCmpOp::Eq, libc::SIGABRT as u64),
        ])],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .unwrap_or_else(|e| fail(EXIT_INTERNAL, &format!("seccomp filter: {e}")));
    filter
        .try_into()
        .unwrap_or_else(|e| fail(EXIT_INTERNAL, &format!("seccomp filter: {e}")))
}

/// Confines this process before anything else: address-space and CPU-time limits, no core
/// dumps, no new privileges, SIGKILL when the parent dies (and exit if it already has).
fn confine(mem: u64, cpu_secs: u64, parent: i32) {
    let limit = |resource, soft: u64, hard: u64| {
        let r = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: `r` is a valid rlimit for the duration of the call.
        if unsafe { libc::setrlimit(resource, &r) } != 0 {
            fail(EXIT_INTERNAL, "setrlimit failed");
        }
    };
    limit(libc::RLIMIT_AS, mem, mem);
    limit(libc::RLIMIT_CPU, cpu_secs, cpu_secs.saturating_add(1));
    limit(libc::RLIMIT_CORE, 0, 0);
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        fail(EXIT_INTERNAL, "PR_SET_NO_NEW_PRIVS failed");
    }
    // SAFETY: as above.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        fail(EXIT_INTERNAL, "PR_SET_PDEATHSIG failed");
    }
    // The parent may have died before PDEATHSIG was set.
    // SAFETY: no arguments.
    if unsafe { libc::getppid() } != parent {
        exit(EXIT_INTERNAL);
    }
}

/// Most compile threads (rayon workers) the process starts.
const MAX_WORKERS: usize = 16;

/// The number of function bodies a module declares: the count at the start of its code section
/// (section 10), read with bounds checks from the raw bytes; 0 when the header is malformed (the
/// compile then reports the error). Only for progress; wasmtime validates the module itself.
fn function_count(wasm: &[u8]) -> u64 {
    fn leb(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut at = 8usize;
    if wasm.len() < at || wasm[..4] != *b"\0asm" {
        return 0;
    }
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let Some(size) = leb(wasm, &mut at) else {
            return 0;
        };
        if id == 10 {
            return leb(wasm, &mut at).unwrap_or(0);
        }
        let Some(next) = usize::try_from(size).ok().and_then(|n| at.checked_add(n)) else {
            return 0;
        };
        at = next;
    }
    0
}

/// Counts wasmtime's per-function debug records and writes a progress record to stderr when
/// the thousandths of the functions translated change (`log::Log`, installed before the filter).
struct Progress {
    translated: AtomicU64,
    compiled: AtomicU64,
    functions: AtomicU64,
    /// The last thousandth written (`u64::MAX`: none yet).
    last: AtomicU64,
}

static PROGRESS: Progress = Progress {
    translated: AtomicU64::new(0),
    compiled: AtomicU64::new(0),
    functions: AtomicU64::new(0),
    last: AtomicU64::new(u64::MAX),
};

/// Writes one progress record (progress only: a failed write changes nothing).
fn write_progress(t: u64, c: u64, n: u64) {
    let line = format!("{}P {t} {c} {n}\n", hl_wasm_compiler::PROGRESS_MARK as char);
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// wasmtime's Cranelift glue: the target of its per-function records.
const PROGRESS_TARGET: &str = "wasmtime_internal_cranelift::compiler";

impl log::Log for Progress {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() == log::Level::Debug && meta.target() == PROGRESS_TARGET
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // "`<symbol>` translated to CLIF in <time>" / "`<symbol>` compiled in <time>".
        let text = record.args().to_string();
        let (t, c) = if text.contains("` translated to CLIF in ") {
            (
                self.translated.fetch_add(1, Ordering::Relaxed) + 1,
                self.compiled.load(Ordering::Relaxed),
            )
        } else if text.contains("` compiled in ") {
            (
                self.translated.load(Ordering::Relaxed),
                self.compiled.fetch_add(1, Ordering::Relaxed) + 1,
            )
        } else {
            return;
        };
        let n = self.functions.load(Ordering::Relaxed);
        // The host's share done is the share translated (the two counts move together).
        let permille = t.min(n).saturating_mul(1000).checked_div(n).unwrap_or(0);
        if self.last.swap(permille, Ordering::Relaxed) != permille {
            write_progress(t, c, n);
        }
    }

    fn flush(&self) {}
}

/// Starts rayon's global pool (parallel compilation) and waits until every worker has finished
/// starting (its thread set-up makes system calls the filter does not allow), so that no thread
/// is created or set up after the filter is in place.
fn start_workers(n: usize) {
    let ready = Arc::new((Mutex::new(0usize), Condvar::new()));
    let signal = Arc::clone(&ready);
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .start_handler(move |_| {
            let (count, cv) = &*signal;
            *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            cv.notify_all();
        })
        .build_global();
    if let Err(e) = built {
        fail(EXIT_INTERNAL, &format!("starting the compile threads: {e}"));
    }
    let (count, cv) = &*ready;
    let mut started = count.lock().unwrap_or_else(|p| p.into_inner());
    while *started < n {
        started = cv.wait(started).unwrap_or_else(|p| p.into_inner());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let num = |i: usize| -> u64 {
        args.get(i).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            fail(
                EXIT_INTERNAL,
                "usage: hl-wasm-compile <flags> <memory bytes> <cpu seconds> <parent pid> <parallel> [fault]",
            )
        })
    };
    let (flags, mem, cpu_secs, parent, parallel) = (num(1), num(2), num(3), num(4), num(5));
    // One malloc arena for every thread. A worker thread's own arena is an mmap'd heap, and the
    // first time glibc shrinks one it opens /proc/sys/vm/overcommit_memory: under the filter that
    // open killed a parallel compile now and then (SIGSYS, seen compiling QuickJS). The main
    // arena grows and shrinks with brk/mmap only.
    // SAFETY: a plain libc call with integer arguments, made before any other thread exists.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) } != 1 {
        fail(EXIT_INTERNAL, "mallopt(M_ARENA_MAX) failed");
    }
    let workers = if parallel != 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(MAX_WORKERS)
    } else {
        0
    };
    // CPU time counts every thread: the deadline's seconds times the threads that compile.
    confine(
        mem,
        cpu_secs.saturating_mul(workers.max(1) as u64),
        parent as i32,
    );
    let flags = u32::try_from(flags).unwrap_or_else(|_| fail(EXIT_INTERNAL, "bad flags"));
    let fault = args.get(6).cloned().unwrap_or_default();
    // The engine comes from trusted settings only; built before the filter (it may read the
    // system's configuration), it sees no module byte.
    let engine = hl_wasm_compiler::engine_with(flags, workers > 0)
        .unwrap_or_else(|e| fail(EXIT_INTERNAL, &format!("engine: {e}")));
    if workers > 0 {
        start_workers(workers);
    }
    // Progress records (see the module comment); the logger is a static, set before the filter.
    if log::set_logger(&PROGRESS).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    // SAFETY: a raw system call with no pointer arguments: closes every descriptor above 2 that
    // came through exec (the host's own are close-on-exec; this makes sure).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if rc != 0 {
        fail(EXIT_INTERNAL, "close_range failed");
    }
    let program = filter();
    // Every thread (the workers too) gets the filter.
    if let Err(e) = seccompiler::apply_filter_all_threads(&program) {
        fail(
            EXIT_INTERNAL,
            &format!("installing the seccomp filter: {e}"),
        );
    }

    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut wasm) {
        fail(EXIT_INTERNAL, &format!("reading the module: {e}"));
    }
    match fault.as_str() {
        "" => {}
        "crash" => {
            // SAFETY: not sound, on purpose: the test-only crash (SIGSEGV at address 0).
            unsafe { std::ptr::null_mut::<u64>().write_volatile(1) };
        }
        "loop" => loop {
            std::hint::black_box(&wasm);
        },
        "alloc" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                // Reserved, not touched: the address-space limit ends it at once, however
                // loaded the machine is.
                hoard.push(Vec::with_capacity(64 << 20));
                std::hint::black_box(&hoard);
            }
        }
        "syscall" => {
            let _ = std::fs::File::open("/etc/hostname");
            fail(EXIT_INTERNAL, "the forbidden open returned");
        }
        other => fail(EXIT_INTERNAL, &format!("unknown fault {other:?}")),
    }
    PROGRESS
        .functions
        .store(function_count(&wasm), Ordering::Relaxed);
    match engine.precompile_module(&wasm) {
        Ok(artifact) => {
            // The final counts: records are written only when the share translated changes, so
            // the compiles after the last translation would otherwise go unreported.
            write_progress(
                PROGRESS.translated.load(Ordering::Relaxed),
                PROGRESS.compiled.load(Ordering::Relaxed),
                PROGRESS.functions.load(Ordering::Relaxed),
            );
            let mut out = std::io::stdout().lock();
            if out.write_all(&artifact).and_then(|_| out.flush()).is_err() {
                exit(EXIT_INTERNAL);
            }
            exit(0)
        }
        Err(e) => fail(EXIT_MODULE, &format!("{e:#}")),
    }
}
