//! One named OS thread per vCPU, driven by request/response channels.
//!
//! KVM wants every vCPU ioctl from the thread that created the vCPU (a thread switch makes
//! `KVM_RUN` update the vCPU's pid, which can wait for an RCU grace period), while Deno's
//! `nonblocking` FFI calls hop between pool threads. So the vCPU is created on, and only ever
//! touched from, its own thread; callers (Deno's main thread for the synchronous fast path, a pool
//! thread for the non-blocking path) post a request and block until the answer comes back.
//!
//! Interrupts: `interrupt()` marks every run requested so far as cancelled, then sets the
//! backend's exit request (`immediate_exit` for KVM) and sends the thread a real-time signal whose
//! handler does nothing, repeating until the thread is seen out of that run. A run that starts
//! after the interrupt is not affected (no stale interrupts); a run requested before it always
//! ends `Interrupted` or with the exit it reached first (no lost interrupts).

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{
    ExitInfo, ExitKind, ExitRequest, Regs, RunOutcome, SpecialRegs, VcpuBackend, VcpuConfig,
    VmBackend,
};
use crate::error::{Code, Error, Result};
use crate::trace::trace;

enum Request {
    Run(u64),
    SetRegs(Regs),
    GetRegs,
    GetSpecialRegs,
    Stop,
}

impl Request {
    fn name(&self) -> String {
        match self {
            Request::Run(seq) => format!("run {seq}"),
            Request::SetRegs(_) => "set_regs".into(),
            Request::GetRegs => "get_regs".into(),
            Request::GetSpecialRegs => "get_special_regs".into(),
            Request::Stop => "stop".into(),
        }
    }
}

enum Response {
    Done,
    Exit(ExitKind),
    Regs(Regs),
    SpecialRegs(SpecialRegs),
    Failed(Error),
}

/// The exit record, written by the vCPU thread during a run and read by the caller after the
/// run's response arrived (the channel orders the two).
struct ExitCell(UnsafeCell<ExitInfo>);

// SAFETY: writes happen only on the vCPU thread while a run request is being served; reads by
// other threads happen only after the response for that request was received, which the channel
// orders after the writes. No two runs overlap (the caller side holds `channel` for each).
unsafe impl Sync for ExitCell {}

/// State shared between the caller side and the vCPU thread for interrupts.
struct RunState {
    /// Sequence number of the latest run requested.
    requested: AtomicU64,
    /// Every run with a sequence number at or below this is cancelled.
    cancelled: AtomicU64,
    /// Sequence number of the run the thread is in (0 = not in a run).
    in_run: AtomicU64,
    exit_request: OnceLock<Arc<dyn ExitRequest>>,
    /// The vCPU thread's pthread id, and whether it is still alive to receive a signal.
    thread: Mutex<Option<libc::pthread_t>>,
}

pub struct VcpuThread {
    channel: Mutex<(Sender<Request>, Receiver<Response>)>,
    state: Arc<RunState>,
    exit: Arc<ExitCell>,
    join: Mutex<Option<JoinHandle<()>>>,
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

/// How long `interrupt` keeps kicking before reporting failure. The thread leaves the run within
/// microseconds on real hardware; the bound only exists so a broken kernel cannot hang the caller.
const KICK_TIMEOUT: Duration = Duration::from_secs(10);

impl VcpuThread {
    /// Starts the thread, which creates the vCPU; returns once the vCPU exists (or failed).
    pub fn spawn(vm: Arc<dyn VmBackend>, config: VcpuConfig, name: String) -> Result<Self> {
        install_kick_handler();
        let (req_tx, req_rx) = channel::<Request>();
        let (resp_tx, resp_rx) = channel::<Response>();
        let state = Arc::new(RunState {
            requested: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            in_run: AtomicU64::new(0),
            exit_request: OnceLock::new(),
            thread: Mutex::new(None),
        });
        let exit = Arc::new(ExitCell(UnsafeCell::new(ExitInfo::default())));
        let thread_state = state.clone();
        let thread_exit = exit.clone();
        let join = std::thread::Builder::new()
            .name(name)
            .spawn(move || vcpu_main(vm, config, thread_state, thread_exit, req_rx, resp_tx))
            .map_err(|e| Error::os("spawning the vCPU thread", e))?;
        match resp_rx.recv() {
            Ok(Response::Done) => {}
            Ok(Response::Failed(e)) => {
                let _ = join.join();
                return Err(e);
            }
            _ => {
                let _ = join.join();
                return Err(Error::new(
                    Code::Panic,
                    "the vCPU thread died while creating the vCPU",
                ));
            }
        }
        Ok(Self {
            channel: Mutex::new((req_tx, resp_rx)),
            state,
            exit,
            join: Mutex::new(Some(join)),
        })
    }

    fn request(&self, make: impl FnOnce(&RunState) -> Request) -> Result<Response> {
        let channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let request = make(&self.state);
        trace!("request {}", request.name());
        if channel.0.send(request).is_err() {
            return Err(Error::state("the vCPU thread has stopped (VM destroyed)"));
        }
        match channel.1.recv() {
            Ok(Response::Failed(e)) => Err(e),
            Ok(r) => Ok(r),
            Err(_) => Err(Error::state("the vCPU thread has stopped (VM destroyed)")),
        }
    }

    /// Runs the vCPU until an exit the caller must handle, or until interrupted.
    pub fn run(&self) -> Result<ExitKind> {
        match self.request(|s| Request::Run(s.requested.fetch_add(1, SeqCst) + 1))? {
            Response::Exit(kind) => Ok(kind),
            _ => Err(Error::new(
                Code::Panic,
                "unexpected answer from the vCPU thread",
            )),
        }
    }

    pub fn set_regs(&self, regs: Regs) -> Result<()> {
        self.request(|_| Request::SetRegs(regs)).map(|_| ())
    }

    pub fn get_regs(&self) -> Result<Regs> {
        match self.request(|_| Request::GetRegs)? {
            Response::Regs(r) => Ok(r),
            _ => Err(Error::new(
                Code::Panic,
                "unexpected answer from the vCPU thread",
            )),
        }
    }

    pub fn get_special_regs(&self) -> Result<SpecialRegs> {
        match self.request(|_| Request::GetSpecialRegs)? {
            Response::SpecialRegs(r) => Ok(r),
            _ => Err(Error::new(
                Code::Panic,
                "unexpected answer from the vCPU thread",
            )),
        }
    }

    pub fn exit_ptr(&self) -> *const ExitInfo {
        self.exit.0.get()
    }

    /// Cancels the run in progress (or requested and not yet started), if any.
    pub fn interrupt(&self) -> Result<()> {
        let target = self.state.requested.load(SeqCst);
        self.state.cancelled.fetch_max(target, SeqCst);
        self.kick_until_out(target)
    }

    fn kick_until_out(&self, target: u64) -> Result<()> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(20);
        loop {
            let current = self.state.in_run.load(SeqCst);
            // Out of every run this interrupt applies to: done. A later run is not ours to stop.
            if current == 0 || current > target {
                return Ok(());
            }
            if let Some(req) = self.state.exit_request.get() {
                req.set(true);
            }
            {
                let thread = self.state.thread.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(t) = *thread {
                    // SAFETY: `t` is alive: the thread clears this slot (under the same lock)
                    // before it exits. The handler does nothing.
                    unsafe { libc::pthread_kill(t, kick_signal()) };
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

    /// Cancels everything, stops the thread and waits for it. Idempotent.
    pub fn stop(&self) {
        trace!("stop: cancel");
        self.state.cancelled.store(u64::MAX, SeqCst);
        let _ = self.kick_until_out(u64::MAX);
        trace!("stop: out of run");
        {
            let channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
            let _ = channel.0.send(Request::Stop);
        }
        trace!("stop: sent");
        let handle = self.join.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
        trace!("stop: joined");
    }
}

impl Drop for VcpuThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn vcpu_main(
    vm: Arc<dyn VmBackend>,
    config: VcpuConfig,
    state: Arc<RunState>,
    exit: Arc<ExitCell>,
    requests: Receiver<Request>,
    responses: Sender<Response>,
) {
    // SAFETY: pthread_self has no preconditions.
    *state.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(unsafe { libc::pthread_self() });
    let created = catch_unwind(AssertUnwindSafe(|| vm.create_vcpu(&config)))
        .unwrap_or_else(|_| Err(Error::new(Code::Panic, "panic while creating the vCPU")));
    let mut vcpu = match created {
        Ok(v) => v,
        Err(e) => {
            *state.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
            let _ = responses.send(Response::Failed(e));
            return;
        }
    };
    let _ = state.exit_request.set(vcpu.exit_request());
    let _ = responses.send(Response::Done);

    trace!("vcpu created");
    for request in requests {
        trace!("serving {}", request.name());
        let response = match request {
            Request::Stop => break,
            Request::Run(seq) => catch_unwind(AssertUnwindSafe(|| {
                run_once(vcpu.as_mut(), &state, &exit, seq)
            }))
            .unwrap_or_else(|_| Err(Error::new(Code::Panic, "panic in the vCPU run loop")))
            .map(Response::Exit),
            Request::SetRegs(r) => vcpu.set_regs(&r).map(|_| Response::Done),
            Request::GetRegs => vcpu.get_regs().map(Response::Regs),
            Request::GetSpecialRegs => vcpu.get_special_regs().map(Response::SpecialRegs),
        };
        let response = response.unwrap_or_else(Response::Failed);
        if responses.send(response).is_err() {
            break;
        }
    }
    // Signals must not target this thread once it is gone.
    *state.thread.lock().unwrap_or_else(|p| p.into_inner()) = None;
    trace!("dropping vcpu");
    drop(vcpu);
    trace!("vcpu thread exits");
}

fn run_once(
    vcpu: &mut dyn VcpuBackend,
    state: &RunState,
    exit: &ExitCell,
    seq: u64,
) -> Result<ExitKind> {
    let request = vcpu.exit_request();
    loop {
        // Clear a kick left over from an earlier run before announcing this one; an interrupter
        // that sees `in_run == seq` sets it again after this point.
        request.set(false);
        state.in_run.store(seq, SeqCst);
        if state.cancelled.load(SeqCst) >= seq {
            state.in_run.store(0, SeqCst);
            // SAFETY: see ExitCell: only this thread writes, during a run request.
            unsafe { (*exit.0.get()).set(ExitKind::Interrupted, 0, 0, 0, &[]) };
            return Ok(ExitKind::Interrupted);
        }
        // SAFETY: see ExitCell.
        let outcome = vcpu.run(unsafe { &mut *exit.0.get() });
        state.in_run.store(0, SeqCst);
        trace!(
            "run {seq}: {:?}",
            outcome.as_ref().map_err(|e| e.message.clone())
        );
        match outcome? {
            RunOutcome::Exited(kind) => return Ok(kind),
            // A signal that was not an interrupt of this run (a stale kick, or another signal):
            // go round again; the check above decides.
            RunOutcome::Signalled => continue,
        }
    }
}
