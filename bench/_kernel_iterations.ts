/**
 * Each compute kernel of the Wasm bench run several times in one `_start` (bench/kernel_iterations.c,
 * built here with clang for wasm32-wasi as tools/build_wasm_fixtures.sh builds the kernels), in V8
 * (`node:wasi`) and in a WasmSandbox (wasmtime), timed per iteration by CPU time actually run
 * (schedstat): the first iteration runs on fresh linear memory, the later ones on memory already
 * touched, so the difference is what first touch costs and the later ratios are the code's own
 * speed (docs/wasm.md, "First touch of linear memory").
 *
 *   deno run -A bench/_kernel_iterations.ts [kernels] [iterations] [rounds]
 *     e.g. deno run -A bench/_kernel_iterations.ts hash,matmul 3 5
 *
 * V8: the CPU time of its thread at the module's clock calls around each iteration (the WASI import
 * is wrapped). Sandbox: the CPU time of the vCPU thread (guest time included) and this thread
 * (host calls) when each iteration's stderr line reaches the host. Medians over the rounds.
 */
import { WASI } from "node:wasi";
import * as fs from "node:fs";
import { WasmSandbox } from "../mod.ts";

const kernels = (Deno.args[0] ?? "hash,nbody,qsort,matmul,strings").split(",");
const iterations = Number(Deno.args[1] ?? 3);
const rounds = Number(Deno.args[2] ?? 5);

function build(): Uint8Array {
  const dir = Deno.makeTempDirSync();
  try {
    const sysroot = exists("/usr/share/wasi-sysroot") ? "/usr/share/wasi-sysroot" : "/usr";
    const out = `${dir}/kernel_iterations.wasm`;
    const src = new URL("./kernel_iterations.c", import.meta.url).pathname;
    const r = new Deno.Command("clang", {
      args: [
        "--target=wasm32-wasi",
        `--sysroot=${sysroot}`,
        "-O2",
        "-Wl,--strip-debug",
        "-nodefaultlibs",
        "-lc",
        src,
        "-o",
        out,
      ],
    }).outputSync();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
    return Deno.readFileSync(out);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** CPU time run so far by each thread of this process, µs by thread id (schedstat). */
function threads(): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      const ns = Number(Deno.readTextFileSync(`/proc/self/task/${t.name}/schedstat`).split(" ")[0]);
      out.set(t.name, ns / 1000);
    } catch { /* ended meanwhile */ }
  }
  return out;
}
const self = () => Deno.readTextFileSync("/proc/thread-self/stat").split(" ")[0];
const threadUs = () =>
  Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]) / 1000;

/** This thread's and the busiest other thread's CPU time between two readings. */
function sandboxUs(a: Map<string, number>, b: Map<string, number>): number {
  const me = self();
  let own = 0, busiest = 0;
  for (const [tid, us] of b) {
    const d = us - (a.get(tid) ?? 0);
    if (tid === me) own = d;
    else busiest = Math.max(busiest, d);
  }
  return own + busiest;
}

function v8(module: WebAssembly.Module, kernel: string): number[] {
  const out = fs.openSync("/dev/null", "w");
  const wasi = new WASI({
    version: "preview1",
    args: ["kernel_iterations", kernel, String(iterations)],
    env: {},
    stdin: 0,
    stdout: out,
    stderr: out,
    returnOnExit: true,
  });
  const imports = wasi.getImportObject() as Record<string, Record<string, unknown>>;
  const p1 = { ...imports.wasi_snapshot_preview1 };
  const clock = p1.clock_time_get as (...a: unknown[]) => number;
  const marks: number[] = [];
  p1.clock_time_get = (...a: unknown[]) => {
    marks.push(threadUs());
    return clock(...a);
  };
  const instance = new WebAssembly.Instance(module, {
    wasi_snapshot_preview1: p1,
  } as WebAssembly.Imports);
  wasi.start(instance);
  fs.closeSync(out);
  // Two clock calls per iteration: its start and its end.
  return Array.from({ length: iterations }, (_, i) => marks[2 * i + 1] - marks[2 * i]);
}

async function sandbox(bytes: Uint8Array, kernel: string): Promise<number[]> {
  const marks: Map<string, number>[] = [];
  const dec = new TextDecoder();
  const s = await WasmSandbox.create({
    module: bytes,
    maxMemoryBytes: 64 << 20,
    heapSize: 160 << 20,
    wasi: {
      args: ["kernel_iterations", kernel, String(iterations)],
      env: {},
      randomSeed: new Uint8Array(32).fill(1),
      stdout: () => {},
      stderr: (b: Uint8Array) => {
        for (const _ of dec.decode(b).matchAll(/iter/g)) marks.push(threads());
      },
    },
  });
  try {
    const start = threads();
    await s.runWasi();
    return marks.map((m, i) => sandboxUs(i ? marks[i - 1] : start, m));
  } finally {
    await s.dispose();
  }
}

if (!exists("/proc/thread-self/schedstat")) throw new Error("needs Linux schedstat");
const bytes = build();
const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
console.log(
  `CPU time per iteration, medians of ${rounds} rounds (ms; sandbox / V8), load ${
    Deno.loadavg()[0].toFixed(1)
  }`,
);
for (const kernel of kernels) {
  for (let i = 0; i < 3; i++) v8(module, kernel); // V8 tiers up
  await sandbox(bytes, kernel); // fills the module cache
  const V: number[][] = [], S: number[][] = [];
  for (let r = 0; r < rounds; r++) {
    V.push(v8(module, kernel));
    S.push(await sandbox(bytes, kernel));
  }
  const cells = Array.from({ length: iterations }, (_, i) => {
    const v = median(V.map((x) => x[i])), s = median(S.map((x) => x[i]));
    return `#${i} ${(s / 1000).toFixed(1)} / ${(v / 1000).toFixed(1)} = ${(s / v).toFixed(2)}×`;
  });
  console.log(`  ${kernel.padEnd(8)} ${cells.join("   ")}`);
}
