//! `hl-wasm-compiler`: the host side of the `wasmtime` engine of `WasmSandbox`, behind a small C
//! ABI (docs/wasm.md, "Engines"; docs/cdylib-abi.md, "The compiler library"). It is a separate
//! library from the VM cdylib so that only users of the wasmtime engine load it.
//!
//! Untrusted modules are compiled by `hlc_compile_isolated` in the `hl-wasm-compile` child
//! process (src/bin/hl-wasm-compile.rs, src/isolate.rs: seccomp, rlimits, a deadline), never in
//! this process; `hlc_compile` (in-process) remains for the benchmark that compares the two.
//! The host checks an artifact's header and engine section (`hlc_check`) without loading it.
//!
//! Every engine is built from the guest's own settings (`engine_config.rs` is the guest's file,
//! compiled in here), for a fixed x86-64 baseline plus the CPU features `flags` names (the host
//! names those the VM grants), never by detecting the host's CPU, so an artifact runs on the
//! CPUID the VM exposes.
//!
//! Functions return 0 (or a length) on success and a negative code on failure; the failure's
//! message is then available from `hlc_last_error` on the same thread. No panic crosses the ABI.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use object::{Object, ObjectSection};
use wasmtime::{Config, Engine, Precompiled};

mod isolate;
pub use isolate::{compile_isolated, memory_limit, PROGRESS_MARK};

#[path = "../../guest/wasmtime-runtime/src/engine_config.rs"]
mod engine_config;

/// Version of this C ABI; the host checks it after `dlopen`. 5: `flags` bits 1-7 (CPU features).
pub const ABI_VERSION: u32 = 5;

/// `flags` bit 0: fuel metering on.
pub const FLAG_FUEL: u32 = 1;

/// `flags` bits 1-7: CPU features beyond the baseline (`engine_config::CPU_FEATURE_FLAGS`: AVX,
/// AVX2, FMA, BMI1, BMI2, LZCNT, AVX-512F).
pub const FLAG_CPU_FEATURES: u32 = 254; // 0xfe

/// Every flag this library knows.
const KNOWN_FLAGS: u32 = FLAG_FUEL | FLAG_CPU_FEATURES;

/// `Err` naming `flags` unless every bit is known.
fn known_flags(flags: u32) -> Result<(), String> {
    if flags & !KNOWN_FLAGS != 0 {
        return Err(format!("unknown compiler flags {flags:#x}"));
    }
    Ok(())
}

/// The module is not valid Wasm or uses a feature the engine does not support.
pub const ERR_MODULE: i32 = -1;
/// The artifact is not one this engine produced, or was built for another engine or settings.
pub const ERR_ARTIFACT: i32 = -2;
/// Bad arguments (a host bug).
pub const ERR_ARGUMENT: i32 = -3;
/// Anything else (engine creation, a caught panic, the child could not be started).
pub const ERR_INTERNAL: i32 = -4;
/// The isolated compile passed its deadline or its CPU-time limit (the child was killed).
pub const ERR_TIMEOUT: i32 = -5;
/// The compiler process crashed, ran out of memory, made a forbidden system call or returned
/// garbage (the message says which).
pub const ERR_CHILD: i32 = -6;

/// The ELF section in which wasmtime records the engine settings an artifact was built for.
const ENGINE_SECTION: &str = ".wasmtime.engine";

/// A fixed, trusted module (`(module)` plus one function): compiled in this process once per
/// engine to learn the exact engine section its artifacts carry, and by the compiler process
/// before its filter (to start the compile threads while it may still create them).
pub const REFERENCE_MODULE: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02,
    0x01, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,
];

/// The target the guest's wasmtime is built for (the guest is a freestanding binary built for the
/// host triple: guest/.cargo/config.toml).
const TARGET: &str = "x86_64-unknown-linux-gnu";

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

/// Runs `f`, turning an error or a panic into a negative code with the message recorded.
fn guard(f: impl FnOnce() -> Result<i32, (i32, String)>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(n)) => n,
        Ok(Err((code, message))) => {
            set_error(message);
            code
        }
        Err(_) => {
            set_error("panic in the Wasm compiler".into());
            ERR_INTERNAL
        }
    }
}

/// The compiling engine for `flags`: the guest's settings plus Cranelift for the fixed baseline;
/// functions compiled one at a time (this process only compiles the trusted reference module).
pub fn engine(flags: u32) -> Result<Engine, String> {
    engine_with(flags, false)
}

/// The compiling engine for `flags`, compiling functions on rayon's global thread pool when
/// `parallel` (the compiler process, and the in-process compile the benchmark compares it with).
/// Parallelism changes neither the artifact nor the engine hash.
pub fn engine_with(flags: u32, parallel: bool) -> Result<Engine, String> {
    known_flags(flags)?;
    let mut cfg = Config::new();
    engine_config::configure(&mut cfg, flags & FLAG_FUEL != 0);
    cfg.parallel_compilation(parallel);
    // An explicit target turns off the detection of the host CPU's features; the baseline is
    // then enabled flag by flag.
    cfg.target(TARGET).map_err(|e| format!("{e:#}"))?;
    let features = engine_config::CPU_FEATURE_FLAGS
        .iter()
        .filter(|(bit, _, _)| flags & bit != 0)
        .map(|(_, flag, _)| flag);
    for flag in engine_config::BASELINE_CRANELIFT_FLAGS
        .iter()
        .chain(features)
    {
        // SAFETY: the flags are x86-64 ISA flags that the guest checks against its CPUID (and,
        // for AVX, the OS-enabled state in XCR0) when the artifact loads: wasmtime refuses an
        // artifact that needs a feature the guest lacks, so none runs where it would #UD.
        unsafe {
            cfg.cranelift_flag_enable(flag);
        }
    }
    Engine::new(&cfg).map_err(|e| format!("{e:#}"))
}

/// The key part that changes whenever an artifact of this engine would not load into the guest:
/// wasmtime's compatibility hash plus our settings' version.
pub fn engine_hash(flags: u32) -> Result<u64, String> {
    let engine = engine(flags)?;
    let mut h = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    engine_config::CONFIG_VERSION.hash(&mut h);
    flags.hash(&mut h);
    Ok(h.finish())
}

/// Compiles `wasm` into a serialized artifact in this process, one function at a time
/// (`parallel` false) or on rayon's pool.
pub fn compile_with(flags: u32, wasm: &[u8], parallel: bool) -> Result<Vec<u8>, (i32, String)> {
    let engine = engine_with(flags, parallel).map_err(|e| (ERR_INTERNAL, e))?;
    engine
        .precompile_module(wasm)
        .map_err(|e| (ERR_MODULE, format!("{e:#}")))
}

/// The engine section of a wasmtime artifact (bounds-checked ELF parsing; nothing is loaded).
fn engine_section(artifact: &[u8]) -> Result<&[u8], String> {
    let file = object::read::elf::ElfFile64::<object::LittleEndian>::parse(artifact)
        .map_err(|e| format!("not an ELF artifact: {e}"))?;
    let section = file
        .section_by_name(ENGINE_SECTION)
        .ok_or_else(|| format!("no {ENGINE_SECTION} section"))?;
    section
        .data()
        .map_err(|e| format!("bad {ENGINE_SECTION} section: {e}"))
}

static REFERENCE_SECTIONS: Mutex<Option<HashMap<u32, Vec<u8>>>> = Mutex::new(None);

/// The engine section every artifact of the engine for `flags` carries (from the reference
/// module, compiled once).
fn reference_section(flags: u32) -> Result<Vec<u8>, (i32, String)> {
    let mut cache = REFERENCE_SECTIONS.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if let Some(s) = map.get(&flags) {
        return Ok(s.clone());
    }
    let artifact =
        compile_with(flags, REFERENCE_MODULE, false).map_err(|(_, e)| (ERR_INTERNAL, e))?;
    let section = engine_section(&artifact)
        .map_err(|e| (ERR_INTERNAL, e))?
        .to_vec();
    map.insert(flags, section.clone());
    Ok(section)
}

/// Checks that `artifact` is a module artifact of the engine for `flags`, without loading it:
/// wasmtime's header check (`Engine::detect_precompiled`: ELF, wasmtime's OS ABI, a module not
/// a component) and its engine section (wasmtime version, compiler flags, tunables, Wasm
/// features) byte for byte equal to what this engine writes. Nothing of the artifact is mapped
/// or run here; the guest's wasmtime loads it inside the VM with all of its own checks.
pub fn check(flags: u32, artifact: &[u8]) -> Result<(), (i32, String)> {
    let want = reference_section(flags)?;
    if Engine::detect_precompiled(artifact) != Some(Precompiled::Module) {
        return Err((ERR_ARTIFACT, "not a wasmtime module artifact".into()));
    }
    let got = engine_section(artifact).map_err(|e| (ERR_ARTIFACT, e))?;
    if got != want.as_slice() {
        return Err((
            ERR_ARTIFACT,
            "built by another wasmtime version or with other engine settings".into(),
        ));
    }
    Ok(())
}

/// # Safety
/// `ptr` must be valid for `len` bytes (or `len` 0).
unsafe fn slice<'a>(ptr: *const u8, len: u64) -> Result<&'a [u8], (i32, String)> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err((ERR_ARGUMENT, "null pointer with a non-zero length".into()));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| (ERR_ARGUMENT, "length too large".to_string()))?;
    // SAFETY: non-null and valid for `len` bytes by the caller's contract; `len` is at most
    // isize::MAX, as `from_raw_parts` requires.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// `uint32_t hlc_abi_version(void)`.
#[no_mangle]
pub extern "C" fn hlc_abi_version() -> u32 {
    ABI_VERSION
}

/// `int32_t hlc_engine_hash(uint32_t flags, uint64_t *out)`: the engine key for `flags`.
///
/// # Safety
/// `out` must be null or valid for one u64 write.
#[no_mangle]
pub unsafe extern "C" fn hlc_engine_hash(flags: u32, out: *mut u64) -> i32 {
    guard(|| {
        if out.is_null() {
            return Err((ERR_ARGUMENT, "out is null".into()));
        }
        let h = engine_hash(flags).map_err(|e| (ERR_INTERNAL, e))?;
        // SAFETY: checked non-null; the caller gives one writable u64.
        unsafe { *out = h };
        Ok(0)
    })
}

/// `int32_t hlc_compile(uint32_t flags, const uint8_t *wasm, uint64_t len, uint64_t out[2])`:
/// compiles a module; `out` gets the artifact's address and length, to be released with
/// `hlc_free`. On failure (a negative code) `out` gets the error message instead (UTF-8, also
/// released with `hlc_free`), so the call may run on any thread (the host calls it
/// `nonblocking`, off its event loop).
///
/// # Safety
/// `wasm` must be valid for `len` bytes; `out` null or valid for two u64 writes.
#[no_mangle]
pub unsafe extern "C" fn hlc_compile(flags: u32, wasm: *const u8, len: u64, out: *mut u64) -> i32 {
    if out.is_null() {
        set_error("out is null".into());
        return ERR_ARGUMENT;
    }
    let give = |bytes: Box<[u8]>| {
        let n = bytes.len() as u64;
        let ptr = Box::into_raw(bytes) as *mut u8;
        // SAFETY: checked non-null; the caller gives two writable u64s.
        unsafe {
            *out = ptr as u64;
            *out.add(1) = n;
        }
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let wasm = unsafe { slice(wasm, len) }?;
        // The benchmark's comparison: the same parallelism as the compiler process.
        compile_with(flags, wasm, true)
    }));
    match result {
        Ok(Ok(artifact)) => {
            give(artifact.into_boxed_slice());
            0
        }
        Ok(Err((code, message))) => {
            give(message.into_bytes().into_boxed_slice());
            code
        }
        Err(_) => {
            give(b"panic in the Wasm compiler".to_vec().into_boxed_slice());
            ERR_INTERNAL
        }
    }
}

/// `int32_t hlc_compile_isolated(uint32_t flags, uint32_t timeout_ms, const uint8_t *program,
/// uint64_t program_len, const uint8_t *fault, uint64_t fault_len, const uint8_t *wasm,
/// uint64_t len, uint64_t out[2])`: compiles a module in a new `hl-wasm-compile` child process
/// (`program`, a UTF-8 path) within `timeout_ms`, then checks the artifact as `hlc_check` does.
/// `fault` is empty except in tests (`crash`, `loop`, `alloc`, `syscall`). Results as
/// `hlc_compile`; the codes add `ERR_TIMEOUT` and `ERR_CHILD`. Blocks: call it off the event loop.
/// `progress` is null or three u64s that the call stores the child's progress into while it runs
/// (functions translated, compiled, and the module's function count; relaxed atomic stores, so
/// another thread may read them meanwhile).
///
/// # Safety
/// `program`, `fault` and `wasm` must be valid for their lengths; `out` null or valid for two u64
/// writes; `progress` null, or 8-byte aligned and valid for three u64s for the whole call.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn hlc_compile_isolated(
    flags: u32,
    timeout_ms: u32,
    program: *const u8,
    program_len: u64,
    fault: *const u8,
    fault_len: u64,
    wasm: *const u8,
    len: u64,
    out: *mut u64,
    progress: *mut u64,
) -> i32 {
    if out.is_null() {
        set_error("out is null".into());
        return ERR_ARGUMENT;
    }
    if progress.align_offset(std::mem::align_of::<AtomicU64>()) != 0 {
        set_error("progress is not 8-byte aligned".into());
        return ERR_ARGUMENT;
    }
    let cells: Option<&[AtomicU64]> = if progress.is_null() {
        None
    } else {
        // SAFETY: non-null, aligned (checked) and valid for three u64s for the whole call by the
        // caller's contract; AtomicU64 has u64's size and layout, and every access here is atomic.
        Some(unsafe { std::slice::from_raw_parts(progress as *const AtomicU64, 3) })
    };
    let store = |t: u64, c: u64, n: u64| {
        if let Some(cells) = cells {
            cells[0].store(t, Ordering::Relaxed);
            cells[1].store(c, Ordering::Relaxed);
            cells[2].store(n, Ordering::Relaxed);
        }
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract.
        let (program, fault, wasm) = unsafe {
            (
                slice(program, program_len)?,
                slice(fault, fault_len)?,
                slice(wasm, len)?,
            )
        };
        let text = |b: &[u8], what: &str| {
            std::str::from_utf8(b)
                .map(str::to_owned)
                .map_err(|_| (ERR_ARGUMENT, format!("{what} is not UTF-8")))
        };
        let (program, fault) = (text(program, "program")?, text(fault, "fault")?);
        known_flags(flags).map_err(|e| (ERR_ARGUMENT, e))?;
        let artifact = compile_isolated(
            &program,
            flags,
            &fault,
            Duration::from_millis(u64::from(timeout_ms)),
            wasm,
            Some(&store),
        )?;
        check(flags, &artifact).map_err(|(code, e)| {
            let code = if code == ERR_ARTIFACT {
                ERR_CHILD
            } else {
                code
            };
            (
                code,
                format!("the compiler process returned a bad artifact: {e}"),
            )
        })?;
        Ok(artifact)
    }));
    let (code, bytes) = match result {
        Ok(Ok(artifact)) => (0, artifact),
        Ok(Err((code, message))) => (code, message.into_bytes()),
        Err(_) => (ERR_INTERNAL, b"panic in the Wasm compiler".to_vec()),
    };
    let bytes = bytes.into_boxed_slice();
    let n = bytes.len() as u64;
    let ptr = Box::into_raw(bytes) as *mut u8;
    // SAFETY: checked non-null; the caller gives two writable u64s.
    unsafe {
        *out = ptr as u64;
        *out.add(1) = n;
    }
    code
}

/// `void hlc_free(uint8_t *ptr, uint64_t len)`: releases what `hlc_compile` or
/// `hlc_compile_isolated` returned.
///
/// # Safety
/// `ptr`/`len` must be exactly a pair one of them returned, released once.
#[no_mangle]
pub unsafe extern "C" fn hlc_free(ptr: *mut u8, len: u64) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: the pair came from `Box::into_raw` of a boxed slice of this length.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len as usize)) });
}

/// `int32_t hlc_check(uint32_t flags, const uint8_t *artifact, uint64_t len)`: 0 when the
/// artifact's header and engine section are those of the engine for `flags` (see `check`),
/// `ERR_ARTIFACT` otherwise.
///
/// # Safety
/// `artifact` must be valid for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn hlc_check(flags: u32, artifact: *const u8, len: u64) -> i32 {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let artifact = unsafe { slice(artifact, len) }?;
        check(flags, artifact).map(|_| 0)
    })
}

/// `int32_t hlc_last_error(uint8_t *buf, uint32_t cap)`: copies the calling thread's last error
/// message (UTF-8, truncated to `cap`), returns its full length.
///
/// # Safety
/// `buf` must be null or valid for `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn hlc_last_error(buf: *mut u8, cap: u32) -> i32 {
    LAST_ERROR.with(|e| {
        let e = e.borrow();
        let n = e.len().min(cap as usize);
        if !buf.is_null() && n > 0 {
            // SAFETY: `buf` is valid for `cap >= n` bytes; the source is our own string.
            unsafe { std::ptr::copy_nonoverlapping(e.as_ptr(), buf, n) };
        }
        e.len().min(i32::MAX as usize) as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
    const ADD: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x07, 0x01, 0x60, 0x02, 0x7f, 0x7f,
        0x01, 0x7f, 0x03, 0x02, 0x01, 0x00, 0x07, 0x07, 0x01, 0x03, 0x61, 0x64, 0x64, 0x00, 0x00,
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x20, 0x00, 0x20, 0x01, 0x6a, 0x0b,
    ];

    #[test]
    fn baseline_names_pair_up() {
        assert_eq!(
            engine_config::BASELINE_FEATURES.len(),
            engine_config::BASELINE_CRANELIFT_FLAGS.len()
        );
    }

    #[test]
    fn compiles_checks_and_rejects() {
        let art = compile_with(0, ADD, false).unwrap();
        check(0, &art).unwrap();
        // Built without fuel, refused by the fuel engine.
        assert_eq!(check(FLAG_FUEL, &art).unwrap_err().0, ERR_ARTIFACT);
        assert_ne!(engine_hash(0).unwrap(), engine_hash(FLAG_FUEL).unwrap());
        assert_eq!(engine_hash(0).unwrap(), engine_hash(0).unwrap());
        assert_eq!(
            compile_with(0, b"\0asm\x01\0\0\0\x99", false)
                .unwrap_err()
                .0,
            ERR_MODULE
        );
        assert_eq!(check(0, b"not an artifact").unwrap_err().0, ERR_ARTIFACT);
        assert!(compile_with(1 << 8, ADD, false).is_err(), "an unknown flag");
    }

    /// The CPU features are part of the engine: each set has its own engine hash (the artifact
    /// cache key) and engine section (an artifact of one set is refused by another's check).
    #[test]
    fn cpu_features_key_the_engine() {
        assert_eq!(
            engine_config::CPU_FEATURE_FLAGS
                .iter()
                .fold(0, |m, (bit, _, _)| m | bit),
            FLAG_CPU_FEATURES
        );
        let native = FLAG_CPU_FEATURES & !(1 << 7);
        let base = compile_with(0, ADD, false).unwrap();
        let avx = compile_with(native, ADD, false).unwrap();
        check(native, &avx).unwrap();
        assert_eq!(check(0, &avx).unwrap_err().0, ERR_ARTIFACT);
        assert_eq!(check(native, &base).unwrap_err().0, ERR_ARTIFACT);
        let hashes: std::collections::HashSet<u64> = [0, 2, native, native | FLAG_FUEL, 1 << 7]
            .iter()
            .map(|&f| engine_hash(f).unwrap())
            .collect();
        assert_eq!(hashes.len(), 5);
    }
}
