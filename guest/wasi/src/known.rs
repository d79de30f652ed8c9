//! `fd_seek(fd, offset, SEEK_SET)` without a crossing of its own (issue 22 item 3, "file writes
//! batched where semantics allow"): SQLite's VFS on wasi-libc positions every read and write with a
//! seek first, so half its file calls were seeks. Once a seek on an fd has succeeded at the host,
//! the fd is a seekable file until it is closed (fds never change what they refer to: `fd_renumber`
//! is `ENOSYS`), and an absolute seek to a non-negative offset on it cannot fail; such a seek is
//! answered here and travels with the next request to the host (`Op::SeekThen`), or alone at the
//! end of the call, so between calls the host's file position is always the module's.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use super::WasiHost;
use super::host::{Op, Request};

/// Largest offset a seek is deferred for: far below any file system's limit (ext4: 16 TiB), so
/// the host's seek to it cannot fail with `EINVAL` where the module was told it succeeded.
pub const MAX_DEFERRED_OFFSET: u64 = 1 << 40;

/// The seek state of the module's files.
#[derive(Default)]
pub struct Seeks {
    /// Fds whose last seek at the host succeeded (and which are not closed since).
    seekable: BTreeSet<u32>,
    /// The absolute seek answered here and not yet sent: `(fd, offset)`.
    pub(crate) pending: Option<(u32, u64)>,
}

impl Seeks {
    /// Whether `fd_seek(fd, offset, SEEK_SET)` may be answered here.
    pub fn can_defer(&self, fd: u32, offset: u64) -> bool {
        offset <= MAX_DEFERRED_OFFSET && self.seekable.contains(&fd)
    }

    /// Records a seek on `fd` that the host answered: success makes `fd` seekable.
    pub fn seen(&mut self, fd: u32, ok: bool) {
        if ok {
            self.seekable.insert(fd);
        } else {
            self.seekable.remove(&fd);
        }
    }

    /// `fd` was closed (or its close was asked for): it is no longer known to be seekable.
    pub fn closed(&mut self, fd: u32) {
        self.seekable.remove(&fd);
    }

    /// Takes the pending seek, if any.
    pub fn take(&mut self) -> Option<(u32, u64)> {
        self.pending.take()
    }
}

/// `Seek(fd, offset, SEEK_SET)` alone.
pub fn seek_request(fd: u32, offset: u64) -> Vec<u8> {
    Request::default().u32(fd).u64(offset).u8(0).0
}

/// A [`WasiHost`] that sends a pending seek with the next request to the host.
pub struct WithPending<'a> {
    pub host: &'a mut dyn WasiHost,
    pub pending: Option<(u32, u64)>,
}

impl WasiHost for WithPending<'_> {
    fn write_stdio(&mut self, fd: u32, data: Vec<u8>) -> bool {
        self.host.write_stdio(fd, data)
    }

    fn clock(&mut self, id: u32) -> Option<u64> {
        self.host.clock(id)
    }

    fn io(&mut self, op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
        match self.pending.take() {
            None => self.host.io(op, request),
            Some((fd, offset)) => {
                let mut req = Request::default().u32(fd).u64(offset).u32(op as u32);
                req.0.extend_from_slice(&request);
                self.host.io(Op::SeekThen, req.0)
            }
        }
    }

    /// The host's: its allowance for the frame and the other fields (4 KiB in the runtime
    /// guests) covers the seek's 16 bytes in front of the request.
    fn max_transfer(&self) -> u32 {
        self.host.max_transfer()
    }
}
