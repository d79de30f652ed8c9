/**
 * `WasmSnapshot`: a `WasmSandbox` frozen at one moment, and what the host keeps beside the
 * native snapshot.
 *
 * @module
 */

import { type Snapshot, SnapshotDisposedError, SnapshotMismatchError } from "../snapshot.ts";
import type { WasmExtern } from "./types.ts";
import type { PreopenSpec } from "./wasi_path.ts";
import { loadWasmSnapshot, saveWasmSnapshot, type SnapshotLoadOptions } from "../snapshot_file.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** What a {@linkcode WasmSnapshot} holds beside the native snapshot. */
export interface WasmSnapshotState {
  readonly native: Snapshot;
  /** Module digest + the canonical options that shaped the instance (see `cacheKey`). */
  readonly key: string;
  readonly imports: readonly WasmExtern[];
  readonly exports: readonly WasmExtern[];
  /** WASI bound at instantiation. */
  readonly wasiOn: boolean;
  /** The runtime's WASI host functions registered (`wasi` was not `false`). */
  readonly wasiRegistered: boolean;
  /** The preopened directories (their names are in the module's memory). */
  readonly preopens: readonly PreopenSpec[];
}

const wasmStates = new WeakMap<WasmSnapshot, WasmSnapshotState>();

/**
 * A {@linkcode WasmSandbox} frozen at one moment: the `wasm-runtime` guest's memory and vCPU
 * state (so the module's linear memory, globals, tables, fuel setting and WASI state: args, env,
 * random stream), plus what the host keeps beside the guest: the module's imports and exports
 * and whether WASI is bound. Host function implementations and WASI output sinks are not in it:
 * `WasmSandbox.create({ snapshot })` is given them again. Immutable; dispose it when done.
 *
 * @example
 * ```ts
 * import { WasmSandbox } from "@hl/sandbox";
 * await using w = await WasmSandbox.create({ module: "counter.wasm" });
 * await using snap = await w.snapshot();
 * await w.call("bump"); // 1
 * await w.restore(snap);
 * console.log(await w.call("bump")); // 1 again
 * await using copy = await WasmSandbox.create({ snapshot: snap });
 * console.log(await copy.call("bump")); // 1
 * ```
 */
export class WasmSnapshot implements AsyncDisposable {
  /** Use `WasmSandbox.snapshot()`; not constructible from outside. */
  private constructor(state: WasmSnapshotState) {
    wasmStates.set(this, state);
  }

  /** The module's exports. */
  get exports(): readonly WasmExtern[] {
    return [...wasmStateOf(this).exports];
  }

  /** The module's imports. */
  get imports(): readonly WasmExtern[] {
    return [...wasmStateOf(this).imports];
  }

  /** Pages of the snapshot's memory that hold data (4 KiB each). */
  get dataPages(): number {
    return wasmStateOf(this).native.dataPages;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return wasmStateOf(this).native.disposed;
  }

  /**
   * Writes the snapshot to the file `path` (docs/snapshot-format.md): the guest's memory and
   * vCPU state, the compiled code image (wasmtime), and the module's imports and exports. A
   * snapshot with preopened directories is refused (`SnapshotMismatchError`): a file carries no
   * access to host directories.
   *
   * @example
   * ```ts
   * import { WasmSandbox, WasmSnapshot } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm" });
   * await using snap = await w.snapshot();
   * await snap.save("/tmp/fib.wasm.hlsnap");
   * await using loaded = await WasmSnapshot.load("/tmp/fib.wasm.hlsnap");
   * await using copy = await WasmSandbox.create({ snapshot: loaded });
   * console.log(await copy.call("fib", 10)); // 55
   * ```
   */
  save(path: string): Promise<void> {
    return saveWasmSnapshot(this, path);
  }

  /**
   * Reads a file written by {@linkcode WasmSnapshot.save} (in this or another process of the
   * same library version, on a host with the same CPU features). `SnapshotFormatError` for a
   * file that is not one of this kind, of another version or CPU, or truncated or corrupt.
   *
   * @example
   * ```ts
   * import { WasmSandbox, WasmSnapshot } from "@hl/sandbox";
   * await using snap = await WasmSnapshot.load("/tmp/fib.wasm.hlsnap");
   * await using w = await WasmSandbox.create({ snapshot: snap });
   * console.log(await w.call("fib", 10)); // 55
   * ```
   */
  static load(path: string, options: SnapshotLoadOptions = {}): Promise<WasmSnapshot> {
    return loadWasmSnapshot(path, options);
  }

  /**
   * Releases the snapshot. Idempotent; sandboxes made from it keep working.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm" });
   * const snap = await w.snapshot();
   * await snap.dispose();
   * console.log(snap.disposed); // true
   * ```
   */
  dispose(): Promise<void> {
    return wasmStateOf(this).native.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

export const makeWasmSnapshot = (function makeWasmSnapshot(state: WasmSnapshotState): WasmSnapshot {
  const Ctor = WasmSnapshot as unknown as new (s: WasmSnapshotState) => WasmSnapshot;
  return new Ctor(state);
}).bind(undefined); // Eager: see the note after the imports.

/** The state of `snap`; `SnapshotMismatchError` for anything else, `SnapshotDisposedError` once disposed. */
export const wasmStateOf =
  (function wasmStateOf(snap: WasmSnapshot, live = false): WasmSnapshotState {
    const state = snap instanceof WasmSnapshot ? wasmStates.get(snap) : undefined;
    if (!state) {
      throw new SnapshotMismatchError(
        "not a WasmSnapshot (a snapshot of a native Sandbox cannot start a WasmSandbox)",
      );
    }
    if (live && state.native.disposed) throw new SnapshotDisposedError();
    return state;
  }).bind(undefined); // Eager: see the note after the imports.
