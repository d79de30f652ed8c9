/**
 * Per-image start snapshots for cold `Sandbox.create` (src/start_cache.ts, issue 19): the second
 * cold create of a key starts from the first's snapshot instead of running the guest's start; a
 * start that logged or called a host function is never kept (its logs reach every sandbox);
 * `startSnapshot: false` opts out; keys, bounds and eviction. `startguest`
 * (guest/testguest/src/startguest.rs) logs at start, or calls `start_seed` when its input buffer
 * is 64 KiB.
 */

import assert from "node:assert/strict";
import { guests, Sandbox, StartSnapshotCache } from "../../mod.ts";
import { kvmTest } from "./_kvm.ts";

const ROOT = new URL("../../", import.meta.url);
const STARTGUEST =
  new URL("guest/target/x86_64-unknown-linux-gnu/release/startguest", ROOT).pathname;

kvmTest("a second cold create of an image starts from the first's start snapshot", async () => {
  const cache = new StartSnapshotCache();
  await using a = await Sandbox.create({ guest: guests.testguest, startSnapshot: cache });
  assert.equal(await a.call("counter"), 1n);
  assert.equal(await a.call("counter"), 2n);
  await using b = await Sandbox.create({ guest: guests.testguest, startSnapshot: cache });
  const s = cache.stats();
  assert.equal(s.starts, 1, "the start ran once");
  assert.equal(s.hits, 1);
  assert.equal(s.taken, 1);
  assert.equal(s.entries, 1);
  assert.ok(s.bytes > 0);
  // b sees the fresh state after the start, not a's writes; and a keeps its own.
  assert.equal(await b.call("counter"), 1n);
  assert.equal(await a.call("counter"), 3n);
  assert.equal(await b.call("add", 2, 3), 5);
  assert.deepEqual(b.functions, a.functions);
  await cache.clear();
  assert.equal(cache.stats().entries, 0);
  // Sandboxes started from a released snapshot keep working.
  assert.equal(await b.call("counter"), 2n);
});

kvmTest("start snapshots are keyed by layout and host functions", async () => {
  const cache = new StartSnapshotCache();
  const host = { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } } as const;
  const sandboxes = [
    await Sandbox.create({ guest: guests.testguest, startSnapshot: cache }),
    await Sandbox.create({ guest: guests.testguest, startSnapshot: cache, heapSize: 16 << 20 }),
    await Sandbox.create({ guest: guests.testguest, startSnapshot: cache, hostFunctions: host }),
    await Sandbox.create({ guest: guests.testguest, startSnapshot: cache, hostFunctions: host }),
  ];
  try {
    const s = cache.stats();
    assert.equal(s.starts, 3);
    assert.equal(s.hits, 1);
    assert.equal(s.entries, 3);
    assert.equal(await sandboxes[3].call("call_host", "double", 21), 42);
  } finally {
    for (const sb of sandboxes) await sb.dispose();
    await cache.clear();
  }
});

kvmTest("startSnapshot: false runs the start on every create", async () => {
  const before = StartSnapshotCache.default.stats();
  await using a = await Sandbox.create({ guest: guests.testguest, startSnapshot: false });
  await using b = await Sandbox.create({ guest: guests.testguest, startSnapshot: false });
  assert.deepEqual(StartSnapshotCache.default.stats(), before);
  assert.equal(await a.call("counter"), 1n);
  assert.equal(await b.call("counter"), 1n);
});

kvmTest("a start that logs is not snapshotted: its log reaches every sandbox", async () => {
  const cache = new StartSnapshotCache();
  const logs: string[][] = [[], [], []];
  const made: Sandbox[] = [];
  try {
    for (const log of logs) {
      made.push(
        await Sandbox.create({
          guest: STARTGUEST,
          startSnapshot: cache,
          onLog: (_level, message) => log.push(message),
        }),
      );
    }
    assert.deepEqual(logs, [["starting"], ["starting"], ["starting"]]);
    const s = cache.stats();
    assert.equal(s.starts, 3);
    assert.equal(s.hits, 0);
    assert.equal(s.taken, 0);
    assert.equal(s.refused, 1, "refused once, then remembered");
    assert.equal(s.entries, 0);
    // Without an onLog the LOG exit is skipped, yet it still told the host: not kept either.
    made.push(await Sandbox.create({ guest: STARTGUEST, startSnapshot: cache }));
    assert.equal(made.at(-1)!.stats().logsSkipped, 1);
    assert.equal(cache.stats().entries, 0);
  } finally {
    for (const sb of made) await sb.dispose();
  }
});

kvmTest("a start that calls a host function is not snapshotted", async () => {
  const cache = new StartSnapshotCache();
  let next = 0n;
  const hostFunctions = {
    start_seed: { params: [], result: "u64", fn: () => ++next },
  } as const;
  const options = { guest: STARTGUEST, startSnapshot: cache, inputSize: 64 * 1024, hostFunctions };
  await using a = await Sandbox.create(options);
  await using b = await Sandbox.create(options);
  assert.equal(await a.call("seed"), 1n);
  assert.equal(await b.call("seed"), 2n, "b's start ran and asked the host again");
  const s = cache.stats();
  assert.equal(s.starts, 2);
  assert.equal(s.hits, 0);
  assert.equal(s.refused, 1);
  assert.equal(s.entries, 0);
});

kvmTest("the start-snapshot cache holds its bounds and releases what it evicts", async () => {
  const cache = new StartSnapshotCache({ maxEntries: 1 });
  for (const heapSize of [8 << 20, 16 << 20, 8 << 20]) {
    await using sb = await Sandbox.create({
      guest: guests.testguest,
      startSnapshot: cache,
      heapSize,
    });
    assert.equal(await sb.call("counter"), 1n);
  }
  let s = cache.stats();
  assert.equal(s.entries, 1);
  assert.equal(s.starts, 3, "the first key was evicted by the second");
  await cache.configure({ maxBytes: 0 });
  assert.equal(cache.stats().entries, 0);
  await using sb = await Sandbox.create({ guest: guests.testguest, startSnapshot: cache });
  assert.equal(await sb.call("counter"), 1n);
  s = cache.stats();
  assert.equal(s.entries, 0, "a snapshot over maxBytes is not kept");
  assert.throws(() => new StartSnapshotCache({ maxEntries: -1 }), /maxEntries/);
  await assert.rejects(
    // deno-lint-ignore no-explicit-any
    Sandbox.create({ guest: guests.testguest, startSnapshot: 1 as any }),
    /startSnapshot/,
  );
});
