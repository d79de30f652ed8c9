// What a cold `Sandbox.create` costs the guest (issue 19): the pages its start touches and how
// the first call of a new VM waits for its run. Counts and arguments, never times. The start must
// run in each create here: per-image start snapshots are off (`startSnapshot: false`).
import assert from "node:assert/strict";
import { Sandbox } from "../../mod.ts";
import { ExitKind, MicroVm } from "../../src/ffi/vm.ts";
import { parseElf } from "../../src/elf.ts";
import { computeLayout, entryRegisters, initializeMemory } from "../../src/layout.ts";
import { GUEST_VCPU_CONFIG } from "../../src/system.ts";
import { type Frame, FrameDecoder, FrameEncoder, type Value } from "../../src/wire.ts";
import { stateOf } from "../../src/snapshot.ts";
import { PAGE_SIZE } from "../../src/abi.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

const IMPORTGUEST = new URL(
  "../../guest/target/x86_64-unknown-linux-gnu/release/importguest",
  import.meta.url,
).pathname;

/** Whether page `page` holds data in a snapshot's page bitmap. */
function hasPage(bitmap: Uint8Array, page: number): boolean {
  return (bitmap[page >> 3] & (1 << (page & 7))) !== 0;
}

kvmTest(
  "cold start: the start and an argument-less call touch no heap page; the heap is claimed as used",
  async () => {
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      heapSize: 1 << 20,
      startSnapshot: false,
    });
    await sb.call("noop");
    await using before = await sb.snapshot();
    const { layout, memory } = stateOf(before);
    const first = layout.heapAddr / PAGE_SIZE;
    const last = (layout.heapAddr + layout.heapSize) / PAGE_SIZE - 1;
    // A call without arguments allocates nothing (its name is looked up in the input buffer), and
    // the heap is claimed at the first allocation, a page at a time: no heap page is touched yet.
    // Before, the start's claim of the whole region wrote talc's tags on its first and last page.
    const bitmap = memory.bitmap();
    assert.equal(hasPage(bitmap, first), false);
    assert.equal(hasPage(bitmap, last), false);
    const heapPages = (b: Uint8Array) => {
      let n = 0;
      for (let p = first; p <= last; p++) n += hasPage(b, p) ? 1 : 0;
      return n;
    };
    assert.equal(heapPages(bitmap), 0);
    // A call with a string argument allocates: the claim starts at the heap's first page.
    assert.equal(await sb.call("echo", "hi"), "hi");
    await using echoed = await sb.snapshot();
    const afterEcho = stateOf(echoed).memory.bitmap();
    assert.equal(hasPage(afterEcho, first), true);
    assert.equal(hasPage(afterEcho, last), false);
    // The whole heap stays usable: 96 pushes of 8 bytes grow a vector through several claims,
    // and a 512 KiB value (bigger than half the heap) fits once the claim reaches the end.
    for (let i = 1; i <= 96; i++) {
      assert.equal(
        await sb.call("heap_push", BigInt(i)),
        (BigInt(i) << 32n) | BigInt(i * (i + 1) / 2),
      );
    }
    const big = new Uint8Array(512 * 1024).fill(7);
    assert.equal(await sb.call("sum_bytes", big), 7n * BigInt(big.length));
    await using after = await sb.snapshot();
    assert.ok(heapPages(stateOf(after).memory.bitmap()) > 1);
  },
);

kvmTest(
  "cold start: the first call of a new VM spins longer for its run, later calls adaptively",
  async () => {
    const spins: (number | undefined)[] = [];
    const proto = MicroVm.prototype as unknown as { run(spinNs?: number): Promise<number> };
    const run = proto.run;
    proto.run = function (this: MicroVm, spinNs?: number) {
      spins.push(spinNs);
      return run.call(this, spinNs);
    };
    try {
      await using sb = await Sandbox.create({
        guest: TESTGUEST,
        heapSize: 1 << 20,
        startSnapshot: false,
      });
      await sb.call("noop");
      await sb.call("noop");
      // The initialisation's spin, the first call's, then the VM's own (adaptive) budget.
      assert.equal(spins.length, 3);
      assert.ok(spins[0]! > 0 && spins[1]! > 0);
      assert.equal(spins[2], undefined);
      // A sandbox from a snapshot is a new VM too: its first call gets the longer spin.
      await using snap = await sb.snapshot();
      await using copy = await Sandbox.create({ snapshot: snap });
      spins.length = 0;
      await copy.call("noop");
      await copy.call("noop");
      assert.deepEqual(spins, [spins[0], undefined]);
      assert.ok(spins[0]! > 0);
    } finally {
      proto.run = run;
    }
  },
);

kvmTest(
  "cold start: a start's function table is decoded once per image, then compared",
  async () => {
    await using a = await Sandbox.create({
      guest: TESTGUEST,
      heapSize: 1 << 20,
      startSnapshot: false,
    });
    await using b = await Sandbox.create({
      guest: TESTGUEST,
      heapSize: 1 << 20,
      startSnapshot: false,
    });
    // The same bytes: the same (frozen) signatures, not a second decode.
    assert.ok(a.functions.length > 1);
    assert.deepEqual(a.functions.map((f) => f.name), b.functions.map((f) => f.name));
    for (const [i, f] of b.functions.entries()) {
      assert.equal(f, a.functions[i]);
      assert.ok(Object.isFrozen(f) && Object.isFrozen(f.params));
    }
    assert.equal(await b.call("add", 2, 3), 5);
    // Another image's table is its own.
    await using c = await Sandbox.create({
      guest: IMPORTGUEST,
      hostFunctions: {
        now_ms: { params: [], result: "u64", fn: () => 1n },
        scale: { params: ["i32", "f64"], result: "f64", fn: (x: number, f: number) => x * f },
        note: { params: ["string", "bytes"], result: "void", fn: () => {} },
        "math.double": { params: ["i32"], result: "i32", fn: (x: number) => 2 * x },
      },
    });
    assert.notDeepEqual(c.functions.map((f) => f.name), a.functions.map((f) => f.name));
    assert.ok(c.imports !== undefined && c.imports.length > 0);
  },
);

kvmTest("cold start: the runtime's CALL errors are unchanged by the borrowed name lookup", () => {
  // Drives the test guest directly: frames the host library never sends.
  const elf = parseElf(Deno.readFileSync(TESTGUEST));
  const layout = computeLayout(elf, { heapSize: 1 << 20 });
  const vm = MicroVm.create();
  try {
    vm.createVcpu(GUEST_VCPU_CONFIG);
    const memory = vm.mapMemory(0, layout.memorySize);
    initializeMemory(memory, layout, elf);
    vm.setRegisters(entryRegisters(layout, elf.entryOffset));
    const input = memory.subarray(layout.inputAddr, layout.inputAddr + layout.inputSize);
    const output = new FrameDecoder(
      memory.subarray(layout.outputAddr, layout.outputAddr + layout.outputSize),
    );
    const encoder = new FrameEncoder(input);
    const exchange = (write: () => void): Frame => {
      write();
      assert.equal(vm.runSync(), ExitKind.IoOut);
      return output.decode();
    };
    assert.equal(exchange(() => {}).kind, "FUNCTION_TABLE");
    const call = (name: string, args: Value[]) =>
      exchange(() => encoder.encode({ kind: "CALL", name, args }));
    assert.deepEqual(call("add", [{ type: "i32", value: 2 }, { type: "i32", value: 3 }]), {
      kind: "RETURN",
      value: { type: "i32", value: 5 },
    });
    assert.deepEqual(call("nope", []), {
      kind: "ERROR",
      code: 1,
      message: 'unknown function "nope"',
    });
    assert.deepEqual(call("add", [{ type: "i32", value: 2 }]), {
      kind: "ERROR",
      code: 2,
      message: "add expects 2 arguments, got 1",
    });
    const other = exchange(() => encoder.encode({ kind: "RETURN", value: { type: "void" } }));
    assert.deepEqual(other, {
      kind: "ERROR",
      code: 2,
      message: "expected a CALL frame, got RETURN",
    });
    // A CALL whose payload has a byte left over: malformed, as a whole decode reports it.
    const bad = exchange(() => {
      const n = encoder.encode({ kind: "CALL", name: "noop", args: [] });
      const view = new DataView(input.buffer, input.byteOffset);
      view.setUint32(4, view.getUint32(4, true) + 1, true);
      input[n] = 0;
    });
    assert.equal(bad.kind, "ERROR");
    assert.match((bad as { message: string }).message, /^malformed CALL frame: /);
    assert.deepEqual(call("noop", []), { kind: "RETURN", value: { type: "void" } });
  } finally {
    vm.destroy();
  }
});
