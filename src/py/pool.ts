/**
 * `PySandboxPool`: warm Python interpreters started from one snapshot taken after `setup`. A run
 * borrows one; each `PySandbox` puts its VM back to that state after every request (off the
 * reply's path), so the member goes back to the free list as soon as the run ends. A member that
 * was poisoned is restored, or replaced from the snapshot when that fails.
 *
 * @module
 */

import { ArgumentError, SandboxError } from "../errors.ts";
import { checkTimeout } from "../options.ts";
import { checkPoolSizing, PoolExhaustedError, type PoolSizing } from "../pool_core.ts";
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

interface Waiter {
  resolve(py: PySandbox): void;
  reject(e: Error): void;
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
  readonly #options: PySandboxOptions;
  readonly #size: number;
  readonly #acquireTimeoutMs: number;
  readonly #maxWaiting: number;
  readonly #ready: PySandbox[] = [];
  readonly #waiters: Waiter[] = [];
  readonly #stopping = new Set<Promise<void>>();
  readonly #members = new Set<PySandbox>();
  #snapshot: PySnapshot | undefined;
  #starting = 0;
  #disposed = false;
  #lastError: unknown;

  private constructor(options: PySandboxPoolOptions, size: number) {
    const { size: _s, acquireTimeoutMs, maxWaiting, ...rest } = options;
    this.#options = rest;
    this.#size = size;
    this.#acquireTimeoutMs = acquireTimeoutMs ?? 30_000;
    this.#maxWaiting = maxWaiting ?? Infinity;
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
    const pool = new PySandboxPool(options, size);
    try {
      const first = await PySandbox.create(pool.#options);
      pool.#add(first);
      pool.#snapshot = await first.snapshot();
      while (pool.#members.size < size) pool.#add(await pool.#copy());
    } catch (e) {
      await pool.dispose();
      throw e;
    }
    return pool;
  }

  /** The number of interpreters the pool keeps. */
  get size(): number {
    return this.#size;
  }

  /** Interpreters started and free now. */
  get available(): number {
    return this.#ready.length;
  }

  /** Callers waiting for an interpreter. */
  get waiting(): number {
    return this.#waiters.length;
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
    const py = await this.#acquire(options.acquireTimeoutMs ?? this.#acquireTimeoutMs);
    try {
      return typeof what === "string" ? await py.run(what, options) : await what(py);
    } finally {
      this.#release(py);
    }
  }

  /**
   * Stops every interpreter; waiting runs reject. Idempotent.
   *
   * @example
   * ```ts
   * import { PySandboxPool } from "@hl/sandbox";
   * const pool = await PySandboxPool.create({ size: 1 });
   * await pool.dispose();
   * ```
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const w of this.#waiters.splice(0)) {
      w.reject(new SandboxError("the pool has been disposed"));
    }
    this.#ready.length = 0;
    for (const py of this.#members) this.#stop(py);
    this.#members.clear();
    while (this.#stopping.size > 0 || this.#starting > 0) {
      await Promise.all([...this.#stopping]);
      if (this.#starting > 0) await new Promise((r) => setTimeout(r, 5));
    }
    await this.#snapshot?.dispose();
  }

  /** `await using` support: {@linkcode dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #acquire(timeoutMs: number): Promise<PySandbox> {
    if (this.#disposed) return Promise.reject(new SandboxError("the pool has been disposed"));
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#waiters.length >= this.#maxWaiting || timeoutMs === 0) {
      return Promise.reject(new PoolExhaustedError(`no started interpreter of ${this.#size}`));
    }
    return new Promise<PySandbox>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        const why = this.#lastError instanceof Error ? `: ${this.#lastError.message}` : "";
        reject(
          new PoolExhaustedError(
            `no interpreter of ${this.#size} became free within ${timeoutMs} ms${why}`,
            { cause: this.#lastError },
          ),
        );
      }, timeoutMs);
      const waiter: Waiter = {
        resolve: (py) => (clearTimeout(timer), resolve(py)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      this.#waiters.push(waiter);
    });
  }

  /** A new member from the pool's snapshot. */
  #copy(): Promise<PySandbox> {
    const { stdout, stderr, timeoutMs, library, net } = this.#options;
    return PySandbox.create({ snapshot: this.#snapshot!, stdout, stderr, timeoutMs, library, net });
  }

  #add(py: PySandbox): void {
    this.#members.add(py);
    this.#ready.push(py);
  }

  /** Revokes the borrower's handle and frees the member (restored first when it was poisoned). */
  #release(py: PySandbox): void {
    this.#members.delete(py);
    let next: PySandbox;
    try {
      next = handOverPySandbox(py);
    } catch {
      this.#replace(); // the borrower disposed it
      return;
    }
    this.#members.add(next);
    if (!next.poisoned) return this.#free(next);
    next.restore().then(
      () => this.#free(next),
      () => {
        this.#members.delete(next);
        this.#stop(next);
        this.#replace();
      },
    );
  }

  #free(py: PySandbox): void {
    if (this.#disposed) return this.#stop(py);
    const waiter = this.#waiters.shift();
    if (waiter) waiter.resolve(py);
    else this.#ready.push(py);
  }

  #stop(py: PySandbox): void {
    const done = py.dispose().catch(() => {}).finally(() => this.#stopping.delete(done));
    this.#stopping.add(done);
  }

  /** Starts a member from the snapshot in place of one that was lost. */
  #replace(): void {
    if (this.#disposed) return;
    this.#starting++;
    this.#copy().then(
      (py) => {
        this.#starting--;
        if (this.#disposed) return this.#stop(py);
        this.#members.add(py);
        this.#free(py);
      },
      (e) => {
        this.#starting--;
        this.#lastError = e; // the pool shrinks by one
      },
    );
  }
}
