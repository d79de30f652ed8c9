// Cold JsSandbox.create + first call, each in a fresh `deno run` process (issue 20's goal:
// ≤ 20 ms with the compiled artifact, and now the start snapshot, on disk). Run:
//   deno run -A bench/js_cold.ts [runs=15]
// It prints the p50/min/max of what the child measures (performance.now() around create + call)
// and of the whole child process, for: the start snapshot on disk (the default), and without it
// (HL_START_SNAPSHOTS=0: only the artifact on disk). The library's import is timed apart (Deno
// loading our modules, the same in every mode); a child that only imports is the floor. A
// fourth child per round times the VM primitives inside the default mode's create + call.
const runs = Number(Deno.args[0] ?? 15);
const cacheDir = await Deno.makeTempDir({ prefix: "hl-js-cold-" });
const child = new URL("./_js_cold_child.ts", import.meta.url).pathname;

/** The child's whole report, of the last run of each mode. */
const reports: Record<string, Record<string, number>[]> = {};

async function once(
  mode: string,
  env: Record<string, string>,
): Promise<[number, number, number]> {
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", child, mode],
    env: { HL_WASM_CACHE_DIR: cacheDir, ...env },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const wall = performance.now() - t0;
  if (!out.success) throw new Error(`child failed (${mode})`);
  const line = new TextDecoder().decode(out.stdout).trim().split("\n").pop()!;
  const r = JSON.parse(line);
  (reports[mode] ??= []).push(r);
  return [r.ms, wall, r.importMs];
}

function summary(name: string, xs: [number, number, number][]): void {
  const p50 = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
  const inner = xs.map((x) => x[0]);
  const wall = xs.map((x) => x[1]);
  const imports = xs.map((x) => x[2]);
  console.log(
    `${name.padEnd(44)} create+call p50 ${p50(inner).toFixed(1)} ms ` +
      `(min ${Math.min(...inner).toFixed(1)}, max ${Math.max(...inner).toFixed(1)}); ` +
      `import p50 ${p50(imports).toFixed(0)} ms; process p50 ${p50(wall).toFixed(0)} ms`,
  );
}

// Fill both caches (artifact, start snapshot) once.
await once("js", {});
const results: Record<string, [number, number, number][]> = {
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
}
summary("floor (import only)", results.floor);
summary("start snapshot on disk (default)", results.disk);
summary("artifact on disk only (HL_START_SNAPSHOTS=0)", results.artifact);
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
await Deno.remove(cacheDir, { recursive: true });
