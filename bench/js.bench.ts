/**
 * JsSandbox benchmarks (issue 20). Prints once:
 *
 * - `JsSandboxPool.run` (restore + re-seed + call of a small handler), p50 — goal ≤ 1 ms;
 * - create + first call: in a fresh process (the compiled artifact on disk, nothing in memory), and
 *   in this process with the snapshot and module caches emptied, and the default (snapshot cache
 *   hit) — goal ≤ 20 ms for the first;
 * - fib(25) and a 1 MB JSON stringify + parse in a JsSandbox (wasmtime, wasmi) against V8 running
 *   the same quickjs.wasm through `node:wasi` in this process, same driver calls — goal ≤ 2×.
 *
 *   deno bench --allow-all bench/js.bench.ts        (needs target/runtimes/quickjs.wasm)
 *
 * Absolute times are this host's (2 shared, noisy cores, kvm_pvm); read the ratios.
 */
import { WASI } from "node:wasi";
import { JsSandbox } from "../src/js/sandbox.ts";
import { JsSandboxPool } from "../src/js/pool.ts";
import { WasmModuleCache } from "../src/wasm/cache.ts";
import { teardownWait } from "../src/ffi/vm.ts";

const MODULE = new URL("../target/runtimes/quickjs.wasm", import.meta.url);
const RUNS = Number(Deno.env.get("HL_JS_BENCH_RUNS") ?? 300);
const SOURCE = `
  function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
  var data = Array.from({ length: 15000 }, (_, i) => ({ id: i, name: "item " + i, tags: ["a", "b"], v: i / 7 }));
  function json() { const s = JSON.stringify(data); return JSON.parse(s).length + s.length; }
  function handler(req) { return { sum: req.a + req.b }; }
`;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const enc = new TextEncoder();
const dec = new TextDecoder();

/** The same module and driver calls in V8, through node:wasi. */
type QjsExports = Record<string, CallableFunction> & { memory: WebAssembly.Memory };

class V8Qjs {
  readonly #x: QjsExports;
  constructor(bytes: Uint8Array) {
    const wasi = new WASI({ version: "preview1", returnOnExit: true });
    const inst = new WebAssembly.Instance(
      new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>),
      { wasi_snapshot_preview1: wasi.wasiImport },
    );
    wasi.initialize(inst);
    this.#x = inst.exports as unknown as QjsExports;
  }
  bytes(fn: string, input: string): string {
    const data = enc.encode(input);
    const ptr = this.#x.alloc(data.length) as number;
    new Uint8Array(this.#x.memory.buffer, ptr, data.length).set(data);
    const r = this.#x[fn](ptr, data.length) as bigint;
    const p = Number(r >> 32n), len = Number(r & 0xffffffffn);
    const out = dec.decode(new Uint8Array(this.#x.memory.buffer, p, len).slice());
    this.#x.dealloc(p, len);
    return out;
  }
}

async function timeUs(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) * 1000;
}

/** create + first call in a new process: the artifact is on disk, nothing is in memory. */
async function freshProcessUs(): Promise<number> {
  const code = `
    import { JsSandbox } from ${JSON.stringify(new URL("../mod.ts", import.meta.url).href)};
    const t = performance.now();
    const js = await JsSandbox.create({ source: "function handler(r) { return r.a + r.b; }" });
    await js.call("handler", { a: 1, b: 2 });
    console.log((performance.now() - t) * 1000);
    await js.dispose();`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return Number(dec.decode(out.stdout).trim());
}

{
  const bytes = await Deno.readFile(MODULE);
  const lines: string[] = [];
  const fmt = (us: number) => us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(0)} µs`;

  // 1. Pool run p50.
  {
    await using pool = await JsSandboxPool.create({ source: SOURCE, size: 1 });
    for (let i = 0; i < 20; i++) await pool.run((js) => js.call("handler", { a: 1, b: 2 }));
    const xs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      xs.push(await timeUs(() => pool.run((js) => js.call("handler", { a: 1, b: 2 }))));
    }
    lines.push(
      `JsSandboxPool.run (restore + call handler, the seed in the call) p50 ${fmt(median(xs))}` +
        `  (goal ≤ 1 ms; ${RUNS} runs)`,
    );
  }

  // 2. Create + first call.
  {
    const fresh: number[] = [];
    for (let i = 0; i < 3; i++) fresh.push(await freshProcessUs());
    lines.push(
      `create + first call, fresh process (artifact on disk) p50 ${fmt(median(fresh))}` +
        `  (goal ≤ 20 ms; 3 processes)`,
    );
    const emptied: number[] = [];
    const hit: number[] = [];
    for (let i = 0; i < 15; i++) {
      await JsSandbox.clearCache();
      await WasmModuleCache.default.clear();
      teardownWait();
      emptied.push(
        await timeUs(async () => {
          const js = await JsSandbox.create({ source: SOURCE });
          await js.call("handler", { a: 1, b: 2 });
          await js.dispose();
        }),
      );
      hit.push(
        await timeUs(async () => {
          const js = await JsSandbox.create({ source: SOURCE });
          await js.call("handler", { a: 1, b: 2 });
          await js.dispose();
        }),
      );
    }
    lines.push(
      `create + first call + dispose, caches emptied (artifact image in memory) p50 ` +
        fmt(median(emptied)),
    );
    lines.push(`create + first call + dispose, snapshot cache hit p50 ${fmt(median(hit))}`);
  }

  // 3. Engine speed against V8 (same module, same driver calls), in interleaved rounds so that
  //    the host's load drifts over both alike; 3 warm-up calls of each first (V8 tiers up).
  {
    const v8 = new V8Qjs(bytes);
    v8.bytes("qjs_init", "{}");
    v8.bytes("qjs_eval", SOURCE);
    const size = JSON.parse(v8.bytes("qjs_call", '["json"]')).value;
    for (const engine of ["wasmtime", "wasmi"] as const) {
      await using js = await JsSandbox.create({ source: SOURCE, engine, maxMemoryBytes: 64 << 20 });
      const rounds = engine === "wasmtime" ? 7 : 3;
      const [vf, vj, f, j]: number[][] = [[], [], [], []];
      for (let i = 0; i < 3 + rounds; i++) {
        const a = await timeUs(() => v8.bytes("qjs_call", '["fib",25]'));
        const b = await timeUs(() => js.call("fib", 25));
        const c = await timeUs(() => v8.bytes("qjs_call", '["json"]'));
        const d = await timeUs(() => js.call("json"));
        if (i < 3) continue;
        vf.push(a), f.push(b), vj.push(c), j.push(d);
      }
      const ratio = (x: number[], y: number[]) => (median(x) / median(y)).toFixed(2);
      lines.push(
        `${engine}: fib(25) ${fmt(median(f))} vs V8 ${fmt(median(vf))} = ${ratio(f, vf)}×; ` +
          `JSON round trip (${(size / 1e6).toFixed(2)} MB text) ${fmt(median(j))} vs V8 ` +
          `${fmt(median(vj))} = ${
            ratio(j, vj)
          }×  (${rounds} interleaved rounds; goal ≤ 2× for wasmtime)`,
      );
    }
  }
  console.log("\nJsSandbox (issue 20):");
  for (const l of lines) console.log(`  ${l}`);
}

Deno.bench("JsSandboxPool.run small handler", { n: 50 }, async (b) => {
  await using pool = await JsSandboxPool.create({ source: SOURCE, size: 1 });
  b.start();
  for (let i = 0; i < 50; i++) await pool.run((js) => js.call("handler", { a: 1, b: 2 }));
  b.end();
});
