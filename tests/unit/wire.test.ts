import assert from "node:assert/strict";
import type { ValueType } from "../../src/abi.ts";
import { ArgumentError, ProtocolError } from "../../src/errors.ts";
import {
  decodeFrame,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameEncoder,
  frameSize,
  fromValue,
  toValue,
  toValues,
  utf8Length,
  type Value,
} from "../../src/wire.ts";
import { LIMIT_VALUES } from "../../tools/gen_vectors.ts";

const MIB = 1024 * 1024;

function roundTrip(frame: Frame, bufferSize = 4096): Frame {
  const buffer = new Uint8Array(bufferSize);
  const size = encodeFrame(frame, buffer);
  assert.equal(size, frameSize(frame));
  return decodeFrame(buffer.subarray(0, size));
}

function f32Bits(v: Value): number {
  assert.equal(v.type, "f32");
  const dv = new DataView(new ArrayBuffer(4));
  if (v.type === "f32") {
    if (v.bits !== undefined) return v.bits;
    dv.setFloat32(0, v.value, true);
  }
  return dv.getUint32(0, true);
}

Deno.test("wire round trips", async (t) => {
  await t.step("every value type at its limits, in every value-carrying frame", () => {
    for (const [name, value] of LIMIT_VALUES) {
      for (const kind of ["RETURN", "HOST_RETURN"] as const) {
        assert.deepStrictEqual(roundTrip({ kind, value }), { kind, value }, name);
      }
      for (const kind of ["CALL", "HOST_CALL"] as const) {
        const frame: Frame = { kind, name: "f", args: [value, value] };
        // void is a result type only: an argument of that type is malformed (issue #10).
        if (value.type === "void") assert.throws(() => roundTrip(frame), ProtocolError);
        else assert.deepStrictEqual(roundTrip(frame), frame, name);
      }
    }
  });

  await t.step("NaN payloads and -0 survive bit for bit", () => {
    for (const bits of [0x7fa00001, 0xffc12345, 0x7f800001, 0xffffffff, 0x7fc00000]) {
      const frame = roundTrip({ kind: "RETURN", value: { type: "f32", value: NaN, bits } });
      assert.ok(frame.kind === "RETURN");
      assert.equal(f32Bits(frame.value), bits);
    }
    for (const bits of [0x7ff0000000000001n, 0xfff8deadbeef0001n, 0xffffffffffffffffn]) {
      const frame = roundTrip({ kind: "RETURN", value: { type: "f64", value: NaN, bits } });
      assert.ok(frame.kind === "RETURN" && frame.value.type === "f64");
      assert.equal(frame.value.bits, bits);
    }
    const zero = roundTrip({ kind: "RETURN", value: { type: "f64", value: -0 } });
    assert.ok(zero.kind === "RETURN" && zero.value.type === "f64");
    assert.ok(Object.is(zero.value.value, -0));
    const zero32 = roundTrip({ kind: "RETURN", value: { type: "f32", value: -0 } });
    assert.ok(zero32.kind === "RETURN" && zero32.value.type === "f32");
    assert.ok(Object.is(zero32.value.value, -0));
  });

  await t.step("f32 rounds JS numbers to single precision", () => {
    const frame = roundTrip({ kind: "RETURN", value: { type: "f32", value: 0.1 } });
    assert.deepStrictEqual(frame, {
      kind: "RETURN",
      value: { type: "f32", value: Math.fround(0.1) },
    });
  });

  await t.step("text: non-ASCII, astral, BOM, NUL, around the short-string threshold", () => {
    const texts = [
      "",
      "a",
      "\ufeff",
      "\ufeffx",
      "\0",
      "é",
      "€",
      "😀",
      "𝄞x😀",
      "\u{10ffff}",
      "a".repeat(63),
      "a".repeat(64),
      "a".repeat(65),
      "a".repeat(63) + "é",
      "a".repeat(64) + "é",
      "é" + "a".repeat(70),
      "日本語".repeat(30),
    ];
    for (const text of texts) {
      const value: Value = { type: "string", value: text };
      assert.deepStrictEqual(roundTrip({ kind: "RETURN", value }), { kind: "RETURN", value });
      const frame: Frame = { kind: "CALL", name: text, args: [] };
      const nameBytes = new TextEncoder().encode(text).length;
      // Function names are 1-255 bytes (issue #10); the others are rejected.
      if (nameBytes >= 1 && nameBytes <= 255) assert.deepStrictEqual(roundTrip(frame), frame);
      else assert.throws(() => roundTrip(frame), ProtocolError);
      assert.equal(frameSize(frame), 16 + nameBytes);
    }
  });

  await t.step("1 MiB strings and bytes", () => {
    const ascii = "x".repeat(MIB);
    const astral = "a😀é".repeat(MIB / 8);
    const bytes = Uint8Array.from({ length: MIB }, (_, i) => (i * 31) & 0xff);
    for (
      const value of [
        { type: "string", value: ascii },
        { type: "string", value: astral },
        { type: "bytes", value: bytes },
      ] as Value[]
    ) {
      assert.deepStrictEqual(roundTrip({ kind: "RETURN", value }, 3 * MIB), {
        kind: "RETURN",
        value,
      });
    }
  });

  await t.step("every frame kind", () => {
    const frames: Frame[] = [
      { kind: "CALL", name: "add", args: [{ type: "i32", value: 1 }, { type: "i32", value: 2 }] },
      { kind: "RETURN", value: { type: "void" } },
      { kind: "ERROR", code: 4294967295, message: "bad ✗" },
      { kind: "HOST_CALL", name: "now", args: [] },
      { kind: "HOST_RETURN", value: { type: "u64", value: 2n ** 64n - 1n } },
      { kind: "HOST_ERROR", message: "" },
      {
        kind: "FUNCTION_TABLE",
        functions: [
          { name: "a", params: [], result: "void" },
          { name: "b".repeat(255), params: new Array<ValueType>(32).fill("bytes"), result: "f32" },
        ],
      },
      { kind: "PANIC", message: "at lib.rs:1" },
      { kind: "FAULT", vector: 14n, errorCode: 2n, rip: 1n, cr2: 2n ** 64n - 1n, rsp: 8n },
      { kind: "LOG", level: 4, message: "trace" },
    ];
    for (const frame of frames) assert.deepStrictEqual(roundTrip(frame), frame);
  });

  await t.step("a decoder reads a frame at the start of a larger buffer", () => {
    const buffer = new Uint8Array(4096).fill(0xee);
    const encoder = new FrameEncoder(buffer);
    const decoder = new FrameDecoder(buffer);
    for (let i = 0; i < 3; i++) {
      const frame: Frame = { kind: "LOG", level: i, message: "m".repeat(i * 10) };
      encoder.encode(frame);
      assert.deepStrictEqual(decoder.decode(), frame);
    }
  });

  await t.step("decoded strings and bytes are copies", () => {
    const buffer = new Uint8Array(256);
    encodeFrame(
      { kind: "RETURN", value: { type: "bytes", value: Uint8Array.of(1, 2, 3) } },
      buffer,
    );
    const frame = decodeFrame(buffer);
    buffer.fill(0);
    assert.deepStrictEqual(frame, {
      kind: "RETURN",
      value: { type: "bytes", value: Uint8Array.of(1, 2, 3) },
    });
    assert.ok(frame.kind === "RETURN" && frame.value.type === "bytes");
    assert.notEqual(frame.value.value.buffer, buffer.buffer);
  });

  await t.step("a lone surrogate is encoded as U+FFFD", () => {
    const frame = roundTrip({ kind: "PANIC", message: "a\ud800b" });
    assert.deepStrictEqual(frame, { kind: "PANIC", message: "a\ufffdb" });
    assert.equal(utf8Length("a\ud800b"), 5);
    assert.equal(utf8Length("\udc00"), 3);
    assert.equal(utf8Length("😀"), 4);
  });
});

Deno.test("wire encoding limits", async (t) => {
  await t.step(
    "a frame that does not fit is an ArgumentError naming its size and the option",
    () => {
      const frame: Frame = {
        kind: "CALL",
        name: "f",
        args: [{ type: "bytes", value: new Uint8Array(5000) }],
      };
      const size = frameSize(frame);
      assert.throws(
        () => encodeFrame(frame, new Uint8Array(4096)),
        (err: unknown) =>
          err instanceof ArgumentError && err.message.includes(`${size} bytes`) &&
          err.message.includes("4096") && err.message.includes("inputSize"),
      );
      assert.throws(
        () => new FrameEncoder(new Uint8Array(16), "outputSize").encode(frame),
        /raise the outputSize option/,
      );
    },
  );

  await t.step("every buffer shorter than the frame is refused; the exact size fits", () => {
    const frames: Frame[] = [
      {
        kind: "CALL",
        name: "héllo",
        args: LIMIT_VALUES.map((e) => e[1]).filter((v) => v.type !== "void").slice(0, 32),
      },
      { kind: "HOST_ERROR", message: "a".repeat(100) },
      { kind: "PANIC", message: "é".repeat(100) },
      {
        kind: "FUNCTION_TABLE",
        functions: [{ name: "f", params: ["i32", "u64"], result: "bool" }],
      },
      { kind: "FAULT", vector: 1n, errorCode: 2n, rip: 3n, cr2: 4n, rsp: 5n },
    ];
    for (const frame of frames) {
      const size = frameSize(frame);
      for (let n = 0; n < size; n++) {
        assert.throws(() => encodeFrame(frame, new Uint8Array(n)), ArgumentError);
      }
      const buffer = new Uint8Array(size);
      assert.equal(encodeFrame(frame, buffer), size);
      assert.deepStrictEqual(decodeFrame(buffer), frame);
    }
  });
});

Deno.test("wire decoding rejects malformed frames with ProtocolError", async (t) => {
  const reject = (bytes: Uint8Array | number[], pattern?: RegExp) => {
    assert.throws(
      () => decodeFrame(bytes instanceof Uint8Array ? bytes : Uint8Array.from(bytes)),
      (err: unknown) => err instanceof ProtocolError && (!pattern || pattern.test(err.message)),
    );
  };

  await t.step("header and lengths", () => {
    reject([], /header/);
    reject([2, 0, 0, 0, 0, 0, 0], /header/);
    reject([2, 0, 0, 0, 2, 0, 0, 0, 0], /payload_len/);
    reject([0, 0, 0, 0, 0, 0, 0, 0], /unknown frame kind 0/);
    reject([11, 0, 0, 0, 0, 0, 0, 0], /unknown frame kind 11/);
    reject([2, 0, 0, 0, 2, 0, 0, 0, 0, 0], /left over/);
  });

  await t.step("payload_len is bounded by the view, not the underlying buffer", () => {
    const backing = new Uint8Array(64);
    encodeFrame({ kind: "PANIC", message: "x".repeat(20) }, backing);
    reject(backing.subarray(0, 20), /payload_len/);
    const offsetView = new Uint8Array(64);
    encodeFrame({ kind: "PANIC", message: "x".repeat(20) }, offsetView.subarray(8));
    reject(offsetView.subarray(8, 28), /payload_len/);
  });

  await t.step("values", () => {
    reject([2, 0, 0, 0, 1, 0, 0, 0, 10], /tag 10/);
    reject([2, 0, 0, 0, 2, 0, 0, 0, 7, 2], /bool/);
    reject([2, 0, 0, 0, 5, 0, 0, 0, 8, 1, 0, 0, 0], /string value/);
    reject([2, 0, 0, 0, 6, 0, 0, 0, 8, 1, 0, 0, 0, 0xff], /UTF-8/);
    reject([2, 0, 0, 0, 4, 0, 0, 0, 3, 0, 0, 0], /i64/);
  });

  await t.step("function table limits", () => {
    const entry = (name: string, params: number[], result = 0) => {
      const n = new TextEncoder().encode(name);
      return [n.length, 0, 0, 0, ...n, params.length, ...params, result];
    };
    const table = (entries: number[][]) => {
      const payload = [entries.length, 0, 0, 0, ...entries.flat()];
      return [7, 0, 0, 0, payload.length & 0xff, payload.length >> 8, 0, 0, ...payload];
    };
    assert.deepStrictEqual(decodeFrame(Uint8Array.from(table([entry("f", [1])]))), {
      kind: "FUNCTION_TABLE",
      functions: [{ name: "f", params: ["i32"], result: "void" }],
    });
    reject(table([entry("", [])]), /function name/);
    reject(table([entry("x".repeat(256), [])]), /function name/);
    reject(table([entry("f", []), entry("f", [])]), /twice/);
    reject(table([entry("f", new Array(33).fill(1))]), /33 parameters/);
  });

  await t.step("huge counts are rejected before allocating", () => {
    const buffer = new Uint8Array(64);
    const view = new DataView(buffer.buffer);
    view.setUint32(0, 1, true); // CALL
    view.setUint32(4, 10, true);
    view.setUint32(8, 1, true); // a one-byte name
    buffer[12] = 0x66;
    view.setUint32(13, 0xffffffff, true); // argc
    // Refused by the count checks themselves (the messages name them), not by walking the data.
    reject(buffer, /argc/);
    view.setUint32(0, 7, true); // FUNCTION_TABLE
    view.setUint32(4, 5, true);
    view.setUint32(8, 4096, true);
    reject(buffer, /count/);
  });
});

Deno.test("marshaling JS values", async (t) => {
  const bad = (arg: unknown, type: ValueType, pattern?: RegExp) =>
    assert.throws(
      () => toValue(arg, type, "fn", 3),
      (err: unknown) =>
        err instanceof ArgumentError && err.message.includes("fn: argument 3") &&
        (!pattern || pattern.test(err.message)),
      `${String(arg)} as ${type}`,
    );

  await t.step("accepts values in range", () => {
    assert.deepStrictEqual(toValue(-(2 ** 31), "i32", "fn", 0), { type: "i32", value: -(2 ** 31) });
    assert.deepStrictEqual(toValue(2 ** 31 - 1, "i32", "fn", 0), {
      type: "i32",
      value: 2 ** 31 - 1,
    });
    assert.deepStrictEqual(toValue(2 ** 32 - 1, "u32", "fn", 0), {
      type: "u32",
      value: 2 ** 32 - 1,
    });
    assert.deepStrictEqual(toValue(-(2n ** 63n), "i64", "fn", 0), {
      type: "i64",
      value: -(2n ** 63n),
    });
    assert.deepStrictEqual(toValue(2n ** 64n - 1n, "u64", "fn", 0), {
      type: "u64",
      value: 2n ** 64n - 1n,
    });
    assert.deepStrictEqual(toValue(NaN, "f32", "fn", 0), { type: "f32", value: NaN });
    assert.deepStrictEqual(toValue(1e300, "f64", "fn", 0), { type: "f64", value: 1e300 });
    assert.deepStrictEqual(toValue(false, "bool", "fn", 0), { type: "bool", value: false });
    assert.deepStrictEqual(toValue("😀", "string", "fn", 0), { type: "string", value: "😀" });
    const bytes = new Uint8Array(2);
    assert.deepStrictEqual(toValue(bytes, "bytes", "fn", 0), { type: "bytes", value: bytes });
    assert.deepStrictEqual(toValue(undefined, "void", "fn", 0), { type: "void" });
  });

  await t.step("rejects the wrong type or a value out of range", () => {
    for (const v of [1.5, 2 ** 31, -(2 ** 31) - 1, NaN, Infinity, "1", 1n, null, undefined, true]) {
      bad(v, "i32", /i32/);
    }
    for (const v of [-1, 2 ** 32, 0.5, "0", 0n]) bad(v, "u32", /u32/);
    for (const v of [1, 2n ** 63n, -(2n ** 63n) - 1n, "1"]) bad(v, "i64", /i64/);
    for (const v of [0, -1n, 2n ** 64n]) bad(v, "u64", /u64/);
    for (const v of ["1", 1n, null]) {
      bad(v, "f32", /f32/);
      bad(v, "f64", /f64/);
    }
    for (const v of [0, 1, "true", null]) bad(v, "bool", /boolean/);
    for (const v of [1, null, new String("s"), "\ud800"]) bad(v, "string", /string/);
    for (const v of [new ArrayBuffer(1), [1, 2], "ab", new Uint16Array(1), null]) {
      bad(v, "bytes", /Uint8Array/);
    }
    for (const v of [null, 0, ""]) bad(v, "void", /undefined/);
  });

  await t.step("a void return value ignores what it is given", () => {
    assert.deepStrictEqual(toValue(42, "void", "host", -1), { type: "void" });
    assert.throws(() => toValue("x", "i32", "host", -1), /host: return value must be an i32/);
  });

  await t.step("arity", () => {
    assert.deepStrictEqual(toValues([1, 2n], ["i32", "u64"], "f"), [
      { type: "i32", value: 1 },
      { type: "u64", value: 2n },
    ]);
    assert.throws(
      () => toValues([1], ["i32", "i32"], "add"),
      (err: unknown) =>
        err instanceof ArgumentError &&
        /add takes 2 arguments \(i32, i32\), got 1/.test(err.message),
    );
    assert.throws(() => toValues([1, 2], [], "f"), /f takes 0 arguments/);
    assert.throws(() => toValues([1, 2.5], ["i32", "i32"], "f"), /argument 1/);
  });

  await t.step("values back to JS", () => {
    assert.equal(fromValue({ type: "void" }), undefined);
    assert.equal(fromValue({ type: "i64", value: -5n }), -5n);
    assert.equal(fromValue({ type: "u32", value: 7 }), 7);
    assert.equal(fromValue({ type: "bool", value: true }), true);
    assert.ok(Number.isNaN(fromValue({ type: "f32", value: NaN, bits: 0x7fa00001 })));
    const bytes = Uint8Array.of(1);
    assert.equal(fromValue({ type: "bytes", value: bytes }), bytes);
  });
});

Deno.test("HOST_CALL/CALL caps: a 4 MiB frame of 4M void arguments is refused cheaply", () => {
  // Issue #10: argc was bounded only by the bytes left, so this grew RSS by 320 MB.
  const argc = 4 * MIB;
  for (const kind of [1, 4]) {
    const buf = new Uint8Array(8 + 5 + 4 + argc);
    const view = new DataView(buf.buffer);
    view.setUint32(0, kind, true);
    view.setUint32(4, buf.length - 8, true);
    view.setUint32(8, 1, true);
    buf[12] = 0x66;
    view.setUint32(13, argc, true);
    // The message names the count: refused before any argument was decoded.
    assert.throws(() => decodeFrame(buf), (e: unknown) => {
      assert.ok(e instanceof ProtocolError);
      assert.match(e.message, /more than 32 arguments/);
      return true;
    });
  }
});

Deno.test("LOG levels above 4 are a ProtocolError in the decoder", () => {
  const log = (level: number) => {
    const buf = new Uint8Array(16);
    const view = new DataView(buf.buffer);
    view.setUint32(0, 10, true);
    view.setUint32(4, 8, true);
    view.setUint32(8, level, true);
    return buf;
  };
  assert.deepStrictEqual(decodeFrame(log(4)), { kind: "LOG", level: 4, message: "" });
  for (const level of [5, 0xffffffff]) assert.throws(() => decodeFrame(log(level)), ProtocolError);
});

Deno.test("FUNCTION_TABLE: the optional imports part (declared host functions)", () => {
  const buf = new Uint8Array(4096);
  const functions = [{ name: "stamp", params: [], result: "u64" }] as const;
  const imports = [{ name: "now_ms", params: [], result: "u64" }] as const;
  // Absent: not declared (an older guest); the frame decodes without `imports`.
  let n = encodeFrame({ kind: "FUNCTION_TABLE", functions }, buf);
  let frame = decodeFrame(buf.subarray(0, n));
  assert.deepEqual(frame, { kind: "FUNCTION_TABLE", functions });
  assert.equal("imports" in frame, false);
  // Present, even empty: four more bytes (the count).
  const m = encodeFrame({ kind: "FUNCTION_TABLE", functions, imports: [] }, buf);
  assert.equal(m, n + 4);
  assert.deepEqual(decodeFrame(buf.subarray(0, m)), {
    kind: "FUNCTION_TABLE",
    functions,
    imports: [],
  });
  n = encodeFrame({ kind: "FUNCTION_TABLE", functions, imports }, buf);
  frame = decodeFrame(buf.subarray(0, n));
  assert.deepEqual(frame, { kind: "FUNCTION_TABLE", functions, imports });
  assert.equal(frameSize(frame), n);
  // Hostile: a huge imports count is refused before anything is allocated, and named as such.
  const view = new DataView(buf.buffer);
  n = encodeFrame({ kind: "FUNCTION_TABLE", functions, imports: [] }, buf);
  view.setUint32(n - 4, 0xffffffff, true);
  assert.throws(
    () => decodeFrame(buf.subarray(0, n)),
    (e) => e instanceof ProtocolError && /host import table has 4294967295 entries/.test(e.message),
  );
  view.setUint32(n - 4, 2, true);
  assert.throws(
    () => decodeFrame(buf.subarray(0, n)),
    (e) => e instanceof ProtocolError && /host import count 2 cannot fit/.test(e.message),
  );
});
