// Deadlines (src/deadlines.ts), no KVM: many deadlines behind one timer (a guest call's limit and
// a pool's bounded wait each set a timer of their own before), none fired early, each removable,
// a throwing callback keeps no other from firing, and no timer left once none is pending (Deno's
// sanitizer fails a test that leaves one).

import assert from "node:assert/strict";
import { Deadlines } from "../../src/deadlines.ts";
import { countTimers } from "../_timers.ts";

Deno.test("Deadlines: 50 deadlines set one timer; removing them all clears it", async () => {
  const d = new Deadlines();
  const { value: all, timers } = await countTimers(() =>
    Array.from({ length: 50 }, (_, i) => d.add(1000 + i, () => assert.fail("removed")))
  );
  assert.equal(timers, 1);
  assert.equal(d.size, 50);
  for (const x of all) d.remove(x);
  assert.equal(d.size, 0);
});

Deno.test("Deadlines: each fires once, in order, never before its time; removed ones never", async () => {
  const d = new Deadlines();
  const fired: { name: string; late: number }[] = [];
  const add = (name: string, ms: number) => {
    const x = d.add(ms, () => fired.push({ name, late: performance.now() - x.at }));
    return x;
  };
  const done = Promise.withResolvers<void>();
  add("b", 30);
  add("a", 10);
  const gone = add("gone", 20);
  d.add(40, () => {
    throw new Error("a callback's own failure");
  });
  add("c", 40);
  d.add(60, () => done.resolve());
  d.remove(gone);
  await done.promise;
  assert.deepEqual(fired.map((f) => f.name), ["a", "b", "c"]);
  for (const f of fired) assert.ok(f.late >= 0, `${f.name} fired ${-f.late} ms early`);
  assert.equal(d.size, 0);
});

Deno.test("Deadlines: a deadline added by a firing callback fires too", async () => {
  const d = new Deadlines();
  const done = Promise.withResolvers<string>();
  d.add(5, () => d.add(5, () => done.resolve("second")));
  assert.equal(await done.promise, "second");
  assert.equal(d.size, 0);
});
