//! Counters of hypervisor calls and VM exits. Counts do not drift with machine speed, so the
//! benchmarks report them beside timings.

use std::sync::atomic::{AtomicU64, Ordering};

/// Process-wide count of hypervisor ioctls (VM creation and destruction included).
pub static GLOBAL_IOCTLS: AtomicU64 = AtomicU64::new(0);

/// Per-VM counters.
#[derive(Default, Debug)]
pub struct Counters {
    /// ioctls issued for this VM (create, memory, vCPU setup, runs, register access).
    pub ioctls: AtomicU64,
    /// Returns from the run ioctl with an exit reason (interruptions excluded).
    pub exits: AtomicU64,
    /// Calls of the run ioctl.
    pub runs: AtomicU64,
}

impl Counters {
    /// Records `n` ioctls against this VM and the process total.
    pub fn ioctl(&self, n: u64) {
        self.ioctls.fetch_add(n, Ordering::Relaxed);
        GLOBAL_IOCTLS.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> [u64; 3] {
        [
            self.ioctls.load(Ordering::Relaxed),
            self.exits.load(Ordering::Relaxed),
            self.runs.load(Ordering::Relaxed),
        ]
    }
}

/// Records ioctls that belong to no VM (opening the hypervisor, capability queries).
pub fn global_ioctl(n: u64) {
    GLOBAL_IOCTLS.fetch_add(n, Ordering::Relaxed);
}
