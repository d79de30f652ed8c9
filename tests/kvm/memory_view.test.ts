// The host's views of a sandbox's memory started from a snapshot cover what the host reads and
// writes (the low region and the first 64 KiB of each I/O buffer), not all of it: V8 counts a
// view's length as external memory and collects garbage as that grows, which a view of all
// 138 MiB did at about every start (issue 20's cold create; `MicroVm.memoryView`); and a Wasm
// memory's grow views only the pages `hl_wasm_map` maps, not all memory. Counts V8's collections in a child
// process (`--trace-gc`), never times.
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { QUICKJS_BUILT } from "./_js.ts";

const STARTS = 8;

kvmTest("memory views: starts from a snapshot do not each cost a garbage collection", async () => {
  if (!QUICKJS_BUILT) return;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      "--v8-flags=--trace-gc,--expose-gc",
      new URL("./_view_child.ts", import.meta.url).pathname,
      String(STARTS),
    ],
    env: { HL_START_SNAPSHOTS: "0" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.success, true, new TextDecoder().decode(out.stderr));
  // V8's lines, in its order: the child's full collection ("testing") before the starts, its
  // scavenge ("testing") after them; between them, the collections the starts caused.
  const gcs = stdout.split("\n").filter((l) => / ms: (Scavenge|Mark-Compact|Incremental)/.test(l));
  const [from, to] = [0, 1].map((k) => gcs.filter((l) => l.includes("testing"))[k]);
  assert.ok(from !== undefined && to !== undefined, stdout);
  const caused = gcs.slice(gcs.indexOf(from) + 1, gcs.indexOf(to)).filter((l) =>
    l.includes("Mark-Compact") || l.includes("external memory pressure")
  );
  // Views of all the memory: 7-8 collections for 8 starts here; views up to the heap: 1-2.
  assert.ok(caused.length <= STARTS / 2, caused.join("\n"));
  // The memory past the view is still the host's to zero when the guest's Wasm memory grows
  // (`hl_wasm_map`): 24 MiB more reads as zeros.
  const result = stdout.split("\n").findLast((l) => l.startsWith("{"));
  assert.deepEqual(JSON.parse(result!), { small: Array(STARTS).fill(4096), big: 24 << 20 });
});

const GROWS = 40;

kvmTest("memory views: a Wasm memory's grows do not each cost a garbage collection", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      "--v8-flags=--trace-gc,--expose-gc",
      new URL("./_grow_child.ts", import.meta.url).pathname,
      String(GROWS),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.success, true, new TextDecoder().decode(out.stderr));
  const gcs = stdout.split("\n").filter((l) => / ms: (Scavenge|Mark-Compact|Incremental)/.test(l));
  const [from, to] = [0, 1].map((k) => gcs.filter((l) => l.includes("testing"))[k]);
  assert.ok(from !== undefined && to !== undefined, stdout);
  const caused = gcs.slice(gcs.indexOf(from) + 1, gcs.indexOf(to)).filter((l) =>
    l.includes("Mark-Compact") || l.includes("external memory pressure")
  );
  // hl_wasm_map viewing all guest memory for each grow: a full collection every few grows; a view
  // of the pages it maps: none.
  assert.ok(caused.length <= 2, caused.join("\n"));
  const result = stdout.split("\n").findLast((l) => l.startsWith("{"));
  assert.deepEqual(JSON.parse(result!), { pages: 1 + GROWS });
});
