/**
 * Issue 19's goal as worded: "After 100 other module keys have been used in the process, cached
 * `WasmSandbox.create` + first call + dispose costs ≤ 1.3× its cost in a fresh process". Each side
 * is a new `deno run` process (the pattern of bench/js_cold.ts and its child):
 *
 * - A ("fresh"): fib's create + call + dispose five times (the miss and warm-up hits: the cache
 *   holds fib's key and an idle VM), then N timed;
 * - B ("used"): the same five, then 100 other keys (`fuel` 1,000,001..1,000,100 of the same
 *   module: a miss, two hits, their disposes — what the in-process row of bench/scale.bench.ts
 *   does), then the same N timed on fib.
 *
 * Both use `WasmModuleCache.default` (what a create without a `cache` option uses), with its
 * default bounds, as `wide` with bounds that hold 101 keys' snapshots (`maxEntries: 128`: a host
 * that serves 100 keys would set them; the bounds are settable), and as `wideVms` with room for two
 * idle VMs of each key too (`maxIdleVms: 256`; B then keeps ~200 idle VMs alive). A and B
 * alternate in the same minutes, the order swapped each round. Besides wall time: the process's
 * CPU time (getrusage, all threads) per create, and per thread name.
 *
 *   deno run -A bench/_cache_keys_child.ts [rounds=4] [n=30]     (this row alone)
 *   deno run -A bench/_cache_keys_child.ts child A|B default|wide|wideVms N   (one side, prints JSON)
 *
 * bench/scale.bench.ts runs the row through {@linkcode freshVsUsed}.
 */
import process from "node:process";
import { teardownWait } from "../src/ffi/vm.ts";
import { WasmModuleCache, WasmSandbox } from "../mod.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";

/** What one child reports. */
interface Side {
  /** µs of each timed create + call + dispose. */
  times: number[];
  /** µs of CPU time the process's threads ran during each (less swayed by others' load). */
  cpu: number[];
  /** µs of CPU per timed create after the first two, by thread name (last digits → `#`). */
  byName: Record<string, number>;
  /** Thread names before the timed loop. */
  threads: number;
  /** Of the timed creates: misses, and hits that ran on a recycled VM. */
  misses: number;
  recycled: number;
  /** Keys the cache held before the timed loop, and whether fib's was among them. */
  entries: number;
  /** The process's RSS (kB) and mappings before the timed loop. */
  rssKb: number;
  maps: number;
}

/** Bounds by name: `wide` holds 101 keys' snapshots; `wideVms` also 2 idle VMs for each. */
const BOUNDS: Record<string, { maxEntries?: number; maxIdleVms?: number }> = {
  default: {},
  wide: { maxEntries: 128 },
  wideVms: { maxEntries: 128, maxIdleVms: 256 },
};

/** Each thread's name and the CPU time (ns) it has run, by thread id. */
function cpuByThread(): Map<string, [string, number]> {
  const out = new Map<string, [string, number]>();
  for (const t of Deno.readDirSync("/proc/self/task")) {
    try {
      const name = Deno.readTextFileSync(`/proc/self/task/${t.name}/comm`).trim()
        .replace(/[0-9]+$/, "#");
      const ns = Number(Deno.readTextFileSync(`/proc/self/task/${t.name}/schedstat`).split(" ")[0]);
      out.set(t.name, [name, ns]);
    } catch { /* the thread ended */ }
  }
  return out;
}

/** CPU time (ns) of the whole process, all threads (getrusage: precise, unlike schedstat's). */
function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

async function child(side: string, bounds: string, n: number): Promise<Side> {
  await WasmModuleCache.default.configure(BOUNDS[bounds]);
  const fib = fixtureBytes("fib");
  const op = async () => {
    const w = await WasmSandbox.create({ module: fib });
    await w.call("fib", 10);
    await w.dispose();
  };
  for (let i = 0; i < 5; i++) await op(); // the miss and warm-up hits
  if (side === "B") {
    for (let k = 1; k <= 100; k++) {
      const key = { module: fib, fuel: 1_000_000 + k };
      const miss = await WasmSandbox.create(key);
      const hits = [await WasmSandbox.create(key), await WasmSandbox.create(key)];
      for (const h of hits) await h.dispose();
      await miss.dispose();
    }
  }
  teardownWait();
  const before = WasmModuleCache.default.stats();
  const status = Deno.readTextFileSync("/proc/self/status");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
  const maps = Deno.readTextFileSync("/proc/self/maps").split("\n").filter(Boolean).length;
  const times: number[] = [];
  const cpu: number[] = [];
  let byThread0 = cpuByThread();
  for (let i = 0; i < n; i++) {
    const c0 = cpuNs();
    const t0 = performance.now();
    await op();
    times.push((performance.now() - t0) * 1000);
    cpu.push((cpuNs() - c0) / 1000);
    if (i === 1) byThread0 = cpuByThread(); // per thread: the creates after the first two
  }
  const after = WasmModuleCache.default.stats();
  const byName: Record<string, number> = {};
  for (const [tid, [name, ns]] of cpuByThread()) {
    const d = (ns - (byThread0.get(tid)?.[1] ?? 0)) / 1000 / (n - 2);
    byName[name] = Math.round((byName[name] ?? 0) + d);
  }
  await WasmModuleCache.default.clear();
  return {
    times,
    cpu,
    byName,
    threads: byThread0.size,
    misses: after.misses - before.misses,
    recycled: after.recycledHits - before.recycledHits,
    entries: before.entries,
    rssKb,
    maps,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

async function run(side: string, bounds: string, n: number): Promise<Side> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", new URL(import.meta.url).pathname, "child", side, bounds]
      .concat(String(n)),
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`cache keys child failed (${side}, ${bounds})`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}

/**
 * The row: per bounds, `rounds` pairs of fresh processes A and B (alternating, order swapped
 * each round), N timed creates each; prints per-round medians, the ratio of the pooled medians
 * and the median of the per-round ratios, the misses and recycled hits among the timed creates.
 */
export async function freshVsUsed(rounds = 4, n = 30): Promise<void> {
  for (const bounds of Object.keys(BOUNDS)) {
    const a: Side[] = [];
    const b: Side[] = [];
    for (let r = 0; r < rounds; r++) {
      if (r % 2 === 0) {
        a.push(await run("A", bounds, n));
        b.push(await run("B", bounds, n));
      } else {
        b.push(await run("B", bounds, n));
        a.push(await run("A", bounds, n));
      }
    }
    const ms = (s: Side) => (median(s.times) / 1000).toFixed(3);
    const threads = (x: Side[]) =>
      [...new Set(x.flatMap((s) => Object.keys(s.byName)))]
        .map((k) => [k, median(x.map((s) => s.byName[k] ?? 0))] as const)
        .filter(([, v]) => v >= 5).sort((p, q) => q[1] - p[1])
        .map(([k, v]) => `${k} ${v}`).join(", ");
    const cpu = (x: Side[]) => (median(x.flatMap((s) => s.cpu)) / 1000).toFixed(3);
    const pooledA = median(a.flatMap((s) => s.times));
    const pooledB = median(b.flatMap((s) => s.times));
    const perRound = a.map((s, i) => median(b[i].times) / median(s.times));
    const label = bounds === "default" ? "default bounds" : JSON.stringify(BOUNDS[bounds]);
    console.log(
      `cached Wasm create + call + dispose, fresh process (A) vs after 100 other keys in the ` +
        `process (B), ${label}, ${rounds} rounds × ${n} each side: A ${
          (pooledA / 1000).toFixed(3)
        } ms, B ${(pooledB / 1000).toFixed(3)} ms p50 → ${(pooledB / pooledA).toFixed(2)}× ` +
        `(goal ≤ 1.3×; median of per-round ratios ${median(perRound).toFixed(2)}×); ` +
        `CPU time of the process's threads p50 A ${cpu(a)} ms, B ${cpu(b)} ms → ${
          (median(b.flatMap((s) => s.cpu)) / median(a.flatMap((s) => s.cpu))).toFixed(2)
        }×\n` +
        `  per round p50 A/B ms: ${a.map((s, i) => `${ms(s)}/${ms(b[i])}`).join(", ")}\n` +
        `  timed creates of B: misses ${b.map((s) => s.misses).join(",")}, on a recycled VM ` +
        `${b.map((s) => s.recycled).join(",")} of ${n} (A: ${
          a.map((s) => s.recycled).join(",")
        }); the first timed create p50 A ${
          (median(a.map((s) => s.times[0])) / 1000).toFixed(1)
        } ms, B ${
          (median(b.map((s) => s.times[0])) / 1000).toFixed(1)
        } ms; keys held before them A ${a[0].entries}, B ${b[0].entries}; RSS before them A ${
          median(a.map((s) => s.rssKb))
        } kB, B ${median(b.map((s) => s.rssKb))} kB; mappings A ${
          median(a.map((s) => s.maps))
        }, B ${median(b.map((s) => s.maps))}\n` +
        `  CPU µs per create (after the first two) by thread, p50 over rounds: A ${threads(a)}; ` +
        `B ${threads(b)}`,
    );
  }
}

if (import.meta.main) {
  if (Deno.args[0] === "child") {
    console.log(JSON.stringify(await child(Deno.args[1], Deno.args[2], Number(Deno.args[3]))));
  } else {
    await freshVsUsed(Number(Deno.args[0] ?? 4), Number(Deno.args[1] ?? 30));
  }
}
