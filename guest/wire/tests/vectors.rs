//! The shared test vectors in `tests/vectors/wire.json` (repository root): every entry of
//! `frames` decodes to what its `frame` description says and re-encodes to the same bytes;
//! every entry of `malformed` is rejected.
//!
//! When the file does not exist the test is skipped (it says so), unless
//! `HL_REQUIRE_VECTORS=1`, which makes a missing file a failure.

use std::path::PathBuf;

use hl_wire::{ABI_VERSION, Frame, Value, decode_frame};
use serde_json::{Value as Json, json};

/// `tests/vectors/wire.json` at the repository root, or `$HL_WIRE_VECTORS` when set.
fn vectors_path() -> PathBuf {
    match std::env::var_os("HL_WIRE_VECTORS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/wire.json"),
    }
}

fn parse_hex(name: &str, s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(
        digits.len().is_multiple_of(2),
        "{name}: odd number of hex digits"
    );
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16)
                .unwrap_or_else(|_| panic!("{name}: bad hex digits {pair:?}"))
        })
        .collect()
}

/// A value in the vectors' JSON form: `{"type": name, "value": ...}` with 64-bit integers as
/// decimal strings, floats as `0x`-prefixed bit patterns, bytes as lowercase hex.
fn value_json(v: &Value) -> Json {
    let t = v.value_type().name();
    let value = match v {
        Value::Void => return json!({ "type": t }),
        Value::I32(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I64(x) => json!(x.to_string()),
        Value::U64(x) => json!(x.to_string()),
        Value::F32(x) => json!(format!("0x{:08x}", x.to_bits())),
        Value::F64(x) => json!(format!("0x{:016x}", x.to_bits())),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::Bytes(x) => json!(x.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    };
    json!({ "type": t, "value": value })
}

/// A decoded frame in the vectors' JSON form, to compare with each entry's `frame`.
fn frame_json(f: &Frame) -> Json {
    let kind = f.kind().name();
    match f {
        Frame::Call { name, args } | Frame::HostCall { name, args } => json!({
            "kind": kind, "name": name, "args": args.iter().map(value_json).collect::<Vec<_>>(),
        }),
        Frame::Return(v) | Frame::HostReturn(v) => json!({ "kind": kind, "value": value_json(v) }),
        Frame::Error { code, message } => json!({ "kind": kind, "code": code, "message": message }),
        Frame::HostError { message } | Frame::Panic { message } => {
            json!({ "kind": kind, "message": message })
        }
        Frame::FunctionTable(entries) => json!({
            "kind": kind,
            "functions": entries.iter().map(|e| json!({
                "name": e.name,
                "params": e.params.iter().map(|p| p.name()).collect::<Vec<_>>(),
                "result": e.result.name(),
            })).collect::<Vec<_>>(),
        }),
        Frame::Fault(i) => json!({
            "kind": kind,
            "vector": i.vector.to_string(),
            "error_code": i.error_code.to_string(),
            "rip": i.rip.to_string(),
            "cr2": i.cr2.to_string(),
            "rsp": i.rsp.to_string(),
        }),
        Frame::Log { level, message } => {
            json!({ "kind": kind, "level": level, "message": message })
        }
    }
}

#[test]
fn shared_wire_vectors() {
    let path = vectors_path();
    let required = std::env::var("HL_REQUIRE_VECTORS").is_ok_and(|v| v == "1");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required => {
            println!(
                "SKIPPED: shared wire vectors not found at {} ({e})",
                path.display()
            );
            return;
        }
        Err(e) => panic!(
            "HL_REQUIRE_VECTORS=1 but the shared wire vectors cannot be read at {}: {e}",
            path.display()
        ),
    };
    let doc: Json = serde_json::from_str(&text).expect("wire.json is not valid JSON");
    assert_eq!(
        doc.get("abi_version").and_then(Json::as_u64),
        Some(u64::from(ABI_VERSION)),
        "wire.json abi_version"
    );
    let ports = doc.get("ports").expect("wire.json: no ports object");
    for (name, value) in [
        ("DONE", hl_wire::port::DONE),
        ("HOST_CALL", hl_wire::port::HOST_CALL),
        ("ABORT", hl_wire::port::ABORT),
        ("LOG", hl_wire::port::LOG),
        ("FAULT", hl_wire::port::FAULT),
    ] {
        assert_eq!(
            ports.get(name).and_then(Json::as_u64),
            Some(u64::from(value)),
            "wire.json ports.{name}"
        );
    }

    let frames = doc
        .get("frames")
        .and_then(Json::as_array)
        .expect("wire.json: no frames array");
    assert!(!frames.is_empty(), "wire.json: frames is empty");
    for (i, entry) in frames.iter().enumerate() {
        let name = entry.get("name").and_then(Json::as_str).unwrap_or("?");
        let name = format!("frames[{i}] {name}");
        let hex = entry
            .get("hex")
            .and_then(Json::as_str)
            .expect("frame entry without hex");
        let bytes = parse_hex(&name, hex);
        let frame = decode_frame(&bytes)
            .unwrap_or_else(|e| panic!("{name}: valid vector rejected: {e} ({e:?})"));
        let again = frame
            .to_vec()
            .unwrap_or_else(|e| panic!("{name}: re-encode failed: {e}"));
        assert_eq!(
            again, bytes,
            "{name}: re-encoding differs (decoded {frame:?})"
        );
        if let Some(want) = entry.get("frame") {
            assert_eq!(
                &frame_json(&frame),
                want,
                "{name}: decoded frame differs from its description"
            );
        }
    }

    let malformed = doc
        .get("malformed")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, entry) in malformed.iter().enumerate() {
        let name = entry.get("name").and_then(Json::as_str).unwrap_or("?");
        let reason = entry.get("reason").and_then(Json::as_str).unwrap_or("");
        let name = format!("malformed[{i}] {name}");
        let hex = entry
            .get("hex")
            .and_then(Json::as_str)
            .expect("malformed entry without hex");
        let bytes = parse_hex(&name, hex);
        if let Ok(frame) = decode_frame(&bytes) {
            panic!("{name}: accepted malformed input ({reason}) as {frame:?}");
        }
    }
    println!(
        "checked {} frames and {} malformed entries from {}",
        frames.len(),
        malformed.len(),
        path.display()
    );
}
