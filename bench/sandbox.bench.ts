/**
 * Native-guest benchmarks: create, noop call, host-function round trip and 1 MiB echo, each
 * against a floor measured in the same run (a bare VM doing the same number of exits), plus the
 * ioctls and VM exits per operation, printed once: counts do not drift with machine speed, so
 * they mean something under the nested emulator too.
 *
 *   deno task bench        (builds, then runs through the nested-KVM harness if needed)
 */
import { Sandbox } from "../src/sandbox.ts";
import { globalStats } from "../ffi/vm.ts";
import { bareGuest } from "../tests/kvm/_bare_guest.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { printCountsPerOp } from "./_counts.ts";

const MiB = 1024 * 1024;
const guest = await Deno.readFile(TESTGUEST);
const options = {
  guest,
  heapSize: 4 * MiB,
  hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
} as const;
const sb = await Sandbox.create(options);
const payload = new Uint8Array(MiB).fill(7);
// A bare VM whose guest exits on every run: `out 0x10, al; jmp back`. One run = one exit.
const floor = bareGuest([0xe6, 0x10, 0xeb, 0xfc]).vm;

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

Deno.bench("bare VM: create + vCPU + run to hlt + destroy (floor)", {
  group: "create",
  baseline: true,
}, () => {
  const { vm } = bareGuest([0xf4]);
  vm.runSync();
  vm.destroy();
});

Deno.bench("Sandbox.create (load ELF, init guest) + dispose", { group: "create" }, async () => {
  const s = await Sandbox.create(options);
  await s.dispose();
});

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
