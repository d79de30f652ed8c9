import assert from "node:assert/strict";
import {
  GuestPanicError,
  Sandbox,
  SandboxPoisonedError,
  Snapshot,
  SnapshotDisposedError,
  SnapshotMismatchError,
  StartSnapshotCache,
  TimeoutError,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { TESTGUEST } from "../_guests.ts";
import { guestMappingCount, kvmTest, openFdCount } from "./_kvm.ts";

const double = {
  double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x },
} as const;

function sse(bytes: Uint8Array): { xmm: bigint; mxcsr: number } {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { xmm: v.getBigUint64(0, true), mxcsr: v.getUint32(8, true) };
}

/** Mutates a global, the heap and SSE state; returns what the guest then reports. */
async function mutate(sb: Sandbox, i: number) {
  const counter = await sb.call("counter");
  const heap = await sb.call("heap_push", BigInt(1000 + i));
  await sb.call("set_sse", 0x1111_0000n + BigInt(i), 0x1f80 | ((i % 4) << 13));
  return { counter, heap, sse: sse(await sb.call("get_sse") as Uint8Array) };
}

kvmTest("Snapshot: restore brings back globals, heap and FPU/SSE state", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: double });
  await sb.call("counter");
  await sb.call("heap_push", 7n);
  await sb.call("set_sse", 0xdead_beef_cafe_f00dn, 0x3f80); // round toward zero
  const before = sse(await sb.call("get_sse") as Uint8Array);
  assert.deepEqual(before, { xmm: 0xdead_beef_cafe_f00dn, mxcsr: 0x3f80 });
  await using snap = await sb.snapshot();
  assert.ok(snap instanceof Snapshot);
  assert.ok(snap.dataPages > 0 && snap.dataPages * 4096 < snap.memorySize);
  for (let i = 0; i < 3; i++) {
    const after = await mutate(sb, i);
    assert.equal(after.counter, 2n);
    assert.equal(after.heap, (2n << 32n) | BigInt(7 + 1000 + i));
    assert.equal(after.sse.xmm, 0x1111_0000n + BigInt(i));
    await sb.restore(snap);
    // Everything is back: SSE first (a call would not touch XMM15/MXCSR anyway).
    assert.deepEqual(sse(await sb.call("get_sse") as Uint8Array), before);
    assert.equal(await sb.call("counter"), 2n);
    await sb.restore(snap);
    assert.equal(await sb.call("heap_push", 1n), (2n << 32n) | 8n);
    await sb.restore(snap);
  }
  assert.equal(await sb.call("call_host", "double", 21), 42);
});

kvmTest("Snapshot: Sandbox.create({ snapshot }) starts copy-on-write copies", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: double });
  await sb.call("counter");
  await sb.call("heap_push", 5n);
  await using snap = await sb.snapshot();
  await using a = await Sandbox.create({ snapshot: snap, hostFunctions: double });
  await using b = await Sandbox.create({ snapshot: snap, hostFunctions: double });
  assert.deepEqual(a.functions, sb.functions);
  assert.equal(await a.call("counter"), 2n);
  assert.equal(await a.call("counter"), 3n);
  assert.equal(await b.call("counter"), 2n);
  assert.equal(await sb.call("counter"), 2n);
  assert.equal(await b.call("heap_push", 1n), (2n << 32n) | 6n);
  assert.equal(await a.call("call_host", "double", 4), 8);
  // A copy restores to the snapshot it came from, and a sibling's snapshot restores too.
  await a.restore(snap);
  assert.equal(await a.call("counter"), 2n);
  await using snapA = await a.snapshot();
  await b.restore(snapA);
  assert.equal(await b.call("counter"), 3n);
  // Disposing the snapshot leaves the sandboxes made from it working.
  await snap.dispose();
  assert.equal(snap.disposed, true);
  assert.equal(await a.call("add", 1, 2), 3);
  await assert.rejects(() => Sandbox.create({ snapshot: snap }), SnapshotDisposedError);
  await assert.rejects(() => a.restore(snap), SnapshotDisposedError);
});

kvmTest("Snapshot: typed errors for another layout, host functions, guest", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: double });
  await using big = await Sandbox.create({ guest: TESTGUEST, heapSize: 16 << 20 });
  await using snap = await sb.snapshot();
  await assert.rejects(() => big.restore(snap), SnapshotMismatchError);
  await assert.rejects(() => Sandbox.create({ snapshot: snap }), /double is missing/);
  await assert.rejects(
    () =>
      Sandbox.create({
        snapshot: snap,
        hostFunctions: { double: { params: ["i64"], result: "i64", fn: (x: bigint) => x } },
      }),
    SnapshotMismatchError,
  );
  await assert.rejects(
    () =>
      Sandbox.create({
        snapshot: snap,
        hostFunctions: { ...double, other: { params: [], result: "void", fn: () => {} } },
      }),
    /other is not in the snapshot/,
  );
  // Another guest image with the same layout: the image hash differs.
  const bytes = await Deno.readFile(TESTGUEST);
  const patched = new Uint8Array([...bytes, 0]);
  await using other = await Sandbox.create({ guest: patched, hostFunctions: double });
  await assert.rejects(() => other.restore(snap), /another guest image/);
  await assert.rejects(
    () => sb.restore({} as Snapshot),
    SnapshotMismatchError,
  );
});

kvmTest("Snapshot: restore clears poisoning", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  await using snap = await sb.snapshot();
  await assert.rejects(() => sb.call("panic", "boom"), GuestPanicError);
  assert.equal(sb.poisoned, true);
  await assert.rejects(() => sb.call("add", 1, 2), SandboxPoisonedError);
  await assert.rejects(() => sb.snapshot(), SandboxPoisonedError);
  await sb.restore(snap);
  assert.equal(sb.poisoned, false);
  assert.equal(await sb.call("add", 1, 2), 3);
  // A timed-out guest too (the sticky stop is cleared by the next call).
  await assert.rejects(() => sb.callWithOptions({ timeoutMs: 20 }, "spin"));
  await sb.restore(snap);
  assert.equal(await sb.call("counter"), 1n);
});

kvmTest("Snapshot: 1,000 restores and 100 creates leak no fd, mapping or handle", async () => {
  // The per-image start snapshots are a process-wide cache (src/start_cache.ts): emptied on both
  // sides of the count.
  await StartSnapshotCache.default.clear();
  const fds = openFdCount();
  const maps = guestMappingCount();
  const { liveVms, liveSnapshots } = globalStats();
  {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    await using snap = await sb.snapshot();
    for (let i = 0; i < 1000; i++) {
      assert.equal(await sb.call("counter"), 1n);
      await sb.restore(snap);
    }
    for (let i = 0; i < 100; i++) {
      await using c = await Sandbox.create({ snapshot: snap });
      assert.equal(await c.call("counter"), 1n);
    }
    for (let i = 0; i < 20; i++) {
      await using s = await sb.snapshot();
      await sb.restore(s);
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

kvmTest(
  "a host function that answers after its call was stopped never writes into a later call",
  async () => {
    // No delays: `late` answers only once `slow` (the next call's host function) lets it, and
    // `slow` answers only after a macrotask turn, when `late`'s answer has been handled.
    let letLateAnswer!: () => void;
    const lateMayAnswer = new Promise<void>((r) => letLateAnswer = r);
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      hostFunctions: {
        // 1,000 bytes of 0xab: a frame reaching past offset 512 of the input buffer.
        late: {
          params: ["bytes"],
          result: "bytes",
          fn: async () => (await lateMayAnswer, new Uint8Array(1000).fill(0xab)),
        },
        slow: {
          params: ["i32"],
          result: "i32",
          fn: async (x: number) => {
            letLateAnswer();
            await new Promise((r) => setTimeout(r, 0));
            return x + 1;
          },
        },
      },
    });
    await using snap = await sb.snapshot();
    const inputAddr = await sb.call("read_addr", 0x1000n + 0x10n) as bigint; // PEB input_addr
    await assert.rejects(
      () =>
        sb.callWithOptions({ timeoutMs: 5 }, "call_host_value_bytes", "late", new Uint8Array(1)),
      TimeoutError,
    );
    await sb.restore(snap); // clears the poisoning: the input buffer is the snapshot's again
    // `late` answers while this call waits for `slow`.
    assert.equal(await sb.call("call_host", "slow", 1), 2);
    // Nothing of the late answer's frame is in the input buffer (only this call's short frame).
    assert.equal(await sb.call("read_addr", inputAddr + 512n), 0n);
  },
);

kvmTest(
  "Snapshot: a create after a dispose starts from the snapshot on the mapping it left",
  async () => {
    // A disposed sandbox's guest memory is kept for the next create from its snapshot once its
    // private pages are copied back (docs/design.md, "Snapshot spares"); above 512 of them it is
    // unmapped instead. Either way the next sandbox must start exactly from the snapshot.
    await using base = await Sandbox.create({ guest: TESTGUEST, heapSize: 8 << 20 });
    await base.call("heap_push", 1n);
    await using snap = await base.snapshot();
    const fresh = async () => {
      // Not a recycled VM (src/recycle.ts): this is the path without them, whose dispose unmaps.
      const sb = await Sandbox.create({ snapshot: snap, recycle: false });
      return { sb, start: [await sb.call("counter"), await sb.call("heap_push", 7n)] };
    };
    const want = [1n, (2n << 32n) | 8n];
    // The first copy-back maps the snapshot's read-only view (one per snapshot): before counting.
    await (await fresh()).sb.dispose();
    for (const pages of [0, 300, 700, 300]) {
      const { sb, start } = await fresh();
      assert.deepEqual(start, want);
      for (let i = 0; i < 3; i++) await mutate(sb, i);
      if (pages > 0) assert.equal(await sb.call("dirty_pages", pages), pages);
      const maps = guestMappingCount(); // its memory and kvm_run included
      await sb.dispose();
      // Kept (one mapping fewer: kvm_run) or unmapped with kvm_run (two fewer).
      assert.equal(guestMappingCount(), maps - (pages > 512 ? 2 : 1), `${pages} pages written`);
    }
    const { sb, start } = await fresh();
    assert.deepEqual(start, want);
    assert.deepEqual(
      sse(await sb.call("get_sse") as Uint8Array),
      sse(await base.call("get_sse") as Uint8Array),
    );
    await sb.dispose();
  },
);
