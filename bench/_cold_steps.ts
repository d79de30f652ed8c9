/**
 * Cold `Sandbox.create` by step against the raw floor (issue 19, docs/design.md "Scale"): times,
 * in rounds interleaved with the floor (a bare CPL-3 VM through our FFI: create, run to its first
 * exit, destroy), what lies between the `MicroVm` calls a cold create + call + dispose of the test
 * guest makes: `KVM_CREATE_VM`, the vCPU's start, `mapMemory`, the host's fill of the guest's
 * memory (page tables, image, system tables), the registers, the guest's start (its first run),
 * the call, dispose and the teardown. Prints medians in µs and the VM's counters.
 *
 *   deno run -A bench/_cold_steps.ts [rounds=60]
 */
import { Sandbox } from "../src/sandbox.ts";
import { MicroVm, teardownWait, type VmStats } from "../src/ffi/vm.ts";
import { bareGuest } from "../tests/kvm/_bare_guest.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const rounds = Number(Deno.args[0] ?? 60);
const guest = await Deno.readFile(TESTGUEST);
const samples: Record<string, number[]> = {};
let last = 0;
/** Records the time since the last mark under `step`. */
const mark = (step: string) => {
  const now = performance.now();
  (samples[step] ??= []).push((now - last) * 1000);
  last = now;
};
let timing = false;
// deno-lint-ignore no-explicit-any
const proto = MicroVm.prototype as any;
const steps: [string, string, string][] = [
  ["createVcpu", "KVM_CREATE_VM (MicroVm.create)", "vCPU start (createVcpu)"],
  ["mapMemory", "", "mapMemory"],
  ["setRegisters", "memory fill", "setRegisters"],
  ["destroy", "dispose (before destroy)", "destroy"],
];
for (const [name, before, after] of steps) {
  const original = proto[name];
  proto[name] = function (...args: unknown[]) {
    if (timing && before) mark(before);
    else if (timing) last = performance.now();
    const result = original.apply(this, args);
    if (timing) mark(after);
    return result;
  };
}
let stats: VmStats | undefined;
const destroy = proto.destroy;
proto.destroy = function () {
  if (timing) stats = this.stats();
  return destroy.apply(this);
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
for (let i = 0; i < rounds; i++) {
  const t0 = performance.now();
  last = t0;
  timing = true;
  const s = await Sandbox.create({ guest, heapSize: 1 << 20 });
  mark("guest start (the rest of create)");
  await s.call("noop");
  mark("call");
  await s.dispose();
  timing = false;
  mark("dispose (after destroy)");
  teardownWait();
  mark("teardown wait");
  (samples["total"] ??= []).push((performance.now() - t0) * 1000);
  const f0 = performance.now();
  const { vm } = bareGuest([0xe6, 0x10]);
  vm.runSync();
  vm.destroy();
  teardownWait();
  (samples["floor"] ??= []).push((performance.now() - f0) * 1000);
}
const skip = Math.min(10, rounds >> 2); // warm-up
const out: Record<string, number> = {};
for (const [step, xs] of Object.entries(samples)) out[step] = Math.round(median(xs.slice(skip)));
console.log(
  JSON.stringify(
    { rounds, medianUs: out, ratio: +(out.total / out.floor).toFixed(2), stats },
    null,
    1,
  ),
);
