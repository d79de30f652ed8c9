//! The crossing to the host's WASI layer (`src/wasm/wasi.ts`, `src/wasm/wasi_fs.ts`):
//! [`HlHost`] implements [`WasiHost`] with the guest ABI's host calls `wasi_write`, `wasi_clock`
//! and `wasi_io(op, request) -> reply`. A reply is `u32 errno`, then (when 0) the op's payload;
//! the encodings are listed in docs/wasm.md ("Wire encodings").

use alloc::vec::Vec;

use hl_guest::wire::Reader;
use hl_guest::{Value, call_host};

use super::WasiHost;
use super::abi::MAX_TRANSFER;
use super::abi::errno::IO;

/// The requests of `wasi_io`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Op {
    Read = 1,
    Pread = 2,
    Write = 3,
    Pwrite = 4,
    Seek = 5,
    Fdstat = 6,
    SetFlags = 7,
    Filestat = 8,
    SetSize = 9,
    SetTimes = 10,
    Sync = 11,
    Advise = 12,
    Close = 13,
    Readdir = 14,
    Open = 15,
    PathFilestat = 16,
    PathSetTimes = 17,
    Mkdir = 18,
    Unlink = 19,
    Rmdir = 20,
    Rename = 21,
    Readlink = 22,
}

/// A request under construction (little-endian fields, `blob` = u32 length + bytes).
#[derive(Default)]
pub struct Request(pub Vec<u8>);

impl Request {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Callers bound `b` (paths by `MAX_PATH`, data by `MAX_TRANSFER`), so its length fits u32.
    pub fn blob(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
        self
    }
}

/// The guest ABI's host calls.
pub struct HlHost;

impl WasiHost for HlHost {
    fn write_stdio(&mut self, fd: u32, data: Vec<u8>) -> bool {
        call_host("wasi_write", &[Value::U32(fd), Value::Bytes(data)]).is_ok()
    }

    fn clock(&mut self, id: u32) -> Option<u64> {
        match call_host("wasi_clock", &[Value::U32(id)]) {
            Ok(Value::U64(ns)) => Some(ns),
            _ => None,
        }
    }

    fn io(&mut self, op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
        let reply = match call_host("wasi_io", &[Value::U32(op as u32), Value::Bytes(request)]) {
            Ok(Value::Bytes(b)) => b,
            // A host that failed or answered another type: the operation failed.
            _ => return Err(IO),
        };
        let mut r = Reader::new(&reply);
        let errno = r.u32().map_err(|_| IO)?;
        if errno != 0 {
            // Errno values are small; anything else from the host is an I/O error.
            return Err(i32::try_from(errno).ok().filter(|&e| e <= 76).unwrap_or(IO));
        }
        Ok(reply[4..].to_vec())
    }

    /// [`MAX_TRANSFER`], or less when a buffer is smaller: the request's or the reply's data
    /// plus 4 KiB for the frame and the other fields must fit the buffer it crosses.
    fn max_transfer(&self) -> u32 {
        let (input, output) = hl_guest::buffer_sizes();
        let room = input.min(output).saturating_sub(4096);
        u32::try_from(room)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_TRANSFER)
    }
}
