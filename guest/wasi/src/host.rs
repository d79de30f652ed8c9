//! The requests of the host's WASI layer (`src/wasm/wasi.ts`, `src/wasm/wasi_fs.ts`), sent
//! through the host call `wasi_io(op, request) -> reply`. A reply is `u32 errno`, then (when 0)
//! the op's payload; the encodings are listed in docs/wasm.md ("Wire encodings").

use alloc::vec::Vec;

use hl_wire::Reader;

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
    /// Gives back the last `n` bytes of the previous stdin `Read` reply (the guest's unread
    /// read-ahead) at the end of a call: `u32 fd (0), u32 n`.
    Unread = 23,
    /// The module's buffered stdout/stderr output (`output::Output`): records of `u32 fd (1 or
    /// 2), u32 len, bytes`, delivered in order; the reply has no payload.
    Output = 24,
    /// `u32 fd, u64 offset, u32 op`, then op's request: seek `fd` to `offset` (`SEEK_SET`), then
    /// serve `op` (any op but this one); the reply is op's, or the seek's errno.
    SeekThen = 25,
    /// `u32 n`, n × (`u32 op`, `blob request`), `u32 op` (0: none), that op's request: the n
    /// requests the guest answered itself (writes, seeks, closes: `batch.rs`), in order, then the
    /// last one. The reply's payload is `u32 served`, then the last request's reply when all n
    /// were served, else the errno of the one that failed (the rest did not run).
    Batch = 26,
    /// `u32 max`: stdin's next bytes (at most `max`), as `Read` on fd 0, after a `u8` that is 1
    /// when the host knows nothing more can come (bytes read to their end, a stream that ended).
    ReadStdin = 27,
    /// `blob output, u32 op`, then op's request: the buffered stdout/stderr output (an `Output`
    /// request's records), delivered first, then `op` (not `Output`, `SeekThen`, `Batch` or this
    /// one), served whether or not a sink refused the output. The reply's payload is `u8 refused`
    /// (1: a sink threw, as an `Output` answered `EIO`), then op's whole reply (`output::carry`).
    OutputThen = 28,
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

/// Reads a `wasi_io` reply: `u32 errno`, then (errno 0) the payload. A malformed reply or an
/// errno outside WASI's range is `EIO`.
pub fn parse_reply(reply: &[u8]) -> Result<Vec<u8>, i32> {
    let mut r = Reader::new(reply);
    let errno = r.u32().map_err(|_| IO)?;
    if errno != 0 {
        return Err(i32::try_from(errno).ok().filter(|&e| e <= 76).unwrap_or(IO));
    }
    Ok(reply[4..].to_vec())
}
