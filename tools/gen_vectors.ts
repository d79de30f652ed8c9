/**
 * Generates tests/vectors/wire.json, the wire-format vectors both the TS host and the Rust guest
 * test against. Run: `deno run --allow-write=tests/vectors tools/gen_vectors.ts`.
 *
 * Format: `{"abi_version", "constants": {...}, "ports": {NAME: number}, "frames": [{name, hex,
 * frame}], "malformed": [{name, hex, reason}]}`. `constants` holds the ABI's numbers (ports, frame
 * kinds, value tags, PEB offsets, error codes, log levels, limits), which the TS and Rust tests
 * both assert against their own copies.
 * `hex` is the whole buffer handed to the decoder (lowercase). In `frame`, i64/u64 values and FAULT
 * fields are decimal strings, f32/f64 values are their IEEE-754 bit patterns as "0x" + 8 or 16 hex
 * digits, bytes are hex strings. Malformed reasons that start with "limit:" break a limit of the
 * ABI (names, table size, parameter count) rather than the byte layout.
 *
 * @module
 */

import {
  ABI_VERSION,
  ErrorCode,
  FRAME_HEADER_SIZE,
  FrameKind,
  LogLevel,
  MAX_FUNCTIONS,
  MAX_LOG_LEVEL,
  MAX_NAME_LENGTH,
  MAX_PARAMS,
  MIN_NAME_LENGTH,
  PEB_MAGIC,
  PebOffset,
  Port,
  ValueTag,
  type ValueType,
} from "../src/abi.ts";
import { encodeFrame, type Frame, type FunctionSignature, type Value } from "../src/wire.ts";

/** A value in the vectors' JSON form. */
export type JsonValue = { type: ValueType; value?: number | string | boolean };

/** A frame in the vectors' JSON form. */
export type JsonFrame = { kind: string; [field: string]: unknown };

/** The ABI's constants, for every implementation to assert (issue #10: copies drift). */
export interface WireConstants {
  abi_version: number;
  /** "0x" + 16 hex digits. */
  peb_magic: string;
  frame_header_size: number;
  ports: Record<string, number>;
  frame_kinds: Record<string, number>;
  value_tags: Record<string, number>;
  /** snake_case field names (docs/abi.md) to byte offsets. */
  peb_offsets: Record<string, number>;
  error_codes: Record<string, number>;
  log_levels: Record<string, number>;
  limits: Record<string, number>;
}

/** The vectors file. */
export interface WireVectors {
  abi_version: number;
  constants: WireConstants;
  ports: Record<string, number>;
  frames: { name: string; hex: string; frame: JsonFrame }[];
  malformed: { name: string; hex: string; reason: string }[];
}

/** Lowercase hex of `bytes`. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of a hex string. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0) throw new Error(`odd-length hex: ${hex.length}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

const f32View = new DataView(new ArrayBuffer(8));

function f32FromBits(bits: number): number {
  f32View.setUint32(0, bits, true);
  return f32View.getFloat32(0, true);
}

function f64FromBits(bits: bigint): number {
  f32View.setBigUint64(0, bits, true);
  return f32View.getFloat64(0, true);
}

function f32Bits(v: { value: number; bits?: number }): number {
  if (v.bits !== undefined) return v.bits;
  f32View.setFloat32(0, v.value, true);
  return f32View.getUint32(0, true);
}

function f64Bits(v: { value: number; bits?: bigint }): bigint {
  if (v.bits !== undefined) return v.bits;
  f32View.setFloat64(0, v.value, true);
  return f32View.getBigUint64(0, true);
}

/** A typed f32 value from its bit pattern, the way the decoder represents it. */
export function f32(bits: number): Value {
  const value = f32FromBits(bits);
  return value === value ? { type: "f32", value } : { type: "f32", value, bits };
}

/** A typed f64 value from its bit pattern, the way the decoder represents it. */
export function f64(bits: bigint): Value {
  const value = f64FromBits(bits);
  return value === value ? { type: "f64", value } : { type: "f64", value, bits };
}

/** Converts a value to its JSON form. */
export function valueToJson(v: Value): JsonValue {
  switch (v.type) {
    case "void":
      return { type: v.type };
    case "i32":
    case "u32":
    case "bool":
    case "string":
      return { type: v.type, value: v.value };
    case "i64":
    case "u64":
      return { type: v.type, value: v.value.toString() };
    case "f32":
      return { type: v.type, value: `0x${f32Bits(v).toString(16).padStart(8, "0")}` };
    case "f64":
      return { type: v.type, value: `0x${f64Bits(v).toString(16).padStart(16, "0")}` };
    case "bytes":
      return { type: v.type, value: toHex(v.value) };
  }
}

/** Converts a value from its JSON form. */
export function valueFromJson(j: JsonValue): Value {
  const value = j.value;
  switch (j.type) {
    case "void":
      return { type: "void" };
    case "i32":
    case "u32":
      return { type: j.type, value: value as number };
    case "bool":
      return { type: j.type, value: value as boolean };
    case "string":
      return { type: j.type, value: value as string };
    case "i64":
    case "u64":
      return { type: j.type, value: BigInt(value as string) };
    case "f32":
      return f32(Number.parseInt((value as string).slice(2), 16));
    case "f64":
      return f64(BigInt(value as string));
    case "bytes":
      return { type: j.type, value: fromHex(value as string) };
  }
}

/** Converts a frame to its JSON form. */
export function frameToJson(f: Frame): JsonFrame {
  switch (f.kind) {
    case "CALL":
    case "HOST_CALL":
      return { kind: f.kind, name: f.name, args: f.args.map(valueToJson) };
    case "RETURN":
    case "HOST_RETURN":
      return { kind: f.kind, value: valueToJson(f.value) };
    case "ERROR":
      return { kind: f.kind, code: f.code, message: f.message };
    case "HOST_ERROR":
    case "PANIC":
      return { kind: f.kind, message: f.message };
    case "FUNCTION_TABLE": {
      const table = (fns: readonly FunctionSignature[]) =>
        fns.map((fn) => ({ name: fn.name, params: [...fn.params], result: fn.result }));
      // "imports" is there exactly when the frame has the imports part.
      return f.imports === undefined
        ? { kind: f.kind, functions: table(f.functions) }
        : { kind: f.kind, functions: table(f.functions), imports: table(f.imports) };
    }
    case "FAULT":
      return {
        kind: f.kind,
        vector: f.vector.toString(),
        error_code: f.errorCode.toString(),
        rip: f.rip.toString(),
        cr2: f.cr2.toString(),
        rsp: f.rsp.toString(),
      };
    case "LOG":
      return { kind: f.kind, level: f.level, message: f.message };
  }
}

/** Converts a frame from its JSON form. */
export function frameFromJson(j: JsonFrame): Frame {
  const s = (k: string) => j[k] as string;
  switch (j.kind) {
    case "CALL":
    case "HOST_CALL":
      return { kind: j.kind, name: s("name"), args: (j.args as JsonValue[]).map(valueFromJson) };
    case "RETURN":
    case "HOST_RETURN":
      return { kind: j.kind, value: valueFromJson(j.value as JsonValue) };
    case "ERROR":
      return { kind: j.kind, code: j.code as number, message: s("message") };
    case "HOST_ERROR":
    case "PANIC":
      return { kind: j.kind, message: s("message") };
    case "FUNCTION_TABLE":
      return j.imports === undefined
        ? { kind: j.kind, functions: j.functions as FunctionSignature[] }
        : {
          kind: j.kind,
          functions: j.functions as FunctionSignature[],
          imports: j.imports as FunctionSignature[],
        };
    case "FAULT":
      return {
        kind: j.kind,
        vector: BigInt(s("vector")),
        errorCode: BigInt(s("error_code")),
        rip: BigInt(s("rip")),
        cr2: BigInt(s("cr2")),
        rsp: BigInt(s("rsp")),
      };
    case "LOG":
      return { kind: j.kind, level: j.level as number, message: s("message") };
    default:
      throw new Error(`unknown frame kind ${j.kind}`);
  }
}

// ---- the valid frames ----

const i32 = (value: number): Value => ({ type: "i32", value });
const u32 = (value: number): Value => ({ type: "u32", value });
const i64 = (value: bigint): Value => ({ type: "i64", value });
const u64 = (value: bigint): Value => ({ type: "u64", value });
const bool = (value: boolean): Value => ({ type: "bool", value });
const str = (value: string): Value => ({ type: "string", value });
const bytes = (value: Uint8Array): Value => ({ type: "bytes", value });
const VOID: Value = { type: "void" };

const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);

/** Values of every type at its limits, with a name for each. */
export const LIMIT_VALUES: readonly [string, Value][] = [
  ["void", VOID],
  ["i32_zero", i32(0)],
  ["i32_one", i32(1)],
  ["i32_minus_one", i32(-1)],
  ["i32_min", i32(-2147483648)],
  ["i32_max", i32(2147483647)],
  ["u32_zero", u32(0)],
  ["u32_one", u32(1)],
  ["u32_max", u32(4294967295)],
  ["i64_zero", i64(0n)],
  ["i64_minus_one", i64(-1n)],
  ["i64_min", i64(-(2n ** 63n))],
  ["i64_max", i64(2n ** 63n - 1n)],
  ["i64_above_2_53", i64(2n ** 53n + 1n)],
  ["u64_zero", u64(0n)],
  ["u64_max", u64(2n ** 64n - 1n)],
  ["f32_zero", f32(0x00000000)],
  ["f32_negative_zero", f32(0x80000000)],
  ["f32_one_and_half", f32(0x3fc00000)],
  ["f32_infinity", f32(0x7f800000)],
  ["f32_negative_infinity", f32(0xff800000)],
  ["f32_quiet_nan", f32(0x7fc00000)],
  ["f32_signalling_nan_payload", f32(0x7fa00001)],
  ["f32_negative_nan_payload", f32(0xffc12345)],
  ["f32_smallest_subnormal", f32(0x00000001)],
  ["f32_max", f32(0x7f7fffff)],
  ["f64_zero", f64(0n)],
  ["f64_negative_zero", f64(0x8000000000000000n)],
  ["f64_one_and_half", f64(0x3ff8000000000000n)],
  ["f64_tenth", f64(0x3fb999999999999an)],
  ["f64_infinity", f64(0x7ff0000000000000n)],
  ["f64_negative_infinity", f64(0xfff0000000000000n)],
  ["f64_quiet_nan", f64(0x7ff8000000000000n)],
  ["f64_signalling_nan_payload", f64(0x7ff0000000000001n)],
  ["f64_negative_nan_payload", f64(0xfff8deadbeef0001n)],
  ["f64_smallest_subnormal", f64(1n)],
  ["f64_max", f64(0x7fefffffffffffffn)],
  ["bool_false", bool(false)],
  ["bool_true", bool(true)],
  ["string_empty", str("")],
  ["string_ascii", str("hello, world")],
  ["string_latin1", str("héllo wörld")],
  ["string_cjk", str("日本語テキスト")],
  ["string_astral", str("😀 𝄞 \u{10ffff}")],
  ["string_leading_bom", str("\ufeffbom")],
  ["string_nul", str("a\u0000b")],
  ["string_long_mixed", str("αβγ😀abc".repeat(40))],
  ["bytes_empty", bytes(new Uint8Array(0))],
  ["bytes_one_zero", bytes(new Uint8Array(1))],
  ["bytes_all_values", bytes(ALL_BYTES)],
];

/** The limit values an argument may be: all but `void`, at most 32 to a call. */
const ARG_VALUES: readonly Value[] = LIMIT_VALUES.map((e) => e[1]).filter((v) => v.type !== "void");

function validFrames(): [string, Frame][] {
  const frames: [string, Frame][] = [];
  for (const [name, value] of LIMIT_VALUES) {
    frames.push([`return_${name}`, { kind: "RETURN", value }]);
  }
  for (const [name, value] of LIMIT_VALUES) {
    frames.push([`host_return_${name}`, { kind: "HOST_RETURN", value }]);
  }
  frames.push(
    ["call_no_args", { kind: "CALL", name: "ping", args: [] }],
    ["call_add", { kind: "CALL", name: "add", args: [i32(1), i32(2)] }],
    ["call_limits_first_32", { kind: "CALL", name: "limits", args: ARG_VALUES.slice(0, 32) }],
    ["call_limits_rest", { kind: "CALL", name: "limits", args: ARG_VALUES.slice(32) }],
    ["call_name_255_bytes", { kind: "CALL", name: "é".repeat(127) + "x", args: [] }],
    ["call_non_ascii_name", { kind: "CALL", name: "grüße_😀", args: [str("x")] }],
    ["call_32_args", {
      kind: "CALL",
      name: "many",
      args: Array.from({ length: 32 }, (_, i) => i64(BigInt(i) - 16n)),
    }],
    ["host_call_no_args", { kind: "HOST_CALL", name: "now", args: [] }],
    ["host_call_log", { kind: "HOST_CALL", name: "log", args: [u32(2), str("hi ✓")] }],
    ["host_call_limits_first_32", {
      kind: "HOST_CALL",
      name: "limits",
      args: ARG_VALUES.slice(0, 32),
    }],
    ["host_call_limits_rest", { kind: "HOST_CALL", name: "limits", args: ARG_VALUES.slice(32) }],
    ["error_unknown_function", { kind: "ERROR", code: 1, message: "unknown function: nope" }],
    ["error_bad_arguments", { kind: "ERROR", code: 2, message: "add takes 2 arguments, got 1" }],
    ["error_host_call_failed", { kind: "ERROR", code: 3, message: "host call failed: boom" }],
    ["error_guest_code", { kind: "ERROR", code: 1000, message: "négatif" }],
    ["error_max_code_empty_message", { kind: "ERROR", code: 4294967295, message: "" }],
    ["host_error_empty", { kind: "HOST_ERROR", message: "" }],
    ["host_error_message", { kind: "HOST_ERROR", message: "host function failed: 💥" }],
    ["function_table_empty", { kind: "FUNCTION_TABLE", functions: [] }],
    ["function_table_one", {
      kind: "FUNCTION_TABLE",
      functions: [{ name: "ping", params: [], result: "void" }],
    }],
    ["function_table_every_type", {
      kind: "FUNCTION_TABLE",
      functions: [
        { name: "add", params: ["i32", "i32"], result: "i32" },
        { name: "π", params: ["f64"], result: "f64" },
        {
          name: "all",
          params: ["i32", "u32", "i64", "u64", "f32", "f64", "bool", "string", "bytes"],
          result: "bytes",
        },
        { name: "flag", params: ["bool"], result: "bool" },
        { name: "big", params: ["u64", "i64"], result: "u64" },
        { name: "text", params: ["string"], result: "string" },
        { name: "single", params: ["f32"], result: "f32" },
        { name: "unsigned", params: ["u32"], result: "u32" },
      ],
    }],
    ["function_table_limits", {
      kind: "FUNCTION_TABLE",
      functions: [
        { name: "a".repeat(255), params: [], result: "void" },
        { name: "thirty_two", params: new Array<ValueType>(32).fill("i64"), result: "i64" },
      ],
    }],
    // The optional imports part (the host functions a guest declares): empty, and in full.
    ["function_table_imports_empty", {
      kind: "FUNCTION_TABLE",
      functions: [{ name: "ping", params: [], result: "void" }],
      imports: [],
    }],
    ["function_table_imports", {
      kind: "FUNCTION_TABLE",
      functions: [{ name: "stamp", params: [], result: "u64" }],
      imports: [
        { name: "now_ms", params: [], result: "u64" },
        { name: "math.double", params: ["i32"], result: "i32" },
        { name: "stamp", params: ["string", "bytes"], result: "void" },
      ],
    }],
    ["function_table_imports_only", {
      kind: "FUNCTION_TABLE",
      functions: [],
      imports: [
        { name: "b".repeat(255), params: [], result: "void" },
        { name: "thirty_two", params: new Array<ValueType>(32).fill("f64"), result: "bytes" },
      ],
    }],
    ["panic_empty", { kind: "PANIC", message: "" }],
    ["panic_message", {
      kind: "PANIC",
      message: "panicked at src/lib.rs:10:5:\nattempt to divide by zero",
    }],
    ["fault_zero", { kind: "FAULT", vector: 0n, errorCode: 0n, rip: 0n, cr2: 0n, rsp: 0n }],
    ["fault_page_fault", {
      kind: "FAULT",
      vector: 14n,
      errorCode: 2n,
      rip: 0x812345n,
      cr2: 0x1ff000n,
      rsp: 0x1fffff8n,
    }],
    ["fault_max", {
      kind: "FAULT",
      vector: 2n ** 64n - 1n,
      errorCode: 2n ** 64n - 1n,
      rip: 2n ** 64n - 1n,
      cr2: 2n ** 64n - 1n,
      rsp: 2n ** 64n - 1n,
    }],
    ["log_error", { kind: "LOG", level: 0, message: "error!" }],
    ["log_warn", { kind: "LOG", level: 1, message: "warn" }],
    ["log_info", { kind: "LOG", level: 2, message: "info ℹ" }],
    ["log_debug", { kind: "LOG", level: 3, message: "debug" }],
    ["log_trace_empty", { kind: "LOG", level: 4, message: "" }],
  );
  return frames;
}

// ---- the malformed frames ----

/** Little-endian bytes of a u32. */
function le32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function utf8(s: string): number[] {
  return [...new TextEncoder().encode(s)];
}

/** A `str` field. */
function strField(s: string): number[] {
  const b = utf8(s);
  return [...le32(b.length), ...b];
}

/** A frame with `payload`, whose header claims `payloadLen` (default: the true length). */
function raw(kind: number, payload: number[], payloadLen = payload.length): Uint8Array {
  return Uint8Array.from([...le32(kind), ...le32(payloadLen), ...payload]);
}

/** A table entry: name, param tags, result tag. */
function entry(name: string, params: number[], result: number): number[] {
  return [...strField(name), params.length, ...params, result];
}

/** The `CALL` / `HOST_CALL` limits, broken one at a time: argc, void arguments, name length. */
function invocationLimits(kind: number, prefix: string): [string, Uint8Array, string][] {
  const i32s = (n: number) => Array.from({ length: n }, () => [ValueTag.i32, 1, 0, 0, 0]).flat();
  return [
    [
      `${prefix}_33_args`,
      raw(kind, [...strField("f"), ...le32(33), ...i32s(33)]),
      "limit: at most 32 arguments",
    ],
    [
      `${prefix}_64k_void_args`,
      raw(kind, [...strField("f"), ...le32(1 << 16), ...new Array(1 << 16).fill(ValueTag.void)]),
      "limit: at most 32 arguments",
    ],
    [
      `${prefix}_void_arg`,
      raw(kind, [...strField("f"), ...le32(2), ValueTag.i32, 1, 0, 0, 0, ValueTag.void]),
      "limit: no void arguments",
    ],
    [
      `${prefix}_empty_name`,
      raw(kind, [...strField(""), ...le32(0)]),
      "limit: names are 1-255 bytes",
    ],
    [
      `${prefix}_name_256_bytes`,
      raw(kind, [...strField("a".repeat(256)), ...le32(0)]),
      "limit: names are 1-255 bytes",
    ],
    [
      `${prefix}_name_4k`,
      raw(kind, [...strField("a".repeat(4096)), ...le32(0)]),
      "limit: names are 1-255 bytes",
    ],
  ];
}

function malformedFrames(): [string, Uint8Array, string][] {
  const K = FrameKind;
  const T = ValueTag;
  const manyEntries: number[] = [];
  for (let i = 0; i <= 4096; i++) manyEntries.push(...entry(`f${i}`, [], T.void));
  return [
    ["empty_buffer", new Uint8Array(0), "header does not fit"],
    ["header_truncated", Uint8Array.from([2, 0, 0, 0, 1, 0, 0]), "header does not fit"],
    ["payload_len_past_buffer", raw(K.RETURN, [T.void], 2), "payload_len beyond the buffer"],
    ["payload_len_huge", raw(K.RETURN, [T.void], 0xffffffff), "payload_len beyond the buffer"],
    ["trailing_bytes", raw(K.RETURN, [T.void, 0]), "bytes left over after the payload"],
    ["unknown_kind_zero", raw(0, []), "unknown kind"],
    ["unknown_kind_eleven", raw(11, [T.void]), "unknown kind"],
    ["unknown_kind_huge", raw(0xffffffff, []), "unknown kind"],
    ["return_missing_value", raw(K.RETURN, []), "payload ends before its fields"],
    ["unknown_value_tag", raw(K.RETURN, [10]), "unknown tag"],
    ["unknown_value_tag_255", raw(K.RETURN, [255, 0, 0, 0, 0]), "unknown tag"],
    ["bool_two", raw(K.RETURN, [T.bool, 2]), "bool other than 0/1"],
    ["bool_ff", raw(K.HOST_RETURN, [T.bool, 0xff]), "bool other than 0/1"],
    ["bool_missing_byte", raw(K.RETURN, [T.bool]), "payload ends before its fields"],
    ["i32_truncated", raw(K.RETURN, [T.i32, 0, 0, 0]), "payload ends before its fields"],
    [
      "u64_truncated",
      raw(K.RETURN, [T.u64, 0, 0, 0, 0, 0, 0, 0]),
      "payload ends before its fields",
    ],
    ["f64_truncated", raw(K.HOST_RETURN, [T.f64, 0, 0]), "payload ends before its fields"],
    [
      "string_length_past_payload",
      raw(K.RETURN, [T.string, ...le32(5), 0x61, 0x62]),
      "length runs past the payload",
    ],
    [
      "string_length_huge",
      raw(K.RETURN, [T.string, ...le32(0xffffffff), 0x61]),
      "length runs past the payload",
    ],
    ["string_length_truncated", raw(K.RETURN, [T.string, 1, 0]), "payload ends before its fields"],
    ["string_invalid_utf8_ff", raw(K.RETURN, [T.string, ...le32(1), 0xff]), "invalid UTF-8"],
    ["string_overlong_nul", raw(K.RETURN, [T.string, ...le32(2), 0xc0, 0x80]), "invalid UTF-8"],
    [
      "string_encoded_surrogate",
      raw(K.RETURN, [T.string, ...le32(3), 0xed, 0xa0, 0x80]),
      "invalid UTF-8",
    ],
    [
      "string_truncated_sequence",
      raw(K.RETURN, [T.string, ...le32(2), 0xe6, 0x97]),
      "invalid UTF-8",
    ],
    [
      "string_above_max_code_point",
      raw(K.RETURN, [T.string, ...le32(4), 0xf4, 0x90, 0x80, 0x80]),
      "invalid UTF-8",
    ],
    ["string_lone_continuation", raw(K.PANIC, [...le32(2), 0x61, 0x80]), "invalid UTF-8"],
    [
      "bytes_length_past_payload",
      raw(K.RETURN, [T.bytes, ...le32(3), 1, 2]),
      "length runs past the payload",
    ],
    [
      "bytes_length_huge",
      raw(K.HOST_RETURN, [T.bytes, ...le32(0x7fffffff)]),
      "length runs past the payload",
    ],
    [
      "call_argc_huge",
      raw(K.CALL, [...strField("f"), ...le32(0xffffffff), T.void]),
      "argc cannot fit the remaining bytes",
    ],
    [
      "call_argc_past_values",
      raw(K.CALL, [...strField("f"), ...le32(2), T.void]),
      "argc cannot fit the remaining bytes",
    ],
    [
      "call_second_arg_missing",
      raw(K.CALL, [...strField("f"), ...le32(2), T.i32, 1, 0, 0, 0]),
      "payload ends before its fields",
    ],
    ["call_missing_argc", raw(K.CALL, [...strField("f")]), "payload ends before its fields"],
    [
      "call_name_length_past_payload",
      raw(K.CALL, [...le32(9), 0x66, ...le32(0)]),
      "length runs past the payload",
    ],
    ["call_name_invalid_utf8", raw(K.CALL, [...le32(1), 0xfe, ...le32(0)]), "invalid UTF-8"],
    [
      "call_bad_tag_in_second_arg",
      raw(K.CALL, [...strField("f"), ...le32(2), T.bool, 1, 42]),
      "unknown tag",
    ],
    [
      "host_call_argc_huge",
      raw(K.HOST_CALL, [...strField("h"), ...le32(0x10000000)]),
      "argc cannot fit the remaining bytes",
    ],
    ...invocationLimits(K.CALL, "call"),
    ...invocationLimits(K.HOST_CALL, "host_call"),
    ["log_level_5", raw(K.LOG, [...le32(5), ...strField("x")]), "limit: LOG level above 4"],
    ["log_level_max", raw(K.LOG, [...le32(0xffffffff), ...le32(0)]), "limit: LOG level above 4"],
    [
      "function_table_void_param",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("f", [T.i32, T.void], T.void)]),
      "limit: no void parameters",
    ],
    ["error_missing_message", raw(K.ERROR, le32(1000)), "payload ends before its fields"],
    ["error_truncated_code", raw(K.ERROR, [1, 0]), "payload ends before its fields"],
    ["host_error_empty_payload", raw(K.HOST_ERROR, []), "payload ends before its fields"],
    [
      "panic_trailing_byte",
      raw(K.PANIC, [...strField("x"), 0]),
      "bytes left over after the payload",
    ],
    ["fault_short", raw(K.FAULT, new Array(39).fill(0)), "payload ends before its fields"],
    ["fault_long", raw(K.FAULT, new Array(41).fill(0)), "bytes left over after the payload"],
    ["log_missing_message", raw(K.LOG, le32(2)), "payload ends before its fields"],
    [
      "function_table_count_huge",
      raw(K.FUNCTION_TABLE, le32(0xffffffff)),
      "count cannot fit the remaining bytes",
    ],
    [
      "function_table_count_past_entries",
      raw(K.FUNCTION_TABLE, [...le32(2), ...entry("f", [], T.void)]),
      "count cannot fit the remaining bytes",
    ],
    [
      "function_table_bad_param_tag",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("f", [T.i32, 11], T.void)]),
      "unknown tag",
    ],
    [
      "function_table_bad_result_tag",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("f", [], 200)]),
      "unknown tag",
    ],
    [
      "function_table_params_truncated",
      raw(K.FUNCTION_TABLE, [...le32(1), ...strField("f"), 3, T.i32]),
      "payload ends before its fields",
    ],
    [
      "function_table_name_invalid_utf8",
      raw(K.FUNCTION_TABLE, [...le32(1), ...le32(2), 0xc3, 0x28, 0, T.void]),
      "invalid UTF-8",
    ],
    [
      "function_table_empty_name",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("", [], T.void)]),
      "limit: function names are 1-255 bytes",
    ],
    [
      "function_table_name_256_bytes",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("a".repeat(256), [], T.void)]),
      "limit: function names are 1-255 bytes",
    ],
    [
      "function_table_duplicate_name",
      raw(K.FUNCTION_TABLE, [
        ...le32(2),
        ...entry("dup", [], T.void),
        ...entry("dup", [T.i32], T.i32),
      ]),
      "limit: function names are unique within a table",
    ],
    [
      "function_table_33_params",
      raw(K.FUNCTION_TABLE, [...le32(1), ...entry("f", new Array(33).fill(T.i32), T.void)]),
      "limit: at most 32 parameters",
    ],
    [
      "function_table_4097_entries",
      raw(K.FUNCTION_TABLE, [...le32(4097), ...manyEntries]),
      "limit: at most 4096 functions",
    ],
    // The imports part: the same rules as the functions' table.
    ...importsPart("imports_count_huge", le32(0xffffffff), "count cannot fit the remaining bytes"),
    ...importsPart(
      "imports_count_past_entries",
      [...le32(2), ...entry("f", [], T.void)],
      "count cannot fit the remaining bytes",
    ),
    ...importsPart("imports_count_truncated", [1, 0], "payload ends before its fields"),
    ...importsPart(
      "imports_trailing_bytes",
      [...le32(0), 0],
      "bytes left over after the payload",
    ),
    ...importsPart(
      "imports_bad_param_tag",
      [...le32(1), ...entry("h", [T.i32, 11], T.void)],
      "unknown tag",
    ),
    ...importsPart(
      "imports_void_param",
      [...le32(1), ...entry("h", [T.void], T.void)],
      "limit: no void parameters",
    ),
    ...importsPart(
      "imports_name_invalid_utf8",
      [...le32(1), ...le32(2), 0xc3, 0x28, 0, T.void],
      "invalid UTF-8",
    ),
    ...importsPart(
      "imports_empty_name",
      [...le32(1), ...entry("", [], T.void)],
      "limit: function names are 1-255 bytes",
    ),
    ...importsPart(
      "imports_name_256_bytes",
      [...le32(1), ...entry("a".repeat(256), [], T.void)],
      "limit: function names are 1-255 bytes",
    ),
    ...importsPart(
      "imports_duplicate_name",
      [...le32(2), ...entry("dup", [], T.void), ...entry("dup", [T.i32], T.i32)],
      "limit: function names are unique within a table",
    ),
    ...importsPart(
      "imports_33_params",
      [...le32(1), ...entry("h", new Array(33).fill(T.i32), T.void)],
      "limit: at most 32 parameters",
    ),
    ...importsPart(
      "imports_4097_entries",
      [...le32(4097), ...manyEntries],
      "limit: at most 4096 functions",
    ),
  ];
}

/** A `FUNCTION_TABLE` of one valid function followed by the imports part `imports`. */
function importsPart(
  name: string,
  imports: number[],
  reason: string,
): [string, Uint8Array, string][] {
  const functions = [...le32(1), ...entry("f", [ValueTag.i32], ValueTag.i32)];
  return [[
    `function_table_${name}`,
    raw(FrameKind.FUNCTION_TABLE, [...functions, ...imports]),
    reason,
  ]];
}

/** The constants section, from src/abi.ts. */
export function buildConstants(): WireConstants {
  const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return {
    abi_version: ABI_VERSION,
    peb_magic: `0x${PEB_MAGIC.toString(16).padStart(16, "0")}`,
    frame_header_size: FRAME_HEADER_SIZE,
    ports: { ...Port },
    frame_kinds: { ...FrameKind },
    value_tags: { ...ValueTag },
    peb_offsets: Object.fromEntries(Object.entries(PebOffset).map(([k, v]) => [snake(k), v])),
    error_codes: { ...ErrorCode },
    log_levels: { ...LogLevel },
    limits: {
      min_name_len: MIN_NAME_LENGTH,
      max_name_len: MAX_NAME_LENGTH,
      max_functions: MAX_FUNCTIONS,
      max_params: MAX_PARAMS,
      max_log_level: MAX_LOG_LEVEL,
    },
  };
}

/** Builds the vectors. */
export function buildVectors(): WireVectors {
  const buffer = new Uint8Array(1 << 20);
  return {
    abi_version: ABI_VERSION,
    constants: buildConstants(),
    ports: { ...Port },
    frames: validFrames().map(([name, frame]) => {
      const size = encodeFrame(frame, buffer);
      return { name, hex: toHex(buffer.subarray(0, size)), frame: frameToJson(frame) };
    }),
    malformed: malformedFrames().map(([name, bytes, reason]) => ({
      name,
      hex: toHex(bytes),
      reason,
    })),
  };
}

if (import.meta.main) {
  const path = new URL("../tests/vectors/wire.json", import.meta.url);
  await Deno.writeTextFile(path, JSON.stringify(buildVectors(), null, 2) + "\n");
  console.log(`wrote ${path.pathname}`);
}
