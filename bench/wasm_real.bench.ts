/**
 * Real-world Wasm speed: the real C code bases of tests/kvm/wasm_real.test.ts (SQLite and zlib,
 * built by tools/build_c_codebases.sh) and five compute kernels (tests/wasm/kernels.c) run as WASI commands in a WasmSandbox (wasmi or wasmtime
 * in a micro-VM) against the same module in V8 through `node:wasi` in this process. Prints once, per
 * workload, the medians and their ratio to V8 (measured in the same run), and the ioctls and VM
 * exits of one sandbox run; `deno bench` then prints the same comparison per group.
 * `deno run -A bench/_wasi_requests.ts` lists the `wasi_io` requests behind the I/O workloads'
 * exits, by op; `bench/wasm_real_sqlite_file.ts` times the SQLite-with-a-file row alone (with CPU
 * time and the WASI handler's share), `bench/wasm_real_wasi_handler.ts` the handler per request.
 *
 *   bash tools/build_wasm_fixtures.sh && deno task bench       (or through tools/vm/run.sh)
 *
 * What is timed. V8: instantiate the compiled module, `_start` (output to /dev/null; stdin from a
 * file; a fresh preopened directory each run). Sandbox run: `runWasi()` on a sandbox created
 * beforehand (`_start`, output handed to a callback, stdin from bytes, a fresh directory).
 * Sandbox total: create (from the module cache: a snapshot taken after the first instantiation)
 * + `runWasi()` + dispose.
 *
 * The kernels are also compared by CPU time actually run (Linux schedstat `sum_exec_runtime`: V8's
 * thread; for a sandbox run its vCPU thread, guest time included, and this thread): on a loaded host most of a wall-clock figure is time spent waiting for a core
 * (docs/wasm.md, "First touch of linear memory"). The wall-clock ratios stay the figures the
 * goals are stated in.
 */
import { type WasmEngine, WasmSandbox } from "../mod.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import {
  BENCH_WORKLOADS,
  makeDir,
  runInV8,
  takeDir,
  type Workload,
} from "../tests/wasm/codebases/workloads.ts";
import { type EngineFigure, medianUs, printEngineRatios } from "./_ratios.ts";

/**
 * Compute kernels (tests/wasm/kernels.c, issue 22's list: a hash compression loop, n-body, qsort,
 * matrix multiply, string building), timed with wasmtime only (wasmi takes seconds each); their
 * geometric mean and worst ratio to V8 are printed with the table.
 */
const KERNELS: readonly Workload[] = ["hash", "nbody", "qsort", "matmul", "strings"].map((k) => ({
  name: `kernel: ${k}`,
  module: "kernels",
  args: ["kernels", k],
  exitCode: 0,
}));

/**
 * `HL_BENCH_REAL_KERNELS=1`: the compute kernels only (no SQLite/zlib rows, no `deno bench`
 * groups), for before/after comparisons of the wasmtime engine that alternate quickly.
 */
const KERNELS_ONLY = Deno.env.get("HL_BENCH_REAL_KERNELS") === "1";

/** Timed runs per workload and engine (each run takes up to a few seconds under wasmi). */
const RUNS = Number(Deno.env.get("HL_BENCH_REAL_RUNS") ?? 5);
const SEED = new Uint8Array(32).fill(1);
/** Both engines (docs/wasm.md, "Engines"). */
const ENGINES: readonly WasmEngine[] = ["wasmi", "wasmtime"];
/** Untimed V8 runs first: V8 starts in Liftoff and optimizes hot functions in the background. */
const V8_WARMUP = 5;

/** CPU time this thread has run, in µs (schedstat); NaN where /proc has no schedstat. */
function threadRunUs(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1000;
  } catch {
    return NaN;
  }
}

/** CPU time each thread of this process has run so far, in µs by thread id (schedstat). */
function threadsRunUs(): Map<string, number> {
  const out = new Map<string, number>();
  try {
    for (const t of Deno.readDirSync("/proc/self/task")) {
      try {
        const ns = Number(
          Deno.readTextFileSync(`/proc/self/task/${t.name}/schedstat`).split(" ")[0],
        );
        out.set(t.name, ns / 1000);
      } catch { /* the thread ended meanwhile */ }
    }
  } catch { /* no /proc */ }
  return out;
}

/**
 * The CPU time a sandbox run took between two {@linkcode threadsRunUs} readings: this thread's
 * (host calls) plus the busiest other thread's (the vCPU thread, guest time included). Other
 * threads are left out: the library's background work for earlier sandboxes (teardown, recycling
 * into the module cache) may overlap the run. NaN without schedstat.
 */
function sandboxRunUs(before: Map<string, number>, after: Map<string, number>): number {
  const self = Deno.readTextFileSync("/proc/thread-self/stat").split(" ")[0];
  let own = NaN;
  let busiest = 0;
  for (const [tid, us] of after) {
    const d = us - (before.get(tid) ?? 0);
    if (tid === self) own = d;
    else busiest = Math.max(busiest, d);
  }
  return own + busiest;
}

/** A sandbox for one run of `w`; the preopened directory (if any) is made in `dir`. */
function create(
  bytes: Uint8Array,
  w: Workload,
  engine: WasmEngine,
  dir?: string,
): Promise<WasmSandbox> {
  return WasmSandbox.create({
    module: bytes,
    engine,
    // The hash kernel's 16 MiB buffer needs more than the default 16 MiB memory limit.
    ...(w.module === "kernels" ? { maxMemoryBytes: 64 << 20, heapSize: 160 << 20 } : {}),
    wasi: {
      args: w.args,
      env: {},
      // A fixed seed lets the module cache snapshot the instantiated module.
      randomSeed: SEED,
      stdout: () => {},
      stderr: () => {},
      ...(w.stdin ? { stdin: w.stdin } : {}),
      ...(w.dir && dir
        ? { preopens: { [w.dir.guest]: { path: dir, writable: w.dir.writable } } }
        : {}),
    },
  });
}

/** Runs `w` once in a new sandbox (with a fresh directory): create, run, dispose times in µs. */
async function sandboxRun(bytes: Uint8Array, w: Workload, engine: WasmEngine) {
  const dir = w.dir && makeDir(w.dir.files);
  try {
    const t0 = performance.now();
    const sandbox = await create(bytes, w, engine, dir);
    const t1 = performance.now();
    const before = sandbox.stats();
    const cpu0 = threadsRunUs();
    const { exitCode } = await sandbox.runWasi();
    const t2 = performance.now();
    const cpuUs = sandboxRunUs(cpu0, threadsRunUs());
    if (exitCode !== w.exitCode) throw new Error(`${w.name}: sandbox exit ${exitCode}`);
    const after = sandbox.stats();
    await sandbox.dispose();
    const t3 = performance.now();
    return {
      runUs: (t2 - t1) * 1000,
      cpuUs,
      totalUs: (t3 - t0) * 1000,
      ioctls: after.ioctls - before.ioctls,
      exits: after.exits - before.exits,
    };
  } finally {
    if (dir) takeDir(dir);
  }
}

{
  const figures: EngineFigure[] = [];
  const counts: string[] = [];
  const kernelRatios: number[] = [];
  const cpuRatios: number[] = [];
  const cpuLines: string[] = [];
  for (const w of KERNELS_ONLY ? KERNELS : [...KERNELS, ...BENCH_WORKLOADS]) {
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

    const kernel = KERNELS.includes(w);
    const v8Cpu: number[] = [];
    if (kernel) {
      for (let i = 0; i < RUNS; i++) {
        const c0 = threadRunUs();
        runInV8(module, w, true);
        v8Cpu.push(threadRunUs() - c0);
      }
    }
    for (const engine of kernel ? ["wasmtime" as const] : ENGINES) {
      const runs: number[] = [];
      const cpus: number[] = [];
      const totals: number[] = [];
      for (let i = 0; i <= RUNS; i++) {
        const r = await sandboxRun(bytes, w, engine);
        if (i === 0) {
          counts.push(`  ${w.name} (${engine}): ${r.ioctls} ioctls, ${r.exits} VM exits per run`);
          continue; // the first create fills the module cache (and, wasmtime, the artifact cache)
        }
        runs.push(r.runUs);
        cpus.push(r.cpuUs);
        totals.push(r.totalUs);
      }
      const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      figures.push({
        label: `${w.name}: run (${engine})`,
        sandboxUs: median(runs),
        referenceUs: v8Us,
      });
      if (kernel) {
        kernelRatios.push(median(runs) / v8Us);
        cpuRatios.push(median(cpus) / median(v8Cpu));
        cpuLines.push(
          `  ${w.name}: ${(median(cpus) / 1000).toFixed(1)} ms vs ${
            (median(v8Cpu) / 1000).toFixed(1)
          } ms, ${(median(cpus) / median(v8Cpu)).toFixed(2)}×`,
        );
      }
      figures.push({
        label: `${w.name}: create + run + dispose (${engine})`,
        sandboxUs: median(totals),
        referenceUs: v8Us,
      });
    }
  }
  printEngineRatios(
    "Real C code bases (WasmSandbox: wasmi, wasmtime; issue 13's goal for wasmtime: ≤ 2×)",
    "V8 node:wasi",
    figures,
  );
  const geomean = Math.exp(kernelRatios.reduce((a, r) => a + Math.log(r), 0) / kernelRatios.length);
  console.log(
    `compute kernels (wasmtime run vs V8): geomean ${geomean.toFixed(2)}×, worst ${
      Math.max(...kernelRatios).toFixed(2)
    }× (issue 22's goals: ≤ 1.15×, ≤ 1.5×)`,
  );
  const cpuGeomean = Math.exp(cpuRatios.reduce((a, r) => a + Math.log(r), 0) / cpuRatios.length);
  console.log(
    `compute kernels by CPU time run (medians; sandbox: the vCPU thread and this one, V8: ` +
      `its thread): geomean ${cpuGeomean.toFixed(2)}×, worst ${Math.max(...cpuRatios).toFixed(2)}×`,
  );
  for (const line of cpuLines) console.log(line);
  console.log("counts (deterministic):");
  for (const line of counts) console.log(line);

  for (const w of KERNELS_ONLY ? [] : BENCH_WORKLOADS) {
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
    for (const engine of ENGINES) {
      Deno.bench({
        name: `WasmSandbox ${w.name} (${engine}; create + run + dispose)`,
        group: w.name,
        n: RUNS,
        warmup: 1,
        async fn() {
          await sandboxRun(bytes, w, engine);
        },
      });
    }
  }
}
