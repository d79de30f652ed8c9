/**
 * `hostFunction` keeps a separately declared host-function table's types (issue 26, item 5):
 * `result: "f64"` stays a `ValueType`, `fn`'s parameters are inferred from `params`, and a wrong
 * implementation is a type error (checked by `deno check`, asserted here with `@ts-expect-error`).
 */
import assert from "node:assert/strict";
import { type HostFunction, hostFunction } from "../../mod.ts";

Deno.test("hostFunction: a table declared as its own const type-checks and is returned as is", () => {
  const fn = (x: number, y: bigint, s: string) => x + Number(y) + s.length;
  const table = {
    mix: hostFunction({ params: ["f64", "i64", "string"], result: "f64", fn }),
    bytes: hostFunction({ params: ["bytes"], result: "u32", fn: (b) => b.length }),
    none: hostFunction({ params: [], result: "void", fn: () => {} }),
  };
  const checked: Record<string, HostFunction> = table;
  assert.equal(checked.mix.result, "f64");
  assert.deepEqual(checked.mix.params, ["f64", "i64", "string"]);
  assert.equal(checked.mix.fn(1, 2n, "abc"), 6);
  assert.equal(checked.bytes.fn(new Uint8Array(3)), 3);
});

Deno.test("hostFunction: a wrong implementation is a type error", () => {
  // @ts-expect-error: i64 arrives as a bigint, not a number
  hostFunction({ params: ["i64"], result: "i64", fn: (x: number) => BigInt(x) });
  // @ts-expect-error: the result is declared bool
  hostFunction({ params: [], result: "bool", fn: () => "yes" });
  // @ts-expect-error: "f65" is not a value type
  hostFunction({ params: ["f65"], result: "void", fn: () => {} });
});
