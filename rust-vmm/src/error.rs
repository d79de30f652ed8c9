//! Errors of the VM primitives and their status codes at the C ABI.

use std::fmt;

/// Status codes returned by every `hl_*` function (negative = error). Mirrored in `ffi/lib.ts`.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    InvalidHandle = -1,
    InvalidArgument = -2,
    NoHypervisor = -3,
    Permission = -4,
    ApiVersion = -5,
    Hypervisor = -6,
    Os = -7,
    Panic = -8,
    State = -9,
}

/// An error with its status code and a message that names the cause and, where there is one,
/// the fix.
#[derive(Debug, Clone)]
pub struct Error {
    pub code: Code,
    pub message: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn state(message: impl Into<String>) -> Self {
        Self::new(Code::State, message)
    }

    pub fn invalid_handle(handle: u32) -> Self {
        Self::new(
            Code::InvalidHandle,
            format!("no VM with handle {handle}: it was destroyed or never created"),
        )
    }

    /// A failed hypervisor call, with the errno it returned.
    pub fn hypervisor(what: &str, errno: i32) -> Self {
        Self::new(
            Code::Hypervisor,
            format!(
                "{what} failed: {}",
                std::io::Error::from_raw_os_error(errno)
            ),
        )
    }

    /// A failed OS call (memfd, mmap, threads), with the errno it returned.
    pub fn os(what: &str, err: std::io::Error) -> Self {
        Self::new(Code::Os, format!("{what} failed: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;
