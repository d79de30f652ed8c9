//! A vCPU served by a bounded set of reused worker threads, driven through a mailbox of atomics
//! with futexes behind it.
//!
//! Callers post a request into the mailbox and take the answer from it: synchronously (`run`, the
//! register calls), or in three steps (`start`, then `poll` from the event loop and/or `wait` from a
//! pool thread). Deno's `nonblocking` FFI calls hop between pool threads, so no caller ever touches
//! the vCPU: a worker thread (`workers.rs`) does. While a sandbox is in use, one worker is attached
//! to its vCPU and serves every request (it spins, then parks on the mailbox between requests, as a
//! thread of its own would). A vCPU left idle for `detach_after()` (50 ms by default,
//! `HL_VCPU_DETACH_MS`; 0 = never) is detached: its worker puts the vCPU into the mailbox and goes
//! back to the pool for any other VM's work, so an idle sandbox holds no thread of ours. The next
//! request re-attaches it to whichever worker is free (an idle one, or a new one). KVM documents
//! that a `KVM_RUN` from another thread than last time updates the vCPU's pid, which could wait for
//! an RCU grace period; measured on Linux 6.18 (kvm_pvm) that costs nothing (bench/floor/
//! vcpu_threads.c, docs/design.md "Threading"), and it is paid at most once per detach.
//!
//! The handoff: one request at a time (`outstanding`). The caller writes the request, bumps the
//! `req` word and the attached worker, which spins on that word for a while after each answer, sees
//! it within a fraction of a microsecond; the answer comes back the same way through `resp`, on
//! which the caller spins. Either side parks on a futex only after its spin budget is spent, and it
//! publishes that it is parked (`vcpu_parked`, `callers_parked`) before re-checking the word and
//! sleeping with the value it saw; the other side stores the word first and issues FUTEX_WAKE only
//! when it then sees someone parked (all SeqCst, so one of the two always sees the other). Detaching
//! follows the same rule: the worker stores the vCPU in the mailbox, publishes `owner = DETACHED`,
//! then re-checks `req`; a poster bumps `req`, then looks at `owner` and, if it is DETACHED, claims
//! it (QUEUED, a compare-and-swap only one side wins) and hands the vCPU to a worker. In the steady
//! state of a run loop a run costs one syscall: `KVM_RUN`. Spinning is bounded, switched off where
//! there is one CPU, and on the worker side adaptive: a vCPU whose requests keep coming after its
//! spin window stops being spun for until one arrives within the window again, so idle sandboxes
//! sleep in the kernel. Neither side spins for a peer last seen on its own CPU (that only delays
//! the peer); the worker steps off its caller's CPU when it finds itself there (`Nudge`).
//!
//! Interrupts: a sticky stop flag. `interrupt()` sets it, then sets the backend's exit request
//! (`immediate_exit` for KVM) and sends the attached worker a real-time signal whose handler does
//! nothing, repeating until the vCPU is seen out of `KVM_RUN`. The worker clears the exit request
//! and publishes `in_run` before it checks the flag, before every `KVM_RUN` (also when a signal cut
//! a run short), so no interrupt is lost; the flag stays set, and every run returns `Interrupted`
//! without entering the guest, until `begin_call()` clears it at the start of the next guest call,
//! so no interrupt goes stale either (a late kick at most costs a spurious `EINTR`, after which the
//! worker re-checks and re-enters; a worker that has moved on to another VM re-enters that one).
//!
//! Shutdown (`stop`, from `hl_vm_destroy`): set CLOSING in the `req` word (no request can be
//! posted after it, and the guest is not entered again), set the stop, kick the vCPU out, wake the
//! worker (or, if the vCPU is detached, drop it on the closing thread), and wait until the vCPU is
//! dropped. Whoever drops it sets DEAD in the `resp` word and wakes every parked caller, so a pool
//! thread blocked in `wait` returns instead of hanging.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use crate::backend::{
    ExitInfo, ExitKind, ExitRequest, Regs, RunOutcome, SpecialRegs, VcpuBackend, VcpuConfig,
    VmBackend,
};
use crate::error::{Code, Error, Result};
use crate::park::{
    current_cpu, futex_wait, futex_wake, peer_elsewhere, spin_budget, spin_until, spinning_allowed,
    Nudge, NO_CPU,
};
use crate::trace::trace;

/// How long the vCPU thread spins for the next request after answering one, before it parks.
/// A host that handles an exit and resumes the guest (the run loop of one guest call) comes back
/// within a few microseconds; 50 µs covers that with margin while bounding the CPU an idle
/// sandbox burns after its last exit.
const VCPU_IDLE_SPIN: Duration = Duration::from_micros(50);

/// How long a synchronous caller spins for the answer before it parks. Typical exits come back
/// after one `KVM_RUN` (~20 µs on the slowest host measured); 100 µs covers those without a
/// futex round trip, and longer runs pay a futex wake, which is small next to them.
const CALLER_SPIN: Duration = Duration::from_micros(100);

/// After this many requests in a row that arrived only after the vCPU thread's spin window had
/// passed, the thread stops spinning (parks at once) until one arrives within the window again:
/// a sandbox that is called now and then must not burn 50 µs of CPU per call for nothing.
const IDLE_MISSES_BEFORE_PARKING: u32 = 4;

/// How long a vCPU with no request waits, parked on its worker, before it is detached (the worker
/// returns to the pool). Long enough that a sandbox in use (a pool member between requests, a
/// guest call's host functions) keeps its worker; short enough that idle sandboxes hold none.
const DETACH_AFTER: Duration = Duration::from_millis(50);
/// Environment variable: milliseconds before an idle vCPU is detached from its worker; `0` never
/// detaches (a thread per live vCPU, the design before the workers). Read once.
pub const DETACH_ENV: &str = "HL_VCPU_DETACH_MS";

/// `DETACH_AFTER`, or `HL_VCPU_DETACH_MS`; `None`: never detach.
fn detach_after() -> Option<Duration> {
    static AFTER: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *AFTER.get_or_init(|| {
        match std::env::var(DETACH_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
            None => Some(DETACH_AFTER),
        }
    })
}

/// In `owner`: a worker holds the vCPU and serves the mailbox.
const ATTACHED: u32 = 0;
/// In `owner`: the vCPU lies in `detached`; the next poster (or `close`) claims it.
const DETACHED: u32 = 1;
/// In `owner`: claimed from DETACHED; a worker is on its way to take it (or `close` drops it).
const QUEUED: u32 = 2;

/// How long `interrupt` keeps kicking before reporting failure. The thread leaves the run within
/// microseconds on real hardware; the bound only exists so a broken kernel cannot hang the caller.
const KICK_TIMEOUT: Duration = Duration::from_secs(10);

/// In `req`: the VM is being destroyed; nothing can be posted and the guest is not entered again.
const CLOSING: u32 = 1 << 31;
/// In `resp`: the vCPU thread has left; nothing will be answered any more.
const DEAD: u32 = 1 << 31;
/// The request sequence number (low 31 bits of `req` and `resp`; 0 = nothing posted yet).
const SEQ: u32 = !CLOSING;
/// In `outstanding`: a request is being posted (its sequence number is not known yet).
const POSTING: u32 = u32::MAX;

const OP_RUN: u32 = 1;
const OP_SET_REGS: u32 = 2;
const OP_GET_REGS: u32 = 3;
const OP_GET_SPECIAL_REGS: u32 = 4;
const OP_GET_STATE: u32 = 5;
/// Nothing but the pending state load that precedes every request (`set_state`).
const OP_LOAD_STATE: u32 = 6;

/// The exit record, written by the vCPU thread during a run and read by the caller after the
/// run's answer was taken (the SeqCst store/load of `resp` orders the two).
struct ExitCell(UnsafeCell<ExitInfo>);

// SAFETY: writes happen only on the vCPU thread while a run request is being served; readers (the
// C ABI caller through `hl_vcpu_exit_ptr`) read it only after taking that run's answer, which is
// published by a SeqCst store of `resp` after the writes. One request is served at a time
// (`outstanding`), so no two runs overlap.
unsafe impl Sync for ExitCell {}

/// What another thread needs to kick the vCPU out of `KVM_RUN`. Present only while the vCPU
/// exists: the vCPU thread fills the slot after creating it and empties it, under the slot's
/// mutex, before dropping it.
struct Kick {
    thread: libc::pthread_t,
    exit_request: Arc<dyn ExitRequest>,
}

/// State shared between callers and the vCPU thread.
struct Mailbox {
    /// Sequence number of the latest request posted (low 31 bits), and `CLOSING`. The vCPU
    /// thread's futex word.
    req: AtomicU32,
    /// Sequence number of the latest request answered (low 31 bits), and `DEAD`. The callers'
    /// futex word.
    resp: AtomicU32,
    /// The vCPU thread is parked (or about to park) on `req`.
    vcpu_parked: AtomicU32,
    /// Number of callers parked (or about to park) on `resp`.
    callers_parked: AtomicU32,
    /// The sequence number of the request posted and not yet taken (0: none; `POSTING`: being
    /// posted). Claimed by whoever posts, freed by whoever takes the answer.
    outstanding: AtomicU32,
    /// The request: an `OP_*`, and registers for `OP_SET_REGS`.
    op: AtomicU32,
    /// Registers in (`OP_SET_REGS`) or out (`OP_GET_REGS`, `OP_GET_SPECIAL_REGS`: the first 8).
    regs: [AtomicU64; 18],
    /// The answer: an exit kind (runs), 0 (register calls) or a negative error code, whose error
    /// is in `error`.
    result: AtomicI32,
    /// The vCPU state blob out (`OP_GET_STATE`); written only by the vCPU thread while serving
    /// the request.
    payload: Mutex<Vec<u8>>,
    /// A state blob to load before serving the next request (`set_state`); stored only while no
    /// request is outstanding, taken by the vCPU thread when it serves the next one.
    pending_state: Mutex<Option<Vec<u8>>>,
    error: Mutex<Option<Error>>,
    /// The sticky stop: while set, every run returns `Interrupted` without entering the guest.
    stop: AtomicBool,
    /// The vCPU thread is in a run (from just before it checks `stop` until `KVM_RUN` returned).
    in_run: AtomicBool,
    kick: Mutex<Option<Kick>>,
    /// The CPU the last poster ran on, and the CPU the vCPU thread last served on (`NO_CPU`:
    /// unknown). Spinning for a peer that shares our CPU only delays it, so each side spins only
    /// while the other was last seen elsewhere.
    caller_cpu: AtomicU32,
    vcpu_cpu: AtomicU32,
    /// When the last request was posted (`now_ns`): a parked vCPU thread learns from it whether
    /// the request came within its spin window (its own wake-up latency does not count).
    posted_ns: AtomicU64,
    /// `ATTACHED`, `DETACHED` or `QUEUED`: whether a worker holds the vCPU.
    owner: AtomicU32,
    /// The vCPU while no worker holds it (`owner` is DETACHED or QUEUED).
    detached: Mutex<Option<Detached>>,
    /// The worker's thread name while it serves this vCPU (`hl-vcpu-<vm>`).
    name: String,
    /// Set once the vCPU is dropped (or its creation failed): what `stop` waits for.
    finished: crate::workers::Finished,
}

/// A vCPU between two workers, with what its serving loop carries from one to the next.
struct Detached {
    vcpu: Box<dyn VcpuBackend>,
    /// The last `req` value served.
    seen: u32,
    misses: u32,
}

impl Mailbox {
    fn closing(&self) -> bool {
        self.req.load(SeqCst) & CLOSING != 0
    }

    /// Claims a detached vCPU, `owner` DETACHED to `to` (QUEUED: a poster hands it to a worker, or
    /// `close` drops it; ATTACHED: the worker detaching it takes it back): true for the one side
    /// that wins. (The plain load first keeps the common case, an attached vCPU, to a read.)
    fn claim_detached(&self, to: u32) -> bool {
        self.owner.load(SeqCst) == DETACHED
            && self
                .owner
                .compare_exchange(DETACHED, to, SeqCst, SeqCst)
                .is_ok()
    }

    /// The vCPU thread's side of waking the callers.
    fn answer(&self, seq: u32) {
        self.resp.store(seq, SeqCst);
        if self.callers_parked.load(SeqCst) != 0 {
            futex_wake(&self.resp, i32::MAX);
        }
    }
}

/// How waiting for an answer ended.
enum Waited {
    Answered,
    /// The vCPU thread left without answering (the VM was destroyed).
    Dead,
    TimedOut,
}

pub struct VcpuThread {
    mailbox: Arc<Mailbox>,
    exit: Arc<ExitCell>,
    /// Set when the vCPU has been dropped (`Mailbox::finished`); taken by the first `stop`.
    join: Mutex<Option<crate::workers::Finished>>,
    /// The vCPU thread's answer to the creation, until someone took it (`created`); then its
    /// error, if it failed, for every later call.
    creation: Mutex<Creation>,
    /// Set once the creation is known to have succeeded: the check on every call is one load.
    created_ok: AtomicBool,
}

enum Creation {
    Pending(std::sync::mpsc::Receiver<Result<()>>),
    Failed(Error),
    Done,
}

/// The signal used to kick a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

extern "C" fn ignore_signal(_: libc::c_int) {}

fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; we set a handler that does
        // nothing (async-signal-safe) and no SA_RESTART, so the ioctl returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_signal as *const () as usize;
            action.sa_flags = 0;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
        }
    });
}

impl VcpuThread {
    /// Starts the thread, which creates the vCPU; returns once the vCPU exists (or failed).
    pub fn spawn(vm: Arc<dyn VmBackend>, config: VcpuConfig, name: String) -> Result<Self> {
        install_kick_handler();
        let mailbox = Arc::new(Mailbox {
            req: AtomicU32::new(0),
            resp: AtomicU32::new(0),
            vcpu_parked: AtomicU32::new(0),
            callers_parked: AtomicU32::new(0),
            outstanding: AtomicU32::new(0),
            op: AtomicU32::new(0),
            regs: std::array::from_fn(|_| AtomicU64::new(0)),
            result: AtomicI32::new(0),
            payload: Mutex::new(Vec::new()),
            pending_state: Mutex::new(None),
            error: Mutex::new(None),
            stop: AtomicBool::new(false),
            in_run: AtomicBool::new(false),
            kick: Mutex::new(None),
            caller_cpu: AtomicU32::new(NO_CPU),
            posted_ns: AtomicU64::new(0),
            vcpu_cpu: AtomicU32::new(NO_CPU),
            owner: AtomicU32::new(ATTACHED),
            detached: Mutex::new(None),
            name: name.clone(),
            finished: crate::workers::Finished::new(),
        });
        let exit = Arc::new(ExitCell(UnsafeCell::new(ExitInfo::default())));
        // Creation is answered once, over a channel (a futex or two, once per VM), and taken by
        // the first call that needs the vCPU (`created`): the caller may meanwhile do other work.
        let (created_tx, created_rx) = sync_channel::<Result<()>>(1);
        let thread_mailbox = mailbox.clone();
        let thread_exit = exit.clone();
        let join = mailbox.finished.clone();
        crate::workers::run(name, move || {
            vcpu_main(vm, config, thread_mailbox, thread_exit, created_tx)
        })
        .map_err(|e| Error::os("spawning the vCPU thread", e))?;
        Ok(Self {
            mailbox,
            exit,
            join: Mutex::new(Some(join)),
            creation: Mutex::new(Creation::Pending(created_rx)),
            created_ok: AtomicBool::new(false),
        })
    }

    /// Waits for the vCPU thread's answer to the creation (the first time; later calls return
    /// at once): `Ok` once the vCPU exists, else the creation's error, every time.
    pub fn created(&self) -> Result<()> {
        if self.created_ok.load(SeqCst) {
            return Ok(());
        }
        let mut creation = self.creation.lock().unwrap_or_else(|p| p.into_inner());
        let result = match std::mem::replace(&mut *creation, Creation::Done) {
            Creation::Pending(rx) => rx.recv().unwrap_or_else(|_| {
                Err(Error::new(
                    Code::Panic,
                    "the vCPU thread died while creating the vCPU",
                ))
            }),
            Creation::Failed(e) => Err(e),
            Creation::Done => Ok(()),
        };
        match &result {
            Ok(()) => self.created_ok.store(true, SeqCst),
            Err(e) => *creation = Creation::Failed(e.clone()),
        }
        result
    }

    /// Claims the mailbox and posts a request; returns its sequence number.
    fn post(&self, op: u32, regs: Option<&Regs>) -> Result<u32> {
        // Nothing is posted to a thread whose vCPU does not exist (yet, or ever): one load once
        // the creation has succeeded.
        self.created()?;
        let m = &*self.mailbox;
        if m.outstanding
            .compare_exchange(0, POSTING, SeqCst, SeqCst)
            .is_err()
        {
            return Err(Error::state(
                "a run is in progress: take its result (hl_vcpu_poll or hl_vcpu_wait) first",
            ));
        }
        m.op.store(op, SeqCst);
        if let Some(r) = regs {
            for (slot, v) in m.regs.iter().zip(r) {
                slot.store(*v, SeqCst);
            }
        }
        m.posted_ns.store(now_ns(), SeqCst);
        // Bump the sequence number unless the VM is closing (atomically with that check, so a
        // request can never slip in after the vCPU thread's last look).
        let mut current = m.req.load(SeqCst);
        let seq = loop {
            if current & CLOSING != 0 {
                m.outstanding.store(0, SeqCst);
                return Err(Error::state("the VM is being destroyed"));
            }
            let next = (current.wrapping_add(1) & SEQ).max(1);
            match m.req.compare_exchange_weak(current, next, SeqCst, SeqCst) {
                Ok(_) => break next,
                Err(now) => current = now,
            }
        };
        m.outstanding.store(seq, SeqCst);
        m.caller_cpu.store(current_cpu(), SeqCst);
        if m.vcpu_parked.load(SeqCst) != 0 {
            futex_wake(&m.req, 1);
        }
        // A detached vCPU: claim it and hand it to a worker (its serving loop re-checks `req`
        // after publishing DETACHED, so if it is still there one of us sees the other).
        if m.claim_detached(QUEUED) {
            if let Err(e) = self.attach() {
                // No worker could be started: the request is dropped unserved. The vCPU stays
                // detached, with this request counted as seen; a `close` that came meanwhile
                // found it QUEUED and left it to us.
                if let Some(d) = m
                    .detached
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_mut()
                {
                    d.seen = seq;
                }
                m.owner.store(DETACHED, SeqCst);
                m.outstanding.store(0, SeqCst);
                // Re-check after publishing DETACHED: a `close` sets CLOSING before it looks.
                if m.closing() && m.claim_detached(QUEUED) {
                    drop_detached(m);
                }
                return Err(e);
            }
        }
        trace!("posted op {op} as {seq}");
        Ok(seq)
    }

    /// Hands the detached vCPU (claimed: `owner` is QUEUED) to a worker.
    fn attach(&self) -> Result<()> {
        let m = self.mailbox.clone();
        let exit = self.exit.clone();
        crate::workers::run(self.mailbox.name.clone(), move || {
            let taken = m.detached.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(mut d) = taken {
                // The request that brought it back came after the spin window.
                d.misses = d.misses.saturating_add(1);
                m.owner.store(ATTACHED, SeqCst);
                serve_loop(&m, &exit, d);
            }
        })
        .map(|_| ())
        .map_err(|e| Error::os("starting a vCPU worker thread", e))
    }

    /// The sequence number of the outstanding request, if any.
    fn outstanding_seq(&self) -> Option<u32> {
        match self.mailbox.outstanding.load(SeqCst) {
            0 | POSTING => None,
            seq => Some(seq),
        }
    }

    fn answered(&self, seq: u32) -> Option<Waited> {
        let r = self.mailbox.resp.load(SeqCst);
        if r & SEQ == seq {
            Some(Waited::Answered)
        } else if r & DEAD != 0 {
            Some(Waited::Dead)
        } else {
            None
        }
    }

    /// Waits for the answer to `seq`: spins up to `spin`, then parks until `deadline`.
    fn wait_answer(&self, seq: u32, spin: Duration, deadline: Option<Instant>) -> Waited {
        let m = &*self.mailbox;
        let mut waited = None;
        let spin = if peer_elsewhere(m.vcpu_cpu.load(SeqCst)) {
            spin
        } else {
            Duration::ZERO
        };
        if spin_until(spin_budget(spin), || {
            waited = self.answered(seq);
            waited.is_some()
        }) {
            return waited.unwrap_or(Waited::Answered);
        }
        loop {
            let seen = m.resp.load(SeqCst);
            if let Some(w) = self.answered(seq) {
                return w;
            }
            let timeout = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Waited::TimedOut,
                },
                None => None,
            };
            m.callers_parked.fetch_add(1, SeqCst);
            // Re-check after announcing ourselves: the vCPU thread stores `resp` before it looks
            // at `callers_parked`, so either we see its answer here or it sees us and wakes us.
            if m.resp.load(SeqCst) == seen {
                futex_wait(&m.resp, seen, timeout);
            }
            m.callers_parked.fetch_sub(1, SeqCst);
        }
    }

    /// Takes the answer of the outstanding request `seq` (and what `read` reads of it) and frees
    /// the mailbox.
    fn take<T>(
        &self,
        seq: u32,
        waited: Waited,
        op: u32,
        read: impl FnOnce(&Mailbox) -> T,
    ) -> Result<(i32, T)> {
        let m = &*self.mailbox;
        let result = match waited {
            Waited::Answered => {
                let code = m.result.load(SeqCst);
                if code < 0 {
                    let e = m.error.lock().unwrap_or_else(|p| p.into_inner()).take();
                    Err(e.unwrap_or_else(|| Error::new(Code::Panic, "lost error of the vCPU")))
                } else {
                    Ok(code)
                }
            }
            Waited::Dead if op == OP_RUN => Ok(ExitKind::Interrupted as i32),
            Waited::Dead => Err(Error::state("the vCPU thread has stopped (VM destroyed)")),
            Waited::TimedOut => Ok(0),
        };
        let extra = read(m);
        // Only one taker wins; everything was read before the mailbox is freed for the next post.
        if m.outstanding
            .compare_exchange(seq, 0, SeqCst, SeqCst)
            .is_err()
        {
            return Err(Error::state("the run's result was already taken"));
        }
        result.map(|code| (code, extra))
    }

    /// Posts a request and waits for its answer (register calls).
    fn call(&self, op: u32, regs: Option<&Regs>) -> Result<Regs> {
        let seq = self.post(op, regs)?;
        let waited = self.wait_answer(seq, CALLER_SPIN, None);
        let read = |m: &Mailbox| std::array::from_fn(|i| m.regs[i].load(SeqCst));
        self.take(seq, waited, op, read).map(|(_, regs)| regs)
    }

    /// Clears the sticky stop: a guest call starts.
    pub fn begin_call(&self) -> Result<()> {
        if self.mailbox.closing() {
            return Err(Error::state("the VM is being destroyed"));
        }
        self.mailbox.stop.store(false, SeqCst);
        Ok(())
    }

    /// Runs the vCPU until an exit the caller must handle, until interrupted, or until
    /// `timeout` (then the stop is set, as by `interrupt`, and the result is `TimedOut`).
    pub fn run(&self, timeout: Option<Duration>) -> Result<ExitKind> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let seq = self.post(OP_RUN, None)?;
        let mut waited = self.wait_answer(seq, CALLER_SPIN, deadline);
        let timed_out = matches!(waited, Waited::TimedOut);
        if timed_out {
            trace!("run {seq} timed out");
            self.interrupt()?;
            waited = self.wait_answer(seq, CALLER_SPIN, None);
        }
        let (code, ()) = self.take(seq, waited, OP_RUN, |_| ())?;
        if timed_out {
            return Ok(ExitKind::TimedOut);
        }
        exit_kind(code)
    }

    /// Posts a run and returns at once.
    pub fn start(&self) -> Result<()> {
        self.post(OP_RUN, None).map(|_| ())
    }

    /// Takes the outstanding run's result if it is there (spinning up to `spin` for it); 0 if
    /// it is still running.
    pub fn poll(&self, spin: Duration) -> Result<i32> {
        let seq = self.outstanding_seq().ok_or_else(no_run_outstanding)?;
        let mut waited = None;
        spin_until(spin_budget(spin), || {
            waited = self.answered(seq);
            waited.is_some()
        });
        match waited {
            Some(w) => self.take(seq, w, OP_RUN, |_| ()).map(|(code, ())| code),
            None => Ok(0),
        }
    }

    /// Blocks until the outstanding run finishes and takes its result.
    pub fn wait(&self) -> Result<i32> {
        let seq = self.outstanding_seq().ok_or_else(no_run_outstanding)?;
        let waited = self.wait_answer(seq, Duration::ZERO, None);
        self.take(seq, waited, OP_RUN, |_| ())
            .map(|(code, ())| code)
    }

    pub fn set_regs(&self, regs: Regs) -> Result<()> {
        self.call(OP_SET_REGS, Some(&regs)).map(|_| ())
    }

    pub fn get_regs(&self) -> Result<Regs> {
        self.call(OP_GET_REGS, None)
    }

    pub fn get_special_regs(&self) -> Result<SpecialRegs> {
        let r = self.call(OP_GET_SPECIAL_REGS, None)?;
        Ok(std::array::from_fn(|i| r[i]))
    }

    /// The vCPU's complete state as an opaque blob (`VcpuBackend::get_state`).
    pub fn get_state(&self) -> Result<Vec<u8>> {
        let seq = self.post(OP_GET_STATE, None)?;
        let waited = self.wait_answer(seq, CALLER_SPIN, None);
        let read =
            |m: &Mailbox| std::mem::take(&mut *m.payload.lock().unwrap_or_else(|e| e.into_inner()));
        self.take(seq, waited, OP_GET_STATE, read)
            .map(|(_, blob)| blob)
    }

    /// Loads a blob from `get_state` (of this or another vCPU of the same configuration), the
    /// caller having checked its format, and waits for the vCPU thread to have loaded it. (Leaving
    /// it for the next request to load was measured: the restore got ~45 µs cheaper, but the
    /// vCPU thread then parked before the next call, which paid the wake-up and more; pool.run
    /// with a noop call went from ~80 to ~140 µs.) `STATE` while a request is outstanding.
    pub fn set_state(&self, blob: &[u8]) -> Result<()> {
        self.stash_state(blob)?;
        // The vCPU thread loads a pending state before it serves any request; this one does
        // nothing else. (Another caller could post first: its request then loads the state, and
        // this one still returns once it is loaded.)
        self.call(OP_LOAD_STATE, None).map(|_| ())
    }

    /// Leaves `blob` for the vCPU thread to load before it serves its next request. `STATE`
    /// while a request is outstanding (the mailbox is claimed for the moment of the write).
    fn stash_state(&self, blob: &[u8]) -> Result<()> {
        let m = &*self.mailbox;
        if m.outstanding
            .compare_exchange(0, POSTING, SeqCst, SeqCst)
            .is_err()
        {
            return Err(Error::state(
                "a run is in progress: take its result (hl_vcpu_poll or hl_vcpu_wait) first",
            ));
        }
        *m.pending_state.lock().unwrap_or_else(|e| e.into_inner()) = Some(blob.to_vec());
        m.outstanding.store(0, SeqCst);
        Ok(())
    }

    /// `set_state` in two halves, so the caller can work meanwhile (a restore rebases memory
    /// while the vCPU thread loads the state): posts the load and returns its sequence number.
    pub fn start_set_state(&self, blob: &[u8]) -> Result<u32> {
        self.stash_state(blob)?;
        self.post(OP_LOAD_STATE, None)
    }

    /// The second half of `start_set_state`: waits until the state is loaded.
    pub fn finish_set_state(&self, seq: u32) -> Result<()> {
        let waited = self.wait_answer(seq, CALLER_SPIN, None);
        self.take(seq, waited, OP_LOAD_STATE, |_| ()).map(|_| ())
    }

    /// Whether no request (a run in particular) is outstanding.
    pub fn idle(&self) -> bool {
        self.mailbox.outstanding.load(SeqCst) == 0
    }

    pub fn exit_ptr(&self) -> *const ExitInfo {
        self.exit.0.get()
    }

    /// Sets the sticky stop and kicks the vCPU out of `KVM_RUN`; returns once it is out.
    pub fn interrupt(&self) -> Result<()> {
        self.mailbox.stop.store(true, SeqCst);
        self.kick_until_out()
    }

    fn kick_until_out(&self) -> Result<()> {
        let m = &*self.mailbox;
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            // Seen out of the run after the stop was set: it re-checks the stop before entering
            // again, so it stays out.
            if !m.in_run.load(SeqCst) {
                return Ok(());
            }
            {
                let kick = m.kick.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(k) = kick.as_ref() {
                    // SAFETY: the slot is Some, so the vCPU exists and `k.thread` is the worker
                    // holding it: the slot is emptied under this mutex before the vCPU is dropped
                    // (and so its kvm_run mapping) and before its worker lets go of it (detach),
                    // and we hold the mutex. So `k.thread` has not exited (a worker only exits
                    // after letting go), the signal goes to a live thread; its handler does
                    // nothing.
                    unsafe {
                        k.exit_request.set(true);
                        libc::pthread_kill(k.thread, kick_signal());
                    }
                }
            }
            if start.elapsed() > KICK_TIMEOUT {
                return Err(Error::state(
                    "the vCPU did not leave the run within 10 s of being kicked",
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    /// Refuses new requests, stops the vCPU, wakes every waiter, and joins the thread.
    /// Idempotent.
    pub fn stop(&self) {
        self.close();
        let handle = self.join.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            h.wait();
        }
        trace!("stop: joined");
    }

    /// The first half of `stop`: once it returns nothing can be posted and the guest is never
    /// entered again; the thread is on its way out (it may still be dropping the vCPU).
    /// Idempotent.
    pub fn close(&self) {
        let m = &*self.mailbox;
        trace!("stop: closing");
        // CLOSING first: from here on the thread will not enter the guest whatever `stop` says
        // (a racing `begin_call` cannot reopen it), and nothing new can be posted.
        m.req.fetch_or(CLOSING, SeqCst);
        m.stop.store(true, SeqCst);
        let _ = self.kick_until_out();
        trace!("stop: out of run");
        // The thread may be parked on `req`: CLOSING changed the word, so a wake cannot be lost.
        futex_wake(&m.req, 1);
        // Detached: no worker will look again; drop the vCPU here. (A worker that is detaching
        // re-checks `req` after publishing DETACHED and sees CLOSING: one of us wins the claim.)
        if m.claim_detached(QUEUED) {
            drop_detached(m);
        }
    }
}

fn no_run_outstanding() -> Error {
    Error::state("no run is outstanding: call hl_vcpu_start first")
}

fn exit_kind(code: i32) -> Result<ExitKind> {
    Ok(match code {
        1 => ExitKind::IoOut,
        2 => ExitKind::IoIn,
        3 => ExitKind::Halt,
        4 => ExitKind::Shutdown,
        5 => ExitKind::Mmio,
        6 => ExitKind::FailEntry,
        7 => ExitKind::InternalError,
        8 => ExitKind::Interrupted,
        9 => ExitKind::Other,
        10 => ExitKind::TimedOut,
        _ => {
            return Err(Error::new(
                Code::Panic,
                format!("unexpected answer {code} from the vCPU thread"),
            ))
        }
    })
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Nanoseconds on a monotonic clock shared by every thread of the process.
fn now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The worker's adaptive idle spin (see `IDLE_MISSES_BEFORE_PARKING`).
struct IdleSpin {
    misses: u32,
}

impl IdleSpin {
    /// Waits until `req` differs from `seen`; returns its new value, or `None` once it stayed
    /// `seen` for `detach_after()` (the vCPU is to be detached).
    fn wait(&mut self, m: &Mailbox, seen: u32) -> Option<u32> {
        let window = spin_budget(VCPU_IDLE_SPIN);
        let spin = if self.misses >= IDLE_MISSES_BEFORE_PARKING
            || !peer_elsewhere(m.caller_cpu.load(SeqCst))
        {
            Duration::ZERO
        } else {
            window
        };
        let mut now = seen;
        if spin_until(spin, || {
            now = m.req.load(SeqCst);
            now != seen
        }) {
            self.misses = 0;
            return Some(now);
        }
        let parked_at = now_ns();
        let detach = detach_after();
        loop {
            now = m.req.load(SeqCst);
            if now != seen {
                break;
            }
            let timeout = match detach {
                Some(after) => {
                    let parked = Duration::from_nanos(now_ns().saturating_sub(parked_at));
                    match after.checked_sub(parked) {
                        Some(left) if !left.is_zero() => Some(left),
                        _ => return None,
                    }
                }
                None => None,
            };
            m.vcpu_parked.store(1, SeqCst);
            // Re-check after announcing ourselves: a poster bumps `req` before it looks at
            // `vcpu_parked`, so either we see its request here or it sees us and wakes us.
            if m.req.load(SeqCst) == seen {
                futex_wait(&m.req, seen, timeout);
            }
            m.vcpu_parked.store(0, SeqCst);
        }
        let arrived_after = m.posted_ns.load(SeqCst).saturating_sub(parked_at);
        if arrived_after < window.as_nanos() as u64 {
            // It came within the window after all: spinning would have caught it. (Measured from
            // its posting, not from this thread's wake-up, whose latency would otherwise keep a
            // thread that once started parking parked.)
            self.misses = 0;
        } else {
            self.misses = self.misses.saturating_add(1);
        }
        Some(now)
    }
}

/// The first job of a VM: creates its vCPU on this worker, then serves it.
fn vcpu_main(
    vm: Arc<dyn VmBackend>,
    config: VcpuConfig,
    m: Arc<Mailbox>,
    exit: Arc<ExitCell>,
    created: std::sync::mpsc::SyncSender<Result<()>>,
) {
    let made = catch_unwind(AssertUnwindSafe(|| vm.create_vcpu(&config)))
        .unwrap_or_else(|_| Err(Error::new(Code::Panic, "panic while creating the vCPU")));
    drop(vm);
    let vcpu = match made {
        Ok(v) => v,
        Err(e) => {
            // No DEAD in `resp` is needed: nothing is ever posted to a VM whose creation failed
            // (`post` first takes the creation's answer, `VcpuThread::created`).
            let _ = created.send(Err(e));
            m.finished.set();
            return;
        }
    };
    let _ = created.send(Ok(()));
    trace!("vcpu created");
    let d = Detached {
        vcpu,
        seen: 0,
        misses: 0,
    };
    serve_loop(&m, &exit, d);
}

/// Serves the mailbox on this worker until the VM closes (then drops the vCPU) or the vCPU has
/// been idle for `detach_after()` (then leaves it in the mailbox for the next poster).
fn serve_loop(m: &Mailbox, exit: &ExitCell, d: Detached) {
    let Detached {
        mut vcpu,
        mut seen,
        misses,
    } = d;
    let set_kick = |vcpu: &dyn VcpuBackend| {
        *m.kick.lock().unwrap_or_else(|p| p.into_inner()) = Some(Kick {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            exit_request: vcpu.exit_request(),
        });
    };
    set_kick(vcpu.as_ref());
    // Nothing below panics outside `catch_unwind`; should something, the VM must still end: the
    // guard (dropped before `vcpu` while unwinding) empties the kick slot and tells every waiter.
    let _unwinding = UnwindGuard(m);
    let mut idle = IdleSpin { misses };
    let mut nudge = Nudge::new();
    loop {
        let Some(now) = idle.wait(m, seen) else {
            // Idle: give the vCPU back to the mailbox. The kick slot is emptied first (kicks go
            // to the thread that holds the vCPU, and this one is about to serve other VMs).
            *m.kick.lock().unwrap_or_else(|p| p.into_inner()) = None;
            *m.detached.lock().unwrap_or_else(|p| p.into_inner()) = Some(Detached {
                vcpu,
                seen,
                misses: idle.misses,
            });
            m.owner.store(DETACHED, SeqCst);
            // Re-check after publishing DETACHED: a poster bumps `req` before it looks at
            // `owner`, so either we see its request here or it sees DETACHED and claims it.
            if m.req.load(SeqCst) != seen && m.claim_detached(ATTACHED) {
                let taken = m.detached.lock().unwrap_or_else(|p| p.into_inner()).take();
                match taken {
                    Some(d) => {
                        vcpu = d.vcpu;
                        set_kick(vcpu.as_ref());
                        continue;
                    }
                    None => return,
                }
            }
            trace!("vcpu detached");
            return;
        };
        seen = now;
        if seen & CLOSING != 0 {
            break;
        }
        let seq = seen & SEQ;
        let op = m.op.load(SeqCst);
        let cpu = current_cpu();
        if spinning_allowed() && cpu != NO_CPU && cpu == m.caller_cpu.load(SeqCst) {
            nudge.step_off(cpu);
        }
        m.vcpu_cpu.store(current_cpu(), SeqCst);
        trace!("serving op {op} ({seq})");
        let result = catch_unwind(AssertUnwindSafe(|| {
            let pending = m
                .pending_state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(blob) = pending {
                vcpu.set_state(&blob)?;
            }
            serve(vcpu.as_mut(), m, exit, op)
        }))
        .unwrap_or_else(|_| Err(Error::new(Code::Panic, "panic in the vCPU thread")));
        match result {
            Ok(v) => m.result.store(v, SeqCst),
            Err(e) => {
                let code = e.code as i32;
                *m.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                m.result.store(code, SeqCst);
            }
        }
        m.answer(seq);
    }
    drop_vcpu(m, vcpu);
}

/// Ends the VM if a serving loop unwinds (see `serve_loop`).
struct UnwindGuard<'a>(&'a Mailbox);

impl Drop for UnwindGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let m = self.0;
            *m.kick.lock().unwrap_or_else(|p| p.into_inner()) = None;
            m.resp.fetch_or(DEAD, SeqCst);
            futex_wake(&m.resp, i32::MAX);
            m.finished.set();
        }
    }
}

/// Drops the vCPU that lies detached in the mailbox (`owner` claimed by the caller).
fn drop_detached(m: &Mailbox) {
    let taken = m.detached.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(d) = taken {
        drop_vcpu(m, d.vcpu);
    }
}

/// The end of a vCPU: drops it, tells every waiter, and lets `stop` return.
fn drop_vcpu(m: &Mailbox, vcpu: Box<dyn VcpuBackend>) {
    // Kicks must not touch the vCPU (its kvm_run mapping) or signal its worker once either is
    // gone: empty the slot under its mutex before dropping the vCPU.
    *m.kick.lock().unwrap_or_else(|p| p.into_inner()) = None;
    trace!("dropping vcpu");
    drop(vcpu);
    m.resp.fetch_or(DEAD, SeqCst);
    futex_wake(&m.resp, i32::MAX);
    m.finished.set();
    trace!("vcpu dropped");
}

fn serve(vcpu: &mut dyn VcpuBackend, m: &Mailbox, exit: &ExitCell, op: u32) -> Result<i32> {
    let store = |values: &[u64]| {
        for (slot, v) in m.regs.iter().zip(values) {
            slot.store(*v, SeqCst);
        }
    };
    match op {
        OP_RUN => run_once(vcpu, m, exit).map(|k| k as i32),
        OP_SET_REGS => {
            let regs: Regs = std::array::from_fn(|i| m.regs[i].load(SeqCst));
            vcpu.set_regs(&regs).map(|_| 0)
        }
        OP_GET_REGS => vcpu.get_regs().map(|r| {
            store(&r);
            0
        }),
        OP_GET_SPECIAL_REGS => vcpu.get_special_regs().map(|r| {
            store(&r);
            0
        }),
        OP_LOAD_STATE => Ok(0),
        OP_GET_STATE => vcpu.get_state().map(|blob| {
            *m.payload.lock().unwrap_or_else(|e| e.into_inner()) = blob;
            0
        }),
        other => Err(Error::new(
            Code::Panic,
            format!("unknown vCPU request {other}"),
        )),
    }
}

fn run_once(vcpu: &mut dyn VcpuBackend, m: &Mailbox, exit: &ExitCell) -> Result<ExitKind> {
    let request = vcpu.exit_request();
    loop {
        // Clear a kick left over from an earlier run before announcing this one; an interrupter
        // that sees `in_run` sets it again after this point, and it set `stop` before looking.
        // SAFETY: we are the vCPU's own thread and hold it (`vcpu`), so it is alive.
        unsafe { request.set(false) };
        m.in_run.store(true, SeqCst);
        if m.stop.load(SeqCst) || m.closing() {
            m.in_run.store(false, SeqCst);
            // SAFETY: see ExitCell: only this thread writes, while serving a run.
            unsafe { (*exit.0.get()).set(ExitKind::Interrupted, 0, 0, 0, &[]) };
            return Ok(ExitKind::Interrupted);
        }
        // SAFETY: see ExitCell.
        let outcome = vcpu.run(unsafe { &mut *exit.0.get() });
        m.in_run.store(false, SeqCst);
        trace!("run: {:?}", outcome.as_ref().map_err(|e| e.message.clone()));
        match outcome? {
            RunOutcome::Exited(kind) => return Ok(kind),
            // A kick (the check above decides whether it was for us) or another signal: go
            // round again.
            RunOutcome::Signalled => continue,
        }
    }
}
