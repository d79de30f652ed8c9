/**
 * Code mapped by many VMs (issue 19): where the hypervisor enforces read-only memory slots, every
 * VM that maps one code snapshot points its slot at the snapshot's one host mapping (no mapping
 * per VM); a guest's write to its code never reaches another VM's code, with or without that.
 */
import assert from "node:assert/strict";
import { snapshotFromBytes, teardownWait } from "../../src/ffi/vm.ts";
import { bareGuest } from "./_bare_guest.ts";
import { kvmTest } from "./_kvm.ts";

/** Right above the bare guests' 2 MiB of memory, inside their identity-mapped first 1 GiB. */
const CODE_GPA = 0x200000;
const ORIGINAL = 0x77;
/** mov al, [CODE_GPA]; out 0x10, al */
const READ_CODE = [0x8a, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0xe6, 0x10];
/** mov byte [CODE_GPA], 0x5a; then READ_CODE */
const WRITE_THEN_READ = [0xc6, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, 0x5a, ...READ_CODE];

/** Mappings of code snapshots in this process (`memfd:hl-code`). */
function codeMappings(): number {
  teardownWait();
  return Deno.readTextFileSync("/proc/self/maps").split("\n")
    .filter((l) => l.includes("hl-code")).length;
}

/** Runs `vm` to its next `out 0x10` and returns the byte it wrote; records MMIO writes seen. */
async function byteOut(vm: ReturnType<typeof bareGuest>["vm"], mmio: number[]): Promise<number> {
  for (let i = 0; i < 4; i++) {
    await vm.run();
    const exit = vm.lastExit();
    if (exit.kind === "io_out" && exit.port === 0x10) return exit.data[0];
    if (exit.kind === "mmio" && exit.write) {
      mmio.push(exit.data[0]);
      continue;
    }
    throw new Error(`unexpected exit ${JSON.stringify(exit)}`);
  }
  throw new Error("no out 0x10");
}

kvmTest("code shared by VMs: one host mapping; a guest's write reaches no other VM", async () => {
  const before = codeMappings();
  const code = snapshotFromBytes(new Uint8Array(4096).fill(ORIGINAL));
  const writer = bareGuest(WRITE_THEN_READ);
  const readers = Array.from({ length: 8 }, () => bareGuest(READ_CODE));
  try {
    const readonly = writer.vm.mapCode(CODE_GPA, code);
    for (const r of readers) assert.equal(r.vm.mapCode(CODE_GPA, code), readonly);
    const mapped = codeMappings() - before;
    // Read-only slots: one shared mapping for all nine VMs; otherwise one private mapping each.
    assert.equal(mapped, readonly ? 1 : 9, `code mappings for 9 VMs (read-only: ${readonly})`);

    const mmio: number[] = [];
    const writerSees = await byteOut(writer.vm, mmio);
    if (readonly) {
      // The hypervisor refused the write (an MMIO exit); the code is unchanged.
      assert.deepEqual(mmio, [0x5a]);
      assert.equal(writerSees, ORIGINAL);
    } else {
      // The write went to the writer's own copy.
      assert.equal(writerSees, 0x5a);
    }
    for (const r of readers) assert.equal(await byteOut(r.vm, []), ORIGINAL);
  } finally {
    writer.vm.destroy();
    for (const r of readers) r.vm.destroy();
    code.release();
  }
  assert.equal(codeMappings(), before, "the shared mapping goes with the last VM and the handle");
});
