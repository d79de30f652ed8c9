/**
 * The host side (TypeScript) of the wire format, ours (docs/abi.md, src/wire.ts) against
 * FlatBuffers (npm:flatbuffers), measured in the same run: encode into a reused buffer, decode to
 * the same `Frame` objects. Each group has our codec as its baseline, so Deno prints the ratios.
 * Encoded sizes are printed once. Needs no KVM. Results and the decision: docs/wire-format.md.
 *
 *   deno bench --allow-read bench/wire_format.bench.ts
 *
 * No `flatc` here: the FlatBuffers side uses the library's Builder / ByteBuffer directly with
 * hand-written accessors, the same calls `flatc --ts` generates for this schema:
 *
 *   table Value {            // one table per value; only the field of its type is present
 *     tag: ubyte;            // the tags of docs/abi.md
 *     i32: int; u32: uint; i64: long; u64: ulong; f32: float; f64: double; bool: bool;
 *     str: string; bytes: [ubyte];
 *   }
 *   table Call { name: string; args: [Value]; }
 *   table Return { value: Value; }
 *
 * The frame keeps our 8-byte header (kind, payload_len) with the FlatBuffer as its payload, the
 * cheapest framing for FlatBuffers (a root union would add a table per frame). FlatBuffers builds
 * back to front in its own buffer, so encoding ends with a copy into the shared input buffer (the
 * ABI puts a frame at the buffer's start); the "no final copy" entries leave that copy out.
 * Our decoder validates everything (docs/abi.md); the FlatBuffers decode below does not (there is
 * no verifier in the TS library), which favours FlatBuffers.
 */
import * as fb from "flatbuffers";
import { deepStrictEqual } from "node:assert";
import { FRAME_HEADER_SIZE, FrameKind, ValueTag } from "../src/abi.ts";
import { type Frame, FrameDecoder, FrameEncoder, type Value } from "../src/wire.ts";

const MiB = 1024 * 1024;
const BUFFER_SIZE = 4 * MiB; // the default input_size / output_size

// --- FlatBuffers: hand-written "generated" code ------------------------------------------------

// Value field slots (vtable offset = 4 + 2 * slot).
const V_TAG = 0, V_I32 = 1, V_U32 = 2, V_I64 = 3, V_U64 = 4, V_F32 = 5, V_F64 = 6;
const V_BOOL = 7, V_STR = 8, V_BYTES = 9, V_FIELDS = 10;
const vt = (slot: number) => 4 + 2 * slot;

function fbValue(b: fb.Builder, v: Value): fb.Offset {
  // Strings and vectors must be created before the table that refers to them.
  const ref = v.type === "string"
    ? b.createString(v.value)
    : v.type === "bytes"
    ? b.createByteVector(v.value)
    : 0;
  b.startObject(V_FIELDS);
  b.addFieldInt8(V_TAG, ValueTag[v.type], 0);
  switch (v.type) {
    case "void":
      break;
    case "i32":
      b.addFieldInt32(V_I32, v.value, 0);
      break;
    case "u32":
      b.addFieldInt32(V_U32, v.value | 0, 0);
      break;
    case "i64":
      b.addFieldInt64(V_I64, v.value, 0n);
      break;
    case "u64":
      b.addFieldInt64(V_U64, v.value, 0n);
      break;
    case "f32":
      b.addFieldFloat32(V_F32, v.value, 0);
      break;
    case "f64":
      b.addFieldFloat64(V_F64, v.value, 0);
      break;
    case "bool":
      b.addFieldInt8(V_BOOL, v.value ? 1 : 0, 0);
      break;
    case "string":
      b.addFieldOffset(V_STR, ref, 0);
      break;
    case "bytes":
      b.addFieldOffset(V_BYTES, ref, 0);
      break;
  }
  return b.endObject();
}

const argOffsets: fb.Offset[] = [];

/** Builds the frame's FlatBuffer in `b` (cleared first); returns its bytes (a view into `b`). */
function fbBuild(b: fb.Builder, frame: Frame): Uint8Array {
  b.clear();
  if (frame.kind === "CALL") {
    const name = b.createString(frame.name);
    argOffsets.length = frame.args.length;
    for (let i = 0; i < frame.args.length; i++) argOffsets[i] = fbValue(b, frame.args[i]);
    b.startVector(4, argOffsets.length, 4);
    for (let i = argOffsets.length - 1; i >= 0; i--) b.addOffset(argOffsets[i]);
    const args = b.endVector();
    b.startObject(2);
    b.addFieldOffset(0, name, 0);
    b.addFieldOffset(1, args, 0);
    b.finish(b.endObject());
  } else if (frame.kind === "RETURN") {
    const value = fbValue(b, frame.value);
    b.startObject(1);
    b.addFieldOffset(0, value, 0);
    b.finish(b.endObject());
  } else {
    throw new Error(`not in this benchmark: ${frame.kind}`);
  }
  return b.asUint8Array();
}

/** Encodes like FrameEncoder.encode: header + FlatBuffer at the start of `out`; returns the size. */
function fbEncode(b: fb.Builder, out: Uint8Array, view: DataView, frame: Frame): number {
  const payload = fbBuild(b, frame);
  if (FRAME_HEADER_SIZE + payload.length > out.length) throw new Error("buffer full");
  view.setUint32(0, FrameKind[frame.kind], true);
  view.setUint32(4, payload.length, true);
  out.set(payload, FRAME_HEADER_SIZE);
  return FRAME_HEADER_SIZE + payload.length;
}

function fbReadValue(bb: fb.ByteBuffer, pos: number): Value {
  let o = bb.__offset(pos, vt(V_TAG));
  const tag = o ? bb.readUint8(pos + o) : 0;
  switch (tag) {
    case 0:
      return { type: "void" };
    case 1:
      o = bb.__offset(pos, vt(V_I32));
      return { type: "i32", value: o ? bb.readInt32(pos + o) : 0 };
    case 2:
      o = bb.__offset(pos, vt(V_U32));
      return { type: "u32", value: o ? bb.readUint32(pos + o) : 0 };
    case 3:
      o = bb.__offset(pos, vt(V_I64));
      return { type: "i64", value: o ? bb.readInt64(pos + o) : 0n };
    case 4:
      o = bb.__offset(pos, vt(V_U64));
      return { type: "u64", value: o ? bb.readUint64(pos + o) : 0n };
    case 5:
      o = bb.__offset(pos, vt(V_F32));
      return { type: "f32", value: o ? bb.readFloat32(pos + o) : 0 };
    case 6:
      o = bb.__offset(pos, vt(V_F64));
      return { type: "f64", value: o ? bb.readFloat64(pos + o) : 0 };
    case 7:
      o = bb.__offset(pos, vt(V_BOOL));
      return { type: "bool", value: o ? bb.readUint8(pos + o) !== 0 : false };
    case 8:
      o = bb.__offset(pos, vt(V_STR));
      return { type: "string", value: o ? bb.__string(pos + o) as string : "" };
    case 9: {
      o = bb.__offset(pos, vt(V_BYTES));
      if (!o) return { type: "bytes", value: new Uint8Array() };
      const bytes = bb.bytes();
      const start = bb.__vector(pos + o);
      // What generated `bytesArray()` returns is a view; copy it out, as FrameDecoder does.
      return { type: "bytes", value: bytes.slice(start, start + bb.__vector_len(pos + o)) };
    }
    default:
      throw new Error(`unknown value type tag ${tag}`);
  }
}

/** Decodes header + FlatBuffer from `bb` (a ByteBuffer over the whole output buffer). */
function fbDecode(bb: fb.ByteBuffer, view: DataView): Frame {
  const kind = view.getUint32(0, true);
  const len = view.getUint32(4, true);
  if (len > view.byteLength - FRAME_HEADER_SIZE) throw new Error("payload_len past the buffer");
  bb.setPosition(FRAME_HEADER_SIZE);
  const root = bb.readInt32(FRAME_HEADER_SIZE) + FRAME_HEADER_SIZE;
  if (kind === FrameKind.CALL) {
    let o = bb.__offset(root, 4);
    const name = o ? bb.__string(root + o) as string : "";
    o = bb.__offset(root, 6);
    const argc = o ? bb.__vector_len(root + o) : 0;
    const args = new Array<Value>(argc);
    if (o) {
      const vec = bb.__vector(root + o);
      for (let i = 0; i < argc; i++) args[i] = fbReadValue(bb, bb.__indirect(vec + 4 * i));
    }
    return { kind: "CALL", name, args };
  }
  if (kind === FrameKind.RETURN) {
    const o = bb.__offset(root, 4);
    return {
      kind: "RETURN",
      value: o ? fbReadValue(bb, bb.__indirect(root + o)) : { type: "void" },
    };
  }
  throw new Error(`not in this benchmark: kind ${kind}`);
}

// --- Cases ---------------------------------------------------------------------------------------

const str16 = "0123456789abcdef";
const bytes40 = new Uint8Array(40).map((_, i) => (i * 37) & 0xff);
const cases: { name: string; frame: Frame }[] = [
  {
    name: "CALL add(i32 2, i32 3)",
    frame: {
      kind: "CALL",
      name: "add",
      args: [{ type: "i32", value: 2 }, { type: "i32", value: 3 }],
    },
  },
  {
    name: "CALL echo(16-byte string)",
    frame: { kind: "CALL", name: "echo", args: [{ type: "string", value: str16 }] },
  },
  {
    name: "RETURN 16-byte string",
    frame: { kind: "RETURN", value: { type: "string", value: str16 } },
  },
  {
    name: "CALL echo_all(9 types)",
    frame: {
      kind: "CALL",
      name: "echo_all",
      args: [
        { type: "i32", value: -1 },
        { type: "u32", value: 0xffff_ffff },
        { type: "i64", value: -(2n ** 63n) },
        { type: "u64", value: 2n ** 64n - 1n },
        { type: "f32", value: 1.5 },
        { type: "f64", value: Math.PI },
        { type: "bool", value: true },
        { type: "string", value: "ünï" },
        { type: "bytes", value: bytes40 },
      ],
    },
  },
  {
    name: "CALL echo_bytes(1 MiB)",
    frame: {
      kind: "CALL",
      name: "echo_bytes",
      args: [{ type: "bytes", value: new Uint8Array(MiB).fill(7) }],
    },
  },
];

// One set of buffers and codecs, reused by every iteration.
const oursIn = new Uint8Array(BUFFER_SIZE);
const fbIn = new Uint8Array(BUFFER_SIZE);
const fbInView = new DataView(fbIn.buffer);
const encoder = new FrameEncoder(oursIn);
const builder = new fb.Builder(2 * MiB);

console.log("encoded frame sizes in bytes (header included): ours / FlatBuffers");
for (const { name, frame } of cases) {
  // Decode buffers hold the encoded frame, as the output buffer would.
  const oursOut = new Uint8Array(BUFFER_SIZE);
  const fbOut = new Uint8Array(BUFFER_SIZE);
  const fbOutView = new DataView(fbOut.buffer);
  const oursSize = new FrameEncoder(oursOut).encode(frame);
  const fbSize = fbEncode(builder, fbOut, fbOutView, frame);
  const oursDecoder = new FrameDecoder(oursOut);
  const bb = new fb.ByteBuffer(fbOut);
  // Both codecs must round-trip the frame exactly before their speed means anything.
  deepStrictEqual(oursDecoder.decode(), frame);
  deepStrictEqual(fbDecode(bb, fbOutView), frame);
  console.log(`  ${name}: ${oursSize} / ${fbSize}`);

  Deno.bench({
    name: "ours",
    group: `${name}: encode`,
    baseline: true,
    fn: () => void encoder.encode(frame),
  });
  Deno.bench({
    name: "flatbuffers",
    group: `${name}: encode`,
    fn: () => void fbEncode(builder, fbIn, fbInView, frame),
  });
  Deno.bench({
    name: "flatbuffers (no final copy)",
    group: `${name}: encode`,
    fn: () => void fbBuild(builder, frame),
  });
  Deno.bench({
    name: "ours",
    group: `${name}: decode`,
    baseline: true,
    fn: () => void oursDecoder.decode(),
  });
  Deno.bench({
    name: "flatbuffers (unverified)",
    group: `${name}: decode`,
    fn: () => void fbDecode(bb, fbOutView),
  });
}
