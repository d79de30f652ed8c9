/**
 * What the first call after a restore pays (issue 22 item 4), per runtime, with counts per step:
 *
 * - QuickJS (target/runtimes/quickjs.wasm) driven through its reactor exports as JsSandbox drives
 *   it, three call kinds;
 * - CPython (`PySandbox`, runtime `cpython`): every request is one `_start` on a VM restored after
 *   the previous one (a second `_start` without a restore is not a supported state, so CPython
 *   has no "warm call" to compare with: its rows compare an in-place restore with a new VM);
 * - a small Wasm module (the `fib` fixture, `fib(20)`).
 *
 * Rows: a warm call (the second call after a restore); the restore alone and the first call after
 * it (in place: the VM keeps its mappings); `create({ snapshot })` alone and its first call (a new
 * VM). Each with the medians of the VM exits, the host page faults (minor faults of this process,
 * /proc/self/stat, the vCPU threads included) and the pages a restore put back (×4 KiB = bytes
 * restored). KVM's own shadow-paging faults are not visible here: count them with
 * `perf stat -e kvmmmu:kvm_mmu_spte_requested` around a run of this script (docs/wasm.md).
 * Ratios are to the warm call of the same round.
 *
 *   deno run -A bench/_restore_first.ts [wasmtime|wasmi]      (N rounds: env N, default 7)
 */
import { type WasmEngine, WasmSandbox } from "../mod.ts";
import { PySandbox } from "../src/py/sandbox.ts";
import { MicroVm } from "../src/ffi/vm.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";

const MIB = 1 << 20;
const enc = new TextEncoder();
const N = Number(Deno.env.get("N") ?? 7);
const engine = (Deno.args[0] ?? "wasmtime") as WasmEngine;

/** Minor page faults of this process so far (/proc/self/stat field 10). */
const minflt = () => Number(Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ")[7]);

/** Pages put back by every native restore of this process (what `MicroVm.restore` returns). */
let pagesRestored = 0;
{
  const proto = MicroVm.prototype as unknown as Record<string, (...a: unknown[]) => number>;
  const restore = proto.restore;
  proto.restore = function (this: unknown, ...a: unknown[]) {
    const n = restore.apply(this, a);
    pagesRestored += n;
    return n;
  };
}

interface Sample {
  ms: number;
  exits: number;
  faults: number;
  pages: number;
}
/** Times `fn`, with the exits of `sb` (if given), host faults and pages restored meanwhile. */
async function measure(fn: () => Promise<unknown>, sb?: () => WasmSandbox): Promise<Sample> {
  const e0 = sb ? sb().stats().exits : 0, f0 = minflt(), p0 = pagesRestored;
  const t0 = performance.now();
  await fn();
  const ms = performance.now() - t0;
  return {
    ms,
    exits: sb ? sb().stats().exits - e0 : 0,
    faults: minflt() - f0,
    pages: pagesRestored - p0,
  };
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const row = (label: string, xs: Sample[], warm?: number) => {
  const ms = med(xs.map((x) => x.ms));
  const ratio = warm ? ` (${(ms / warm).toFixed(2)}×)` : "";
  const exits = xs.some((x) => x.exits) ? `${med(xs.map((x) => x.exits))} exits, ` : "";
  const pages = med(xs.map((x) => x.pages));
  return `    ${label.padEnd(38)} ${ms.toFixed(2)} ms${ratio}, ${exits}${
    med(xs.map((x) => x.faults))
  } host faults${pages ? `, ${pages} pages restored (${pages * 4} KiB)` : ""}`;
};

/** The five rows of a warm-call runtime, the first calls as ratios to the warm call. */
function printRows(
  warm: Sample[],
  restore: Sample[],
  inPlace: Sample[],
  create: Sample[],
  fresh: Sample[],
): void {
  const warmMs = med(warm.map((x) => x.ms));
  console.log(row("warm call", warm));
  console.log(row("restore (in place)", restore));
  console.log(row("first call after it", inPlace, warmMs));
  console.log(row("create({ snapshot })", create));
  console.log(row("first call of that VM", fresh, warmMs));
}

// ---- QuickJS ----
{
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
  console.log(`QuickJS (${engine}), medians of ${N} rounds:`);
  for (const [name, code] of Object.entries(CALLS)) {
    const warm: Sample[] = [], restore: Sample[] = [], inPlace: Sample[] = [];
    const create: Sample[] = [], fresh: Sample[] = [];
    const call = (sb: WasmSandbox) => () => sb.callBytes("qjs_eval", enc.encode(code));
    for (let i = 0; i < N; i++) {
      await w.restore(snap);
      await call(w)();
      warm.push(await measure(call(w), () => w));
      restore.push(await measure(() => w.restore(snap)));
      inPlace.push(await measure(call(w), () => w));
      let c: WasmSandbox | undefined;
      create.push(
        await measure(async () => {
          c = await WasmSandbox.create({
            snapshot: snap,
            wasi: { stdout: () => {}, stderr: () => {} },
          });
        }),
      );
      fresh.push(await measure(call(c!), () => c!));
      await c!.dispose();
    }
    console.log(`  ${name}:`);
    printRows(warm, restore, inPlace, create, fresh);
  }
  await snap.dispose();
  await w.dispose();
}

// ---- CPython ----
try {
  const CODE = "sum(i * i for i in range(2000))";
  const py = await PySandbox.create({ setup: "import json" });
  for (let i = 0; i < 3; i++) await py.run(CODE);
  const snap = await py.snapshot();
  const settle = () => new Promise((r) => setTimeout(r, 20)); // the restore after a run, off its path
  const backToBack: Sample[] = [], inPlace: Sample[] = [], restore: Sample[] = [];
  const create: Sample[] = [], fresh: Sample[] = [];
  for (let i = 0; i < N; i++) {
    await py.run(CODE);
    backToBack.push(await measure(() => py.run(CODE)));
    await settle();
    inPlace.push(await measure(() => py.run(CODE)));
    await settle();
    restore.push(await measure(() => py.restore()));
    let c: PySandbox | undefined;
    create.push(await measure(async () => c = await PySandbox.create({ snapshot: snap })));
    fresh.push(await measure(() => c!.run(CODE)));
    await c!.dispose();
  }
  const base = med(inPlace.map((x) => x.ms));
  console.log(`CPython (PySandbox cpython, ${CODE}), medians of ${N} rounds:`);
  console.log(row("restore (in place, explicit)", restore));
  console.log(row("run, restored off its path", inPlace));
  console.log(row("run right after a run (waits restore)", backToBack, base));
  console.log(row("create({ snapshot })", create));
  console.log(row("first run of that VM", fresh, base));
  console.log("    (ratios to 'run, restored off its path': CPython has no warm call)");
  await snap.dispose();
  await py.dispose();
} catch (e) {
  console.log(`CPython: skipped (${(e as Error).message.split("\n")[0]})`);
}

// ---- a small Wasm module ----
{
  const w = await WasmSandbox.create({ module: fixtureBytes("fib"), engine, cache: false });
  for (let i = 0; i < 3; i++) await w.call("fib", 20);
  const snap = await w.snapshot();
  const warm: Sample[] = [], restore: Sample[] = [], inPlace: Sample[] = [];
  const create: Sample[] = [], fresh: Sample[] = [];
  for (let i = 0; i < N; i++) {
    await w.restore(snap);
    await w.call("fib", 20);
    warm.push(await measure(() => w.call("fib", 20), () => w));
    restore.push(await measure(() => w.restore(snap)));
    inPlace.push(await measure(() => w.call("fib", 20), () => w));
    let c: WasmSandbox | undefined;
    create.push(await measure(async () => c = await WasmSandbox.create({ snapshot: snap })));
    fresh.push(await measure(() => c!.call("fib", 20), () => c!));
    await c!.dispose();
  }
  console.log(`fib.wasm fib(20) (${engine}), medians of ${N} rounds:`);
  printRows(warm, restore, inPlace, create, fresh);
  await snap.dispose();
  await w.dispose();
}
