//! The shared test vectors in `tests/vectors/wire.json` (repository root): every entry of
//! `frames` decodes to what its `frame` description says and re-encodes to the same bytes;
//! every entry of `malformed` is rejected.
//!
//! When the file does not exist the test is skipped (it says so), unless
//! `HL_REQUIRE_VECTORS=1`, which makes a missing file a failure.

use std::path::PathBuf;

use hl_wire::{ABI_VERSION, Frame, FrameKind, FunctionDesc, Value, ValueType, decode_frame};
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
        Frame::FunctionTable { functions, imports } => {
            let table = |entries: &[FunctionDesc]| {
                entries
                    .iter()
                    .map(|e| {
                        json!({
                            "name": e.name,
                            "params": e.params.iter().map(|p| p.name()).collect::<Vec<_>>(),
                            "result": e.result.name(),
                        })
                    })
                    .collect::<Vec<_>>()
            };
            let mut j = json!({ "kind": kind, "functions": table(functions) });
            // The vectors' JSON has an "imports" key exactly when the part is present.
            if let Some(imports) = imports {
                j["imports"] = Json::from(table(imports));
            }
            j
        }
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

    check_constants(
        doc.get("constants")
            .expect("wire.json: no constants object"),
    );

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

/// Asserts one `section.name == value` of the constants, and that the section has no name this
/// side does not know (a constant added on one side only is drift too).
fn check_section(c: &Json, section: &str, want: &[(&str, u64)]) {
    let obj = c
        .get(section)
        .and_then(Json::as_object)
        .unwrap_or_else(|| panic!("wire.json constants.{section} missing"));
    for (name, value) in want {
        assert_eq!(
            obj.get(*name).and_then(Json::as_u64),
            Some(*value),
            "wire.json constants.{section}.{name}"
        );
    }
    assert_eq!(
        obj.len(),
        want.len(),
        "wire.json constants.{section} has entries hl-wire does not define: {:?}",
        obj.keys().collect::<Vec<_>>()
    );
}

/// The `constants` section: every number the ABI defines, against hl-wire's copies.
fn check_constants(c: &Json) {
    use hl_wire::{error_code, log_level, peb_offset as p, port};
    assert_eq!(
        c.get("abi_version").and_then(Json::as_u64),
        Some(u64::from(ABI_VERSION))
    );
    assert_eq!(
        c.get("peb_magic").and_then(Json::as_str),
        Some(format!("0x{:016x}", hl_wire::PEB_MAGIC).as_str())
    );
    assert_eq!(
        c.get("frame_header_size").and_then(Json::as_u64),
        Some(hl_wire::HEADER_LEN as u64)
    );
    check_section(
        c,
        "ports",
        &[
            ("DONE", port::DONE.into()),
            ("HOST_CALL", port::HOST_CALL.into()),
            ("ABORT", port::ABORT.into()),
            ("LOG", port::LOG.into()),
            ("FAULT", port::FAULT.into()),
        ],
    );
    let kinds: Vec<(&str, u64)> = (0..=255u32)
        .filter_map(FrameKind::from_u32)
        .map(|k| (k.name(), u64::from(k.as_u32())))
        .collect();
    check_section(c, "frame_kinds", &kinds);
    let tags: Vec<(&str, u64)> = (0..=255u8)
        .filter_map(ValueType::from_tag)
        .map(|t| (t.name(), u64::from(t.tag())))
        .collect();
    check_section(c, "value_tags", &tags);
    let offsets: Vec<(&str, u64)> = [
        ("magic", p::MAGIC),
        ("abi_version", p::ABI_VERSION),
        ("guest_abi_version", p::GUEST_ABI_VERSION),
        ("input_addr", p::INPUT_ADDR),
        ("input_size", p::INPUT_SIZE),
        ("output_addr", p::OUTPUT_ADDR),
        ("output_size", p::OUTPUT_SIZE),
        ("heap_addr", p::HEAP_ADDR),
        ("heap_size", p::HEAP_SIZE),
        ("stack_top", p::STACK_TOP),
        ("stack_size", p::STACK_SIZE),
        ("guard_addr", p::GUARD_ADDR),
        ("image_base", p::IMAGE_BASE),
        ("image_size", p::IMAGE_SIZE),
        ("memory_size", p::MEMORY_SIZE),
        ("wasm_reservation_addr", p::WASM_RESERVATION_ADDR),
        ("wasm_reservation_size", p::WASM_RESERVATION_SIZE),
        ("wasm_trap_entry", p::WASM_TRAP_ENTRY),
    ]
    .into_iter()
    .map(|(n, v)| (n, v as u64))
    .collect();
    check_section(c, "peb_offsets", &offsets);
    check_section(
        c,
        "error_codes",
        &[
            ("UNKNOWN_FUNCTION", error_code::UNKNOWN_FUNCTION.into()),
            ("BAD_ARGUMENTS", error_code::BAD_ARGUMENTS.into()),
            ("HOST_CALL_FAILED", error_code::HOST_CALL_FAILED.into()),
            ("FIRST_GUEST_CODE", error_code::USER_MIN.into()),
        ],
    );
    check_section(
        c,
        "log_levels",
        &[
            ("ERROR", log_level::ERROR.into()),
            ("WARN", log_level::WARN.into()),
            ("INFO", log_level::INFO.into()),
            ("DEBUG", log_level::DEBUG.into()),
            ("TRACE", log_level::TRACE.into()),
        ],
    );
    check_section(
        c,
        "limits",
        &[
            ("min_name_len", hl_wire::MIN_NAME_LEN as u64),
            ("max_name_len", hl_wire::MAX_NAME_LEN as u64),
            ("max_functions", hl_wire::MAX_FUNCTIONS as u64),
            ("max_params", hl_wire::MAX_PARAMS as u64),
            ("max_log_level", hl_wire::MAX_LOG_LEVEL.into()),
        ],
    );
}
