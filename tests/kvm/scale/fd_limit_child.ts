/**
 * Child of scale_limits.test.ts, run under a low RLIMIT_NOFILE: creates sandboxes until a create
 * fails, prints what it failed with, disposes a few and creates again. One JSON line on stdout.
 */
import { ResourceLimitError, Sandbox, StartSnapshotCache } from "../../../mod.ts";
import { globalStats } from "../../../src/ffi/vm.ts";
import { TESTGUEST } from "../../_guests.ts";

const guest = await Deno.readFile(TESTGUEST);
const live: Sandbox[] = [];
let failure: unknown;
while (live.length < 10_000) {
  try {
    live.push(await Sandbox.create({ guest, heapSize: 1 << 20 }));
  } catch (e) {
    failure = e;
    break;
  }
}
const before = globalStats().liveVms;
for (const s of live.splice(0, 4)) await s.dispose();
const again = await Sandbox.create({ guest, heapSize: 1 << 20 });
const answer = await again.call("add", 2, 3);
await again.dispose();
for (const s of live) await s.dispose();
// The image's start snapshot and the VMs recycled for it are the process-wide cache's.
await StartSnapshotCache.default.clear();
console.log(JSON.stringify({
  created: before,
  name: (failure as Error | undefined)?.name,
  isLimit: failure instanceof ResourceLimitError,
  limit: failure instanceof ResourceLimitError ? failure.limit : undefined,
  message: (failure as Error | undefined)?.message,
  answer,
  liveAfter: globalStats().liveVms,
}));
