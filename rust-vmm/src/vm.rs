//! A VM as the C ABI sees it: its memory, its one vCPU thread, its counters, and a table of live
//! VMs addressed by small integer handles that are never reused (so a stale handle is an error,
//! not someone else's VM).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::backend::{Capabilities, Hypervisor, VcpuConfig, VmBackend};
use crate::error::{Error, Result};
use crate::kvm::KvmHypervisor;
use crate::memory::{GuestMemory, MemorySnapshot};
use crate::stats::Counters;
use crate::trace::trace;
use crate::vcpu_thread::VcpuThread;

/// Fields drop in declaration order: the vCPU thread stops first, then the VM fd closes, then the
/// memory is unmapped.
pub struct Vm {
    pub handle: u32,
    vcpu: OnceLock<VcpuThread>,
    backend: Arc<dyn VmBackend>,
    memory: Mutex<Vec<Arc<GuestMemory>>>,
    pub counters: Arc<Counters>,
    pub last_error: Mutex<String>,
}

static HYPERVISOR: Mutex<Option<Arc<dyn Hypervisor>>> = Mutex::new(None);
static VMS: OnceLock<Mutex<HashMap<u32, Arc<Vm>>>> = OnceLock::new();
static NEXT_HANDLE: AtomicU32 = AtomicU32::new(1);
/// Live memory snapshots by handle (never reused either). A region based on a snapshot holds its
/// own `Arc`, so releasing the handle frees the memfd only once no VM uses it.
static SNAPSHOTS: OnceLock<Mutex<HashMap<u32, Arc<MemorySnapshot>>>> = OnceLock::new();
static NEXT_SNAPSHOT: AtomicU32 = AtomicU32::new(1);

fn snapshots() -> &'static Mutex<HashMap<u32, Arc<MemorySnapshot>>> {
    SNAPSHOTS.get_or_init(|| Mutex::new(HashMap::new()))
}

pub fn lookup_snapshot(handle: u32) -> Result<Arc<MemorySnapshot>> {
    snapshots()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&handle)
        .cloned()
        .ok_or_else(|| {
            Error::new(
                crate::error::Code::InvalidHandle,
                format!("no snapshot with handle {handle}: it was released or never created"),
            )
        })
}

pub fn release_snapshot(handle: u32) -> Result<()> {
    snapshots()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&handle)
        .map(|_| ())
        .ok_or_else(|| {
            Error::new(
                crate::error::Code::InvalidHandle,
                format!("no snapshot with handle {handle}: it was released or never created"),
            )
        })
}

/// Registers a snapshot and returns its new handle.
pub fn insert_snapshot(snap: MemorySnapshot) -> Result<u32> {
    let handle = allocate_handle(&NEXT_SNAPSHOT)?;
    snapshots()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(handle, Arc::new(snap));
    Ok(handle)
}

/// Number of live snapshot handles (for leak checks in tests).
pub fn live_snapshots() -> usize {
    snapshots().lock().unwrap_or_else(|p| p.into_inner()).len()
}

/// Takes the next handle from `next`. Handles are never reused, so after 2^32 - 1 VMs the
/// counter saturates at 0 (never a handle) and every later create fails, instead of wrapping onto a
/// handle that may still be live (issue #10): a stale handle must stay an error, never another
/// caller's VM.
fn allocate_handle(next: &AtomicU32) -> Result<u32> {
    next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
        (h != 0).then(|| h.checked_add(1).unwrap_or(0))
    })
    .map_err(|_| {
        Error::state(
            "VM handles exhausted in this process (2^32 - 1 VMs created; handles are never \
             reused): restart the process",
        )
    })
}

fn vms() -> &'static Mutex<HashMap<u32, Arc<Vm>>> {
    VMS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Opens the hypervisor once per process. A failure is not cached, so fixing permissions (or
/// loading the module) works without restarting the process.
pub fn hypervisor() -> Result<Arc<dyn Hypervisor>> {
    let mut slot = HYPERVISOR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = slot.as_ref() {
        return Ok(h.clone());
    }
    let h: Arc<dyn Hypervisor> = Arc::new(KvmHypervisor::open()?);
    *slot = Some(h.clone());
    Ok(h)
}

pub fn capabilities() -> Result<Capabilities> {
    Ok(hypervisor()?.capabilities())
}

pub fn lookup(handle: u32) -> Result<Arc<Vm>> {
    vms()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&handle)
        .cloned()
        .ok_or_else(|| Error::invalid_handle(handle))
}

pub fn create() -> Result<u32> {
    let counters = Arc::new(Counters::default());
    let backend = hypervisor()?.create_vm(counters.clone())?;
    let handle = allocate_handle(&NEXT_HANDLE)?;
    let vm = Arc::new(Vm {
        handle,
        vcpu: OnceLock::new(),
        backend,
        memory: Mutex::new(Vec::new()),
        counters,
        last_error: Mutex::new(String::new()),
    });
    vms()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(handle, vm);
    Ok(handle)
}

/// Removes the VM from the table and stops its vCPU (the guest is never entered again once this
/// returns); the reaper thread joins the vCPU thread and frees the rest (`reaper.rs`), or the last
/// in-flight call that still holds the VM when it returns.
pub fn destroy(handle: u32) -> Result<()> {
    let vm = vms()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&handle)
        .ok_or_else(|| Error::invalid_handle(handle))?;
    trace!("vm {handle} destroy");
    if let Some(vcpu) = vm.vcpu.get() {
        vcpu.close();
    }
    crate::reaper::defer(vm);
    trace!("vm {handle} destroyed");
    Ok(())
}

/// Number of live VMs (for leak checks in tests).
pub fn live_count() -> usize {
    vms().lock().unwrap_or_else(|p| p.into_inner()).len()
}

impl Vm {
    pub fn map_memory(&self, gpa: u64, size: u64, readonly: bool) -> Result<u32> {
        self.add_region(gpa, size, readonly, || GuestMemory::new(gpa, size))
    }

    /// Maps a snapshot copy-on-write at `gpa` (a new slot).
    pub fn map_snapshot(&self, gpa: u64, snap: Arc<MemorySnapshot>) -> Result<u32> {
        let size = snap.size();
        self.add_region(gpa, size, false, || GuestMemory::from_snapshot(gpa, snap))
    }

    /// Maps a snapshot at `gpa` as code (a new slot): read-only for the guest at the hypervisor
    /// level where the backend supports it (`KVM_MEM_READONLY`), and always read-only in the
    /// page tables the host builds. No copy: every VM that maps the same snapshot shares its pages.
    /// Where the hypervisor enforces read-only, every such VM's slot points at the snapshot's one
    /// shared host mapping (`GuestMemory::shared_code`: no mapping, populate or `munmap` per VM);
    /// elsewhere each VM maps it privately, so a guest's write stays its own copy.
    /// Returns the slot and whether the hypervisor enforces read-only.
    pub fn map_code(&self, gpa: u64, snap: Arc<MemorySnapshot>) -> Result<(u32, bool)> {
        let size = snap.size();
        let readonly = capabilities()?.readonly_memory;
        let slot = self.add_region(gpa, size, readonly, || {
            if readonly {
                GuestMemory::shared_code(gpa, snap)
            } else {
                GuestMemory::from_snapshot(gpa, snap)
            }
        })?;
        Ok((slot, readonly))
    }

    /// Checks `gpa..gpa+size` (valid, no overlap), makes the region with `make` and maps it into
    /// the VM as the next slot.
    fn add_region(
        &self,
        gpa: u64,
        size: u64,
        readonly: bool,
        make: impl FnOnce() -> Result<GuestMemory>,
    ) -> Result<u32> {
        GuestMemory::validate(gpa, size)?;
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(other) = memory.iter().find(|m| m.overlaps(gpa, size)) {
            return Err(Error::invalid_argument(format!(
                "region {gpa:#x}+{size:#x} overlaps the region at {:#x}+{:#x}",
                other.gpa,
                other.size()
            )));
        }
        let slot = memory.len() as u32;
        let region = Arc::new(make()?);
        // SAFETY: the mapping is kept in `self.memory`, which drops after `backend` (field order),
        // so it outlives the VM's use of it.
        unsafe {
            self.backend
                .map_memory(slot, gpa, region.host_ptr(), size, readonly)?
        };
        memory.push(region);
        Ok(slot)
    }

    /// Snapshots a slot's memory; the slot is then re-based on the snapshot (so a later restore is
    /// one `MADV_DONTNEED`). Returns the snapshot's handle.
    pub fn snapshot_memory(&self, slot: u32) -> Result<u32> {
        self.idle_vcpu("snapshot")?;
        let region = self.memory(slot)?;
        let snap = Arc::new(region.snapshot()?);
        region.rebase(&snap)?;
        let handle = allocate_handle(&NEXT_SNAPSHOT)?;
        snapshots()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(handle, snap);
        Ok(handle)
    }

    /// Brings a slot's memory back to `snap`'s content (see `GuestMemory::rebase`); returns the
    /// number of pages put back.
    pub fn rebase_memory(&self, slot: u32, snap: &Arc<MemorySnapshot>) -> Result<u64> {
        self.idle_vcpu("restore memory")?;
        self.memory(slot)?.rebase(snap)
    }

    /// Restores a slot's memory to `snap` and the vCPU to `state` (a checked blob): the vCPU
    /// thread loads the state while this thread puts the memory back, and this returns when both
    /// are done. Returns the number of pages put back (`GuestMemory::rebase`).
    pub fn restore(&self, slot: u32, snap: &Arc<MemorySnapshot>, state: &[u8]) -> Result<u64> {
        self.idle_vcpu("restore")?;
        let region = self.memory(slot)?;
        let vcpu = self.vcpu()?;
        let seq = vcpu.start_set_state(state)?;
        // The vCPU thread is loading registers, not running the guest: memory may change under it.
        let memory = region.rebase(snap);
        let loaded = vcpu.finish_set_state(seq);
        let pages = memory?;
        loaded.map(|_| pages)
    }

    fn idle_vcpu(&self, what: &str) -> Result<()> {
        match self.vcpu.get() {
            Some(v) if !v.idle() => Err(Error::state(format!(
                "cannot {what} while a run is outstanding: take its result first"
            ))),
            _ => Ok(()),
        }
    }

    pub fn memory(&self, slot: u32) -> Result<Arc<GuestMemory>> {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(slot as usize)
            .cloned()
            .ok_or_else(|| {
                Error::invalid_argument(format!("VM {} has no memory slot {slot}", self.handle))
            })
    }

    /// Creates the vCPU on its thread and waits for it (`wait`), or only starts it: then the first
    /// call that needs the vCPU waits, and reports a failed creation.
    pub fn create_vcpu(&self, config: VcpuConfig, wait: bool) -> Result<()> {
        if self.vcpu.get().is_some() {
            return Err(Error::state(format!(
                "VM {} already has its vCPU",
                self.handle
            )));
        }
        let thread = VcpuThread::spawn(
            self.backend.clone(),
            config,
            format!("hl-vcpu-{}", self.handle),
        )?;
        if wait {
            // A failed creation leaves the VM without a vCPU.
            thread.created()?;
        }
        self.vcpu
            .set(thread)
            .map_err(|_| Error::state(format!("VM {} already has its vCPU", self.handle)))
    }

    /// Stops the vCPU and joins its thread (the reaper's first step).
    pub fn join_vcpu(&self) {
        if let Some(vcpu) = self.vcpu.get() {
            vcpu.stop();
        }
    }

    /// The vCPU, once its creation has succeeded (waiting for a creation still under way).
    pub fn vcpu(&self) -> Result<&VcpuThread> {
        let vcpu = self.vcpu_thread()?;
        vcpu.created()?;
        Ok(vcpu)
    }

    /// The vCPU's thread, whether or not the creation has finished.
    pub fn vcpu_thread(&self) -> Result<&VcpuThread> {
        self.vcpu.get().ok_or_else(|| {
            Error::state(format!(
                "VM {} has no vCPU yet: call hl_vcpu_create first",
                self.handle
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_never_wrap_onto_a_live_entry() {
        let next = AtomicU32::new(1);
        assert_eq!(allocate_handle(&next).unwrap(), 1);
        assert_eq!(allocate_handle(&next).unwrap(), 2);
        let next = AtomicU32::new(u32::MAX - 1);
        assert_eq!(allocate_handle(&next).unwrap(), u32::MAX - 1);
        assert_eq!(allocate_handle(&next).unwrap(), u32::MAX);
        // Exhausted: refused, and it stays refused (the old code went on from 1 again).
        for _ in 0..3 {
            let err = allocate_handle(&next).unwrap_err();
            assert_eq!(err.code, crate::error::Code::State);
            assert!(err.message.contains("exhausted"));
        }
        assert_eq!(next.load(Ordering::Relaxed), 0);
    }
}
