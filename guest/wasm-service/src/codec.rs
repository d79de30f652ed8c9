//! The small binary encodings between `src/wasm/` and the Wasm runtime guests (all
//! little-endian, described in docs/wasm.md, "Wire encodings"), in engine-independent types:
//! requests are read with `hl_wire`'s bounds-checked `Reader` (the same cursor that decodes every
//! frame of the guest ABI); replies are built with a growable writer. Each engine converts its own
//! value and type representations to and from [`Val`], [`ValKind`] and [`ExternDesc`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hl_guest::wire::{DecodeError, Reader};
use hl_wasm_abi::TOO_MANY_VALUES;

/// Why a reference or vector value is refused: only numbers cross (docs/wasm.md).
pub const CANNOT_CROSS: &str = "reference and vector values cannot cross";

/// A decoding error as text (the ERROR message).
pub fn text(e: DecodeError) -> String {
    e.to_string()
}

/// A value type as the wire describes it: its binary-format code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValKind {
    I32,
    I64,
    F32,
    F64,
    V128,
    FuncRef,
    ExternRef,
}

impl ValKind {
    /// The binary-format code (0x7F i32, 0x7E i64, 0x7D f32, 0x7C f64, 0x7B v128, 0x70 funcref,
    /// 0x6F externref).
    pub fn code(self) -> u8 {
        match self {
            Self::I32 => 0x7F,
            Self::I64 => 0x7E,
            Self::F32 => 0x7D,
            Self::F64 => 0x7C,
            Self::V128 => 0x7B,
            Self::FuncRef => 0x70,
            Self::ExternRef => 0x6F,
        }
    }

    /// Whether a value of this type can cross to the host (numbers only).
    pub fn crosses(self) -> bool {
        matches!(self, Self::I32 | Self::I64 | Self::F32 | Self::F64)
    }
}

/// A value that can cross: integers, and floats as their bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
}

/// A function's type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncSig {
    pub params: Vec<ValKind>,
    pub results: Vec<ValKind>,
}

/// An import's or export's type, as the `load` reply describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExternDesc {
    Func(FuncSig),
    Table { min: u64, max: Option<u64> },
    Memory { min: u64, max: Option<u64> },
    Global { ty: ValKind, mutable: bool },
}

/// Appends fields to a byte vector.
#[derive(Default)]
pub struct Writer(pub Vec<u8>);

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    /// `u32` length, then the bytes. Lengths here are bounded by the module's size.
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.u64(v);
            }
            None => self.u8(0),
        }
    }

    /// A function type: a count byte, then the types, for the parameters and the results. Wasm
    /// allows more than 255 of either; such a function cannot be described, and is refused.
    pub fn func_type(&mut self, ty: &FuncSig) -> Result<(), String> {
        for types in [&ty.params, &ty.results] {
            let n = u8::try_from(types.len()).map_err(|_| String::from(TOO_MANY_VALUES))?;
            self.u8(n);
            for t in types {
                self.u8(t.code());
            }
        }
        Ok(())
    }

    /// An import's or export's type: kind byte, then the kind's details.
    pub fn extern_type(&mut self, ty: &ExternDesc) -> Result<(), String> {
        match ty {
            ExternDesc::Func(f) => {
                self.u8(0);
                self.func_type(f)?;
            }
            ExternDesc::Table { min, max } => {
                self.u8(1);
                self.u64(*min);
                self.opt_u64(*max);
            }
            ExternDesc::Memory { min, max } => {
                self.u8(2);
                self.u64(*min);
                self.opt_u64(*max);
            }
            ExternDesc::Global { ty, mutable } => {
                self.u8(3);
                self.u8(ty.code());
                self.u8(u8::from(*mutable));
            }
        }
        Ok(())
    }
}

/// Decodes packed values of the given types; the bytes must match exactly.
pub fn read_vals(bytes: &[u8], types: &[ValKind]) -> Result<Vec<Val>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        out.push(match t {
            ValKind::I32 => Val::I32(r.u32().map_err(text)? as i32),
            ValKind::I64 => Val::I64(r.u64().map_err(text)? as i64),
            ValKind::F32 => Val::F32(r.u32().map_err(text)?),
            ValKind::F64 => Val::F64(r.u64().map_err(text)?),
            _ => return Err(String::from(CANNOT_CROSS)),
        });
    }
    r.finish().map_err(text)?;
    Ok(out)
}

/// Encodes values packed: 4 or 8 little-endian bytes (floats as their bits).
pub fn write_vals(vals: &[Val]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(vals.len() * 8));
    for v in vals {
        match *v {
            Val::I32(x) => w.u32(x as u32),
            Val::I64(x) => w.u64(x as u64),
            Val::F32(bits) => w.u32(bits),
            Val::F64(bits) => w.u64(bits),
        }
    }
    w.0
}
