/**
 * Encodings between `WasmSandbox` and the `wasm-runtime` guest (docs/wasm.md, "Wire
 * encodings"): packed values, the module description, the request builder, and the guest's
 * ERROR codes.
 *
 * @module
 */

import { ArgumentError, GuestError, ProtocolError } from "../errors.ts";
import {
  WasiExitError,
  type WasmAnyType,
  WasmArtifactError,
  type WasmExtern,
  type WasmJsValue,
  WasmLinkError,
  WasmModuleError,
  WasmTrapError,
  type WasmTrapKind,
  type WasmValueType,
} from "./types.ts";

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

// ERROR codes of the Wasm runtime guests (guest/wasm-abi/src/lib.rs; tests/unit/wasm_codes.test.ts
// checks these numbers against it). STATE (1002) is a host bug and maps to a plain GuestError.
export const CODE_MODULE = 1000;
export const CODE_LINK = 1001;
export const CODE_EXIT = 1003;
export const CODE_NO_EXPORT = 1004;
export const CODE_BAD_ARGS = 1005;
export const CODE_MEMORY = 1006;
export const CODE_ARTIFACT = 1007;
export const CODE_TRAP_BASE = 1100;
/** Trap kinds by index (guest/wasm-abi's `trap`; `tests/unit/wasm_codes.test.ts` checks). */
export const TRAPS: Readonly<Record<number, WasmTrapKind>> = {
  0: "unreachable",
  1: "memory_out_of_bounds",
  2: "table_out_of_bounds",
  3: "indirect_call_to_null",
  4: "integer_divide_by_zero",
  5: "integer_overflow",
  6: "invalid_conversion_to_integer",
  7: "stack_overflow",
  8: "indirect_call_type_mismatch",
  9: "out_of_fuel",
  10: "growth_limited",
  11: "out_of_memory",
  20: "host",
  21: "other",
};

/** A host function's failure during a call, kept by the host (never read back from the guest). */
export interface HostFailure {
  /** What happened, naming the import (`"host function env.log threw: ..."`). */
  readonly message: string;
  /** What the function threw, or why its result was refused. */
  readonly error: unknown;
}

/**
 * Converts the guest's ERROR codes into the Wasm error classes. A `host` trap whose failure the
 * host recorded (`hostFailure`) gets that failure's error as its `cause` and its message from
 * it; the guest's text is used only when the host recorded nothing.
 */
export function mapGuestError(e: unknown, hostFailure: HostFailure | undefined): unknown {
  if (!(e instanceof GuestError)) return e;
  const options = { cause: e };
  if (e.code === CODE_MODULE) return new WasmModuleError(`invalid module: ${e.message}`, options);
  if (e.code === CODE_ARTIFACT) {
    return new WasmArtifactError(`the guest refused the artifact: ${e.message}`, options);
  }
  if (e.code === CODE_LINK) {
    return new WasmLinkError(`instantiation failed: ${e.message}`, undefined, options);
  }
  if (e.code === CODE_EXIT) return new WasiExitError(Number(e.message), options);
  if (e.code === CODE_NO_EXPORT || e.code === CODE_BAD_ARGS || e.code === CODE_MEMORY) {
    return new ArgumentError(e.message, options);
  }
  const trap = TRAPS[e.code - CODE_TRAP_BASE];
  if (trap === "host" && hostFailure !== undefined) {
    return new WasmTrapError(trap, hostFailure.message, { cause: hostFailure.error });
  }
  if (trap) return new WasmTrapError(trap, e.message, options);
  return e;
}

const NUMBER_TYPES = new Set<string>(["i32", "i64", "f32", "f64"]);

/** Checks that every type can cross (a number type); `ArgumentError` names the first that cannot. */
export function numberTypes(types: WasmAnyType[], where: string, what: string): WasmValueType[] {
  for (const t of types) {
    if (!NUMBER_TYPES.has(t)) {
      throw new ArgumentError(`${where} has a ${t} ${what}: only i32, i64, f32, f64 can cross`);
    }
  }
  return types as WasmValueType[];
}
