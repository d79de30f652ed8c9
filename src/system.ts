/**
 * The host-owned system pages of ABI version 2 (docs/abi.md, "Privilege and system pages"): the
 * GDT, TSS and IDT, the ring-0 exception stubs, and how a fault is read back from the CPU's frame
 * on the ring-0 stack. The guest runs at CPL 3 and cannot write any of these pages; the host
 * writes them once, before the vCPU first runs.
 *
 * @module
 */

import {
  EXCEPTION_VECTORS,
  GDT_ADDR,
  IDT_ADDR,
  PML4_ADDR,
  Port,
  RING0_STACK_TOP,
  Selector,
  STUB_SIZE,
  STUBS_ADDR,
  SYSTEM_TABLES_ADDR,
  SYSTEM_TABLES_SIZE,
  TSS_ADDR,
} from "./abi.ts";
import type { VcpuConfig } from "./ffi/vm.ts";

/** Size of a 64-bit TSS, without its I/O bitmap. */
const TSS_SIZE = 104;
/** The guest's ports, `DONE` to `LOG`: the only ones the I/O bitmap grants at CPL 3. */
const GUEST_PORTS = [Port.DONE, Port.HOST_CALL, Port.ABORT, Port.LOG];
/**
 * An access of N bytes to port P needs the bits of P to P+N-1 clear; the ABI accepts any size,
 * so each guest port grants the three ports above it too (their exits are protocol errors).
 */
const GRANTED_PORTS: readonly number[] = [
  ...new Set(GUEST_PORTS.flatMap((p) => [p, p + 1, p + 2, p + 3])),
];
/**
 * The I/O bitmap covers ports 0 to `IO_BITMAP_PORTS - 1`; the CPU reads two bytes per check, so a
 * terminating 0xFF byte follows, and ports past it lie beyond the TSS limit (#GP).
 */
const IO_BITMAP_PORTS = (Math.max(...GRANTED_PORTS) | 7) + 1;
const IO_BITMAP_BYTES = IO_BITMAP_PORTS / 8 + 1;
/** The TSS limit (its last byte is the I/O bitmap's terminator). */
export const TSS_LIMIT: number = TSS_SIZE + IO_BITMAP_BYTES - 1;
const TSS_RSP0 = 4;
const TSS_IST1 = 36;
const TSS_IOMAP_BASE = 102;
/** null, kernel code, kernel data, user data, user code, then the 16-byte TSS descriptor. */
const GDT_SIZE = 7 * 8;
const IDT_SIZE = EXCEPTION_VECTORS * 16;

// Descriptors with the accessed bit (and the TSS's busy bit) already set, so the CPU never
// writes the (read-only) tables when it loads a selector during exception delivery.
/** 64-bit code, DPL 0. */
const KERNEL_CODE64 = 0x00af9b000000ffffn;
/** Flat data, DPL 0. */
const KERNEL_DATA = 0x00cf93000000ffffn;
/** Flat data, DPL 3. */
const USER_DATA = 0x00cff3000000ffffn;
/** 64-bit code, DPL 3. */
const USER_CODE64 = 0x00affb000000ffffn;

/** Vectors for which the CPU pushes an error code. */
const HAS_ERROR_CODE: ReadonlySet<number> = new Set([8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
/** Vectors a CPL-3 `int n` may raise directly (`int3`); every other gate is DPL 0 (#GP). */
const USER_GATES: ReadonlySet<number> = new Set([3]);

/** The vCPU configuration of every sandbox: CPL 3 on the host's tables. */
export const GUEST_VCPU_CONFIG: VcpuConfig = {
  cr3: PML4_ADDR,
  gdt: { base: GDT_ADDR, limit: GDT_SIZE - 1 },
  idt: { base: IDT_ADDR, limit: IDT_SIZE - 1 },
  tss: { base: TSS_ADDR, limit: TSS_LIMIT },
  codeSelector: Selector.USER_CODE,
  dataSelector: Selector.USER_DATA,
  tssSelector: Selector.TSS,
};

function tssDescriptor(base: number, limit: number): [bigint, bigint] {
  const b = BigInt(base);
  const low = BigInt(limit & 0xffff) |
    ((b & 0xffffffn) << 16n) |
    (0x8bn << 40n) | // present, DPL 0, type B = busy 64-bit TSS (TR is loaded busy)
    (BigInt((limit >> 16) & 0xf) << 48n) |
    (((b >> 24n) & 0xffn) << 56n);
  return [low, b >> 32n];
}

function interruptGate(handler: number, dpl: number): [bigint, bigint] {
  const h = BigInt(handler);
  const low = (h & 0xffffn) |
    (BigInt(Selector.KERNEL_CODE) << 16n) |
    (1n << 32n) | // IST1: always the known ring-0 stack, whatever the CPL at the fault
    (BigInt(0x8e | (dpl << 5)) << 40n) | // present, DPL, type E = 64-bit interrupt gate
    (((h >> 16n) & 0xffffn) << 48n);
  return [low, h >> 32n];
}

/** The page-fault vector. */
export const PAGE_FAULT_VECTOR = 14;

/**
 * The vectors whose stubs can return to the guest (docs/abi.md, "Wasm guard pages"): #DE and #UD
 * (wasmtime's traps with signals-based traps: `ud2`, a division by zero) and #PF (a bounds trap).
 */
export const DELIVERABLE_VECTORS: ReadonlySet<number> = new Set([0, 6, PAGE_FAULT_VECTOR]);

/**
 * Offset in a deliverable vector's stub of its return path (`iretq`, after `add rsp, 8` for #PF's
 * error code): right after the `out`, where the vCPU is at the FAULT exit. The host resumes it
 * only to deliver a Wasm trap, after rewriting the CPU's frame on the ring-0 stack.
 */
export const STUB_RESUME = 7;

/**
 * One stub per vector, `STUB_SIZE` bytes each: `mov al, vector; mov dx, FAULT; out dx, al;
 * hlt; jmp back to the hlt`, padded with `int3`; the stubs of `DELIVERABLE_VECTORS` instead
 * continue after their `out` with `iretq` (#PF: `add rsp, 8; iretq`, dropping the error code),
 * which returns to the frame's RIP at CPL 3 and runs only when the host delivers a fault. The stubs
 * run at CPL 0; on paravirtual KVM that code is emulated, so it stays this small and free of SSE.
 */
export function exceptionStub(vector: number): Uint8Array {
  const stub = new Uint8Array(STUB_SIZE).fill(0xcc);
  const exit = [0xb0, vector, 0x66, 0xba, Port.FAULT & 0xff, Port.FAULT >> 8, 0xee];
  const tail = vector === PAGE_FAULT_VECTOR
    ? [0x48, 0x83, 0xc4, 0x08, 0x48, 0xcf]
    : DELIVERABLE_VECTORS.has(vector)
    ? [0x48, 0xcf]
    : [0xf4, 0xeb, 0xfd];
  stub.set([...exit, ...tail]);
  return stub;
}

/** The system tables and stubs as built once, for every guest (`[0, STUBS_ADDR + 4096)`). */
let systemTables: Uint8Array | undefined;

/**
 * Writes the GDT, TSS, IDT and exception stubs into guest memory (at their ABI addresses). They
 * are the same for every guest: built once per process (~80 µs of DataView writes) and copied.
 */
export function writeSystemTables(mem: Uint8Array): void {
  systemTables ??= buildSystemTables();
  mem.set(systemTables.subarray(SYSTEM_TABLES_ADDR), SYSTEM_TABLES_ADDR);
}

function buildSystemTables(): Uint8Array {
  if (TSS_ADDR + TSS_LIMIT >= SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE) {
    throw new RangeError("the TSS and its I/O bitmap do not fit the system tables region");
  }
  if (STUBS_ADDR !== SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE) {
    throw new RangeError("the exception stubs must follow the system tables");
  }
  const mem = new Uint8Array(STUBS_ADDR + 0x1000);
  const view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  mem.fill(0, SYSTEM_TABLES_ADDR, SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE);
  const [tssLow, tssHigh] = tssDescriptor(TSS_ADDR, TSS_LIMIT);
  const gdt = [0n, KERNEL_CODE64, KERNEL_DATA, USER_DATA, USER_CODE64, tssLow, tssHigh];
  gdt.forEach((d, i) => view.setBigUint64(GDT_ADDR + 8 * i, d, true));

  view.setBigUint64(TSS_ADDR + TSS_RSP0, BigInt(RING0_STACK_TOP), true);
  view.setBigUint64(TSS_ADDR + TSS_IST1, BigInt(RING0_STACK_TOP), true);
  // The I/O permission bitmap right after the TSS: every port denied (bit set) except the
  // guest's. With IOPL 0 this is what `in`/`out` at CPL 3 are checked against.
  view.setUint16(TSS_ADDR + TSS_IOMAP_BASE, TSS_SIZE, true);
  const bitmap = TSS_ADDR + TSS_SIZE;
  mem.fill(0xff, bitmap, bitmap + IO_BITMAP_BYTES);
  for (const port of GRANTED_PORTS) mem[bitmap + (port >> 3)] &= ~(1 << (port & 7));

  mem.fill(0xcc, STUBS_ADDR, STUBS_ADDR + 0x1000);
  for (let v = 0; v < EXCEPTION_VECTORS; v++) {
    const [low, high] = interruptGate(STUBS_ADDR + v * STUB_SIZE, USER_GATES.has(v) ? 3 : 0);
    view.setBigUint64(IDT_ADDR + 16 * v, low, true);
    view.setBigUint64(IDT_ADDR + 16 * v + 8, high, true);
    mem.set(exceptionStub(v), STUBS_ADDR + v * STUB_SIZE);
  }
  return mem;
}

/** A CPU exception, read from the frame the CPU pushed on the ring-0 stack. */
export interface CpuFault {
  /** The exception vector (0-31). */
  readonly vector: number;
  /** The error code the CPU pushed, for the vectors that have one. */
  readonly errorCode?: bigint;
  /** The faulting instruction (or the next one, for traps such as `int3`). */
  readonly rip: bigint;
  /** CS at the fault; its low two bits are the CPL the guest was at. */
  readonly cs: bigint;
  /** RFLAGS at the fault. */
  readonly rflags: bigint;
  /** The guest's RSP at the fault. */
  readonly rsp: bigint;
}

/**
 * Which stub a FAULT exit came from, from the vCPU's RIP and CS at the exit (`undefined` when the
 * exit was not made by a stub: then the guest itself wrote the port). The stub's `out` is at
 * offset 6; KVM reports RIP at or just after it, inside the same stub.
 */
export function stubVector(rip: bigint, cs: bigint): number | undefined {
  if ((cs & 3n) !== 0n) return undefined;
  const offset = rip - BigInt(STUBS_ADDR);
  if (offset < 0n || offset >= BigInt(EXCEPTION_VECTORS * STUB_SIZE)) return undefined;
  const within = Number(offset % BigInt(STUB_SIZE));
  if (within < 6 || within > 7) return undefined;
  return Number(offset / BigInt(STUB_SIZE));
}

/**
 * Reads the CPU's exception frame for `vector` from the top of the ring-0 stack (IST1): SS, RSP,
 * RFLAGS, CS, RIP, and below them the error code for the vectors that push one.
 */
export function readCpuFault(mem: Uint8Array, vector: number): CpuFault {
  const view = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
  const at = (slot: number) => view.getBigUint64(RING0_STACK_TOP - 8 * slot, true);
  return {
    vector,
    errorCode: HAS_ERROR_CODE.has(vector) ? at(6) : undefined,
    rip: at(5),
    cs: at(4),
    rflags: at(3),
    rsp: at(2),
  };
}
