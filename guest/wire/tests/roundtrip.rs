//! Round trips at the limits of every value type, exact bytes of a few frames, and rejection
//! of truncated and garbage input. Run natively:
//! `cd guest && RUSTFLAGS= cargo test -p hl-wire`

use hl_wire::*;

/// A FUNCTION_TABLE frame without the imports part (a guest that declares none).
fn table(functions: Vec<FunctionDesc>) -> Frame {
    Frame::FunctionTable {
        functions,
        imports: None,
    }
}

fn desc(name: &str, params: &[ValueType], result: ValueType) -> FunctionDesc {
    FunctionDesc {
        name: name.into(),
        params: params.to_vec(),
        result,
    }
}

fn all_frame_kinds() -> Vec<Frame> {
    vec![
        Frame::Call {
            name: "add".into(),
            args: vec![Value::I32(1), Value::I32(2)],
        },
        Frame::Call {
            name: "noop".into(),
            args: vec![],
        },
        Frame::Return(Value::Void),
        Frame::Return(Value::String("héllo".into())),
        Frame::Error {
            code: 1000,
            message: "boom".into(),
        },
        Frame::Error {
            code: 0,
            message: String::new(),
        },
        Frame::HostCall {
            name: "h".into(),
            args: call_values()[..32].to_vec(),
        },
        Frame::HostCall {
            name: "h2".into(),
            args: call_values()[32..].to_vec(),
        },
        Frame::HostReturn(Value::Bytes(vec![0, 1, 2, 255])),
        Frame::HostError {
            message: "nope ✗".into(),
        },
        table(vec![]),
        table(vec![
            FunctionDesc {
                name: "add".into(),
                params: vec![ValueType::I32, ValueType::I32],
                result: ValueType::I32,
            },
            FunctionDesc {
                name: "noop".into(),
                params: vec![],
                result: ValueType::Void,
            },
            FunctionDesc {
                name: "x".repeat(255),
                params: vec![ValueType::Bytes; 32],
                result: ValueType::String,
            },
        ]),
        Frame::FunctionTable {
            functions: vec![desc("f", &[], ValueType::Void)],
            imports: Some(vec![]),
        },
        Frame::FunctionTable {
            functions: vec![],
            imports: Some(vec![
                desc("now_ms", &[], ValueType::U64),
                desc("f", &[ValueType::String, ValueType::F64], ValueType::Void),
            ]),
        },
        Frame::Panic {
            message: "oh no at src/main.rs:1:1".into(),
        },
        Frame::Fault(FaultInfo {
            vector: 14,
            error_code: 2,
            rip: u64::MAX,
            cr2: 0,
            rsp: 1,
        }),
        Frame::Log {
            level: 0,
            message: "e".into(),
        },
        Frame::Log {
            level: 4,
            message: String::new(),
        },
    ]
}

/// The sample values an argument may be (all but `void`).
fn call_values() -> Vec<Value> {
    let v: Vec<Value> = sample_values()
        .into_iter()
        .filter(|v| *v != Value::Void)
        .collect();
    assert!(v.len() > 32);
    v
}

fn sample_values() -> Vec<Value> {
    let mut v = vec![Value::Void, Value::Bool(false), Value::Bool(true)];
    for x in [0, -1, 1, i32::MIN, i32::MAX] {
        v.push(Value::I32(x));
    }
    for x in [0, 1, u32::MAX, 0x8000_0000] {
        v.push(Value::U32(x));
    }
    for x in [0, -1, i64::MIN, i64::MAX] {
        v.push(Value::I64(x));
    }
    for x in [0, 1, u64::MAX, 1 << 63] {
        v.push(Value::U64(x));
    }
    for bits in [
        0u32,
        0x8000_0000,
        0x7fc0_0000,
        0x7f80_0001,
        0xffff_ffff,
        0x7fbf_ffff,
        0x7f80_0000,
        0xff80_0000,
        1,
        0x7f7f_ffff,
    ] {
        v.push(Value::F32(f32::from_bits(bits)));
    }
    for bits in [
        0u64,
        0x8000_0000_0000_0000,
        0x7ff8_0000_0000_0000,
        0x7ff0_0000_0000_0001,
        0xffff_ffff_ffff_ffff,
        0x7ff0_0000_0000_0000,
        1,
    ] {
        v.push(Value::F64(f64::from_bits(bits)));
    }
    for s in ["", "a", "héllo wörld", "日本語 🦀 \u{0} \u{10FFFF}"] {
        v.push(Value::String(s.into()));
    }
    v.push(Value::Bytes(vec![]));
    v.push(Value::Bytes((0..=255).collect()));
    v
}

#[test]
fn every_value_round_trips_bit_exact() {
    for v in sample_values() {
        let frame = Frame::Return(v.clone());
        let bytes = frame.to_vec().unwrap();
        assert_eq!(bytes.len(), frame.encoded_len());
        assert_eq!(bytes.len(), HEADER_LEN + v.encoded_len());
        let back = decode_frame(&bytes).unwrap();
        assert_eq!(back, frame, "{v:?}");
        // Floats: bit patterns, not numeric equality (NaN, -0.0).
        if let (Frame::Return(Value::F32(a)), Value::F32(b)) = (&back, &v) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
        if let (Frame::Return(Value::F64(a)), Value::F64(b)) = (&back, &v) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}

#[test]
fn float_equality_is_bitwise() {
    assert_ne!(Value::F32(0.0), Value::F32(-0.0));
    assert_eq!(Value::F64(f64::NAN), Value::F64(f64::NAN));
    assert_ne!(
        Value::F32(f32::from_bits(0x7fc0_0000)),
        Value::F32(f32::from_bits(0x7fc0_0001))
    );
}

#[test]
fn large_values_round_trip() {
    let big_string: String = "añ🦀".repeat(300_000); // 2.1 MB of multi-byte UTF-8
    let big_bytes: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i * 7 + 3) as u8).collect();
    for v in [Value::String(big_string), Value::Bytes(big_bytes)] {
        let frame = Frame::Call {
            name: "echo".into(),
            args: vec![v.clone(), v],
        };
        let bytes = frame.to_vec().unwrap();
        assert_eq!(decode_frame(&bytes).unwrap(), frame);
    }
}

#[test]
fn every_frame_kind_round_trips() {
    for frame in all_frame_kinds() {
        let bytes = frame.to_vec().unwrap();
        assert_eq!(bytes.len(), frame.encoded_len(), "{frame:?}");
        assert_eq!(decode_frame(&bytes).unwrap(), frame);
        // Bytes after the frame (the rest of the shared buffer) are ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0xAA; 64]);
        assert_eq!(decode_frame(&padded).unwrap(), frame);
        let (kind, payload) = split_frame(&padded).unwrap();
        assert_eq!(kind, frame.kind());
        assert_eq!(payload.len(), bytes.len() - HEADER_LEN);
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn exact_bytes() {
    let call = Frame::Call {
        name: "add".into(),
        args: vec![Value::I32(1), Value::I32(-2)],
    };
    assert_eq!(
        call.to_vec().unwrap(),
        hex("01000000 15000000 03000000 616464 02000000 01 01000000 01 feffffff")
    );
    assert_eq!(
        Frame::Return(Value::Void).to_vec().unwrap(),
        hex("02000000 01000000 00")
    );
    assert_eq!(
        Frame::Return(Value::F32(f32::from_bits(0x7fc0_0001)))
            .to_vec()
            .unwrap(),
        hex("02000000 05000000 05 0100c07f")
    );
    assert_eq!(
        Frame::Return(Value::Bool(true)).to_vec().unwrap(),
        hex("02000000 02000000 07 01")
    );
    assert_eq!(
        Frame::Error {
            code: 2,
            message: "é".into()
        }
        .to_vec()
        .unwrap(),
        hex("03000000 0a000000 02000000 02000000 c3a9")
    );
    assert_eq!(
        table(vec![FunctionDesc {
            name: "f".into(),
            params: vec![ValueType::String, ValueType::Bytes],
            result: ValueType::Void,
        }])
        .to_vec()
        .unwrap(),
        hex("07000000 0d000000 01000000 01000000 66 02 08 09 00")
    );
    assert_eq!(
        Frame::Fault(FaultInfo {
            vector: 6,
            error_code: 0,
            rip: 0x1234,
            cr2: 0,
            rsp: 0x10
        })
        .to_vec()
        .unwrap(),
        hex(
            "09000000 28000000 0600000000000000 0000000000000000 3412000000000000
             0000000000000000 1000000000000000"
        )
    );
    assert_eq!(
        Frame::Log {
            level: 2,
            message: "hi".into()
        }
        .to_vec()
        .unwrap(),
        hex("0a000000 0a000000 02000000 02000000 6869")
    );
    assert_eq!(
        Frame::HostError {
            message: String::new()
        }
        .to_vec()
        .unwrap(),
        hex("06000000 04000000 00000000")
    );
}

#[test]
fn every_truncation_is_rejected() {
    for frame in all_frame_kinds() {
        let bytes = frame.to_vec().unwrap();
        // Shorter buffer: header or payload does not fit.
        for n in 0..bytes.len() {
            let err = decode_frame(&bytes[..n]).unwrap_err();
            if n < HEADER_LEN {
                assert_eq!(err, DecodeError::HeaderTruncated { available: n });
            } else {
                assert!(
                    matches!(err, DecodeError::PayloadBeyondBuffer { .. }),
                    "{err:?}"
                );
            }
        }
        // Shorter payload_len in a full buffer: the payload ends before its fields do. The one
        // exception: a FUNCTION_TABLE cut exactly where its optional imports part starts is the
        // same table without the part ("not declared").
        let payload_len = (bytes.len() - HEADER_LEN) as u32;
        let without_imports = match &frame {
            Frame::FunctionTable {
                functions,
                imports: Some(_),
            } => Some(table(functions.clone())),
            _ => None,
        };
        let boundary = without_imports
            .as_ref()
            .map(|f| (f.encoded_len() - HEADER_LEN) as u32);
        for shorter in 0..payload_len {
            let mut b = bytes.clone();
            b[4..8].copy_from_slice(&shorter.to_le_bytes());
            if Some(shorter) == boundary {
                assert_eq!(decode_frame(&b).as_ref().ok(), without_imports.as_ref());
                continue;
            }
            assert!(
                decode_frame(&b).is_err(),
                "{frame:?} with payload_len {shorter}"
            );
        }
        // Longer payload_len with a spare byte: bytes left over (for a FUNCTION_TABLE without
        // the imports part, the byte starts a truncated imports count).
        let mut b = bytes.clone();
        b.push(0);
        b[4..8].copy_from_slice(&(payload_len + 1).to_le_bytes());
        let expected = match &frame {
            Frame::FunctionTable { imports: None, .. } => DecodeError::UnexpectedEnd {
                needed: 4,
                remaining: 1,
            },
            _ => DecodeError::TrailingBytes { count: 1 },
        };
        assert_eq!(decode_frame(&b).unwrap_err(), expected);
        // payload_len past the buffer.
        let mut b = bytes.clone();
        b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_frame(&b).unwrap_err(),
            DecodeError::PayloadBeyondBuffer { .. }
        ));
    }
}

fn frame(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(payload);
    b
}

#[test]
fn garbage_is_rejected() {
    use DecodeError::*;
    let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        ("empty buffer", vec![], HeaderTruncated { available: 0 }),
        ("kind 0", frame(0, &[]), UnknownKind(0)),
        ("kind 11", frame(11, &[0]), UnknownKind(11)),
        ("kind max", frame(u32::MAX, &[]), UnknownKind(u32::MAX)),
        ("tag 10", frame(2, &[10]), UnknownTag(10)),
        ("tag 255", frame(5, &[255, 0, 0, 0, 0]), UnknownTag(255)),
        ("bool 2", frame(2, &[7, 2]), InvalidBool(2)),
        ("bool 255", frame(2, &[7, 255]), InvalidBool(255)),
        ("utf8 0xff", frame(8, &[1, 0, 0, 0, 0xff]), InvalidUtf8),
        (
            "overlong nul",
            frame(8, &[2, 0, 0, 0, 0xc0, 0x80]),
            InvalidUtf8,
        ),
        (
            "surrogate",
            frame(6, &[3, 0, 0, 0, 0xed, 0xa0, 0x80]),
            InvalidUtf8,
        ),
        ("cut multibyte", frame(6, &[1, 0, 0, 0, 0xc3]), InvalidUtf8),
        (
            "str len past payload",
            frame(8, &[5, 0, 0, 0, b'a']),
            UnexpectedEnd {
                needed: 5,
                remaining: 1,
            },
        ),
        (
            "str len u32::MAX",
            frame(8, &[0xff, 0xff, 0xff, 0xff]),
            UnexpectedEnd {
                needed: u32::MAX as u64,
                remaining: 0,
            },
        ),
        (
            "argc past payload",
            frame(1, &[1, 0, 0, 0, b'f', 2, 0, 0, 0, 0]),
            CountTooLarge {
                count: 2,
                remaining: 1,
            },
        ),
        (
            "argc u32::MAX",
            frame(4, &[1, 0, 0, 0, b'f', 0xff, 0xff, 0xff, 0xff]),
            CountTooLarge {
                count: u32::MAX,
                remaining: 0,
            },
        ),
        (
            "table count max",
            frame(7, &[0xff, 0xff, 0xff, 0xff]),
            CountTooLarge {
                count: u32::MAX,
                remaining: 0,
            },
        ),
        (
            "table count 1, no entry",
            frame(7, &[1, 0, 0, 0]),
            CountTooLarge {
                count: 1,
                remaining: 0,
            },
        ),
        (
            "table empty name",
            frame(7, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            InvalidName { len: 0 },
        ),
        (
            "table param tag 10",
            frame(7, &[1, 0, 0, 0, 1, 0, 0, 0, b'f', 1, 10, 0]),
            UnknownTag(10),
        ),
        (
            "table result tag 12",
            frame(7, &[1, 0, 0, 0, 1, 0, 0, 0, b'f', 0, 12]),
            UnknownTag(12),
        ),
        (
            "table 33 params",
            {
                let mut p = vec![1, 0, 0, 0, 1, 0, 0, 0, b'f', 33];
                p.extend_from_slice(&[1; 34]);
                frame(7, &p)
            },
            TooManyParams(33),
        ),
        (
            "table duplicate name",
            frame(
                7,
                &[
                    2, 0, 0, 0, 1, 0, 0, 0, b'f', 0, 0, 1, 0, 0, 0, b'f', 1, 1, 1,
                ],
            ),
            DuplicateName,
        ),
        (
            "param count past payload",
            frame(7, &[1, 0, 0, 0, 1, 0, 0, 0, b'f', 3, 1]),
            UnexpectedEnd {
                needed: 3,
                remaining: 1,
            },
        ),
        (
            "void return with extra byte",
            frame(2, &[0, 0]),
            TrailingBytes { count: 1 },
        ),
        (
            "i32 short",
            frame(2, &[1, 0, 0, 0]),
            UnexpectedEnd {
                needed: 4,
                remaining: 3,
            },
        ),
        (
            "no value",
            frame(5, &[]),
            UnexpectedEnd {
                needed: 1,
                remaining: 0,
            },
        ),
        (
            "fault short",
            frame(9, &[0; 39]),
            UnexpectedEnd {
                needed: 8,
                remaining: 7,
            },
        ),
        ("fault long", frame(9, &[0; 41]), TrailingBytes { count: 1 }),
        (
            "log level 5",
            frame(10, &[5, 0, 0, 0, 0, 0, 0, 0]),
            InvalidLogLevel(5),
        ),
        (
            "error without message",
            frame(3, &[1, 0, 0, 0]),
            UnexpectedEnd {
                needed: 4,
                remaining: 0,
            },
        ),
        (
            "payload_len past buffer",
            vec![2, 0, 0, 0, 2, 0, 0, 0, 0],
            PayloadBeyondBuffer {
                payload_len: 2,
                available: 1,
            },
        ),
        (
            "header cut",
            vec![1, 0, 0, 0, 0, 0, 0],
            HeaderTruncated { available: 7 },
        ),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(decode_frame(&bytes), Err(want), "{name}");
        // Display never panics and says something.
        assert!(!want.to_string().is_empty());
    }
}

/// Tiny deterministic PRNG (xorshift64*), so the fuzz loop needs no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Random mutations of valid frames never panic the decoder, and whatever it accepts
/// re-encodes to exactly the bytes it read (the encoding is canonical).
#[test]
fn mutations_never_panic_and_accepted_frames_are_canonical() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds: Vec<Vec<u8>> = all_frame_kinds()
        .iter()
        .map(|f| f.to_vec().unwrap())
        .collect();
    let mut accepted = 0;
    for i in 0..200_000u32 {
        let mut b = seeds[i as usize % seeds.len()].clone();
        let edits = 1 + rng.next() % 4;
        for _ in 0..edits {
            let r = rng.next();
            match r % 4 {
                0 if !b.is_empty() => {
                    let at = (r >> 8) as usize % b.len();
                    b[at] ^= 1 << ((r >> 40) % 8);
                }
                1 if !b.is_empty() => {
                    let at = (r >> 8) as usize % b.len();
                    b[at] = (r >> 32) as u8;
                }
                2 => b.truncate((r >> 8) as usize % (b.len() + 1)),
                _ => b.push((r >> 16) as u8),
            }
        }
        if let Ok(f) = decode_frame(&b) {
            accepted += 1;
            let (_, payload) = split_frame(&b).unwrap();
            let consumed = HEADER_LEN + payload.len();
            assert_eq!(f.to_vec().unwrap(), b[..consumed], "{f:?}");
        }
    }
    assert!(accepted > 0);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..100_000 {
        let len = (rng.next() % 64) as usize;
        let kind = 1 + (rng.next() % 10) as u32;
        let mut payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.next().is_multiple_of(2) && payload.len() >= 4 {
            payload[..4].copy_from_slice(&((rng.next() % 8) as u32).to_le_bytes());
        }
        let _ = decode_frame(&frame(kind, &payload));
    }
}

#[test]
fn encoding_into_small_buffers_fails_cleanly() {
    for f in all_frame_kinds() {
        let need = f.encoded_len();
        for cap in 0..need {
            let mut buf = vec![0u8; cap];
            assert_eq!(
                f.encode(&mut buf),
                Err(EncodeError::BufferTooSmall { capacity: cap })
            );
        }
        let mut buf = vec![0u8; need + 3];
        assert_eq!(f.encode(&mut buf), Ok(need));
    }
}

#[test]
fn encoder_enforces_abi_limits() {
    let mut buf = vec![0u8; 1 << 20];
    let too_many_params = FunctionDesc {
        name: "f".into(),
        params: vec![ValueType::I32; 33],
        result: ValueType::Void,
    };
    assert!(matches!(
        table(vec![too_many_params]).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let long_name = FunctionDesc {
        name: "n".repeat(256),
        params: vec![],
        result: ValueType::Void,
    };
    assert!(matches!(
        table(vec![long_name]).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let f = FunctionDesc {
        name: "dup".into(),
        params: vec![],
        result: ValueType::Void,
    };
    assert!(matches!(
        table(vec![f.clone(), f]).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let empty_name = FunctionDesc {
        name: String::new(),
        params: vec![],
        result: ValueType::Void,
    };
    assert!(matches!(
        table(vec![empty_name]).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let many: Vec<_> = (0..4097)
        .map(|i| FunctionDesc {
            name: format!("f{i}"),
            params: vec![],
            result: ValueType::Void,
        })
        .collect();
    assert!(matches!(
        table(many[..4097].to_vec()).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let max = table(many[..4096].to_vec());
    let bytes = max.to_vec().unwrap();
    assert_eq!(decode_frame(&bytes).unwrap(), max);
    assert!(matches!(
        encode_log(&mut buf, 5, "x"),
        Err(EncodeError::LimitExceeded(_))
    ));
}

#[test]
fn type_and_kind_tables_match_the_abi() {
    for tag in 0..=255u8 {
        match ValueType::from_tag(tag) {
            Some(t) => {
                assert!(tag <= 9);
                assert_eq!(t.tag(), tag);
            }
            None => assert!(tag > 9),
        }
    }
    for k in 0..=64u32 {
        match FrameKind::from_u32(k) {
            Some(kind) => assert_eq!(kind.as_u32(), k),
            None => assert!(k == 0 || k > 10),
        }
    }
    let names: Vec<_> = (1..=10)
        .map(|k| FrameKind::from_u32(k).unwrap().name())
        .collect();
    assert_eq!(
        names,
        [
            "CALL",
            "RETURN",
            "ERROR",
            "HOST_CALL",
            "HOST_RETURN",
            "HOST_ERROR",
            "FUNCTION_TABLE",
            "PANIC",
            "FAULT",
            "LOG"
        ]
    );
    assert_eq!(&PEB_MAGIC.to_le_bytes(), b"HLSBPEB1");
}

/// The argument caps of `CALL` / `HOST_CALL` (issue #10): at most 32 arguments, none `void`, a
/// name of 1-255 bytes; the same on both sides of the codec, and a hostile argc is refused before
/// anything is allocated.
#[test]
fn invocation_limits() {
    use DecodeError::*;
    let name = |n: &str| {
        let mut p = (n.len() as u32).to_le_bytes().to_vec();
        p.extend_from_slice(n.as_bytes());
        p
    };
    for kind in [1u32, 4] {
        // 33 i32 arguments.
        let mut p = name("f");
        p.extend_from_slice(&33u32.to_le_bytes());
        for _ in 0..33 {
            p.extend_from_slice(&[1, 0, 0, 0, 0]);
        }
        assert_eq!(decode_frame(&frame(kind, &p)), Err(TooManyArgs(33)));
        // 4M void arguments: refused by the cap, not by decoding them.
        let mut p = name("f");
        p.extend_from_slice(&(4u32 << 20).to_le_bytes());
        p.resize(p.len() + (4 << 20), 0);
        assert_eq!(decode_frame(&frame(kind, &p)), Err(TooManyArgs(4 << 20)));
        // A void argument.
        let mut p = name("f");
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(0);
        assert_eq!(decode_frame(&frame(kind, &p)), Err(VoidArgument));
        // Names.
        let mut p = name("");
        p.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_frame(&frame(kind, &p)), Err(InvalidName { len: 0 }));
        let mut p = name(&"n".repeat(256));
        p.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode_frame(&frame(kind, &p)),
            Err(InvalidName { len: 256 })
        );
        // 32 arguments and a 255-byte name are fine.
        let mut p = name(&"n".repeat(255));
        p.extend_from_slice(&32u32.to_le_bytes());
        for _ in 0..32 {
            p.extend_from_slice(&[7, 1]);
        }
        assert!(decode_frame(&frame(kind, &p)).is_ok());
    }
    // A void parameter in a function table.
    assert_eq!(
        decode_frame(&frame(7, &[1, 0, 0, 0, 1, 0, 0, 0, b'f', 1, 0, 0])),
        Err(VoidParameter)
    );
    // The encoder refuses what the decoder would.
    let mut buf = vec![0u8; 4096];
    for (n, args) in [
        ("f", vec![Value::Void]),
        ("f", vec![Value::I32(0); 33]),
        ("", vec![]),
        (&*"n".repeat(256), vec![]),
    ] {
        assert!(matches!(
            encode_call(&mut buf, n, &args),
            Err(EncodeError::LimitExceeded(_))
        ));
        assert!(matches!(
            encode_host_call(&mut buf, n, &args),
            Err(EncodeError::LimitExceeded(_))
        ));
    }
    let void_param = FunctionDesc {
        name: "f".into(),
        params: vec![ValueType::Void],
        result: ValueType::Void,
    };
    assert!(matches!(
        table(vec![void_param]).encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
}

#[test]
fn host_imports_part() {
    // Absent: no bytes after the functions. Present and empty: a zero count. A name may be both
    // a guest function and an import (two namespaces).
    let f = desc("f", &[ValueType::I32], ValueType::I32);
    assert_eq!(
        table(vec![f.clone()]).to_vec().unwrap(),
        hex("07000000 0c000000 01000000 01000000 66 01 01 01")
    );
    let empty = Frame::FunctionTable {
        functions: vec![f.clone()],
        imports: Some(vec![]),
    };
    assert_eq!(
        empty.to_vec().unwrap(),
        hex("07000000 10000000 01000000 01000000 66 01 01 01 00000000")
    );
    let both = Frame::FunctionTable {
        functions: vec![f.clone()],
        imports: Some(vec![f.clone()]),
    };
    let bytes = both.to_vec().unwrap();
    assert_eq!(
        bytes,
        hex("07000000 18000000 01000000 01000000 66 01 01 01 01000000 01000000 66 01 01 01")
    );
    assert_eq!(decode_frame(&bytes).unwrap(), both);
    assert_eq!(both.encoded_len(), bytes.len());

    // Hostile imports parts: each is rejected, never read past the payload.
    let functions = "01000000 01000000 66 01 01 01";
    let reject = |imports: &str| {
        let payload = hex(&format!("{functions} {imports}"));
        decode_frame(&frame(7, &payload)).unwrap_err()
    };
    // A count that cannot fit, or one above the limit.
    assert!(matches!(
        reject("ffffffff"),
        DecodeError::CountTooLarge { .. }
    ));
    let mut huge = String::from("01100000");
    for i in 0..4097u32 {
        huge.push_str(&format!(" 04000000 {:08x} 00 00", i.swap_bytes()));
    }
    assert_eq!(reject(&huge), DecodeError::TooManyFunctions(4097));
    // A partial count, a truncated entry, trailing bytes after the part.
    assert!(matches!(reject("0100"), DecodeError::UnexpectedEnd { .. }));
    assert!(matches!(
        reject("01000000 01000000 66 01"),
        DecodeError::CountTooLarge { .. }
    ));
    assert!(matches!(
        reject("00000000 00"),
        DecodeError::TrailingBytes { count: 1 }
    ));
    // The entries' own limits: duplicate, empty or over-long name, void parameter, 33
    // parameters, unknown tags, invalid UTF-8.
    assert_eq!(
        reject("02000000 01000000 67 00 00 01000000 67 00 00"),
        DecodeError::DuplicateName
    );
    assert_eq!(
        reject("01000000 00000000 00 00 00"),
        DecodeError::InvalidName { len: 0 }
    );
    assert_eq!(
        reject("01000000 01000000 67 01 00 00"),
        DecodeError::VoidParameter
    );
    assert_eq!(
        reject(&format!("01000000 01000000 67 21 {} 00", "01".repeat(33))),
        DecodeError::TooManyParams(33)
    );
    assert_eq!(
        reject("01000000 01000000 67 00 0a"),
        DecodeError::UnknownTag(10)
    );
    assert_eq!(
        reject("01000000 01000000 ff 00 00"),
        DecodeError::InvalidUtf8
    );
    let long = format!("01000000 00010000 {} 00 00", "61".repeat(256));
    assert_eq!(reject(&long), DecodeError::InvalidName { len: 256 });

    // The encoder holds the imports to the same limits.
    let mut buf = vec![0u8; 1 << 20];
    let dup = Frame::FunctionTable {
        functions: vec![],
        imports: Some(vec![f.clone(), f.clone()]),
    };
    assert!(matches!(
        dup.encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    // Tables up to 64 entries are checked for duplicates on the stack, longer ones in a Vec:
    // both find a duplicate wherever it is, and pass a table without one.
    for n in [2usize, 63, 64, 65, 100, 4096] {
        let names = |dup: bool| -> Vec<_> {
            (0..n)
                .map(|i| {
                    let name = if dup && i == n - 1 {
                        "d0".into()
                    } else {
                        format!("d{i}")
                    };
                    desc(&name, &[], ValueType::Void)
                })
                .collect()
        };
        let table = |functions| Frame::FunctionTable {
            functions,
            imports: None,
        };
        assert!(table(names(false)).encode(&mut buf).is_ok(), "{n} entries");
        assert!(
            matches!(
                table(names(true)).encode(&mut buf),
                Err(EncodeError::LimitExceeded("duplicate function name"))
            ),
            "{n} entries, a duplicate"
        );
    }
    let void_param = Frame::FunctionTable {
        functions: vec![],
        imports: Some(vec![desc("v", &[ValueType::Void], ValueType::Void)]),
    };
    assert!(matches!(
        void_param.encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
    let many: Vec<_> = (0..4097)
        .map(|i| desc(&format!("h{i}"), &[], ValueType::Void))
        .collect();
    let too_many = Frame::FunctionTable {
        functions: vec![],
        imports: Some(many),
    };
    assert!(matches!(
        too_many.encode(&mut buf),
        Err(EncodeError::LimitExceeded(_))
    ));
}
