//! The global allocator: talc over the PEB's heap region, behind a spin lock.
//!
//! The source is `Manual`: the heap is claimed once at init and allocation beyond it fails, so
//! `alloc` reports it through `handle_alloc_error`, which panics ("memory allocation of N
//! bytes failed") and so ends in a PANIC frame.

use spinning_top::RawSpinlock;
use talc::TalcLock;
use talc::source::Manual;

#[global_allocator]
static ALLOCATOR: TalcLock<RawSpinlock, Manual> = TalcLock::new(Manual);

/// Gives the heap region `[addr, addr + size)` to the allocator.
pub(crate) fn init(addr: u64, size: u64) {
    let (Ok(base), Ok(len)) = (usize::try_from(addr), usize::try_from(size)) else {
        panic!("heap region does not fit the address space");
    };
    // SAFETY: the region was checked against guest memory and every other region in
    // `peb::init`; nothing else uses it, and it stays valid for the guest's lifetime. `Manual`
    // allows manual heap management.
    let claimed = unsafe {
        ALLOCATOR
            .lock()
            .claim(core::ptr::with_exposed_provenance_mut(base), len)
    };
    if claimed.is_none() {
        panic!("heap of {size} bytes at {addr:#x} is too small for the allocator");
    }
}
