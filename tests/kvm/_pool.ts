/**
 * The back-pressure checks both pools (`SandboxPool`, `WasmSandboxPool`) must pass, on a pool of
 * size 2 with `maxWaiting: 1`: exhaustion, a bounded wait, an `AbortSignal`, and a waiter served
 * by the first release. No timing is asserted: that a bounded wait waited is seen in `waiting`.
 */
import assert from "node:assert/strict";
import { CancelledError, PoolExhaustedError } from "../../mod.ts";

/** The part of a pool's API the checks use. */
interface PoolLike<M> {
  run<T>(
    fn: (m: M) => T | Promise<T>,
    options?: { timeoutMs?: number; signal?: AbortSignal },
  ): Promise<T>;
  readonly available: number;
  readonly waiting: number;
}

/**
 * Runs the checks; `use` is a call on a member (its results are returned: the two borrowers'
 * first, then the waiter's).
 */
export async function checkPoolBounds<M, T>(
  pool: PoolLike<M>,
  use: (m: M) => Promise<T>,
): Promise<{ busy: T[]; waited: T }> {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const busy = [0, 1].map(() =>
    pool.run(async (m) => {
      await gate;
      return use(m);
    })
  );
  assert.equal(pool.available, 0);
  // No wait allowed: refused at once.
  await assert.rejects(() => pool.run(() => 1, { timeoutMs: 0 }), PoolExhaustedError);
  assert.equal(pool.waiting, 0);
  // A bounded wait: it queues, then runs out.
  const bounded = pool.run(() => 1, { timeoutMs: 20 });
  assert.equal(pool.waiting, 1);
  await assert.rejects(() => bounded, PoolExhaustedError);
  assert.equal(pool.waiting, 0);
  // An AbortSignal stops the wait.
  const ac = new AbortController();
  const aborted = pool.run(() => 1, { signal: ac.signal });
  assert.equal(pool.waiting, 1);
  // maxWaiting 1: a second waiter is refused at once.
  await assert.rejects(() => pool.run(() => 1), PoolExhaustedError);
  ac.abort();
  await assert.rejects(() => aborted, CancelledError);
  assert.equal(pool.waiting, 0);
  // Back-pressure: a waiter gets the first member released.
  const waited = pool.run(use, { timeoutMs: 5000 });
  release();
  return { busy: await Promise.all(busy), waited: await waited };
}
