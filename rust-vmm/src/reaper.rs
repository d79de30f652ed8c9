//! Teardown off the caller's path (C ABI version 5): `hl_vm_destroy` stops the vCPU, so the guest
//! is never entered again, and hands the rest (joining the vCPU thread, closing the vCPU and VM
//! fds, unmapping guest memory) to one background thread. Measured on kvm_pvm: that rest is
//! ~350-650 µs of a create + dispose cycle, mostly the kernel's VM teardown.
//!
//! Nothing leaks: `pending()` counts VMs handed over and not yet freed, `wait_idle()` blocks until
//! it is 0 (`hl_teardown_wait`, for leak checks), and the backlog is bounded: past
//! `MAX_BACKLOG` a destroy tears down on the caller's thread, so a loop that destroys faster than
//! the reaper frees holds at most that many dead VMs.
//!
//! The thread runs at normal priority. `SCHED_IDLE` made a create + dispose ~10% faster on 2 CPUs
//! (its teardown stopped competing with the next create) but was reverted: the teardown holds
//! `mmap_lock` (unmapping guest memory) and KVM's `kvm_lock`, and with every CPU busy an idle-class
//! thread holding them can wait a long time for a CPU while creates wait for it.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use crate::trace::trace;
use crate::vm::Vm;

/// Most VMs waiting for the reaper at once; beyond it teardown is synchronous (back-pressure).
const MAX_BACKLOG: usize = 32;

struct Reaper {
    queue: Mutex<Option<Sender<Arc<Vm>>>>,
    /// VMs handed over and not yet freed, with its condition variable.
    pending: Mutex<usize>,
    idle: Condvar,
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<Reaper> = OnceLock::new();
    REAPER.get_or_init(|| Reaper {
        queue: Mutex::new(None),
        pending: Mutex::new(0),
        idle: Condvar::new(),
    })
}

/// Frees `vm` (its vCPU already stopped by the caller) on the reaper thread, or here when the
/// backlog is full or no reaper thread can be started.
pub fn defer(vm: Arc<Vm>) {
    let r = reaper();
    if synchronous() {
        teardown(vm);
        return;
    }
    {
        let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
        if *pending >= MAX_BACKLOG {
            drop(pending);
            teardown(vm);
            return;
        }
        *pending += 1;
    }
    let mut queue = r.queue.lock().unwrap_or_else(|p| p.into_inner());
    if queue.is_none() {
        *queue = spawn();
    }
    let vm = match queue.as_ref() {
        Some(q) => match q.send(vm) {
            Ok(()) => return,
            Err(e) => {
                // The thread is gone (it never leaves its loop; a panic is caught): start
                // afresh next time.
                *queue = None;
                e.0
            }
        },
        None => vm,
    };
    drop(queue);
    teardown(vm);
    done(r);
}

/// `HL_SYNC_TEARDOWN=1`: tear down on the caller's thread, as before version 5 (read once).
fn synchronous() -> bool {
    static SYNC: OnceLock<bool> = OnceLock::new();
    *SYNC.get_or_init(|| std::env::var_os(SYNC_TEARDOWN_ENV).is_some_and(|v| v == "1"))
}

/// The environment variable that switches the background teardown off.
pub const SYNC_TEARDOWN_ENV: &str = "HL_SYNC_TEARDOWN";

fn spawn() -> Option<Sender<Arc<Vm>>> {
    let (tx, rx) = channel::<Arc<Vm>>();
    std::thread::Builder::new()
        .name("hl-reaper".into())
        .spawn(move || {
            while let Ok(vm) = rx.recv() {
                // A panic in a teardown must not kill the thread (or miss the count).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| teardown(vm)));
                done(reaper());
            }
        })
        .ok()
        .map(|_| tx)
}

fn teardown(vm: Arc<Vm>) {
    trace!("reaping vm {}", vm.handle);
    vm.join_vcpu();
    // Unless a C ABI call that still holds it is in flight, this frees the VM: vCPU thread
    // handle, VM fd, memory (field order of `Vm`).
    drop(vm);
}

fn done(r: &Reaper) {
    let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
    *pending -= 1;
    if *pending == 0 {
        r.idle.notify_all();
    }
}

/// VMs destroyed and not yet freed.
pub fn pending() -> usize {
    *reaper().pending.lock().unwrap_or_else(|p| p.into_inner())
}

/// Blocks until every VM destroyed so far is freed (that no call still holds).
pub fn wait_idle() {
    let r = reaper();
    let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
    while *pending != 0 {
        pending = r.idle.wait(pending).unwrap_or_else(|p| p.into_inner());
    }
}
