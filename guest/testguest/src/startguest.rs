//! A guest whose start tells the host something before its function table: it logs
//! ("starting") when its input buffer is the default size, and calls the host function
//! `start_seed` instead when the input buffer is 64 KiB. The host's per-image start snapshots
//! (src/start_cache.ts) must not keep either start (tests/kvm/start_snapshot.test.ts).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use hl_guest::{GuestFn, GuestFunction, LogLevel, Value};

/// What the start got from the host (`start_seed`), or 0.
static SEED: AtomicU64 = AtomicU64::new(0);
/// Counts calls of `counter`.
static COUNT: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

fn counter() -> u64 {
    COUNT.fetch_add(1, Ordering::Relaxed) + 1
}

fn hook() {
    if hl_guest::buffer_sizes().0 == 64 * 1024 {
        if let Ok(Value::U64(v)) = hl_guest::call_host("start_seed", &[]) {
            SEED.store(v, Ordering::Relaxed);
        }
    } else {
        hl_guest::log(LogLevel::Info, "starting");
    }
}

const FUNCTIONS: &[GuestFunction] = &[
    GuestFunction::new("seed", &seed, |args| GuestFn::invoke(seed, args)),
    GuestFunction::new("counter", &counter, |args| GuestFn::invoke(counter, args)),
];
const _: () = hl_guest::__private::validate_table(FUNCTIONS);

/// ELF entry point: RDI = PEB address (docs/abi.md, "Entry").
// SAFETY: the one definition of the entry symbol the link flags name.
#[unsafe(no_mangle)]
pub extern "C" fn hl_entry(peb: u64) -> ! {
    hl_guest::__private::start_with(peb, FUNCTIONS, None, hook)
}
