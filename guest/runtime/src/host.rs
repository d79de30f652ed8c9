//! Calls into the host (HOST_CALL) and logging (LOG).

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use hl_wire::{Frame, FrameKind, Value, ValueType, decode_frame, encode_host_call};
use hl_wire::{encode_with, port};

use crate::arch::outl;
use crate::function::{FromValue, same_bytes};
use crate::peb::{with_input, with_output};

/// Why a host call did not produce a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostError {
    /// The host answered HOST_ERROR with this message.
    Failed(String),
    /// The host answered with something other than a well-formed HOST_RETURN / HOST_ERROR.
    Protocol(String),
    /// The HOST_CALL frame could not be written (too large for the output buffer, or called
    /// before the runtime was initialised). The host was not called.
    Encode(String),
    /// The host returned a value of another type than the caller asked for.
    UnexpectedType {
        expected: ValueType,
        found: ValueType,
    },
}

impl HostError {
    /// The message: the host's own for [`HostError::Failed`], a description otherwise.
    pub fn message(&self) -> String {
        match self {
            Self::Failed(m) => m.clone(),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(m) => f.write_str(m),
            Self::Protocol(m) => write!(f, "host protocol error: {m}"),
            Self::Encode(m) => write!(f, "cannot send host call: {m}"),
            Self::UnexpectedType { expected, found } => {
                write!(f, "host function returned {found}, expected {expected}")
            }
        }
    }
}

/// Calls the host function `name` with `args` and returns its result.
///
/// Writes a HOST_CALL frame, signals `HOST_CALL`, then decodes the host's HOST_RETURN or
/// HOST_ERROR from the input buffer (fully validated; anything else is
/// [`HostError::Protocol`]). Call it from guest functions only (during a `CALL`).
pub fn call_host(name: &str, args: &[Value]) -> Result<Value, HostError> {
    match with_output(|out| encode_host_call(out, name, args)) {
        Some(Ok(_)) => {}
        Some(Err(e)) => return Err(HostError::Encode(e.to_string())),
        None => return Err(HostError::Encode("runtime not initialised".into())),
    }
    outl(port::HOST_CALL, 0);
    match with_input(decode_frame) {
        Some(Ok(Frame::HostReturn(v))) => Ok(v),
        Some(Ok(Frame::HostError { message })) => Err(HostError::Failed(message)),
        Some(Ok(other)) => Err(HostError::Protocol(format!(
            "expected HOST_RETURN or HOST_ERROR, got {}",
            other.kind().name()
        ))),
        Some(Err(e)) => Err(HostError::Protocol(format!("malformed host reply: {e}"))),
        None => Err(HostError::Protocol("runtime not initialised".into())),
    }
}

/// [`call_host`] with the result converted to `R` (`()` for void); another result type is
/// [`HostError::UnexpectedType`].
pub fn call_host_as<R: FromValue>(name: &str, args: &[Value]) -> Result<R, HostError> {
    let v = call_host(name, args)?;
    let found = v.value_type();
    R::from_value(v).ok_or(HostError::UnexpectedType {
        expected: R::TYPE,
        found,
    })
}

/// The host function that makes an HTTP request for the guest when the sandbox has a `net`
/// allow-list (docs/networking.md): the one name every sandbox kind uses.
pub const HTTP_FETCH: &str = "hl_fetch";

/// Sends one HTTP request through the host's `net` allow-list and returns the host's answer,
/// both JSON text (docs/networking.md, "The wire shape"): the request
/// `{"url": ..., "method"?: ..., "headers"?: [[name, value], ...], "body"?: text,
/// "bodyBase64"?: ...}`, the answer `{"status", "statusText", "url", "headers", "bodyBase64"}`
/// or, when the host refused or the request failed, `{"error": {"name", "message", "rule"?,
/// "reason"?}}`. The host must register [`HTTP_FETCH`] (`hostFunctions: { hl_fetch:
/// net.hostFunction() }`); without it this is a [`HostError`].
pub fn http_fetch(request_json: &str) -> Result<String, HostError> {
    call_host_as::<String>(HTTP_FETCH, &[Value::String(request_json.into())])
}

/// LOG levels.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// Sends a LOG frame (message truncated at a UTF-8 boundary if it does not fit the output
/// buffer) and signals `LOG`; the host passes it to the sandbox's log callback.
pub fn log(level: LogLevel, message: &str) {
    let written = with_output(|out| {
        encode_with(out, FrameKind::Log, |w| {
            w.put_u32(level as u32)?;
            crate::panic::put_str_truncated(w, format_args!("{message}"))
        })
    });
    if let Some(Ok(_)) = written {
        outl(port::LOG, 0);
    }
}

/// One host function the guest declares it imports (built by [`crate::host_functions!`]): sent
/// with the function table, so the host checks at create that it provides `name` with exactly
/// these types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostImport {
    pub name: &'static str,
    pub params: &'static [ValueType],
    pub result: ValueType,
}

/// Compile-time check of a declaration against the ABI's limits (the host's decoder rejects a
/// table outside them): at most 4096 imports, names 1-255 bytes and unique, at most 32
/// parameters, none of them `()`.
pub const fn validate_imports(imports: Option<&[HostImport]>) {
    let Some(imports) = imports else { return };
    assert!(
        imports.len() <= hl_wire::MAX_FUNCTIONS,
        "more than 4096 host functions declared"
    );
    let mut i = 0;
    while i < imports.len() {
        let name = imports[i].name.as_bytes();
        assert!(
            !name.is_empty() && name.len() <= hl_wire::MAX_NAME_LEN,
            "host function names must be 1-255 bytes"
        );
        let params = imports[i].params;
        assert!(
            params.len() <= hl_wire::MAX_PARAMS,
            "a host function with more than 32 parameters"
        );
        let mut p = 0;
        while p < params.len() {
            assert!(
                !matches!(params[p], ValueType::Void),
                "a host function parameter cannot be () (void)"
            );
            p += 1;
        }
        let mut j = 0;
        while j < i {
            assert!(
                !same_bytes(imports[j].name.as_bytes(), name),
                "host function declared twice"
            );
            j += 1;
        }
        i += 1;
    }
}

/// The "not declared" default that [`crate::guest_functions!`] glob-imports: a
/// [`crate::host_functions!`] in the same module defines the name itself, which shadows it.
pub mod undeclared {
    /// No declaration: the FUNCTION_TABLE frame has no imports part (the host checks nothing).
    pub const HL_GUEST_DECLARED_HOST_FUNCTIONS: Option<&[super::HostImport]> = None;
}
