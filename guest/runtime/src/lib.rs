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
//! A guest that calls host functions by fixed names declares them with [`host_functions!`]
//! (in the same module as `guest_functions!`): typed wrappers, and a table the host checks
//! against its `hostFunctions` at create, so a missing one is an error there and not at the
//! first call.
//!
//! ```ignore
//! hl_guest::host_functions! {
//!     fn now_ms() -> u64;
//!     fn notify(message: String);
//! }
//! fn stamp() -> Result<u64, GuestError> { Ok(now_ms()?) }
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
pub use host::{
    HTTP_FETCH, HostError, HostImport, LogLevel, call_host, call_host_as, http_fetch, log,
};
pub use peb::{buffer_sizes, set_wasm_trap_entry, wasm_reservation};

/// Items the macros expand to; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::function::validate_table;
    pub use crate::host::{undeclared, validate_imports};
    pub use crate::rt::{start, start_with};
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
///
/// The host functions declared with [`host_functions!`] in the same module are sent with the
/// table; without a declaration the table has no imports part and the host checks nothing.
#[macro_export]
macro_rules! guest_functions {
    ($($f:path $(=> $name:literal)?),* $(,)?) => {
        // "Not declared", unless a `host_functions!` in this module defines the name (an item
        // shadows a glob import).
        #[allow(unused_imports)]
        use $crate::__private::undeclared::*;

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
            $crate::__private::start(peb, __HL_GUEST_FUNCTIONS, HL_GUEST_DECLARED_HOST_FUNCTIONS)
        }
    };
}

/// Declares the host functions the guest calls by fixed names: one typed wrapper each, and the
/// guest's table of imports, which [`guest_functions!`] sends with its function table so the
/// host checks at create that its `hostFunctions` provide every one with exactly these types
/// (otherwise `Sandbox.create` fails with `GuestLinkError`, before any call).
///
/// Use it at most once, in the same module as `guest_functions!` (the crate root); elsewhere
/// the table would not be sent, and the build fails with "constant
/// `HL_GUEST_DECLARED_HOST_FUNCTIONS` is never used". Each entry is
/// `fn name(arg: Type, ...) -> Result;` (no `->`: void), optionally followed by
/// `=> "host name"` when the host's name is not a Rust identifier. Parameter types are the
/// guest functions' (`i32 u32 i64 u64 f32 f64 bool String Vec<u8>`), the result any of those or
/// `()`. The wrapper returns `Result<R, HostError>`. Names 1-255 bytes and unique, at most 32
/// parameters, 4096 imports: checked at compile time. Host functions called by a name known
/// only at run time stay [`call_host`] calls (undeclared, unchecked).
///
/// ```ignore
/// hl_guest::host_functions! {
///     /// Milliseconds since the epoch, from the host.
///     pub fn now_ms() -> u64;
///     fn log_line(line: String) => "log.line";
/// }
/// ```
#[macro_export]
macro_rules! host_functions {
    ($(
        $(#[$meta:meta])*
        $vis:vis fn $f:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $(=> $name:literal)?;
    )*) => {
        /// The declared imports (sent with the function table; see `hl_guest::host_functions!`).
        #[deny(dead_code)]
        const HL_GUEST_DECLARED_HOST_FUNCTIONS: ::core::option::Option<&[$crate::HostImport]> =
            ::core::option::Option::Some(&[$(
                $crate::HostImport {
                    name: $crate::__hl_function_name!($f $(, $name)?),
                    params: &[$(<$ty as $crate::IntoValue>::TYPE),*],
                    result: <$crate::__hl_result_type!($($ret)?) as $crate::FromValue>::TYPE,
                },
            )*]);
        const _: () = $crate::__private::validate_imports(HL_GUEST_DECLARED_HOST_FUNCTIONS);
        $(
            $(#[$meta])*
            $vis fn $f($($arg: $ty),*) -> ::core::result::Result<
                $crate::__hl_result_type!($($ret)?),
                $crate::HostError,
            > {
                $crate::call_host_as::<$crate::__hl_result_type!($($ret)?)>(
                    $crate::__hl_function_name!($f $(, $name)?),
                    &[$($crate::IntoValue::into_value($arg)),*],
                )
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hl_result_type {
    () => {
        ()
    };
    ($ret:ty) => {
        $ret
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
