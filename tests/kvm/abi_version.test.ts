import assert from "node:assert/strict";
import { ABI_VERSION, PEB_ADDR, PebOffset, Port } from "../../src/abi.ts";
import { parseElf } from "../../src/elf.ts";
import {
  computeLayout,
  entryRegisters,
  initializeMemory,
  readGuestAbiVersion,
} from "../../src/layout.ts";
import { abiVersionError } from "../../src/sandbox.ts";
import { GUEST_VCPU_CONFIG } from "../../src/system.ts";
import { decodeFrame } from "../../src/wire.ts";
import { MicroVm } from "../../src/ffi/vm.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

// The guest half of the ABI version check (the host half is in tests/unit/sandbox_args.test.ts):
// the guest reports its version and refuses a host of another version.

kvmTest("a guest told of another host ABI version reports its own and aborts", async () => {
  const elf = parseElf(await Deno.readFile(TESTGUEST));
  const layout = computeLayout(elf, {});
  const vm = MicroVm.create();
  try {
    const memory = vm.mapMemory(0, layout.memorySize);
    initializeMemory(memory, layout, elf);
    new DataView(memory.buffer, memory.byteOffset).setUint32(
      PEB_ADDR + PebOffset.abiVersion,
      ABI_VERSION + 1,
      true,
    );
    vm.createVcpu(GUEST_VCPU_CONFIG);
    vm.setRegisters(entryRegisters(layout, elf.entryOffset));
    const exit = (await vm.run(), vm.lastExit());
    assert.equal(exit.kind, "io_out");
    assert.equal(exit.kind === "io_out" && exit.port, Port.ABORT);
    const frame = decodeFrame(
      memory.subarray(layout.outputAddr, layout.outputAddr + layout.outputSize),
    );
    assert.equal(frame.kind, "PANIC");
    assert.match(
      frame.kind === "PANIC" ? frame.message : "",
      new RegExp(`host ABI version ${ABI_VERSION + 1}`),
    );
    assert.equal(readGuestAbiVersion(memory), ABI_VERSION);
    // What the host makes of it.
    const error = abiVersionError(readGuestAbiVersion(memory));
    assert.equal(error, undefined, `version ${ABI_VERSION} is ours`);
  } finally {
    vm.destroy();
  }
});
