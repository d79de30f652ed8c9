//! Linear memories that grow in place (issue 22 item 1, first part). wasmtime's own memory for a
//! guest without virtual memory (`MallocMemory`) is a `Vec` sized to the current length, so every
//! `memory.grow` reallocates and copies the whole memory (and needs the old and the new copy at
//! once). Here each memory reserves, when it is created, the most it can ever reach — its declared
//! maximum, capped by the store's memory limit that the host sends with `instantiate` — as one
//! allocation of the guest heap. The guest heap is lazily backed by the host (a page costs a host
//! page only once touched), so the untouched reserve costs address space, not memory; a grow then
//! zeroes the new pages in place and copies nothing. When the reserve cannot be had (the heap is
//! smaller than the limit), the memory starts at its minimum and a grow past it reallocates as
//! before; [`bytes_copied`] counts what such grows copied (the test and the bench read it through
//! the guest function `memory_copied`).

use alloc::boxed::Box;
use alloc::string::String;
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use wasmtime::{LinearMemory, MemoryCreator, MemoryType};

/// Alignment of a memory's allocation (a Wasm page would do; 16 is what wasmtime's own uses, a
/// page keeps the reserve page-aligned so untouched pages stay whole).
const ALIGN: usize = 4096;

/// The store's memory limit in bytes for the next instantiation (0: none), set by `instantiate`.
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Bytes copied by grows that had to move a memory (since the guest started).
static COPIED: AtomicU64 = AtomicU64::new(0);

/// Sets the store limit that the next memories' reserve is capped by.
pub fn set_limit(bytes: Option<usize>) {
    LIMIT.store(bytes.unwrap_or(0), Ordering::Relaxed);
}

/// Bytes copied by `memory.grow` so far (0 while every memory grew in its reserve).
pub fn bytes_copied() -> u64 {
    COPIED.load(Ordering::Relaxed)
}

/// The memory creator given to the engine (`Config::with_host_memory`).
pub struct Creator;

/// One linear memory: `capacity` bytes allocated at `ptr`, the first `len` of them in use (and
/// zeroed when they came into use).
struct Reserved {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: the memory is owned by this value alone; the guest has one vCPU and wasmtime
// serialises access to a store.
unsafe impl Send for Reserved {}
// SAFETY: as above; `&Reserved` only reads the fields.
unsafe impl Sync for Reserved {}

fn layout(bytes: usize) -> Option<Layout> {
    Layout::from_size_align(bytes.max(ALIGN), ALIGN).ok()
}

/// Allocates `bytes` (uninitialised; the heap's untouched pages stay untouched). `None` when the
/// heap has no such block.
fn allocate(bytes: usize) -> Option<NonNull<u8>> {
    let layout = layout(bytes)?;
    // SAFETY: `layout` has a non-zero size (at least `ALIGN`).
    NonNull::new(unsafe { alloc::alloc::alloc(layout) })
}

impl Reserved {
    fn new(minimum: usize, reserve: usize) -> Option<Self> {
        let (ptr, capacity) = match allocate(reserve) {
            Some(p) => (p, reserve.max(ALIGN)),
            None => (allocate(minimum)?, minimum.max(ALIGN)),
        };
        // SAFETY: `ptr` is valid for `capacity >= minimum` bytes.
        unsafe { core::ptr::write_bytes(ptr.as_ptr(), 0, minimum) };
        Some(Self {
            ptr,
            len: minimum,
            capacity,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(layout) = layout(self.capacity) {
            // SAFETY: `ptr` was allocated with exactly this layout (`capacity` is what was asked).
            unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

// SAFETY: `as_ptr` is valid for `byte_capacity` bytes, of which `byte_size` are zero-initialised
// or written by Wasm; growth within the capacity never moves the base.
unsafe impl LinearMemory for Reserved {
    fn byte_size(&self) -> usize {
        self.len
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size <= self.len {
            self.len = new_size;
            return Ok(());
        }
        if new_size > self.capacity {
            // Outside the reserve: move, as wasmtime's own memory does on every grow.
            let Some(ptr) = allocate(new_size) else {
                return Err(wasmtime::format_err!(
                    "failed to grow memory to {new_size:#x} bytes"
                ));
            };
            // SAFETY: both blocks are valid for `len` bytes and distinct allocations.
            unsafe { core::ptr::copy_nonoverlapping(self.ptr.as_ptr(), ptr.as_ptr(), self.len) };
            COPIED.fetch_add(self.len as u64, Ordering::Relaxed);
            let old = core::mem::replace(
                self,
                Self {
                    ptr,
                    len: self.len,
                    capacity: new_size.max(ALIGN),
                },
            );
            drop(old);
        }
        // SAFETY: `[len, new_size)` lies inside the allocation (`new_size <= capacity`).
        unsafe {
            core::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, new_size - self.len);
        }
        self.len = new_size;
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

/// Whether a [`Guarded`] memory holds the reservation (there is one per sandbox).
static RESERVATION_IN_USE: AtomicBool = AtomicBool::new(false);

/// The host function that maps the reservation (docs/abi.md, "Wasm guard pages").
const WASM_MAP: &str = "hl_wasm_map";

/// Whether the heap has a block of `bytes` now (it is freed again at once).
fn allocate_fits(bytes: usize) -> bool {
    match (allocate(bytes), layout(bytes)) {
        (Some(p), Some(l)) => {
            // SAFETY: `p` was just allocated with layout `l`.
            unsafe { alloc::alloc::dealloc(p.as_ptr(), l) };
            true
        }
        _ => false,
    }
}

fn round_page(bytes: usize) -> usize {
    bytes.div_ceil(ALIGN) * ALIGN
}

/// Asks the host to map the reservation's first `bytes` onto the heap block at `block` (0 bytes:
/// unmap all).
fn host_map(block: NonNull<u8>, bytes: usize) -> Result<(), String> {
    hl_guest::call_host(
        WASM_MAP,
        &[
            hl_guest::Value::U64(block.as_ptr() as u64),
            hl_guest::Value::U64(round_page(bytes) as u64),
        ],
    )
    .map(|_| ())
    .map_err(|e| alloc::format!("{WASM_MAP}: {e:?}"))
}

/// A linear memory behind guard pages: its pages live in one heap block (`capacity` bytes at
/// `block`), which the host maps at the start of the reservation (`base`) up to `len` (rounded
/// to 4 KiB); everything after that, to 4 GiB and the guard beyond, is not present, so an
/// out-of-bounds access faults and the host delivers the fault to wasmtime's trap handler. The
/// block is the memory's reachable size (`reserve`) when the heap has it, so a grow maps more of
/// it and copies nothing; otherwise it starts at the minimum and a grow past it moves the pages
/// to a larger block (counted in [`bytes_copied`]), the reservation's address staying the same.
struct Guarded {
    base: NonNull<u8>,
    block: NonNull<u8>,
    len: usize,
    capacity: usize,
    reserve: usize,
}

// SAFETY: as for `Reserved`: owned by this value alone, one vCPU, wasmtime serialises a store.
unsafe impl Send for Guarded {}
// SAFETY: as above; `&Guarded` only reads the fields.
unsafe impl Sync for Guarded {}

impl Guarded {
    fn new(minimum: usize, capacity: usize) -> Result<Self, String> {
        let (base, room) = hl_guest::wasm_reservation()
            .ok_or_else(|| String::from("the host laid out no Wasm reservation"))?;
        let capacity = capacity.min(usize::try_from(room).unwrap_or(usize::MAX));
        if minimum > capacity {
            return Err(alloc::format!(
                "a memory of {minimum} bytes does not fit the {capacity}-byte reservation"
            ));
        }
        let base = NonNull::new(core::ptr::with_exposed_provenance_mut::<u8>(base as usize))
            .ok_or_else(|| String::from("null reservation"))?;
        if RESERVATION_IN_USE.swap(true, Ordering::Relaxed) {
            return Err(String::from(
                "one linear memory per sandbox with guard pages",
            ));
        }
        let (block, size) = match allocate(capacity) {
            Some(b) => (b, capacity),
            None => match allocate(minimum) {
                Some(b) => (b, minimum),
                None => {
                    RESERVATION_IN_USE.store(false, Ordering::Relaxed);
                    return Err(String::from("out of guest heap for the memory's minimum"));
                }
            },
        };
        let mut memory = Self {
            base,
            block,
            len: 0,
            capacity: size.max(ALIGN),
            reserve: capacity,
        };
        memory.map(minimum)?;
        Ok(memory)
    }

    /// Moves the pages to a block of `new_size` bytes (the old one is too small).
    fn relocate(&mut self, new_size: usize) -> Result<(), String> {
        let new_size = round_page(new_size);
        let block = allocate(new_size).ok_or_else(|| {
            alloc::format!("failed to grow memory to {new_size:#x} bytes: out of guest heap")
        })?;
        // SAFETY: both blocks are valid for `len` bytes and distinct allocations.
        unsafe { core::ptr::copy_nonoverlapping(self.block.as_ptr(), block.as_ptr(), self.len) };
        COPIED.fetch_add(self.len as u64, Ordering::Relaxed);
        // The old block leaves the reservation (the host drops its pages) before the new one
        // enters it.
        host_map(self.block, 0)?;
        if let Some(layout) = layout(self.capacity) {
            // SAFETY: the old block was allocated with exactly this layout, and is unmapped.
            unsafe { alloc::alloc::dealloc(self.block.as_ptr(), layout) };
        }
        self.block = block;
        self.capacity = new_size.max(ALIGN);
        host_map(self.block, self.len)
    }

    /// Maps `[0, new_size)` and zeroes what comes into use.
    fn map(&mut self, new_size: usize) -> Result<(), String> {
        host_map(self.block, new_size)?;
        // Zeroed through the reservation, where Wasm code will touch the pages: on shadow-paging
        // KVM each guest-virtual address of a page costs a fault the first time it is used, so
        // zeroing through the block's own (identity) address would double the faults.
        // SAFETY: `[len, new_size)` of the reservation is mapped now (onto the block, `new_size <=
        // capacity`), and nothing else refers to those bytes.
        unsafe {
            core::ptr::write_bytes(self.base.as_ptr().add(self.len), 0, new_size - self.len);
        }
        self.len = new_size;
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // Unmapped before the block goes back to the heap; a failure leaves the block allocated
        // (leaked) rather than reachable through the reservation.
        if host_map(self.block, 0).is_ok() {
            if let Some(layout) = layout(self.capacity) {
                // SAFETY: `block` was allocated with exactly this layout.
                unsafe { alloc::alloc::dealloc(self.block.as_ptr(), layout) };
            }
            RESERVATION_IN_USE.store(false, Ordering::Relaxed);
        }
    }
}

// SAFETY: `base` is valid for `byte_size` bytes (mapped by the host onto the block); the rest of
// the 4 GiB reservation and the guard after it are not present, as wasmtime's engine config
// (`engine_config.rs`) and `new_memory`'s promise need; the base never moves.
unsafe impl LinearMemory for Guarded {
    fn byte_size(&self) -> usize {
        self.len
    }

    /// What the memory can grow to without its base moving: the whole reserve (the base is the
    /// reservation's, whichever block backs it; wasmtime refuses to grow a memory that may not
    /// move past this).
    fn byte_capacity(&self) -> usize {
        self.reserve
    }

    fn grow_to(&mut self, new_size: usize) -> wasmtime::Result<()> {
        if new_size > self.reserve {
            return Err(wasmtime::format_err!(
                "failed to grow memory to {new_size:#x} bytes (reserve {:#x})",
                self.reserve
            ));
        }
        if new_size <= self.len {
            return Ok(());
        }
        if new_size > self.capacity {
            // At least double, so a memory that grows page by page moves O(log n) times: each
            // move copies the memory and the host drops the old block, whose pages the heap then
            // hands out cold.
            let target = new_size
                .max(self.capacity.saturating_mul(2))
                .min(self.reserve);
            let target = if allocate_fits(target) {
                target
            } else {
                new_size
            };
            self.relocate(target)
                .map_err(|e| wasmtime::format_err!("{e}"))?;
        }
        self.map(new_size).map_err(|e| wasmtime::format_err!("{e}"))
    }

    fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }
}

// SAFETY: every memory it returns is zero-filled for its minimum and owns its allocation. With
// guard pages (this guest's engine config: `reserved_size_in_bytes` 4 GiB, a 32 MiB guard) the
// memory is a `Guarded` one at the host's reservation, which leaves everything past the mapped
// size not present up to 4 GiB plus the guard (WASM_RESERVATION_SPAN on the host); without, a
// `Reserved` heap block, no reservation or guard promised.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        let guarded = guard_size_in_bytes != 0 || reserved_size_in_bytes.is_some_and(|r| r != 0);
        if guarded
            && (guard_size_in_bytes > crate::engine_config::MEMORY_GUARD_SIZE
                || reserved_size_in_bytes
                    .is_some_and(|r| r > crate::engine_config::MEMORY_RESERVATION))
        {
            return Err(String::from(
                "a reservation or guard larger than the host's",
            ));
        }
        let limit = match LIMIT.load(Ordering::Relaxed) {
            0 => usize::MAX,
            l => l,
        };
        // A 32-bit memory never exceeds 4 GiB; the limit keeps the reserve within what the host
        // allows the module to use.
        let reserve = maximum
            .unwrap_or(usize::MAX)
            .min(limit)
            .min(1 << 32)
            .max(minimum);
        if guarded {
            return Guarded::new(minimum, reserve).map(|m| Box::new(m) as Box<dyn LinearMemory>);
        }
        Reserved::new(minimum, reserve)
            .map(|m| Box::new(m) as Box<dyn LinearMemory>)
            .ok_or_else(|| String::from("out of guest heap for the memory's minimum"))
    }
}
