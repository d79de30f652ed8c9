//! The ERROR codes of the Wasm runtime guests (`wasm-runtime` on wasmi, `wasmtime-runtime` on
//! wasmtime): one definition for both engines. `src/wasm/codec.ts` maps them to error classes;
//! `tests/unit/wasm_codes.test.ts` checks that its numbers are these.
#![no_std]
#![forbid(unsafe_code)]

/// ERROR codes (docs/wasm.md, "Wire encodings").
pub mod code {
    /// The module is not valid or uses an unsupported feature.
    pub const MODULE: u32 = 1000;
    /// Linking or instantiation failed (not a trap).
    pub const LINK: u32 = 1001;
    /// A request out of order or malformed (a bug on the host side).
    pub const STATE: u32 = 1002;
    /// The module called WASI `proc_exit`; the message is the exit code in decimal.
    pub const EXIT: u32 = 1003;
    /// No exported function of that name.
    pub const NO_EXPORT: u32 = 1004;
    /// Arguments do not match the export's type, or the export's type cannot cross.
    pub const BAD_ARGS: u32 = 1005;
    /// `read_memory`/`write_memory` out of the memory's bounds, or no exported memory.
    pub const MEMORY: u32 = 1006;
    /// The mapped artifact is not one this engine accepts (wasmtime: version, settings, CPU
    /// features).
    pub const ARTIFACT: u32 = 1007;
    /// Traps: `TRAP_BASE + n`, `n` the trap's index in the host's trap list.
    pub const TRAP_BASE: u32 = 1100;
}

/// Why a module whose function has more than 255 parameters or results is refused (`MODULE`):
/// the description gives each count one byte (docs/wasm.md, "Wire encodings").
pub const TOO_MANY_VALUES: &str =
    "a function has more than 255 parameters or results, which cannot cross to the host";
