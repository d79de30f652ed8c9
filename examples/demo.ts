/**
 * The README's demo: a native guest and a WebAssembly module, each in its own KVM micro-VM.
 * Run with `deno task demo` (builds first; goes through the nested-KVM harness when this host
 * has no usable /dev/kvm).
 */

import { Sandbox, WasmSandbox } from "../mod.ts";

const root = new URL("../", import.meta.url);
const testguest = new URL("guest/target/x86_64-unknown-linux-gnu/release/testguest", root);
const fibWasm = new URL("target/wasm-fixtures/fib.wasm", root);

const ms = (t: number) => `${t.toFixed(2)} ms`;

let t = performance.now();
await using native = await Sandbox.create({
  guest: testguest,
  hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
});
console.log(
  `native sandbox created in ${ms(performance.now() - t)} ` +
    `(${native.functions.length} guest functions)`,
);

t = performance.now();
const sum = await native.call("add", 2, 3);
console.log(`add(2, 3) = ${sum}  [${ms(performance.now() - t)}]`);

t = performance.now();
const echoed = await native.call("echo", "héllo from the host");
console.log(
  `echo("héllo from the host") = ${JSON.stringify(echoed)}  [${ms(performance.now() - t)}]`,
);

t = performance.now();
const doubled = await native.call("call_host", "double", 21);
console.log(
  `call_host("double", 21) = ${doubled} (the guest called back into the host)  ` +
    `[${ms(performance.now() - t)}]`,
);

try {
  await native.call("write_addr", 0n);
} catch (e) {
  console.log(`write_addr(0) → ${(e as Error).name}: ${(e as Error).message}`);
}

t = performance.now();
await using wasm = await WasmSandbox.create({ module: fibWasm });
const created = performance.now() - t;
t = performance.now();
const fib = await wasm.call("fib", 20);
console.log(
  `WasmSandbox created in ${ms(created)}; fib(20) = ${fib}  [${ms(performance.now() - t)}]`,
);
console.log(`wasm sandbox VM counters: ${JSON.stringify(wasm.stats())}`);
