//! VM primitives over a C ABI, for `@hl/sandbox`'s Deno FFI layer (`ffi/lib.ts`).
//!
//! Every function returns a status (`>= 0` success, negative = `error::Code`), never panics
//! across the boundary, and keeps the message of its last failure for `hl_last_error`. The ABI is
//! written down in `docs/cdylib-abi.md`. Hypervisor specifics live behind `backend::Hypervisor`
//! (`kvm/` is the one implementation).

pub mod backend;
mod error;
mod kvm;
mod memory;
mod park;
mod probe;
mod reaper;
mod stats;
mod trace;
mod vcpu_thread;
mod vm;
mod workers;
mod write_track;

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use backend::{ExitInfo, Regs, VcpuConfig, VCPU_CONFIG_WORDS};
use error::{Code, Error, Result};

/// Version of this C ABI; `ffi/lib.ts` refuses a library with another.
pub const CDYLIB_ABI_VERSION: u32 = 13;

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records an error for `hl_last_error`: per thread, and per VM when it concerns one (a run's
/// result taken by `hl_vcpu_wait` on a pool thread, and the caller reads the message from another).
fn record(vm: u32, e: &Error) {
    LAST_ERROR.with(|l| *l.borrow_mut() = e.message.clone());
    if vm != 0 {
        if let Ok(v) = vm::lookup(vm) {
            *v.last_error.lock().unwrap_or_else(|p| p.into_inner()) = e.message.clone();
        }
    }
}

/// Runs `f`, turning errors and panics into status codes.
fn guard(vm: u32, f: impl FnOnce() -> Result<i32>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            record(vm, &e);
            e.code as i32
        }
        Err(_) => {
            record(
                vm,
                &Error::new(Code::Panic, "internal panic in hl_rust_vmm (a bug)"),
            );
            Code::Panic as i32
        }
    }
}

fn non_null<T>(p: *const T, what: &str) -> Result<()> {
    if p.is_null() {
        Err(Error::invalid_argument(format!("{what} pointer is null")))
    } else {
        Ok(())
    }
}

/// Runs a tiny SSE guest to check that this host's KVM can run our guests (see `probe.rs`).
pub fn probe() -> std::result::Result<(), String> {
    catch_unwind(probe::run).unwrap_or_else(|_| Err("panic in the probe".into()))
}

/// `uint32_t hl_abi_version(void)`
#[no_mangle]
pub extern "C" fn hl_abi_version() -> u32 {
    CDYLIB_ABI_VERSION
}

/// `int32_t hl_last_error(uint32_t vm, uint8_t *buf, uint32_t cap)`: copies the last error
/// message (of `vm`, or of this thread when `vm` is 0 or unknown) as UTF-8, truncated to `cap`;
/// returns its full length.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_last_error(vm: u32, buf: *mut u8, cap: u32) -> i32 {
    guard(0, || {
        let from_vm = if vm != 0 {
            vm::lookup(vm)
                .ok()
                .map(|v| {
                    v.last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                })
                .filter(|m| !m.is_empty())
        } else {
            None
        };
        let message = from_vm.unwrap_or_else(|| LAST_ERROR.with(|l| l.borrow().clone()));
        let bytes = message.as_bytes();
        if !buf.is_null() {
            let n = bytes.len().min(cap as usize);
            // SAFETY: the caller gives `cap` writable bytes at `buf`; we write at most that many.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, n) };
        }
        Ok(bytes.len().min(i32::MAX as usize) as i32)
    })
}

/// `int32_t hl_hypervisor_info(uint64_t out[8])`: api version, immediate exit, read-only memory,
/// dirty logging, memory slots, max vCPUs, the CPU features fingerprint (version 9; was 0), what
/// the VM grants beyond SSE (version 13; was 0): bit 0 the AVX state (CR4.OSXSAVE, XCR0 =
/// x87|SSE|AVX), bits 1-6 AVX, AVX2, FMA, BMI1, BMI2, LZCNT (docs/cdylib-abi.md).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_hypervisor_info(out: *mut u64) -> i32 {
    guard(0, || {
        non_null(out, "out")?;
        let c = vm::capabilities()?;
        let values = [
            c.api_version,
            c.immediate_exit.into(),
            c.readonly_memory.into(),
            c.dirty_log.into(),
            c.max_memory_slots,
            c.max_vcpus,
            c.cpu_features,
            c.granted_features,
        ];
        // SAFETY: the caller gives 8 writable u64 at `out`.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, values.len()) };
        Ok(0)
    })
}

/// `int32_t hl_vm_create(uint32_t *out_vm)`
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_create(out_vm: *mut u32) -> i32 {
    guard(0, || {
        non_null(out_vm, "out_vm")?;
        let handle = vm::create()?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_vm = handle };
        Ok(0)
    })
}

/// `int32_t hl_vm_destroy(uint32_t vm)`: stops the vCPU (interrupting a run in progress; the
/// guest is never entered again once this returns) and invalidates the handle. Since version 5 the
/// rest (joining the vCPU thread, closing the VM, unmapping its memory) is done by a background
/// thread: `hl_teardown_wait` waits for it. A second call returns `INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn hl_vm_destroy(vm: u32) -> i32 {
    guard(0, || vm::destroy(vm).map(|_| 0))
}

/// `int32_t hl_teardown_wait(void)`: blocks until every VM destroyed so far is freed (its vCPU
/// thread joined, fds closed, memory unmapped), unless a call still in flight holds it; returns
/// how many were pending when it was called (version 5).
#[no_mangle]
pub extern "C" fn hl_teardown_wait() -> i32 {
    guard(0, || {
        let pending = reaper::pending();
        reaper::wait_idle();
        Ok(pending.min(i32::MAX as usize) as i32)
    })
}

/// `int32_t hl_vm_map_memory(uint32_t vm, uint64_t gpa, uint64_t size, uint32_t flags,
/// uint32_t *out_slot)`: allocates `size` bytes of library-owned memory (memfd, MAP_PRIVATE) and
/// maps it at guest-physical `gpa`. flags bit 0 = read-only for the guest.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_map_memory(
    vm: u32,
    gpa: u64,
    size: u64,
    flags: u32,
    out_slot: *mut u32,
) -> i32 {
    guard(vm, || {
        non_null(out_slot, "out_slot")?;
        if flags & !1 != 0 {
            return Err(Error::invalid_argument(format!(
                "unknown memory flags {flags:#x}"
            )));
        }
        let slot = vm::lookup(vm)?.map_memory(gpa, size, flags & 1 != 0)?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_slot = slot };
        Ok(0)
    })
}

/// `void *hl_vm_memory_ptr(uint32_t vm, uint32_t slot)`: host address of a memory slot (NULL on
/// error). Valid until `hl_vm_destroy`.
#[no_mangle]
pub extern "C" fn hl_vm_memory_ptr(vm: u32, slot: u32) -> *mut u8 {
    let mut ptr = std::ptr::null_mut();
    guard(vm, || {
        ptr = vm::lookup(vm)?.memory(slot)?.host_ptr();
        Ok(0)
    });
    ptr
}

/// `int32_t hl_vm_memory_reset(uint32_t vm, uint32_t slot)`: drops every page the guest or host
/// wrote, so the slot reads as zeros again.
#[no_mangle]
pub extern "C" fn hl_vm_memory_reset(vm: u32, slot: u32) -> i32 {
    guard(vm, || vm::lookup(vm)?.memory(slot)?.reset().map(|_| 0))
}

/// `int32_t hl_vm_memory_drop(uint32_t vm, uint32_t slot, uint64_t offset, uint64_t len)` (since
/// version 11; op 27): drops the pages of `[offset, offset + len)` of a slot (page-aligned), which then
/// read as the slot's base content (its snapshot, or zeros), and makes KVM forget every
/// translation of them. For page-table entries the host cleared (docs/wasm.md, "Guard pages").
#[no_mangle]
pub extern "C" fn hl_vm_memory_drop(vm: u32, slot: u32, offset: u64, len: u64) -> i32 {
    guard(vm, || {
        vm::lookup(vm)?
            .memory(slot)?
            .drop_range(offset, len)
            .map(|_| 0)
    })
}

/// `int32_t hl_vcpu_create(uint32_t vm, const uint64_t config[10])`: starts the VM's vCPU
/// thread and creates the vCPU in 64-bit long mode with SSE enabled. `config`: cr3, GDT base and
/// limit, IDT base and limit, TSS base and limit, then the code, data and TSS selectors; the code
/// selector's RPL is the privilege level the vCPU starts at (0 or 3).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_create(vm: u32, config: *const u64) -> i32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { create_vcpu(vm, config, true) }
}

/// `int32_t hl_vcpu_create_start(uint32_t vm, const uint64_t config[10])` (since version 7): as
/// `hl_vcpu_create`, but returns once the vCPU thread has the job, so the caller can fill guest
/// memory while KVM creates the vCPU. The first vCPU call after it waits for the creation and
/// returns its error if it failed (every vCPU call does, from then on).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_create_start(vm: u32, config: *const u64) -> i32 {
    // SAFETY: forwarded from this function's contract.
    unsafe { create_vcpu(vm, config, false) }
}

/// `hl_vcpu_create` (`wait`) and `hl_vcpu_create_start`.
///
/// # Safety
/// `config` must be null or valid for reading `VCPU_CONFIG_WORDS` u64.
unsafe fn create_vcpu(vm: u32, config: *const u64, wait: bool) -> i32 {
    guard(vm, || {
        non_null(config, "config")?;
        let mut words = [0u64; VCPU_CONFIG_WORDS];
        // SAFETY: the caller gives VCPU_CONFIG_WORDS readable u64 at `config`.
        unsafe { std::ptr::copy_nonoverlapping(config, words.as_mut_ptr(), VCPU_CONFIG_WORDS) };
        let config = VcpuConfig::from_words(&words)?;
        vm::lookup(vm)?.create_vcpu(config, wait).map(|_| 0)
    })
}

/// `int32_t hl_vcpu_get_special_regs(uint32_t vm, uint64_t out[8])`: cr0 cr2 cr3 cr4 efer,
/// the CS and SS selectors, and a reserved 0 — what a fault report needs (CR2, the CPL).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_get_special_regs(vm: u32, out: *mut u64) -> i32 {
    guard(vm, || {
        non_null(out, "out")?;
        let r = vm::lookup(vm)?.vcpu()?.get_special_regs()?;
        // SAFETY: the caller gives 8 writable u64 at `out`.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), out, r.len()) };
        Ok(0)
    })
}

/// `int32_t hl_vcpu_set_regs(uint32_t vm, const uint64_t regs[18])` (rax rbx rcx rdx rsi rdi
/// rsp rbp r8-r15 rip rflags). Like the other register calls, `STATE` while a run is outstanding.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_set_regs(vm: u32, regs: *const u64) -> i32 {
    guard(vm, || {
        non_null(regs, "regs")?;
        let mut r: Regs = [0; 18];
        // SAFETY: the caller gives 18 readable u64 at `regs`.
        unsafe { std::ptr::copy_nonoverlapping(regs, r.as_mut_ptr(), 18) };
        vm::lookup(vm)?.vcpu()?.set_regs(r).map(|_| 0)
    })
}

/// `int32_t hl_vcpu_get_regs(uint32_t vm, uint64_t regs[18])`
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_get_regs(vm: u32, regs: *mut u64) -> i32 {
    guard(vm, || {
        non_null(regs, "regs")?;
        let r = vm::lookup(vm)?.vcpu()?.get_regs()?;
        // SAFETY: the caller gives 18 writable u64 at `regs`.
        unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), regs, 18) };
        Ok(0)
    })
}

/// `const struct hl_exit *hl_vcpu_exit_ptr(uint32_t vm)`: where the last exit's details are
/// written (layout in docs/cdylib-abi.md). NULL on error. Valid until `hl_vm_destroy`.
#[no_mangle]
pub extern "C" fn hl_vcpu_exit_ptr(vm: u32) -> *const ExitInfo {
    let mut ptr = std::ptr::null();
    guard(vm, || {
        // The record exists from the start of the creation: no need to wait for it.
        ptr = vm::lookup(vm)?.vcpu_thread()?.exit_ptr();
        Ok(0)
    });
    ptr
}

/// `int32_t hl_vcpu_begin_call(uint32_t vm)`: clears the sticky stop (the host calls it when a
/// guest call starts). `STATE` while the VM is being destroyed.
#[no_mangle]
pub extern "C" fn hl_vcpu_begin_call(vm: u32) -> i32 {
    guard(vm, || vm::lookup(vm)?.vcpu()?.begin_call().map(|_| 0))
}

/// `int32_t hl_vcpu_interrupt(uint32_t vm)`: sets the sticky stop and kicks the vCPU out of
/// `KVM_RUN`; returns once it is out. Until `hl_vcpu_begin_call`, every run returns
/// `INTERRUPTED` without entering the guest.
#[no_mangle]
pub extern "C" fn hl_vcpu_interrupt(vm: u32) -> i32 {
    guard(vm, || vm::lookup(vm)?.vcpu()?.interrupt().map(|_| 0))
}

/// `int32_t hl_vcpu_run(uint32_t vm, uint64_t timeout_ns)`: runs the vCPU (on its own thread)
/// until an exit and returns the exit kind (> 0) or an error; blocks the calling thread
/// (spinning briefly, then on a futex). `timeout_ns` 0 = none; when it elapses the stop is set
/// (as by `hl_vcpu_interrupt`) and the result is `TIMED_OUT` (10). `STATE` while another run is
/// outstanding.
#[no_mangle]
pub extern "C" fn hl_vcpu_run(vm: u32, timeout_ns: u64) -> i32 {
    guard(vm, || {
        let timeout = (timeout_ns != 0).then(|| std::time::Duration::from_nanos(timeout_ns));
        Ok(vm::lookup(vm)?.vcpu()?.run(timeout)? as i32)
    })
}

/// `int32_t hl_vcpu_start(uint32_t vm)`: posts a run and returns at once (0); take its result
/// with `hl_vcpu_poll` or `hl_vcpu_wait`. `STATE` if a run is already outstanding.
#[no_mangle]
pub extern "C" fn hl_vcpu_start(vm: u32) -> i32 {
    guard(vm, || vm::lookup(vm)?.vcpu()?.start().map(|_| 0))
}

/// `int32_t hl_vcpu_poll(uint32_t vm, uint32_t spin_ns)`: if the outstanding run has finished
/// (spinning up to `spin_ns` for it), takes its result: the exit kind (> 0) or the error the run
/// produced; 0 = still running. `STATE` if no run is outstanding.
#[no_mangle]
pub extern "C" fn hl_vcpu_poll(vm: u32, spin_ns: u32) -> i32 {
    guard(vm, || {
        let spin = std::time::Duration::from_nanos(spin_ns.into());
        vm::lookup(vm)?.vcpu()?.poll(spin)
    })
}

/// `int32_t hl_vcpu_wait(uint32_t vm)`: blocks until the outstanding run finishes and takes its
/// result (Deno calls it `nonblocking`, on a pool thread). `STATE` if no run is outstanding. If the
/// VM is destroyed meanwhile: `INTERRUPTED` (or `STATE`), promptly.
#[no_mangle]
pub extern "C" fn hl_vcpu_wait(vm: u32) -> i32 {
    guard(vm, || vm::lookup(vm)?.vcpu()?.wait())
}

/// `int32_t hl_snapshot_memory(uint32_t vm, uint32_t slot, uint32_t *out_snap)`: copies the
/// slot's memory (its non-zero pages) into a new sealed snapshot and re-bases the slot on it, so
/// `hl_vm_rebase_memory` with it is then one `MADV_DONTNEED`. `STATE` while a run is outstanding.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_memory(vm: u32, slot: u32, out_snap: *mut u32) -> i32 {
    guard(vm, || {
        non_null(out_snap, "out_snap")?;
        let handle = vm::lookup(vm)?.snapshot_memory(slot)?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_snap = handle };
        Ok(0)
    })
}

/// `int32_t hl_snapshot_release(uint32_t snap)`: drops the handle; the memory lives on while a
/// VM's memory is based on it. A second call returns `INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn hl_snapshot_release(snap: u32) -> i32 {
    guard(0, || vm::release_snapshot(snap).map(|_| 0))
}

/// `int64_t hl_snapshot_info(uint32_t snap, uint64_t out[2])`: size in bytes, pages holding data.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_info(snap: u32, out: *mut u64) -> i32 {
    guard(0, || {
        non_null(out, "out")?;
        let s = vm::lookup_snapshot(snap)?;
        let values = [s.size(), s.data_pages];
        // SAFETY: the caller gives 2 writable u64 at `out`.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, 2) };
        Ok(0)
    })
}

/// `int32_t hl_vm_rebase_memory(uint32_t vm, uint32_t slot, uint32_t snap)`: brings the slot's
/// memory back to the snapshot's content (same size): `MADV_DONTNEED` when the slot is already
/// based on it, else a re-map at the same host address. `STATE` while a run is outstanding.
/// Version 8: returns the number of pages put back (was 0).
#[no_mangle]
pub extern "C" fn hl_vm_rebase_memory(vm: u32, slot: u32, snap: u32) -> i32 {
    guard(vm, || {
        let s = vm::lookup_snapshot(snap)?;
        vm::lookup(vm)?.rebase_memory(slot, &s).map(pages_status)
    })
}

/// A page count as a non-negative status (saturating: a region is far below 2^31 pages).
fn pages_status(pages: u64) -> i32 {
    i32::try_from(pages).unwrap_or(i32::MAX)
}

/// `int32_t hl_vm_map_snapshot(uint32_t vm, uint64_t gpa, uint32_t snap, uint32_t *out_slot)`:
/// maps the snapshot copy-on-write at guest-physical `gpa` (no copy).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_map_snapshot(
    vm: u32,
    gpa: u64,
    snap: u32,
    out_slot: *mut u32,
) -> i32 {
    guard(vm, || {
        non_null(out_slot, "out_slot")?;
        let s = vm::lookup_snapshot(snap)?;
        let slot = vm::lookup(vm)?.map_snapshot(gpa, s)?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_slot = slot };
        Ok(0)
    })
}

/// `int32_t hl_snapshot_from_bytes(const uint8_t *data, uint64_t len, uint32_t *out_snap)`: a new
/// sealed snapshot holding a copy of `data`, zero-padded to whole pages (for code the host maps
/// into VMs with `hl_vm_map_code`).
///
/// # Safety
/// `data` must be valid for `len` bytes; `out_snap` null or valid for one u32 write.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_from_bytes(
    data: *const u8,
    len: u64,
    out_snap: *mut u32,
) -> i32 {
    guard(0, || {
        non_null(out_snap, "out_snap")?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&n| n <= isize::MAX as usize)
            .ok_or_else(|| Error::invalid_argument("length does not fit in memory"))?;
        let bytes: &[u8] = if len == 0 {
            &[]
        } else {
            non_null(data, "data")?;
            // SAFETY: non-null, valid for `len` bytes by the caller's contract, and `len` is at
            // most isize::MAX.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        // SAFETY: `out_snap` checked non-null above; the caller gives one writable u32.
        unsafe { put_snapshot(memory::MemorySnapshot::from_bytes(bytes)?, out_snap) }
    })
}

/// The snapshot file whose path is given as `len` bytes at `ptr` (no NUL), checked, opened for
/// writing (an existing file) or else for reading.
///
/// # Safety
/// `ptr` must be null or valid for `len` bytes.
unsafe fn open_path_arg(ptr: *const u8, len: u32, write: bool) -> Result<std::fs::File> {
    use std::os::unix::ffi::OsStrExt;
    non_null(ptr, "path")?;
    if len == 0 || len > 4096 {
        return Err(Error::invalid_argument("the path must be 1 to 4096 bytes"));
    }
    // SAFETY: non-null and valid for `len` bytes by the caller's contract.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len as usize) };
    if bytes.contains(&0) {
        return Err(Error::invalid_argument("the path contains a NUL byte"));
    }
    std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(std::ffi::OsStr::from_bytes(bytes))
        .map_err(|e| Error::os("opening the snapshot file", e))
}

/// Registers a new snapshot and stores its handle at `out_snap`; the result of the `hl_snapshot_*`
/// functions that make one from bytes or a file.
///
/// # Safety
/// `out_snap` must be non-null and valid for one u32 write.
unsafe fn put_snapshot(snap: memory::MemorySnapshot, out_snap: *mut u32) -> Result<i32> {
    let handle = vm::insert_snapshot(snap)?;
    // SAFETY: non-null and writable by this function's contract.
    unsafe { *out_snap = handle };
    Ok(0)
}

/// `int32_t hl_snapshot_bitmap(uint32_t snap, uint64_t *out, uint64_t words)` (version 9): the
/// snapshot's page bitmap (bit `p % 64` of word `p / 64`: page `p` holds data). Returns the
/// number of words it has; writes them only when `words` is at least that (else writes nothing).
///
/// # Safety
/// `out` must be null or valid for `words` u64 writes.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_bitmap(snap: u32, out: *mut u64, words: u64) -> i32 {
    guard(0, || {
        let s = vm::lookup_snapshot(snap)?;
        let bitmap = s.bitmap();
        if words >= bitmap.len() as u64 && !bitmap.is_empty() {
            non_null(out, "out")?;
            // SAFETY: the caller gives `words` >= bitmap.len() writable u64 at `out`.
            unsafe { std::ptr::copy_nonoverlapping(bitmap.as_ptr(), out, bitmap.len()) };
        }
        i32::try_from(bitmap.len()).map_err(|_| Error::invalid_argument("bitmap too large"))
    })
}

/// `int32_t hl_snapshot_save_pages(uint32_t snap, const uint8_t *path, uint32_t path_len,
/// uint64_t offset, uint32_t *out_crc)` (version 9): writes the snapshot's data pages back to
/// back (holes left out) into the existing file `path` at `offset` and stores their CRC-32.
///
/// # Safety
/// `path` must be null or valid for `path_len` bytes; `out_crc` null or valid for one u32 write.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_save_pages(
    snap: u32,
    path: *const u8,
    path_len: u32,
    offset: u64,
    out_crc: *mut u32,
) -> i32 {
    guard(0, || {
        non_null(out_crc, "out_crc")?;
        // SAFETY: forwarded caller contract.
        let file = unsafe { open_path_arg(path, path_len, true)? };
        let s = vm::lookup_snapshot(snap)?;
        let crc = s.write_pages(&file, offset)?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_crc = crc };
        Ok(0)
    })
}

/// `int32_t hl_snapshot_load_pages(const uint8_t *path, uint32_t path_len, uint64_t offset,
/// uint64_t size, const uint64_t *bitmap, uint64_t words, uint32_t crc, uint32_t *out_snap)`
/// (version 9): a new sealed snapshot of `size` bytes whose data pages (`bitmap`) are read back
/// to back from `path` at `offset`. A bitmap of the wrong length or with bits past the end, a
/// file too short, or pages whose CRC-32 is not `crc` are `INVALID_ARGUMENT`; nothing is mapped
/// from the file, so a file changed meanwhile cannot fault the process.
///
/// # Safety
/// `path` null or valid for `path_len` bytes; `bitmap` null or valid for `words` u64;
/// `out_snap` null or valid for one u32 write.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hl_snapshot_load_pages(
    path: *const u8,
    path_len: u32,
    offset: u64,
    size: u64,
    bitmap: *const u64,
    words: u64,
    crc: u32,
    out_snap: *mut u32,
) -> i32 {
    guard(0, || {
        non_null(out_snap, "out_snap")?;
        if words > memory::MAX_REGION_SIZE / memory::PAGE_SIZE / 64 {
            return Err(Error::invalid_argument("the page bitmap is too long"));
        }
        let bitmap: &[u64] = if words == 0 {
            &[]
        } else {
            non_null(bitmap, "bitmap")?;
            if !bitmap.is_aligned() {
                return Err(Error::invalid_argument(
                    "the page bitmap is not 8-byte aligned",
                ));
            }
            // SAFETY: non-null, aligned (checked above) and valid for `words` u64 by the caller's
            // contract (bounded above).
            unsafe { std::slice::from_raw_parts(bitmap, words as usize) }
        };
        // SAFETY: forwarded caller contract.
        let file = unsafe { open_path_arg(path, path_len, false)? };
        // SAFETY: `out_snap` checked non-null above; the caller gives one writable u32.
        unsafe {
            put_snapshot(
                memory::MemorySnapshot::read_pages(&file, offset, size, bitmap, crc)?,
                out_snap,
            )
        }
    })
}

/// `int32_t hl_snapshot_map_file(const uint8_t *path, uint32_t path_len, uint64_t offset,
/// uint64_t size, uint32_t crc, uint32_t *out_snap)` (version 9): a snapshot of `size` bytes whose
/// every page holds data, backed by the file `path` itself from the page-aligned `offset`: VMs map
/// the file's pages `MAP_PRIVATE`, no copy (a snapshot file's code image, for `hl_vm_map_code`).
/// The pages are read once to check their CRC-32 against `crc` and the file's length against
/// `offset + size` (`INVALID_ARGUMENT` otherwise). The file must not be rewritten while the
/// snapshot lives (docs/cdylib-abi.md).
///
/// # Safety
/// `path` null or valid for `path_len` bytes; `out_snap` null or valid for one u32 write.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_map_file(
    path: *const u8,
    path_len: u32,
    offset: u64,
    size: u64,
    crc: u32,
    out_snap: *mut u32,
) -> i32 {
    guard(0, || {
        non_null(out_snap, "out_snap")?;
        // SAFETY: forwarded caller contract.
        let file = unsafe { open_path_arg(path, path_len, false)? };
        // SAFETY: `out_snap` checked non-null above; the caller gives one writable u32.
        unsafe {
            put_snapshot(
                memory::MemorySnapshot::from_file(file, offset, size, crc)?,
                out_snap,
            )
        }
    })
}

/// `int32_t hl_snapshot_map_file_known(const uint8_t *path, uint32_t path_len, uint64_t offset,
/// uint64_t size, uint32_t crc, uint64_t identity[6], uint32_t *out_snap)` (version 12, op 28):
/// `hl_snapshot_map_file`, but when `identity[0]` is 1 and `identity[1..6]` is the opened file's
/// identity (`st_dev`, `st_ino`, `st_size`, `st_ctime`, `st_ctime_nsec` of one `fstat` of the open
/// file), the pages are not read for their CRC-32: the caller remembers that an earlier load
/// checked this very file. Every other check stays. On success `identity[0]` is 1 and
/// `identity[1..6]` the identity to remember when the pages were checked unchanged, else
/// `identity[0]` is 0; returns 1 when the pages were read and checked, 0 when they were not.
///
/// # Safety
/// `path` null or valid for `path_len` bytes; `identity` null or valid for 6 u64 reads and writes
/// (8-byte aligned); `out_snap` null or valid for one u32 write.
#[no_mangle]
pub unsafe extern "C" fn hl_snapshot_map_file_known(
    path: *const u8,
    path_len: u32,
    offset: u64,
    size: u64,
    crc: u32,
    identity: *mut u64,
    out_snap: *mut u32,
) -> i32 {
    guard(0, || {
        non_null(out_snap, "out_snap")?;
        non_null(identity, "identity")?;
        if !identity.is_aligned() {
            return Err(Error::invalid_argument("identity is not 8-byte aligned"));
        }
        // SAFETY: non-null, 8-byte aligned and valid for 6 u64 by the caller's contract.
        let words = unsafe { std::slice::from_raw_parts_mut(identity, 6) };
        let known = (words[0] == 1).then(|| {
            memory::FileIdentity::from_words([words[1], words[2], words[3], words[4], words[5]])
        });
        // SAFETY: forwarded caller contract.
        let file = unsafe { open_path_arg(path, path_len, false)? };
        let (snap, remember, read) =
            memory::MemorySnapshot::from_file_known(file, offset, size, crc, known)?;
        // SAFETY: `out_snap` checked non-null above; the caller gives one writable u32.
        unsafe { put_snapshot(snap, out_snap)? };
        words[0] = u64::from(remember.is_some());
        if let Some(id) = remember {
            words[1..].copy_from_slice(&id.words());
        }
        Ok(i32::from(read))
    })
}

/// `int32_t hl_vm_map_code(uint32_t vm, uint64_t gpa, uint32_t snap, uint32_t *out_slot)`: maps
/// the snapshot at guest-physical `gpa` as a new slot that the guest cannot write: read-only at
/// the hypervisor where it supports that (returns 1), else 0 and only the page tables (which the
/// caller builds read-only) protect it. No copy; the snapshot's pages are shared by every VM.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_map_code(vm: u32, gpa: u64, snap: u32, out_slot: *mut u32) -> i32 {
    guard(vm, || {
        non_null(out_slot, "out_slot")?;
        let s = vm::lookup_snapshot(snap)?;
        let (slot, readonly) = vm::lookup(vm)?.map_code(gpa, s)?;
        // SAFETY: checked non-null; the caller gives one writable u32.
        unsafe { *out_slot = slot };
        Ok(i32::from(readonly))
    })
}

/// `int32_t hl_vcpu_get_state(uint32_t vm, uint8_t *buf, uint32_t cap)`: the vCPU's state
/// (registers, sregs, FPU/SSE/XSAVE, XCRs, per-vCPU MSRs, pending events) as an opaque blob;
/// returns its length, and copies it only when it fits in `cap` (else call again with more).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_get_state(vm: u32, buf: *mut u8, cap: u32) -> i32 {
    guard(vm, || {
        let blob = vm::lookup(vm)?.vcpu()?.get_state()?;
        if !buf.is_null() && blob.len() <= cap as usize {
            // SAFETY: the caller gives `cap` writable bytes at `buf`, and the blob fits.
            unsafe { std::ptr::copy_nonoverlapping(blob.as_ptr(), buf, blob.len()) };
        }
        Ok(blob.len().min(i32::MAX as usize) as i32)
    })
}

/// `int32_t hl_vcpu_set_state(uint32_t vm, const uint8_t *buf, uint32_t len)`: loads a blob
/// from `hl_vcpu_get_state`. `INVALID_ARGUMENT` for anything else (checked on the calling thread,
/// before any ioctl); then the vCPU thread loads it. `STATE` while a run is outstanding.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vcpu_set_state(vm: u32, buf: *const u8, len: u32) -> i32 {
    guard(vm, || {
        non_null(buf, "buf")?;
        // SAFETY: the caller gives `len` readable bytes at `buf`.
        let blob = unsafe { std::slice::from_raw_parts(buf, len as usize) };
        let vm = vm::lookup(vm)?;
        vm::hypervisor()?.check_vcpu_state(blob)?;
        vm.vcpu()?.set_state(blob).map(|_| 0)
    })
}

/// `int32_t hl_vm_restore(uint32_t vm, uint32_t slot, uint32_t snap, const uint8_t *state,
/// uint32_t len)`: `hl_vm_rebase_memory` and `hl_vcpu_set_state` at once, overlapped (the vCPU
/// thread loads the state while the caller's thread puts the memory back). `STATE` while a run is
/// outstanding; the blob is checked first. Version 8: returns the number of pages put back.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_restore(
    vm: u32,
    slot: u32,
    snap: u32,
    state: *const u8,
    len: u32,
) -> i32 {
    guard(vm, || {
        non_null(state, "state")?;
        // SAFETY: the caller gives `len` readable bytes at `state`.
        let blob = unsafe { std::slice::from_raw_parts(state, len as usize) };
        vm::hypervisor()?.check_vcpu_state(blob)?;
        let s = vm::lookup_snapshot(snap)?;
        vm::lookup(vm)?.restore(slot, &s, blob).map(pages_status)
    })
}

/// `int32_t hl_vm_stats(uint32_t vm, uint64_t out[3])`: ioctls, exits, runs of this VM.
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_vm_stats(vm: u32, out: *mut u64) -> i32 {
    guard(vm, || {
        non_null(out, "out")?;
        let s = vm::lookup(vm)?.counters.snapshot();
        // SAFETY: the caller gives 3 writable u64 at `out`.
        unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), out, 3) };
        Ok(0)
    })
}

/// `int32_t hl_global_stats(uint64_t out[4])`: ioctls issued by this process (all VMs, opening
/// and creating included), the number of live VMs, of live snapshot handles, and of guest memory
/// regions that are anonymous memory (not yet based on a snapshot).
///
/// # Safety
/// Pointer arguments must be null or valid for the sizes stated above.
#[no_mangle]
pub unsafe extern "C" fn hl_global_stats(out: *mut u64) -> i32 {
    guard(0, || {
        non_null(out, "out")?;
        let values = [
            stats::GLOBAL_IOCTLS.load(std::sync::atomic::Ordering::Relaxed),
            vm::live_count() as u64,
            vm::live_snapshots() as u64,
            memory::ANONYMOUS_REGIONS.load(std::sync::atomic::Ordering::Relaxed),
        ];
        // SAFETY: the caller gives 4 writable u64 at `out`.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), out, 4) };
        Ok(0)
    })
}

/// Words in `hl_op`'s argument block.
pub const OP_WORDS: usize = 8;

/// The entry points `hl_op` reaches, by op code (version 10). A code's meaning never changes;
/// a new entry point gets the next code. `docs/cdylib-abi.md` lists them.
pub mod op {
    pub const LAST_ERROR: u32 = 1;
    pub const HYPERVISOR_INFO: u32 = 2;
    pub const VM_CREATE: u32 = 3;
    pub const VM_DESTROY: u32 = 4;
    pub const TEARDOWN_WAIT: u32 = 5;
    pub const VM_MAP_MEMORY: u32 = 6;
    pub const VM_MEMORY_PTR: u32 = 7;
    pub const VCPU_CREATE: u32 = 8;
    pub const VCPU_CREATE_START: u32 = 9;
    pub const VCPU_GET_SPECIAL_REGS: u32 = 10;
    pub const VCPU_EXIT_PTR: u32 = 11;
    pub const VCPU_BEGIN_CALL: u32 = 12;
    pub const VM_STATS: u32 = 13;
    pub const SNAPSHOT_MEMORY: u32 = 14;
    pub const SNAPSHOT_RELEASE: u32 = 15;
    pub const SNAPSHOT_INFO: u32 = 16;
    pub const VM_MAP_SNAPSHOT: u32 = 17;
    pub const SNAPSHOT_FROM_BYTES: u32 = 18;
    pub const VM_MAP_CODE: u32 = 19;
    pub const VCPU_GET_STATE: u32 = 20;
    pub const VCPU_SET_STATE: u32 = 21;
    pub const SNAPSHOT_BITMAP: u32 = 22;
    pub const SNAPSHOT_SAVE_PAGES: u32 = 23;
    pub const SNAPSHOT_LOAD_PAGES: u32 = 24;
    pub const SNAPSHOT_MAP_FILE: u32 = 25;
    pub const GLOBAL_STATS: u32 = 26;
    pub const VM_MEMORY_DROP: u32 = 27;
    pub const SNAPSHOT_MAP_FILE_KNOWN: u32 = 28;
}

/// `int32_t hl_op(uint32_t op, uint64_t args[8])` (version 10): calls the entry point numbered
/// `op` (`op::*`) with its arguments taken in order from `args`, one word each (a 32-bit argument
/// must fit in 32 bits, a pointer is its address), and returns its status. An entry point that
/// returns a pointer writes it to `args[7]` (0 for NULL) and `hl_op` returns 0. An unknown `op`,
/// a null or misaligned `args` or a 32-bit argument out of range is `INVALID_ARGUMENT`.
///
/// One symbol for the calls a process makes a few times (creating and destroying VMs, snapshots,
/// files): a Deno FFI binding costs ~0.2-0.5 ms per symbol on first use (docs/js.md "Cold start"),
/// and a fresh process's first sandbox used 15 of them. The calls made per guest call or per exit
/// keep their own symbols.
///
/// # Safety
/// `args` null or valid for reading and writing `OP_WORDS` u64; every word that the named entry
/// point takes as a pointer must be valid as that entry point's contract requires.
#[no_mangle]
pub unsafe extern "C" fn hl_op(op: u32, args: *mut u64) -> i32 {
    guard(0, || {
        non_null(args, "args")?;
        if !args.is_aligned() {
            return Err(Error::invalid_argument("args is not 8-byte aligned"));
        }
        // SAFETY: non-null and aligned (checked above); the caller gives OP_WORDS u64 there, and
        // nothing else refers to them during this call.
        let a = unsafe { &mut *args.cast::<[u64; OP_WORDS]>() };
        let w = |i: usize| -> Result<u32> {
            u32::try_from(a[i]).map_err(|_| {
                Error::invalid_argument(format!("hl_op {op}: argument {i} does not fit in 32 bits"))
            })
        };
        let p = |i: usize| a[i] as usize as *mut u8;
        // SAFETY: for every call below, the words are the named entry point's arguments in order
        // and its pointer words are valid as its contract requires (this function's contract).
        let status = unsafe {
            match op {
                op::LAST_ERROR => hl_last_error(w(0)?, p(1), w(2)?),
                op::HYPERVISOR_INFO => hl_hypervisor_info(p(0).cast()),
                op::VM_CREATE => hl_vm_create(p(0).cast()),
                op::VM_DESTROY => hl_vm_destroy(w(0)?),
                op::TEARDOWN_WAIT => hl_teardown_wait(),
                op::VM_MAP_MEMORY => hl_vm_map_memory(w(0)?, a[1], a[2], w(3)?, p(4).cast()),
                op::VM_MEMORY_PTR => {
                    a[7] = hl_vm_memory_ptr(w(0)?, w(1)?) as usize as u64;
                    0
                }
                op::VCPU_CREATE => hl_vcpu_create(w(0)?, p(1).cast()),
                op::VCPU_CREATE_START => hl_vcpu_create_start(w(0)?, p(1).cast()),
                op::VCPU_GET_SPECIAL_REGS => hl_vcpu_get_special_regs(w(0)?, p(1).cast()),
                op::VCPU_EXIT_PTR => {
                    a[7] = hl_vcpu_exit_ptr(w(0)?) as usize as u64;
                    0
                }
                op::VCPU_BEGIN_CALL => hl_vcpu_begin_call(w(0)?),
                op::VM_STATS => hl_vm_stats(w(0)?, p(1).cast()),
                op::SNAPSHOT_MEMORY => hl_snapshot_memory(w(0)?, w(1)?, p(2).cast()),
                op::SNAPSHOT_RELEASE => hl_snapshot_release(w(0)?),
                op::SNAPSHOT_INFO => hl_snapshot_info(w(0)?, p(1).cast()),
                op::VM_MAP_SNAPSHOT => hl_vm_map_snapshot(w(0)?, a[1], w(2)?, p(3).cast()),
                op::SNAPSHOT_FROM_BYTES => hl_snapshot_from_bytes(p(0), a[1], p(2).cast()),
                op::VM_MAP_CODE => hl_vm_map_code(w(0)?, a[1], w(2)?, p(3).cast()),
                op::VCPU_GET_STATE => hl_vcpu_get_state(w(0)?, p(1), w(2)?),
                op::VCPU_SET_STATE => hl_vcpu_set_state(w(0)?, p(1), w(2)?),
                op::SNAPSHOT_BITMAP => hl_snapshot_bitmap(w(0)?, p(1).cast(), a[2]),
                op::SNAPSHOT_SAVE_PAGES => {
                    hl_snapshot_save_pages(w(0)?, p(1), w(2)?, a[3], p(4).cast())
                }
                op::SNAPSHOT_LOAD_PAGES => hl_snapshot_load_pages(
                    p(0),
                    w(1)?,
                    a[2],
                    a[3],
                    p(4).cast(),
                    a[5],
                    w(6)?,
                    p(7).cast(),
                ),
                op::SNAPSHOT_MAP_FILE => {
                    hl_snapshot_map_file(p(0), w(1)?, a[2], a[3], w(4)?, p(5).cast())
                }
                op::GLOBAL_STATS => hl_global_stats(p(0).cast()),
                op::VM_MEMORY_DROP => hl_vm_memory_drop(w(0)?, w(1)?, a[2], a[3]),
                op::SNAPSHOT_MAP_FILE_KNOWN => hl_snapshot_map_file_known(
                    p(0),
                    w(1)?,
                    a[2],
                    a[3],
                    w(4)?,
                    p(5).cast(),
                    p(6).cast(),
                ),
                _ => return Err(Error::invalid_argument(format!("hl_op: unknown op {op}"))),
            }
        };
        Ok(status)
    })
}
