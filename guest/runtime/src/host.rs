//! Calls into the host (HOST_CALL) and logging (LOG).

use alloc::format;
use alloc::string::{String, ToString};
use core::fmt;

use hl_wire::{Frame, FrameKind, Value, ValueType, decode_frame, encode_host_call};
use hl_wire::{encode_with, port};

use crate::arch::outl;
use crate::function::FromValue;
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
