/**
 * `PySandboxPool`: warm Python interpreters started from one snapshot taken after `setup`, on the
 * runtime layer's pool (`startRuntimePool`, `PoolCore`: the free list, bounded waits, the
 * revocation of a borrower's handle, restore or replacement). Each `PySandbox` puts its VM back
 * to that state after every request (off the reply's path); a member that was poisoned is
 * restored, or replaced from the snapshot when that fails.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { checkTimeout } from "../options.ts";
import { checkPoolSizing, type PoolCore, type PoolSizing } from "../pool_core.ts";
import { startRuntimePool } from "../runtime/pool.ts";
import {
  handOverPySandbox,
  type PyResult,
  type PyRunOptions,
  PySandbox,
  type PySandboxOptions,
  type PySnapshot,
} from "./sandbox.ts";

/** Options of {@linkcode PySandboxPool.create}. */
export interface PySandboxPoolOptions extends PySandboxOptions, PoolSizing {}

/** Options of {@linkcode PySandboxPool.run}. */
export interface PyPoolRunOptions extends PyRunOptions {
  /** How long to wait for a started interpreter, in ms (default: the pool's `acquireTimeoutMs`). */
  acquireTimeoutMs?: number;
}

/**
 * A pool of started Python interpreters (`size`, default 4), all copies of one snapshot taken
 * after `setup`. {@linkcode run} takes a free one and runs the code (or `fn`) with it; every
 * request starts from the state after `setup`, with `random` and `os.urandom` freshly keyed from
 * the host. The handle `fn` gets is revoked when its run ends. Runs wait for a free interpreter
 * (`acquireTimeoutMs`, `maxWaiting`).
 *
 * @example
 * ```ts
 * import { PySandboxPool } from "@hl/sandbox";
 * await using pool = await PySandboxPool.create({ setup: "seen = []", size: 2 });
 * console.log((await pool.run("seen.append(1); print(len(seen))")).stdout); // 1
 * console.log((await pool.run("seen.append(1); print(len(seen))")).stdout); // 1
 * ```
 */
export class PySandboxPool implements AsyncDisposable {
  readonly #core: PoolCore<PySandbox>;

  private constructor(core: PoolCore<PySandbox>) {
    this.#core = core;
  }

  /**
   * Starts one interpreter (runs `setup`), snapshots it, and starts the others from the snapshot,
   * copy-on-write; rejects, disposing what it started, when one cannot start.
   *
   * @example
   * ```ts
   * import { PySandboxPool } from "@hl/sandbox";
   * await using pool = await PySandboxPool.create({ size: 1 });
   * console.log(pool.size); // 1
   * ```
   */
  static async create(options: PySandboxPoolOptions = {}): Promise<PySandboxPool> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("PySandboxPool.create takes an options object");
    }
    const size = checkPoolSizing(options);
    const { size: _s, acquireTimeoutMs: _a, maxWaiting: _m, ...rest } = options;
    const { stdout, stderr, timeoutMs, library, net } = rest;
    return new PySandboxPool(
      await startRuntimePool<PySandbox, PySnapshot>({
        size,
        snapshot: undefined,
        first: () => PySandbox.create(rest),
        snapshotOf: (first) => first.snapshot(),
        fromSnapshot: (snapshot) =>
          PySandbox.create({ snapshot, stdout, stderr, timeoutMs, library, net }),
        handOver: handOverPySandbox,
        // A member is back at the setup state after every request; a poisoned one is restored.
        restore: async (py) => {
          if (py.poisoned) await py.restore();
        },
      }, options),
    );
  }

  /** The number of interpreters the pool keeps. */
  get size(): number {
    return this.#core.size;
  }

  /** Interpreters started and free now. */
  get available(): number {
    return this.#core.available;
  }

  /** Callers waiting for an interpreter. */
  get waiting(): number {
    return this.#core.waiting;
  }

  /**
   * Runs `code` in a fresh interpreter (the state after `setup`) and returns its output, or runs
   * `fn` with one and returns what it returns. A Python exception rejects with `PyError`.
   *
   * @example
   * ```ts
   * import { PySandboxPool } from "@hl/sandbox";
   * await using pool = await PySandboxPool.create({ setup: "def sq(x): return x * x", size: 1 });
   * console.log((await pool.run("print(sq(4))")).stdout); // 16
   * console.log(await pool.run((py) => py.call("sq", 5))); // 25
   * ```
   */
  run(code: string, options?: PyPoolRunOptions): Promise<PyResult>;
  /** Runs `fn` with a fresh interpreter; its handle is revoked when `fn` settles. */
  run<T>(fn: (py: PySandbox) => T | Promise<T>, options?: PyPoolRunOptions): Promise<T>;
  async run<T>(
    what: string | ((py: PySandbox) => T | Promise<T>),
    options: PyPoolRunOptions = {},
  ): Promise<T | PyResult> {
    if (typeof what !== "string" && typeof what !== "function") {
      throw new ArgumentError("run takes Python code or a function");
    }
    checkTimeout(options.acquireTimeoutMs, "acquireTimeoutMs");
    checkTimeout(options.timeoutMs, "timeoutMs");
    return await this.#core.run<T | PyResult>(
      (py) => typeof what === "string" ? py.run(what, options) : what(py),
      { timeoutMs: options.acquireTimeoutMs },
    );
  }

  /**
   * Stops every interpreter (ones in use when they come back); waiting runs reject. Idempotent.
   *
   * @example
   * ```ts
   * import { PySandboxPool } from "@hl/sandbox";
   * const pool = await PySandboxPool.create({ size: 1 });
   * await pool.dispose();
   * ```
   */
  dispose(): Promise<void> {
    return this.#core.dispose();
  }

  /** `await using` support: {@linkcode dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
