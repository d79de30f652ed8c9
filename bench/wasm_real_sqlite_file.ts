/**
 * One row of bench/wasm_real.bench.ts, quickly: SQLite with a database file in a writable
 * preopened directory, V8 (`node:wasi`) and a wasmtime `WasmSandbox` run alternating round by
 * round, for before/after comparisons of the WASI host side (docs/wasm.md, "File calls cross in
 * batches"). Prints the medians, their ratio, the VM exits and `wasi_io` requests of one run, and
 * the time the JS thread spent serving `wasi_io` requests per run (all of it, and per request
 * kind), and the CPU time run by the JS and vCPU threads against V8's thread (schedstat: less
 * moved by the host's load than wall time, which the goal is stated in).
 *
 *   deno run -A bench/wasm_real_sqlite_file.ts [rounds]
 *
 * A before/after comparison runs this script from both trees (or with `HL_WASMTIME_RUNTIME`
 * pointing at the other guest build) in alternation, a few rounds each, in the same minutes.
 */
import { type WasmEngine, WasmSandbox } from "../mod.ts";
import { Op, WasiRuntime } from "../src/wasm/wasi.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { makeDir, runInV8, takeDir, WORKLOADS } from "../tests/wasm/codebases/workloads.ts";

const ROUNDS = Number(Deno.args[0] ?? 15);
/** `HL_BENCH_ENGINE=wasmi` for the interpreter (default wasmtime, the bench's goal row). */
const ENGINE = (Deno.env.get("HL_BENCH_ENGINE") ?? "wasmtime") as WasmEngine;
const w = WORKLOADS.find((w) =>
  w.name === "sqlite: database file in a writable preopened directory"
)!;
const bytes = fixtureBytes(w.module);
const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);

// Time spent in the JS request handler (synchronous requests; stdin is not read here).
const serve = WasiRuntime.prototype.io;
let depth = 0;
let ioMs = 0;
let requests = 0;
/** Per request kind (a batch by the request it carried): count and ms, over the timed rounds. */
const byOp = new Map<string, { n: number; ms: number }>();
const names = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));
function kind(op: number, request: Uint8Array): string {
  if (op !== Op.BATCH) return names.get(op) ?? `op ${op}`;
  const view = new DataView(request.buffer, request.byteOffset, request.byteLength);
  let at = 4;
  for (let i = 0; i < view.getUint32(0, true); i++) at += 8 + view.getUint32(at + 4, true);
  return `BATCH+${names.get(view.getUint32(at, true)) ?? "none"}`;
}
WasiRuntime.prototype.io = function (op: number, request: Uint8Array) {
  if (depth > 0) return serve.call(this, op, request);
  depth++;
  const t = performance.now();
  try {
    return serve.call(this, op, request);
  } finally {
    const ms = performance.now() - t;
    ioMs += ms;
    requests++;
    const k = kind(op, request);
    const e = byOp.get(k) ?? { n: 0, ms: 0 };
    e.n++;
    e.ms += ms;
    byOp.set(k, e);
    depth--;
  }
};

/** CPU time each thread of this process has run so far, in ms by thread id (schedstat). */
function threadsMs(): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      const ns = Number(Deno.readTextFileSync(`/proc/self/task/${t.name}/schedstat`).split(" ")[0]);
      out.set(t.name, ns / 1e6);
    } catch { /* the thread ended meanwhile */ }
  }
  return out;
}
const self = Deno.readTextFileSync("/proc/thread-self/stat").split(" ")[0];

/** CPU ms between two readings: this (JS) thread's, and the busiest other thread's (the vCPU). */
function cpuMs(before: Map<string, number>, after: Map<string, number>) {
  let js = 0;
  let vcpu = 0;
  for (const [tid, ms] of after) {
    const d = ms - (before.get(tid) ?? 0);
    if (tid === self) js = d;
    else vcpu = Math.max(vcpu, d);
  }
  return { js, vcpu };
}

async function sandboxRun() {
  const dir = makeDir(w.dir!.files);
  try {
    await using sandbox = await WasmSandbox.create({
      module: bytes,
      engine: ENGINE,
      wasi: {
        args: w.args,
        env: {},
        randomSeed: new Uint8Array(32).fill(1),
        stdout: () => {},
        stderr: () => {},
        preopens: { [w.dir!.guest]: { path: dir, writable: true } },
      },
    });
    const exits0 = sandbox.stats().exits;
    ioMs = 0;
    requests = 0;
    const cpu0 = threadsMs();
    const t = performance.now();
    const { exitCode } = await sandbox.runWasi();
    const runMs = performance.now() - t;
    const cpu = cpuMs(cpu0, threadsMs());
    if (exitCode !== 0) throw new Error(`sandbox exit ${exitCode}`);
    return { runMs, ioMs, requests, exits: sandbox.stats().exits - exits0, ...cpu };
  } finally {
    takeDir(dir);
  }
}

/** One V8 run: wall ms and this thread's CPU ms. */
function v8Run(): { ms: number; cpu: number } {
  const c = threadsMs().get(self) ?? 0;
  const t = performance.now();
  const { exitCode } = runInV8(module, w, true);
  if (exitCode !== 0) throw new Error(`V8 exit ${exitCode}`);
  return { ms: performance.now() - t, cpu: (threadsMs().get(self) ?? 0) - c };
}

for (let i = 0; i < 5; i++) v8Run(); // V8 tiers up
await sandboxRun(); // fills the module and artifact caches
byOp.clear();

const v8: { ms: number; cpu: number }[] = [];
const runs: Awaited<ReturnType<typeof sandboxRun>>[] = [];
for (let i = 0; i < ROUNDS; i++) {
  v8.push(v8Run());
  runs.push(await sandboxRun());
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const v8Ms = median(v8.map((r) => r.ms));
const v8Cpu = median(v8.map((r) => r.cpu));
const jsCpu = median(runs.map((r) => r.js));
const vcpuCpu = median(runs.map((r) => r.vcpu));
const runMs = median(runs.map((r) => r.runMs));
const io = median(runs.map((r) => r.ioMs));
const { exits, requests: n } = runs[0];
console.log(
  `${w.name} (${ENGINE}), ${ROUNDS} alternating rounds, load ${
    Deno.loadavg()[0].toFixed(2)
  }:\n  run ${runMs.toFixed(1)} ms vs V8 ${v8Ms.toFixed(1)} ms = ${(runMs / v8Ms).toFixed(2)}×\n` +
    `  ${exits} VM exits, ${n} wasi_io requests; JS request handler ${io.toFixed(1)} ms per run ` +
    `(${(io * 1000 / n).toFixed(0)} µs per request)\n` +
    `  CPU: JS thread ${jsCpu.toFixed(1)} ms + vCPU thread ${vcpuCpu.toFixed(1)} ms vs V8's ` +
    `thread ${v8Cpu.toFixed(1)} ms (medians)`,
);
console.log("  JS request handler by request, per run (ms; µs each):");
for (const [k, { n, ms }] of [...byOp].sort((a, b) => b[1].ms - a[1].ms)) {
  console.log(
    `    ${k}: ${n / ROUNDS} × ${(ms * 1000 / n).toFixed(0)} µs = ${(ms / ROUNDS).toFixed(1)} ms`,
  );
}
