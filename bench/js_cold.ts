// Cold JsSandbox.create + first call, each in a fresh `deno run` process (issue 20's goal:
// ≤ 20 ms with the compiled artifact, and now the start snapshot, on disk). Run:
//   deno run -A bench/js_cold.ts [runs=15]
// It prints the p50/min/max of what the child measures (performance.now() around create + call)
// and of the whole child process, for: the start snapshot on disk (the default), and without it
// (HL_START_SNAPSHOTS=0: only the artifact on disk). The library's import is timed apart (Deno
// loading our modules, the same in every mode); a child that only imports is the floor. A
// fourth child per round times the VM primitives inside the default mode's create + call. A fifth
// ("in-process" row) times cold creates inside one process that has already used the library, as
// a benchmark loop does (HyperlightJS's published "cold create + first run" is such a figure): the
// kind's cache of start states emptied before each, so each reads its start snapshot from disk
// (the child checks the disk-hit counter and fails otherwise); at least 20 creates in all. The
// fresh rows also give the JS thread's CPU time (less swayed by a shared machine's load than wall
// time), and one more default child, run with V8's function log, counts the library's functions
// compiled lazily during its create + call (a count: docs/js.md "Eager compilation").
const runs = Number(Deno.args[0] ?? 15);
const cacheDir = await Deno.makeTempDir({ prefix: "hl-js-cold-" });
const child = new URL("./_js_cold_child.ts", import.meta.url).pathname;

/** The in-process cold creates' times (ms), of every "inproc" child. */
const inproc: number[] = [];
/** Their time inside the VM primitives (as the phases child's), per create. */
const inprocParts: Record<string, number>[] = [];
/** Cold creates per "inproc" child: at least 20 over all rounds. */
const perChild = Math.max(2, Math.ceil(20 / runs));

/** The child's whole report, of the last run of each mode. */
const reports: Record<string, Record<string, number>[]> = {};

async function once(
  mode: string,
  env: Record<string, string>,
): Promise<[number, number, number, number]> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", child, mode, String(perChild)],
    env: { HL_WASM_CACHE_DIR: cacheDir, ...env },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const wall = performance.now() - t0;
  if (!out.success) throw new Error(`child failed (${mode})`);
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
  const r = JSON.parse(line);
  (reports[mode] ??= []).push(r);
  if (mode === "inproc") {
    inproc.push(...r.times);
    inprocParts.push(...r.parts);
  }
  return [r.ms, wall, r.importMs, r.cpuMs ?? NaN];
}

function summary(name: string, xs: [number, number, number, number][]): void {
  const p50 = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const inner = xs.map((x) => x[0]);
  const wall = xs.map((x) => x[1]);
  const imports = xs.map((x) => x[2]);
  // The JS thread's CPU time over the create + call (less swayed by the load than wall time).
  const cpus = xs.map((x) => x[3]).filter((c) => !Number.isNaN(c));
  console.log(
    `${name.padEnd(44)} create+call p50 ${p50(inner).toFixed(1)} ms ` +
      `(min ${Math.min(...inner).toFixed(1)}, max ${Math.max(...inner).toFixed(1)}); ` +
      `import p50 ${p50(imports).toFixed(0)} ms; process p50 ${p50(wall).toFixed(0)} ms` +
      (cpus.length > 0 ? `; JS thread CPU p50 ${p50(cpus).toFixed(1)} ms` : ""),
  );
}

// Fill both caches (artifact, start snapshot) once.
await once("js", {});
const results: Record<string, [number, number, number, number][]> = {
  floor: [],
  disk: [],
  artifact: [],
  phases: [],
};
for (let i = 0; i < runs; i++) {
  // Interleaved, so load changes hit every mode alike.
  results.floor.push(await once("floor", {}));
  results.disk.push(await once("js", {}));
  results.artifact.push(await once("js", { HL_START_SNAPSHOTS: "0" }));
  results.phases.push(await once("phases", {}));
  await once("inproc", {});
}
summary("floor (import only)", results.floor);
summary("start snapshot on disk (default)", results.disk);
summary("artifact on disk only (HL_START_SNAPSHOTS=0)", results.artifact);
{
  const sorted = [...inproc].sort((a, b) => a - b);
  console.log(
    `${"in-process cold (start snapshot from disk)".padEnd(44)} create+call p50 ${
      sorted[Math.floor(sorted.length / 2)].toFixed(1)
    } ms (min ${sorted[0].toFixed(1)}, max ${sorted[sorted.length - 1].toFixed(1)}; ` +
      `${sorted.length} creates, ${perChild} per process after its first)\n` +
      `  warm there: V8's compiled code of the library, the bound VM library, the cache directory's ` +
      `trust check, the OS page cache; cold: the kind's in-memory start states (emptied before ` +
      `each), so the start snapshot file is read, checked and its memory copied into a new memfd, ` +
      `the module digest memo read, a new VM`,
  );
  const m = (k: string) => {
    const v = inprocParts.map((p) => p[k] ?? 0).sort((a, b) => a - b);
    return v[Math.floor(v.length / 2)].toFixed(1);
  };
  const rest = inprocParts.map((p, i) =>
    inproc[i] - (p.snapshotLoad ?? 0) - (p.vmSetup ?? 0) - (p.guestRuns ?? 0)
  ).sort((a, b) => a - b);
  console.log(
    `  of it, p50: snapshot file load ${m("snapshotLoad")} ms, VM setup ${m("vmSetup")} ms, ` +
      `guest runs ${m("guestRuns")} ms, JS/Deno rest ${
        rest[Math.floor(rest.length / 2)].toFixed(1)
      } ms`,
  );
}
// A count, not a time: the library's functions V8 compiles lazily (for the first time, during the
// create + call) in a fresh process, from V8's function log (--log-function-events) of one more
// default-mode child. Functions compiled with their module are in Deno's code cache and not
// counted (docs/js.md "Eager compilation"). The log's flags make V8 refuse the code cache in that
// child, which changes when the eager functions are compiled (at import) but not this count.
{
  const dir = await Deno.makeTempDir({ prefix: "hl-js-cold-log-" });
  const log = `${dir}/v8.log`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      `--v8-flags=--log-function-events,--logfile=${log},--no-logfile-per-isolate`,
      child,
      "js",
    ],
    env: { HL_WASM_CACHE_DIR: cacheDir },
    stdout: "null",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error("child failed (compiles)");
  const src = new URL("../src/", import.meta.url).href;
  const scripts = new Map<string, string>();
  let inside = false;
  let fns = 0;
  let bytes = 0;
  const perModule = new Map<string, number>();
  for (const line of (await Deno.readTextFile(log)).split("\n")) {
    const f = line.split(",");
    if (f[0] === "script-details") scripts.set(f[1], f[2]);
    // function,interpreter,<script>,<start>,<end>,<ms>,<timestamp>,<name>: bytecode made.
    if (f[0] !== "function" || f[1] !== "interpreter") continue;
    const name = f.slice(7).join(",");
    if (name === "createStarts") inside = true;
    if (name === "callEnded") break;
    const url = scripts.get(f[2]) ?? "";
    if (!inside || !url.startsWith(src)) continue;
    fns++;
    bytes += Number(f[4]) - Number(f[3]);
    const m = url.slice(src.length);
    perModule.set(m, (perModule.get(m) ?? 0) + Number(f[4]) - Number(f[3]));
  }
  await Deno.remove(dir, { recursive: true });
  const top = [...perModule].sort((a, b) => b[1] - a[1]).slice(0, 5)
    .map(([m, b]) => `${m} ${(b / 1024).toFixed(1)}`).join(", ");
  console.log(
    `  compiled lazily in a fresh create + call (V8's log): ${fns} of the library's functions, ` +
      `${(bytes / 1024).toFixed(1)} KB of source (most: ${top} KB)`,
  );
}
// Where the default mode's time goes (a separate child per round, with the VM primitives timed):
// the rest is the library's JavaScript and Deno, run for the first time in the process.
const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
const ph = reports.phases ?? [];
const part = (k: string) => median(ph.map((r) => r[k] ?? 0));
const rest = median(
  ph.map((r) => r.ms - (r.snapshotLoad ?? 0) - (r.vmSetup ?? 0) - (r.guestRuns ?? 0)),
);
console.log(
  `  of the default, p50 (phases child): snapshot file load ${
    part("snapshotLoad").toFixed(1)
  } ms, ` +
    `VM setup ${part("vmSetup").toFixed(1)} ms, guest runs ${part("guestRuns").toFixed(1)} ms, ` +
    `JS/Deno rest ${rest.toFixed(1)} ms; VM library bound in ${part("dlopens")} dlopen(s), ` +
    `${part("symbols")} symbols`,
);
// Each VM primitive apart (the phases child's "vmSetup.createVcpu", ...), fresh against the
// in-process cold creates: what a new process pays natively beyond a used one.
{
  const keys = [...new Set([...ph, ...inprocParts].flatMap((r) => Object.keys(r)))]
    .filter((k) => k.includes(".")).sort();
  const cell = (rows: Record<string, number>[], k: string) =>
    median(rows.map((r) => r[k] ?? 0)).toFixed(2);
  console.log(
    `  per primitive, p50 ms (fresh / in-process): ` +
      keys.map((k) => `${k.split(".")[1]} ${cell(ph, k)} / ${cell(inprocParts, k)}`).join(", "),
  );
}
await Deno.remove(cacheDir, { recursive: true });
