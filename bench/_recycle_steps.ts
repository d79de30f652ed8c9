/**
 * Issue 19: the recycled-VM paths by step at 10 and 1,000 live sandboxes (from one snapshot, each
 * having answered a call), 200 operations each, medians: create / first noop call / dispose of
 * `Sandbox.create({ snapshot })` (a recycled VM), a cold `Sandbox.create` (from the image's start
 * snapshot, a recycled VM), and `create({ snapshot, recycle: false })` (a new VM), in this order
 * at each level. The scale bench's wall-clock rows interleave the floor and the new-VM paths,
 * whose `KVM_CREATE_VM` and `munmap`s walk every live VM; here each path runs alone.
 *
 *   deno run -A bench/_recycle_steps.ts
 */
import { Sandbox } from "../src/sandbox.ts";
import { teardownWait } from "../src/ffi/vm.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const guest = await Deno.readFile(TESTGUEST);
const base = await Sandbox.create({ guest, heapSize: 1 << 20 });
await base.call("noop");
const snapshot = await base.snapshot();
const live: Sandbox[] = [];
const median = (x: number[]) => [...x].sort((p, q) => p - q)[x.length >> 1];

async function steps(options: Parameters<typeof Sandbox.create>[0]): Promise<string> {
  const create: number[] = [], call: number[] = [], dispose: number[] = [];
  for (let i = 0; i < 200; i++) {
    let t = performance.now();
    const s = await Sandbox.create(options);
    create.push(performance.now() - t);
    t = performance.now();
    await s.call("noop");
    call.push(performance.now() - t);
    t = performance.now();
    await s.dispose();
    dispose.push(performance.now() - t);
    teardownWait();
  }
  return [create, call, dispose].map((x) => (median(x) * 1000).toFixed(0)).join(" / ");
}

for (const level of [10, 1000]) {
  while (live.length < level) {
    const s = await Sandbox.create({ snapshot });
    await s.call("noop");
    live.push(s);
  }
  console.log(
    `${level} live, create / call / dispose µs: from a snapshot (recycled VM) ${await steps({
      snapshot,
    })}; cold (start snapshot, recycled VM) ${await steps({ guest, heapSize: 1 << 20 })}; ` +
      `from a snapshot, new VM ${await steps({ snapshot, recycle: false })}`,
  );
}
for (const s of live) await s.dispose();
await snapshot.dispose();
await base.dispose();
