/**
 * The module cache as an object (issue 19): LRU over keys within bounds on keys, bytes and idle
 * VMs, and recycled VMs that keep working after many other keys were used. Counted through the
 * cache's stats and the live-VM count, never timed.
 */
import assert from "node:assert/strict";
import { ArgumentError, WasmModuleCache, WasmSandbox } from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

const fib = fixtureBytes("fib");
/** Another key of the same module: the fuel setting is part of the key. */
const keyed = (i: number, cache: WasmModuleCache) => ({ module: fib, fuel: 1_000_000 + i, cache });

kvmTest(
  "WasmModuleCache: recycled VMs keep serving a key after 100 other keys were used",
  async () => {
    const { liveVms } = globalStats();
    const cache = new WasmModuleCache({ maxEntries: 200, maxIdleVms: 4, maxIdleVmsPerKey: 2 });
    // 100 other keys, each with a miss, two hits and their disposes (the hits' VMs are kept idle
    // until later keys' take their room).
    for (let i = 1; i <= 100; i++) {
      const miss = await WasmSandbox.create(keyed(i, cache));
      const hits = [
        await WasmSandbox.create(keyed(i, cache)),
        await WasmSandbox.create(keyed(i, cache)),
      ];
      for (const h of hits) await h.dispose();
      await miss.dispose();
    }
    let s = cache.stats();
    assert.equal(s.entries, 100);
    assert.equal(s.idleVms, 4, "the total bound holds");
    assert.ok(s.idleEvictions >= 190, `older keys gave up their idle VMs: ${JSON.stringify(s)}`);
    // Key 0: after its miss, the first hit makes a VM; every later hit takes the VM the one
    // before it left (before the fix the bounds were full of other keys' VMs and every hit made
    // a new VM).
    const first = await WasmSandbox.create(keyed(0, cache));
    const before = cache.stats().recycledHits;
    for (let i = 0; i < 10; i++) {
      const w = await WasmSandbox.create(keyed(0, cache));
      assert.equal(w.fromCache, true);
      assert.equal(await w.call("fib", 10), 55);
      await w.dispose();
    }
    s = cache.stats();
    assert.equal(s.recycledHits - before, 9, JSON.stringify(s));
    await first.dispose();
    await cache.clear();
    assert.equal(cache.stats().idleVms, 0);
    assert.equal(globalStats().liveVms, liveVms);
  },
);

kvmTest(
  "WasmModuleCache: evicting the least recently used key leaves the others hits",
  async () => {
    const cache = new WasmModuleCache({ maxEntries: 3 });
    for (const i of [1, 2, 3]) await (await WasmSandbox.create(keyed(i, cache))).dispose();
    // Key 1 used again: key 2 is now the least recently used.
    await (await WasmSandbox.create(keyed(1, cache))).dispose();
    await (await WasmSandbox.create(keyed(4, cache))).dispose();
    let s = cache.stats();
    assert.deepEqual([s.entries, s.evictions, s.misses, s.hits], [3, 1, 4, 1]);
    for (const i of [1, 3, 4]) {
      const w = await WasmSandbox.create(keyed(i, cache));
      assert.equal(w.fromCache, true, `key ${i} still cached`);
      await w.dispose();
    }
    const w = await WasmSandbox.create(keyed(2, cache));
    assert.equal(w.fromCache, false, "key 2 was evicted");
    await w.dispose();
    s = cache.stats();
    assert.deepEqual([s.misses, s.hits], [5, 4]);
    await cache.clear();
  },
);

kvmTest("WasmModuleCache: byte bounds, lowered bounds and the default instance", async () => {
  const none = new WasmModuleCache({ maxEntryBytes: 0 });
  await (await WasmSandbox.create(keyed(1, none))).dispose();
  await (await WasmSandbox.create(keyed(1, none))).dispose();
  assert.deepEqual([none.stats().entries, none.stats().misses], [0, 2], "too big to keep");

  const cache = new WasmModuleCache();
  await (await WasmSandbox.create(keyed(1, cache))).dispose();
  const hit = await WasmSandbox.create(keyed(1, cache));
  await hit.dispose();
  let s = cache.stats();
  assert.ok(s.bytes > 0 && s.bytes <= cache.bounds.maxBytes, JSON.stringify(s));
  assert.equal(s.idleVms, 1);
  await cache.configure({ maxIdleVms: 0 });
  s = cache.stats();
  assert.equal(s.idleVms, 0, "lowering a bound releases what is over it");
  await cache.configure({ maxBytes: 0 });
  assert.deepEqual([cache.stats().entries, cache.stats().bytes], [0, 0]);
  await cache.clear();

  // A create that names no cache uses the default instance, which WasmSandbox.cacheStats reads.
  const before = WasmModuleCache.default.stats().misses;
  await (await WasmSandbox.create(keyed(7_777, undefined as unknown as WasmModuleCache)))
    .dispose();
  assert.equal(WasmSandbox.cacheStats().misses, before + 1);
  await WasmSandbox.clearCache();
});

Deno.test("WasmModuleCache: bounds and the cache option are checked", async () => {
  assert.throws(() => new WasmModuleCache({ maxEntries: -1 }), ArgumentError);
  assert.throws(() => new WasmModuleCache({ maxBytes: 1.5 }), ArgumentError);
  const cache = new WasmModuleCache();
  await assert.rejects(() => cache.configure({ maxIdleVms: Number.NaN }), ArgumentError);
  assert.equal(cache.bounds.maxIdleVms, 8, "a refused configure changes nothing");
  await assert.rejects(
    () => WasmSandbox.create({ module: fib, cache: {} as unknown as WasmModuleCache }),
    ArgumentError,
  );
});
