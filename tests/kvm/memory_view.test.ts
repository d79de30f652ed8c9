// The host's views of a sandbox's memory started from a snapshot cover what the host reads and
// writes (the low region and the first 64 KiB of each I/O buffer), not all of it: V8 counts a
// view's length as external memory and collects garbage as that grows, which a view of all
// 138 MiB did at about every start (issue 20's cold create; `MicroVm.memoryView`); and a Wasm
// memory's grow views only the pages `hl_wasm_map` maps, not all memory. Counts V8's collections in a child
// process (`--trace-gc`), never times.
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { QUICKJS_BUILT } from "./_js.ts";
import { causedBetweenMarks, runGcChild } from "./_gc_child.ts";

const STARTS = 8;

// Without the QuickJS module the test is ignored, which tools/test.sh counts as a failure under
// HL_REQUIRE_KVM=1 (CI): it cannot pass without running.
(QUICKJS_BUILT ? kvmTest : Deno.test.ignore)(
  "memory views: starts from a snapshot do not each cost a garbage collection",
  async () => {
    const { gcs, result } = await runGcChild("./_view_child.ts", "--expose-gc", [String(STARTS)], {
      HL_START_SNAPSHOTS: "0",
    });
    const caused = causedBetweenMarks(gcs);
    // Views of all the memory: 7-8 collections for 8 starts here; views up to the heap: 1-2.
    assert.ok(caused.length <= STARTS / 2, caused.join("\n"));
    // The memory past the view is still the host's to zero when the guest's Wasm memory grows
    // (`hl_wasm_map`): 24 MiB more reads as zeros.
    assert.deepEqual(result, { small: Array(STARTS).fill(4096), big: 24 << 20 });
  },
);

const GROWS = 40;

kvmTest("memory views: a Wasm memory's grows do not each cost a garbage collection", async () => {
  const { gcs, result } = await runGcChild("./_grow_child.ts", "--expose-gc", [String(GROWS)]);
  const caused = causedBetweenMarks(gcs);
  // hl_wasm_map viewing all guest memory for each grow: a full collection every few grows; a view
  // of the pages it maps: none.
  assert.ok(caused.length <= 2, caused.join("\n"));
  assert.deepEqual(result, { pages: 1 + GROWS });
});
