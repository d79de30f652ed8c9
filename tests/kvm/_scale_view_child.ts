// Child of memory_view_scale.test.ts, run with `--v8-flags=--trace-gc,...` (V8 prints each garbage
// collection to stdout): N (the first argument) sandboxes from one snapshot of the test guest are
// created and stay live, then M (the second argument) more are created, called once and disposed.
// The line starting with `{` is the calls' sum.
import { Sandbox } from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";

const [live, loop] = [Number(Deno.args[0] ?? 300), Number(Deno.args[1] ?? 300)];
const first = await Sandbox.create({ guest: TESTGUEST });
const snap = await first.snapshot();
const held: Sandbox[] = [];
for (let i = 0; i < live; i++) held.push(await Sandbox.create({ snapshot: snap }));
let sum = 0;
for (let i = 0; i < loop; i++) {
  const sb = await Sandbox.create({ snapshot: snap });
  sum += (await sb.call("add", i, 1)) as number;
  await sb.dispose();
}
for (const sb of [first, ...held]) await sb.dispose();
await snap.dispose();
console.log(JSON.stringify({ sum }));
