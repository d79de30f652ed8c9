//! [`HlHost`]: `hl_wasi`'s crossing to the host, with the guest ABI's host calls `wasi_clock` and
//! `wasi_io(op, request) -> reply` (docs/wasm.md, "Wire encodings").
//!
//! Stdout/stderr output does not cross when the module writes it (issue 22 item 3): it waits in
//! [`OUTPUT`] and crosses as one `wasi_io` `Output` request ([`flush_output`]) when the buffer is
//! full, before any other crossing (a clock, stdin, a file, a host import: the host then sees
//! the output the module wrote before it acts), and at the end of every call, whether the call
//! returned or trapped. A program printing 10,000 lines then makes a few exits instead of 10,000.
//!
//! Before a `wasi_io` request (stdin, a file) the output rides in front of it in the same
//! crossing instead of crossing alone (`Op::OutputThen`, [`carry_output`]): the host delivers it
//! before it serves the request.
//!
//! File writes, absolute seeks and closes the guest answered itself wait in [`DEFERRED`]
//! (`hl_wasi::batch`) and cross in front of the next `wasi_io` request (one `Batch` request), in
//! front of the buffered output, before a host import and at the end of every call
//! ([`flush_all`]): every point where the host can observe the files.

use core::sync::atomic::{AtomicBool, Ordering};

use alloc::vec::Vec;

use hl_guest::{Value, call_host};
use hl_wasi::WasiHost;
use hl_wasi::abi::MAX_TRANSFER;
use hl_wasi::abi::errno::IO;
use hl_wasi::batch::{Batcher, Failure};
use hl_wasi::host::{Op, parse_reply};
use hl_wasi::output::{self, Output};
use spinning_top::Spinlock;

/// The module's stdout/stderr output not yet sent (one guest, one vCPU: one buffer).
static OUTPUT: Spinlock<Output> = Spinlock::new(Output::new());
/// Set when the host refused a flush (a sink threw, e.g. its quota): the module's next write to
/// fd 1 or 2 answers `EIO`, as the write the host refused would have.
static REFUSED: AtomicBool = AtomicBool::new(false);
/// The file requests the guest answered itself and has not sent yet.
static DEFERRED: Spinlock<Batcher> = Spinlock::new(Batcher::new());

/// The guest ABI's host calls.
pub struct HlHost;

/// One `wasi_io` request.
fn io(op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
    match call_host("wasi_io", &[Value::U32(op as u32), Value::Bytes(request)]) {
        Ok(Value::Bytes(reply)) => parse_reply(&reply),
        // A host that failed or answered another type: the operation failed.
        _ => Err(IO),
    }
}

/// Most bytes of one request: what [`HlHost::max_transfer`] leaves for data, plus the 4 KiB it
/// keeps for the frame and the other fields less 1 KiB.
fn request_cap() -> usize {
    HlHost.max_transfer() as usize + 3072
}

/// One `wasi_io` request with the deferred file requests in front of it (`hl_wasi::batch`).
fn send(op: Op, request: Vec<u8>) -> Result<Vec<u8>, Failure> {
    DEFERRED.lock().send(&mut io, op, request, request_cap())
}

/// Sends the buffered output (one exit, carrying the deferred file requests; none when nothing
/// waits). A refusal is remembered ([`REFUSED`]) for the module's next write. When a deferred
/// request fails in front of it, its errno is kept for the module's next file call and the
/// output crosses alone.
pub fn flush_output() {
    let records = {
        let mut out = OUTPUT.lock();
        if out.is_empty() {
            return;
        }
        out.take()
    };
    let refused = match send(Op::Output, records.clone()) {
        Ok(_) => false,
        Err(Failure::Op(_)) => true,
        Err(Failure::Deferred(errno)) => {
            DEFERRED.lock().lose(errno);
            io(Op::Output, records).is_err()
        }
    };
    if refused {
        REFUSED.store(true, Ordering::Relaxed);
    }
}

/// `op` with the buffered output in front of it (and the deferred file requests in front of
/// both): one `OutputThen` crossing. A refused output is remembered ([`REFUSED`]) and `op` is
/// served all the same. When a deferred request fails in front (neither the output nor `op`
/// ran), the output crosses alone and the errno answers `op`, or (a stdin request) the next file
/// call: what [`flush_output`] followed by `op` would have done.
fn carry_output(op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
    let records = OUTPUT.lock().take();
    match send(Op::OutputThen, output::carry(&records, op, &request)) {
        Ok(payload) => {
            let (refused, outcome) = output::carried_reply(&payload);
            if refused {
                REFUSED.store(true, Ordering::Relaxed);
            }
            outcome
        }
        Err(Failure::Op(errno)) => {
            // The crossing itself failed: the output is lost, as a failed `Output` would be.
            REFUSED.store(true, Ordering::Relaxed);
            Err(errno)
        }
        Err(Failure::Deferred(errno)) => {
            if io(Op::Output, records).is_err() {
                REFUSED.store(true, Ordering::Relaxed);
            }
            if Batcher::answers_lost(op) {
                return Err(errno);
            }
            DEFERRED.lock().lose(errno);
            send(op, request).map_err(Failure::errno)
        }
    }
}

/// Sends the buffered output and the deferred file requests (at most one exit): before a host
/// import and at the end of every call.
pub fn flush_all() {
    flush_output();
    DEFERRED.lock().flush(&mut io);
}

/// At the start of a call: drops output and deferred file requests left by a call that never
/// reached its end (the host interrupted it: the sandbox is poisoned), so they are never
/// delivered as part of a later call.
pub fn discard_output() {
    OUTPUT.lock().clear();
    REFUSED.store(false, Ordering::Relaxed);
    DEFERRED.lock().clear();
}

impl WasiHost for HlHost {
    fn write_stdio(&mut self, fd: u32, data: Vec<u8>) -> bool {
        if REFUSED.swap(false, Ordering::Relaxed) {
            return false;
        }
        // `data` is at most `max_transfer`, so one record always fits an empty buffer.
        let cap = self.max_transfer() as usize;
        if OUTPUT.lock().len_after(fd, data.len()) > cap {
            flush_output();
        }
        OUTPUT.lock().push(fd, &data);
        true
    }

    fn clock(&mut self, id: u32) -> Option<u64> {
        flush_output();
        match call_host("wasi_clock", &[Value::U32(id)]) {
            Ok(Value::U64(ns)) => Some(ns),
            _ => None,
        }
    }

    /// The output first, then `op` with the deferred requests in front of it. A deferred
    /// request that failed where no call waited answers this call instead (a file call: not a
    /// stdin read or the end of a call's stdin hand-back), which does not run.
    ///
    /// Output that waits rides with `op` (one `OutputThen` request, one exit, in the same order:
    /// deferred requests, output, `op`) unless the two would not fit one request or a lost errno
    /// answers `op`; then the output crosses alone first, as it did before.
    fn io(&mut self, op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
        let waiting = OUTPUT.lock().len();
        let carriable = !matches!(op, Op::Output | Op::SeekThen | Op::Batch | Op::OutputThen);
        if waiting > 0
            && carriable
            && waiting + 8 + request.len() <= request_cap()
            && !(Batcher::answers_lost(op) && DEFERRED.lock().has_lost())
        {
            return carry_output(op, request);
        }
        flush_output();
        if Batcher::answers_lost(op)
            && let Some(errno) = DEFERRED.lock().take_lost()
        {
            return Err(errno);
        }
        send(op, request).map_err(Failure::errno)
    }

    fn defer(&mut self, op: Op, request: &[u8]) -> bool {
        DEFERRED.lock().defer(&mut io, op, request, request_cap())
    }

    /// [`MAX_TRANSFER`], or less when a VM buffer is smaller: the request's or the reply's data
    /// plus 4 KiB for the frame and the other fields must fit the buffer it crosses.
    fn max_transfer(&self) -> u32 {
        let (input, output) = hl_guest::buffer_sizes();
        let room = input.min(output).saturating_sub(4096);
        u32::try_from(room)
            .unwrap_or(u32::MAX)
            .clamp(1, MAX_TRANSFER)
    }
}
