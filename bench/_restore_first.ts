/**
 * What the first call after a restore pays (issue 22 item 4), for the QuickJS module
 * (target/runtimes/quickjs.wasm) driven through its reactor exports as JsSandbox drives it: per
 * call kind, the median of a warm call, of the first call after `restore` (in place: the VM keeps
 * its mappings), and of the first call of a VM made by `create({ snapshot })`, with the VM exits
 * and the host page faults (minor faults of this process) of that call. Ratios to the warm call
 * of the same round.
 *
 *   deno run -A bench/_restore_first.ts [wasmtime|wasmi]      (N rounds: env N, default 7)
 */
import { type WasmEngine, WasmSandbox } from "../mod.ts";

const MIB = 1 << 20;
const enc = new TextEncoder();
const bytes = Deno.readFileSync(new URL("../target/runtimes/quickjs.wasm", import.meta.url));
const SOURCE = `
  function fib(n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
  var data = Array.from({ length: 3000 }, (_, i) => ({ id: i, name: "item " + i, v: i / 7 }));
  function json() { const s = JSON.stringify(data); return JSON.parse(s).length + s.length; }
  function handler(req) { return { sum: req.a + req.b }; }
`;
const CALLS: Record<string, string> = {
  "small handler": "handler({a:1,b:2})",
  "JSON of 3,000 objects": "json()",
  "fib(18)": "fib(18)",
};
const N = Number(Deno.env.get("N") ?? 7);
const engine = (Deno.args[0] ?? "wasmtime") as WasmEngine;

/** Minor page faults of this process so far (/proc/self/stat field 10). */
const minflt = () => Number(Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ")[7]);

const w = await WasmSandbox.create({
  module: bytes,
  engine,
  cache: false,
  maxMemoryBytes: 80 * MIB,
  heapSize: 192 * MIB,
  wasi: { randomSeed: new Uint8Array(32).fill(3), stdout: () => {}, stderr: () => {} },
});
await w.callWithOptions({ timeoutMs: 30_000 }, "_initialize");
const config = { memoryLimit: 64 * MIB, seed: 1, hostFunctions: [] };
await w.callBytes("qjs_init", enc.encode(JSON.stringify(config)));
await w.callBytes("qjs_eval", enc.encode(SOURCE));
for (const code of Object.values(CALLS)) {
  for (let i = 0; i < 3; i++) await w.callBytes("qjs_eval", enc.encode(code));
}
const snap = await w.snapshot();

interface Sample {
  ms: number;
  exits: number;
  faults: number;
}
async function one(sb: WasmSandbox, code: string): Promise<Sample> {
  const e0 = sb.stats().exits, f0 = minflt(), t0 = performance.now();
  await sb.callBytes("qjs_eval", enc.encode(code));
  return { ms: performance.now() - t0, exits: sb.stats().exits - e0, faults: minflt() - f0 };
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const show = (xs: Sample[], warm: number) => {
  const ms = med(xs.map((x) => x.ms));
  return `${ms.toFixed(2)} ms (${(ms / warm).toFixed(2)}×), ${med(xs.map((x) => x.exits))} exits, ${
    med(xs.map((x) => x.faults))
  } host faults`;
};
console.log(`QuickJS (${engine}), medians of ${N} rounds:`);
for (const [name, code] of Object.entries(CALLS)) {
  const warm: Sample[] = [], inPlace: Sample[] = [], fresh: Sample[] = [];
  for (let i = 0; i < N; i++) {
    await w.restore(snap);
    await one(w, code);
    warm.push(await one(w, code));
    await w.restore(snap);
    inPlace.push(await one(w, code));
    const c = await WasmSandbox.create({
      snapshot: snap,
      wasi: { stdout: () => {}, stderr: () => {} },
    });
    fresh.push(await one(c, code));
    await c.dispose();
  }
  const warmMs = med(warm.map((x) => x.ms));
  console.log(`  ${name}: warm ${warmMs.toFixed(2)} ms`);
  console.log(`    first call after restore (in place):  ${show(inPlace, warmMs)}`);
  console.log(`    first call of create({ snapshot }):   ${show(fresh, warmMs)}`);
}
await snap.dispose();
await w.dispose();
