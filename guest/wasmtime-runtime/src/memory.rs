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
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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

// SAFETY: every memory it returns is zero-filled for its minimum and owns its allocation;
// `reserved_size_in_bytes` is 0 and the guard size 0 with this guest's engine config (bounds are
// checked in code), so no reservation or guard is promised.
unsafe impl MemoryCreator for Creator {
    fn new_memory(
        &self,
        _ty: MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        _reserved_size_in_bytes: Option<usize>,
        guard_size_in_bytes: usize,
    ) -> Result<Box<dyn LinearMemory>, String> {
        if guard_size_in_bytes != 0 {
            return Err(String::from("guard pages are not offered by this guest"));
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
        Reserved::new(minimum, reserve)
            .map(|m| Box::new(m) as Box<dyn LinearMemory>)
            .ok_or_else(|| String::from("out of guest heap for the memory's minimum"))
    }
}
