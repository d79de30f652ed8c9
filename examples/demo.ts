/**
 * The README's demo: a native guest and a WebAssembly module, each in its own KVM micro-VM.
 * Run with `deno task demo` (builds first; goes through the nested-KVM harness when this host
 * has no usable /dev/kvm).
 */

import { guests, Sandbox, WasmSandbox } from "../mod.ts";

/**
 * The demo's module, written out so the demo needs no Wasm toolchain. Its text form:
 *
 * ```wat
 * (module
 *   (func $fib (export "fib") (param $n i32) (result i32)
 *     (if (result i32) (i32.lt_s (local.get $n) (i32.const 2))
 *       (then (local.get $n))
 *       (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
 *                      (call $fib (i32.sub (local.get $n) (i32.const 2))))))))
 * ```
 */
export const FIB_WASM: Uint8Array = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  0x01,
  0x06,
  0x01,
  0x60,
  0x01,
  0x7f,
  0x01,
  0x7f,
  0x03,
  0x02,
  0x01,
  0x00,
  0x07,
  0x07,
  0x01,
  0x03,
  0x66,
  0x69,
  0x62,
  0x00,
  0x00,
  0x0a,
  0x1e,
  0x01,
  0x1c,
  0x00,
  0x20,
  0x00,
  0x41,
  0x02,
  0x48,
  0x04,
  0x7f,
  0x20,
  0x00,
  0x05,
  0x20,
  0x00,
  0x41,
  0x01,
  0x6b,
  0x10,
  0x00,
  0x20,
  0x00,
  0x41,
  0x02,
  0x6b,
  0x10,
  0x00,
  0x6a,
  0x0b,
  0x0b,
]);

if (import.meta.main) await demo();

async function demo(): Promise<void> {
  const ms = (t: number) => `${t.toFixed(2)} ms`;

  let t = performance.now();
  await using native = await Sandbox.create({
    guest: guests.testguest,
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
  // wasmi: the demo's build (`tools/build.sh native`) skips the wasmtime engine's compiler, the
  // longest cargo build; the default engine, wasmtime, needs it (docs/wasm.md, "Engines").
  await using wasm = await WasmSandbox.create({ module: FIB_WASM, engine: "wasmi" });
  const created = performance.now() - t;
  t = performance.now();
  const fib = await wasm.call("fib", 20);
  console.log(
    `WasmSandbox created in ${ms(created)}; fib(20) = ${fib}  [${ms(performance.now() - t)}]`,
  );
  console.log(`wasm sandbox VM counters: ${JSON.stringify(wasm.stats())}`);
}
