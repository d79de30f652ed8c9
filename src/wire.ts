/**
 * The wire format of docs/abi.md: frames and typed values, encoded into and decoded from the
 * shared input and output buffers, and the conversion between JS values and typed values.
 *
 * Everything decoded comes from the guest and is treated as hostile: every length is checked
 * against the bytes that remain before anything is read or allocated, and every malformation is a
 * {@link ProtocolError}.
 *
 * @module
 */

import {
  FRAME_HEADER_SIZE,
  FRAME_KIND_NAMES,
  FrameKind,
  MAX_FUNCTIONS,
  MAX_LOG_LEVEL,
  MAX_NAME_LENGTH,
  MAX_PARAMS,
  MIN_NAME_LENGTH,
  VALUE_TYPES,
  ValueTag,
  type ValueType,
} from "./abi.ts";
import { ArgumentError, ProtocolError } from "./errors.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/**
 * A value with its wire type. `f32`/`f64` values carry the raw IEEE-754 bits in `bits` when the
 * value is a NaN, because a JS number cannot be relied on to keep a NaN's payload (reading a
 * signalling NaN quiets it). When `bits` is present the encoder writes it verbatim and ignores
 * `value`; the decoder sets it for NaNs only.
 */
export type Value =
  | { readonly type: "void" }
  | { readonly type: "i32"; readonly value: number }
  | { readonly type: "u32"; readonly value: number }
  | { readonly type: "i64"; readonly value: bigint }
  | { readonly type: "u64"; readonly value: bigint }
  | { readonly type: "f32"; readonly value: number; readonly bits?: number }
  | { readonly type: "f64"; readonly value: number; readonly bits?: bigint }
  | { readonly type: "bool"; readonly value: boolean }
  | { readonly type: "string"; readonly value: string }
  | { readonly type: "bytes"; readonly value: Uint8Array };

/** A function's signature, as listed in a `FUNCTION_TABLE` frame. */
export interface FunctionSignature {
  /** The function's name: 1–255 bytes of UTF-8. */
  readonly name: string;
  /** The parameter types, at most 32. */
  readonly params: readonly ValueType[];
  /** The result type (`"void"` for none). */
  readonly result: ValueType;
}

/** A frame of any kind, discriminated by `kind` (the names of docs/abi.md). */
export type Frame =
  | { readonly kind: "CALL"; readonly name: string; readonly args: readonly Value[] }
  | { readonly kind: "RETURN"; readonly value: Value }
  | { readonly kind: "ERROR"; readonly code: number; readonly message: string }
  | { readonly kind: "HOST_CALL"; readonly name: string; readonly args: readonly Value[] }
  | { readonly kind: "HOST_RETURN"; readonly value: Value }
  | { readonly kind: "HOST_ERROR"; readonly message: string }
  | {
    readonly kind: "FUNCTION_TABLE";
    readonly functions: readonly FunctionSignature[];
    /**
     * The host functions the guest declares it imports (the frame's optional imports part);
     * absent when the guest declares none (an older guest: nothing to check).
     */
    readonly imports?: readonly FunctionSignature[];
  }
  | { readonly kind: "PANIC"; readonly message: string }
  | {
    readonly kind: "FAULT";
    readonly vector: bigint;
    readonly errorCode: bigint;
    readonly rip: bigint;
    readonly cr2: bigint;
    readonly rsp: bigint;
  }
  | { readonly kind: "LOG"; readonly level: number; readonly message: string };

/** A JS value that crosses the sandbox boundary; `undefined` stands for `void`. */
export type JsValue = undefined | number | bigint | boolean | string | Uint8Array;

// Decoding and encoding are on every call's path: share one encoder and decoder.
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

/** Strings up to this many bytes are tried as ASCII in JS before calling the native codec. */
const SHORT_STRING = 64;

/** The smallest encoded `value`: a tag alone (void). */
const MIN_VALUE_SIZE = 1;
/** The smallest `FUNCTION_TABLE` entry: empty name length, param count, result tag. */
const MIN_TABLE_ENTRY_SIZE = 6;
/** The exact `FAULT` payload: five u64 fields. */
const FAULT_PAYLOAD_SIZE = 40;

/**
 * Decodes frames from a buffer the guest wrote (the output buffer). Create one per buffer and
 * reuse it: it holds the buffer's `DataView`.
 */
export class FrameDecoder {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  #pos = 0;
  #end = 0;

  /** Creates a decoder over `buffer`; frames start at its first byte. */
  constructor(buffer: Uint8Array) {
    this.#bytes = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }

  /**
   * Decodes the frame at the start of the buffer. Everything kept is copied out of the buffer.
   * Throws {@link ProtocolError} for any malformation.
   */
  decode(): Frame {
    return FrameDecoder.#decodeNow(this);
  }

  static readonly #decodeNow = (function decoderDecode(self: FrameDecoder): Frame {
    const size = self.#bytes.length;
    if (size < FRAME_HEADER_SIZE) {
      throw new ProtocolError(`frame header needs 8 bytes, the buffer has ${size}`);
    }
    const kindNumber = self.#view.getUint32(0, true);
    const payloadLen = self.#view.getUint32(4, true);
    const kind = FRAME_KIND_NAMES[kindNumber];
    if (kind === undefined) throw new ProtocolError(`unknown frame kind ${kindNumber}`);
    if (payloadLen > size - FRAME_HEADER_SIZE) {
      throw new ProtocolError(
        `${kind} payload_len ${payloadLen} runs past the buffer (${
          size - FRAME_HEADER_SIZE
        } bytes after the header)`,
      );
    }
    self.#pos = FRAME_HEADER_SIZE;
    self.#end = FRAME_HEADER_SIZE + payloadLen;
    const frame = FrameDecoder.#payload(self, kind);
    if (self.#pos !== self.#end) {
      throw new ProtocolError(`${self.#end - self.#pos} bytes left over after the ${kind} payload`);
    }
    return frame;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #payload =
    (function decoderPayload(self: FrameDecoder, kind: Frame["kind"]): Frame {
      switch (kind) {
        case "CALL":
        case "HOST_CALL": {
          const name = FrameDecoder.#str(self, "function name", MIN_NAME_LENGTH, MAX_NAME_LENGTH);
          return { kind, name, args: FrameDecoder.#values(self) };
        }
        case "RETURN":
        case "HOST_RETURN":
          return { kind, value: FrameDecoder.#value(self) };
        case "ERROR": {
          const code = FrameDecoder.#u32(self, "error code");
          return { kind, code, message: FrameDecoder.#str(self, "error message") };
        }
        case "HOST_ERROR":
        case "PANIC":
          return { kind, message: FrameDecoder.#str(self, "message") };
        case "FUNCTION_TABLE": {
          const functions = FrameDecoder.#functionTable(self, "function");
          // The optional imports part: present when bytes follow the functions.
          if (self.#pos === self.#end) return { kind, functions };
          return { kind, functions, imports: FrameDecoder.#functionTable(self, "host import") };
        }
        case "FAULT": {
          if (self.#end - self.#pos !== FAULT_PAYLOAD_SIZE) {
            throw new ProtocolError(
              `FAULT payload is ${self.#end - self.#pos} bytes, not ${FAULT_PAYLOAD_SIZE}`,
            );
          }
          const vector = FrameDecoder.#u64(self);
          const errorCode = FrameDecoder.#u64(self);
          const rip = FrameDecoder.#u64(self);
          const cr2 = FrameDecoder.#u64(self);
          return { kind, vector, errorCode, rip, cr2, rsp: FrameDecoder.#u64(self) };
        }
        case "LOG": {
          const level = FrameDecoder.#u32(self, "log level");
          if (level > MAX_LOG_LEVEL) {
            throw new ProtocolError(`LOG level ${level} is above ${MAX_LOG_LEVEL}`);
          }
          return { kind, level, message: FrameDecoder.#str(self, "log message") };
        }
      }
    }).bind(undefined); // Eager: see the note after the imports.

  static readonly #need = (function decoderNeed(self: FrameDecoder, n: number, what: string): void {
    if (n > self.#end - self.#pos) {
      throw new ProtocolError(
        `${what} needs ${n} bytes but only ${self.#end - self.#pos} remain in the payload`,
      );
    }
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #u8 = (function decoderU8(self: FrameDecoder, what: string): number {
    FrameDecoder.#need(self, 1, what);
    return self.#bytes[self.#pos++];
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #u32 = (function decoderU32(self: FrameDecoder, what: string): number {
    FrameDecoder.#need(self, 4, what);
    const v = self.#view.getUint32(self.#pos, true);
    self.#pos += 4;
    return v;
  }).bind(undefined); // Eager: see the note after the imports.

  /** Reads a u64 the caller has already bounds-checked. */
  static readonly #u64 = (function decoderU64(self: FrameDecoder): bigint {
    const v = self.#view.getBigUint64(self.#pos, true);
    self.#pos += 8;
    return v;
  }).bind(undefined); // Eager: see the note after the imports.

  /** Reads a `str`; `maxBytes` bounds the length before it is compared with what remains. */
  static readonly #str = (function decoderStr(
    self: FrameDecoder,
    what: string,
    minBytes = 0,
    maxBytes = Infinity,
  ): string {
    const len = FrameDecoder.#u32(self, `${what} length`);
    if (len < minBytes || len > maxBytes) {
      throw new ProtocolError(`${what} is ${len} bytes, outside ${minBytes}–${maxBytes}`);
    }
    FrameDecoder.#need(self, len, what);
    const start = self.#pos;
    self.#pos += len;
    return decodeUtf8(self.#bytes, start, len, what);
  }).bind(undefined); // Eager: see the note after the imports.

  /** `u32 argc, argc × value`: at most {@link MAX_PARAMS} values, none `void` (checked first). */
  static readonly #values = (function decoderValues(self: FrameDecoder): Value[] {
    const argc = FrameDecoder.#u32(self, "argc");
    if (argc * MIN_VALUE_SIZE > self.#end - self.#pos) {
      throw new ProtocolError(
        `argc ${argc} cannot fit the ${self.#end - self.#pos} bytes that remain`,
      );
    }
    if (argc > MAX_PARAMS) {
      throw new ProtocolError(`argc ${argc} is more than ${MAX_PARAMS} arguments`);
    }
    const values = new Array<Value>(argc);
    for (let i = 0; i < argc; i++) {
      const value = FrameDecoder.#value(self);
      if (value.type === "void") throw new ProtocolError(`argument ${i} is void`);
      values[i] = value;
    }
    return values;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #tag = (function decoderTag(self: FrameDecoder, what: string): ValueType {
    const tag = FrameDecoder.#u8(self, what);
    const type = VALUE_TYPES[tag];
    if (type === undefined) throw new ProtocolError(`unknown value type tag ${tag} in ${what}`);
    return type;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #value = (function decoderValue(self: FrameDecoder): Value {
    const type = FrameDecoder.#tag(self, "value");
    const view = self.#view;
    switch (type) {
      case "void":
        return { type };
      case "i32":
      case "u32":
      case "f32": {
        FrameDecoder.#need(self, 4, type);
        const pos = self.#pos;
        self.#pos += 4;
        if (type === "i32") return { type, value: view.getInt32(pos, true) };
        if (type === "u32") return { type, value: view.getUint32(pos, true) };
        const value = view.getFloat32(pos, true);
        return value === value ? { type, value } : { type, value, bits: view.getUint32(pos, true) };
      }
      case "i64":
      case "u64":
      case "f64": {
        FrameDecoder.#need(self, 8, type);
        const pos = self.#pos;
        self.#pos += 8;
        if (type === "i64") return { type, value: view.getBigInt64(pos, true) };
        if (type === "u64") return { type, value: view.getBigUint64(pos, true) };
        const value = view.getFloat64(pos, true);
        return value === value
          ? { type, value }
          : { type, value, bits: view.getBigUint64(pos, true) };
      }
      case "bool": {
        const b = FrameDecoder.#u8(self, "bool");
        if (b > 1) throw new ProtocolError(`bool value ${b} is neither 0 nor 1`);
        return { type, value: b === 1 };
      }
      case "string":
        return { type, value: FrameDecoder.#str(self, "string value") };
      case "bytes": {
        const len = FrameDecoder.#u32(self, "bytes length");
        FrameDecoder.#need(self, len, "bytes value");
        const start = self.#pos;
        self.#pos += len;
        return { type, value: self.#bytes.slice(start, start + len) };
      }
    }
  }).bind(undefined); // Eager: see the note after the imports.

  /** One table of a `FUNCTION_TABLE` frame: the functions, or the imports part (`what`). */
  static readonly #functionTable = (function decoderFunctionTable(
    self: FrameDecoder,
    what: "function" | "host import",
  ): FunctionSignature[] {
    const count = FrameDecoder.#u32(self, `${what} count`);
    if (count > MAX_FUNCTIONS) {
      throw new ProtocolError(`${what} table has ${count} entries, more than ${MAX_FUNCTIONS}`);
    }
    if (count * MIN_TABLE_ENTRY_SIZE > self.#end - self.#pos) {
      throw new ProtocolError(
        `${what} count ${count} cannot fit the ${self.#end - self.#pos} bytes that remain`,
      );
    }
    const functions = new Array<FunctionSignature>(count);
    const seen = new Set<string>();
    for (let i = 0; i < count; i++) {
      const name = FrameDecoder.#str(self, `${what} name`, MIN_NAME_LENGTH, MAX_NAME_LENGTH);
      if (seen.has(name)) throw new ProtocolError(`${what} ${JSON.stringify(name)} listed twice`);
      seen.add(name);
      const paramCount = FrameDecoder.#u8(self, "param count");
      if (paramCount > MAX_PARAMS) {
        throw new ProtocolError(
          `${what} ${JSON.stringify(name)} has ${paramCount} parameters, more than ${MAX_PARAMS}`,
        );
      }
      const params = new Array<ValueType>(paramCount);
      for (let p = 0; p < paramCount; p++) {
        params[p] = FrameDecoder.#tag(self, "parameter type");
        if (params[p] === "void") {
          throw new ProtocolError(`${what} ${JSON.stringify(name)} has a void parameter`);
        }
      }
      functions[i] = { name, params, result: FrameDecoder.#tag(self, "result type") };
    }
    return functions;
  }).bind(undefined); // Eager: see the note after the imports.
}

function decodeUtf8(bytes: Uint8Array, start: number, len: number, what: string): string {
  if (len <= SHORT_STRING) {
    let s = "";
    let i = 0;
    for (; i < len; i++) {
      const c = bytes[start + i];
      if (c >= 0x80) break;
      s += String.fromCharCode(c);
    }
    if (i === len) return s;
  }
  try {
    return utf8Decoder.decode(bytes.subarray(start, start + len));
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`);
  }
}

/**
 * Decodes the frame at the start of `buffer`. Throws {@link ProtocolError} for any malformation.
 * Prefer a reused {@link FrameDecoder} on a hot path.
 */
export function decodeFrame(buffer: Uint8Array): Frame {
  return new FrameDecoder(buffer).decode();
}

/** Thrown inside the encoder when the buffer is full; turned into an ArgumentError. */
const BUFFER_FULL = Symbol("buffer full");

/**
 * Encodes frames into a buffer the guest reads (the input buffer). Create one per buffer and reuse
 * it. Values must already be valid for their type (see {@link toValue}); integers out of range
 * are not checked again here.
 */
export class FrameEncoder {
  readonly #bytes: Uint8Array;
  readonly #view: DataView;
  readonly #optionName: string;
  #pos = 0;

  /**
   * Creates an encoder over `buffer`. `optionName` is the `Sandbox.create` option that sets the
   * buffer's size, named when a frame does not fit.
   */
  constructor(buffer: Uint8Array, optionName = "inputSize") {
    this.#bytes = buffer;
    this.#view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    this.#optionName = optionName;
  }

  /**
   * Writes `frame` at the start of the buffer and returns its size in bytes. Throws
   * {@link ArgumentError} when it does not fit.
   */
  encode(frame: Frame): number {
    return FrameEncoder.#encodeNow(this, frame);
  }

  static readonly #encodeNow = (function encoderEncode(self: FrameEncoder, frame: Frame): number {
    try {
      self.#pos = FRAME_HEADER_SIZE;
      FrameEncoder.#room(self, 0);
      FrameEncoder.#payload(self, frame);
    } catch (err) {
      if (err !== BUFFER_FULL) throw err;
      const needed = frameSize(frame);
      const size = self.#bytes.length;
      throw new ArgumentError(
        `${frame.kind} frame needs ${needed} bytes but the buffer is ${size} bytes; ` +
          `raise the ${self.#optionName} option`,
      );
    }
    self.#view.setUint32(0, FrameKind[frame.kind], true);
    self.#view.setUint32(4, self.#pos - FRAME_HEADER_SIZE, true);
    return self.#pos;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #payload = (function encoderPayload(self: FrameEncoder, frame: Frame): void {
    switch (frame.kind) {
      case "CALL":
      case "HOST_CALL":
        FrameEncoder.#str(self, frame.name);
        FrameEncoder.#u32(self, frame.args.length);
        for (const arg of frame.args) FrameEncoder.#value(self, arg);
        return;
      case "RETURN":
      case "HOST_RETURN":
        FrameEncoder.#value(self, frame.value);
        return;
      case "ERROR":
        FrameEncoder.#u32(self, frame.code);
        FrameEncoder.#str(self, frame.message);
        return;
      case "HOST_ERROR":
      case "PANIC":
        FrameEncoder.#str(self, frame.message);
        return;
      case "FUNCTION_TABLE":
        FrameEncoder.#functionTable(self, frame.functions);
        if (frame.imports !== undefined) FrameEncoder.#functionTable(self, frame.imports);
        return;
      case "FAULT":
        FrameEncoder.#u64(self, frame.vector);
        FrameEncoder.#u64(self, frame.errorCode);
        FrameEncoder.#u64(self, frame.rip);
        FrameEncoder.#u64(self, frame.cr2);
        FrameEncoder.#u64(self, frame.rsp);
        return;
      case "LOG":
        FrameEncoder.#u32(self, frame.level);
        FrameEncoder.#str(self, frame.message);
        return;
    }
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #functionTable = (function encoderFunctionTable(
    self: FrameEncoder,
    functions: readonly FunctionSignature[],
  ): void {
    FrameEncoder.#u32(self, functions.length);
    for (const fn of functions) {
      if (fn.params.length > 255) {
        throw new ArgumentError(`function ${fn.name} has more than 255 parameters`);
      }
      FrameEncoder.#str(self, fn.name);
      FrameEncoder.#room(self, 2 + fn.params.length);
      self.#bytes[self.#pos++] = fn.params.length;
      for (const p of fn.params) self.#bytes[self.#pos++] = ValueTag[p];
      self.#bytes[self.#pos++] = ValueTag[fn.result];
    }
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #room = (function encoderRoom(self: FrameEncoder, n: number): void {
    if (n > self.#bytes.length - self.#pos) throw BUFFER_FULL;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #u32 = (function encoderU32(self: FrameEncoder, v: number): void {
    FrameEncoder.#room(self, 4);
    self.#view.setUint32(self.#pos, v, true);
    self.#pos += 4;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #u64 = (function encoderU64(self: FrameEncoder, v: bigint): void {
    FrameEncoder.#room(self, 8);
    self.#view.setBigUint64(self.#pos, v, true);
    self.#pos += 8;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #str = (function encoderStr(self: FrameEncoder, s: string): void {
    FrameEncoder.#room(self, 4);
    const start = self.#pos + 4;
    const bytes = self.#bytes;
    let written = -1;
    if (s.length <= SHORT_STRING && s.length <= bytes.length - start) {
      // Short ASCII strings (names, most messages) are cheaper to copy here than in native code.
      let i = 0;
      for (; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        bytes[start + i] = c;
      }
      if (i === s.length) written = i;
    }
    if (written < 0) {
      const result = utf8Encoder.encodeInto(s, bytes.subarray(start));
      if (result.read < s.length) throw BUFFER_FULL;
      written = result.written;
    }
    self.#view.setUint32(self.#pos, written, true);
    self.#pos = start + written;
  }).bind(undefined); // Eager: see the note after the imports.

  static readonly #value = (function encoderValue(self: FrameEncoder, v: Value): void {
    FrameEncoder.#room(self, 1);
    const view = self.#view;
    self.#bytes[self.#pos++] = ValueTag[v.type];
    switch (v.type) {
      case "void":
        return;
      case "i32":
        FrameEncoder.#room(self, 4);
        view.setInt32(self.#pos, v.value, true);
        self.#pos += 4;
        return;
      case "u32":
        FrameEncoder.#u32(self, v.value);
        return;
      case "f32":
        FrameEncoder.#room(self, 4);
        if (v.bits !== undefined) view.setUint32(self.#pos, v.bits, true);
        else view.setFloat32(self.#pos, v.value, true);
        self.#pos += 4;
        return;
      case "i64":
        FrameEncoder.#room(self, 8);
        view.setBigInt64(self.#pos, v.value, true);
        self.#pos += 8;
        return;
      case "u64":
        FrameEncoder.#u64(self, v.value);
        return;
      case "f64":
        FrameEncoder.#room(self, 8);
        if (v.bits !== undefined) view.setBigUint64(self.#pos, v.bits, true);
        else view.setFloat64(self.#pos, v.value, true);
        self.#pos += 8;
        return;
      case "bool":
        FrameEncoder.#room(self, 1);
        self.#bytes[self.#pos++] = v.value ? 1 : 0;
        return;
      case "string":
        FrameEncoder.#str(self, v.value);
        return;
      case "bytes":
        FrameEncoder.#room(self, 4 + v.value.length);
        view.setUint32(self.#pos, v.value.length, true);
        self.#bytes.set(v.value, self.#pos + 4);
        self.#pos += 4 + v.value.length;
        return;
    }
  }).bind(undefined); // Eager: see the note after the imports.
}

/**
 * Writes `frame` at the start of `buffer` and returns its size in bytes. Throws
 * {@link ArgumentError} naming `optionName` when it does not fit. Prefer a reused
 * {@link FrameEncoder} on a hot path.
 */
export function encodeFrame(frame: Frame, buffer: Uint8Array, optionName = "inputSize"): number {
  return new FrameEncoder(buffer, optionName).encode(frame);
}

/** Returns the number of bytes UTF-8 needs for `s` (a lone surrogate becomes U+FFFD: 3 bytes). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

function valueSize(v: Value): number {
  switch (v.type) {
    case "void":
      return 1;
    case "i32":
    case "u32":
    case "f32":
      return 5;
    case "i64":
    case "u64":
    case "f64":
      return 9;
    case "bool":
      return 2;
    case "string":
      return 5 + utf8Length(v.value);
    case "bytes":
      return 5 + v.value.length;
  }
}

/** Returns the encoded size of `frame` in bytes, header included. */
export function frameSize(frame: Frame): number {
  let n = FRAME_HEADER_SIZE;
  switch (frame.kind) {
    case "CALL":
    case "HOST_CALL":
      n += 8 + utf8Length(frame.name);
      for (const arg of frame.args) n += valueSize(arg);
      return n;
    case "RETURN":
    case "HOST_RETURN":
      return n + valueSize(frame.value);
    case "ERROR":
    case "LOG":
      return n + 8 + utf8Length(frame.message);
    case "HOST_ERROR":
    case "PANIC":
      return n + 4 + utf8Length(frame.message);
    case "FUNCTION_TABLE":
      for (const table of [frame.functions, frame.imports]) {
        if (table === undefined) continue;
        n += 4;
        for (const fn of table) n += 6 + utf8Length(fn.name) + fn.params.length;
      }
      return n;
    case "FAULT":
      return n + FAULT_PAYLOAD_SIZE;
  }
}

const I32_RANGE = "an integer from -2147483648 to 2147483647";
const U32_RANGE = "an integer from 0 to 4294967295";
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;
const U64_MAX = (1n << 64n) - 1n;

function describe(v: unknown): string {
  switch (typeof v) {
    case "number":
      return `number ${v}`;
    case "bigint":
      return `bigint ${v}n`;
    case "string":
      return v.length > 40 ? `a string of length ${v.length}` : `string ${JSON.stringify(v)}`;
    case "object":
      return v === null ? "null" : `a ${v.constructor?.name ?? "object"}`;
    case "symbol":
      return "a symbol";
    case "function":
      return "a function";
    default:
      return String(v);
  }
}

function badValue(fnName: string, index: number, expected: string, got: unknown): ArgumentError {
  const where = index < 0 ? "return value" : `argument ${index}`;
  return new ArgumentError(`${fnName}: ${where} must be ${expected}, got ${describe(got)}`);
}

/**
 * Converts a JS value to a typed {@link Value}, strictly: `i32`/`u32` take an integer number in
 * range; `i64`/`u64` take a bigint in range (never a number, as in the WebAssembly JS API);
 * `f32`/`f64` take any number (`f32` rounds to single precision); `bool` a boolean; `string` a
 * well-formed string (no lone surrogates); `bytes` a Uint8Array; `void` `undefined`.
 * A `void` return value (`index` -1) ignores what it is given.
 *
 * Throws {@link ArgumentError} naming `fnName` and argument `index` (-1: the return value).
 */
export const toValue =
  (function toValue(arg: unknown, type: ValueType, fnName: string, index: number): Value {
    switch (type) {
      case "void":
        if (arg !== undefined && index >= 0) throw badValue(fnName, index, "undefined", arg);
        return { type };
      case "i32":
        if (typeof arg !== "number" || (arg | 0) !== arg) {
          throw badValue(fnName, index, `an i32 (${I32_RANGE})`, arg);
        }
        return { type, value: arg };
      case "u32":
        if (typeof arg !== "number" || arg >>> 0 !== arg) {
          throw badValue(fnName, index, `a u32 (${U32_RANGE})`, arg);
        }
        return { type, value: arg };
      case "i64":
        if (typeof arg !== "bigint" || arg < I64_MIN || arg > I64_MAX) {
          throw badValue(fnName, index, "an i64 (a bigint from -2n ** 63n to 2n ** 63n - 1n)", arg);
        }
        return { type, value: arg };
      case "u64":
        if (typeof arg !== "bigint" || arg < 0n || arg > U64_MAX) {
          throw badValue(fnName, index, "a u64 (a bigint from 0n to 2n ** 64n - 1n)", arg);
        }
        return { type, value: arg };
      case "f32":
      case "f64":
        if (typeof arg !== "number") throw badValue(fnName, index, `an ${type} (a number)`, arg);
        return { type, value: arg };
      case "bool":
        if (typeof arg !== "boolean") throw badValue(fnName, index, "a boolean", arg);
        return { type, value: arg };
      case "string":
        if (typeof arg !== "string") throw badValue(fnName, index, "a string", arg);
        if (!arg.isWellFormed()) {
          throw badValue(fnName, index, "a well-formed string (no lone surrogates)", arg);
        }
        return { type, value: arg };
      case "bytes":
        if (!(arg instanceof Uint8Array)) throw badValue(fnName, index, "a Uint8Array", arg);
        return { type, value: arg };
    }
  }).bind(undefined); // Eager: see the note after the imports.

/**
 * Converts call arguments to typed values for a function with parameter types `params`.
 * Throws {@link ArgumentError} for the wrong number of arguments or a value of the wrong type.
 */
export const toValues = (function toValues(
  args: readonly unknown[],
  params: readonly ValueType[],
  fnName: string,
): Value[] {
  if (args.length !== params.length) {
    throw new ArgumentError(
      `${fnName} takes ${params.length} argument${params.length === 1 ? "" : "s"} (${
        params.join(", ")
      }), got ${args.length}`,
    );
  }
  const values = new Array<Value>(args.length);
  for (let i = 0; i < args.length; i++) values[i] = toValue(args[i], params[i], fnName, i);
  return values;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Converts a typed value to JS: `void` → `undefined`, `i64`/`u64` → bigint, the other numbers →
 * number, `bytes` → the value's Uint8Array (decoded values are already copies).
 */
export const fromValue = (function fromValue(value: Value): JsValue {
  return value.type === "void" ? undefined : value.value;
}).bind(undefined); // Eager: see the note after the imports.
