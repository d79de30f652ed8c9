//! The request and reply encodings shared with the wasmi guest (docs/wasm.md, "Wire
//! encodings"), for wasmtime's types: a cursor over request bytes, a writer, value packing and
//! the description of imports and exports.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hl_wasm_abi::TOO_MANY_VALUES;
use wasmtime::{ExternType, FuncType, Mutability, Val, ValType};

/// Requests are read with `hl_wire`'s bounds-checked cursor (as in the wasmi guest).
pub use hl_guest::wire::Reader;

/// A decoding error as text (the ERROR message).
pub fn text(e: hl_guest::wire::DecodeError) -> String {
    e.to_string()
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
}

/// The binary-format code of a value type (0x7F i32, 0x7E i64, 0x7D f32, 0x7C f64, 0x7B v128,
/// 0x70 funcref, 0x6F externref; other reference types cannot be described).
fn val_type_code(t: &ValType) -> Result<u8, String> {
    Ok(match t {
        ValType::I32 => 0x7F,
        ValType::I64 => 0x7E,
        ValType::F32 => 0x7D,
        ValType::F64 => 0x7C,
        ValType::V128 => 0x7B,
        ValType::Ref(r) if r.heap_type().is_func() => 0x70,
        ValType::Ref(r) if r.heap_type().is_extern() => 0x6F,
        ValType::Ref(_) => return Err(String::from("unsupported reference type")),
    })
}

/// A function type: a count byte, then the types, for the parameters and the results. Wasm
/// allows more than 255 of either; such a function cannot be described, and is refused.
fn func_type(w: &mut Writer, ty: &FuncType) -> Result<(), String> {
    let count = |n: usize| u8::try_from(n).map_err(|_| String::from(TOO_MANY_VALUES));
    w.u8(count(ty.params().len())?);
    for t in ty.params() {
        w.u8(val_type_code(&t)?);
    }
    w.u8(count(ty.results().len())?);
    for t in ty.results() {
        w.u8(val_type_code(&t)?);
    }
    Ok(())
}

/// An import's or export's type: kind byte, then the kind's details.
pub fn extern_type(w: &mut Writer, ty: &ExternType) -> Result<(), String> {
    match ty {
        ExternType::Func(f) => {
            w.u8(0);
            func_type(w, f)?;
        }
        ExternType::Table(t) => {
            w.u8(1);
            w.u64(t.minimum());
            w.opt_u64(t.maximum());
        }
        ExternType::Memory(m) => {
            w.u8(2);
            w.u64(m.minimum());
            w.opt_u64(m.maximum());
        }
        ExternType::Global(g) => {
            w.u8(3);
            w.u8(val_type_code(g.content())?);
            w.u8(u8::from(matches!(g.mutability(), Mutability::Var)));
        }
        ExternType::Tag(_) => return Err(String::from("exception tags are not supported")),
    }
    Ok(())
}

/// Decodes packed values of the given types; the bytes must match exactly.
pub fn read_vals(bytes: &[u8], types: &[ValType]) -> Result<Vec<Val>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        out.push(match t {
            ValType::I32 => Val::I32(r.u32().map_err(text)? as i32),
            ValType::I64 => Val::I64(r.u64().map_err(text)? as i64),
            ValType::F32 => Val::F32(r.u32().map_err(text)?),
            ValType::F64 => Val::F64(r.u64().map_err(text)?),
            _ => return Err(String::from("reference and vector values cannot cross")),
        });
    }
    r.finish().map_err(text)?;
    Ok(out)
}

/// Encodes values packed: 4 or 8 little-endian bytes (floats as their bits).
pub fn write_vals(vals: &[Val]) -> Result<Vec<u8>, String> {
    let mut w = Writer(Vec::with_capacity(vals.len() * 8));
    for v in vals {
        match v {
            Val::I32(x) => w.u32(*x as u32),
            Val::I64(x) => w.u64(*x as u64),
            Val::F32(bits) => w.u32(*bits),
            Val::F64(bits) => w.u64(*bits),
            _ => return Err(String::from("reference and vector values cannot cross")),
        }
    }
    Ok(w.0)
}
