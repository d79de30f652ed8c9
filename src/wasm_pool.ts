/**
 * `WasmSandboxPool`: a fixed number of warm `WasmSandbox`es started from one `WasmSnapshot`; each
 * `run` borrows one and restores it to the snapshot before the next borrower gets it.
 *
 * @module
 */

import { ArgumentError, CancelledError, SandboxError } from "./errors.ts";
import { checkCount, checkTimeout } from "./options.ts";
import { PoolExhaustedError, type PoolRunOptions } from "./pool.ts";
import {
  type WasiOptions,
  type WasmImports,
  WasmSandbox,
  type WasmSandboxOptions,
  type WasmSnapshot,
} from "./wasm_sandbox.ts";

/** Options of {@linkcode WasmSandboxPool.create}. */
export interface WasmSandboxPoolOptions extends Omit<WasmSandboxOptions, "module"> {
  /** The module (one sandbox is created, through the module cache, and snapshotted); or `snapshot`. */
  module?: Uint8Array | string | URL;
  /** The snapshot every sandbox starts from and is restored to (the pool does not dispose it). */
  snapshot?: WasmSnapshot;
  /** Host functions the module imports. */
  hostFunctions?: WasmImports;
  /** WASI settings (with `snapshot`: only `stdout`/`stderr`). */
  wasi?: boolean | WasiOptions;
  /** Number of sandboxes (default 4). */
  size?: number;
  /** Default wait bound of {@linkcode WasmSandboxPool.run}, in ms (default 30 000). */
  acquireTimeoutMs?: number;
  /** Most callers that may wait at once; one more is refused at once (default: no limit). */
  maxWaiting?: number;
}

interface Waiter {
  resolve: (sb: WasmSandbox) => void;
  reject: (e: Error) => void;
}

/**
 * A pool of warm Wasm sandboxes from one snapshot. {@linkcode run} borrows a free sandbox
 * (waiting, within a bound, when all are busy), runs `fn` with it, then restores it to the
 * snapshot — each `run` sees the module exactly as it was after instantiation (or as
 * snapshotted) — and hands it to the next waiter. Errors: {@linkcode PoolExhaustedError} when
 * the wait bound runs out, `CancelledError` when the `signal` aborts the wait.
 *
 * @example
 * ```ts
 * import { WasmSandboxPool } from "@hl/sandbox";
 * await using pool = await WasmSandboxPool.create({ module: "fib.wasm", size: 4 });
 * const results = await Promise.all([10, 20, 30].map((n) => pool.run((w) => w.call("fib", n))));
 * console.log(results); // [55, 6765, 832040]
 * ```
 */
export class WasmSandboxPool implements AsyncDisposable {
  readonly #snapshot: WasmSnapshot;
  readonly #ownsSnapshot: boolean;
  readonly #options: WasmSandboxPoolOptions;
  readonly #free: WasmSandbox[] = [];
  readonly #all = new Set<WasmSandbox>();
  readonly #waiters: Waiter[] = [];
  readonly #acquireTimeoutMs: number;
  readonly #maxWaiting: number;
  #disposed = false;

  private constructor(
    snapshot: WasmSnapshot,
    owns: boolean,
    options: WasmSandboxPoolOptions,
    members: WasmSandbox[],
  ) {
    this.#snapshot = snapshot;
    this.#ownsSnapshot = owns;
    this.#options = options;
    this.#acquireTimeoutMs = options.acquireTimeoutMs ?? 30_000;
    this.#maxWaiting = options.maxWaiting ?? Infinity;
    for (const sb of members) {
      this.#all.add(sb);
      this.#free.push(sb);
    }
  }

  /**
   * Starts `size` sandboxes: from `snapshot`, or from `module` (one is created — a cache hit when
   * the module was created before with the same options — snapshotted, and the others start from
   * that snapshot, copy-on-write).
   *
   * @example
   * ```ts
   * import { WasmSandbox, WasmSandboxPool } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "counter.wasm" });
   * await w.call("bump");
   * await using snap = await w.snapshot();
   * await using pool = await WasmSandboxPool.create({ snapshot: snap, size: 2 });
   * console.log(await pool.run((s) => s.call("bump"))); // 2
   * ```
   */
  static async create(options: WasmSandboxPoolOptions): Promise<WasmSandboxPool> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("WasmSandboxPool.create takes an options object");
    }
    const size = checkCount(options.size, "size", 4);
    checkTimeout(options.acquireTimeoutMs, "acquireTimeoutMs");
    if (options.maxWaiting !== undefined) checkCount(options.maxWaiting + 1, "maxWaiting + 1", 1);
    if ((options.module === undefined) === (options.snapshot === undefined)) {
      throw new ArgumentError(
        "WasmSandboxPool.create takes exactly one of `module` and `snapshot`",
      );
    }
    const members: WasmSandbox[] = [];
    let snapshot = options.snapshot;
    const owns = snapshot === undefined;
    try {
      if (snapshot === undefined) {
        const { size: _s, acquireTimeoutMs: _a, maxWaiting: _m, snapshot: _n, ...rest } = options;
        const first = await WasmSandbox.create({ ...rest, module: options.module! });
        members.push(first);
        snapshot = await first.snapshot();
      }
      while (members.length < size) {
        members.push(await WasmSandbox.create(WasmSandboxPool.#memberOptions(options, snapshot)));
      }
    } catch (e) {
      for (const sb of members) await sb.dispose();
      if (owns) await snapshot?.dispose();
      throw e;
    }
    return new WasmSandboxPool(snapshot, owns, options, members);
  }

  static #memberOptions(options: WasmSandboxPoolOptions, snapshot: WasmSnapshot) {
    const wasi = typeof options.wasi === "object"
      ? { stdout: options.wasi.stdout, stderr: options.wasi.stderr }
      : undefined;
    return {
      snapshot,
      hostFunctions: options.hostFunctions,
      wasi,
      timeoutMs: options.timeoutMs,
      library: options.library,
    };
  }

  /** Number of sandboxes in the pool. */
  get size(): number {
    return this.#all.size;
  }

  /** Number of sandboxes free right now. */
  get available(): number {
    return this.#free.length;
  }

  /** Number of callers waiting for a sandbox. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Borrows a sandbox, runs `fn` with it, restores it to the pool's snapshot and returns it to
   * the pool; resolves to what `fn` returned. Waits at most `timeoutMs` (default: the pool's
   * `acquireTimeoutMs`) for a free sandbox ({@linkcode PoolExhaustedError}), and stops waiting
   * when `signal` aborts (`CancelledError`). A sandbox that `fn` poisoned is restored all the
   * same; one that cannot be restored is replaced.
   *
   * @example
   * ```ts
   * import { WasmSandboxPool } from "@hl/sandbox";
   * await using pool = await WasmSandboxPool.create({ module: "fib.wasm", size: 2 });
   * console.log(await pool.run((w) => w.call("fib", 10), { timeoutMs: 1000 })); // 55
   * ```
   */
  async run<T>(
    fn: (sb: WasmSandbox) => T | Promise<T>,
    options: PoolRunOptions = {},
  ): Promise<T> {
    const sb = await this.#acquire(options);
    try {
      return await fn(sb);
    } finally {
      await this.#release(sb);
    }
  }

  #acquire(options: PoolRunOptions): Promise<WasmSandbox> {
    if (this.#disposed) return Promise.reject(new SandboxError("the pool has been disposed"));
    try {
      checkTimeout(options.timeoutMs, "timeoutMs");
    } catch (e) {
      return Promise.reject(e);
    }
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(new CancelledError("pool.run: cancelled before it started"));
    }
    const free = this.#free.pop();
    if (free) return Promise.resolve(free);
    const timeoutMs = options.timeoutMs ?? this.#acquireTimeoutMs;
    if (this.#waiters.length >= this.#maxWaiting || timeoutMs === 0) {
      return Promise.reject(
        new PoolExhaustedError(
          `all ${this.#all.size} sandboxes are busy` +
            (timeoutMs === 0 ? " (timeoutMs 0: no wait)" : ` and ${this.#waiters.length} wait`),
        ),
      );
    }
    return new Promise<WasmSandbox>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
      };
      const waiter: Waiter = {
        resolve: (sb) => {
          done();
          resolve(sb);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      };
      const onAbort = () => waiter.reject(new CancelledError("pool.run: cancelled while waiting"));
      const timer = setTimeout(
        () =>
          waiter.reject(
            new PoolExhaustedError(
              `no sandbox of ${this.#all.size} became free within ${timeoutMs} ms`,
            ),
          ),
        timeoutMs,
      );
      signal?.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
  }

  async #release(sb: WasmSandbox): Promise<void> {
    let next: WasmSandbox | undefined = sb;
    try {
      await sb.restore(this.#snapshot);
    } catch {
      this.#all.delete(sb);
      await sb.dispose();
      next = undefined;
      if (!this.#disposed) {
        try {
          next = await WasmSandbox.create(
            WasmSandboxPool.#memberOptions(this.#options, this.#snapshot),
          );
          this.#all.add(next);
        } catch {
          // The pool shrinks by one; the next release may do better.
        }
      }
    }
    if (!next) return;
    if (this.#disposed) {
      this.#all.delete(next);
      await next.dispose();
      return;
    }
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(next);
    else this.#free.push(next);
  }

  /**
   * Disposes every sandbox (ones in use when they come back) and the snapshot the pool made;
   * waiters reject. Idempotent.
   *
   * @example
   * ```ts
   * import { WasmSandboxPool } from "@hl/sandbox";
   * const pool = await WasmSandboxPool.create({ module: "fib.wasm", size: 1 });
   * await pool.dispose();
   * ```
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const w of [...this.#waiters]) w.reject(new SandboxError("the pool has been disposed"));
    for (const sb of this.#free.splice(0)) {
      this.#all.delete(sb);
      await sb.dispose();
    }
    if (this.#ownsSnapshot) await this.#snapshot.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
