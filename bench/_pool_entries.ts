/**
 * `JsSandboxPool.run` of a small handler: p50 and the VM entries (`runs`) and exits per run
 * (docs/js.md, "console, time, random"), then runs/s of a pool of 4 with 4 callers (3 s after a 3 s
 * warm-up). One JSON line on stdout.
 *
 * `HL_BENCH_ROOT` (default: this checkout) is the tree whose `src/` is imported, so two trees
 * (before and after a change) can be measured in alternating processes on the same machine state;
 * `HL_QUICKJS_WASM` picks the module as for any create.
 *
 * Usage: deno run --allow-all bench/_pool_entries.ts [runs]
 */
const root = Deno.env.get("HL_BENCH_ROOT") ?? new URL("..", import.meta.url).pathname;
const { JsSandboxPool } = await import(`${root}/src/js/pool.ts`);
const { WasmSandbox } = await import(`${root}/src/wasm/sandbox.ts`);
const RUNS = Number(Deno.args[0] ?? 400);
const SOURCE = "function handler(req) { return { sum: req.a + req.b, r: Math.random() }; }";

await using pool = await JsSandboxPool.create({ source: SOURCE, size: 1 });
// deno-lint-ignore no-explicit-any
const run = () => pool.run((js: any) => js.call("handler", { a: 1, b: 2 }));
for (let i = 0; i < 50; i++) await run();
const seen = new Set<number>();
const xs: number[] = [];
for (let i = 0; i < RUNS; i++) {
  const t = performance.now();
  const r = await run() as { r: number };
  xs.push((performance.now() - t) * 1000);
  seen.add(r.r);
}
xs.sort((a, b) => a - b);

// Throughput as `hl serve`'s restore route uses the pool: 4 members, 4 callers, for 3 s.
await using pool4 = await JsSandboxPool.create({ source: SOURCE, size: 4 });
// deno-lint-ignore no-explicit-any
const run4 = () => pool4.run((js: any) => js.call("handler", { a: 1, b: 2 }));
const callers = async (ms: number) => {
  let n = 0;
  const end = performance.now() + ms;
  await Promise.all([0, 1, 2, 3].map(async () => {
    for (; performance.now() < end; n++) await run4();
  }));
  return n;
};
await callers(3000);
const n4 = await callers(3000);

// Then the counts, apart from the timings: the pool's members are private, and a hand-over makes
// a new handle on the same VM, so each guest entry's counters are read around it.
const count = { exits: 0, runs: 0 };
const proto = WasmSandbox.prototype;
for (const name of ["call", "callBytes", "restore", "snapshot"]) {
  const f = proto[name];
  proto[name] = async function (this: { stats(): typeof count }, ...args: unknown[]) {
    const a = this.stats();
    try {
      return await f.apply(this, args);
    } finally {
      const b = this.stats();
      count.exits += b.exits - a.exits;
      count.runs += b.runs - a.runs;
    }
  };
}
const COUNTED = 50;
for (let i = 0; i < COUNTED; i++) await run();
console.log(JSON.stringify({
  root,
  pool4_runs_per_s: Math.round(n4 / 3),
  runs: RUNS,
  p50_us: Math.round(xs[Math.floor(RUNS / 2)]),
  p90_us: Math.round(xs[Math.floor(RUNS * 0.9)]),
  entries_per_run: count.runs / COUNTED,
  exits_per_run: count.exits / COUNTED,
  distinct_random: seen.size,
}));
