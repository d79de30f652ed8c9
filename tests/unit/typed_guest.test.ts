/**
 * Typed guest calls (issue 26 item 5): `TypedGuest<T>` turns an interface written by
 * `hl inspect --ts` into methods resolving its results, and the generated interface maps every ABI
 * type as `call` takes and returns it. Type-level checks are `@ts-expect-error` lines: an
 * accepted wrong call fails `deno check`/`deno test` itself.
 */
import assert from "node:assert/strict";
import type { TypedGuest } from "../../mod.ts";
import { guestInterface, interfaceName } from "../../src/cli/inspect.ts";

interface Calc {
  add(a0: number, a1: number): number;
  big(a0: bigint): bigint;
  name(): string;
}

Deno.test("TypedGuest: methods resolve the interface's results and check arguments", async () => {
  const calc: TypedGuest<Calc> = {
    add: (a, b) => Promise.resolve(a + b),
    big: (a) => Promise.resolve(a * 2n),
    name: () => Promise.resolve("calc"),
  };
  const sum: number = await calc.add(2, 3);
  const twice: bigint = await calc.big(21n);
  assert.deepEqual([sum, twice, await calc.name()], [5, 42n, "calc"]);
  const wrong = () => {
    // @ts-expect-error a string where the interface says number
    calc.add("2", 3);
    // @ts-expect-error too few arguments
    calc.add(2);
    // @ts-expect-error a number is not a bigint
    calc.big(1);
    // @ts-expect-error the result is a Promise, not a number
    const n: number = calc.add(2, 3);
    // @ts-expect-error no such function
    calc.sub(2, 3);
    return n;
  };
  assert.equal(typeof wrong, "function");
});

Deno.test("guestInterface: one method per function, ABI types as call uses them", () => {
  const text = guestInterface("G", [
    { name: "add", params: ["i32", "u32"], result: "i32" },
    {
      name: "mix",
      params: ["i64", "u64", "f32", "f64", "bool", "string", "bytes"],
      result: "void",
    },
    { name: "my-fn", params: [], result: "bytes" },
  ], "g.elf");
  const body = text.split("\n").filter((l) =>
    !l.trimStart().startsWith("/") && !l.startsWith("//")
  );
  assert.deepEqual(body, [
    "export interface G {",
    "  add(a0: number, a1: number): number;",
    "  mix(a0: bigint, a1: bigint, a2: number, a3: number, a4: boolean, a5: string, a6: Uint8Array): void;",
    '  "my-fn"(): Uint8Array;',
    "}",
  ]);
  assert.equal(interfaceName("/x/my-guest.elf"), "MyGuest");
  assert.equal(interfaceName("testguest"), "Testguest");
  assert.equal(interfaceName("2fast"), "Guest2fast");
});
