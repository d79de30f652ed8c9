/**
 * Encodings between `WasmSandbox` and the `wasm-runtime` guest (docs/wasm.md, "Wire
 * encodings"): packed values, the module description, and the request builder.
 *
 * @module
 */

import { ArgumentError, ProtocolError } from "../errors.ts";
import type { WasmAnyType, WasmExtern, WasmJsValue, WasmValueType } from "../wasm_sandbox.ts";

const VALTYPE_CODES: Record<number, WasmAnyType> = {
  0x7f: "i32",
  0x7e: "i64",
  0x7d: "f32",
  0x7c: "f64",
  0x7b: "v128",
  0x70: "funcref",
  0x6f: "externref",
};
const SIZES: Record<WasmValueType, number> = { i32: 4, i64: 8, f32: 4, f64: 8 };
const TWO_32 = 2 ** 32;
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/** Packs values by type: 4 or 8 bytes each, little-endian (floats as IEEE bits). */
export function packValues(
  values: unknown[],
  types: readonly WasmValueType[],
  where: string,
): Uint8Array {
  let size = 0;
  for (const t of types) size += SIZES[t];
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let pos = 0;
  types.forEach((t, i) => {
    const v = values[i];
    const bad = (want: string) =>
      new ArgumentError(
        `${where}: argument ${i} (${t}) must be ${want}, got ${
          typeof v === "bigint" ? `${v}n` : typeof v === "number" ? v : typeof v
        }`,
      );
    switch (t) {
      case "i32":
        if (
          typeof v !== "number" || !Number.isInteger(v) || v < -(2 ** 31) || v >= TWO_32
        ) throw bad("an integer number in [-2^31, 2^32)");
        view.setInt32(pos, v | 0, true);
        break;
      case "i64":
        if (typeof v !== "bigint" || v < -(1n << 63n) || v >= 1n << 64n) {
          throw bad("a bigint in [-2^63, 2^64)");
        }
        view.setBigInt64(pos, BigInt.asIntN(64, v), true);
        break;
      case "f32":
        if (typeof v !== "number") throw bad("a number");
        view.setFloat32(pos, v, true);
        break;
      case "f64":
        if (typeof v !== "number") throw bad("a number");
        view.setFloat64(pos, v, true);
        break;
    }
    pos += SIZES[t];
  });
  return out;
}

export function unpackValues(
  bytes: Uint8Array,
  types: readonly WasmValueType[],
  where: string,
): (number | bigint)[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: (number | bigint)[] = [];
  let pos = 0;
  for (const t of types) {
    if (pos + SIZES[t] > bytes.length) {
      throw new ProtocolError(`${where}: the guest sent ${bytes.length} bytes of values`);
    }
    switch (t) {
      case "i32":
        out.push(view.getInt32(pos, true));
        break;
      case "i64":
        out.push(view.getBigInt64(pos, true));
        break;
      case "f32":
        out.push(view.getFloat32(pos, true));
        break;
      case "f64":
        out.push(view.getFloat64(pos, true));
        break;
    }
    pos += SIZES[t];
  }
  if (pos !== bytes.length) {
    throw new ProtocolError(`${where}: the guest sent ${bytes.length} bytes of values`);
  }
  return out;
}

export function unpackResult(
  bytes: Uint8Array,
  types: WasmValueType[],
  where: string,
): WasmJsValue {
  const values = unpackValues(bytes, types, where);
  if (values.length === 0) return undefined;
  if (values.length === 1) return values[0];
  return values;
}

/** Reads the guest's description of the module (guest/wasm-runtime/src/codec.rs). */
export function parseDescription(
  bytes: Uint8Array,
): { imports: WasmExtern[]; exports: WasmExtern[] } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0;
  const need = (n: number) => {
    if (pos + n > bytes.length) throw new ProtocolError("wasm-runtime: truncated description");
  };
  const u8 = () => {
    need(1);
    return bytes[pos++];
  };
  const u32 = () => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const str = () => {
    const n = u32();
    need(n);
    let s: string;
    try {
      s = utf8Decoder.decode(bytes.subarray(pos, pos + n));
    } catch {
      throw new ProtocolError("wasm-runtime: a name in the description is not valid UTF-8");
    }
    pos += n;
    return s;
  };
  const valType = (): WasmAnyType => {
    const c = u8();
    const t = VALTYPE_CODES[c];
    if (!t) throw new ProtocolError(`wasm-runtime: unknown value type 0x${c.toString(16)}`);
    return t;
  };
  const list = () => Array.from({ length: u8() }, valType);
  const skipLimits = () => {
    need(8);
    pos += 8;
    if (u8() === 1) {
      need(8);
      pos += 8;
    }
  };
  const externType = (module: string, name: string): WasmExtern => {
    const kind = u8();
    switch (kind) {
      case 0: {
        const params = list();
        const results = list();
        return { module, name, kind: "function", type: { params, results } };
      }
      case 1:
        skipLimits();
        return { module, name, kind: "table" };
      case 2:
        skipLimits();
        return { module, name, kind: "memory" };
      case 3:
        valType();
        u8();
        return { module, name, kind: "global" };
      default:
        throw new ProtocolError(`wasm-runtime: unknown extern kind ${kind}`);
    }
  };
  const imports: WasmExtern[] = [];
  for (let i = u32(); i > 0; i--) {
    const module = str();
    const name = str();
    imports.push(externType(module, name));
  }
  const exports: WasmExtern[] = [];
  for (let i = u32(); i > 0; i--) exports.push(externType("", str()));
  if (pos !== bytes.length) throw new ProtocolError("wasm-runtime: trailing description bytes");
  return { imports, exports };
}

/** Little-endian request builder. */
export class Writer {
  #parts: number[] = [];

  u8(v: number): void {
    this.#parts.push(v & 0xff);
  }

  u32(v: number): void {
    for (let i = 0; i < 4; i++) this.#parts.push((v >>> (8 * i)) & 0xff);
  }

  u64(v: bigint): void {
    for (let i = 0n; i < 8n; i++) this.#parts.push(Number((v >> (8n * i)) & 0xffn));
  }

  bytes(b: Uint8Array): void {
    this.u32(b.length);
    this.raw(b);
  }

  raw(b: Uint8Array): void {
    for (const x of b) this.#parts.push(x);
  }

  finish(): Uint8Array {
    return new Uint8Array(this.#parts);
  }
}
