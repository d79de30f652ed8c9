/**
 * `SandboxPool`: a fixed number of warm sandboxes started from one snapshot; each `run` borrows
 * one, and restores it to the snapshot before the next borrower gets it.
 *
 * @module
 */

import { ArgumentError, CancelledError, SandboxError } from "./errors.ts";
import { checkCount, checkTimeout } from "./options.ts";
import { Sandbox, type SandboxOptions } from "./sandbox.ts";
import type { Snapshot } from "./snapshot.ts";

/**
 * No sandbox of the pool became free within the wait bound (`timeoutMs`), or more callers were
 * waiting than `maxWaiting` allows.
 *
 * @example
 * ```ts
 * import { guests, PoolExhaustedError, SandboxPool } from "@hl/sandbox";
 * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 1 });
 * const slow = pool.run((sb) => sb.call("add", 1, 2));
 * try {
 *   await pool.run((sb) => sb.call("add", 3, 4), { timeoutMs: 0 });
 * } catch (e) {
 *   console.log(e instanceof PoolExhaustedError); // true
 * }
 * await slow;
 * ```
 */
export class PoolExhaustedError extends SandboxError {
  /** Creates the error; the message says how long it waited. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PoolExhaustedError";
  }
}

/** Options of {@linkcode SandboxPool.create}. */
export interface SandboxPoolOptions extends Omit<SandboxOptions, "guest"> {
  /** The guest to start (one sandbox is created and snapshotted); or give `snapshot`. */
  guest?: string | URL | Uint8Array;
  /** The snapshot every sandbox starts from and is restored to (the pool does not dispose it). */
  snapshot?: Snapshot;
  /** Number of sandboxes (default 4). */
  size?: number;
  /** Default wait bound of {@linkcode SandboxPool.run}, in ms (default 30 000). */
  acquireTimeoutMs?: number;
  /** Most callers that may wait at once; one more is refused at once (default: no limit). */
  maxWaiting?: number;
}

/** Options of {@linkcode SandboxPool.run}. */
export interface PoolRunOptions {
  /** Stops waiting for a sandbox ({@linkcode CancelledError}); also passed to nothing else. */
  signal?: AbortSignal;
  /** How long to wait for a free sandbox ({@linkcode PoolExhaustedError} after it). */
  timeoutMs?: number;
}

interface Waiter {
  resolve: (sb: Sandbox) => void;
  reject: (e: Error) => void;
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
  readonly #snapshot: Snapshot;
  readonly #ownsSnapshot: boolean;
  readonly #options: SandboxPoolOptions;
  readonly #free: Sandbox[] = [];
  readonly #all = new Set<Sandbox>();
  readonly #waiters: Waiter[] = [];
  readonly #acquireTimeoutMs: number;
  readonly #maxWaiting: number;
  #disposed = false;

  private constructor(
    snapshot: Snapshot,
    owns: boolean,
    options: SandboxPoolOptions,
    members: Sandbox[],
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
    const size = checkCount(options.size, "size", 4);
    checkTimeout(options.acquireTimeoutMs, "acquireTimeoutMs");
    if (options.maxWaiting !== undefined) checkCount(options.maxWaiting + 1, "maxWaiting + 1", 1);
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
    return new SandboxPool(snapshot, owns, options, members);
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
   * `acquireTimeoutMs`) for a free sandbox ({@linkcode PoolExhaustedError}), and stops waiting when
   * `signal` aborts ({@linkcode CancelledError}). A sandbox that `fn` poisoned is restored all the
   * same (a restore clears poisoning); one that cannot be restored is replaced.
   *
   * @example
   * ```ts
   * import { guests, SandboxPool } from "@hl/sandbox";
   * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 2 });
   * const sum = await pool.run((sb) => sb.call("add", 2, 3), { timeoutMs: 1000 });
   * console.log(sum); // 5
   * ```
   */
  async run<T>(fn: (sb: Sandbox) => T | Promise<T>, options: PoolRunOptions = {}): Promise<T> {
    const sb = await this.#acquire(options);
    try {
      return await fn(sb);
    } finally {
      await this.#release(sb);
    }
  }

  #acquire(options: PoolRunOptions): Promise<Sandbox> {
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
    return new Promise<Sandbox>((resolve, reject) => {
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

  async #release(sb: Sandbox): Promise<void> {
    let next: Sandbox | undefined = sb;
    try {
      await sb.restore(this.#snapshot);
    } catch {
      this.#all.delete(sb);
      await sb.dispose();
      next = undefined;
      if (!this.#disposed) {
        try {
          next = await Sandbox.create(SandboxPool.#memberOptions(this.#options, this.#snapshot));
          this.#all.add(next);
        } catch {
          // The pool shrinks by one; the next release or create may do better.
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
   * import { guests, SandboxPool } from "@hl/sandbox";
   * const pool = await SandboxPool.create({ guest: guests.testguest, size: 1 });
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
