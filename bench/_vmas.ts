/**
 * Mappings per idle sandbox, by kind (issue 19, docs/design.md "Scale"): every KVM_CREATE_VM walks
 * all of the process's mappings (`mm_take_all_locks`, bench/floor/vma_cost.c), so each one a live
 * sandbox keeps makes every later create slower. Creates `n` sandboxes of each kind — cold
 * (`Sandbox.create` of the test guest), from a snapshot, cached Wasm (`WasmSandbox.create` of one
 * module) — each answering a call, and prints per sandbox the change in `/proc/self/maps` lines by
 * name and permissions. Measured once the idle vCPUs are detached from their worker threads.
 *
 *   deno run -A --v8-flags=--expose-gc bench/_vmas.ts [n=50]
 */
import { Sandbox } from "../src/sandbox.ts";
import { teardownWait } from "../src/ffi/vm.ts";
import { WasmModuleCache, WasmSandbox } from "../mod.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { untilDetached } from "../tests/kvm/_vcpu_threads.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";

const n = Number(Deno.args[0] ?? 50);

/** Mappings by kind: the name (files without their directory) and the permissions. */
function maps(): Record<string, number> {
  const out: Record<string, number> = { total: 0 };
  for (const line of Deno.readTextFileSync("/proc/self/maps").split("\n")) {
    const m = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (!m) continue;
    const name = m[2].replace(/\s*\(deleted\)$/, "").replace(/^\/(.*\/)?/, "") || "anonymous";
    const kind = `${name} ${m[1]}`;
    out[kind] = (out[kind] ?? 0) + 1;
    out.total++;
  }
  return out;
}

async function settle(): Promise<void> {
  teardownWait();
  (globalThis as { gc?: () => void }).gc?.();
  await untilDetached(5_000);
}

const guest = await Deno.readFile(TESTGUEST);
const options = { guest, heapSize: 1 << 20 };
const fib = fixtureBytes("fib");
const cache = new WasmModuleCache();
const base = await Sandbox.create(options);
await base.call("noop");
const snapshot = await base.snapshot();
const kinds = {
  cold: async () => {
    const s = await Sandbox.create(options);
    await s.call("noop");
    return s;
  },
  snapshot: async () => {
    const s = await Sandbox.create({ snapshot });
    await s.call("noop");
    return s;
  },
  "cached Wasm": async () => {
    const w = await WasmSandbox.create({ module: fib, cache });
    await w.call("fib", 10);
    return w;
  },
};
const live: { dispose(): Promise<void> }[] = [];
for (const make of Object.values(kinds)) for (let i = 0; i < 3; i++) live.push(await make()); // warm-up
const result: Record<string, Record<string, number>> = {};
for (const [kind, make] of Object.entries(kinds)) {
  await settle();
  const a = maps();
  for (let i = 0; i < n; i++) live.push(await make());
  await settle();
  const b = maps();
  const per: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = ((b[k] ?? 0) - (a[k] ?? 0)) / n;
    if (Math.abs(d) >= 0.05) per[k] = +d.toFixed(2);
  }
  result[kind] = per;
}
console.log(JSON.stringify({ sandboxes: n, mappingsPerIdleSandbox: result }, null, 1));
for (const s of live) await s.dispose();
await base.dispose();
await cache.clear();
