/**
 * `JsSnapshot`: a `JsSandbox` frozen at one moment (QuickJS's whole heap, inside the Wasm
 * module's memory), and what the host keeps beside it.
 *
 * @module
 */

import { type RuntimeSnapshotState, SnapshotStates } from "../runtime/snapshot.ts";
import { loadJsSnapshot, saveJsSnapshot, type SnapshotLoadOptions } from "../snapshot_file.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** What a {@linkcode JsSnapshot} holds (the runtime layer's snapshot state). */
export type JsSnapshotState = RuntimeSnapshotState;

/**
 * A {@linkcode JsSandbox} frozen at one moment: every global, function, closure and pending
 * value of its QuickJS heap. Host function implementations and output sinks are not in it:
 * `JsSandbox.create({ snapshot })` is given them again (the same host function names).
 * Immutable; dispose it when done (sandboxes made from it keep working).
 *
 * @example
 * ```ts
 * import { JsSandbox } from "@hl/sandbox";
 * await using js = await JsSandbox.create({ source: "var n = 0; function bump() { return ++n; }" });
 * await using snap = await js.snapshot();
 * await using copy = await JsSandbox.create({ snapshot: snap });
 * console.log(await copy.call("bump")); // 1
 * ```
 */
export class JsSnapshot implements AsyncDisposable {
  /** Use `JsSandbox.snapshot()`; not constructible from outside. */
  private constructor(state: JsSnapshotState) {
    jsSnapshots.set(this, state);
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return jsStateOf(this).wasm.disposed;
  }

  /**
   * Writes the snapshot to the file `path` (docs/snapshot-format.md): QuickJS's whole heap, the
   * compiled engine and the host function names. `JsSnapshot.load` reads it back, in this or
   * another process of the same library version on a host with the same CPU features.
   *
   * @example
   * ```ts
   * import { JsSandbox, JsSnapshot } from "@hl/sandbox";
   * await using js = await JsSandbox.create({ source: "var n = 41; function next() { return ++n; }" });
   * await using snap = await js.snapshot();
   * await snap.save("/tmp/next.js.hlsnap");
   * await using loaded = await JsSnapshot.load("/tmp/next.js.hlsnap");
   * await using copy = await JsSandbox.create({ snapshot: loaded });
   * console.log(await copy.call("next")); // 42
   * ```
   */
  save(path: string): Promise<void> {
    return saveJsSnapshot(this, path);
  }

  /**
   * Reads a file written by {@linkcode JsSnapshot.save}. `SnapshotFormatError` for a file that
   * is not a JsSnapshot file, of another library version or CPU, or truncated or corrupt.
   *
   * @example
   * ```ts
   * import { JsSandbox, JsSnapshot } from "@hl/sandbox";
   * await using snap = await JsSnapshot.load("/tmp/next.js.hlsnap");
   * await using js = await JsSandbox.create({ snapshot: snap });
   * ```
   */
  static load(path: string, options: SnapshotLoadOptions = {}): Promise<JsSnapshot> {
    return loadJsSnapshot(path, options);
  }

  /**
   * Releases the snapshot. Idempotent.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({});
   * const snap = await js.snapshot();
   * await snap.dispose();
   * console.log(snap.disposed); // true
   * ```
   */
  dispose(): Promise<void> {
    return jsStateOf(this).wasm.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** The states of the JsSnapshots (internal; the JavaScript kind's `snapshots`). */
export const jsSnapshots: SnapshotStates<JsSnapshot> = new SnapshotStates(
  JsSnapshot,
  "a JsSnapshot",
);

/** Internal: wraps a state. */
export const makeJsSnapshot = (function makeJsSnapshot(state: JsSnapshotState): JsSnapshot {
  return jsSnapshots.wrap(state);
}).bind(undefined); // Eager: see the note after the imports.

/** The state of `snap`; `SnapshotMismatchError` for anything else, `SnapshotDisposedError` once disposed. */
export const jsStateOf = (function jsStateOf(snap: JsSnapshot, live = false): JsSnapshotState {
  return jsSnapshots.of(snap, live);
}).bind(undefined); // Eager: see the note after the imports.
