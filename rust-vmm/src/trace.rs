//! Opt-in tracing to stderr (`HL_TRACE=1`), for diagnosing the vCPU thread protocol.

use std::sync::OnceLock;

pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("HL_TRACE").is_some_and(|v| v == "1"))
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::trace::enabled() {
            eprintln!("hl-trace [{}] {}", std::thread::current().name().unwrap_or("?"), format!($($arg)*));
        }
    };
}
pub(crate) use trace;
