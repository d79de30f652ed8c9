// PoolCore's queue of waiters (src/pool_core.ts), no KVM: the waiters' bounds share one timer (a
// busy server's pool queued 46 runs and set and cleared a timer for each), and each bound still
// holds on its own: the earliest refuses first with its own figure, a later one keeps waiting and
// is served, an abort takes a waiter out, and no timer outlives the queue (Deno's sanitizer).

import assert from "node:assert/strict";
import { PoolCore, PoolExhaustedError } from "../../src/pool_core.ts";
import { CancelledError } from "../../src/errors.ts";
import { countTimers } from "../_timers.ts";

class Member {
  async dispose(): Promise<void> {}
}

function core(): PoolCore<Member> {
  return new PoolCore([new Member()], { size: 1 }, {
    revoke: () => Promise.resolve(new Member()),
    restore: () => Promise.resolve(),
    replace: () => Promise.resolve(new Member()),
    disposed: () => Promise.resolve(),
  });
}

Deno.test("PoolCore: 20 queued runs share one timer, and each is served in turn", async () => {
  const pool = core();
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  const { value: runs, timers } = await countTimers(() => {
    const busy = pool.run(() => gate);
    const queued = Array.from({ length: 20 }, (_, i) => pool.run(() => i, { timeoutMs: 5000 }));
    return Promise.resolve([busy, ...queued]);
  });
  assert.equal(pool.waiting, 20);
  assert.equal(timers, 1, "one timer for the queue, not one per waiter");
  open();
  const results = await Promise.all(runs);
  assert.deepEqual(results.slice(1), Array.from({ length: 20 }, (_, i) => i));
  assert.equal(pool.waiting, 0);
  assert.equal(pool.available, 1);
  await pool.dispose();
});

Deno.test("PoolCore: each waiter keeps its own bound; aborts and dispose leave no timer", async () => {
  const pool = core();
  let open!: () => void;
  const gate = new Promise<void>((r) => open = r);
  const busy = pool.run(() => gate);
  const long = pool.run(() => "long", { timeoutMs: 10_000 });
  const short = pool.run(() => "short", { timeoutMs: 10 });
  const ac = new AbortController();
  const aborted = pool.run(() => "aborted", { signal: ac.signal, timeoutMs: 10_000 });
  assert.equal(pool.waiting, 3);
  await assert.rejects(() => short, (e) => {
    assert.ok(e instanceof PoolExhaustedError);
    assert.match((e as Error).message, /within 10 ms/);
    return true;
  });
  assert.equal(pool.waiting, 2, "the earliest bound refused only its own waiter");
  ac.abort();
  await assert.rejects(() => aborted, CancelledError);
  assert.equal(pool.waiting, 1);
  open();
  await busy;
  assert.equal(await long, "long");
  // Queued again, then the pool disposed: the waiter is refused and its timer cleared.
  const gate2 = Promise.withResolvers<void>();
  const busy2 = pool.run(() => gate2.promise);
  const refused = pool.run(() => 1, { timeoutMs: 10_000 });
  await pool.dispose();
  await assert.rejects(() => refused, /disposed/);
  gate2.resolve();
  await busy2;
});
