//! The small binary encodings between `src/wasm/` and this guest (all little-endian, described
//! in docs/wasm.md): requests are read with `hl_wire`'s bounds-checked `Reader` (the same cursor
//! that decodes every frame of the guest ABI); replies are built with a growable writer.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hl_guest::wire::Reader;

use hl_wasm_abi::TOO_MANY_VALUES;
use wasmi::{ExternType, FuncType, Val, ValType};

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

    pub fn val_type(&mut self, t: &ValType) {
        self.u8(val_type_code(t));
    }

    /// A function type: a count byte, then the types, for the parameters and the results. Wasm
    /// allows more than 255 of either; such a function cannot be described, and is refused.
    pub fn func_type(&mut self, ty: &FuncType) -> Result<(), String> {
        for types in [ty.params(), ty.results()] {
            let n = u8::try_from(types.len()).map_err(|_| String::from(TOO_MANY_VALUES))?;
            self.u8(n);
            for t in types {
                self.val_type(t);
            }
        }
        Ok(())
    }

    /// An import's or export's type: kind byte, then the kind's details.
    pub fn extern_type(&mut self, ty: &ExternType) -> Result<(), String> {
        match ty {
            ExternType::Func(f) => {
                self.u8(0);
                self.func_type(f)?;
            }
            ExternType::Table(t) => {
                self.u8(1);
                self.u64(t.minimum());
                self.opt_u64(t.maximum());
            }
            ExternType::Memory(m) => {
                self.u8(2);
                self.u64(m.minimum());
                self.opt_u64(m.maximum());
            }
            ExternType::Global(g) => {
                self.u8(3);
                self.val_type(&g.content());
                self.u8(u8::from(matches!(g.mutability(), wasmi::Mutability::Var)));
            }
        }
        Ok(())
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

    /// A value in its packed form: 4 or 8 little-endian bytes (floats as their bits).
    pub fn val(&mut self, v: &Val) -> Result<(), String> {
        match v {
            Val::I32(x) => self.u32(*x as u32),
            Val::I64(x) => self.u64(*x as u64),
            Val::F32(x) => self.u32(x.to_bits()),
            Val::F64(x) => self.u64(x.to_bits()),
            _ => return Err(String::from("reference and vector values cannot cross")),
        }
        Ok(())
    }
}

/// The binary-format code of a value type (0x7F i32, 0x7E i64, 0x7D f32, 0x7C f64, 0x7B v128,
/// 0x70 funcref, 0x6F externref).
pub fn val_type_code(t: &ValType) -> u8 {
    match t {
        ValType::I32 => 0x7F,
        ValType::I64 => 0x7E,
        ValType::F32 => 0x7D,
        ValType::F64 => 0x7C,
        ValType::V128 => 0x7B,
        ValType::FuncRef => 0x70,
        ValType::ExternRef => 0x6F,
    }
}

/// Decodes packed values of the given types; the bytes must match exactly.
pub fn read_vals(bytes: &[u8], types: &[ValType]) -> Result<Vec<Val>, String> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::with_capacity(types.len());
    let text = |e: hl_guest::wire::DecodeError| e.to_string();
    for t in types {
        out.push(match t {
            ValType::I32 => Val::I32(r.u32().map_err(text)? as i32),
            ValType::I64 => Val::I64(r.u64().map_err(text)? as i64),
            ValType::F32 => Val::F32(wasmi::F32::from_bits(r.u32().map_err(text)?)),
            ValType::F64 => Val::F64(wasmi::F64::from_bits(r.u64().map_err(text)?)),
            _ => return Err(String::from("reference and vector values cannot cross")),
        });
    }
    r.finish().map_err(text)?;
    Ok(out)
}

/// Encodes values packed.
pub fn write_vals(vals: &[Val]) -> Result<Vec<u8>, String> {
    let mut w = Writer(Vec::with_capacity(vals.len() * 8));
    for v in vals {
        w.val(v)?;
    }
    Ok(w.0)
}
