//! What wasmtime's custom (no OS) platform asks of the embedder: thread-local slots, code
//! publishing, and CPU feature detection; plus the W^X self-test probes.

use alloc::format;
use alloc::string::String;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};

use hl_guest::GuestError;

use hl_wasm_service::code;

/// wasmtime's TLS slots (slot 0: the runtime's state; slot 1: component-model async, unused).
/// One vCPU, one thread: two statics are the whole of it.
static TLS: [AtomicPtr<u8>; 2] = [
    AtomicPtr::new(core::ptr::null_mut()),
    AtomicPtr::new(core::ptr::null_mut()),
];

/// wasmtime's TLS getter (custom platform C API).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    TLS.get(slot)
        .map_or(core::ptr::null_mut(), |s| s.load(Ordering::Relaxed))
}

/// wasmtime's TLS setter (custom platform C API).
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = TLS.get(slot) {
        s.store(ptr, Ordering::Relaxed);
    }
}

/// wasmtime's trap handler (`wasmtime_init_traps`): `(pc, fp, has_faulting_addr, faulting_addr)`.
type TrapHandler = extern "C" fn(usize, usize, bool, usize);

/// The handler wasmtime registered; null before the engine's first store.
static TRAP_HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// wasmtime's trap-handler registration (custom platform C API, `custom-native-signals`). The
/// host delivers guard-page faults to [`wasm_trap_entry`], which calls it.
#[unsafe(no_mangle)]
pub extern "C" fn wasmtime_init_traps(handler: TrapHandler) -> i32 {
    TRAP_HANDLER.store(handler as *mut (), Ordering::Relaxed);
    0
}

/// Where the host delivers a #PF in the Wasm reservation from Wasm code (docs/abi.md, "Wasm guard
/// pages"), as a call with the faulting RIP, its RBP, `true` and CR2, on the faulting stack below
/// its red zone. wasmtime's handler resumes at the Wasm entry's trap handler and does not return
/// for a fault it claims (a bounds trap: `memory_out_of_bounds`); one it does not claim is a bug,
/// and ends the sandbox.
extern "C" fn wasm_trap_entry(pc: usize, fp: usize, has_addr: bool, addr: usize) -> ! {
    let handler = TRAP_HANDLER.load(Ordering::Relaxed);
    if !handler.is_null() {
        // SAFETY: only `wasmtime_init_traps` stores here, and it stores a `TrapHandler`.
        let handler: TrapHandler = unsafe { core::mem::transmute(handler) };
        handler(pc, fp, has_addr, addr);
    }
    panic!("a page fault at {addr:#x} from {pc:#x} that wasmtime does not claim")
}

/// Tells the host where [`wasm_trap_entry`] is (the PEB's `wasm_trap_entry`).
pub fn publish_trap_entry() {
    let entry: extern "C" fn(usize, usize, bool, usize) -> ! = wasm_trap_entry;
    hl_guest::set_wasm_trap_entry(entry as usize as u64);
}

/// CPU features for wasmtime's artifact check, from this vCPU's CPUID and XCR0: the SSE levels
/// and POPCNT of the baseline; AVX, AVX2 and FMA only where the OS-enabled state allows them the
/// documented way (leaf 1 OSXSAVE, which KVM derives from the vCPU's CR4, and `xgetbv` showing
/// the SSE and AVX state on); BMI1, BMI2 and LZCNT as CPUID has them. Anything else (AVX-512 and
/// later: the VM never enables their state) is "absent", so an artifact that needs it is refused
/// when it loads (docs/wasm.md "CPU features").
pub fn detect(feature: &str) -> Option<bool> {
    use core::arch::x86_64::__cpuid_count;
    // CPUID runs at CPL 3 and answers from the VM's CPUID table (or, on a CPU without CPUID
    // faulting under kvm_pvm, the host's: docs/security.md "CPUID").
    let l1 = __cpuid_count(1, 0);
    let max = __cpuid_count(0, 0).eax;
    let l7_ebx = if max >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
    let e1_ecx = if __cpuid_count(0x8000_0000, 0).eax >= 0x8000_0001 {
        __cpuid_count(0x8000_0001, 0).ecx
    } else {
        0
    };
    let bit = |reg: u32, n: u32| reg & (1 << n) != 0;
    // AVX needs the CPU's AVX, the OS's OSXSAVE (else `xgetbv` is #UD), and XCR0's SSE and AVX
    // state (bits 1 and 2).
    let avx = || {
        bit(l1.ecx, 28) && bit(l1.ecx, 27) && {
            let lo: u32;
            // SAFETY: OSXSAVE is set (checked just before), so `xgetbv` with ECX = 0 reads
            // XCR0 at any privilege level and cannot fault; it touches only EAX, EDX, ECX.
            unsafe {
                core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") _,
                        options(nomem, nostack, preserves_flags));
            }
            lo & 0b110 == 0b110
        }
    };
    Some(match feature {
        "sse" | "sse2" => true,
        "sse3" => bit(l1.ecx, 0),
        "ssse3" => bit(l1.ecx, 9),
        "sse4.1" => bit(l1.ecx, 19),
        "sse4.2" => bit(l1.ecx, 20),
        "popcnt" => bit(l1.ecx, 23),
        "avx" => avx(),
        "avx2" => bit(l7_ebx, 5) && avx(),
        "fma" => bit(l1.ecx, 12) && avx(),
        "bmi1" => bit(l7_ebx, 3),
        "bmi2" => bit(l7_ebx, 8),
        "lzcnt" => bit(e1_ecx, 5),
        _ => false,
    })
}

/// The host-mapped artifact: guest addresses are identity-mapped, user, read-only, executable.
#[derive(Clone, Copy)]
pub struct CodeRegion {
    start: usize,
    len: usize,
}

/// The one code region of this VM, once `load` has seen it (for the W^X probe).
static CODE: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());

impl CodeRegion {
    pub fn new(addr: u64, len: u64) -> Result<Self, String> {
        let (start, len) = (addr as usize, len as usize);
        if start == 0 || len == 0 || start % 4096 != 0 || start.checked_add(len).is_none() {
            return Err(format!("bad code region {addr:#x}+{len:#x}"));
        }
        CODE.store(start as *mut u8, Ordering::Relaxed);
        Ok(Self { start, len })
    }

    pub fn as_slice(&self) -> NonNull<[u8]> {
        // SAFETY: `start` is non-zero (checked in `new`).
        let ptr = unsafe { NonNull::new_unchecked(self.start as *mut u8) };
        NonNull::slice_from_raw_parts(ptr, self.len)
    }

    fn contains(&self, ptr: *const u8, len: usize) -> bool {
        let p = ptr as usize;
        p >= self.start
            && p.checked_add(len)
                .is_some_and(|e| e <= self.start + self.len)
    }
}

impl wasmtime::CustomCodeMemory for CodeRegion {
    fn required_alignment(&self) -> usize {
        1
    }

    /// The text is executable already (the host mapped it so); only check it is the region.
    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        if self.contains(ptr, len) {
            Ok(())
        } else {
            Err(wasmtime::format_err!(
                "code at {ptr:p}+{len:#x} is outside the host-published code region"
            ))
        }
    }

    /// Nothing to undo: the region stays read-only and executable for the VM's lifetime.
    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// W^X probe: writes one byte of the code region. The page is read-only for CPL 3, so this
/// faults (#PF, error code 7: present, write, user) and never returns.
pub fn write_code_page() -> Result<(), GuestError> {
    let code = CODE.load(Ordering::Relaxed);
    if code.is_null() {
        return Err(GuestError::new(code::STATE, "no code region"));
    }
    // SAFETY: deliberately not sound: the test wants this write to fault. A volatile write keeps
    // the compiler from removing it; the page is mapped (present), so the only outcome is #PF.
    unsafe { core::ptr::write_volatile(code, 0xC3) };
    Err(GuestError::new(
        code::STATE,
        "wrote a code page: W^X is broken",
    ))
}

/// W^X probe: places `ret` in a heap buffer and calls it. Heap pages are non-executable, so the
/// call faults (#PF, error code 0x15: present, user, instruction fetch) and never returns.
pub fn execute_data_page() -> Result<(), GuestError> {
    let buf = alloc::boxed::Box::new([0xC3u8; 64]);
    let ptr = buf.as_ptr();
    // SAFETY: deliberately not sound: the test wants this call to fault. The buffer holds `ret`
    // bytes, so on a machine without NX it would simply return.
    let f: extern "C" fn() = unsafe { core::mem::transmute(ptr) };
    f();
    drop(buf);
    Err(GuestError::new(
        code::STATE,
        "ran a data page: W^X is broken",
    ))
}
