//! The global allocator: talc over the PEB's heap region, behind a spin lock.
//!
//! The region is claimed in steps (`Growing`): the first allocation claims its first page, and
//! each time talc runs out the claim at least doubles, up to the whole region. A claim writes
//! talc's tag at the claimed end, so claiming the whole region at once touched the heap's last
//! page in every sandbox: on kvm_pvm every page a new VM touches first is a shadow-paging fault
//! (~10-15 µs), and the start of every cold create paid two of them for the heap before
//! anything was allocated (issue 19). Now an idle sandbox's heap is the pages it used.
//!
//! Allocation beyond the region fails, so `alloc` reports it through `handle_alloc_error`,
//! which panics ("memory allocation of N bytes failed") and so ends in a PANIC frame; a region
//! too small for talc's metadata fails the same way, at the first allocation.

use core::alloc::Layout;
use core::ptr::NonNull;

use spinning_top::RawSpinlock;
use talc::TalcLock;
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;

/// The first claim: one page (talc's metadata, ~1.5 KiB, and the first small allocations).
const FIRST_CLAIM: usize = 4096;

#[global_allocator]
static ALLOCATOR: TalcLock<RawSpinlock, Growing> = TalcLock::new(Growing::NONE);

/// Gives the heap region `[addr, addr + size)` to the allocator, claimed as it is needed.
pub(crate) fn init(addr: u64, size: u64) {
    let (Ok(base), Ok(len)) = (usize::try_from(addr), usize::try_from(size)) else {
        panic!("heap region does not fit the address space");
    };
    let Some(end) = base.checked_add(len) else {
        panic!("heap region does not fit the address space");
    };
    ALLOCATOR.lock().source = Growing {
        base,
        end,
        claimed: None,
    };
}

/// A [`Source`] that claims `[base, end)` in growing steps: first `FIRST_CLAIM` bytes, then
/// each time at least double the claim (and enough for the allocation that ran out), never past
/// `end`.
#[derive(Debug)]
struct Growing {
    base: usize,
    end: usize,
    /// The end of the claim so far (what `claim`/`extend` returned); `None` before the first.
    claimed: Option<NonNull<u8>>,
}

// SAFETY: the region is one address range of the guest's own memory, used by one vCPU; the
// pointer is only an address that `acquire` passes back to talc.
unsafe impl Send for Growing {}

impl Growing {
    /// Before `init`: nothing to claim (an allocation fails).
    const NONE: Growing = Growing {
        base: 0,
        end: 0,
        claimed: None,
    };
}

// SAFETY: `acquire` only calls `claim`/`extend` on the `talc` it is given, never the global
// allocator, and allocates nothing itself.
unsafe impl Source for Growing {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let Growing { base, end, claimed } = talc.source;
        // Enough for the allocation that ran out, with room for talc's tags and alignment.
        let want = layout
            .size()
            .saturating_add(layout.align())
            .saturating_add(256);
        match claimed {
            None => {
                if base == 0 || base >= end {
                    return Err(());
                }
                let size = FIRST_CLAIM.max(want).min(end - base);
                // SAFETY: `[base, end)` is the heap region `init` was given: checked against
                // guest memory and every other region in `peb::init`, used by nothing else, and
                // valid and writable for the guest's lifetime; `size <= end - base`.
                let got = unsafe { talc.claim(core::ptr::with_exposed_provenance_mut(base), size) };
                talc.source.claimed = Some(got.ok_or(())?);
                Ok(())
            }
            Some(heap_end) => {
                let at = heap_end.as_ptr().addr();
                if at >= end {
                    return Err(());
                }
                let grown = (at - base).max(want);
                let new_end = at.saturating_add(grown).min(end);
                // SAFETY: `heap_end` is the up-to-date end that talc returned for this heap, and
                // `[heap_end, new_end)` lies in the region `init` was given (see above).
                let got = unsafe {
                    talc.extend(heap_end, core::ptr::with_exposed_provenance_mut(new_end))
                };
                if got == heap_end {
                    return Err(());
                }
                talc.source.claimed = Some(got);
                Ok(())
            }
        }
    }
}
