import assert from "node:assert/strict";
import { Sandbox, SandboxError, SandboxPool, StartSnapshotCache } from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { TESTGUEST } from "../_guests.ts";
import { countTimers } from "../_timers.ts";
import { guestMappingCount, kvmTest, openFdCount } from "./_kvm.ts";
import { checkPoolBounds } from "./_pool.ts";

const double = {
  double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x },
} as const;

kvmTest("SandboxPool: every run starts from the snapshot", async () => {
  await using pool = await SandboxPool.create({
    guest: TESTGUEST,
    size: 3,
    hostFunctions: double,
  });
  assert.equal(pool.size, 3);
  assert.equal(pool.available, 3);
  const results = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      pool.run(async (sb) => {
        assert.equal(await sb.call("counter"), 1n);
        await sb.call("heap_push", BigInt(i));
        return await sb.call("call_host", "double", i);
      })),
  );
  assert.deepEqual(results, Array.from({ length: 12 }, (_, i) => 2 * i));
  assert.equal(pool.available, 3);
  // A run whose fn throws or poisons its sandbox still hands back a clean one.
  await assert.rejects(() => pool.run(() => Promise.reject(new Error("mine"))), /mine/);
  await assert.rejects(() => pool.run((sb) => sb.call("panic", "boom")));
  for (let i = 0; i < 3; i++) {
    assert.equal(await pool.run((sb) => sb.call("counter")), 1n);
  }
  assert.equal(pool.available, 3);
});

kvmTest("SandboxPool: from a snapshot; exhaustion, bounded wait and AbortSignal", async () => {
  await using base = await Sandbox.create({ guest: TESTGUEST });
  await base.call("counter");
  await using snap = await base.snapshot();
  await using pool = await SandboxPool.create({ snapshot: snap, size: 2, maxWaiting: 1 });
  const { busy, waited } = await checkPoolBounds(pool, (sb) => sb.call("counter"));
  assert.deepEqual([...busy, waited], [2n, 2n, 2n]);
  await pool.dispose();
  await assert.rejects(() => pool.run(() => 1), SandboxError);
  // The pool did not own the snapshot: it still works.
  await using again = await Sandbox.create({ snapshot: snap });
  assert.equal(await again.call("counter"), 2n);
});

kvmTest("SandboxPool: 1,000 runs leak no fd, mapping, VM or snapshot", async () => {
  // The per-image start snapshots are a process-wide cache (src/start_cache.ts): emptied on both
  // sides of the count.
  await StartSnapshotCache.default.clear();
  const fds = openFdCount();
  const maps = guestMappingCount();
  const { liveVms, liveSnapshots } = globalStats();
  {
    await using pool = await SandboxPool.create({ guest: TESTGUEST, size: 4 });
    for (let i = 0; i < 250; i++) {
      const r = await Promise.all(
        [0, 1, 2, 3].map(() => pool.run((sb) => sb.call("counter"))),
      );
      assert.deepEqual(r, [1n, 1n, 1n, 1n]);
    }
  }
  await StartSnapshotCache.default.clear();
  assert.equal(openFdCount(), fds);
  assert.equal(guestMappingCount(), maps);
  assert.deepEqual(
    [globalStats().liveVms, globalStats().liveSnapshots],
    [liveVms, liveSnapshots],
  );
});

kvmTest("SandboxPool: queued runs and their calls' limits share one timer", async () => {
  await using pool = await SandboxPool.create({ guest: TESTGUEST, size: 2, timeoutMs: 5000 });
  const { value: results, timers } = await countTimers(() =>
    Promise.all(
      Array.from({ length: 12 }, () => pool.run((sb) => sb.call("counter") as Promise<bigint>)),
    )
  );
  assert.deepEqual(results, Array(12).fill(1n));
  // Before: a timer per queued run (10) and per call (12). Now the process's deadlines
  // (src/deadlines.ts): armed for the first wait, re-armed for the first call's earlier limit.
  assert.ok(timers <= 3, `${timers} timers for 12 runs`);
});
