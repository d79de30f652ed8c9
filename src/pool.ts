/**
 * `SandboxPool`: a fixed number of warm sandboxes started from one snapshot; each `run` borrows
 * one, and restores it to the snapshot before the next borrower gets it.
 *
 * @module
 */

import { ArgumentError } from "./errors.ts";
import { checkPoolSizing, PoolCore, type PoolRunOptions, type PoolSizing } from "./pool_core.ts";
import { handOverSandbox, Sandbox, type SandboxOptions } from "./sandbox.ts";
import type { Snapshot } from "./snapshot.ts";

export { PoolExhaustedError, type PoolRunOptions, type PoolSizing } from "./pool_core.ts";

/** Options of {@linkcode SandboxPool.create}. */
export interface SandboxPoolOptions extends Omit<SandboxOptions, "guest">, PoolSizing {
  /** The guest to start (one sandbox is created and snapshotted); or give `snapshot`. */
  guest?: string | URL | Uint8Array;
  /** The snapshot every sandbox starts from and is restored to (the pool does not dispose it). */
  snapshot?: Snapshot;
}

/**
 * A pool of warm sandboxes from one snapshot. {@linkcode run} borrows a free sandbox (waiting,
 * within a bound, when all are busy), runs `fn` with it, then restores it to the snapshot — so
 * each `run` sees the guest exactly as it was snapshotted, whatever the previous one did — and
 * hands it to the next waiter.
 *
 * @example
 * ```ts
 * import { guests, SandboxPool } from "@hl/sandbox";
 * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 4 });
 * const results = await Promise.all(
 *   [1, 2, 3, 4, 5, 6].map((i) => pool.run((sb) => sb.call("add", i, i))),
 * );
 * console.log(results); // [2, 4, 6, 8, 10, 12]
 * console.log(await pool.run((sb) => sb.call("counter"))); // 1: every run starts afresh
 * ```
 */
export class SandboxPool implements AsyncDisposable {
  readonly #core: PoolCore<Sandbox>;

  private constructor(core: PoolCore<Sandbox>) {
    this.#core = core;
  }

  /**
   * Starts `size` sandboxes: from `snapshot`, or from `guest` (one is created and initialised,
   * snapshotted, and the others start from that snapshot, copy-on-write).
   *
   * @example
   * ```ts
   * import { guests, Sandbox, SandboxPool } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * await sb.call("counter");
   * await using snap = await sb.snapshot();
   * await using pool = await SandboxPool.create({ snapshot: snap, size: 2 });
   * console.log(await pool.run((s) => s.call("counter"))); // 2
   * ```
   */
  static async create(options: SandboxPoolOptions): Promise<SandboxPool> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("SandboxPool.create takes an options object");
    }
    const size = checkPoolSizing(options);
    if ((options.guest === undefined) === (options.snapshot === undefined)) {
      throw new ArgumentError("SandboxPool.create takes exactly one of `guest` and `snapshot`");
    }
    const members: Sandbox[] = [];
    let snapshot = options.snapshot;
    const owns = snapshot === undefined;
    try {
      if (snapshot === undefined) {
        const first = await Sandbox.create({ ...options, guest: options.guest! });
        members.push(first);
        snapshot = await first.snapshot();
      }
      while (members.length < size) {
        members.push(await Sandbox.create(SandboxPool.#memberOptions(options, snapshot)));
      }
    } catch (e) {
      for (const sb of members) await sb.dispose();
      if (owns) await snapshot?.dispose();
      throw e;
    }
    const snap = snapshot;
    return new SandboxPool(
      new PoolCore(members, options, {
        revoke: handOverSandbox,
        restore: (m) => m.restore(snap),
        replace: () => Sandbox.create(SandboxPool.#memberOptions(options, snap)),
        disposed: () => owns ? snap.dispose() : Promise.resolve(),
      }),
    );
  }

  static #memberOptions(options: SandboxPoolOptions, snapshot: Snapshot) {
    return {
      snapshot,
      hostFunctions: options.hostFunctions,
      timeoutMs: options.timeoutMs,
      onLog: options.onLog,
      library: options.library,
    };
  }

  /** Number of sandboxes in the pool. */
  get size(): number {
    return this.#core.size;
  }

  /** Number of sandboxes free right now. */
  get available(): number {
    return this.#core.available;
  }

  /** Number of callers waiting for a sandbox. */
  get waiting(): number {
    return this.#core.waiting;
  }

  /**
   * Borrows a sandbox, runs `fn` with it, restores it to the pool's snapshot and returns it to
   * the pool; resolves to what `fn` returned. Waits at most `timeoutMs` (default: the pool's
   * `acquireTimeoutMs`) for a free sandbox ({@linkcode PoolExhaustedError}), and stops waiting when
   * `signal` aborts ({@linkcode CancelledError}). A sandbox that `fn` poisoned is restored all the
   * same (a restore clears poisoning); one that cannot be restored is replaced. The handle `fn`
   * gets is its own and lasts for the run: once the run ends it is revoked, and every later use of
   * it is a `SandboxDisposedError` (a call of it still in progress is stopped), so a reference
   * kept past the run never reaches the next borrower's sandbox.
   *
   * @example
   * ```ts
   * import { guests, SandboxPool } from "@hl/sandbox";
   * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 2 });
   * const sum = await pool.run((sb) => sb.call("add", 2, 3), { timeoutMs: 1000 });
   * console.log(sum); // 5
   * ```
   */
  run<T>(fn: (sb: Sandbox) => T | Promise<T>, options: PoolRunOptions = {}): Promise<T> {
    return this.#core.run(fn, options);
  }

  /**
   * Disposes every sandbox (ones in use when they come back) and the snapshot the pool made;
   * waiters reject. Idempotent.
   *
   * @example
   * ```ts
   * import { guests, SandboxPool } from "@hl/sandbox";
   * const pool = await SandboxPool.create({ guest: guests.testguest, size: 1 });
   * await pool.dispose();
   * ```
   */
  dispose(): Promise<void> {
    return this.#core.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
