/**
 * Recycled VMs for `Sandbox.create({ snapshot })` (src/recycle.ts, issue 19): a disposed sandbox
 * from a snapshot is restored in place and kept idle; the next create from that snapshot takes
 * it. The next tenant sees the snapshot's state (not the last tenant's memory or registers), the
 * old handle is dead (a typed error), the bounds hold, and nothing is left once the snapshot is
 * released (fds, mappings, threads).
 */

import assert from "node:assert/strict";
import { ArgumentError, guests, Sandbox, SandboxDisposedError, type Snapshot } from "../../mod.ts";
import { MAX_IDLE_VMS, MAX_IDLE_VMS_PER_SNAPSHOT, snapshotVms } from "../../src/recycle.ts";
import { stateOf } from "../../src/snapshot.ts";
import { guestMappingCount, kvmTest, openFdCount, threadCount } from "./_kvm.ts";

async function counterSnapshot(): Promise<Snapshot> {
  await using base = await Sandbox.create({ guest: guests.testguest, startSnapshot: false });
  assert.equal(await base.call("counter"), 1n);
  return await base.snapshot();
}

kvmTest("a recycled VM: the next tenant sees the snapshot's state and a new handle", async () => {
  await using snap = await counterSnapshot();
  await using fresh = await Sandbox.create({ snapshot: snap, recycle: false });
  const sse = await fresh.call("get_sse");
  const kept = snapshotVms.counters.kept;
  const reused = snapshotVms.counters.reused;

  const a = await Sandbox.create({ snapshot: snap });
  assert.equal(await a.call("counter"), 2n);
  assert.equal(await a.call("counter"), 3n);
  await a.call("set_sse", 0x1122334455667788n, 0x1f80 | 0x6000);
  assert.notDeepEqual(await a.call("get_sse"), sse);
  await a.dispose();
  assert.equal(snapshotVms.counters.kept, kept + 1, "a's VM was kept");
  assert.equal(snapshotVms.countOf(stateOf(snap)), 1);

  await using b = await Sandbox.create({ snapshot: snap });
  assert.equal(snapshotVms.counters.reused, reused + 1, "b took a's VM");
  assert.equal(snapshotVms.countOf(stateOf(snap)), 0);
  // The snapshot's memory and registers, not a's.
  assert.equal(await b.call("counter"), 2n);
  assert.deepEqual(await b.call("get_sse"), sse);
  assert.equal(b.stats().exits, 2, "b's counters are its own");
  // a's handle reaches nothing: a typed error, and its dispose stays a no-op.
  await assert.rejects(a.call("counter"), SandboxDisposedError);
  assert.throws(() => a.callSync("counter"), SandboxDisposedError);
  assert.throws(() => a.stats(), SandboxDisposedError);
  await assert.rejects(a.snapshot(), SandboxDisposedError);
  await a.dispose();
  assert.ok(a.disposed);
  assert.equal(await b.call("counter"), 3n);
});

kvmTest("recycled VMs: bounds per snapshot and in all; poisoned or opted-out VMs go", async () => {
  const snaps = await Promise.all([1, 2, 3, 4, 5].map(() => counterSnapshot()));
  try {
    for (const snap of snaps) {
      const made = [];
      for (let i = 0; i < 4; i++) made.push(await Sandbox.create({ snapshot: snap }));
      for (const sb of made) await sb.dispose();
      assert.ok(snapshotVms.countOf(stateOf(snap)) <= MAX_IDLE_VMS_PER_SNAPSHOT);
      assert.ok(snapshotVms.count <= MAX_IDLE_VMS);
    }
    assert.equal(snapshotVms.countOf(stateOf(snaps[4])), MAX_IDLE_VMS_PER_SNAPSHOT);
    assert.equal(snapshotVms.count, MAX_IDLE_VMS, "the oldest snapshots' VMs made room");
    assert.equal(snapshotVms.countOf(stateOf(snaps[0])), 0);

    const kept = snapshotVms.counters.kept;
    const poisoned = await Sandbox.create({ snapshot: snaps[0] });
    await assert.rejects(poisoned.call("panic", "boom"));
    assert.ok(poisoned.poisoned);
    await poisoned.dispose();
    const optedOut = await Sandbox.create({ snapshot: snaps[0], recycle: false });
    await optedOut.dispose();
    assert.equal(snapshotVms.counters.kept, kept, "neither was kept");
  } finally {
    for (const snap of snaps) await snap.dispose();
  }
  assert.equal(snapshotVms.count, 0, "released snapshots' VMs are destroyed");
});

kvmTest("recycled VMs: nothing is left once the snapshot is released", async () => {
  const fds = openFdCount();
  const mappings = guestMappingCount();
  const threads = threadCount();
  const snap = await counterSnapshot();
  for (let round = 0; round < 3; round++) {
    const made = [];
    for (let i = 0; i < 3; i++) made.push(await Sandbox.create({ snapshot: snap }));
    for (const sb of made) assert.equal(await sb.call("counter"), 2n);
    for (const sb of made) await sb.dispose();
  }
  assert.equal(snapshotVms.countOf(stateOf(snap)), MAX_IDLE_VMS_PER_SNAPSHOT);
  await snap.dispose();
  assert.equal(snapshotVms.countOf(stateOf(snap, true)), 0);
  assert.equal(openFdCount(), fds);
  assert.equal(guestMappingCount(), mappings);
  assert.ok(threadCount() <= threads + 1);
});

kvmTest(
  "recycle must be a boolean: anything else is an ArgumentError before a VM is made",
  async () => {
    await using snap = await counterSnapshot();
    await assert.rejects(
      async () => await Sandbox.create({ snapshot: snap, recycle: "yes" as unknown as boolean }),
      (e) => e instanceof ArgumentError && /recycle must be a boolean/.test(e.message),
    );
  },
);
