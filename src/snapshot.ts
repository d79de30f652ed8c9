/**
 * `Snapshot`: a sandbox frozen at one moment (memory, vCPU state, function table), to restore
 * into the same sandbox or to start new sandboxes from, copy-on-write.
 *
 * @module
 */

import { ContentMemo } from "./content_memo.ts";
import { SandboxError } from "./errors.ts";
import type { MemorySnapshotHandle } from "./ffi/vm.ts";
import type { MemoryLayout } from "./layout.ts";
import type { FunctionSignature } from "./wire.ts";
import type { HostFunction } from "./call/types.ts";
import { loadSnapshotFile, saveSnapshotFile, type SnapshotLoadOptions } from "./snapshot_file.ts";

export type { SnapshotLoadOptions } from "./snapshot_file.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/**
 * A snapshot cannot be used where it was given: it was taken of another guest, another memory
 * layout or another ABI version, or the host functions given do not match the ones the snapshot
 * was taken with. The message says which.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, SnapshotMismatchError } from "@hl/sandbox";
 * await using a = await Sandbox.create({ guest: guests.testguest });
 * await using b = await Sandbox.create({ guest: guests.testguest, heapSize: 32 << 20 });
 * await using snap = await a.snapshot();
 * try {
 *   await b.restore(snap);
 * } catch (e) {
 *   console.log(e instanceof SnapshotMismatchError); // true: another layout
 * }
 * ```
 */
export class SnapshotMismatchError extends SandboxError {
  /** Creates the error; the message says what differs. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotMismatchError";
  }
}

/**
 * The snapshot was disposed: it can no longer be restored or started from (sandboxes already made
 * from it keep working).
 *
 * @example
 * ```ts
 * import { guests, Sandbox, SnapshotDisposedError } from "@hl/sandbox";
 * await using sb = await Sandbox.create({ guest: guests.testguest });
 * const snap = await sb.snapshot();
 * await snap.dispose();
 * try {
 *   await sb.restore(snap);
 * } catch (e) {
 *   console.log(e instanceof SnapshotDisposedError); // true
 * }
 * ```
 */
export class SnapshotDisposedError extends SandboxError {
  /** Creates the error. */
  constructor(message = "the snapshot has been disposed", options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotDisposedError";
  }
}

/** Why a snapshot file was refused (see {@linkcode SnapshotFormatError}). */
export type SnapshotFormatReason =
  /** Not a snapshot file, or a file of another kind (a `WasmSnapshot` file given to `JsSnapshot.load`). */
  | "format"
  /** Another file format, library version, C ABI or guest ABI version. */
  | "version"
  /** Written on a host whose guests see other CPU features. */
  | "cpu"
  /** Truncated, changed or malformed: a checksum, length or field is wrong. */
  | "corrupt"
  /** The file cannot be opened or read. */
  | "io";

/**
 * A snapshot file cannot be loaded: it is not one, it was written by another library version,
 * C ABI, guest ABI or on a host with other CPU features, or it is truncated or corrupt
 * (docs/snapshot-format.md). `reason` says which; the message names the file and the values.
 *
 * @example
 * ```ts
 * import { Snapshot, SnapshotFormatError } from "@hl/sandbox";
 * try {
 *   await Snapshot.load("/etc/hostname");
 * } catch (e) {
 *   if (e instanceof SnapshotFormatError) console.log(e.reason); // "format"
 * }
 * ```
 */
export class SnapshotFormatError extends SnapshotMismatchError {
  /** Why the file was refused. */
  readonly reason: SnapshotFormatReason;

  /** Creates the error. */
  constructor(reason: SnapshotFormatReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SnapshotFormatError";
    this.reason = reason;
  }
}

/** A host function's signature as a snapshot records it (names and types, no function). */
export interface HostSignature {
  /** Parameter types. */
  readonly params: readonly string[];
  /** Result type. */
  readonly result: string;
}

/** What a `Snapshot` holds; only `Sandbox` reads it. */
export interface SnapshotState {
  readonly memory: MemorySnapshotHandle;
  readonly vcpu: Uint8Array;
  readonly layout: MemoryLayout;
  /** The code image mapped at `layout.codeAddr`, if any (the snapshot holds a reference). */
  readonly code?: MemorySnapshotHandle;
  readonly functions: ReadonlyMap<string, FunctionSignature>;
  /** The guest's declared host imports (undefined: it declared none). */
  readonly imports?: readonly FunctionSignature[];
  readonly hostSignatures: ReadonlyMap<string, HostSignature>;
  /** SHA-256 of the guest image (hex). */
  readonly guestId: string;
  readonly abiVersion: number;
}

const states = new WeakMap<Snapshot, SnapshotState>();

/** Called when a snapshot is released (disposed or collected): `Sandbox` frees its idle VMs. */
let onRelease: ((state: SnapshotState) => void) | undefined;

/**
 * Registers what runs when a snapshot is released (once, by `Sandbox`: its recycled VMs of the
 * snapshot are destroyed then, src/recycle.ts).
 *
 * @example
 * ```ts ignore
 * onSnapshotRelease((state) => void idleVms.drain(state));
 * ```
 */
export function onSnapshotRelease(fn: (state: SnapshotState) => void): void {
  onRelease = fn;
}

const finalizer = new FinalizationRegistry<SnapshotState>((state) => {
  try {
    try {
      state.memory.release();
      state.code?.release();
    } finally {
      // Its idle VMs go with it even when a release failed (as in `dispose`).
      onRelease?.(state);
    }
  } catch {
    // Nothing to report to at GC time.
  }
});

/**
 * A sandbox frozen at one moment: its memory (a sealed, sparse memfd: untouched pages cost
 * nothing), its vCPU state (registers, system registers, FPU/SSE, MSRs) and its function table.
 * Take one with {@linkcode Sandbox.snapshot}; bring a sandbox back to it with
 * {@linkcode Sandbox.restore}; start new sandboxes from it, copy-on-write, with
 * `Sandbox.create({ snapshot })`. Immutable. Dispose it when no longer needed (sandboxes made from
 * it, or restored to it, keep its memory alive until they are disposed); a `FinalizationRegistry`
 * releases it if it is dropped undisposed.
 *
 * @example
 * ```ts
 * import { guests, Sandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({ guest: guests.testguest });
 * await using snap = await sb.snapshot();
 * await sb.call("counter"); // 1
 * await sb.restore(snap);
 * console.log(await sb.call("counter")); // 1 again
 * await using copy = await Sandbox.create({ snapshot: snap });
 * console.log(await copy.call("counter")); // 1
 * ```
 */
export class Snapshot implements AsyncDisposable {
  /** Use `Sandbox.snapshot()`; not constructible from outside. */
  private constructor(state: SnapshotState) {
    // The snapshot holds its own reference to the code image: the artifact cache may evict it.
    state.code?.retain();
    states.set(this, state);
    finalizer.register(this, state, this);
  }

  /** Guest memory size in bytes. */
  get memorySize(): number {
    return stateOf(this, true).layout.memorySize;
  }

  /** Pages of the snapshot's memory that hold data (4 KiB each); the rest cost nothing. */
  get dataPages(): number {
    return stateOf(this, true).memory.dataPages;
  }

  /** The guest's functions at the time of the snapshot. */
  get functions(): readonly FunctionSignature[] {
    return [...stateOf(this, true).functions.values()];
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return stateOf(this, true).memory.released;
  }

  /**
   * Writes the snapshot to the file `path` (replaced atomically: written beside it, then
   * renamed), in the versioned, checksummed format of docs/snapshot-format.md: the memory's data
   * pages (holes stay holes), the vCPU state, the function table and the code image. Another
   * process of the same library version on a host with the same CPU features starts sandboxes
   * from it with {@linkcode Snapshot.load}. A snapshot file is guest code: load only files you
   * would run.
   *
   * @example
   * ```ts
   * import { guests, Sandbox, Snapshot } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * await sb.call("counter"); // 1
   * await using snap = await sb.snapshot();
   * await snap.save("/tmp/counter.hlsnap");
   * await using loaded = await Snapshot.load("/tmp/counter.hlsnap");
   * await using copy = await Sandbox.create({ snapshot: loaded });
   * console.log(await copy.call("counter")); // 2
   * ```
   */
  save(path: string): Promise<void> {
    try {
      stateOf(this);
    } catch (e) {
      return Promise.reject(e);
    }
    return saveSnapshotFile(this, path, "sandbox");
  }

  /**
   * Reads a snapshot file written by {@linkcode Snapshot.save}: checks it, reads its pages into
   * a new sealed memory image (copy-on-write for every sandbox started from it), and returns the
   * snapshot. {@linkcode SnapshotFormatError} for a file that is not one, was written by another
   * library version or C/guest ABI or on a host with other CPU features, or is truncated or
   * corrupt (`reason` says which); nothing is kept from a refused file.
   *
   * @example
   * ```ts
   * import { Sandbox, Snapshot } from "@hl/sandbox";
   * await using snap = await Snapshot.load("/tmp/counter.hlsnap");
   * await using sb = await Sandbox.create({ snapshot: snap });
   * console.log(await sb.call("counter"));
   * ```
   */
  static async load(path: string, options: SnapshotLoadOptions = {}): Promise<Snapshot> {
    const { snapshot, kind } = await loadSnapshotFile(path, options);
    if (kind !== "sandbox") {
      await snapshot.dispose();
      throw new SnapshotFormatError(
        "format",
        `${path} holds a ${kind === "wasm" ? "WasmSnapshot" : "JsSnapshot"}: load it with ` +
          `${kind === "wasm" ? "WasmSnapshot" : "JsSnapshot"}.load`,
      );
    }
    return snapshot;
  }

  /**
   * Releases the snapshot. Idempotent. Sandboxes made from it or restored to it keep working
   * (they hold its memory until they are disposed); it can no longer be restored or started from.
   *
   * @example
   * ```ts
   * import { guests, Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * const snap = await sb.snapshot();
   * await snap.dispose();
   * console.log(snap.disposed); // true
   * ```
   */
  dispose(): Promise<void> {
    const state = stateOf(this, true);
    if (!state.memory.released) {
      finalizer.unregister(this);
      try {
        state.memory.release();
      } finally {
        state.code?.release();
        onRelease?.(state);
      }
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Makes a `Snapshot` (for `Sandbox`). */
export const makeSnapshot = (function makeSnapshot(state: SnapshotState): Snapshot {
  // The constructor is private to keep it out of the public API.
  const Ctor = Snapshot as unknown as new (s: SnapshotState) => Snapshot;
  return new Ctor(state);
}).bind(undefined); // Eager: see the note after the imports.

/** The state of `snap`; throws `SnapshotDisposedError` once disposed unless `evenDisposed`. */
export const stateOf = (function stateOf(snap: Snapshot, evenDisposed = false): SnapshotState {
  const state = snap instanceof Snapshot ? states.get(snap) : undefined;
  if (!state) throw new SnapshotMismatchError("not a Snapshot of this library");
  if (!evenDisposed && state.memory.released) throw new SnapshotDisposedError();
  return state;
}).bind(undefined); // Eager: see the note after the imports.

/** The signatures of host functions, as a snapshot records them. */
export function hostSignatures(
  defs: ReadonlyMap<string, HostFunction>,
): Map<string, HostSignature> {
  const out = new Map<string, HostSignature>();
  for (const [name, def] of defs) out.set(name, { params: [...def.params], result: def.result });
  return out;
}

/** Throws `SnapshotMismatchError` unless `given` has exactly the names and types of `recorded`. */
export const checkHostSignatures = (function checkHostSignatures(
  recorded: ReadonlyMap<string, HostSignature>,
  given: ReadonlyMap<string, HostFunction>,
): void {
  const problems: string[] = [];
  for (const [name, sig] of recorded) {
    const g = given.get(name);
    if (!g) {
      problems.push(`${name} is missing`);
    } else if (g.result !== sig.result || g.params.join(",") !== sig.params.join(",")) {
      problems.push(
        `${name} is (${g.params.join(", ")}) -> ${g.result}, ` +
          `the snapshot has (${sig.params.join(", ")}) -> ${sig.result}`,
      );
    }
  }
  for (const name of given.keys()) {
    if (!recorded.has(name)) problems.push(`${name} is not in the snapshot`);
  }
  if (problems.length > 0) {
    throw new SnapshotMismatchError(
      `the host functions do not match the snapshot's: ${problems.join("; ")}`,
    );
  }
}).bind(undefined); // Eager: see the note after the imports.

/** Throws `SnapshotMismatchError` when `a` and `b` differ. */
export function checkLayout(a: MemoryLayout, b: MemoryLayout): void {
  for (const key of Object.keys(a) as (keyof MemoryLayout)[]) {
    if (a[key] !== b[key]) {
      throw new SnapshotMismatchError(
        `the snapshot has another memory layout (${key}: ${b[key]}, this sandbox: ${a[key]})`,
      );
    }
  }
}

/** Digests of recent contents (guest images, modules): up to 32 of them, 256 MiB of copies. */
const digests = new ContentMemo<Promise<string>>(32, 256 * 1024 * 1024);

/**
 * SHA-256 of `bytes`, in hex. Remembered by content (`ContentMemo`): hashing the same image or
 * module again costs a compare, not a hash.
 */
export function digest(bytes: Uint8Array): Promise<string> {
  return digests.get(bytes, sha256);
}

/** SHA-256 of `bytes`, in hex, not remembered (for bytes a caller already keeps by content). */
export const sha256 = (async function sha256(bytes: Uint8Array): Promise<string> {
  const hash = new Uint8Array(
    await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>),
  );
  return [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
}).bind(undefined); // Eager: see the note after the imports.
