//! Init and the call loop.

use alloc::format;
use alloc::vec::Vec;

use hl_wire::encode_function_table_with_imports;
use hl_wire::{EncodeError, encode_return, encode_with, error_code, port};
use hl_wire::{FrameKind, FunctionSig, Reader, Value, decode_frame, split_frame};

use crate::arch::outl;
use crate::function::{GuestError, GuestFunction};
use crate::host::HostImport;
use crate::peb::{self, with_input, with_output};

/// Guest start-up (called by the `hl_entry` that `guest_functions!` defines): checks the PEB,
/// installs the heap, writes `guest_abi_version` and the
/// FUNCTION_TABLE frame (with the imports part when the guest declared its host functions with
/// `host_functions!`), signals DONE, then serves CALLs forever.
pub fn start(
    peb_addr: u64,
    table: &'static [GuestFunction],
    imports: Option<&'static [HostImport]>,
) -> ! {
    start_with(peb_addr, table, imports, || {})
}

/// [`start`] with `hook` run once the heap and buffers are set up, before the function table is
/// written: a start that logs or calls the host (the host's per-image start snapshots must not
/// keep such a start; tests/kvm/start_snapshot.test.ts runs one, `startguest`).
pub fn start_with(
    peb_addr: u64,
    table: &'static [GuestFunction],
    imports: Option<&'static [HostImport]>,
    hook: fn(),
) -> ! {
    let layout = peb::init(peb_addr);
    crate::heap::init(layout.heap.addr, layout.heap.size);
    peb::write_guest_abi_version();
    hook();

    let sigs = table.iter().map(|f| FunctionSig {
        name: f.name,
        params: f.params,
        result: f.result,
    });
    let import_sigs = imports.map(|i| {
        i.iter().map(|h| FunctionSig {
            name: h.name,
            params: h.params,
            result: h.result,
        })
    });
    match with_output(|out| encode_function_table_with_imports(out, sigs, import_sigs)) {
        Some(Ok(_)) => {}
        Some(Err(e)) => panic!(
            "function table of {} entries cannot be written to the {}-byte output buffer: {e}",
            table.len(),
            peb::output_size()
        ),
        None => unreachable!("output buffer registered by peb::init"),
    }

    loop {
        // Init done / previous call done. The host resumes here with the next CALL.
        outl(port::DONE, 0);
        let (name, outcome) = serve_call(table);
        write_outcome(name, outcome);
    }
}

/// Decodes the CALL in the input buffer and runs it. Returns the function name (for messages)
/// and the outcome.
///
/// The name is looked up where it lies in the input buffer, not copied to the heap: a call
/// allocates only for its arguments, so a call without any touches no heap page (issue 19: the
/// first call of a new VM paid a shadow-paging fault on kvm_pvm for the heap page its name
/// went to). Only a frame that is not a well-formed CALL is decoded as a whole, for the same
/// error as before.
fn serve_call(table: &[GuestFunction]) -> (&'static str, Result<Value, GuestError>) {
    let bad = |message| GuestError::new(error_code::BAD_ARGUMENTS, message);
    let decoded = with_input(|buf| match decode_call(buf) {
        Some((name, args)) => match table.iter().find(|f| f.name == name) {
            Some(f) => Ok((f, args)),
            None => {
                let msg = format!("unknown function {name:?}");
                Err(GuestError::new(error_code::UNKNOWN_FUNCTION, msg))
            }
        },
        None => Err(match decode_frame(buf) {
            Ok(other) => bad(format!(
                "expected a CALL frame, got {}",
                other.kind().name()
            )),
            Err(e) => bad(format!("malformed CALL frame: {e}")),
        }),
    });
    let (f, args) = match decoded {
        Some(Ok(call)) => call,
        Some(Err(e)) => return ("?", Err(e)),
        None => return ("?", Err(bad("no input buffer".into()))),
    };
    (f.name, check_args(f, &args).and_then(|()| (f.call)(args)))
}

/// A well-formed CALL frame at the start of `buf`: its name (borrowed) and arguments, or `None`
/// for anything else (which `decode_frame` then reports).
fn decode_call(buf: &[u8]) -> Option<(&str, Vec<Value>)> {
    let (kind, payload) = split_frame(buf).ok()?;
    if kind != FrameKind::Call {
        return None;
    }
    let mut r = Reader::new(payload);
    let name = r.name().ok()?;
    let args = r.values().ok()?;
    r.finish().ok()?;
    Some((name, args))
}

fn check_args(f: &GuestFunction, args: &[Value]) -> Result<(), GuestError> {
    if args.len() != f.params.len() {
        let msg = format!(
            "{} expects {} arguments, got {}",
            f.name,
            f.params.len(),
            args.len()
        );
        return Err(GuestError::new(error_code::BAD_ARGUMENTS, msg));
    }
    for (i, (arg, want)) in args.iter().zip(f.params).enumerate() {
        let got = arg.value_type();
        if got != *want {
            let msg = format!("{}: argument {} is {got}, expected {want}", f.name, i + 1);
            return Err(GuestError::new(error_code::BAD_ARGUMENTS, msg));
        }
    }
    Ok(())
}

/// Writes RETURN or ERROR. An ERROR message too long for the buffer is truncated; a result
/// that does not fit is a panic (the ABI has no error code for it).
fn write_outcome(name: &str, outcome: Result<Value, GuestError>) {
    let written = with_output(|out| match &outcome {
        Ok(v) => encode_return(out, v)
            .map(drop)
            .map_err(|e| (v.value_type(), v.encoded_len(), e)),
        Err(e) => encode_with(out, FrameKind::Error, |w| {
            w.put_u32(e.code)?;
            crate::panic::put_str_truncated(w, format_args!("{}", e.message))
        })
        .map(drop)
        .map_err(|err| (hl_wire::ValueType::String, e.message.len(), err)),
    });
    match written {
        Some(Err((ty, len, EncodeError::BufferTooSmall { capacity }))) => panic!(
            "{name}: the {ty} result ({len} bytes encoded) does not fit the {capacity}-byte output buffer"
        ),
        Some(Err((ty, _, e))) => panic!("{name}: cannot encode the {ty} result: {e}"),
        _ => {}
    }
}
