/**
 * The guest ABI constants (docs/abi.md), in one place on the host side.
 *
 * @module
 */

/** The ABI version this host implements; the guest must report the same one. */
export const ABI_VERSION = 2;

/** The PEB magic, ASCII "HLSBPEB1" read as a little-endian u64. */
export const PEB_MAGIC: bigint = 0x3142455042534c48n;

/** Byte offsets of the PEB fields from the start of the PEB. */
export const PebOffset = {
  magic: 0x00,
  abiVersion: 0x08,
  guestAbiVersion: 0x0c,
  inputAddr: 0x10,
  inputSize: 0x18,
  outputAddr: 0x20,
  outputSize: 0x28,
  heapAddr: 0x30,
  heapSize: 0x38,
  stackTop: 0x40,
  stackSize: 0x48,
  guardAddr: 0x50,
  imageBase: 0x58,
  imageSize: 0x60,
  memorySize: 0x68,
  wasmReservationAddr: 0x70,
  wasmReservationSize: 0x78,
  wasmTrapEntry: 0x80,
} as const;

/** The I/O ports the guest signals the host with (`out dx, eax`). */
export const Port = {
  /** Init or a call finished; the output buffer holds the result frame. */
  DONE: 0x7f00,
  /** The output buffer holds a `HOST_CALL` frame. */
  HOST_CALL: 0x7f01,
  /** Fatal: the output buffer holds `PANIC` or `FAULT`. */
  ABORT: 0x7f02,
  /** The output buffer holds a `LOG` frame. */
  LOG: 0x7f03,
  /**
   * Written only by the host's ring-0 exception stubs (CPL 0, RIP in the stubs page); the fault
   * details come from the CPU's frame on the ring-0 stack. The I/O bitmap denies it at CPL 3
   * (#GP), and a FAULT exit that no stub made is a protocol violation.
   */
  FAULT: 0x7f08,
} as const;

/** Frame kind numbers, by name. */
export const FrameKind = {
  CALL: 1,
  RETURN: 2,
  ERROR: 3,
  HOST_CALL: 4,
  HOST_RETURN: 5,
  HOST_ERROR: 6,
  FUNCTION_TABLE: 7,
  PANIC: 8,
  FAULT: 9,
  LOG: 10,
} as const;

/** The name of a frame kind, e.g. `"CALL"`. */
export type FrameKindName = keyof typeof FrameKind;

/** Frame kind names, indexed by kind number (index 0 is not a kind). */
export const FRAME_KIND_NAMES: readonly (FrameKindName | undefined)[] = [
  undefined,
  "CALL",
  "RETURN",
  "ERROR",
  "HOST_CALL",
  "HOST_RETURN",
  "HOST_ERROR",
  "FUNCTION_TABLE",
  "PANIC",
  "FAULT",
  "LOG",
];

/** The bytes before a frame's payload: u32 kind, u32 payload length. */
export const FRAME_HEADER_SIZE = 8;

/** The type of a value crossing the sandbox boundary. */
export type ValueType =
  | "void"
  | "i32"
  | "u32"
  | "i64"
  | "u64"
  | "f32"
  | "f64"
  | "bool"
  | "string"
  | "bytes";

/** Wire type tags, by value type. */
export const ValueTag: Readonly<Record<ValueType, number>> = {
  void: 0,
  i32: 1,
  u32: 2,
  i64: 3,
  u64: 4,
  f32: 5,
  f64: 6,
  bool: 7,
  string: 8,
  bytes: 9,
};

/** Value types, indexed by wire tag. */
export const VALUE_TYPES: readonly ValueType[] = [
  "void",
  "i32",
  "u32",
  "i64",
  "u64",
  "f32",
  "f64",
  "bool",
  "string",
  "bytes",
];

/** Returns whether `s` names a value type. */
export function isValueType(s: unknown): s is ValueType {
  return typeof s === "string" && (VALUE_TYPES as readonly string[]).includes(s);
}

/** The codes of an `ERROR` frame that the ABI defines; guest codes start at 1000. */
export const ErrorCode = {
  UNKNOWN_FUNCTION: 1,
  BAD_ARGUMENTS: 2,
  HOST_CALL_FAILED: 3,
  FIRST_GUEST_CODE: 1000,
} as const;

/** The levels of a `LOG` frame. */
export const LogLevel = {
  ERROR: 0,
  WARN: 1,
  INFO: 2,
  DEBUG: 3,
  TRACE: 4,
} as const;

/** The highest `LOG` level (`TRACE`); decoders reject anything above it. */
export const MAX_LOG_LEVEL = 4;

/** The shortest function name, in UTF-8 bytes. */
export const MIN_NAME_LENGTH = 1;
/** The longest function name, in UTF-8 bytes. */
export const MAX_NAME_LENGTH = 255;
/** The most functions a function table may hold. */
export const MAX_FUNCTIONS = 4096;
/** The most parameters a function may have. */
export const MAX_PARAMS = 32;

/** The page size; every region is a multiple of it. */
export const PAGE_SIZE = 4096;
/** The null page, never mapped. */
export const NULL_PAGE_ADDR = 0;
/** Where the PEB lives (user-accessible: the guest reads it and writes `guest_abi_version`). */
export const PEB_ADDR = 0x1000;
/** The host's descriptor tables (GDT, IDT, TSS and its I/O bitmap): two pages, supervisor-only. */
export const SYSTEM_TABLES_ADDR = 0x2000;
/** The size of the system tables region. */
export const SYSTEM_TABLES_SIZE = 0x2000;
/** The GDT, at the start of the system tables. */
export const GDT_ADDR = 0x2000;
/** The IDT: one 16-byte gate per exception vector 0-31. */
export const IDT_ADDR = 0x2100;
/** The 64-bit TSS (104 bytes), followed by its I/O permission bitmap. */
export const TSS_ADDR = 0x2400;
/** The host's exception stubs: supervisor-only, read-only, executable. */
export const STUBS_ADDR = 0x4000;
/** Bytes per exception stub; vector `v`'s stub is at `STUBS_ADDR + v * STUB_SIZE`. */
export const STUB_SIZE = 16;
/** The exception vectors the IDT covers (0-31, the CPU's own). */
export const EXCEPTION_VECTORS = 32;
/** The ring-0 stack the CPU pushes an exception frame on: supervisor-only, one page. */
export const RING0_STACK_ADDR = 0x5000;
/** The first byte above the ring-0 stack (the TSS's RSP0 and IST1). */
export const RING0_STACK_TOP = 0x6000;
/** The PML4 table; the page tables start here (supervisor-only, read-only). */
export const PML4_ADDR = 0x6000;
/** The one PDPT. */
export const PDPT_ADDR = 0x7000;
/** The one page directory (it covers the whole 1 GiB). */
export const PD_ADDR = 0x8000;
/** The first page table; one follows per 2 MiB of memory. */
export const PT_BASE_ADDR = 0x9000;
/** The memory one page table maps, and the granularity of `memory_size`. */
export const MEMORY_ALIGN: number = 2 * 1024 * 1024;
/** The largest guest memory. */
export const MAX_MEMORY_SIZE: number = 1024 * 1024 * 1024;

/** GDT selectors: kernel code and data (the stubs), user data and code (the guest), the TSS. */
export const Selector = {
  KERNEL_CODE: 0x08,
  KERNEL_DATA: 0x10,
  /** Index 3, RPL 3. */
  USER_DATA: 0x1b,
  /** Index 4, RPL 3. */
  USER_CODE: 0x23,
  /** Index 5 (a 16-byte system descriptor). */
  TSS: 0x28,
} as const;

/**
 * Where a Wasm linear memory's reservation starts in the guest's virtual address space (PML4 entry
 * 1, 512 GiB): outside the identity map, so nothing else is ever mapped there. docs/abi.md, "Wasm
 * guard pages".
 */
export const WASM_RESERVATION_ADDR = 2 ** 39;
/**
 * The reservation's span the guest's Wasm code may address: 4 GiB (a 32-bit index) plus wasmtime's
 * guard for static offsets (32 MiB; `engine_config.rs`). A #PF there, from published code, is a
 * Wasm bounds trap.
 */
export const WASM_RESERVATION_SPAN: number = 4 * 1024 ** 3 + 32 * 1024 ** 2;
/** The host function the guest maps its linear memory with: `(base: u64, bytes: u64) -> void`. */
export const WASM_MAP_FUNCTION = "hl_wasm_map";

/** Page-table entry bit: the page is present. */
export const PTE_PRESENT = 1;
/** Page-table entry bit: the page is writable. */
export const PTE_WRITABLE = 2;
/** Page-table entry bit: the page is accessible from CPL 3 (the guest). */
export const PTE_USER = 4;
/** Page-table entry bit: accessed. Set up front so the CPU never writes the tables. */
export const PTE_ACCESSED = 0x20;
/** Page-table entry bit: dirty (last level). Set up front for the same reason. */
export const PTE_DIRTY = 0x40;
/** Page-table entry bit 63 (no-execute), as a bit of the entry's high 32-bit half. */
export const PTE_NX_HIGH: number = 0x8000_0000;

/** `PF_X`: the ELF segment is executable. */
export const PF_X = 1;
/** `PF_W`: the ELF segment is writable. */
export const PF_W = 2;
/** `PF_R`: the ELF segment is readable. */
export const PF_R = 4;

/** The default input buffer size (host → guest). */
export const DEFAULT_INPUT_SIZE: number = 4 * 1024 * 1024;
/** The default output buffer size (guest → host). */
export const DEFAULT_OUTPUT_SIZE: number = 4 * 1024 * 1024;
/** The default heap size. */
export const DEFAULT_HEAP_SIZE: number = 8 * 1024 * 1024;
/** The default stack size. */
export const DEFAULT_STACK_SIZE: number = 1024 * 1024;

/** The smallest input or output buffer. */
export const MIN_BUFFER_SIZE = 4096;
/** The smallest heap. */
export const MIN_HEAP_SIZE = 4096;
/** The smallest stack. */
export const MIN_STACK_SIZE = 16384;

/**
 * RFLAGS at entry: IOPL 0, interrupts off, the always-one bit 1. Port access at CPL 3 is granted
 * by the TSS's I/O permission bitmap (the guest ports only), not by IOPL: paravirtual KVM
 * (kvm_pvm) ignores IOPL and always checks the bitmap, and IOPL 0 makes hardware KVM behave the
 * same (`cli`, `sti` and every other port are #GP on both).
 */
export const ENTRY_RFLAGS = 0x2;
