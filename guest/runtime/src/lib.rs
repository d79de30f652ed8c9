//! `hl-guest`: the freestanding runtime of an `@hl/sandbox` guest (ABI version 2,
//! `docs/abi.md`).
//!
//! A guest binary is `#![no_std] #![no_main]`, depends on this crate, and lists its functions
//! once with [`guest_functions!`], which also defines the ELF entry point `hl_entry`:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! extern crate alloc;
//! use alloc::string::String;
//! use hl_guest::GuestError;
//!
//! fn add(a: i32, b: i32) -> i32 { a.wrapping_add(b) }
//! fn greet(name: String) -> Result<String, GuestError> {
//!     if name.is_empty() { return Err(GuestError::new(1000, "empty name")); }
//!     Ok(alloc::format!("hello {name}"))
//! }
//!
//! hl_guest::guest_functions![add, greet, add => "plus"];
//! ```
//!
//! The guest runs at CPL 3; the host owns the descriptor tables and reports CPU exceptions
//! itself. The runtime installs the heap allocator (talc over the PEB's heap region), the panic
//! handler (`PANIC` frames), the `mem*` functions `core` expects from libc, and the call loop
//! (`CALL` → function → `RETURN`/`ERROR`). Guest code may call the host with [`call_host`] and
//! log with [`log()`].
#![no_std]

extern crate alloc;

mod arch;
mod function;
mod heap;
mod host;
mod mem;
mod panic;
mod peb;
mod rt;

pub use function::{FromValue, GuestError, GuestFn, GuestFunction, IntoOutcome, IntoValue};
pub use hl_wire as wire;
pub use hl_wire::{Value, ValueType};
pub use host::{HostError, LogLevel, call_host, call_host_as, log};
pub use peb::buffer_sizes;

/// Items the macros expand to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::function::validate_table;
    pub use crate::rt::start;
    pub use alloc::format;
}

/// Registers the guest's functions and defines the ELF entry point `hl_entry`.
///
/// Use it exactly once, in the binary crate. Each entry is a function path, optionally
/// followed by `=> "exported name"` (default: the path as written, so use a plain identifier
/// or give a name). Parameter and result types come from the function's signature through
/// [`FromValue`] / [`IntoOutcome`]: parameters `i32 u32 i64 u64 f32 f64 bool String Vec<u8>`,
/// results those, `()` (void), or `Result<T, GuestError>`. Names must be 1-255 bytes and
/// unique, at most 4096 functions: checked at compile time.
#[macro_export]
macro_rules! guest_functions {
    ($($f:path $(=> $name:literal)?),* $(,)?) => {
        const __HL_GUEST_FUNCTIONS: &[$crate::GuestFunction] = &[
            $(
                $crate::GuestFunction::new(
                    $crate::__hl_function_name!($f $(, $name)?),
                    &$f,
                    |args| $crate::GuestFn::invoke($f, args),
                ),
            )*
        ];
        const _: () = $crate::__private::validate_table(__HL_GUEST_FUNCTIONS);

        /// ELF entry point: RDI = PEB address (docs/abi.md, "Entry").
        // SAFETY: the one definition of the entry symbol the link flags name (a second use of
        // this macro is a duplicate-symbol error).
        #[unsafe(no_mangle)]
        pub extern "C" fn hl_entry(peb: u64) -> ! {
            $crate::__private::start(peb, __HL_GUEST_FUNCTIONS)
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hl_function_name {
    ($f:path) => {
        stringify!($f)
    };
    ($f:path, $name:literal) => {
        $name
    };
}

/// `log!(level, "format {}", args...)`: formats (allocating) and sends a `LOG` frame.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, &$crate::__private::format!($($arg)+))
    };
}
