//! File requests the guest answers itself and sends later, several per crossing (issue 22 item 3,
//! "file reads and writes on preopens are batched where semantics allow"; docs/wasm.md, "File
//! calls cross in batches"). `lib.rs` decides what may wait: a write on a regular file opened
//! for writing, an absolute seek on a regular file, the close of a file it opened; this is the
//! queue and its crossing, tested natively. The embedder (`hl-wasm-service`'s `HlHost`) keeps one
//! [`Batcher`] and sends it: in front of the next request to the host (one `Batch` request, one
//! exit), before the buffered stdout/stderr output and any host import, and at the end of every
//! call. The host serves the requests in the order the module made them, so at every point the
//! host can observe (a request it serves, a host function, an output sink, the end of a call) the
//! files are what the unbatched calls would have left.
//!
//! Errors: a deferred request that fails at the host (a write's `ENOSPC` or `EIO`) answers its
//! errno to the call whose request carried it, and that request does not run; when nothing
//! waited on the crossing (a flush before a host import or an output, or at the end of a call),
//! the errno answers the module's next file call instead ([`Batcher::take_lost`]).

use alloc::vec::Vec;

use hl_wire::Reader;

use super::abi::errno::IO;
use super::host::{Op, Request, parse_reply};

/// Bytes a record adds besides its request: `u32 op`, `u32 length`.
const RECORD: usize = 8;
/// Bytes a `Batch` request adds besides its records and the last request: `u32 n`, `u32 op`.
const FRAME: usize = 8;

/// How a batched crossing failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// A deferred request failed with this errno; the request that carried it did not run.
    Deferred(i32),
    /// The carried request itself answered this errno (or the crossing failed: `EIO`).
    Op(i32),
}

impl Failure {
    /// The errno, whichever request it belongs to.
    pub fn errno(self) -> i32 {
        match self {
            Failure::Deferred(e) | Failure::Op(e) => e,
        }
    }
}

/// One `wasi_io` crossing: the op and its request in, the reply (`u32 errno` + payload, parsed
/// by [`parse_reply`]) out.
pub type Send<'a> = &'a mut dyn FnMut(Op, Vec<u8>) -> Result<Vec<u8>, i32>;

/// The deferred requests (encoded as `Batch` records) and the errno of a flush that failed with
/// no call waiting on it.
#[derive(Default)]
pub struct Batcher {
    records: Vec<u8>,
    count: u32,
    lost: Option<i32>,
}

impl Batcher {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            records: Vec::new(),
            count: 0,
            lost: None,
        }
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// How many requests wait.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Queues `op` (answered already) unless its record alone would not fit `cap` bytes (then
    /// `false`: the caller sends it now). A queue that would outgrow `cap` is sent first.
    pub fn defer(&mut self, send: Send<'_>, op: Op, request: &[u8], cap: usize) -> bool {
        let record = RECORD + request.len();
        if record + FRAME > cap {
            return false;
        }
        if self.records.len() + record + FRAME > cap {
            self.flush(send);
        }
        self.records.extend_from_slice(&(op as u32).to_le_bytes());
        self.records
            .extend_from_slice(&(request.len() as u32).to_le_bytes());
        self.records.extend_from_slice(request);
        self.count += 1;
        true
    }

    /// Sends `op` with the queue in front of it (one crossing when both fit `cap` bytes of
    /// request, else the queue first): `op`'s reply payload, or how it failed.
    pub fn send(
        &mut self,
        send: Send<'_>,
        op: Op,
        request: Vec<u8>,
        cap: usize,
    ) -> Result<Vec<u8>, Failure> {
        if self.is_empty() {
            return send(op, request).map_err(Failure::Op);
        }
        if self.records.len() + FRAME + request.len() > cap {
            self.flush(send);
            return send(op, request).map_err(Failure::Op);
        }
        self.cross(send, op as u32, &request)
    }

    /// Sends the queue alone (no crossing when empty). A failure is kept for
    /// [`take_lost`](Self::take_lost).
    pub fn flush(&mut self, send: Send<'_>) {
        if self.is_empty() {
            return;
        }
        if let Err(f) = self.cross(send, 0, &[]) {
            self.lost.get_or_insert(f.errno());
        }
    }

    /// Whether a request for `op` answers a lost errno ([`take_lost`](Self::take_lost)): file
    /// calls do; stdin's do not (their errno would belong to no file, and the end of a call's
    /// hand-back of unread stdin must reach the host).
    pub fn answers_lost(op: Op) -> bool {
        !matches!(op, Op::ReadStdin | Op::Unread)
    }

    /// Whether a flush failed with no call waiting on it (its errno not yet taken).
    pub fn has_lost(&self) -> bool {
        self.lost.is_some()
    }

    /// The errno of a flush that failed with no call waiting on it, once.
    pub fn take_lost(&mut self) -> Option<i32> {
        self.lost.take()
    }

    /// Keeps `errno` for the module's next file call (a failure no call was waiting on).
    pub fn lose(&mut self, errno: i32) {
        self.lost.get_or_insert(errno);
    }

    /// Drops the queue (a call the host interrupted: the sandbox is poisoned, and a restore
    /// rewinds the files' writer anyway).
    pub fn clear(&mut self) {
        self.records = Vec::new();
        self.count = 0;
    }

    /// One `Batch` crossing: the queue, then `last` (0: none) with `request`.
    fn cross(&mut self, send: Send<'_>, last: u32, request: &[u8]) -> Result<Vec<u8>, Failure> {
        let n = self.count;
        let records = core::mem::take(&mut self.records);
        self.count = 0;
        let mut req = Request::default().u32(n);
        req.0.extend_from_slice(&records);
        let mut req = req.u32(last);
        req.0.extend_from_slice(request);
        let reply = send(Op::Batch, req.0).map_err(Failure::Deferred)?;
        let mut r = Reader::new(&reply);
        let served = r.u32().map_err(|_| Failure::Deferred(IO))?;
        let rest = &reply[4..];
        if served < n {
            // The errno of the deferred request that failed, nothing after it.
            let errno = Reader::new(rest).u32().map_err(|_| Failure::Deferred(IO))?;
            return Err(Failure::Deferred(
                i32::try_from(errno)
                    .ok()
                    .filter(|&e| e > 0 && e <= 76 && rest.len() == 4)
                    .unwrap_or(IO),
            ));
        }
        if served != n {
            return Err(Failure::Deferred(IO));
        }
        parse_reply(rest).map_err(Failure::Op)
    }
}
