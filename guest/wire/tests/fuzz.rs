//! Property tests of the decoder against hostile input (issue #10): for any bytes, and for any
//! mutation of a valid frame, `decode_frame` returns (never panics, never reads past the
//! buffer), and whatever it accepts re-encodes to a frame that decodes to the same value.
//!
//! Cases: `HL_WIRE_FUZZ_CASES` (default 2,000 per property, the CI run); `deno task fuzz-wire`
//! runs 5,000,000 per property (10 million in all).

use hl_wire::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn cases() -> u32 {
    std::env::var("HL_WIRE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    })
}

/// Decodes `bytes`; if accepted, the frame's encoding decodes to the same frame.
fn check(bytes: &[u8]) {
    if let Ok(frame) = decode_frame(bytes) {
        let mut buf = vec![0u8; frame.encoded_len()];
        let n = frame
            .encode(&mut buf)
            .expect("an accepted frame re-encodes");
        assert_eq!(
            decode_frame(&buf[..n]).expect("its encoding decodes"),
            frame
        );
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let frames = [
        Frame::Call {
            name: "add".into(),
            args: vec![Value::I32(1), Value::String("x".into()), Value::Bool(true)],
        },
        Frame::HostCall {
            name: "h".into(),
            args: vec![Value::Bytes(vec![1, 2, 3]), Value::F64(1.5), Value::U64(7)],
        },
        Frame::Return(Value::String("héllo".into())),
        Frame::Error {
            code: 1000,
            message: "boom".into(),
        },
        Frame::HostReturn(Value::I64(-1)),
        Frame::HostError {
            message: "no".into(),
        },
        Frame::Panic {
            message: "p".into(),
        },
        Frame::Log {
            level: 2,
            message: "log".into(),
        },
        // A function table with the imports part (declared host functions).
        Frame::FunctionTable {
            functions: vec![FunctionDesc {
                name: "f".into(),
                params: vec![ValueType::I32, ValueType::String],
                result: ValueType::Bytes,
            }],
            imports: Some(vec![FunctionDesc {
                name: "now_ms".into(),
                params: vec![],
                result: ValueType::U64,
            }]),
        },
    ];
    frames
        .iter()
        .map(|f| {
            let mut buf = vec![0u8; f.encoded_len()];
            let n = f.encode(&mut buf).unwrap();
            buf.truncate(n);
            buf
        })
        .collect()
}

#[test]
fn arbitrary_bytes_never_panic() {
    runner()
        .run(&proptest::collection::vec(any::<u8>(), 0..96), |bytes| {
            check(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_valid_frames_never_panic() {
    let seeds = seeds();
    let strategy = (
        0..seeds.len(),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        any::<u16>(),
    );
    runner()
        .run(&strategy, |(which, edits, cut)| {
            let mut bytes = seeds[which].clone();
            for (at, v) in edits {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            // Sometimes cut or extend, so lengths disagree with payload_len.
            match cut % 4 {
                0 => bytes.truncate(usize::from(cut) % (bytes.len() + 1)),
                1 => bytes.extend(std::iter::repeat_n(0xAA, usize::from(cut % 16))),
                _ => {}
            }
            check(&bytes);
            Ok(())
        })
        .unwrap();
}
