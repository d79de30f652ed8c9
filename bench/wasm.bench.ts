/**
 * WasmSandbox benchmarks: create + first call, a call round trip (against a native guest's
 * call as the baseline), and a compute-bound export in the sandbox (wasmi) against the same
 * module in V8 (the baseline; Deno prints the ratio). Prints once the create and call figures as
 * ratios to the raw KVM floor measured in this run, and the ioctls/exits per operation.
 *
 *   bash tools/build_wasm_fixtures.sh && deno task bench       (or through tools/vm/run.sh)
 *
 * Under the nested-QEMU emulator the absolute times mean nothing for real hardware: read the
 * ratios and the counts.
 */
import { Sandbox } from "../src/sandbox.ts";
import { WasmSandbox } from "../src/wasm/sandbox.ts";
import { WasmSandboxPool } from "../src/wasm_pool.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { printCountsPerOp } from "./_counts.ts";
import { measureFloor } from "./_floor.ts";
import { interleavedFigure, printRatios, samplesUs } from "./_ratios.ts";
import { teardownWait } from "../src/ffi/vm.ts";

const CHECKSUM_N = 200_000;

{
  const fib = fixtureBytes("fib");
  const v8 = new WebAssembly.Instance(new WebAssembly.Module(fib as Uint8Array<ArrayBuffer>))
    .exports as Record<string, (...args: number[]) => number>;
  const wasm = await WasmSandbox.create({ module: fib });
  const native = await Sandbox.create({ guest: TESTGUEST });

  // Fills the module cache for the cached figure (the sandbox `wasm` above was its miss).
  const pool = await WasmSandboxPool.create({ module: fib, size: 2 });
  const fibSnap = await wasm.snapshot();
  // Timed in rounds interleaved with the raw floor's (bench/_ratios.ts).
  const settle = () => teardownWait();
  printRatios("WebAssembly", await measureFloor(), [
    await interleavedFigure(
      {
        label: "WasmSandbox create (cold, cache: false) + first call fib(1) + dispose",
        against: "create",
      },
      (n) =>
        samplesUs(async () => {
          const w = await WasmSandbox.create({ module: fib, cache: false });
          await w.call("fib", 1);
          await w.dispose();
        }, n),
      { perRound: 4, warmup: 2, settle },
    ),
    await interleavedFigure(
      {
        label: "WasmSandbox create (cached module) + first call fib(1) + dispose",
        against: "create",
        goal: "≤ 1.5× (issue 9)",
      },
      (n) =>
        samplesUs(async () => {
          const w = await WasmSandbox.create({ module: fib });
          await w.call("fib", 1);
          await w.dispose();
        }, n),
      { perRound: 25, settle },
    ),
    await interleavedFigure(
      {
        // The row above takes VMs that earlier hits disposed (restored to the snapshot); this one
        // makes a new VM every time.
        label: "WasmSandbox.create({ snapshot }) (a new VM) + first call fib(1) + dispose",
        against: "create",
      },
      (n) =>
        samplesUs(async () => {
          const w = await WasmSandbox.create({ snapshot: fibSnap });
          await w.call("fib", 1);
          await w.dispose();
        }, n),
      { perRound: 25, settle },
    ),
    await interleavedFigure(
      {
        label: "WasmSandboxPool.run with a noop call (acquire, call, restore, release)",
        against: "exit",
        goal: "≤ 6× (issue 9)",
      },
      (n) => samplesUs(() => pool.run((w) => w.call("noop")), n),
      { perRound: 250, settle },
    ),
    await interleavedFigure(
      { label: "WasmSandbox call noop", against: "exit" },
      (n) => samplesUs(() => wasm.call("noop"), n),
      { perRound: 250, settle },
    ),
  ]);

  console.log("counts (deterministic):");
  await printCountsPerOp("wasm call noop", wasm, () => wasm.call("noop"));
  await printCountsPerOp("native call noop", native, () => native.call("noop"));
  await printCountsPerOp(
    `wasm checksum(${CHECKSUM_N})`,
    wasm,
    () => wasm.call("checksum", CHECKSUM_N),
  );
  const expected = v8.checksum(CHECKSUM_N);
  const actual = await wasm.call("checksum", CHECKSUM_N);
  if (actual !== expected) throw new Error(`checksum: V8 ${expected}, sandbox ${actual}`);

  Deno.bench({
    name: "WasmSandbox create + first call + dispose",
    group: "create",
    async fn() {
      const w = await WasmSandbox.create({ module: fib });
      await w.call("fib", 1);
      await w.dispose();
    },
  });

  Deno.bench({
    name: "native Sandbox call noop (floor)",
    group: "round trip",
    baseline: true,
    async fn() {
      await native.call("noop");
    },
  });
  Deno.bench({
    name: "WasmSandbox call noop",
    group: "round trip",
    async fn() {
      await wasm.call("noop");
    },
  });
  Deno.bench({
    name: "WasmSandbox call fib(1) (i32 in and out)",
    group: "round trip",
    async fn() {
      await wasm.call("fib", 1);
    },
  });

  Deno.bench({
    name: `V8 checksum(${CHECKSUM_N})`,
    group: "compute",
    baseline: true,
    fn() {
      v8.checksum(CHECKSUM_N);
    },
  });
  Deno.bench({
    name: `WasmSandbox checksum(${CHECKSUM_N}) (wasmi)`,
    group: "compute",
    async fn() {
      await wasm.call("checksum", CHECKSUM_N);
    },
  });
  Deno.bench({
    name: "V8 fib(20)",
    group: "fib",
    baseline: true,
    fn() {
      v8.fib(20);
    },
  });
  Deno.bench({
    name: "WasmSandbox fib(20) (wasmi)",
    group: "fib",
    async fn() {
      await wasm.call("fib", 20);
    },
  });

  globalThis.addEventListener("unload", () => {
    void wasm.dispose();
    void native.dispose();
    void pool.dispose();
    void fibSnap.dispose();
  });
}
