/**
 * `IdleStore` (src/recycle.ts), the bookkeeping of recycled VMs: an entry the store gives up
 * (evicted for another key's, or refused by `take`) is destroyed, and a destroy that fails — a
 * throw or a rejection — does not escape into the caller (a `dispose` parking its own VM, or a
 * create), which must still get its answer.
 */

import assert from "node:assert/strict";
import { IdleStore } from "../../src/recycle.ts";

Deno.test("IdleStore: a failing destroy of an evicted entry does not escape room()", async () => {
  const destroyed: string[] = [];
  const store = new IdleStore<string, string>(2, 2, (entry) => {
    destroyed.push(entry);
    if (entry === "a1") throw new Error("destroy failed");
    if (entry === "b1") return Promise.reject(new Error("destroy rejected"));
  });
  store.put("a", "a1");
  store.put("b", "b1");
  // Full: making room for "c" evicts the least recently used other key's entry ("a1", throws).
  assert.equal(store.room("c", true), true);
  store.put("c", "c1");
  // And again: "b1", whose destroy rejects (an unhandled rejection would fail this test).
  assert.equal(store.room("d", true), true);
  await new Promise((r) => setTimeout(r, 0));
  assert.deepEqual(destroyed, ["a1", "b1"]);
  assert.equal(store.counters.evicted, 2);
  assert.equal(store.countOf("a"), 0);
});

Deno.test("IdleStore: an entry take() refuses is destroyed, and a failing destroy does not escape", () => {
  const destroyed: string[] = [];
  const store = new IdleStore<string, string>(2, 8, (entry) => {
    destroyed.push(entry);
    throw new Error("destroy failed");
  });
  store.put("k", "old");
  store.put("k", "new");
  assert.equal(store.take("k", (e) => e === "old"), "old");
  assert.deepEqual(destroyed, ["new"]);
  assert.equal(store.countOf("k"), 0);
});
