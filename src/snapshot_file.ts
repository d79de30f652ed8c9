/**
 * Snapshot files: a `Snapshot` (and the Wasm and JavaScript kinds around one) written to disk and
 * read back in another process (issue 24 item 3). The format is docs/snapshot-format.md: a fixed
 * header, a JSON description protected by SHA-256, then the memory's data pages and the code
 * image's pages, each protected by a CRC-32 the description records. The pages are written and
 * read by the cdylib (`hl_snapshot_save_pages` / `hl_snapshot_load_pages`, C ABI 9) straight
 * between the file and the snapshot's sealed memfd, so they never pass through JavaScript.
 *
 * Everything read is checked before it is used: every length and offset is bounded, the
 * description's fields are type-checked, and a file from another format, library version, C ABI,
 * guest ABI or CPU is refused with a {@linkcode SnapshotFormatError} naming the reason.
 *
 * @module
 */

import {
  ABI_VERSION,
  MAX_MEMORY_SIZE,
  MEMORY_ALIGN,
  PAGE_SIZE as PAGE,
  PT_BASE_ADDR,
  VALUE_TYPES,
  type ValueType,
} from "./abi.ts";
import { PACKAGE_VERSION } from "./artifacts.ts";
import { HypervisorError } from "./errors.ts";
import { CDYLIB_ABI_VERSION } from "./ffi/lib.ts";
import { hypervisorInfo, MemorySnapshotHandle } from "./ffi/vm.ts";
import type { MemoryLayout } from "./layout.ts";
import {
  type HostSignature,
  makeSnapshot,
  type Snapshot,
  SnapshotFormatError,
  SnapshotMismatchError,
  type SnapshotState,
  stateOf,
} from "./snapshot.ts";
import type { FunctionSignature } from "./wire.ts";
import {
  makeWasmSnapshot,
  type WasmSnapshot,
  type WasmSnapshotState,
  wasmStateOf,
} from "./wasm/snapshot.ts";
import type { WasmExtern } from "./wasm/types.ts";
import { type JsSnapshot, jsStateOf, makeJsSnapshot } from "./js/snapshot.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The file's first 8 bytes. */
export const SNAPSHOT_MAGIC: Uint8Array = new TextEncoder().encode("HLSNAP\r\n");
/** The version of the file layout this code writes and reads. */
export const SNAPSHOT_FORMAT_VERSION = 1;
/** Magic (8), format version (u32), description length (u32), SHA-256 of the description (32). */
const HEADER_SIZE = 48;
/** Largest description accepted (a description is a few KiB: the layout, tables, page bitmaps). */
const MAX_DESCRIPTION = 4 << 20;
/** A placeholder wider than any offset or CRC written (so the real description is shorter). */
const WIDE = Number.MAX_SAFE_INTEGER;

/** What kind of snapshot a file holds. */
export type SnapshotFileKind = "sandbox" | "wasm" | "js";

/** The part of a file's description about one page section. */
interface PagesDescription {
  /** Size of the region in bytes. */
  size: number;
  /** Where its data pages start in the file. */
  offset: number;
  /** The page bitmap, u64 words little-endian, base64. */
  bitmap: string;
  /** CRC-32 of the data pages. */
  crc: number;
}

/** A file's JSON description. */
export interface SnapshotDescription {
  format: number;
  library: string;
  cdylibAbi: number;
  guestAbi: number;
  cpu: string;
  kind: SnapshotFileKind;
  memory: PagesDescription;
  code?: PagesDescription;
  vcpu: string;
  layout: MemoryLayout;
  functions: FunctionSignature[];
  imports: FunctionSignature[] | null;
  hostSignatures: [string, HostSignature][];
  guestId: string;
  /** What the kind keeps beside the native snapshot (`WasmSnapshot`, `JsSnapshot`). */
  extra?: unknown;
}

/** Options of loading a snapshot file. */
export interface SnapshotLoadOptions {
  /** Path of the native library (default: found as for `Sandbox`). */
  library?: string;
}

/** The TC39 base64 methods (V8 in Deno 2.9 has them); typed here, the lib types lag. */
type Base64Array = Uint8Array & { toBase64(): string };
const Base64Ctor = Uint8Array as unknown as { fromBase64(text: string): Uint8Array };

function base64(bytes: Uint8Array): string {
  return (bytes as Base64Array).toBase64();
}

const unbase64 = (function unbase64(text: string, what: string): Uint8Array {
  try {
    return Base64Ctor.fromBase64(text);
  } catch (e) {
    throw new SnapshotFormatError("corrupt", `${what} is not base64`, { cause: e });
  }
}).bind(undefined); // Eager: see the note after the imports.

/** The CPU features fingerprint of this host's guests, 16 hex digits. */
const cpuFingerprint = (function cpuFingerprint(library?: string): string {
  return hypervisorInfo(library).cpuFeatures;
}).bind(undefined); // Eager: see the note after the imports.

const utf8 = new TextEncoder();

/**
 * Writes `snap` (with the kind's `extra` state) to `path`: into a temporary file beside it, then
 * renamed over `path`, so a reader never sees half a file.
 */
export async function saveSnapshotFile(
  snap: Snapshot,
  path: string,
  kind: SnapshotFileKind,
  extra?: unknown,
  library?: string,
  durable = true,
): Promise<void> {
  const state = stateOf(snap);
  const memBitmap = state.memory.bitmap();
  const codeBitmap = state.code?.bitmap();
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    // The description is written after the pages (their CRCs go in it), but the pages' offset
    // depends on its length: reserve room for it with the CRCs and offsets at their widest.
    const description: SnapshotDescription = {
      format: SNAPSHOT_FORMAT_VERSION,
      library: PACKAGE_VERSION,
      cdylibAbi: CDYLIB_ABI_VERSION,
      guestAbi: state.abiVersion,
      cpu: cpuFingerprint(library),
      kind,
      memory: { size: state.memory.size, offset: WIDE, bitmap: base64(memBitmap), crc: WIDE },
      code: state.code && codeBitmap
        ? { size: state.code.size, offset: WIDE, bitmap: base64(codeBitmap), crc: WIDE }
        : undefined,
      vcpu: base64(state.vcpu),
      layout: { ...state.layout },
      functions: [...state.functions.values()],
      imports: state.imports ? [...state.imports] : null,
      hostSignatures: [...state.hostSignatures],
      guestId: state.guestId,
      extra,
    };
    const encode = () => utf8.encode(JSON.stringify(description));
    const room = encode().length;
    if (room > MAX_DESCRIPTION) {
      // A loader would refuse it (its bound on what it parses): refuse to write it instead.
      throw new SnapshotMismatchError(
        `the snapshot's description is ${room} bytes, more than the format's ${MAX_DESCRIPTION}`,
      );
    }
    description.memory.offset = Math.ceil((HEADER_SIZE + room) / PAGE) * PAGE;
    if (description.code) {
      description.code.offset = description.memory.offset + state.memory.dataPages * PAGE;
    }
    // Created empty, this user's only, and never an existing file (the name is new): a plain
    // open, as `Deno.writeFile` loads Deno's streams code on its first use (~4 ms on the cold
    // path of a process whose start snapshot is not on disk yet).
    Deno.openSync(tmp, { write: true, createNew: true, mode: 0o600 }).close();
    description.memory.crc = state.memory.savePages(tmp, description.memory.offset);
    if (state.code && description.code) {
      description.code.crc = state.code.savePages(tmp, description.code.offset);
    }
    const json = encode();
    if (HEADER_SIZE + json.length > description.memory.offset) {
      throw new SnapshotFormatError("format", "the snapshot description outgrew its room (a bug)");
    }
    const header = new Uint8Array(HEADER_SIZE + json.length);
    header.set(SNAPSHOT_MAGIC, 0);
    const view = new DataView(header.buffer);
    view.setUint32(8, SNAPSHOT_FORMAT_VERSION, true);
    view.setUint32(12, json.length, true);
    header.set(
      new Uint8Array(await crypto.subtle.digest("SHA-256", json as Uint8Array<ArrayBuffer>)),
      16,
    );
    header.set(json, HEADER_SIZE);
    const file = await Deno.open(tmp, { write: true });
    try {
      let done = 0;
      while (done < header.length) done += await file.write(header.subarray(done));
      // On disk before the rename, so a crash leaves the old file or the whole new one. A cache
      // (`durable` false) skips it: a file torn by a crash fails its checks and is rewritten.
      if (durable) await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}

const readExactly = (function readExactly(file: Deno.FsFile, n: number, what: string): Uint8Array {
  const out = new Uint8Array(n);
  let done = 0;
  while (done < n) {
    const got = file.readSync(out.subarray(done));
    if (got === null) throw new SnapshotFormatError("corrupt", `the file ends inside ${what}`);
    done += got;
  }
  return out;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Reads and checks a file's header and description (no pages). The file is read with
 * synchronous calls: a few small reads, each cheaper than an asynchronous round trip through
 * Deno's thread pool (this is on the cold-create path).
 */
export const readSnapshotDescription = (async function readSnapshotDescription(
  path: string,
): Promise<{ description: SnapshotDescription; fileSize: number }> {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    throw new SnapshotFormatError(
      "io",
      `cannot open the snapshot file ${path}: ${(e as Error).message}`,
      { cause: e },
    );
  }
  let json: Uint8Array;
  let header: Uint8Array;
  let fileSize: number;
  try {
    fileSize = file.statSync().size;
    header = readExactly(file, Math.min(HEADER_SIZE, fileSize), "the header");
    if (
      header.length < SNAPSHOT_MAGIC.length || SNAPSHOT_MAGIC.some((b, i) => header[i] !== b)
    ) {
      throw new SnapshotFormatError("format", `${path} is not a snapshot file`);
    }
    if (header.length < HEADER_SIZE) {
      throw new SnapshotFormatError("corrupt", `${path}: the file ends inside the header`);
    }
    const view = new DataView(header.buffer);
    const format = view.getUint32(8, true);
    if (format !== SNAPSHOT_FORMAT_VERSION) {
      throw new SnapshotFormatError(
        "version",
        `${path} has snapshot format ${format}, this library reads ${SNAPSHOT_FORMAT_VERSION}`,
      );
    }
    const len = view.getUint32(12, true);
    if (len === 0 || len > MAX_DESCRIPTION || HEADER_SIZE + len > fileSize) {
      throw new SnapshotFormatError(
        "corrupt",
        `${path}: the description's length ${len} is out of bounds`,
      );
    }
    json = readExactly(file, len, "the description");
  } catch (e) {
    if (e instanceof SnapshotFormatError) throw e;
    // A read that fails (a directory, an I/O error) is as typed as an open that fails.
    throw new SnapshotFormatError(
      "io",
      `cannot read the snapshot file ${path}: ${(e as Error).message}`,
      { cause: e },
    );
  } finally {
    file.close();
  }
  // The digest runs on Deno's blocking thread while this one parses and checks the description;
  // the outcome is decided in the same order as one after the other: a SHA-256 mismatch first,
  // then what the parse or the checks found.
  const digesting = crypto.subtle.digest("SHA-256", json as Uint8Array<ArrayBuffer>);
  let description: SnapshotDescription | undefined;
  let refused: unknown;
  try {
    let parsed: unknown;
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(json));
    } catch (e) {
      throw new SnapshotFormatError("corrupt", `${path}: the description is not JSON`, {
        cause: e,
      });
    }
    description = checkDescription(parsed, fileSize, path);
  } catch (e) {
    refused = e;
  }
  const digest = new Uint8Array(await digesting);
  if (digest.some((b, i) => b !== header[16 + i])) {
    throw new SnapshotFormatError("corrupt", `${path}: the description's SHA-256 does not match`);
  }
  if (description === undefined) throw refused;
  return { description, fileSize };
}).bind(undefined); // Eager: see the note after the imports.

const isInt = (function isInt(v: unknown, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0 && v <= max;
}).bind(undefined); // Eager: see the note after the imports.

const isString = (function isString(v: unknown, max = 1 << 20): v is string {
  return typeof v === "string" && v.length <= max;
}).bind(undefined); // Eager: see the note after the imports.

/** The layout fields a snapshot file's description carries, each a non-negative safe integer. */
export const LAYOUT_KEYS = [
  "memorySize",
  "pageTableCount",
  "inputAddr",
  "inputSize",
  "outputAddr",
  "outputSize",
  "imageAddr",
  "imageSize",
  "imageBase",
  "heapAddr",
  "heapSize",
  "guardAddr",
  "stackAddr",
  "stackSize",
  "stackTop",
  "codeAddr",
  "codeSize",
  "wasmReservationSize",
  "wasmTablesAddr",
] as const;

/**
 * A section's numbers, type-checked. The region's size is bounded by the cdylib's per-region
 * limit (one definition, `MAX_REGION_SIZE` of rust-vmm/src/memory.rs: a larger one is refused as
 * INVALID_ARGUMENT, so corrupt), and before that by the bitmap: `loadPages` wants one bit per page
 * from a description of at most `MAX_DESCRIPTION` bytes.
 */
const checkPages =
  (function checkPages(v: unknown, what: string, fileSize: number): PagesDescription {
    const p = v as PagesDescription;
    if (
      typeof p !== "object" || p === null || !isInt(p.size) || p.size === 0 ||
      p.size % PAGE !== 0 || !isInt(p.offset) || p.offset % PAGE !== 0 || !isString(p.bitmap) ||
      !isInt(p.crc, 0xffff_ffff) || p.offset > fileSize
    ) {
      throw new SnapshotFormatError("corrupt", `the ${what} section's description is malformed`);
    }
    return p;
  }).bind(undefined); // Eager: see the note after the imports.

const VALUE_TYPE_SET: ReadonlySet<unknown> = new Set<unknown>(VALUE_TYPES);

/**
 * A function signature from its parts, checked: a name of at most 255 characters, at most 32
 * parameters of the ABI's value types, and a value type or `void` as the result. Plain loops and
 * no intermediate objects: the description of a start snapshot holds a few dozen of these, on the
 * cold-create path.
 */
const signatureOf =
  (function signatureOf(name: unknown, params: unknown, result: unknown): FunctionSignature {
    if (
      !isString(name, 255) || !Array.isArray(params) || params.length > 32 ||
      !(VALUE_TYPE_SET.has(result) || result === "void")
    ) {
      throw new SnapshotFormatError("corrupt", "a function signature is malformed");
    }
    const out: ValueType[] = new Array(params.length);
    for (let i = 0; i < params.length; i++) {
      if (!VALUE_TYPE_SET.has(params[i])) {
        throw new SnapshotFormatError("corrupt", "a function signature is malformed");
      }
      out[i] = params[i];
    }
    return { name, params: out, result: result as FunctionSignature["result"] };
  }).bind(undefined); // Eager: see the note after the imports.

const checkSignature = (function checkSignature(v: unknown): FunctionSignature {
  if (typeof v !== "object" || v === null) {
    throw new SnapshotFormatError("corrupt", "a function signature is malformed");
  }
  const f = v as Record<string, unknown>;
  return signatureOf(f.name, f.params, f.result);
}).bind(undefined); // Eager: see the note after the imports.

/** Type-checks a parsed description and bounds every number in it. */
const checkDescription =
  (function checkDescription(v: unknown, fileSize: number, path: string): SnapshotDescription {
    const d = v as SnapshotDescription;
    if (typeof d !== "object" || d === null || d.format !== SNAPSHOT_FORMAT_VERSION) {
      throw new SnapshotFormatError("corrupt", `${path}: the description is malformed`);
    }
    if (d.library !== PACKAGE_VERSION) {
      throw new SnapshotFormatError(
        "version",
        `${path} was written by @hl/sandbox ${String(d.library)}, this is ${PACKAGE_VERSION}`,
      );
    }
    if (d.cdylibAbi !== CDYLIB_ABI_VERSION || d.guestAbi !== ABI_VERSION) {
      throw new SnapshotFormatError(
        "version",
        `${path} was written for C ABI ${String(d.cdylibAbi)} and guest ABI ${
          String(d.guestAbi)
        }, ` +
          `this library has ${CDYLIB_ABI_VERSION} and ${ABI_VERSION}`,
      );
    }
    if (!["sandbox", "wasm", "js"].includes(d.kind) || !isString(d.cpu, 16)) {
      throw new SnapshotFormatError("corrupt", `${path}: the description is malformed`);
    }
    const memory = checkPages(d.memory, "memory", fileSize);
    const code = d.code === undefined ? undefined : checkPages(d.code, "code", fileSize);
    const layout = d.layout as unknown as Record<string, unknown>;
    if (
      typeof layout !== "object" || layout === null || !LAYOUT_KEYS.every((k) => isInt(layout[k]))
    ) {
      throw new SnapshotFormatError("corrupt", `${path}: the memory layout is malformed`);
    }
    const l = d.layout;
    const inside = (addr: number, size: number) => addr + size <= l.memorySize;
    if (
      l.memorySize !== memory.size || !inside(l.inputAddr, l.inputSize) ||
      !inside(l.outputAddr, l.outputSize) || !inside(l.imageAddr, l.imageSize) ||
      !inside(l.heapAddr, l.heapSize) || !inside(l.stackAddr, l.stackSize) ||
      l.stackTop > l.memorySize ||
      (l.codeSize > 0) !== (code !== undefined) ||
      (code !== undefined && (l.codeAddr < l.memorySize || code.size < l.codeSize))
    ) {
      throw new SnapshotFormatError(
        "corrupt",
        `${path}: the memory layout does not fit the memory`,
      );
    }
    // The Wasm reservation's page tables are where the host reads and writes what the reservation
    // maps (wasm_reservation.ts) on every hl_wasm_map and restore: as computeLayout lays them out,
    // right after the identity map's and below the input buffer and the heap, so no request of the
    // guest's can map them, and their entries lie inside the memory.
    const tables = l.wasmReservationSize / MEMORY_ALIGN;
    const tablesEnd = l.wasmTablesAddr + (2 + tables) * PAGE;
    if (
      l.wasmReservationSize % MEMORY_ALIGN !== 0 || l.wasmReservationSize > MAX_MEMORY_SIZE ||
      (l.wasmReservationSize === 0
        ? l.wasmTablesAddr !== 0
        : l.wasmTablesAddr !== PT_BASE_ADDR + l.pageTableCount * PAGE ||
          tablesEnd > l.inputAddr || tablesEnd > l.heapAddr)
    ) {
      throw new SnapshotFormatError(
        "corrupt",
        `${path}: the Wasm reservation's layout does not fit the memory`,
      );
    }
    if (
      !isString(d.vcpu, 1 << 16) || !isString(d.guestId, 64) || !Array.isArray(d.functions) ||
      d.functions.length > 65536 || !(d.imports === null || Array.isArray(d.imports)) ||
      !Array.isArray(d.hostSignatures) || d.hostSignatures.length > 65536
    ) {
      throw new SnapshotFormatError("corrupt", `${path}: the description is malformed`);
    }
    d.functions = d.functions.map(checkSignature);
    if (d.imports) d.imports = d.imports.map(checkSignature);
    for (const entry of d.hostSignatures) {
      if (!Array.isArray(entry) || entry.length !== 2 || !isString(entry[0], 255)) {
        throw new SnapshotFormatError("corrupt", `${path}: a host signature is malformed`);
      }
      const sig = entry[1] as unknown as Record<string, unknown> | null;
      if (typeof sig !== "object" || sig === null) {
        throw new SnapshotFormatError("corrupt", "a function signature is malformed");
      }
      const s = signatureOf(entry[0], sig.params, sig.result);
      entry[1] = { params: s.params, result: s.result };
    }
    return d;
  }).bind(undefined); // Eager: see the note after the imports.

/**
 * Whether the first `pages` bits of `bitmap` (least significant bit first) are all set and no
 * other bit is: a section whose every page holds data. Compared a byte at a time (whole bytes
 * 0xff, then the partial byte's exact mask, then zero bytes), not a bit at a time.
 *
 * @example
 * ```ts ignore
 * bitmapDense(new Uint8Array([0xff, 0x07, 0, 0]), 11); // true
 * bitmapDense(new Uint8Array([0xff, 0x0f, 0, 0]), 11); // false: page 11's bit is set
 * ```
 */
export const bitmapDense = (function bitmapDense(bitmap: Uint8Array, pages: number): boolean {
  const bits = Math.min(pages, bitmap.length * 8);
  const full = bits >> 3;
  let i = 0;
  for (; i < full; i++) if (bitmap[i] !== 0xff) return false;
  const partial = bits & 7;
  if (partial !== 0 && bitmap[i++] !== (1 << partial) - 1) return false;
  for (; i < bitmap.length; i++) if (bitmap[i] !== 0) return false;
  return true;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A dense section's CRC-32 check that an earlier load of the same file made, remembered by the
 * caller under its own trust rule (start_snapshots.ts): in, `identity` is
 * `[1, dev, ino, size, ctime_s, ctime_ns]` of the file as it was checked, or `[0, …]`; out, what
 * to remember (`[0, …]`: nothing, the file changed while it was read), and `bytesRead`, the bytes
 * read for the check (0 when the remembered identity matched the open file).
 */
export interface CodeImageMemo {
  /** Six words, in and out: see the interface. */
  identity: BigUint64Array;
  /** Bytes of the code image read for its CRC-32 by this load. */
  bytesRead: number;
}

/** A memory snapshot handle for a page section of `path`. */
const loadPages = (function loadPages(
  path: string,
  pages: PagesDescription,
  what: string,
  library?: string,
  memo?: CodeImageMemo,
): MemorySnapshotHandle {
  const bitmap = unbase64(pages.bitmap, `the ${what} bitmap`);
  const words = Math.ceil(pages.size / PAGE / 64);
  if (bitmap.length !== words * 8) {
    throw new SnapshotFormatError("corrupt", `the ${what} bitmap has the wrong length`);
  }
  // A section whose every page holds data (a code image) is mapped from the file itself, no
  // copy; a sparse one (memory) is read into a new memfd (docs/snapshot-format.md, "Choices").
  const dense = bitmapDense(bitmap, pages.size / PAGE);
  try {
    if (dense && memo) {
      const { handle, read } = MemorySnapshotHandle.fromFileKnown(
        path,
        pages.offset,
        pages.size,
        pages.crc,
        memo.identity,
        library,
      );
      memo.bytesRead = read ? pages.size : 0;
      return handle;
    }
    return MemorySnapshotHandle.fromFile(
      path,
      pages.offset,
      pages.size,
      dense ? null : bitmap,
      pages.crc,
      library,
    );
  } catch (e) {
    // INVALID_ARGUMENT: the file's pages are short or corrupt (the message says which).
    if (!(e instanceof HypervisorError) || e.code !== "INVALID_ARGUMENT") throw e;
    throw new SnapshotFormatError("corrupt", `${path}: the ${what} pages: ${e.message}`, {
      cause: e,
    });
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Reads a snapshot file: checks it (header, description, versions, CPU), reads its pages into
 * new sealed memfds, and returns the native snapshot with the kind and the kind's extra state.
 */
export const loadSnapshotFile = (async function loadSnapshotFile(
  path: string,
  options: SnapshotLoadOptions = {},
  memo?: CodeImageMemo,
): Promise<{ snapshot: Snapshot; kind: SnapshotFileKind; extra: unknown }> {
  const { description: d } = await readSnapshotDescription(path);
  const cpu = cpuFingerprint(options.library);
  if (d.cpu !== cpu) {
    throw new SnapshotFormatError(
      "cpu",
      `${path} was written on a host with other CPU features (${d.cpu}; this host ${cpu})`,
    );
  }
  const vcpu = unbase64(d.vcpu, "the vCPU state");
  const memory = loadPages(path, d.memory, "memory", options.library);
  let code: MemorySnapshotHandle | undefined;
  try {
    code = d.code ? loadPages(path, d.code, "code", options.library, memo) : undefined;
    const state: SnapshotState = {
      memory,
      vcpu,
      layout: Object.fromEntries(
        LAYOUT_KEYS.map((k) => [k, d.layout[k]]),
      ) as unknown as MemoryLayout,
      code,
      functions: new Map(d.functions.map((f) => [f.name, f])),
      imports: d.imports ?? undefined,
      hostSignatures: new Map(d.hostSignatures),
      guestId: d.guestId,
      abiVersion: d.guestAbi,
    };
    const snapshot = makeSnapshot(state); // retains the code image
    code?.release();
    return { snapshot, kind: d.kind, extra: d.extra };
  } catch (e) {
    memory.release();
    code?.release();
    throw e;
  }
}).bind(undefined); // Eager: see the note after the imports.

// --- The Wasm and JavaScript kinds ---------------------------------------------------------

/** What a Wasm snapshot file keeps beside the native snapshot. */
interface WasmExtra {
  key: string;
  imports: WasmExtern[];
  exports: WasmExtern[];
  wasiOn: boolean;
  wasiRegistered: boolean;
}

const EXTERN_KINDS = ["function", "table", "memory", "global"];
const WASM_TYPES = ["i32", "i64", "f32", "f64", "v128", "funcref", "externref"];

const checkExterns = (function checkExterns(v: unknown, what: string): WasmExtern[] {
  if (!Array.isArray(v) || v.length > 100_000) {
    throw new SnapshotFormatError("corrupt", `the module's ${what} are malformed`);
  }
  return v.map((e: WasmExtern) => checkExtern(e, what));
}).bind(undefined); // Eager: see the note after the imports.

/** One entry of {@linkcode checkExterns}'s list, copied. */
const checkExtern = (function checkExtern(e: WasmExtern, what: string): WasmExtern {
  const t = e?.type;
  if (
    typeof e !== "object" || e === null || !isString(e.module, 4096) ||
    !isString(e.name, 4096) || !EXTERN_KINDS.includes(e.kind) ||
    (t !== undefined &&
      (typeof t !== "object" || t === null || !Array.isArray(t.params) ||
        !Array.isArray(t.results) || t.params.length > 1000 || t.results.length > 1000 ||
        ![...t.params, ...t.results].every((x) => WASM_TYPES.includes(x))))
  ) {
    throw new SnapshotFormatError("corrupt", `one of the module's ${what} is malformed`);
  }
  const out: WasmExtern = { module: e.module, name: e.name, kind: e.kind };
  if (t !== undefined) out.type = { params: [...t.params], results: [...t.results] };
  return out;
}).bind(undefined); // Eager: see the note after the imports.

function wasmExtra(snap: WasmSnapshot): { native: Snapshot; extra: WasmExtra } {
  const s = wasmStateOf(snap, true);
  if (s.preopens.length > 0) {
    // A file must not carry grants to host directories: whoever writes it would choose them.
    throw new SnapshotMismatchError(
      "a WasmSnapshot with preopened directories cannot be saved (a snapshot file holds no " +
        "access to host directories)",
    );
  }
  return {
    native: s.native,
    extra: {
      key: s.key,
      imports: [...s.imports],
      exports: [...s.exports],
      wasiOn: s.wasiOn,
      wasiRegistered: s.wasiRegistered,
    },
  };
}

const wasmFrom = (function wasmFrom(native: Snapshot, v: unknown): WasmSnapshot {
  const x = v as WasmExtra;
  if (
    typeof x !== "object" || x === null || !isString(x.key) || typeof x.wasiOn !== "boolean" ||
    typeof x.wasiRegistered !== "boolean"
  ) {
    throw new SnapshotFormatError("corrupt", "the WasmSnapshot's description is malformed");
  }
  const state: WasmSnapshotState = {
    native,
    key: x.key,
    imports: checkExterns(x.imports, "imports"),
    exports: checkExterns(x.exports, "exports"),
    wasiOn: x.wasiOn,
    wasiRegistered: x.wasiRegistered,
    preopens: [],
  };
  return makeWasmSnapshot(state);
}).bind(undefined); // Eager: see the note after the imports.

/** Loads a file of `kind`, refusing another kind; `make` turns it into the kind's snapshot. */
const loadKind = (async function loadKind<T>(
  path: string,
  kind: SnapshotFileKind,
  options: SnapshotLoadOptions,
  make: (native: Snapshot, extra: unknown) => T,
  memo?: CodeImageMemo,
): Promise<T> {
  const { snapshot, kind: got, extra } = await loadSnapshotFile(path, options, memo);
  try {
    if (got !== kind) {
      throw new SnapshotFormatError(
        "format",
        `${path} holds a ${got} snapshot, not a ${kind} one`,
      );
    }
    return make(snapshot, extra);
  } catch (e) {
    await snapshot.dispose();
    throw e;
  }
}).bind(undefined); // Eager: see the note after the imports.

/** `WasmSnapshot.save`: writes a Wasm sandbox's snapshot (refused with preopens). */
export async function saveWasmSnapshot(snap: WasmSnapshot, path: string): Promise<void> {
  const { native, extra } = wasmExtra(snap);
  await saveSnapshotFile(native, path, "wasm", extra);
}

/**
 * `WasmSnapshot.load`; `memo` (internal: the start-snapshot cache's) skips the code image's
 * CRC-32 read when an earlier load checked this very file.
 */
export function loadWasmSnapshot(
  path: string,
  options: SnapshotLoadOptions = {},
  memo?: CodeImageMemo,
): Promise<WasmSnapshot> {
  return loadKind(path, "wasm", options, wasmFrom, memo);
}

/** `JsSnapshot.save` (`durable` false: no `fsync`, for a cache). */
export async function saveJsSnapshot(
  snap: JsSnapshot,
  path: string,
  durable = true,
): Promise<void> {
  const s = jsStateOf(snap, true);
  const { native, extra } = wasmExtra(s.wasm);
  await saveSnapshotFile(
    native,
    path,
    "js",
    {
      wasm: extra,
      key: s.key,
      hostFunctions: [...s.hostFunctions],
    },
    undefined,
    durable,
  );
}

/**
 * `JsSnapshot.load`; `memo` (internal: the start-snapshot cache's) skips the code image's CRC-32
 * read when an earlier load checked this very file, as {@linkcode loadWasmSnapshot}'s.
 */
export const loadJsSnapshot = (function loadJsSnapshot(
  path: string,
  options: SnapshotLoadOptions = {},
  memo?: CodeImageMemo,
): Promise<JsSnapshot> {
  return loadKind(path, "js", options, jsFromFile, memo);
}).bind(undefined); // Eager: see the note after the imports.

/** {@linkcode loadJsSnapshot}'s snapshot from the file's native snapshot and its `extra`. */
const jsFromFile = (function jsFromFile(native: Snapshot, v: unknown): JsSnapshot {
  const x = v as { wasm: unknown; key: unknown; hostFunctions: unknown };
  if (
    typeof x !== "object" || x === null || !isString(x.key) || !Array.isArray(x.hostFunctions) ||
    x.hostFunctions.length > 10_000 || !x.hostFunctions.every((n) => isString(n, 1024))
  ) {
    throw new SnapshotFormatError("corrupt", "the JsSnapshot's description is malformed");
  }
  return makeJsSnapshot({
    wasm: wasmFrom(native, x.wasm),
    key: x.key,
    hostFunctions: [...x.hostFunctions as string[]],
  });
}).bind(undefined); // Eager: see the note after the imports.
