/**
 * The fast-start figures of issue 9 in isolation (ratios to the raw floor of the same run, and the
 * p10s, steadier than medians on a loaded host), with a breakdown of a cold create:
 *
 *   deno run -A bench/_fast_start.ts [all|native|wasm]
 */
import { Sandbox } from "../src/sandbox.ts";
import { MicroVm } from "../src/ffi/vm.ts";
import { parseElf } from "../src/elf.ts";
import { computeLayout, entryRegisters, initializeMemory } from "../src/layout.ts";
import { GUEST_VCPU_CONFIG } from "../src/system.ts";
import { WasmSandbox } from "../src/wasm/sandbox.ts";
import { WasmSandboxPool } from "../src/wasm_pool.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { measureFloor } from "./_floor.ts";
import { printRatios } from "./_ratios.ts";

const p10s: string[] = [];
async function medianUs(op: () => unknown, n: number): Promise<number> {
  for (let i = 0; i < 20; i++) await op();
  const t = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = performance.now();
    await op();
    t[i] = (performance.now() - a) * 1000;
  }
  t.sort();
  p10s.push(t[Math.floor(n / 10)].toFixed(0));
  return t[n >> 1];
}

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
const figures = [];
if (only === "all" || only === "native") {
  figures.push(
    {
      label: "Sandbox.create + dispose",
      medianUs: await medianUs(async () => await (await Sandbox.create(options)).dispose(), 200),
      against: "create" as const,
    },
    {
      // Each iteration a guest image this process has not seen (8 bytes appended to the file):
      // no parsed-image or digest memo hit.
      label: "Sandbox.create of an unseen image + dispose",
      medianUs: await (async () => {
        let n = 0;
        const unseen = () => {
          const bytes = new Uint8Array(guest.length + 8);
          bytes.set(guest);
          new DataView(bytes.buffer).setFloat64(guest.length, n++);
          return bytes;
        };
        return await medianUs(
          async () => await (await Sandbox.create({ ...options, guest: unseen() })).dispose(),
          100,
        );
      })(),
      against: "create" as const,
    },
    {
      label: "Sandbox.create({ snapshot }) + dispose",
      medianUs: await medianUs(async () => {
        const s = await Sandbox.create({ snapshot: snap, hostFunctions: options.hostFunctions });
        await s.dispose();
      }, 300),
      against: "create" as const,
    },
  );
}
if (only === "all" || only === "wasm") {
  figures.push(
    {
      label: "WasmSandbox create (cached) + first call + dispose",
      medianUs: await medianUs(async () => {
        const w = await WasmSandbox.create({ module: fib });
        await w.call("fib", 1);
        await w.dispose();
      }, 200),
      against: "create" as const,
    },
    {
      label: "WasmSandboxPool.run noop",
      medianUs: await medianUs(() => pool.run((w) => w.call("noop")), 2000),
      against: "exit" as const,
    },
  );
}
printRatios("fast start", floor, figures);
console.log(
  `  p10s: ${p10s.join(", ")} µs; floor p10 ratios: ${
    figures.map((f, i) =>
      (Number(p10s[i]) / (f.against === "create" ? floor.create_us.p10 : floor.exit_us.p10))
        .toFixed(2)
    ).join(", ")
  }`,
);
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
