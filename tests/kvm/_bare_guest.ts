/**
 * Hand-assembled long-mode guests for the micro-VM core tests: 2 MiB of memory at 0, identity
 * page tables for the first 1 GiB with 2 MiB pages (so addresses above 2 MiB are mapped by the
 * page tables but backed by nothing: MMIO exits), code at 0x10000. They run at CPL 3 with IOPL 3
 * (as sandboxes do; on paravirtual KVM that is what runs natively), with no IDT: any exception,
 * `hlt` included, ends in a triple fault (a `shutdown` exit). `{ supervisor: true }` starts one
 * at CPL 0 instead.
 */

import { MicroVm } from "../../src/ffi/vm.ts";

export const MEMORY_SIZE = 2 * 1024 * 1024;
export const CODE_ADDR = 0x10000;
export const STACK_TOP = 0x80000;
const PML4 = 0x1000;
const PDPT = 0x2000;
const PD = 0x3000;

/** Creates a VM with `code` loaded at CODE_ADDR and the vCPU ready to start there. */
export function bareGuest(
  code: number[],
  options: { supervisor?: boolean } = {},
): { vm: MicroVm; memory: Uint8Array } {
  const vm = MicroVm.create();
  try {
    const memory = vm.mapMemory(0, MEMORY_SIZE);
    const view = new DataView(memory.buffer, memory.byteOffset, memory.byteLength);
    // present | writable | user
    view.setBigUint64(PML4, BigInt(PDPT | 0x7), true);
    view.setBigUint64(PDPT, BigInt(PD | 0x7), true);
    for (let i = 0; i < 512; i++) {
      // present | writable | user | page size (2 MiB)
      view.setBigUint64(PD + i * 8, (BigInt(i) << 21n) | 0x87n, true);
    }
    memory.set(code, CODE_ADDR);
    const supervisor = options.supervisor === true;
    vm.createVcpu({
      cr3: PML4,
      codeSelector: supervisor ? 0x08 : 0x23,
      dataSelector: supervisor ? 0x10 : 0x1b,
    });
    vm.setRegisters({
      rip: BigInt(CODE_ADDR),
      rsp: BigInt(STACK_TOP),
      rflags: supervisor ? 0x2n : 0x3002n,
    });
    return { vm, memory };
  } catch (e) {
    vm.destroy();
    throw e;
  }
}

/** Machine code, byte by byte, with what each instruction is. */
export const CODE = {
  /** mov dx, 0x3f8; mov al, 'H'; out dx, al; mov eax, 'abcd'; out dx, eax; hlt */
  portIo: [0x66, 0xba, 0xf8, 0x03, 0xb0, 0x48, 0xee, 0xb8, 0x61, 0x62, 0x63, 0x64, 0xef, 0xf4],
  /** jmp $ */
  spin: [0xeb, 0xfe],
  /** hlt (at CPL 3: #GP, so a triple fault without an IDT) */
  halt: [0xf4],
  /** out 0x11, al: the end marker of the CPL-3 guests */
  done: [0xe6, 0x11],
  /** mov byte [0x10000000], 0x5a */
  mmioWrite: [0xc6, 0x04, 0x25, 0x00, 0x00, 0x00, 0x10, 0x5a],
  /** mov al, [0x10000000] */
  mmioRead: [0x8a, 0x04, 0x25, 0x00, 0x00, 0x00, 0x10],
  /** ud2, with no IDT: #UD cannot be delivered → double fault → triple fault */
  tripleFault: [0x0f, 0x0b],
  /** movaps xmm0, xmm1 (faults unless SSE is enabled); out 0x11, al */
  sse: [0x0f, 0x28, 0xc1, 0xe6, 0x11],
};
