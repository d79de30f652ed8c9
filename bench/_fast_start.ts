/**
 * The fast-start figures of issue 9 in isolation (ratios to the raw floor of the same run, and the
 * p10s, steadier than medians on a loaded host), with a breakdown of a cold create:
 *
 *   deno run -A bench/_fast_start.ts [all|native|wasm]
 */
import { Sandbox } from "../src/sandbox.ts";
import { MicroVm, teardownWait } from "../src/ffi/vm.ts";
import { parseElf } from "../src/elf.ts";
import { computeLayout, entryRegisters, initializeMemory } from "../src/layout.ts";
import { GUEST_VCPU_CONFIG } from "../src/system.ts";
import { WasmSandbox } from "../src/wasm/sandbox.ts";
import { WasmSandboxPool } from "../src/wasm_pool.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { measureFloor } from "./_floor.ts";
import { type Figure, interleavedFigure, printRatios, samplesUs } from "./_ratios.ts";

const p10s: string[] = [];
const MiB = 1 << 20;
const guest = await Deno.readFile(TESTGUEST);
const options = {
  guest,
  heapSize: 4 * MiB,
  hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
} as const;
const only = Deno.args[0] ?? "all";
const floor = await measureFloor();
const sb = await Sandbox.create(options);
const snap = await sb.snapshot();
const fib = fixtureBytes("fib");
const pool = await WasmSandboxPool.create({ module: fib, size: 2 });
const figures: Figure[] = [];
// Each figure in rounds interleaved with the raw floor's (bench/_ratios.ts), with its p10s.
const settle = () => teardownWait();
async function figure(
  label: string,
  against: "create" | "exit",
  op: () => unknown,
  perRound: number,
) {
  const all: number[] = [];
  const f = await interleavedFigure({ label, against }, async (n) => {
    const t = await samplesUs(op, n);
    all.push(...t);
    return t;
  }, { perRound, settle });
  all.splice(0, perRound); // the warm-up round
  all.sort((a, b) => a - b);
  p10s.push(all[Math.floor(all.length / 10)].toFixed(0));
  figures.push(f);
}
if (only === "all" || only === "native") {
  await figure(
    "Sandbox.create + dispose",
    "create",
    async () => await (await Sandbox.create(options)).dispose(),
    25,
  );
  // Each iteration a guest image this process has not seen (8 bytes appended to the file): no
  // parsed-image or digest memo hit.
  let n = 0;
  await figure("Sandbox.create of an unseen image + dispose", "create", async () => {
    const bytes = new Uint8Array(guest.length + 8);
    bytes.set(guest);
    new DataView(bytes.buffer).setFloat64(guest.length, n++);
    await (await Sandbox.create({ ...options, guest: bytes })).dispose();
  }, 25);
  await figure("Sandbox.create({ snapshot }) + dispose", "create", async () => {
    const s = await Sandbox.create({ snapshot: snap, hostFunctions: options.hostFunctions });
    await s.dispose();
  }, 25);
}
if (only === "all" || only === "wasm") {
  await figure("WasmSandbox create (cached) + first call + dispose", "create", async () => {
    const w = await WasmSandbox.create({ module: fib });
    await w.call("fib", 1);
    await w.dispose();
  }, 25);
  // The row above reuses VMs that earlier hits disposed; this one makes a new VM every time.
  await using fibSandbox = await WasmSandbox.create({ module: fib });
  await using fibSnap = await fibSandbox.snapshot();
  await figure(
    "WasmSandbox.create({ snapshot }) (new VM) + first call + dispose",
    "create",
    async () => {
      const w = await WasmSandbox.create({ snapshot: fibSnap });
      await w.call("fib", 1);
      await w.dispose();
    },
    25,
  );
  await figure("WasmSandboxPool.run noop", "exit", () => pool.run((w) => w.call("noop")), 250);
}
printRatios("fast start", floor, figures);
console.log(`  p10s: ${p10s.join(", ")} µs`);
if (only === "all" || only === "native") {
  // Breakdown of a cold create.
  const elf = parseElf(guest);
  const layout = computeLayout(elf, options);
  const t: Record<string, number[]> = {};
  const mark = (k: string, v: number) => (t[k] ??= []).push(v);
  for (let i = 0; i < 200; i++) {
    let a = performance.now();
    const vm = MicroVm.create();
    let b = performance.now();
    mark("vm", b - a);
    a = b;
    const mem = vm.mapMemory(0, layout.memorySize);
    b = performance.now();
    mark("map", b - a);
    a = b;
    initializeMemory(mem, layout, elf);
    b = performance.now();
    mark("init memory (JS)", b - a);
    a = b;
    vm.createVcpu(GUEST_VCPU_CONFIG);
    b = performance.now();
    mark("vcpu", b - a);
    a = b;
    vm.setRegisters(entryRegisters(layout, elf.entryOffset));
    b = performance.now();
    mark("regs", b - a);
    a = b;
    vm.runSync();
    b = performance.now();
    mark("first run", b - a);
    a = b;
    vm.destroy();
    b = performance.now();
    mark("destroy", b - a);
  }
  const med = (xs: number[]) => xs.sort((x, y) => x - y)[xs.length >> 1] * 1000;
  console.log(
    "  cold create breakdown (median µs): " +
      Object.entries(t).map(([k, v]) => `${k} ${med(v).toFixed(0)}`).join(", "),
  );
}
await pool.dispose();
await snap.dispose();
await sb.dispose();
