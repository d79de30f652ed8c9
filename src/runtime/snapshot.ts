/**
 * What a language-runtime sandbox's snapshot holds (the Wasm sandbox's snapshot and the key it
 * was made with), and the private-state wrapper each kind's public snapshot class (`JsSnapshot`,
 * ...) stands on: the state lives in a `WeakMap` here, the class only says how it is documented.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { SnapshotDisposedError, SnapshotMismatchError } from "../snapshot.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";

/** What a language-runtime snapshot holds. */
export interface RuntimeSnapshotState {
  /** The snapshot of the Wasm sandbox that runs the language runtime. */
  readonly wasm: WasmSnapshot;
  /** The module digest, engine, memory limit, source and host function names it was made with. */
  readonly key: string;
  /** The host functions registered in the runtime (`host.*`). */
  readonly hostFunctions: readonly string[];
}

/**
 * The states of one kind's snapshot class `C` (whose constructor is private and takes the
 * state): {@linkcode wrap} makes one, {@linkcode of} reads one back.
 *
 * @example
 * ```ts ignore
 * export class PySnapshot {
 *   private constructor(state: RuntimeSnapshotState) {
 *     pySnapshots.set(this, state);
 *   }
 * }
 * export const pySnapshots = new SnapshotStates(PySnapshot, "a PySnapshot");
 * const state = pySnapshots.of(snap, true); // SnapshotMismatchError for a JsSnapshot
 * ```
 */
export class SnapshotStates<C extends object> {
  readonly #states = new WeakMap<C, RuntimeSnapshotState>();
  readonly #ctor: new (s: RuntimeSnapshotState) => C;
  readonly #what: string;

  /**
   * `ctor`: the kind's snapshot class (private constructor); `what`: its name in errors
   * (`"a JsSnapshot"`).
   */
  constructor(ctor: { prototype: C }, what: string) {
    this.#ctor = ctor as unknown as new (s: RuntimeSnapshotState) => C;
    this.#what = what;
  }

  /** Records `state` for `snap` (the class's constructor calls this). */
  set(snap: C, state: RuntimeSnapshotState): void {
    this.#states.set(snap, state);
  }

  /** A new snapshot of the class around `state`. */
  wrap(state: RuntimeSnapshotState): C {
    return new this.#ctor(state);
  }

  /**
   * The state of `snap`; `SnapshotMismatchError` for anything but a snapshot of the class,
   * `SnapshotDisposedError` when `live` and it was disposed.
   */
  of(snap: unknown, live = false): RuntimeSnapshotState {
    const state = snap instanceof this.#ctor ? this.#states.get(snap) : undefined;
    if (!state) throw new SnapshotMismatchError(`not ${this.#what}`);
    if (live && state.wasm.disposed) throw new SnapshotDisposedError();
    return state;
  }
}
