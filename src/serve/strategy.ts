/**
 * The three strategies of a route (docs/serve.md, "Strategies") behind one face,
 * {@linkcode Runner}: `restore` is the library's own pool (`SandboxPool`, `WasmSandboxPool`,
 * `JsSandboxPool`: restored to the snapshot after every run, replaced when it cannot be);
 * `reuse` keeps `size` sandboxes and their state, replacing one that a request poisoned; `renew`
 * starts a new sandbox from the snapshot for every request (at most `size` at once) and disposes
 * it after.
 *
 * @module
 */

import { SandboxError } from "../errors.ts";
import { PoolExhaustedError } from "../pool_core.ts";
import type { Pool } from "../pool_core.ts";

/** A sandbox as the strategies see it. */
export interface Member {
  /** Whether an error left it unusable. */
  readonly poisoned: boolean;
  /** Destroys it. */
  dispose(): Promise<void>;
}

/** Runs requests on a route's sandboxes. */
export interface Runner<M> {
  /** Runs `fn` on a sandbox; waits at most `acquireTimeoutMs` for one (`PoolExhaustedError`). */
  run<T>(fn: (m: M) => Promise<T>, acquireTimeoutMs: number): Promise<T>;
  /** Sandboxes the route has (or may have at once, with `renew`). */
  readonly size: number;
  /** Free right now. */
  readonly available: number;
  /** Sandboxes replaced because their request failed (`reuse`; `renew` disposes every one). */
  readonly replaced: number;
  /**
   * Disposes what the runner holds; a run still waiting for a sandbox, or asked for after, is
   * refused (`SandboxError`). Idempotent.
   */
  dispose(): Promise<void>;
}

/** `restore`: one of the library's pools. */
export class RestoreRunner<M extends Member> implements Runner<M> {
  readonly #pool: Pool<M>;
  readonly #disposed: () => Promise<void>;
  /** `disposed` runs after the pool's dispose (e.g. the loaded snapshot the pool started from). */
  constructor(pool: Pool<M>, disposed: () => Promise<void> = () => Promise.resolve()) {
    this.#pool = pool;
    this.#disposed = disposed;
  }
  run<T>(fn: (m: M) => Promise<T>, acquireTimeoutMs: number): Promise<T> {
    return this.#pool.run(fn, { timeoutMs: acquireTimeoutMs });
  }
  get size(): number {
    return this.#pool.size;
  }
  get available(): number {
    return this.#pool.available;
  }
  get replaced(): number {
    return 0;
  }
  async dispose(): Promise<void> {
    await this.#pool.dispose();
    await this.#disposed();
  }
}

/**
 * A counting semaphore with a bounded wait (the waiters are served first come, first served).
 * Once closed (the runner disposed), waiters and later acquires are refused, as a disposed pool's
 * are: no sandbox is made for a route that is gone.
 */
class Slots {
  #free: number;
  #closed = false;
  readonly #waiters: {
    resolve: () => void;
    reject: (e: Error) => void;
    timer: ReturnType<typeof setTimeout>;
  }[] = [];
  constructor(n: number) {
    this.#free = n;
  }
  get free(): number {
    return this.#free;
  }
  acquire(timeoutMs: number, size: number): Promise<void> {
    if (this.#closed) return Promise.reject(disposedError());
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    if (timeoutMs === 0) {
      return Promise.reject(new PoolExhaustedError(`all ${size} sandboxes are busy`));
    }
    return new Promise((resolve, reject) => {
      const w = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.splice(this.#waiters.indexOf(w), 1);
          reject(
            new PoolExhaustedError(`no sandbox of ${size} became free within ${timeoutMs} ms`),
          );
        }, timeoutMs),
      };
      this.#waiters.push(w);
    });
  }
  release(): void {
    const w = this.#waiters.shift();
    if (w) {
      clearTimeout(w.timer);
      w.resolve();
    } else this.#free++;
  }
  /** Refuses every waiter and every later acquire. */
  close(): void {
    this.#closed = true;
    for (const w of this.#waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(disposedError());
    }
  }
}

const disposedError = () => new SandboxError("the route's sandboxes have been disposed");

/** `renew`: a new sandbox per request from `make`, disposed after it; at most `size` at once. */
export class RenewRunner<M extends Member> implements Runner<M> {
  readonly #make: () => Promise<M>;
  readonly #slots: Slots;
  readonly size: number;
  readonly #disposed: () => Promise<void>;
  #done = false;
  constructor(size: number, make: () => Promise<M>, disposed: () => Promise<void>) {
    this.size = size;
    this.#make = make;
    this.#slots = new Slots(size);
    this.#disposed = disposed;
  }
  async run<T>(fn: (m: M) => Promise<T>, acquireTimeoutMs: number): Promise<T> {
    await this.#slots.acquire(acquireTimeoutMs, this.size);
    try {
      const m = await this.#make();
      try {
        return await fn(m);
      } finally {
        await m.dispose();
      }
    } finally {
      this.#slots.release();
    }
  }
  get available(): number {
    return this.#slots.free;
  }
  get replaced(): number {
    return 0;
  }
  async dispose(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#slots.close();
    await this.#disposed();
  }
}

/**
 * `reuse`: `size` sandboxes kept with their state; one whose request failed (a fault, a timeout, a
 * malformed response) or that is poisoned is disposed and replaced.
 */
export class ReuseRunner<M extends Member> implements Runner<M> {
  readonly #make: () => Promise<M>;
  readonly #free: M[];
  readonly #slots: Slots;
  readonly size: number;
  readonly #disposed: () => Promise<void>;
  #replaced = 0;
  #done = false;
  constructor(members: M[], make: () => Promise<M>, disposed: () => Promise<void>) {
    this.size = members.length;
    this.#free = [...members];
    this.#slots = new Slots(members.length);
    this.#make = make;
    this.#disposed = disposed;
  }
  async run<T>(fn: (m: M) => Promise<T>, acquireTimeoutMs: number): Promise<T> {
    await this.#slots.acquire(acquireTimeoutMs, this.size);
    let m = this.#free.pop();
    try {
      // A slot without a member: an earlier replacement failed; try again now.
      m ??= await this.#make();
    } catch (e) {
      this.#slots.release();
      throw e;
    }
    const member = m;
    let failed = false;
    try {
      return await fn(member);
    } catch (e) {
      // Whatever failed in the guest (a trap leaves a Wasm instance unpoisoned but halfway
      // through its work), the member is not trusted again.
      failed = true;
      throw e;
    } finally {
      if (failed || member.poisoned || this.#done) {
        await member.dispose();
        if (!this.#done) {
          this.#replaced++;
          // The slot stays empty if this fails; the next run makes one.
          const next = await this.#make().catch(() => undefined);
          if (next) this.#free.push(next);
        }
      } else this.#free.push(member);
      this.#slots.release();
    }
  }
  get available(): number {
    return this.#slots.free;
  }
  get replaced(): number {
    return this.#replaced;
  }
  async dispose(): Promise<void> {
    if (this.#done) return;
    this.#done = true;
    this.#slots.close();
    for (const m of this.#free.splice(0)) await m.dispose();
    await this.#disposed();
  }
}
