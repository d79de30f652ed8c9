import assert from "node:assert/strict";
import { PEB_ADDR, PebOffset, PML4_ADDR, Port } from "../../src/abi.ts";
import { parseElf } from "../../src/elf.ts";
import {
  computeLayout,
  initializeMemory,
  initialRegisters,
  readGuestAbiVersion,
} from "../../src/layout.ts";
import { abiVersionError } from "../../src/sandbox.ts";
import { decodeFrame } from "../../src/wire.ts";
import { MicroVm } from "../../ffi/vm.ts";
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
      2,
      true,
    );
    vm.createVcpu(PML4_ADDR);
    const regs = initialRegisters(layout, elf.entryOffset);
    vm.setRegisters({ rip: BigInt(regs.rip), rsp: BigInt(regs.rsp), rdi: BigInt(regs.rdi) });
    const exit = (await vm.run(), vm.lastExit());
    assert.equal(exit.kind, "io_out");
    assert.equal(exit.kind === "io_out" && exit.port, Port.ABORT);
    const frame = decodeFrame(
      memory.subarray(layout.outputAddr, layout.outputAddr + layout.outputSize),
    );
    assert.equal(frame.kind, "PANIC");
    assert.match(frame.kind === "PANIC" ? frame.message : "", /host ABI version 2/);
    assert.equal(readGuestAbiVersion(memory), 1);
    // What the host makes of it.
    const error = abiVersionError(readGuestAbiVersion(memory));
    assert.equal(error, undefined, "version 1 is ours");
  } finally {
    vm.destroy();
  }
});
