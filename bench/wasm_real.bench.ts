/**
 * Real-world Wasm speed: the real C code bases of tests/kvm/wasm_real.test.ts (SQLite and zlib,
 * built by tools/build_c_codebases.sh) run as WASI commands in a WasmSandbox (wasmi in a
 * micro-VM) against the same module in V8 through `node:wasi` in this process. Prints once, per
 * workload, the medians and their ratio to V8 (measured in the same run), and the ioctls and VM
 * exits of one sandbox run; `deno bench` then prints the same comparison per group.
 *
 *   bash tools/build_wasm_fixtures.sh && deno task bench       (or through tools/vm/run.sh)
 *
 * What is timed. V8: instantiate the compiled module, `_start` (output to /dev/null). Sandbox
 * run: `runWasi()` on a sandbox created beforehand (`_start`, output handed to a callback).
 * Sandbox total: create (from the module cache: a snapshot taken after the first instantiation)
 * + `runWasi()` + dispose.
 */
import { WasmSandbox } from "../mod.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { BENCH_WORKLOADS, runInV8 } from "../tests/wasm/codebases/workloads.ts";
import { type EngineFigure, medianUs, printEngineRatios } from "./_ratios.ts";

/** Timed runs per workload and engine (each run takes up to a few seconds under wasmi). */
const RUNS = Number(Deno.env.get("HL_BENCH_REAL_RUNS") ?? 5);
const SEED = new Uint8Array(32).fill(1);
/** Untimed V8 runs first: V8 starts in Liftoff and optimizes hot functions in the background. */
const V8_WARMUP = 5;

function create(bytes: Uint8Array, args: readonly string[]): Promise<WasmSandbox> {
  return WasmSandbox.create({
    module: bytes,
    // A fixed seed lets the module cache snapshot the instantiated module.
    wasi: { args, env: {}, randomSeed: SEED, stdout: () => {}, stderr: () => {} },
  });
}

{
  const figures: EngineFigure[] = [];
  const counts: string[] = [];
  for (const w of BENCH_WORKLOADS) {
    const bytes = fixtureBytes(w.module);
    const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
    const v8Us = await medianUs(
      () => {
        const { exitCode } = runInV8(module, w, true);
        if (exitCode !== w.exitCode) throw new Error(`${w.name}: V8 exit ${exitCode}`);
      },
      RUNS,
      V8_WARMUP,
    );

    const runs: number[] = [];
    const totals: number[] = [];
    for (let i = 0; i <= RUNS; i++) {
      const t0 = performance.now();
      const sandbox = await create(bytes, w.args);
      const t1 = performance.now();
      const before = sandbox.stats();
      const { exitCode } = await sandbox.runWasi();
      const t2 = performance.now();
      if (exitCode !== w.exitCode) throw new Error(`${w.name}: sandbox exit ${exitCode}`);
      if (i === 0) {
        const after = sandbox.stats();
        counts.push(
          `  ${w.name}: ${after.ioctls - before.ioctls} ioctls, ` +
            `${after.exits - before.exits} VM exits per run`,
        );
      }
      await sandbox.dispose();
      const t3 = performance.now();
      if (i === 0) continue; // the first create fills the module cache
      runs.push((t2 - t1) * 1000);
      totals.push((t3 - t0) * 1000);
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    figures.push({ label: `${w.name}: run`, sandboxUs: median(runs), referenceUs: v8Us });
    figures.push({
      label: `${w.name}: create + run + dispose`,
      sandboxUs: median(totals),
      referenceUs: v8Us,
    });
  }
  printEngineRatios("Real C code bases (wasmi in WasmSandbox)", "V8 node:wasi", figures);
  console.log("counts (deterministic):");
  for (const line of counts) console.log(line);

  for (const w of BENCH_WORKLOADS) {
    const bytes = fixtureBytes(w.module);
    const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
    Deno.bench({
      name: `V8 node:wasi ${w.name}`,
      group: w.name,
      baseline: true,
      n: RUNS,
      warmup: V8_WARMUP,
      fn() {
        runInV8(module, w, true);
      },
    });
    Deno.bench({
      name: `WasmSandbox ${w.name} (create + run + dispose)`,
      group: w.name,
      n: RUNS,
      warmup: 1,
      async fn() {
        const sandbox = await create(bytes, w.args);
        await sandbox.runWasi();
        await sandbox.dispose();
      },
    });
  }
}
