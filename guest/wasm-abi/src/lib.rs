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

/// Trap kinds: a trap is ERROR `code::TRAP_BASE + index`; `src/wasm/codec.ts` names them (the
/// kind is the constant's name in lower case; `tests/unit/wasm_codes.test.ts` checks).
pub mod trap {
    pub const UNREACHABLE: u32 = 0;
    pub const MEMORY_OUT_OF_BOUNDS: u32 = 1;
    pub const TABLE_OUT_OF_BOUNDS: u32 = 2;
    pub const INDIRECT_CALL_TO_NULL: u32 = 3;
    pub const INTEGER_DIVIDE_BY_ZERO: u32 = 4;
    pub const INTEGER_OVERFLOW: u32 = 5;
    pub const INVALID_CONVERSION_TO_INTEGER: u32 = 6;
    pub const STACK_OVERFLOW: u32 = 7;
    pub const INDIRECT_CALL_TYPE_MISMATCH: u32 = 8;
    pub const OUT_OF_FUEL: u32 = 9;
    pub const GROWTH_LIMITED: u32 = 10;
    pub const OUT_OF_MEMORY: u32 = 11;
    /// A host function failed.
    pub const HOST: u32 = 20;
    /// Any other runtime error.
    pub const OTHER: u32 = 21;
}

/// Why a module whose function has more than 255 parameters or results is refused (`MODULE`):
/// the description gives each count one byte (docs/wasm.md, "Wire encodings").
pub const TOO_MANY_VALUES: &str =
    "a function has more than 255 parameters or results, which cannot cross to the host";
