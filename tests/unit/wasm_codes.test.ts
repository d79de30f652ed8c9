/**
 * The Wasm runtime guests' ERROR codes have one definition (guest/wasm-abi/src/lib.rs); the
 * numbers `src/wasm/codec.ts` maps to error classes must be those.
 */
import assert from "node:assert/strict";
import * as codec from "../../src/wasm/codec.ts";

Deno.test("Wasm runtime ERROR codes: codec.ts uses guest/wasm-abi's numbers", async () => {
  const rust = await Deno.readTextFile(
    new URL("../../guest/wasm-abi/src/lib.rs", import.meta.url),
  );
  const defined = new Map<string, number>();
  for (const m of rust.matchAll(/pub const ([A-Z_]+): u32 = (\d+);/g)) {
    defined.set(m[1], Number(m[2]));
  }
  assert.ok(defined.size >= 9, `codes found in lib.rs: ${[...defined.keys()]}`);
  const used = Object.entries(codec).filter(([k]) => k.startsWith("CODE_"));
  assert.ok(used.length >= 8);
  for (const [name, value] of used) {
    const key = name.slice("CODE_".length);
    assert.equal(value, defined.get(key), `${name} in codec.ts vs ${key} in guest/wasm-abi`);
  }
});
