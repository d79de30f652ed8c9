//! [`HlHost`]: `hl_wasi`'s crossing to the host, with the guest ABI's host calls `wasi_write`,
//! `wasi_clock` and `wasi_io(op, request) -> reply` (docs/wasm.md, "Wire encodings").

use alloc::vec::Vec;

use hl_guest::{Value, call_host};
use hl_wasi::WasiHost;
use hl_wasi::abi::MAX_TRANSFER;
use hl_wasi::abi::errno::IO;
use hl_wasi::host::{Op, parse_reply};

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
        match call_host("wasi_io", &[Value::U32(op as u32), Value::Bytes(request)]) {
            Ok(Value::Bytes(reply)) => parse_reply(&reply),
            // A host that failed or answered another type: the operation failed.
            _ => Err(IO),
        }
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
