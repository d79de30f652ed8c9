/**
 * Cold `Sandbox.create` by step against the raw floor (issue 19, docs/design.md "Scale"): times,
 * in rounds interleaved with the floor (a bare CPL-3 VM through our FFI: create, run to its first
 * exit, destroy), what lies between the `MicroVm` calls a cold create + call + dispose of the test
 * guest makes: `KVM_CREATE_VM`, the vCPU's start, `mapMemory`, the host's fill of the guest's
 * memory (page tables, image, system tables), the registers, the guest's start (its first run),
 * the call, dispose and the teardown. Prints medians in µs, the VM's counters, and the pages the
 * host's fill writes, by region (non-zero pages of fresh memory: each one a host page fault).
 *
 * The pages the guest touches first are KVM's shadow-paging faults (~10-15 µs each on kvm_pvm),
 * which this process cannot see; count them per run with the tracepoint, as root:
 *
 *   perf record -e kvmmmu:kvm_mmu_spte_requested -- deno run -A bench/_cold_steps.ts 3
 *   perf script -F comm,trace   # one line per fault: "gfn <page number>" (KVM maps the
 *                               # host-present neighbours of a group of 8 with it)
 *
 *   deno run -A bench/_cold_steps.ts [rounds=60]
 */
import { Sandbox } from "../src/sandbox.ts";
import { MicroVm, teardownWait, type VmStats } from "../src/ffi/vm.ts";
import { bareGuest } from "../tests/kvm/_bare_guest.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { parseElf } from "../src/elf.ts";
import { computeLayout, pageTablesEnd } from "../src/layout.ts";
import {
  PAGE_SIZE,
  PEB_ADDR,
  PML4_ADDR,
  SYSTEM_TABLES_ADDR,
  SYSTEM_TABLES_SIZE,
} from "../src/abi.ts";

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
// The pages the fill wrote, by region, counted once (they are the same every round).
const layout = computeLayout(parseElf(guest), { heapSize: 1 << 20 });
let hostPages: Record<string, number> | undefined;
let memory: Uint8Array | undefined;
const mapMemory = proto.mapMemory;
proto.mapMemory = function (...args: unknown[]) {
  return memory = mapMemory.apply(this, args);
};
const setRegisters = proto.setRegisters;
proto.setRegisters = function (...args: unknown[]) {
  if (timing && !hostPages && memory) hostPages = countPages(memory);
  return setRegisters.apply(this, args);
};
function countPages(mem: Uint8Array): Record<string, number> {
  const regions: [string, number, number][] = [
    ["PEB", PEB_ADDR, PEB_ADDR + PAGE_SIZE],
    [
      "GDT/IDT/TSS + stubs",
      SYSTEM_TABLES_ADDR,
      SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE + PAGE_SIZE,
    ],
    ["page tables", PML4_ADDR, pageTablesEnd(layout)],
    ["image", layout.imageAddr, layout.imageAddr + layout.imageSize],
  ];
  const counts: Record<string, number> = { total: 0, other: 0 };
  for (let at = 0; at < layout.memorySize; at += PAGE_SIZE) {
    if (!mem.subarray(at, at + PAGE_SIZE).some((b) => b !== 0)) continue;
    const region = regions.find(([, from, to]) => at >= from && at < to)?.[0] ?? "other";
    counts[region] = (counts[region] ?? 0) + 1;
    counts.total++;
  }
  return counts;
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
    { rounds, medianUs: out, ratio: +(out.total / out.floor).toFixed(2), stats, hostPages },
    null,
    1,
  ),
);
