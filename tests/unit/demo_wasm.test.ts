// The demo's inline module (written out so `deno task demo` needs no Wasm toolchain) is valid
// and computes what the demo prints, checked with V8's own WebAssembly.
import assert from "node:assert/strict";
import { FIB_WASM } from "../../examples/demo.ts";

Deno.test("the demo's inline fib module is valid Wasm and fib(20) = 6765", () => {
  const instance = new WebAssembly.Instance(
    new WebAssembly.Module(FIB_WASM as Uint8Array<ArrayBuffer>),
  );
  const fib = instance.exports.fib as (n: number) => number;
  assert.equal(fib(20), 6765);
});
