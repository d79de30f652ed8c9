//! What the guest knows about the module's open fds (3 and up) within one call, from the host's
//! own answers: the `$fdstat` of an fd (an `Open` reply carries the new fd's; an `Fdstat` reply),
//! which stays what it was until the fd is closed (the host's fdstat of an fd depends only on how
//! it was opened: `fd_fdstat_set_flags` succeeds only when it changes nothing, `fd_renumber` is
//! `ENOSYS`), and which fds a seek succeeded on. From it `lib.rs` answers `fd_fdstat_get`, a
//! directory's `fd_sync`, and defers absolute seeks, writes on a file opened for writing and the
//! close of a file (`batch.rs`). Forgotten at the end of every call ([`Known::clear`]): a
//! snapshot holds none of it, so a restore, which closes the files the module opened, never
//! finds an fd believed open.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::abi::rights::FD_WRITE;
use super::abi::{FDSTAT_SIZE, filetype};
use super::host::Request;

/// Largest offset a seek is deferred for: far below any file system's limit (ext4: 16 TiB), so
/// the host's seek to it cannot fail with `EINVAL` where the module was told it succeeded.
pub const MAX_DEFERRED_OFFSET: u64 = 1 << 40;

/// The fds the host described in this call.
#[derive(Default)]
pub struct Known {
    stats: BTreeMap<u32, [u8; FDSTAT_SIZE]>,
    /// Fds whose last seek at the host succeeded (and which are not closed since).
    seekable: BTreeSet<u32>,
}

impl Known {
    /// The `$fdstat` the host gave for `fd`.
    pub fn stat(&self, fd: u32) -> Option<&[u8; FDSTAT_SIZE]> {
        self.stats.get(&fd)
    }

    /// Records the host's `$fdstat` of `fd` (ignored unless it is exactly one).
    pub fn learn(&mut self, fd: u32, stat: &[u8]) {
        if let Ok(stat) = <[u8; FDSTAT_SIZE]>::try_from(stat) {
            self.stats.insert(fd, stat);
        }
    }

    fn filetype(&self, fd: u32) -> Option<u8> {
        self.stat(fd).map(|s| s[0])
    }

    /// Whether `fd` is an open directory.
    pub fn directory(&self, fd: u32) -> bool {
        self.filetype(fd) == Some(filetype::DIRECTORY)
    }

    /// Whether `fd` is an open regular file the host opened for writing (its rights include
    /// `FD_WRITE` exactly when it did), on a writable preopen (else the open failed).
    pub fn writable(&self, fd: u32) -> bool {
        self.stat(fd).is_some_and(|s| {
            let rights = u64::from_le_bytes(s[8..16].try_into().unwrap_or([0; 8]));
            s[0] == filetype::REGULAR_FILE && rights & FD_WRITE != 0
        })
    }

    /// Whether `fd_seek(fd, offset, SEEK_SET)` cannot fail at the host, so it may be deferred.
    pub fn can_defer_seek(&self, fd: u32, offset: u64) -> bool {
        offset <= MAX_DEFERRED_OFFSET
            && (self.seekable.contains(&fd) || self.filetype(fd) == Some(filetype::REGULAR_FILE))
    }

    /// Records a seek on `fd` that the host answered: success makes `fd` seekable.
    pub fn seen_seek(&mut self, fd: u32, ok: bool) {
        if ok {
            self.seekable.insert(fd);
        } else {
            self.seekable.remove(&fd);
        }
    }

    /// `fd` was closed (or its close was asked for): nothing is known about it any more.
    pub fn closed(&mut self, fd: u32) {
        self.seekable.remove(&fd);
        self.stats.remove(&fd);
    }

    /// Forgets everything (the end of a call).
    pub fn clear(&mut self) {
        self.seekable.clear();
        self.stats.clear();
    }
}

/// `Seek(fd, offset, SEEK_SET)`.
pub fn seek_request(fd: u32, offset: u64) -> Vec<u8> {
    Request::default().u32(fd).u64(offset).u8(0).0
}
