// The mechanics Wasm guard pages rest on (docs/wasm.md, "Guard pages"), on this machine's KVM with
// the host's own system tables: a page-table entry the host writes between runs (not present →
// present) is seen by the guest at once; a #PF at CPL 3 reaches the host with CR2, the error code
// and the faulting RIP; the host resumes the guest at the faulting RIP or at another one, with
// registers it chose, through the #PF stub's `iretq`; and an entry the host clears again
// faults once the host has dropped the page's backing (KVM's MMU notifier forgets the translation).
// Clearing the entry alone is not enough on kvm_pvm: without the drop the old translation stayed
// in use, even across a KVM_SET_SREGS with another CR3 or CR4.PGE toggled (measured on the AMD EPYC
// kernel-6.18 host), as KVM's shadow MMU tracks only the guest's own writes to its page tables.
import assert from "node:assert/strict";
import {
  PML4_ADDR,
  Port,
  PTE_PRESENT,
  PTE_USER,
  PTE_WRITABLE,
  RING0_STACK_TOP,
} from "../../src/abi.ts";
import {
  GUEST_VCPU_CONFIG,
  readCpuFault,
  stubVector,
  writeSystemTables,
} from "../../src/system.ts";
import { ExitKind, MicroVm } from "../../src/ffi/vm.ts";
import { kvmTest } from "./_kvm.ts";

const PF = 14;
const PDPT = PML4_ADDR + 0x1000;
const PD = PML4_ADDR + 0x2000;
const PT = PML4_ADDR + 0x3000;
/** The page directory and page table of the reservation (virtual 1 GiB, PDPT entry 1). */
const RES_PD = PML4_ADDR + 0x4000;
const RES_PT = PML4_ADDR + 0x5000;
const RESERVATION = 0x4000_0000n;
/** Guest-physical backing of the reservation: the second 2 MiB. */
const BACKING = 0x20_0000;
const CODE = 0x10000;
const HANDLER = 0x10100;
const STACK_TOP = 0x80000;
const ACCESSED_DIRTY = 0x60n;
const NX = 1n << 63n;
const USER_RW = BigInt(PTE_PRESENT | PTE_WRITABLE | PTE_USER) | ACCESSED_DIRTY;

/**
 * At CODE: `mov rbx, RESERVATION; mov rax, [rbx]` (the access, at CODE + 7);
 * `mov dx, DONE; out dx, eax`; the same read again (at CODE + 15) and `out` again; `jmp $`.
 * At HANDLER: `mov dx, HOST_CALL; out dx, al; jmp $`.
 */
const GUEST = [
  [0x48, 0xc7, 0xc3, 0x00, 0x00, 0x00, 0x40],
  [0x48, 0x8b, 0x03],
  [0x66, 0xba, Port.DONE & 0xff, Port.DONE >> 8, 0xef],
  [0x48, 0x8b, 0x03],
  [0x66, 0xba, Port.DONE & 0xff, Port.DONE >> 8, 0xef],
  [0xeb, 0xfe],
].flat();
const FIRST_READ = BigInt(CODE + 7);
const SECOND_READ = BigInt(CODE + 15);
const HANDLER_CODE = [0x66, 0xba, Port.HOST_CALL & 0xff, Port.HOST_CALL >> 8, 0xee, 0xeb, 0xfe];

function setup(): { vm: MicroVm; view: DataView; mem: Uint8Array } {
  const vm = MicroVm.create();
  try {
    const mem = vm.mapMemory(0, 2 * BACKING);
    const view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
    writeSystemTables(mem);
    const table = BigInt(PTE_PRESENT | PTE_WRITABLE | PTE_USER);
    view.setBigUint64(PML4_ADDR, BigInt(PDPT) | table, true);
    view.setBigUint64(PDPT, BigInt(PD) | table, true);
    view.setBigUint64(PDPT + 8, BigInt(RES_PD) | table, true);
    view.setBigUint64(PD, BigInt(PT) | table, true);
    view.setBigUint64(RES_PD, BigInt(RES_PT) | table, true);
    // First 2 MiB in 4 KiB pages: null page absent, system pages supervisor-only (the stubs
    // executable, the ring-0 stack writable), the rest user RW and executable (code, stack).
    for (let page = 1; page < 512; page++) {
      const addr = BigInt(page * 0x1000);
      let flags = USER_RW;
      if (addr >= 0x2000n && addr < 0x4000n) flags = 0x61n | NX; // tables: S, RO
      if (addr === 0x4000n) flags = 0x61n; // stubs: S, RO, executable
      if (addr === 0x5000n) flags = 0x63n | NX; // ring-0 stack: S, RW
      if (addr >= 0x6000n && addr < 0x10000n) flags = 0x61n | NX; // page tables: S, RO
      view.setBigUint64(PT + page * 8, addr | flags, true);
    }
    mem.set(GUEST, CODE);
    mem.set(HANDLER_CODE, HANDLER);
    view.setBigUint64(BACKING, 0x1122_3344_5566_7788n, true);
    vm.createVcpu(GUEST_VCPU_CONFIG);
    vm.setRegisters({ rip: BigInt(CODE), rsp: BigInt(STACK_TOP), rflags: 0x2n });
    return { vm, view, mem };
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

/** Runs until the next exit, which must be an `out` to `port`. */
function runTo(vm: MicroVm, port: number, what: string): void {
  const kind = vm.runSync();
  const exit = vm.lastExit();
  assert.equal(kind, ExitKind.IoOut, `${what}: ${JSON.stringify(exit, (_, v) => String(v))}`);
  assert.equal(exit.kind === "io_out" ? exit.port : -1, port, what);
}

/** Expects a #PF exit from the stub at CPL 3 with this RIP and CR2. */
function expectPageFault(vm: MicroVm, mem: Uint8Array, rip: bigint, what: string): void {
  runTo(vm, Port.FAULT, what);
  const regs = vm.getRegisters();
  const special = vm.getSpecialRegisters();
  assert.equal(stubVector(regs.rip, special.cs), PF, `${what}: the #PF stub made the exit`);
  const frame = readCpuFault(mem, PF);
  assert.equal(frame.rip, rip, `${what}: faulting RIP`);
  assert.equal(frame.cs & 3n, 3n, `${what}: at CPL 3`);
  assert.equal(frame.errorCode, 4n, `${what}: user read of a not-present page`);
  assert.equal(special.cr2, RESERVATION, `${what}: CR2`);
}

kvmTest(
  "guard pages: a #PF at CPL 3 on a host-mapped reservation, resumed where the host says",
  () => {
    const { vm, view, mem } = setup();
    try {
      vm.beginCall();
      expectPageFault(vm, mem, FIRST_READ, "first read of the reservation");

      // Not present → present, written by the host between runs; resumed at the faulting access
      // (the frame is untouched: the stub's `iretq` returns there).
      view.setBigUint64(RES_PT, BigInt(BACKING) | USER_RW | NX, true);
      runTo(vm, Port.DONE, "the read retried after the host mapped the page");
      assert.equal(vm.getRegisters().rax, 0x1122_3344_5566_7788n, "the page's content");

      // Present → not present: the host clears the entry and drops the page's backing, which makes
      // KVM forget every translation of it (the MMU notifier); the next access faults.
      view.setBigUint64(RES_PT, 0n, true);
      vm.dropMemory(BACKING, 0x1000);
      expectPageFault(vm, mem, SECOND_READ, "read after the host unmapped the page");

      // Delivered elsewhere: the host rewrites the frame's RIP and RSP and sets RDI, RSI, RDX on
      // the vCPU (RAX and the low 16 bits of RDX are the stub's scratch) before the `iretq`.
      const frame = new DataView(mem.buffer, mem.byteOffset + RING0_STACK_TOP - 48, 48);
      frame.setBigUint64(8, BigInt(HANDLER), true); // RIP (above the error code)
      frame.setBigUint64(32, BigInt(STACK_TOP - 0x1000), true); // RSP
      const regs = vm.getRegisters();
      vm.setRegisters({ ...regs, rdi: SECOND_READ, rsi: 0x5150n, rdx: RESERVATION });
      runTo(vm, Port.HOST_CALL, "delivered to the handler");
      const at = vm.getRegisters();
      assert.equal(at.rip, BigInt(HANDLER + 5), "resumed at the handler");
      assert.deepEqual(
        [at.rdi, at.rsi, at.rdx >> 16n, at.rsp],
        [SECOND_READ, 0x5150n, RESERVATION >> 16n, BigInt(STACK_TOP - 0x1000)],
        "with the host's registers (the handler's own `mov dx` wrote DX)",
      );
      assert.equal(vm.getSpecialRegisters().cs & 3n, 3n, "back at CPL 3");
    } finally {
      vm.destroy();
    }
  },
);
