/**
 * Native-guest benchmarks: create, noop call, host-function round trip and 1 MiB echo. Printed
 * once, before Deno's own table:
 * - each figure's median as a ratio to the raw KVM floor measured in the same run by a C program
 *   with no library (bench/floor/raw_kvm.c: a CPL-3 guest, create + first exit + destroy, and one
 *   exit round trip);
 * - the ioctls and VM exits per operation: counts do not drift with machine speed, so they mean
 *   something under the nested emulator too.
 *
 *   deno task bench        (builds, then runs natively, or through the nested-KVM harness)
 */
import { Sandbox } from "../src/sandbox.ts";
import { globalStats, teardownWait } from "../src/ffi/vm.ts";
import { bareGuest } from "../tests/kvm/_bare_guest.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { printCountsPerOp } from "./_counts.ts";
import { measureFloor } from "./_floor.ts";
import { interleavedFigure, medianUs, printRatios, samplesUs } from "./_ratios.ts";
import { cpuPerCall, syscallsPerCall, timerGapsDuringSpin } from "./_call_path.ts";
import { printSnapshotFigures } from "./_snapshot.ts";

const MiB = 1024 * 1024;
const guest = await Deno.readFile(TESTGUEST);
const options = {
  guest,
  heapSize: 4 * MiB,
  hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
} as const;
const sb = await Sandbox.create(options);
const payload = new Uint8Array(MiB).fill(7);
// A bare CPL-3 VM whose guest exits on every run: `out 0x10, al; jmp back`. One run = one exit.
const floor = bareGuest([0xe6, 0x10, 0xeb, 0xfc]).vm;

const rawFloor = await measureFloor();
let unseen = 0;
// Each figure is timed in rounds interleaved with rounds of the raw floor (bench/_ratios.ts):
// its ratio is to the floor of those rounds, not to `rawFloor` alone.
const settle = () => teardownWait();
const createRounds = { perRound: 25, settle };
const exitRounds = { perRound: 250, settle };
const ratios = [
  await interleavedFigure(
    {
      label: "Sandbox.create (from the image's start snapshot, recycled VM) + dispose",
      against: "create",
      goal: "≤ 1.3× (issues 9, 19)",
    },
    (n) => samplesUs(async () => await (await Sandbox.create(options)).dispose(), n),
    createRounds,
  ),
  // What a cold create was before issue 19's per-image start snapshots: the ELF loaded and the
  // guest's start run in a new VM every time (`startSnapshot: false`).
  await interleavedFigure(
    { label: "Sandbox.create (load ELF, init guest in a new VM) + dispose", against: "create" },
    (n) =>
      samplesUs(
        async () => await (await Sandbox.create({ ...options, startSnapshot: false })).dispose(),
        n,
      ),
    createRounds,
  ),
  // The rows above parse the image once per process (src/content_memo.ts); here each create
  // gets bytes this process has not seen (8 bytes appended), so it parses and hashes them, runs
  // the start in a new VM and takes the image's start snapshot (a truly first create).
  await interleavedFigure(
    { label: "Sandbox.create of an image not seen before + dispose", against: "create" },
    (n) =>
      samplesUs(async () => {
        const bytes = new Uint8Array(guest.length + 8);
        bytes.set(guest);
        new DataView(bytes.buffer).setFloat64(guest.length, unseen++);
        await (await Sandbox.create({ ...options, guest: bytes })).dispose();
      }, n),
    createRounds,
  ),
  await interleavedFigure(
    { label: "bare VM via our FFI: create + run to first exit + destroy", against: "create" },
    (n) =>
      samplesUs(() => {
        const { vm } = bareGuest([0xe6, 0x10]);
        vm.runSync();
        vm.destroy();
      }, n),
    createRounds,
  ),
  await interleavedFigure(
    { label: "one VM exit via our FFI, sync path", against: "exit" },
    (n) => samplesUs(() => floor.runSync(), n),
    exitRounds,
  ),
  await interleavedFigure(
    { label: "one VM exit via our FFI, async path", against: "exit" },
    (n) => samplesUs(() => floor.run(), n),
    exitRounds,
  ),
  await interleavedFigure(
    { label: "noop call (callSync)", against: "exit", goal: "≤ 1.15× (issue 8)" },
    (n) => samplesUs(() => sb.callSync("noop"), n),
    exitRounds,
  ),
  await interleavedFigure(
    { label: "noop call (async call)", against: "exit", goal: "≤ 1.3× (issue 8)" },
    (n) => samplesUs(() => sb.call("noop"), n),
    exitRounds,
  ),
  await interleavedFigure(
    {
      label: "host-function round trip (sync host fn, 2 exits)",
      against: "exit",
      goal: "≤ 2.4× (issue 8)",
    },
    (n) => samplesUs(() => sb.call("call_host", "double", 21), n),
    exitRounds,
  ),
  await interleavedFigure(
    { label: "1 MiB echo_bytes", against: "exit" },
    (n) => samplesUs(() => sb.call("echo_bytes", payload), n),
    { perRound: 25, rounds: 8, settle },
  ),
] as const;
printRatios("native guest", rawFloor, ratios);
{
  // The 1 MiB echo's goal is one raw exit plus two copies of 1 MiB (the host's encode and
  // decode); the guest copies it twice more inside its run.
  const target = new Uint8Array(MiB);
  const memcpy = await medianUs(() => target.set(payload), 500);
  const echo = ratios.find((r) => r.label === "1 MiB echo_bytes")!.medianUs;
  const goal = ratios.find((r) => r.label === "1 MiB echo_bytes")!.floorUs! + 2 * memcpy;
  console.log(
    `  memcpy of 1 MiB ${memcpy.toFixed(1)} µs: 1 MiB echo ${echo.toFixed(1)} µs against the ` +
      `goal raw exit + 2 × memcpy = ${goal.toFixed(1)} µs (${(echo / goal).toFixed(2)}×)`,
  );
}

// Issue 9: create from a snapshot, restore, pool.run (ratios to the same floor), memory per
// sandbox, and restore cost by guest size and pages dirtied.
await printSnapshotFigures(rawFloor, options);

console.log("call path:");
for (
  const [label, op] of [["noop call (async)", () => sb.call("noop")], [
    "noop call (callSync)",
    () => sb.callSync("noop"),
  ]] as const
) {
  console.log(`  CPU time per ${label}: ${(await cpuPerCall(op, 2000)).toFixed(1)} µs`);
}
for (const mode of ["async", "sync", "host"] as const) {
  const s = await syscallsPerCall(mode);
  console.log(
    s === undefined
      ? "  syscalls per call: strace not found (apt-get install strace)"
      : `  syscalls per ${mode} call (strace -c -f, 2000 calls): ${s.total.toFixed(2)} ` +
        `(ioctl ${s.ioctl.toFixed(2)}, futex ${s.futex.toFixed(2)})`,
  );
}
{
  await using spinner = await Sandbox.create(options);
  const g = await timerGapsDuringSpin(spinner, "spin", 2000);
  console.log(
    `  a 1 ms interval while a guest spins 2 s in call(): ${g.ticks} ticks, gap p50 ` +
      `${g.p50.toFixed(2)} ms, p99 ${g.p99.toFixed(2)} ms (goal ≤ 5 ms), max ${
        g.max.toFixed(2)
      } ms`,
  );
}

console.log("counts (deterministic):");
{
  const before = globalStats().ioctls;
  const created = await Sandbox.create(options);
  const s = created.stats();
  await created.dispose();
  console.log(
    `  Sandbox.create (incl. guest init) + dispose: ${globalStats().ioctls - before} ioctls ` +
      `(${s.ioctls} on the VM), ${s.exits} VM exits`,
  );
}
await printCountsPerOp("noop call", sb, () => sb.call("noop"));
await printCountsPerOp(
  "host-function round trip (call_host)",
  sb,
  () => sb.call("call_host", "double", 21),
);
await printCountsPerOp("1 MiB echo_bytes", sb, () => sb.call("echo_bytes", payload), 5);

Deno.bench("bare VM: create + vCPU + run to first exit + destroy (floor)", {
  group: "create",
  baseline: true,
}, () => {
  const { vm } = bareGuest([0xe6, 0x10]);
  vm.runSync();
  vm.destroy();
});

Deno.bench(
  "Sandbox.create (from the image's start snapshot, recycled VM) + dispose",
  { group: "create" },
  async () => {
    const s = await Sandbox.create(options);
    await s.dispose();
  },
);

Deno.bench(
  "Sandbox.create (load ELF, init guest in a new VM) + dispose",
  { group: "create" },
  async () => {
    const s = await Sandbox.create({ ...options, startSnapshot: false });
    await s.dispose();
  },
);

Deno.bench("one VM exit, async path (floor)", { group: "call", baseline: true }, async () => {
  await floor.run();
});

Deno.bench("one VM exit, sync path", { group: "call" }, () => {
  floor.runSync();
});

Deno.bench("noop call (async)", { group: "call" }, async () => {
  await sb.call("noop");
});

Deno.bench("noop call (callSync)", { group: "call" }, () => {
  sb.callSync("noop");
});

Deno.bench("host-function round trip", { group: "call" }, async () => {
  await sb.call("call_host", "double", 21);
});

Deno.bench("1 MiB echo_bytes", { group: "call" }, async () => {
  await sb.call("echo_bytes", payload);
});

globalThis.addEventListener("unload", () => {
  floor.destroy();
  sb.dispose();
});
