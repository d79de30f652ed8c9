//! Reused OS threads for vCPUs: a worker that has dropped or detached its vCPU (`vcpu_thread.rs`)
//! waits (parked, no CPU) for the next VM's work instead of exiting, so a create or a re-attach
//! skips the thread spawn (~30-60 µs here: the clone, the stack mapping, the first schedule) and
//! the destroy skips the thread exit. There are as many workers as vCPUs in use at once, plus at
//! most `MAX_IDLE` waiting ones.
//!
//! Bounded: at most `MAX_IDLE` threads wait at once (others exit), and a thread that waited
//! `IDLE_TIMEOUT` for work exits. A thread takes the job's name while it runs it (`hl-vcpu-<vm>`)
//! and `hl-vcpu-idle` while it waits. `Finished::wait` replaces `JoinHandle::join`: it returns once
//! the job has run to its end on the thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Most threads waiting for work at once.
const MAX_IDLE: usize = 4;
/// How long a thread waits for work before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_NAME: &std::ffi::CStr = c"hl-vcpu-idle";

type Job = Box<dyn FnOnce() + Send>;

/// Idle threads: an id and the sender of each one's job channel.
static IDLE: Mutex<Vec<(u64, Sender<Job>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Says when a job has finished running.
#[derive(Clone)]
pub struct Finished(Arc<(Mutex<bool>, Condvar)>);

impl Finished {
    /// Not finished yet.
    pub fn new() -> Self {
        Self(Arc::new((Mutex::new(false), Condvar::new())))
    }

    /// Marks it finished and wakes every `wait`.
    pub fn set(&self) {
        *self.0 .0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.0 .1.notify_all();
    }

    /// Blocks until the job has finished.
    pub fn wait(&self) {
        let mut done = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.0 .1.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Runs `job` on an idle thread, or on a new one named `name`.
pub fn run(name: String, job: impl FnOnce() + Send + 'static) -> std::io::Result<Finished> {
    let finished = Finished::new();
    let done = finished.clone();
    let mut job: Job = Box::new(move || {
        set_name(&name);
        // A panic is caught inside `job` by its author (vcpu_main); this one keeps the thread's
        // accounting right whatever happens.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        set_name_c(IDLE_NAME);
        done.set();
    });
    loop {
        let idle = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some((_, tx)) = idle else { break };
        match tx.send(job) {
            Ok(()) => return Ok(finished),
            // That thread is gone (it never drops its receiver while listed; belt and braces).
            Err(e) => job = e.0,
        }
    }
    let (tx, rx) = channel::<Job>();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name("hl-vcpu".into())
        .spawn(move || worker(id, tx, rx, job))?;
    Ok(finished)
}

fn worker(id: u64, tx: Sender<Job>, rx: Receiver<Job>, first: Job) {
    let mut job = first;
    loop {
        job();
        {
            let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() >= MAX_IDLE {
                return;
            }
            idle.push((id, tx.clone()));
        }
        job = match rx.recv_timeout(IDLE_TIMEOUT) {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(at) = idle.iter().position(|(i, _)| *i == id) {
                    idle.swap_remove(at);
                    return;
                }
                drop(idle);
                // Someone took this thread off the list just now: its job is on the way.
                match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return,
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
    }
}

fn set_name(name: &str) {
    // Linux keeps 15 bytes of a thread name; longer ones are refused, so cut.
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    bytes.push(0);
    if let Ok(c) = std::ffi::CStr::from_bytes_with_nul(&bytes) {
        set_name_c(c);
    }
}

fn set_name_c(name: &std::ffi::CStr) {
    // SAFETY: names the calling thread with a NUL-terminated string of at most 15 bytes + NUL.
    unsafe {
        libc::pthread_setname_np(libc::pthread_self(), name.as_ptr());
    }
}

/// Threads waiting for work now (for tests).
#[cfg(test)]
pub fn idle_count() -> usize {
    IDLE.lock().unwrap_or_else(|p| p.into_inner()).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_thread_runs_the_next_job() {
        let first = run("hl-vcpu-test1".into(), || {}).unwrap();
        first.wait();
        // The thread that ran it is idle now (or another test took it: either way a job runs).
        let (tx, rx) = std::sync::mpsc::channel();
        let second = run("hl-vcpu-test2".into(), move || {
            tx.send(std::thread::current().id()).unwrap();
        })
        .unwrap();
        second.wait();
        assert!(rx.recv().is_ok());
        assert!(idle_count() <= MAX_IDLE);
    }
}
