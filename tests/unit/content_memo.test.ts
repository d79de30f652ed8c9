import assert from "node:assert/strict";
import { ContentMemo } from "../../src/content_memo.ts";

Deno.test("ContentMemo: keyed by content, not by the array", () => {
  const memo = new ContentMemo<string>(4, 1 << 20);
  let derived = 0;
  const derive = (b: Uint8Array) => {
    derived++;
    return [...b].join(",");
  };
  const bytes = new Uint8Array([1, 2, 3]);
  assert.equal(memo.get(bytes, derive), "1,2,3");
  assert.equal(memo.get(new Uint8Array([1, 2, 3]), derive), "1,2,3");
  assert.equal(derived, 1, "an equal array is a hit");
  bytes[1] = 9; // the caller mutates its array: the memo kept its own copy
  assert.equal(memo.get(bytes, derive), "1,9,3");
  assert.equal(memo.get(new Uint8Array([1, 2, 3]), derive), "1,2,3");
  assert.equal(derived, 2);
});

Deno.test("ContentMemo: bounded by entries and bytes; a failed derive is not kept", () => {
  const memo = new ContentMemo<number>(2, 10);
  let derived = 0;
  const derive = (b: Uint8Array) => (derived++, b[0]);
  for (const v of [1, 2, 3]) memo.get(new Uint8Array([v]), derive);
  memo.get(new Uint8Array([1]), derive); // evicted (least recently used)
  assert.equal(derived, 4);
  memo.get(new Uint8Array(11), derive); // over the byte bound: derived, never kept
  memo.get(new Uint8Array(11), derive);
  assert.equal(derived, 6);
  assert.throws(() =>
    memo.get(new Uint8Array([7]), () => {
      throw new Error("bad image");
    })
  );
  assert.equal(memo.get(new Uint8Array([7]), derive), 7);
});
