//! The parameter block (PEB) and the input/output buffers it describes.
//!
//! PEB fields are read and written with volatile accesses. The buffers are handed out as
//! slices only inside `with_input` / `with_output`, whose closures never signal the host: the
//! host touches guest memory only while the vCPU is stopped in an `out`, and the `out` asm
//! block is a compiler barrier (see `arch::outl`), so no access is cached or moved across an
//! exchange.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use hl_wire::{ABI_VERSION, PEB_MAGIC};

use hl_wire::peb_offset::{
    ABI_VERSION as OFF_ABI_VERSION, GUEST_ABI_VERSION as OFF_GUEST_ABI_VERSION,
    HEAP_ADDR as OFF_HEAP_ADDR, HEAP_SIZE as OFF_HEAP_SIZE, IMAGE_BASE as OFF_IMAGE_BASE,
    IMAGE_SIZE as OFF_IMAGE_SIZE, INPUT_ADDR as OFF_INPUT_ADDR, INPUT_SIZE as OFF_INPUT_SIZE,
    MAGIC as OFF_MAGIC, MEMORY_SIZE as OFF_MEMORY_SIZE, OUTPUT_ADDR as OFF_OUTPUT_ADDR,
    OUTPUT_SIZE as OFF_OUTPUT_SIZE, STACK_SIZE as OFF_STACK_SIZE, STACK_TOP as OFF_STACK_TOP,
    WASM_RESERVATION_ADDR as OFF_WASM_RESERVATION_ADDR,
    WASM_RESERVATION_SIZE as OFF_WASM_RESERVATION_SIZE, WASM_TRAP_ENTRY as OFF_WASM_TRAP_ENTRY,
};
const PEB_SIZE: u64 = 0x1000;

/// The smallest output buffer the runtime accepts (room for a useful PANIC/FAULT frame).
const MIN_OUTPUT_SIZE: u64 = 64;
/// The smallest input buffer (one frame header).
const MIN_INPUT_SIZE: u64 = 8;

static PEB_ADDR: AtomicUsize = AtomicUsize::new(0);
static INPUT_ADDR: AtomicUsize = AtomicUsize::new(0);
static INPUT_SIZE: AtomicUsize = AtomicUsize::new(0);
static OUTPUT_ADDR: AtomicUsize = AtomicUsize::new(0);
static OUTPUT_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Sizes in bytes of the input (host → guest) and output (guest → host) buffers; both 0 before
/// the PEB has been checked. A host call's arguments must fit the output buffer and its answer
/// the input buffer, so a guest that moves bulk data sizes its requests by them.
pub fn buffer_sizes() -> (usize, usize) {
    (
        INPUT_SIZE.load(Ordering::Relaxed),
        OUTPUT_SIZE.load(Ordering::Relaxed),
    )
}

fn read_u64(peb: usize, off: usize) -> u64 {
    // SAFETY: `peb` is the PEB address the host passed in RDI (a mapped, 8-aligned page of
    // guest memory per the ABI); every offset used is a u64 field inside its first 0x88 bytes.
    unsafe { ptr::with_exposed_provenance::<u64>(peb + off).read_volatile() }
}

fn read_u32(peb: usize, off: usize) -> u32 {
    // SAFETY: as in `read_u64`, for a u32 field.
    unsafe { ptr::with_exposed_provenance::<u32>(peb + off).read_volatile() }
}

/// A region of guest memory `[addr, addr + size)`.
#[derive(Clone, Copy)]
pub(crate) struct Region {
    pub(crate) addr: u64,
    pub(crate) size: u64,
}

impl Region {
    fn end(self) -> Option<u64> {
        self.addr.checked_add(self.size)
    }

    fn inside(self, memory_size: u64) -> bool {
        self.addr != 0 && self.end().is_some_and(|e| e <= memory_size)
    }

    fn overlaps(self, other: Region) -> bool {
        self.size != 0
            && other.size != 0
            && self.addr < other.addr + other.size
            && other.addr < self.addr + self.size
    }
}

/// What init needs from the PEB.
pub(crate) struct Layout {
    pub(crate) heap: Region,
}

/// Checks the PEB at `peb` and registers the buffers. Without a valid magic there is nowhere
/// trustworthy to report to, so the guest aborts without a frame; once the output buffer is
/// known to be sane every other problem is a panic (a PANIC frame).
pub(crate) fn init(peb: u64) -> Layout {
    let peb = match usize::try_from(peb) {
        Ok(p) if p != 0 && p % 8 == 0 => p,
        _ => crate::arch::abort(),
    };
    if read_u64(peb, OFF_MAGIC) != PEB_MAGIC {
        crate::arch::abort();
    }
    PEB_ADDR.store(peb, Ordering::Relaxed);
    let memory_size = read_u64(peb, OFF_MEMORY_SIZE);
    let region = |addr, size| Region {
        addr: read_u64(peb, addr),
        size: read_u64(peb, size),
    };
    let output = region(OFF_OUTPUT_ADDR, OFF_OUTPUT_SIZE);
    if !output.inside(memory_size) || output.size < MIN_OUTPUT_SIZE {
        crate::arch::abort();
    }
    OUTPUT_ADDR.store(output.addr as usize, Ordering::Relaxed);
    OUTPUT_SIZE.store(output.size as usize, Ordering::Relaxed);

    let host_abi = read_u32(peb, OFF_ABI_VERSION);
    if host_abi != ABI_VERSION {
        // Tell the host which version this guest speaks before giving up.
        write_guest_abi_version();
        panic!("host ABI version {host_abi}, this guest implements version {ABI_VERSION}");
    }

    let input = region(OFF_INPUT_ADDR, OFF_INPUT_SIZE);
    let heap = region(OFF_HEAP_ADDR, OFF_HEAP_SIZE);
    let image = region(OFF_IMAGE_BASE, OFF_IMAGE_SIZE);
    let stack_top = read_u64(peb, OFF_STACK_TOP);
    let stack_size = read_u64(peb, OFF_STACK_SIZE);
    let stack = Region {
        addr: stack_top.wrapping_sub(stack_size),
        size: stack_size,
    };
    let peb_region = Region {
        addr: peb as u64,
        size: PEB_SIZE,
    };
    let regions = [
        ("PEB", peb_region),
        ("input buffer", input),
        ("output buffer", output),
        ("heap", heap),
        ("image", image),
        ("stack", stack),
    ];
    if stack_size > stack_top {
        panic!("PEB: stack_size {stack_size:#x} is larger than stack_top {stack_top:#x}");
    }
    for (name, r) in regions {
        if !r.inside(memory_size) {
            panic!(
                "PEB: {name} [{:#x}, +{:#x}) is not inside guest memory ({memory_size:#x} bytes)",
                r.addr, r.size
            );
        }
    }
    for (i, (a_name, a)) in regions.iter().enumerate() {
        for (b_name, b) in &regions[i + 1..] {
            if a.overlaps(*b) {
                panic!("PEB: {a_name} and {b_name} overlap");
            }
        }
    }
    if input.size < MIN_INPUT_SIZE {
        panic!("PEB: input buffer of {} bytes is too small", input.size);
    }
    INPUT_ADDR.store(input.addr as usize, Ordering::Relaxed);
    INPUT_SIZE.store(input.size as usize, Ordering::Relaxed);
    Layout { heap }
}

/// Writes `guest_abi_version` into the PEB.
pub(crate) fn write_guest_abi_version() {
    let peb = PEB_ADDR.load(Ordering::Relaxed);
    if peb != 0 {
        // SAFETY: `peb` passed the checks in `init`; offset 0x0C is the guest-written u32.
        unsafe {
            ptr::with_exposed_provenance_mut::<u32>(peb + OFF_GUEST_ABI_VERSION)
                .write_volatile(ABI_VERSION);
        }
    }
}

/// The Wasm guard-page reservation the host laid out (docs/abi.md, "Wasm guard pages"):
/// `(address, bytes the host may map there)`, or `None` (none, or before the PEB was checked).
/// Read each time: the PEB is the guest's own memory, and only the host's page tables decide
/// what is mapped.
pub fn wasm_reservation() -> Option<(u64, u64)> {
    let peb = PEB_ADDR.load(Ordering::Relaxed);
    if peb == 0 {
        return None;
    }
    let addr = read_u64(peb, OFF_WASM_RESERVATION_ADDR);
    let size = read_u64(peb, OFF_WASM_RESERVATION_SIZE);
    (addr != 0 && size != 0).then_some((addr, size))
}

/// Writes `wasm_trap_entry` into the PEB: where the host delivers a guard-page fault.
pub fn set_wasm_trap_entry(entry: u64) {
    let peb = PEB_ADDR.load(Ordering::Relaxed);
    if peb != 0 {
        // SAFETY: `peb` passed the checks in `init`; `wasm_trap_entry` is a guest-written u64
        // inside the PEB page.
        unsafe {
            ptr::with_exposed_provenance_mut::<u64>(peb + OFF_WASM_TRAP_ENTRY)
                .write_volatile(entry);
        }
    }
}

/// Runs `f` on the output buffer; `None` before the PEB has been checked.
///
/// `f` must not signal the host (no `out`) and must not keep the slice.
pub(crate) fn with_output<R>(f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    let addr = OUTPUT_ADDR.load(Ordering::Relaxed);
    let size = OUTPUT_SIZE.load(Ordering::Relaxed);
    if addr == 0 {
        return None;
    }
    // SAFETY: `[addr, addr + size)` was checked to lie inside guest memory, apart from the
    // image, heap, stack and PEB, so no Rust object lives there; the host only accesses it
    // while the vCPU is stopped, which cannot happen while `f` runs (it does not signal), and
    // the slice does not outlive `f`. The one way to re-enter is a CPU exception or a panic
    // raised inside `f`, whose handlers write here and never return.
    let buf =
        unsafe { core::slice::from_raw_parts_mut(ptr::with_exposed_provenance_mut(addr), size) };
    Some(f(buf))
}

/// Runs `f` on the input buffer; `None` before the PEB has been checked.
///
/// `f` must not signal the host and must not keep the slice: copy what is needed (the next
/// exchange overwrites the buffer).
pub(crate) fn with_input<R>(f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    let addr = INPUT_ADDR.load(Ordering::Relaxed);
    let size = INPUT_SIZE.load(Ordering::Relaxed);
    if addr == 0 {
        return None;
    }
    // SAFETY: as for `with_output`: a checked region that no Rust object occupies and that the
    // host does not write while the guest runs; the slice does not outlive `f`.
    let buf = unsafe { core::slice::from_raw_parts(ptr::with_exposed_provenance(addr), size) };
    Some(f(buf))
}

/// The output buffer's size (0 before init).
pub(crate) fn output_size() -> usize {
    OUTPUT_SIZE.load(Ordering::Relaxed)
}
