/**
 * Child of bench/scale.bench.ts, run under `perf stat -e kvm:kvm_unmap_hva_range`: keeps `live`
 * sandboxes from a snapshot alive, then does `n` times one operation (`floor`: a bare VM created,
 * run to its first exit and destroyed; `cold`: `Sandbox.create` + call + dispose, by default
 * from the image's start snapshot on a recycled VM; `coldstart`: the same with
 * `startSnapshot: false`, the start run in a new VM each time; `snapshot`: the same from a
 * snapshot (a recycled VM); `snapnew`: from a snapshot with `recycle: false` (a new VM); `wasm`: `WasmSandbox.create` from a snapshot of the fib module + call +
 * dispose, a new VM each time, which maps the module's code; `cached`: a cached
 * `WasmSandbox.create` of the fib module + call + dispose, as `bench/scale.bench.ts` times it: a
 * hit on a recycled VM, restored to the cache's snapshot at dispose). KVM fires that tracepoint once per live VM for every invalidation of
 * the process's page tables (its MMU notifier), so the difference between a run with `n` and one
 * with 0, divided by `n` and by the VMs alive, is the invalidations per operation.
 *
 *   deno run -A bench/_invalidations.ts <n> <floor|cold|coldstart|snapshot|snapnew|wasm|cached> <live>
 */
import { Sandbox } from "../src/sandbox.ts";
import { teardownWait } from "../src/ffi/vm.ts";
import { bareGuest } from "../tests/kvm/_bare_guest.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { WasmModuleCache, WasmSandbox } from "../mod.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";

const [n, mode, liveCount] = [Number(Deno.args[0]), Deno.args[1], Number(Deno.args[2])];
const guest = await Deno.readFile(TESTGUEST);
const base = await Sandbox.create({ guest, heapSize: 1 << 20 });
await base.call("noop");
const snapshot = await base.snapshot();
const live: Sandbox[] = [];
for (let i = 0; i < liveCount; i++) {
  const s = await Sandbox.create({ snapshot });
  await s.call("noop");
  live.push(s);
}
const wasmBase = mode === "wasm"
  ? await WasmSandbox.create({ module: fixtureBytes("fib") })
  : undefined;
const wasmSnapshot = await wasmBase?.snapshot();
const cache = new WasmModuleCache();
const wasm = async () => {
  const w = await WasmSandbox.create(
    mode === "cached" ? { module: fixtureBytes("fib"), cache } : { snapshot: wasmSnapshot! },
  );
  await w.call("fib", 10);
  await w.dispose();
};
// Warm-up (the snapshot learns the pages its guests write at the first dispose).
for (let i = 0; i < 3; i++) await (await Sandbox.create({ snapshot })).dispose();
if (wasmSnapshot || mode === "cached") { for (let i = 0; i < 3; i++) await wasm(); }
teardownWait();
for (let i = 0; i < n; i++) {
  if (mode === "floor") {
    const { vm } = bareGuest([0xe6, 0x10]);
    vm.runSync();
    vm.destroy();
  } else if (mode === "wasm" || mode === "cached") {
    await wasm();
  } else {
    const s = await Sandbox.create(
      mode === "cold"
        ? { guest, heapSize: 1 << 20 } // from the image's start snapshot, on a recycled VM
        : mode === "coldstart"
        ? { guest, heapSize: 1 << 20, startSnapshot: false } // the start runs in a new VM
        : mode === "snapnew"
        ? { snapshot, recycle: false } // a new VM
        : { snapshot }, // a recycled VM
    );
    await s.call("noop");
    await s.dispose();
  }
  teardownWait();
}
Deno.exit(0);
