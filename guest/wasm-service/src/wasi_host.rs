//! [`HlHost`]: `hl_wasi`'s crossing to the host, with the guest ABI's host calls `wasi_clock` and
//! `wasi_io(op, request) -> reply` (docs/wasm.md, "Wire encodings").
//!
//! Stdout/stderr output does not cross when the module writes it (issue 22 item 3): it waits in
//! [`OUTPUT`] and crosses as one `wasi_io` `Output` request ([`flush_output`]) when the buffer is
//! full, before any other crossing (a clock, stdin, a file, a host import: the host then sees
//! the output the module wrote before it acts), and at the end of every call, whether the call
//! returned or trapped. A program printing 10,000 lines then makes a few exits instead of 10,000.

use core::sync::atomic::{AtomicBool, Ordering};

use alloc::vec::Vec;

use hl_guest::{Value, call_host};
use hl_wasi::WasiHost;
use hl_wasi::abi::MAX_TRANSFER;
use hl_wasi::abi::errno::IO;
use hl_wasi::host::{Op, parse_reply};
use hl_wasi::output::Output;
use spinning_top::Spinlock;

/// The module's stdout/stderr output not yet sent (one guest, one vCPU: one buffer).
static OUTPUT: Spinlock<Output> = Spinlock::new(Output::new());
/// Set when the host refused a flush (a sink threw, e.g. its quota): the module's next write to
/// fd 1 or 2 answers `EIO`, as the write the host refused would have.
static REFUSED: AtomicBool = AtomicBool::new(false);

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

/// Sends the buffered output (one exit; none when nothing waits). A refusal is remembered
/// ([`REFUSED`]) for the module's next write.
pub fn flush_output() {
    let records = {
        let mut out = OUTPUT.lock();
        if out.is_empty() {
            return;
        }
        out.take()
    };
    if io(Op::Output, records).is_err() {
        REFUSED.store(true, Ordering::Relaxed);
    }
}

/// At the start of a call: drops output left by a call that never reached its end (the host
/// interrupted it), so it is never delivered as part of a later call.
pub fn discard_output() {
    OUTPUT.lock().clear();
    REFUSED.store(false, Ordering::Relaxed);
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

    fn io(&mut self, op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
        flush_output();
        io(op, request)
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
