/**
 * Idle sandboxes hold no thread of ours (issue 19, docs/design.md "Threading"): a vCPU left idle
 * is detached from its worker thread, which goes back to a bounded pool; the next request
 * re-attaches it to whichever worker is free. Counts, not timings: threads named `hl-vcpu-*`
 * (a worker holding a vCPU is named after its VM, an idle one `hl-vcpu-idle`).
 */
import assert from "node:assert/strict";
import { Sandbox } from "../../src/sandbox.ts";
import { TimeoutError } from "../../src/errors.ts";
import { globalStats, teardownWait } from "../../src/ffi/vm.ts";
import { StartSnapshotCache } from "../../src/start_cache.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";
import { MAX_IDLE_WORKERS, untilDetached } from "./_vcpu_threads.ts";

const LIVE = 40;

kvmTest("idle sandboxes hold no thread, and answer again on whichever worker is free", async () => {
  const guest = await Deno.readFile(TESTGUEST);
  // The per-image start snapshots and their recycled VMs (src/start_cache.ts, src/recycle.ts) are
  // a process-wide cache: emptied on both sides of the count.
  await StartSnapshotCache.default.clear();
  const vmsBefore = globalStats().liveVms;
  const live: Sandbox[] = [];
  try {
    for (let i = 0; i < LIVE; i++) {
      const s = await Sandbox.create({ guest, heapSize: 1 << 20 });
      assert.equal(await s.call("add", i, 1), i + 1);
      live.push(s);
    }
    const idle = await untilDetached();
    assert.equal(idle.holding, 0, "no thread holds an idle sandbox's vCPU");
    assert.ok(
      idle.holding + idle.idle <= MAX_IDLE_WORKERS,
      `${LIVE} idle sandboxes, ${JSON.stringify(idle)} vCPU threads (≤ ${MAX_IDLE_WORKERS})`,
    );
    // Each answers again (re-attached), synchronously and asynchronously, and a stop still
    // reaches a re-attached vCPU.
    for (let i = 0; i < LIVE; i++) {
      assert.equal(await live[i].call("add", i, 2), i + 2);
      assert.equal(live[i].callSync("add", i, 3), i + 3);
    }
    await untilDetached();
    await assert.rejects(live[0].callWithOptions({ timeoutMs: 100 }, "spin"), TimeoutError);
    assert.equal(await live[1].call("add", 1, 1), 2);
  } finally {
    for (const s of live) await s.dispose();
  }
  // Disposing detached sandboxes drops their vCPUs (on the disposing side: no worker is woken).
  const after = await untilDetached();
  assert.equal(after.holding, 0);
  await StartSnapshotCache.default.clear();
  teardownWait();
  assert.equal(globalStats().liveVms, vmsBefore);
});
