// The guest runs at CPL 3 (docs/abi.md, "Privilege and system pages"): it cannot touch the host's
// pages or privileged state, and its faults are reported from the CPU's own frame.
import assert from "node:assert/strict";
import { GuestFaultError, ProtocolError, Sandbox, SandboxPoisonedError } from "../../mod.ts";
import {
  GDT_ADDR,
  IDT_ADDR,
  PAGE_SIZE,
  PEB_ADDR,
  PML4_ADDR,
  Port,
  PT_BASE_ADDR,
  RING0_STACK_ADDR,
  STUBS_ADDR,
  SYSTEM_TABLES_ADDR,
  SYSTEM_TABLES_SIZE,
  TSS_ADDR,
} from "../../src/abi.ts";
import { parseElf } from "../../src/elf.ts";
import { computeLayout, entryRegisters, initializeMemory } from "../../src/layout.ts";
import { GUEST_VCPU_CONFIG, readCpuFault, stubVector } from "../../src/system.ts";
import { FrameDecoder, FrameEncoder } from "../../src/wire.ts";
import { ExitKind, MicroVm } from "../../src/ffi/vm.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

const GP = 13;
const PF = 14;
/** #PF error code bits. */
const PF_PRESENT = 1n;
const PF_WRITE = 2n;
const PF_USER = 4n;
const PF_FETCH = 0x10n;

/** A fresh sandbox per failure: every fault poisons. */
async function failure(
  call: (sb: Sandbox) => Promise<unknown>,
): Promise<{ error: unknown; logs: string[] }> {
  const logs: string[] = [];
  const sb = await Sandbox.create({ guest: TESTGUEST, onLog: (_level, m) => logs.push(m) });
  try {
    const error = await call(sb).then(
      (v) => assert.fail(`expected a failure, got ${String(v)}`),
      (e) => e,
    );
    assert.equal(sb.poisoned, true, "a fault poisons the sandbox");
    await assert.rejects(sb.call("noop"), SandboxPoisonedError);
    return { error, logs };
  } finally {
    await sb.dispose();
  }
}

function assertFault(
  error: unknown,
  expected: { vector: number; errorCode?: bigint; rip?: bigint; address?: bigint },
  what: string,
): asserts error is GuestFaultError {
  assert.ok(error instanceof GuestFaultError, `${what}: ${String(error)}`);
  assert.equal(error.vector, expected.vector, `${what}: vector (${error.message})`);
  assert.equal(error.errorCode, expected.errorCode, `${what}: error code (${error.message})`);
  if (expected.rip !== undefined) assert.equal(error.rip, expected.rip, `${what}: rip`);
  if ("address" in expected) assert.equal(error.address, expected.address, `${what}: address`);
}

kvmTest("ring 3: privileged and denied instructions fault with the CPU's details", async (t) => {
  // op → [name, vector, error code, offset of the faulting instruction from the logged address]
  const cases: [number, string, number, bigint | undefined, bigint][] = [
    [0, "lidt", GP, 0n, 0n],
    [1, "lgdt", GP, 0n, 0n],
    [2, "mov rax, cr3", GP, 0n, 0n],
    [13, "mov rax, cr0", GP, 0n, 0n],
    [3, "wrmsr (kvmclock MSR)", GP, 0n, 9n],
    [4, "rdmsr", GP, 0n, 5n],
    [5, "hlt", GP, 0n, 0n],
    [6, "cli, then a spin it never reaches", GP, 0n, 0n],
    [7, "sti; hlt", GP, 0n, 0n],
    [12, "ltr", GP, 0n, 4n],
    [9, "out to a port outside the I/O bitmap", GP, 0n, 2n],
    [10, "out to the FAULT port", GP, 0n, 4n],
    // int3 is a trap: the CPU reports the instruction after it.
    [11, "int3", 3, undefined, 1n],
  ];
  for (const [op, name, vector, errorCode, offset] of cases) {
    await t.step(name, async () => {
      const { error, logs } = await failure((sb) => sb.call("forbidden_at", op));
      assert.equal(logs.length, 1, "the guest logged the instruction's address");
      const at = BigInt(logs[0]);
      assertFault(error, { vector, errorCode, rip: at + offset }, name);
    });
  }
  await t.step("syscall never reaches CPL 0", async () => {
    const { error, logs } = await failure((sb) => sb.call("forbidden_at", 8));
    assert.ok(error instanceof GuestFaultError, String(error));
    if (error.vector === 6) {
      // EFER.SCE is off: #UD at the syscall (hardware KVM).
      assertFault(error, { vector: 6, rip: BigInt(logs[0]) }, "syscall");
    } else {
      // kvm_pvm ignores EFER.SCE and jumps to LSTAR (0) without leaving user mode: a user-mode
      // instruction fetch from the never-mapped null page.
      assertFault(
        error,
        { vector: PF, errorCode: PF_USER | PF_FETCH, rip: 0n, address: 0n },
        "syscall",
      );
    }
  });
  await t.step("in from a guest port is a protocol violation, not a hang", async () => {
    const { error } = await failure((sb) => sb.call("forbidden", 14));
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(error.message, /read I\/O port 0x7f00/);
  });
});

/** The host-owned pages and one address in each (not where the CPU pushes a fault's frame). */
const HOST_PAGES: [string, number][] = [
  ["GDT", GDT_ADDR + 8],
  ["IDT", IDT_ADDR + 14 * 16],
  ["TSS", TSS_ADDR + 4],
  ["TSS I/O bitmap", SYSTEM_TABLES_ADDR + PAGE_SIZE + 0xfe0],
  ["exception stubs", STUBS_ADDR + 14 * 16],
  ["ring-0 stack", RING0_STACK_ADDR + 64],
  ["PML4", PML4_ADDR],
  ["first page table", PT_BASE_ADDR + 8],
];

kvmTest("ring 3: the host's pages can be neither written nor read by the guest", async (t) => {
  for (const [name, address] of HOST_PAGES) {
    await t.step(`write ${name}`, async () => {
      const { error } = await failure((sb) => sb.call("write_addr", BigInt(address)));
      assertFault(error, {
        vector: PF,
        errorCode: PF_PRESENT | PF_WRITE | PF_USER,
        address: BigInt(address),
      }, name);
    });
  }
  await t.step("read the page tables", async () => {
    const { error } = await failure((sb) => sb.call("read_addr", BigInt(PT_BASE_ADDR)));
    assertFault(error, {
      vector: PF,
      errorCode: PF_PRESENT | PF_USER,
      address: BigInt(PT_BASE_ADDR),
    }, "read");
  });
});

kvmTest("ring 3: W^X holds — data pages do not execute, host stubs do not run", async (t) => {
  await t.step("jump into the PEB (a data page)", async () => {
    const { error } = await failure((sb) => sb.call("exec_addr", BigInt(PEB_ADDR + 0x100)));
    const at = BigInt(PEB_ADDR + 0x100);
    assertFault(error, {
      vector: PF,
      errorCode: PF_PRESENT | PF_USER | PF_FETCH,
      rip: at,
      address: at,
    }, "PEB");
  });
  await t.step("jump into a host exception stub", async () => {
    const at = BigInt(STUBS_ADDR + 14 * 16);
    const { error } = await failure((sb) => sb.call("exec_addr", at));
    assertFault(error, {
      vector: PF,
      errorCode: PF_PRESENT | PF_USER | PF_FETCH,
      rip: at,
      address: at,
    }, "stub");
  });
});

/**
 * Boots the test guest on a bare MicroVm (the layers under `Sandbox`), so the test can compare
 * guest memory before and after a call.
 */
async function bootTestguest() {
  const elf = parseElf(await Deno.readFile(TESTGUEST));
  const layout = computeLayout(elf, {});
  const vm = MicroVm.create();
  const memory = vm.mapMemory(0, layout.memorySize);
  initializeMemory(memory, layout, elf);
  vm.createVcpu(GUEST_VCPU_CONFIG);
  vm.setRegisters(entryRegisters(layout, elf.entryOffset));
  assert.equal(await vm.run(), ExitKind.IoOut);
  assert.equal(vm.exitPort, Port.DONE, "init done");
  const input = new FrameEncoder(
    memory.subarray(layout.inputAddr, layout.inputAddr + layout.inputSize),
    "inputSize",
  );
  const output = new FrameDecoder(
    memory.subarray(layout.outputAddr, layout.outputAddr + layout.outputSize),
  );
  return { vm, memory, layout, input, output };
}

kvmTest(
  "ring 3: after a write to each host page, the host's view of its pages is unchanged",
  async () => {
    for (const [name, address] of HOST_PAGES) {
      const { vm, memory, layout, input } = await bootTestguest();
      try {
        const hostPages = () => [
          memory.slice(SYSTEM_TABLES_ADDR, SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE),
          memory.slice(STUBS_ADDR, STUBS_ADDR + PAGE_SIZE),
          memory.slice(PML4_ADDR, layout.inputAddr),
        ];
        const before = hostPages();
        input.encode({
          kind: "CALL",
          name: "write_addr",
          args: [{ type: "u64", value: BigInt(address) }],
        });
        assert.equal(await vm.run(), ExitKind.IoOut);
        assert.equal(vm.exitPort, Port.FAULT, `${name}: a fault`);
        const vector = stubVector(vm.getRegisters().rip, vm.getSpecialRegisters().cs);
        assert.equal(vector, PF, `${name}: reported by the #PF stub`);
        const fault = readCpuFault(memory, PF);
        assert.equal(fault.errorCode, PF_PRESENT | PF_WRITE | PF_USER, name);
        assert.equal(fault.cs & 3n, 3n, `${name}: the fault came from CPL 3`);
        assert.equal(vm.getSpecialRegisters().cr2, BigInt(address), `${name}: CR2`);
        // Byte for byte the same: the CPU did not even set an accessed or dirty bit.
        assert.deepEqual(hostPages(), before, `${name}: host pages unchanged`);
        assert.notEqual(memory[address], 0xa5, `${name}: the guest's byte did not land`);
      } finally {
        vm.destroy();
      }
    }
  },
);

kvmTest(
  "ring 3: a guest that writes the FAULT port itself gets #GP, not a forged fault",
  async () => {
    // op 10 is `out` to the FAULT port from CPL 3: the I/O bitmap denies it, so the CPU raises #GP
    // and the host reports that, never what the guest might have put in its registers or memory.
    const { error } = await failure((sb) => sb.call("forbidden", 10));
    assertFault(error, { vector: GP, errorCode: 0n }, "out FAULT");
  },
);
