//! The wire format of the `@hl/sandbox` guest ABI, version 2 (`docs/abi.md`).
//!
//! `no_std` + `alloc`, no `unsafe`. Decoding never panics: every length, count and tag is
//! checked against the bytes that are actually there, and malformed input is reported as a
//! [`DecodeError`]. Encoding writes into a caller-provided buffer (the guest writes straight
//! into its output buffer) and reports [`EncodeError::BufferTooSmall`] instead of writing past
//! it.
//!
//! Everything is little-endian. A frame is `u32 kind, u32 payload_len, payload`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::{string::String, vec::Vec};
use core::fmt;

/// The ABI version this crate implements.
pub const ABI_VERSION: u32 = 2;
/// Size of a frame header (`kind`, `payload_len`).
pub const HEADER_LEN: usize = 8;
/// Longest function name, in bytes (names are 1..=255 bytes of UTF-8).
pub const MAX_NAME_LEN: usize = 255;
/// Most entries in a function table.
pub const MAX_FUNCTIONS: usize = 4096;
/// Most parameters of one function.
pub const MAX_PARAMS: usize = 32;
/// Highest `LOG` level (0 error, 1 warn, 2 info, 3 debug, 4 trace).
pub const MAX_LOG_LEVEL: u32 = 4;

/// The I/O ports the guest signals with (`out dx, eax`).
pub mod port {
    /// Init or call finished; output holds `FUNCTION_TABLE`, `RETURN` or `ERROR`.
    pub const DONE: u16 = 0x7F00;
    /// Output holds `HOST_CALL`; on resume input holds `HOST_RETURN` or `HOST_ERROR`.
    pub const HOST_CALL: u16 = 0x7F01;
    /// Fatal: output holds `PANIC`; never resumed.
    pub const ABORT: u16 = 0x7F02;
    /// Output holds `LOG`; resumed afterwards.
    pub const LOG: u16 = 0x7F03;
    /// Reserved for the host's ring-0 exception stubs; denied to the guest (#GP at CPL 3).
    pub const FAULT: u16 = 0x7F08;
}

/// `ERROR` frame codes defined by the ABI.
pub mod error_code {
    /// The `CALL` named a function the guest does not have.
    pub const UNKNOWN_FUNCTION: u32 = 1;
    /// Wrong argument count or types (the guest also uses it for a malformed `CALL` frame).
    pub const BAD_ARGUMENTS: u32 = 2;
    /// A host call failed and the guest function propagated it.
    pub const HOST_CALL_FAILED: u32 = 3;
    /// First code available to guest functions.
    pub const USER_MIN: u32 = 1000;
}

/// The PEB magic, ASCII "HLSBPEB1" read as a little-endian u64.
pub const PEB_MAGIC: u64 = 0x3142_4550_4253_4C48;

/// Byte offsets of the PEB fields (docs/abi.md, "Parameter block"); asserted against the shared
/// vectors' `constants.peb_offsets`.
pub mod peb_offset {
    pub const MAGIC: usize = 0x00;
    pub const ABI_VERSION: usize = 0x08;
    pub const GUEST_ABI_VERSION: usize = 0x0C;
    pub const INPUT_ADDR: usize = 0x10;
    pub const INPUT_SIZE: usize = 0x18;
    pub const OUTPUT_ADDR: usize = 0x20;
    pub const OUTPUT_SIZE: usize = 0x28;
    pub const HEAP_ADDR: usize = 0x30;
    pub const HEAP_SIZE: usize = 0x38;
    pub const STACK_TOP: usize = 0x40;
    pub const STACK_SIZE: usize = 0x48;
    pub const GUARD_ADDR: usize = 0x50;
    pub const IMAGE_BASE: usize = 0x58;
    pub const IMAGE_SIZE: usize = 0x60;
    pub const MEMORY_SIZE: usize = 0x68;
    pub const WASM_RESERVATION_ADDR: usize = 0x70;
    pub const WASM_RESERVATION_SIZE: usize = 0x78;
    pub const WASM_TRAP_ENTRY: usize = 0x80;
}

/// `LOG` levels.
pub mod log_level {
    pub const ERROR: u32 = 0;
    pub const WARN: u32 = 1;
    pub const INFO: u32 = 2;
    pub const DEBUG: u32 = 3;
    pub const TRACE: u32 = 4;
}

/// Shortest function name, in bytes.
pub const MIN_NAME_LEN: usize = 1;

/// Frame kinds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    Call = 1,
    Return = 2,
    Error = 3,
    HostCall = 4,
    HostReturn = 5,
    HostError = 6,
    FunctionTable = 7,
    Panic = 8,
    Fault = 9,
    Log = 10,
}

impl FrameKind {
    /// The kind with this number, if the ABI defines one.
    pub const fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Call,
            2 => Self::Return,
            3 => Self::Error,
            4 => Self::HostCall,
            5 => Self::HostReturn,
            6 => Self::HostError,
            7 => Self::FunctionTable,
            8 => Self::Panic,
            9 => Self::Fault,
            10 => Self::Log,
            _ => return None,
        })
    }

    /// The kind's number on the wire.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The ABI's name of the kind (`"CALL"`, `"HOST_RETURN"`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Call => "CALL",
            Self::Return => "RETURN",
            Self::Error => "ERROR",
            Self::HostCall => "HOST_CALL",
            Self::HostReturn => "HOST_RETURN",
            Self::HostError => "HOST_ERROR",
            Self::FunctionTable => "FUNCTION_TABLE",
            Self::Panic => "PANIC",
            Self::Fault => "FAULT",
            Self::Log => "LOG",
        }
    }
}

/// Value type tags.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    Void = 0,
    I32 = 1,
    U32 = 2,
    I64 = 3,
    U64 = 4,
    F32 = 5,
    F64 = 6,
    Bool = 7,
    String = 8,
    Bytes = 9,
}

impl ValueType {
    /// The type with this tag, if the ABI defines one.
    pub const fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0 => Self::Void,
            1 => Self::I32,
            2 => Self::U32,
            3 => Self::I64,
            4 => Self::U64,
            5 => Self::F32,
            6 => Self::F64,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Bytes,
            _ => return None,
        })
    }

    /// The tag byte on the wire.
    pub const fn tag(self) -> u8 {
        self as u8
    }

    /// Lower-case name as used in docs/abi.md (`"void"`, `"i32"`, ..., `"string"`, `"bytes"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Void => "void",
            Self::I32 => "i32",
            Self::U32 => "u32",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::Bool => "bool",
            Self::String => "string",
            Self::Bytes => "bytes",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A value on the wire.
///
/// Equality compares floats by their bit patterns, so NaN payloads and `-0.0` round-trip
/// exactly and `Value` is `Eq`.
#[derive(Clone, Debug)]
pub enum Value {
    Void,
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// The value's type tag.
    pub const fn value_type(&self) -> ValueType {
        match self {
            Self::Void => ValueType::Void,
            Self::I32(_) => ValueType::I32,
            Self::U32(_) => ValueType::U32,
            Self::I64(_) => ValueType::I64,
            Self::U64(_) => ValueType::U64,
            Self::F32(_) => ValueType::F32,
            Self::F64(_) => ValueType::F64,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Bytes(_) => ValueType::Bytes,
        }
    }

    /// Encoded size in bytes, tag included (saturating; lengths over `u32::MAX` cannot be
    /// encoded anyway).
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            Self::Void => 0,
            Self::I32(_) | Self::U32(_) | Self::F32(_) => 4,
            Self::I64(_) | Self::U64(_) | Self::F64(_) => 8,
            Self::Bool(_) => 1,
            Self::String(s) => 4usize.saturating_add(s.len()),
            Self::Bytes(b) => 4usize.saturating_add(b.len()),
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Void, Self::Void) => true,
            (Self::I32(a), Self::I32(b)) => a == b,
            (Self::U32(a), Self::U32(b)) => a == b,
            (Self::I64(a), Self::I64(b)) => a == b,
            (Self::U64(a), Self::U64(b)) => a == b,
            (Self::F32(a), Self::F32(b)) => a.to_bits() == b.to_bits(),
            (Self::F64(a), Self::F64(b)) => a.to_bits() == b.to_bits(),
            (Self::Bool(a), Self::Bool(b)) => a == b,
            (Self::String(a), Self::String(b)) => a == b,
            (Self::Bytes(a), Self::Bytes(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// One entry of a `FUNCTION_TABLE` frame, owned (as decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionDesc {
    pub name: String,
    pub params: Vec<ValueType>,
    pub result: ValueType,
}

impl FunctionDesc {
    /// Borrowed view for encoding.
    pub fn as_sig(&self) -> FunctionSig<'_> {
        FunctionSig {
            name: &self.name,
            params: &self.params,
            result: self.result,
        }
    }
}

/// One entry of a `FUNCTION_TABLE` frame, borrowed (for encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionSig<'a> {
    pub name: &'a str,
    pub params: &'a [ValueType],
    pub result: ValueType,
}

/// The payload of a `FAULT` frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultInfo {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cr2: u64,
    pub rsp: u64,
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Call {
        name: String,
        args: Vec<Value>,
    },
    Return(Value),
    Error {
        code: u32,
        message: String,
    },
    HostCall {
        name: String,
        args: Vec<Value>,
    },
    HostReturn(Value),
    HostError {
        message: String,
    },
    /// The guest's functions and, when it declares them, the host functions it imports
    /// (`None`: the optional imports part is absent, "not declared").
    FunctionTable {
        functions: Vec<FunctionDesc>,
        imports: Option<Vec<FunctionDesc>>,
    },
    Panic {
        message: String,
    },
    Fault(FaultInfo),
    Log {
        level: u32,
        message: String,
    },
}

impl Frame {
    /// The frame's kind.
    pub const fn kind(&self) -> FrameKind {
        match self {
            Self::Call { .. } => FrameKind::Call,
            Self::Return(_) => FrameKind::Return,
            Self::Error { .. } => FrameKind::Error,
            Self::HostCall { .. } => FrameKind::HostCall,
            Self::HostReturn(_) => FrameKind::HostReturn,
            Self::HostError { .. } => FrameKind::HostError,
            Self::FunctionTable { .. } => FrameKind::FunctionTable,
            Self::Panic { .. } => FrameKind::Panic,
            Self::Fault(_) => FrameKind::Fault,
            Self::Log { .. } => FrameKind::Log,
        }
    }

    /// Encodes the frame at the start of `buf`; returns the number of bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            Self::Call { name, args } => encode_call(buf, name, args),
            Self::Return(v) => encode_return(buf, v),
            Self::Error { code, message } => encode_error(buf, *code, message),
            Self::HostCall { name, args } => encode_host_call(buf, name, args),
            Self::HostReturn(v) => encode_host_return(buf, v),
            Self::HostError { message } => encode_host_error(buf, message),
            Self::FunctionTable { functions, imports } => encode_function_table_with_imports(
                buf,
                functions.iter().map(FunctionDesc::as_sig),
                imports.as_ref().map(|i| i.iter().map(FunctionDesc::as_sig)),
            ),
            Self::Panic { message } => encode_panic(buf, message),
            Self::Fault(info) => encode_fault(buf, info),
            Self::Log { level, message } => encode_log(buf, *level, message),
        }
    }

    /// Encoded size in bytes, header included.
    pub fn encoded_len(&self) -> usize {
        let str_len = |s: &str| 4usize.saturating_add(s.len());
        let values = |v: &[Value]| {
            v.iter()
                .fold(4usize, |acc, v| acc.saturating_add(v.encoded_len()))
        };
        let payload = match self {
            Self::Call { name, args } | Self::HostCall { name, args } => {
                str_len(name).saturating_add(values(args))
            }
            Self::Return(v) | Self::HostReturn(v) => v.encoded_len(),
            Self::Error { message, .. } | Self::Log { message, .. } => {
                4usize.saturating_add(str_len(message))
            }
            Self::HostError { message } | Self::Panic { message } => str_len(message),
            Self::FunctionTable { functions, imports } => {
                let table = |entries: &[FunctionDesc]| {
                    entries.iter().fold(4usize, |acc, e| {
                        acc.saturating_add(str_len(&e.name))
                            .saturating_add(2 + e.params.len())
                    })
                };
                table(functions).saturating_add(imports.as_deref().map_or(0, table))
            }
            Self::Fault(_) => 40,
        };
        HEADER_LEN.saturating_add(payload)
    }

    /// Encodes the frame into a new vector of exactly [`Frame::encoded_len`] bytes.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut buf = alloc::vec![0u8; self.encoded_len()];
        let n = self.encode(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a frame could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than 8 bytes for the header.
    HeaderTruncated { available: usize },
    /// `payload_len` runs past the end of the buffer.
    PayloadBeyondBuffer { payload_len: u32, available: usize },
    /// The header's kind is not one the ABI defines.
    UnknownKind(u32),
    /// The payload ends before a field (or a string/bytes length runs past it).
    UnexpectedEnd { needed: u64, remaining: usize },
    /// The payload has bytes left over after the last field.
    TrailingBytes { count: usize },
    /// A value tag the ABI does not define.
    UnknownTag(u8),
    /// A `str` that is not valid UTF-8.
    InvalidUtf8,
    /// A bool byte other than 0 or 1.
    InvalidBool(u8),
    /// An argc / count that cannot fit the remaining bytes.
    CountTooLarge { count: u32, remaining: usize },
    /// A function table with more than [`MAX_FUNCTIONS`] entries.
    TooManyFunctions(u32),
    /// A function table entry with more than [`MAX_PARAMS`] parameters.
    TooManyParams(u8),
    /// A function table name that is empty or longer than [`MAX_NAME_LEN`] bytes.
    InvalidName { len: usize },
    /// A function table that names a function twice.
    DuplicateName,
    /// A `LOG` level above [`MAX_LOG_LEVEL`].
    InvalidLogLevel(u32),
    /// A `CALL` / `HOST_CALL` with more than [`MAX_PARAMS`] arguments.
    TooManyArgs(u32),
    /// A `void` argument in a `CALL` / `HOST_CALL` (only a result may be `void`).
    VoidArgument,
    /// A `void` parameter type in a function table entry.
    VoidParameter,
    /// A well-formed frame of another kind than the one expected.
    UnexpectedKind { found: FrameKind },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::HeaderTruncated { available } => {
                write!(f, "frame header needs 8 bytes, buffer has {available}")
            }
            Self::PayloadBeyondBuffer {
                payload_len,
                available,
            } => write!(
                f,
                "payload_len {payload_len} runs past the buffer ({available} bytes after the header)"
            ),
            Self::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            Self::UnexpectedEnd { needed, remaining } => write!(
                f,
                "payload ends early: field needs {needed} bytes, {remaining} left"
            ),
            Self::TrailingBytes { count } => write!(f, "{count} bytes left over after the payload"),
            Self::UnknownTag(t) => write!(f, "unknown value tag {t}"),
            Self::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            Self::InvalidBool(b) => write!(f, "bool byte {b} is neither 0 nor 1"),
            Self::CountTooLarge { count, remaining } => write!(
                f,
                "count {count} cannot fit the remaining {remaining} bytes"
            ),
            Self::TooManyFunctions(n) => {
                write!(
                    f,
                    "function table has {n} entries (at most {MAX_FUNCTIONS})"
                )
            }
            Self::TooManyParams(n) => {
                write!(f, "function has {n} parameters (at most {MAX_PARAMS})")
            }
            Self::InvalidName { len } => {
                write!(
                    f,
                    "function name of {len} bytes (must be 1..={MAX_NAME_LEN})"
                )
            }
            Self::DuplicateName => f.write_str("function table names a function twice"),
            Self::InvalidLogLevel(l) => write!(f, "log level {l} (at most {MAX_LOG_LEVEL})"),
            Self::TooManyArgs(n) => write!(f, "{n} arguments (at most {MAX_PARAMS})"),
            Self::VoidArgument => f.write_str("a void argument (only a result may be void)"),
            Self::VoidParameter => f.write_str("a void parameter type (only a result may be void)"),
            Self::UnexpectedKind { found } => write!(f, "unexpected {} frame", found.name()),
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer ends before the frame does.
    BufferTooSmall { capacity: usize },
    /// A string, byte string or count longer than `u32::MAX`.
    TooLong,
    /// A function table or `LOG` frame outside the ABI's limits.
    LimitExceeded(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { capacity } => {
                write!(f, "frame does not fit the {capacity}-byte buffer")
            }
            Self::TooLong => f.write_str("length does not fit in u32"),
            Self::LimitExceeded(what) => write!(f, "ABI limit exceeded: {what}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// A bounds-checked cursor over a payload.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub const fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bytes not read yet.
    pub const fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8], DecodeError> {
        let remaining = self.remaining();
        let err = DecodeError::UnexpectedEnd {
            needed: n,
            remaining,
        };
        let n = usize::try_from(n).map_err(|_| err)?;
        let rest = self.data.get(self.pos..).ok_or(err)?;
        let out = rest.get(..n).ok_or(err)?;
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N as u64)?;
        <[u8; N]>::try_from(bytes).map_err(|_| DecodeError::UnexpectedEnd {
            needed: N as u64,
            remaining: 0,
        })
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `bytes` field, borrowed.
    pub fn blob(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        self.take(u64::from(len))
    }

    /// A `str` field, borrowed.
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.blob()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A `value` (tag + payload).
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        let tag = self.u8()?;
        let ty = ValueType::from_tag(tag).ok_or(DecodeError::UnknownTag(tag))?;
        Ok(match ty {
            ValueType::Void => Value::Void,
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array()?)),
            ValueType::U32 => Value::U32(self.u32()?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array()?)),
            ValueType::U64 => Value::U64(self.u64()?),
            ValueType::F32 => Value::F32(f32::from_bits(self.u32()?)),
            ValueType::F64 => Value::F64(f64::from_bits(self.u64()?)),
            ValueType::Bool => match self.u8()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(DecodeError::InvalidBool(b)),
            },
            ValueType::String => Value::String(String::from(self.str()?)),
            ValueType::Bytes => Value::Bytes(Vec::from(self.blob()?)),
        })
    }

    /// A count whose items take at least `min_item` bytes each; rejected when they cannot fit.
    fn count(&mut self, min_item: u64) -> Result<usize, DecodeError> {
        let count = self.u32()?;
        let remaining = self.remaining();
        if u64::from(count) * min_item > remaining as u64 {
            return Err(DecodeError::CountTooLarge { count, remaining });
        }
        // Cannot fail: count <= remaining <= usize::MAX.
        usize::try_from(count).map_err(|_| DecodeError::CountTooLarge { count, remaining })
    }

    /// `u32 argc, argc x value`: at most [`MAX_PARAMS`] values, none of them `void`. The cap is
    /// checked before anything is allocated, so a hostile argc costs nothing.
    pub fn values(&mut self) -> Result<Vec<Value>, DecodeError> {
        let argc = self.count(1)?;
        if argc > MAX_PARAMS {
            return Err(DecodeError::TooManyArgs(argc as u32));
        }
        let mut out = Vec::with_capacity(argc);
        for _ in 0..argc {
            match self.value()? {
                Value::Void => return Err(DecodeError::VoidArgument),
                v => out.push(v),
            }
        }
        Ok(out)
    }

    /// A function name (`str`) of 1..=[`MAX_NAME_LEN`] bytes, borrowed.
    pub fn name(&mut self) -> Result<&'a str, DecodeError> {
        let name = self.str()?;
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(DecodeError::InvalidName { len: name.len() });
        }
        Ok(name)
    }

    /// Fails unless every byte has been read.
    pub const fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

/// Checks the header of the frame at the start of `buf` and returns its kind and payload.
///
/// Bytes after the frame (the rest of a shared buffer) are ignored.
pub fn split_frame(buf: &[u8]) -> Result<(FrameKind, &[u8]), DecodeError> {
    let mut header = Reader::new(buf);
    let (kind, payload_len) = match (header.u32(), header.u32()) {
        (Ok(k), Ok(l)) => (k, l),
        _ => {
            return Err(DecodeError::HeaderTruncated {
                available: buf.len(),
            });
        }
    };
    let available = header.remaining();
    let payload =
        header
            .take(u64::from(payload_len))
            .map_err(|_| DecodeError::PayloadBeyondBuffer {
                payload_len,
                available,
            })?;
    let kind = FrameKind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))?;
    Ok((kind, payload))
}

/// Decodes the frame at the start of `buf` (bytes after it are ignored).
pub fn decode_frame(buf: &[u8]) -> Result<Frame, DecodeError> {
    let (kind, payload) = split_frame(buf)?;
    let mut r = Reader::new(payload);
    let frame = match kind {
        FrameKind::Call => Frame::Call {
            name: String::from(r.name()?),
            args: r.values()?,
        },
        FrameKind::HostCall => Frame::HostCall {
            name: String::from(r.name()?),
            args: r.values()?,
        },
        FrameKind::Return => Frame::Return(r.value()?),
        FrameKind::HostReturn => Frame::HostReturn(r.value()?),
        FrameKind::Error => Frame::Error {
            code: r.u32()?,
            message: String::from(r.str()?),
        },
        FrameKind::HostError => Frame::HostError {
            message: String::from(r.str()?),
        },
        FrameKind::Panic => Frame::Panic {
            message: String::from(r.str()?),
        },
        FrameKind::FunctionTable => {
            let functions = decode_table(&mut r)?;
            // The optional imports part: present when bytes follow the functions.
            let imports = if r.remaining() > 0 {
                Some(decode_table(&mut r)?)
            } else {
                None
            };
            Frame::FunctionTable { functions, imports }
        }
        FrameKind::Fault => Frame::Fault(FaultInfo {
            vector: r.u64()?,
            error_code: r.u64()?,
            rip: r.u64()?,
            cr2: r.u64()?,
            rsp: r.u64()?,
        }),
        FrameKind::Log => {
            let level = r.u32()?;
            if level > MAX_LOG_LEVEL {
                return Err(DecodeError::InvalidLogLevel(level));
            }
            Frame::Log {
                level,
                message: String::from(r.str()?),
            }
        }
    };
    r.finish()?;
    Ok(frame)
}

fn decode_table(r: &mut Reader<'_>) -> Result<Vec<FunctionDesc>, DecodeError> {
    // Smallest entry: u32 name length, 1 name byte, u8 param count, u8 result tag.
    let count = r.count(7)?;
    if count > MAX_FUNCTIONS {
        return Err(DecodeError::TooManyFunctions(count as u32));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.name()?;
        let n = r.u8()?;
        if usize::from(n) > MAX_PARAMS {
            return Err(DecodeError::TooManyParams(n));
        }
        let params = r
            .take(u64::from(n))?
            .iter()
            .map(|&t| match ValueType::from_tag(t) {
                Some(ValueType::Void) => Err(DecodeError::VoidParameter),
                Some(ty) => Ok(ty),
                None => Err(DecodeError::UnknownTag(t)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let t = r.u8()?;
        let result = ValueType::from_tag(t).ok_or(DecodeError::UnknownTag(t))?;
        entries.push(FunctionDesc {
            name: String::from(name),
            params,
            result,
        });
    }
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(DecodeError::DuplicateName);
    }
    Ok(entries)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// A bounds-checked cursor that writes into a buffer.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes written so far.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left in the buffer.
    pub const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn full(&self) -> EncodeError {
        EncodeError::BufferTooSmall {
            capacity: self.buf.len(),
        }
    }

    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let full = self.full();
        let end = self.pos.checked_add(bytes.len()).ok_or(full)?;
        let dst = self.buf.get_mut(self.pos..end).ok_or(full)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub fn put_u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put_bytes(&[v])
    }

    pub fn put_u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put_bytes(&v.to_le_bytes())
    }

    pub fn put_u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.put_bytes(&v.to_le_bytes())
    }

    /// A `u32` length or count.
    pub fn put_len(&mut self, len: usize) -> Result<(), EncodeError> {
        self.put_u32(u32::try_from(len).map_err(|_| EncodeError::TooLong)?)
    }

    /// A `bytes` field.
    pub fn put_blob(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.put_len(bytes.len())?;
        self.put_bytes(bytes)
    }

    /// A `str` field.
    pub fn put_str(&mut self, s: &str) -> Result<(), EncodeError> {
        self.put_blob(s.as_bytes())
    }

    /// A `value` (tag + payload).
    pub fn put_value(&mut self, v: &Value) -> Result<(), EncodeError> {
        self.put_u8(v.value_type().tag())?;
        match v {
            Value::Void => Ok(()),
            Value::I32(x) => self.put_bytes(&x.to_le_bytes()),
            Value::U32(x) => self.put_u32(*x),
            Value::I64(x) => self.put_bytes(&x.to_le_bytes()),
            Value::U64(x) => self.put_u64(*x),
            Value::F32(x) => self.put_u32(x.to_bits()),
            Value::F64(x) => self.put_u64(x.to_bits()),
            Value::Bool(x) => self.put_u8(u8::from(*x)),
            Value::String(s) => self.put_str(s),
            Value::Bytes(b) => self.put_blob(b),
        }
    }

    /// Overwrites a `u32` already written at `at`.
    pub fn patch_u32(&mut self, at: usize, v: u32) -> Result<(), EncodeError> {
        let full = self.full();
        let end = at.checked_add(4).filter(|&e| e <= self.pos).ok_or(full)?;
        let dst = self.buf.get_mut(at..end).ok_or(full)?;
        dst.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }
}

/// Writes a frame of `kind` whose payload `payload` writes; fills in `payload_len`.
/// Returns the frame's total size.
pub fn encode_with(
    buf: &mut [u8],
    kind: FrameKind,
    payload: impl FnOnce(&mut Writer<'_>) -> Result<(), EncodeError>,
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    w.put_u32(kind.as_u32())?;
    w.put_u32(0)?;
    payload(&mut w)?;
    let len = u32::try_from(w.position() - HEADER_LEN).map_err(|_| EncodeError::TooLong)?;
    w.patch_u32(4, len)?;
    Ok(w.position())
}

fn encode_invocation(
    buf: &mut [u8],
    kind: FrameKind,
    name: &str,
    args: &[Value],
) -> Result<usize, EncodeError> {
    // The decoder's limits, so a frame this side writes is one the other side accepts.
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(EncodeError::LimitExceeded(
            "function name not 1..=255 bytes",
        ));
    }
    if args.len() > MAX_PARAMS {
        return Err(EncodeError::LimitExceeded("more than 32 arguments"));
    }
    if args.iter().any(|a| matches!(a, Value::Void)) {
        return Err(EncodeError::LimitExceeded("a void argument"));
    }
    encode_with(buf, kind, |w| {
        w.put_str(name)?;
        w.put_len(args.len())?;
        args.iter().try_for_each(|a| w.put_value(a))
    })
}

/// `CALL`: `str name, u32 argc, argc x value`. Enforces the ABI's limits (a 1-255 byte name, at
/// most 32 arguments, none `void`), as the decoder does.
pub fn encode_call(buf: &mut [u8], name: &str, args: &[Value]) -> Result<usize, EncodeError> {
    encode_invocation(buf, FrameKind::Call, name, args)
}

/// `HOST_CALL`: `str name, u32 argc, argc x value`. The same limits as [`encode_call`].
pub fn encode_host_call(buf: &mut [u8], name: &str, args: &[Value]) -> Result<usize, EncodeError> {
    encode_invocation(buf, FrameKind::HostCall, name, args)
}

/// `RETURN`: `value`.
pub fn encode_return(buf: &mut [u8], value: &Value) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::Return, |w| w.put_value(value))
}

/// `HOST_RETURN`: `value`.
pub fn encode_host_return(buf: &mut [u8], value: &Value) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::HostReturn, |w| w.put_value(value))
}

/// `ERROR`: `u32 code, str message`.
pub fn encode_error(buf: &mut [u8], code: u32, message: &str) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::Error, |w| {
        w.put_u32(code)?;
        w.put_str(message)
    })
}

/// `HOST_ERROR`: `str message`.
pub fn encode_host_error(buf: &mut [u8], message: &str) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::HostError, |w| w.put_str(message))
}

/// `PANIC`: `str message`.
pub fn encode_panic(buf: &mut [u8], message: &str) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::Panic, |w| w.put_str(message))
}

/// `LOG`: `u32 level, str message`.
pub fn encode_log(buf: &mut [u8], level: u32, message: &str) -> Result<usize, EncodeError> {
    if level > MAX_LOG_LEVEL {
        return Err(EncodeError::LimitExceeded("log level above 4"));
    }
    encode_with(buf, FrameKind::Log, |w| {
        w.put_u32(level)?;
        w.put_str(message)
    })
}

/// `FAULT`: five `u64`s.
pub fn encode_fault(buf: &mut [u8], info: &FaultInfo) -> Result<usize, EncodeError> {
    encode_with(buf, FrameKind::Fault, |w| {
        [info.vector, info.error_code, info.rip, info.cr2, info.rsp]
            .into_iter()
            .try_for_each(|v| w.put_u64(v))
    })
}

/// `FUNCTION_TABLE`: `u32 count, count x (str name, u8 param count, tags, u8 result tag)`, with
/// no imports part (a guest that declares no host functions). Enforces the ABI's limits (at most
/// 4096 entries, names 1-255 bytes and unique, at most 32 parameters), as the decoder does.
pub fn encode_function_table<'s, I>(buf: &mut [u8], entries: I) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = FunctionSig<'s>>,
    I::IntoIter: ExactSizeIterator,
{
    encode_function_table_with_imports(buf, entries, None::<core::iter::Empty<FunctionSig<'s>>>)
}

/// `FUNCTION_TABLE` with the optional imports part: the functions' table, then (when `imports`
/// is `Some`, even empty) the declared host functions as a second table of the same encoding.
/// Each table is held to the same limits.
pub fn encode_function_table_with_imports<'s, 't, I, J>(
    buf: &mut [u8],
    entries: I,
    imports: Option<J>,
) -> Result<usize, EncodeError>
where
    I: IntoIterator<Item = FunctionSig<'s>>,
    I::IntoIter: ExactSizeIterator,
    J: IntoIterator<Item = FunctionSig<'t>>,
    J::IntoIter: ExactSizeIterator,
{
    encode_with(buf, FrameKind::FunctionTable, |w| {
        put_table(w, entries.into_iter())?;
        match imports {
            Some(imports) => put_table(w, imports.into_iter()),
            None => Ok(()),
        }
    })
}

/// One table of a `FUNCTION_TABLE` frame (functions or imports), checked against the limits.
fn put_table<'s>(
    w: &mut Writer<'_>,
    entries: impl ExactSizeIterator<Item = FunctionSig<'s>>,
) -> Result<(), EncodeError> {
    if entries.len() > MAX_FUNCTIONS {
        return Err(EncodeError::LimitExceeded("more than 4096 functions"));
    }
    // The names, for the duplicate check: on the stack for a table of up to `SMALL_TABLE`
    // entries, so that a guest's start (which sends its table) allocates nothing and touches no
    // heap page (issue 19: each page a new VM touches first is a shadow-paging fault on kvm_pvm).
    const SMALL_TABLE: usize = 64;
    let mut small = [""; SMALL_TABLE];
    let mut large: Vec<&str> = Vec::new();
    let count = entries.len();
    if count > SMALL_TABLE {
        large.reserve_exact(count);
    }
    w.put_len(count)?;
    for (i, e) in entries.enumerate() {
        match small.get_mut(i) {
            Some(slot) if count <= SMALL_TABLE => *slot = e.name,
            _ => large.push(e.name),
        }
        if e.name.is_empty() || e.name.len() > MAX_NAME_LEN {
            return Err(EncodeError::LimitExceeded(
                "function name not 1..=255 bytes",
            ));
        }
        if e.params.len() > MAX_PARAMS {
            return Err(EncodeError::LimitExceeded("more than 32 parameters"));
        }
        if e.params.contains(&ValueType::Void) {
            return Err(EncodeError::LimitExceeded("a void parameter"));
        }
        w.put_str(e.name)?;
        w.put_u8(e.params.len() as u8)?;
        e.params.iter().try_for_each(|p| w.put_u8(p.tag()))?;
        w.put_u8(e.result.tag())?;
    }
    let names = if count <= SMALL_TABLE {
        &mut small[..count]
    } else {
        &mut large[..]
    };
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(EncodeError::LimitExceeded("duplicate function name"));
    }
    Ok(())
}
