/**
 * `SandboxPool`: a fixed number of warm sandboxes started from one snapshot; each `run` borrows
 * one, and restores it to the snapshot before the next borrower gets it.
 *
 * @module
 */

import { ArgumentError } from "./errors.ts";
import { checkPoolSizing, Pool, type PoolCore, type PoolSizing } from "./pool_core.ts";
import { startRuntimePool } from "./runtime/pool.ts";
import { Sandbox, type SandboxOptions } from "./sandbox.ts";
import { handOverSandbox } from "./sandbox_internal.ts";
import type { Snapshot } from "./snapshot.ts";

export { Pool, PoolExhaustedError, type PoolRunOptions, type PoolSizing } from "./pool_core.ts";

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
export class SandboxPool extends Pool<Sandbox> {
  private constructor(core: PoolCore<Sandbox>) {
    super(core);
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
    return new SandboxPool(
      await startRuntimePool({
        size,
        snapshot: options.snapshot,
        first: () => Sandbox.create({ ...options, guest: options.guest! }),
        snapshotOf: (first) => first.snapshot(),
        fromSnapshot: (snap) => Sandbox.create(SandboxPool.#memberOptions(options, snap)),
        handOver: handOverSandbox,
        restore: (m, snap) => m.restore(snap),
      }, options),
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
}
