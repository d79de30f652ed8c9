/**
 * What `SandboxPool`, `WasmSandboxPool` and `JsSandboxPool` share: the free list, the bounded wait for a member
 * (timeout, `maxWaiting`, `AbortSignal`), restoring a member on release and replacing one that
 * cannot be restored, and disposal (`PoolCore`), and the public methods over it (`Pool`). The pools
 * only say how a member is made and restored.
 *
 * @module
 */

import { CancelledError, SandboxError } from "./errors.ts";
import { checkCount, checkTimeout } from "./options.ts";
import { countPool, tracePoolRun } from "./telemetry.ts";
import { type Deadline, deadlines } from "./deadlines.ts";

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

/** Options of a pool's `run`. */
export interface PoolRunOptions {
  /** Stops waiting for a sandbox ({@linkcode CancelledError}). */
  signal?: AbortSignal;
  /** How long to wait for a free sandbox ({@linkcode PoolExhaustedError} after it). */
  timeoutMs?: number;
}

/** The sizing options both pools take. */
export interface PoolSizing {
  /** Number of sandboxes (default 4). */
  size?: number;
  /** Default wait bound of `run`, in ms (default 30 000). */
  acquireTimeoutMs?: number;
  /** Most callers that may wait at once; one more is refused at once (default: no limit). */
  maxWaiting?: number;
}

/** Checks the sizing options; returns the pool size. */
export function checkPoolSizing(options: PoolSizing): number {
  const size = checkCount(options.size, "size", 4);
  checkTimeout(options.acquireTimeoutMs, "acquireTimeoutMs");
  if (options.maxWaiting !== undefined) checkCount(options.maxWaiting + 1, "maxWaiting + 1", 1);
  return size;
}

/** What a pool member must do. */
export interface PoolMember {
  dispose(): Promise<void>;
}

/** How a pool makes and restores its members. */
export interface PoolHooks<M extends PoolMember> {
  /**
   * Revokes the handle a borrower had (every later use of it is `SandboxDisposedError`) and
   * returns a new handle on the same VM, never handed out yet; throws when the borrower disposed
   * it.
   */
  revoke(member: M): Promise<M>;
  /** Puts a returned member back to the pool's snapshot (throws when it cannot). */
  restore(member: M): Promise<void>;
  /** Makes a new member, replacing one that could not be restored. */
  replace(): Promise<M>;
  /** Runs once when the pool is disposed, after the free members (e.g. the owned snapshot). */
  disposed(): Promise<void>;
}

interface Waiter<M> {
  resolve: (member: M) => void;
  reject: (e: Error) => void;
  /** Its bound, on the process's one timer for deadlines (not a timer per waiter). */
  deadline: Deadline | undefined;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

/** The free list and bounded waits of a pool of members `M`. */
export class PoolCore<M extends PoolMember> {
  readonly #hooks: PoolHooks<M>;
  readonly #free: M[] = [];
  readonly #all = new Set<M>();
  readonly #waiters: Waiter<M>[] = [];
  readonly #acquireTimeoutMs: number;
  readonly #maxWaiting: number;
  #disposed = false;

  constructor(members: readonly M[], sizing: PoolSizing, hooks: PoolHooks<M>) {
    this.#hooks = hooks;
    this.#acquireTimeoutMs = sizing.acquireTimeoutMs ?? 30_000;
    this.#maxWaiting = sizing.maxWaiting ?? Infinity;
    for (const m of members) {
      this.#all.add(m);
      this.#free.push(m);
    }
    countPool(this, true);
  }

  /** Number of members. */
  get size(): number {
    return this.#all.size;
  }

  /** Number of members free right now. */
  get available(): number {
    return this.#free.length;
  }

  /** Number of callers waiting for a member. */
  get waiting(): number {
    return this.#waiters.length;
  }

  /**
   * Borrows a member, runs `fn` with it, then revokes the handle `fn` got (a reference kept past
   * the run reaches nothing), restores the VM and hands it on under a new handle.
   */
  run<T>(fn: (member: M) => T | Promise<T>, options: PoolRunOptions = {}): Promise<T> {
    return tracePoolRun(async (acquired) => {
      const member = await this.#acquire(options);
      acquired();
      try {
        return await fn(member);
      } finally {
        await this.#release(member);
      }
    });
  }

  #acquire(options: PoolRunOptions): Promise<M> {
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
    return new Promise<M>((resolve, reject) => {
      const waiter: Waiter<M> = {
        resolve,
        reject,
        deadline: undefined,
        signal,
        onAbort: undefined,
      };
      if (signal) {
        waiter.onAbort = () => {
          if (this.#unwait(waiter)) {
            reject(new CancelledError("pool.run: cancelled while waiting"));
          }
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      waiter.deadline = deadlines.add(timeoutMs, () => {
        if (this.#unwait(waiter)) {
          reject(
            new PoolExhaustedError(
              `no sandbox of ${this.#all.size} became free within ${timeoutMs} ms`,
            ),
          );
        }
      });
      this.#waiters.push(waiter);
    });
  }

  /** Takes `waiter` out of the queue (false when it was no longer there). */
  #unwait(waiter: Waiter<M>): boolean {
    const i = this.#waiters.indexOf(waiter);
    if (i < 0) return false;
    this.#waiters.splice(i, 1);
    this.#settled(waiter);
    return true;
  }

  /** A waiter left the queue: its bound and its abort listener go. */
  #settled(waiter: Waiter<M>): void {
    if (waiter.deadline) deadlines.remove(waiter.deadline);
    if (waiter.onAbort) waiter.signal!.removeEventListener("abort", waiter.onAbort);
  }

  async #release(member: M): Promise<void> {
    let next: M | undefined;
    try {
      next = await this.#hooks.revoke(member);
      this.#all.delete(member);
      this.#all.add(next);
      await this.#hooks.restore(next);
    } catch {
      // Disposed by the borrower, or not restorable: destroyed (a revoked handle's dispose is a
      // no-op, so the one that still owns the VM is disposed) and replaced.
      this.#all.delete(member);
      if (next) this.#all.delete(next);
      await (next ?? member).dispose();
      next = undefined;
      if (!this.#disposed) {
        try {
          next = await this.#hooks.replace();
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
    if (waiter) {
      this.#settled(waiter);
      waiter.resolve(next);
    } else this.#free.push(next);
  }

  /** Disposes the free members (busy ones when they come back); waiters reject. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    countPool(this, false);
    for (const w of [...this.#waiters]) {
      this.#unwait(w);
      w.reject(new SandboxError("the pool has been disposed"));
    }
    for (const m of this.#free.splice(0)) {
      this.#all.delete(m);
      await m.dispose();
    }
    await this.#hooks.disposed();
  }
}

/**
 * The public face every pool shares (`SandboxPool`, `WasmSandboxPool`, `JsSandboxPool`): the
 * counts, `run`, and disposal, over a {@linkcode PoolCore}. A pool class adds only its `create`.
 *
 * @example
 * ```ts
 * import { guests, SandboxPool } from "@hl/sandbox";
 * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 2 });
 * console.log(pool.size, pool.available, pool.waiting); // 2 2 0
 * ```
 */
export abstract class Pool<M extends { dispose(): Promise<void> }> implements AsyncDisposable {
  readonly #core: PoolCore<M>;

  /** Wraps the core a pool's `create` started. */
  protected constructor(core: PoolCore<M>) {
    this.#core = core;
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
   * it is a `SandboxDisposedError` (work of it still in progress is stopped), so a reference kept
   * past the run never reaches the next borrower's sandbox.
   *
   * @example
   * ```ts
   * import { guests, SandboxPool } from "@hl/sandbox";
   * await using pool = await SandboxPool.create({ guest: guests.testguest, size: 2 });
   * const sum = await pool.run((sb) => sb.call("add", 2, 3), { timeoutMs: 1000 });
   * console.log(sum); // 5
   * ```
   */
  run<T>(fn: (sandbox: M) => T | Promise<T>, options: PoolRunOptions = {}): Promise<T> {
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
