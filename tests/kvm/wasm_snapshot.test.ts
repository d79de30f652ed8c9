import assert from "node:assert/strict";
import type {
  WasmSandboxOptions,
  WasmSandboxPoolOptions,
  WasmSnapshotSandboxOptions,
} from "../../mod.ts";
import {
  Sandbox,
  SandboxDisposedError,
  SandboxError,
  SnapshotDisposedError,
  SnapshotMismatchError,
  WasmSandbox,
  WasmSandboxPool,
  WasmSnapshot,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { checkPoolBounds } from "./_pool.ts";
import { WasmModuleCache as ModuleCache } from "../../mod.ts";
const recycledCount = () => ModuleCache.default.stats().idleVms;
import { TESTGUEST } from "../_guests.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import { engineTest, guestMappingCount, openFdCount, WASM_ENGINES } from "./_kvm.ts";

/** Host functions of state.wasm; `seen` collects what env.seen received. */
function imports(seen: number[] = []) {
  return {
    env: { seen: { params: ["i32"], result: "void", fn: (x: number) => void seen.push(x) } },
  } as const;
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  const create = ((o: WasmSandboxOptions | WasmSnapshotSandboxOptions) =>
    WasmSandbox.create("snapshot" in o ? o : { engine, ...o })) as typeof WasmSandbox.create;
  const createPool = ((o: WasmSandboxPoolOptions) =>
    WasmSandboxPool.create({ engine, ...o })) as typeof WasmSandboxPool.create;
  test("WasmSandbox: restore brings back globals and memory", async () => {
    const seen: number[] = [];
    await using w = await create({
      module: fixture("state"),
      hostFunctions: imports(seen),
      cache: false,
    });
    assert.equal(await w.call("bump"), 1);
    await w.call("store", 64, 1234);
    await using snap = await w.snapshot();
    assert.ok(snap instanceof WasmSnapshot);
    assert.deepEqual(
      snap.exports.map((e) =>
        e.name
      ),
      w.exports.map((e) => e.name),
    );
    assert.equal(await w.call("bump"), 2);
    await w.call("store", 64, 99);
    assert.equal(await w.call("grow"), 1);
    await w.call("store", 70000, 5);
    assert.equal(await w.memorySize(), 2 * 65536);
    await w.restore(snap);
    assert.equal(await w.call("count"), 1);
    assert.equal(await w.call("load", 64), 1234);
    assert.equal(await w.memorySize(), 65536);
    assert.equal(await w.call("bump"), 2);
    assert.deepEqual(seen, [1, 2, 2]); // the host function is this sandbox's, kept across restore
    // A trapped call leaves the sandbox usable; the restore undoes what came before it.
    await w.call("bump");
    await assert.rejects(() => w.call("load", 1 << 20));
    await w.restore(snap);
    assert.equal(await w.call("count"), 1);
  });

  test("WasmSandbox: create({ snapshot }) sandboxes are independent", async () => {
    const seenA: number[] = [];
    const seenB: number[] = [];
    await using w = await create({ module: fixture("state"), hostFunctions: imports() });
    await w.call("bump");
    await using snap = await w.snapshot();
    await using a = await create({ snapshot: snap, hostFunctions: imports(seenA) });
    await using b = await create({ snapshot: snap, hostFunctions: imports(seenB) });
    assert.equal(a.fromCache, false);
    assert.equal(await a.call("bump"), 2);
    assert.equal(await a.call("bump"), 3);
    await a.call("store", 8, 42);
    assert.equal(await b.call("bump"), 2);
    assert.equal(await b.call("load", 8), 0);
    assert.equal(await w.call("count"), 1);
    assert.deepEqual([seenA, seenB], [[2, 3], [2]]);
    // b can be restored to the snapshot a came from, too.
    await b.restore(snap);
    assert.equal(await b.call("count"), 1);
  });

  test("WasmSandbox: snapshot typed errors", async () => {
    await using w = await create({ module: fixture("state"), hostFunctions: imports() });
    await using other = await create({ module: fixture("fib") });
    await using fuelled = await create({
      module: fixture("state"),
      hostFunctions: imports(),
      fuel: 1000,
    });
    await using snap = await w.snapshot();
    // Another module, the same module with other options.
    await assert.rejects(() => other.restore(snap), SnapshotMismatchError);
    await assert.rejects(() => fuelled.restore(snap), SnapshotMismatchError);
    // Host functions that do not satisfy the module's imports.
    await assert.rejects(() => create({ snapshot: snap }), SnapshotMismatchError);
    await assert.rejects(
      () =>
        create({
          snapshot: snap,
          hostFunctions: { env: { seen: { params: ["i64"], result: "void", fn: () => {} } } },
        }),
      SnapshotMismatchError,
    );
    // A native snapshot is not a Wasm snapshot.
    await using nativeSb = await Sandbox.create({ guest: TESTGUEST });
    await using native = await nativeSb.snapshot();
    await assert.rejects(
      () => w.restore(native as unknown as WasmSnapshot),
      SnapshotMismatchError,
    );
    // Disposed.
    const gone = await w.snapshot();
    await gone.dispose();
    assert.equal(gone.disposed, true);
    await assert.rejects(() => w.restore(gone), SnapshotDisposedError);
    await assert.rejects(
      () => create({ snapshot: gone, hostFunctions: imports() }),
      SnapshotDisposedError,
    );
  });

  test("WasmSandbox: the module cache (hit, cache: false, other options)", async () => {
    await WasmSandbox.clearCache();
    const bytes = fixtureBytes("state");
    const before = WasmSandbox.cacheStats();
    await using first = await create({ module: bytes, hostFunctions: imports() });
    assert.equal(first.fromCache, false);
    await first.call("bump"); // state after the snapshot does not leak into the cache
    const initRuns = first.stats();
    const seen: number[] = [];
    await using second = await create({ module: bytes, hostFunctions: imports(seen) });
    assert.equal(second.fromCache, true);
    assert.equal(await second.call("bump"), 1);
    assert.deepEqual(seen, [1]);
    // A hit runs no load/instantiate: the new VM has not run the guest before its first call.
    assert.ok(second.stats().runs < initRuns.runs, JSON.stringify([second.stats(), initRuns]));
    let s = WasmSandbox.cacheStats();
    assert.deepEqual([s.hits - before.hits, s.misses - before.misses], [1, 1]);
    // The same bytes from a path: a hit too (the key is the bytes).
    await using third = await create({
      module: fixture("state"),
      hostFunctions: imports(),
    });
    assert.equal(third.fromCache, true);
    // cache: false bypasses it.
    await using fresh = await create({
      module: bytes,
      hostFunctions: imports(),
      cache: false,
    });
    assert.equal(fresh.fromCache, false);
    // Other options: a miss.
    await using fuelled = await create({
      module: bytes,
      hostFunctions: imports(),
      fuel: 1_000_000,
    });
    assert.equal(fuelled.fromCache, false);
    s = WasmSandbox.cacheStats();
    assert.deepEqual([s.hits - before.hits, s.misses - before.misses], [2, 2]);
    // A hit still checks the host functions against the module.
    await assert.rejects(() => create({ module: bytes }), /env\.seen/);
    // A restore between a cached and a fresh sandbox of the same module and options works.
    await using snap = await fresh.snapshot();
    await second.restore(snap);
    assert.equal(await second.call("count"), 0);
    await WasmSandbox.clearCache();
    assert.equal(WasmSandbox.cacheStats().entries, 0);
  });

  test("WasmSandbox: a cache hit's VM, once disposed, is restored and serves the next hit", async () => {
    await WasmSandbox.clearCache();
    const { liveVms } = globalStats();
    const bytes = fixtureBytes("state");
    const first = await create({ module: bytes, hostFunctions: imports() }); // the miss
    const seenB: number[] = [];
    const b = await create({ module: bytes, hostFunctions: imports(seenB) });
    assert.equal(b.fromCache, true);
    assert.equal(await b.call("bump"), 1);
    await b.call("store", 64, 1234);
    assert.equal(await b.call("grow"), 1);
    await b.dispose();
    assert.equal(recycledCount(), 1);
    assert.equal(b.disposed, true);
    // The old handle reaches nothing, whoever has the VM now.
    await assert.rejects(() => b.call("count"), SandboxDisposedError);
    await assert.rejects(() => b.snapshot(), SandboxDisposedError);
    assert.throws(() => b.stats(), SandboxDisposedError);
    const seenC: number[] = [];
    await using c = await create({ module: bytes, hostFunctions: imports(seenC) });
    assert.equal(recycledCount(), 0, "the hit took the idle VM");
    assert.deepEqual(c.stats(), { ioctls: 0, exits: 0, runs: 0, logsSkipped: 0 });
    b.interrupt(); // a no-op: not c's call
    // Nothing b did is left, and c's host functions are the ones called.
    assert.equal(await c.call("count"), 0);
    assert.equal(await c.call("load", 64), 0);
    assert.equal(await c.memorySize(), 65536);
    assert.equal(await c.call("bump"), 1);
    assert.deepEqual([seenB, seenC], [[1], [1]]);
    assert.ok(c.stats().runs >= 4, JSON.stringify(c.stats()));
    // A poisoned sandbox is not kept.
    await (await create({ module: fixture("fib") })).dispose(); // fib's miss
    const d = await create({ module: fixture("fib") });
    assert.equal(d.fromCache, true);
    await assert.rejects(() => d.callWithOptions({ timeoutMs: 1 }, "checksum", 2_000_000_000));
    assert.equal(d.poisoned, true);
    await d.dispose();
    assert.equal(d.poisoned, true);
    assert.equal(recycledCount(), 0);
    // Nor one disposed with a call in progress (the call is stopped).
    const e = await create({ module: bytes, hostFunctions: imports() });
    const running = e.call("bump");
    await e.dispose();
    await running.catch(() => {});
    assert.equal(recycledCount(), 0);
    await first.dispose();
    await c.dispose();
    assert.equal(recycledCount(), 1);
    await WasmSandbox.clearCache();
    assert.equal(recycledCount(), 0);
    assert.equal(globalStats().liveVms, liveVms);
  });

  test("WasmSandbox: recycling keeps its bounds under concurrent disposes, and no owner's timeout", async () => {
    await WasmSandbox.clearCache();
    const { liveVms } = globalStats();
    const fib = fixtureBytes("fib");
    const miss = await create({ module: fib });
    const hits = await Promise.all([0, 1, 2, 3, 4, 5].map(() => create({ module: fib })));
    assert.ok(hits.every((h) => h.fromCache));
    await Promise.all(hits.map((h) => h.dispose()));
    assert.equal(recycledCount(), 2, "at most 2 idle VMs per key");
    // A hit that set a 1 ms timeout hands its VM on; the next owner set none, and its call
    // waits 20 ms in a host function: certain to outlast the first owner's timeout.
    const state = fixtureBytes("state");
    const slowSeen = {
      env: {
        seen: {
          params: ["i32"],
          result: "void",
          fn: () => new Promise<undefined>((r) => setTimeout(() => r(undefined), 20)),
        },
      },
    } as const;
    await (await create({ module: state, hostFunctions: imports() })).dispose(); // the miss
    const hurried = await create({ module: state, hostFunctions: slowSeen, timeoutMs: 1 });
    await hurried.dispose();
    await using patient = await create({ module: state, hostFunctions: slowSeen });
    assert.equal(recycledCount(), 2, "fib's two, state's one taken again");
    assert.equal(await patient.call("bump"), 1);
    await miss.dispose();
    await patient.dispose();
    await WasmSandbox.clearCache();
    assert.equal(recycledCount(), 0);
    assert.equal(globalStats().liveVms, liveVms);
  });

  test("WasmSandbox: a recycled VM writes WASI output to its new owner's sinks", async () => {
    await WasmSandbox.clearCache();
    const decoder = new TextDecoder();
    const outs = ["", "", ""];
    const open = (i: number) =>
      create({
        module: fixture("wasi_hello"),
        wasi: {
          args: ["hello"],
          randomSeed: new Uint8Array(32).fill(3),
          stdout: (d: Uint8Array) => void (outs[i] += decoder.decode(d)),
        },
      });
    await (await open(0)).dispose(); // the miss
    const hit = await open(1);
    assert.equal(hit.fromCache, true);
    assert.deepEqual(await hit.runWasi(), { exitCode: 7 });
    await hit.dispose();
    assert.equal(recycledCount(), 1);
    await using again = await open(2);
    assert.equal(recycledCount(), 0);
    assert.deepEqual(await again.runWasi(), { exitCode: 7 });
    assert.match(outs[2], /^hello from wasi, argc=1\n/);
    // The same program, the same seed: the same output, each in its own sink.
    assert.equal(outs[2], outs[1]);
    assert.equal(outs[0], "");
    await again.dispose();
    await WasmSandbox.clearCache();
  });

  test("WasmSandboxPool: runs start afresh; exhaustion, bounded wait, AbortSignal", async () => {
    await WasmSandbox.clearCache();
    await using pool = await createPool({
      module: fixture("state"),
      hostFunctions: imports(),
      size: 2,
      maxWaiting: 1,
    });
    assert.equal(pool.size, 2);
    for (let i = 0; i < 3; i++) {
      const results = await Promise.all([0, 1].map(() => pool.run((w) => w.call("bump"))));
      assert.deepEqual(results, [1, 1]);
    }
    // Every run bumps from the snapshot's 0, the waiter's too (it gets a restored member).
    const { busy, waited } = await checkPoolBounds(pool, (w) => w.call("bump"));
    assert.deepEqual([...busy, waited], [1, 1, 1]);
    // A trap or a poisoned sandbox comes back clean.
    await assert.rejects(() => pool.run((w) => w.call("load", 1 << 20)));
    assert.equal(await pool.run((w) => w.call("count")), 0);
    await pool.dispose();
    await assert.rejects(() => pool.run(() => 1), SandboxError);
    await WasmSandbox.clearCache();
  });

  test("WasmSandboxPool: 1,000 runs leak no fd, mapping, VM or snapshot", async () => {
    await WasmSandbox.clearCache();
    const cycle = async (runs: number) => {
      await using pool = await createPool({
        module: fixture("state"),
        hostFunctions: imports(),
        size: 4,
        cache: false,
      });
      for (let i = 0; i < runs; i++) {
        const r = await Promise.all([0, 1, 2, 3].map(() => pool.run((w) => w.call("bump"))));
        assert.deepEqual(r, [1, 1, 1, 1]);
      }
    };
    await cycle(2); // warms up what the process opens once (the runtime guest's file, ...)
    const fds = openFdCount();
    const maps = guestMappingCount();
    const { liveVms, liveSnapshots } = globalStats();
    await cycle(250); // 4 runs at a time: 1,000 runs (the count)
    assert.equal(openFdCount(), fds);
    assert.equal(guestMappingCount(), maps);
    assert.deepEqual(
      [globalStats().liveVms, globalStats().liveSnapshots],
      [liveVms, liveSnapshots],
    );
  });
}
