/**
 * PySandbox benchmarks (issue 21). Prints once:
 *
 * - cold create (the first `PySandbox.create` of this process) — goal ≤ 1 s: from the start
 *   snapshot on disk when an earlier process left one for these options (src/start_snapshots.ts;
 *   the line says which), else from the disk artifact cache (instantiate, CPython's start, setup,
 *   and the start snapshot written for the next process); then the same create in a child process
 *   with `HL_START_SNAPSHOTS=0` (the artifact path only), and a create from the module cache;
 * - cold create in a child of options never seen on this machine — goal ≤ 1 s: a new `setup`, and
 *   `setup: "pass"` with a new `maxOutputBytes` (from the runtime base state, docs/python.md);
 * - `PySandbox.run("print(1+1)")` and `PySandboxPool.run("print(1+1)")`, p50 — goal ≤ 3 ms;
 * - `sum(range(10**6))` and a 10^6-iteration Python loop, timed inside the interpreter
 *   (`time.perf_counter`), in a PySandbox against V8 running the same python-3.12.wasm through
 *   `node:wasi` in this process — goal ≤ 2.5×.
 *
 *   deno run --allow-all bench/py.bench.ts        (needs target/runtimes/python-3.12.wasm)
 *
 * Absolute times are this host's (2 shared, noisy cores, kvm_pvm); read the ratios.
 */
import { WASI } from "node:wasi";
import { childCreate, newOptionsRow } from "./_py_child.ts";
import { closeSync, openSync, readFileSync } from "node:fs";
import { PySandbox } from "../src/py/sandbox.ts";
import { PySandboxPool } from "../src/py/pool.ts";
import { startSnapshotStats } from "../src/start_snapshots.ts";

const MODULE = new URL("../target/runtimes/python-3.12.wasm", import.meta.url);
const RUNS = Number(Deno.env.get("HL_PY_BENCH_RUNS") ?? 200);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(2)} ms`;

async function p50(fn: () => Promise<unknown>, runs = RUNS): Promise<number> {
  for (let i = 0; i < 10; i++) await fn();
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await fn();
    ts.push(performance.now() - t);
  }
  return median(ts);
}

const WORK: Record<string, string> = {
  "sum(range(10**6))": "sum(range(10**6))",
  "for-loop 10**6": "s = 0\nfor i in range(10**6):\n    s += i",
};

/** The guest's own time for `code`, best of 5, in ms (printed by the code itself). */
function timed(code: string): string {
  return `import time\nbest = 1e9\nfor _ in range(5):\n    t = time.perf_counter()\n` +
    code.split("\n").map((l) => `    ${l}`).join("\n") +
    `\n    best = min(best, time.perf_counter() - t)\nprint(best * 1000)`;
}

/** V8: the same module through node:wasi, its stdout into a temporary file. */
async function onV8(module: WebAssembly.Module, code: string): Promise<number> {
  const file = await Deno.makeTempFile();
  const fd = openSync(file, "w");
  try {
    const wasi = new WASI({ version: "preview1", args: ["python", "-I", "-c", code], stdout: fd });
    const imports = wasi.getImportObject() as WebAssembly.Imports;
    const instance = await WebAssembly.instantiate(module, imports);
    wasi.start(instance);
  } finally {
    closeSync(fd);
  }
  const out = readFileSync(file, "utf8");
  await Deno.remove(file);
  return Number(out.trim());
}

let t = performance.now();
const first = await PySandbox.create({ setup: "import json" });
const cold = performance.now() - t;
const fromStart = startSnapshotStats().diskHits === 1;
const fromBase = startSnapshotStats().pyBaseHits === 1;
t = performance.now();
const second = await PySandbox.create({ setup: "import json" });
const warm = performance.now() - t;
await second.dispose();
console.log(
  `cold create ${ms(cold)} (${
    fromStart
      ? "from the start snapshot on disk"
      : fromBase
      ? "from the runtime base state, then setup; start snapshot written"
      : "from the artifact; start snapshot written"
  }); cold create in a child without start snapshots (artifact from disk) ${
    ms((await childCreate({ HL_START_SNAPSHOTS: "0" }, { setup: "import json" })).ms)
  }; a second create in this process ${ms(warm)}`,
);
console.log(await newOptionsRow({}));

const run = await p50(() => first.run("print(1+1)"));
console.log(`PySandbox.run("print(1+1)") p50 ${ms(run)} (restore to the setup state included)`);
for (const size of [1, 2]) {
  await using pool = await PySandboxPool.create({ setup: "import json", size });
  console.log(
    `PySandboxPool(size ${size}).run("print(1+1)") p50 ${
      ms(await p50(() => pool.run("print(1+1)")))
    }`,
  );
}

const module = await WebAssembly.compile(await Deno.readFile(MODULE));
for (const [name, code] of Object.entries(WORK)) {
  const guest = Number((await first.run(timed(code))).stdout.trim());
  const v8 = await onV8(module, timed(code));
  console.log(`${name}: PySandbox ${ms(guest)}, V8 ${ms(v8)}, ratio ${(guest / v8).toFixed(2)}×`);
}
await first.dispose();
