//! Bounded spinning and futex parking: the primitives the vCPU mailbox (`vcpu_thread.rs`) is
//! built on. Spinning only helps when the peer runs on another CPU, so every spin is bounded,
//! off on one-CPU machines, and skipped for a peer last seen on this thread's own CPU.

use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::trace::trace;

/// Spin iterations between two clock reads (the clock is the vDSO, but still ~20 ns).
const SPINS_PER_CLOCK_READ: u32 = 32;

/// "Not known" for a CPU number.
pub const NO_CPU: u32 = u32::MAX;

/// The CPU this thread is on now (glibc reads it from rseq or the vDSO: no syscall).
pub fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(NO_CPU)
}

/// Whether spinning for a peer last seen on `peer` can help: not if it shares our CPU.
pub fn peer_elsewhere(peer: u32) -> bool {
    peer == NO_CPU || peer != current_cpu()
}

/// Whether spinning can help at all: with one CPU the other side cannot run while we spin.
pub fn spinning_allowed() -> bool {
    static MULTI_CPU: OnceLock<bool> = OnceLock::new();
    *MULTI_CPU.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

pub fn spin_budget(budget: Duration) -> Duration {
    if spinning_allowed() {
        budget
    } else {
        Duration::ZERO
    }
}

/// Spins until `done()` or until `budget` has passed; returns whether `done()` held.
pub fn spin_until(budget: Duration, mut done: impl FnMut() -> bool) -> bool {
    if done() {
        return true;
    }
    if budget.is_zero() {
        return false;
    }
    let start = Instant::now();
    loop {
        for _ in 0..SPINS_PER_CLOCK_READ {
            std::hint::spin_loop();
            if done() {
                return true;
            }
        }
        if start.elapsed() >= budget {
            return false;
        }
    }
}

/// Sleeps while `word` holds `expected` (or until `timeout`, or a spurious wake-up).
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 (borrowed for the whole call) that FUTEX_WAIT only
    // reads; `ts_ptr` is null or points to `ts`, which outlives the call. A failure (EAGAIN: the
    // value changed; EINTR; ETIMEDOUT) is fine: every caller re-checks its condition in a loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
        );
    }
}

/// Wakes up to `n` threads sleeping on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory through it (the
    // address only names the wait queue).
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// The scheduler wakes a thread on its waker's CPU, so after a few parks the caller and the vCPU
/// thread tend to share one CPU, where neither can spin usefully and every handoff is a futex wake
/// and a context switch. Once both spin (no more wakes) they stay wherever they are, so the vCPU
/// thread, finding itself on its caller's CPU, steps off it once: it narrows its affinity to the
/// other allowed CPUs (which migrates it) and restores the affinity at once (so the scheduler
/// stays free to place it anywhere later). At most once per `NUDGE_INTERVAL`; two syscalls, off
/// the steady state.
pub struct Nudge {
    allowed: Option<libc::cpu_set_t>,
    last: Option<Instant>,
}

const NUDGE_INTERVAL: Duration = Duration::from_millis(10);

impl Nudge {
    pub fn new() -> Self {
        // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its size.
        let allowed = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
                .then_some(set)
        };
        Self {
            allowed,
            last: None,
        }
    }

    pub fn step_off(&mut self, cpu: u32) {
        let Some(allowed) = self.allowed else { return };
        if self.last.is_some_and(|t| t.elapsed() < NUDGE_INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        let mut others = allowed;
        // SAFETY: `others` is a valid cpu_set_t; CPU_CLR/CPU_COUNT index within it (CPU_CLR
        // ignores numbers beyond its size); sched_setaffinity reads `size_of` bytes of it, and of
        // `allowed`, which this thread had before.
        unsafe {
            libc::CPU_CLR(cpu as usize, &mut others);
            if libc::CPU_COUNT(&others) == 0 {
                return;
            }
            let size = std::mem::size_of::<libc::cpu_set_t>();
            libc::sched_setaffinity(0, size, &others);
            libc::sched_setaffinity(0, size, &allowed);
        }
        trace!("stepped off cpu {cpu}");
    }
}
