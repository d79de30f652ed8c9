//! The module's stdout/stderr output held in the guest until the host must act (issue 22 item 3):
//! one `wasi_io` `Output` request carries many `fd_write`s of both streams, in the order the
//! module made them. The crossing policy (when to flush) is the embedder's (`hl-wasm-service`'s
//! `HlHost`: before any other crossing, when full, at the end of every call); this type is the
//! buffer and its encoding, tested natively.
//!
//! Encoding (the request of `Op::Output`): records of `u32 fd (1 or 2), u32 len, len bytes`;
//! consecutive writes to the same fd share one record.
//!
//! Output that waits when the module makes a request to the host rides in front of it
//! ([`carry`], `Op::OutputThen`): the host delivers it, then serves the request, in one crossing
//! instead of two (SQLite with a database file: 15 fewer exits per run of the bench's workload).

use alloc::vec::Vec;

use hl_wire::Reader;

use super::abi::errno::IO;
use super::host::{Op, Request, parse_reply};

/// Bytes of one record's header (`u32 fd`, `u32 len`).
pub const RECORD_HEADER: usize = 8;

/// Buffered stdout/stderr output, encoded as the `Output` request it will be sent as.
#[derive(Default)]
pub struct Output {
    /// The encoded records.
    buf: Vec<u8>,
    /// Where the last record's `u32 len` is, and its fd (`None`: no record yet).
    last: Option<(usize, u32)>,
}

impl Output {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            buf: Vec::new(),
            last: None,
        }
    }

    /// Encoded length: what [`take`](Self::take) returns.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Encoded length after [`push`](Self::push)ing `n` bytes to `fd`.
    pub fn len_after(&self, fd: u32, n: usize) -> usize {
        let header = match self.last {
            Some((_, last_fd)) if last_fd == fd => 0,
            _ => RECORD_HEADER,
        };
        self.buf.len() + header + n
    }

    /// Appends `data` written to `fd`, to the last record when it is for the same fd. The
    /// caller bounds `data` (at most `MAX_TRANSFER`, so every length fits u32).
    pub fn push(&mut self, fd: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        match self.last {
            Some((at, last_fd)) if last_fd == fd => {
                let field: [u8; 4] = self.buf[at..at + 4].try_into().unwrap_or([0; 4]);
                let n = u32::from_le_bytes(field) as usize + data.len();
                self.buf[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
            }
            _ => {
                self.buf.extend_from_slice(&fd.to_le_bytes());
                self.last = Some((self.buf.len(), fd));
                self.buf
                    .extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// The encoded records, leaving the buffer empty.
    pub fn take(&mut self) -> Vec<u8> {
        self.last = None;
        core::mem::take(&mut self.buf)
    }

    /// Drops what waits (the output of a call that never ended: an interrupt).
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.last = None;
    }
}

/// The `OutputThen` request: `records` (an `Output` request), then `op` with `request`.
pub fn carry(records: &[u8], op: Op, request: &[u8]) -> Vec<u8> {
    let mut req = Request::default().blob(records).u32(op as u32);
    req.0.extend_from_slice(request);
    req.0
}

/// Reads an `OutputThen` reply's payload: whether a sink refused the output, and the carried
/// request's outcome (its payload or errno). A payload that is not `u8 0|1` + a reply is `EIO`
/// for the request, the output counted as delivered.
pub fn carried_reply(payload: &[u8]) -> (bool, Result<Vec<u8>, i32>) {
    let mut r = Reader::new(payload);
    match r.u8() {
        Ok(refused @ (0 | 1)) => (refused == 1, parse_reply(&payload[1..])),
        _ => (false, Err(IO)),
    }
}
