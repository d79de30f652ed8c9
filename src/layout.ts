/**
 * Guest memory setup (docs/abi.md, "Memory layout"): where each region goes, the identity-mapped
 * page tables that give every page its permissions, the parameter block (PEB), and the registers
 * the vCPU starts with.
 *
 * @module
 */

import {
  ABI_VERSION,
  DEFAULT_HEAP_SIZE,
  DEFAULT_INPUT_SIZE,
  DEFAULT_OUTPUT_SIZE,
  DEFAULT_STACK_SIZE,
  ENTRY_RFLAGS,
  MAX_MEMORY_SIZE,
  MEMORY_ALIGN,
  MIN_BUFFER_SIZE,
  MIN_HEAP_SIZE,
  MIN_STACK_SIZE,
  NULL_PAGE_ADDR,
  PAGE_SIZE,
  PD_ADDR,
  PDPT_ADDR,
  PEB_ADDR,
  PEB_MAGIC,
  PebOffset,
  PF_W,
  PF_X,
  PML4_ADDR,
  PT_BASE_ADDR,
  PTE_ACCESSED,
  PTE_DIRTY,
  PTE_NX_HIGH,
  PTE_PRESENT,
  PTE_USER,
  PTE_WRITABLE,
  RING0_STACK_ADDR,
  STUBS_ADDR,
  SYSTEM_TABLES_ADDR,
  SYSTEM_TABLES_SIZE,
  WASM_RESERVATION_ADDR,
} from "./abi.ts";
import type { ElfImage, ElfSegment } from "./elf.ts";
import { loadImage } from "./elf.ts";
import { ArgumentError, GuestImageError } from "./errors.ts";
import { writeSystemTables } from "./system.ts";
import type { Registers } from "./ffi/vm.ts";

/** The sizes a sandbox is created with; each is in bytes and optional. */
export interface LayoutOptions {
  /** The guest heap: a multiple of 4 KiB, at least 4 KiB. Default 8 MiB. */
  heapSize?: number;
  /** The guest stack: a multiple of 4 KiB, at least 16 KiB. Default 1 MiB. */
  stackSize?: number;
  /** The host → guest buffer: a multiple of 4 KiB, at least 4 KiB. Default 4 MiB. */
  inputSize?: number;
  /** The guest → host buffer: a multiple of 4 KiB, at least 4 KiB. Default 4 MiB. */
  outputSize?: number;
  /** The whole guest memory: a multiple of 2 MiB, at most 1 GiB. Default: what the rest needs. */
  memorySize?: number;
  /**
   * Bytes of host-published code mapped above guest memory (read-only, executable; see
   * `MemoryLayout.codeAddr`). Default 0: none.
   */
  codeSize?: number;
  /**
   * Bytes of Wasm linear memory the host may map into a guard-page reservation at
   * `WASM_RESERVATION_ADDR` (a multiple of 2 MiB, at most 1 GiB; default 0: no reservation).
   * The page tables get one table per 2 MiB of it.
   */
  wasmReservationSize?: number;
}

/** What the layout needs to know about the image; an {@link ElfImage} has all of it. */
export interface ImageExtent {
  /** The image span in bytes, a multiple of the page size. */
  readonly size: number;
  /** The link-time address of the span's first byte (page-aligned). */
  readonly minVaddr: number;
  /** The alignment the load base must have (a power of two, at least a page). */
  readonly align: number;
  /** Whether the image must be loaded at its link-time addresses (`ET_EXEC`). */
  readonly fixed: boolean;
}

/** Where everything is in guest memory (all guest-physical addresses, in bytes). */
export interface MemoryLayout {
  /** The size of guest memory: a multiple of 2 MiB. */
  readonly memorySize: number;
  /** The number of last-level page tables (one per 2 MiB). */
  readonly pageTableCount: number;
  /** The input buffer (host → guest). */
  readonly inputAddr: number;
  /** The input buffer's size. */
  readonly inputSize: number;
  /** The output buffer (guest → host). */
  readonly outputAddr: number;
  /** The output buffer's size. */
  readonly outputSize: number;
  /** Where the image span starts (its first byte, `ElfImage.image[0]`). */
  readonly imageAddr: number;
  /** The image span's size. */
  readonly imageSize: number;
  /** Where the image's link-time address 0 lands: `imageAddr - minVaddr`. */
  readonly imageBase: number;
  /** The heap. */
  readonly heapAddr: number;
  /** The heap's size. */
  readonly heapSize: number;
  /** The unmapped guard page below the stack. */
  readonly guardAddr: number;
  /** The lowest stack address. */
  readonly stackAddr: number;
  /** The stack's size. */
  readonly stackSize: number;
  /** The first byte above the stack (16-byte aligned). */
  readonly stackTop: number;
  /**
   * Where host-published code is mapped (a separate memory slot right above `memorySize`), or 0.
   * Its pages are user, read-only and executable; every other user page is non-executable.
   */
  readonly codeAddr: number;
  /** The code region's size (a multiple of 4 KiB; 0 without one). */
  readonly codeSize: number;
  /**
   * Bytes the host may map at `WASM_RESERVATION_ADDR` (a multiple of 2 MiB; 0: no reservation).
   * Mapped pages are heap pages the guest names (`hl_wasm_map`); the rest of the reservation is
   * not present.
   */
  readonly wasmReservationSize: number;
  /**
   * The reservation's page tables, after the identity map's: its PDPT, its page directory, then
   * one page table per 2 MiB of `wasmReservationSize` (0 without a reservation).
   */
  readonly wasmTablesAddr: number;
}

/** The vCPU registers at entry that the ABI sets to something other than zero. */
export interface InitialRegisters {
  /** `image_base + e_entry`. */
  readonly rip: number;
  /** `stack_top - 8`, as if the entry had been called. */
  readonly rsp: number;
  /** The PEB address, the SysV first argument. */
  readonly rdi: number;
  /** IOPL 0, interrupts off, the always-one bit. */
  readonly rflags: number;
}

const MIB = 1024 * 1024;

function roundUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

function formatSize(n: number): string {
  if (n >= MIB && n % MIB === 0) return `${n / MIB} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} bytes`;
}

function sizeOption(value: unknown, name: string, min: number, fallback: number): number {
  if (value === undefined) return fallback;
  if (
    typeof value !== "number" || !Number.isSafeInteger(value) || value < min ||
    value % PAGE_SIZE !== 0 || value > MAX_MEMORY_SIZE
  ) {
    throw new ArgumentError(
      `option ${name} must be a multiple of 4 KiB from ${formatSize(min)} to 1 GiB, got ${
        String(value)
      }`,
    );
  }
  return value;
}

/**
 * Computes the memory layout for an image and the sandbox's size options. `memory_size` is the
 * total rounded up to 2 MiB, or `options.memorySize` when given and big enough.
 *
 * Throws {@link ArgumentError} naming the option at fault (a bad size, or a total above 1 GiB),
 * and {@link GuestImageError} when an `ET_EXEC` image is linked where the host's regions go.
 */
export function computeLayout(image: ImageExtent, options: LayoutOptions = {}): MemoryLayout {
  const heapSize = sizeOption(options.heapSize, "heapSize", MIN_HEAP_SIZE, DEFAULT_HEAP_SIZE);
  const stackSize = sizeOption(options.stackSize, "stackSize", MIN_STACK_SIZE, DEFAULT_STACK_SIZE);
  const inputSize = sizeOption(options.inputSize, "inputSize", MIN_BUFFER_SIZE, DEFAULT_INPUT_SIZE);
  const outputSize = sizeOption(
    options.outputSize,
    "outputSize",
    MIN_BUFFER_SIZE,
    DEFAULT_OUTPUT_SIZE,
  );
  const codeSize = options.codeSize === undefined ? 0 : roundUp(options.codeSize, PAGE_SIZE);
  if (!Number.isSafeInteger(codeSize) || codeSize < 0 || codeSize > MAX_MEMORY_SIZE) {
    throw new ArgumentError(`code size must be from 0 to 1 GiB, got ${String(options.codeSize)}`);
  }
  const wasmSize = options.wasmReservationSize ?? 0;
  if (
    typeof wasmSize !== "number" || !Number.isSafeInteger(wasmSize) || wasmSize < 0 ||
    wasmSize % MEMORY_ALIGN !== 0 || wasmSize > MAX_MEMORY_SIZE
  ) {
    throw new ArgumentError(
      `the Wasm reservation must be a multiple of 2 MiB up to 1 GiB, got ${String(wasmSize)}`,
    );
  }
  const wasmTables = wasmSize === 0 ? 0 : 2 + wasmSize / MEMORY_ALIGN;
  const requested = options.memorySize;
  if (
    requested !== undefined &&
    (typeof requested !== "number" || !Number.isSafeInteger(requested) || requested <= 0 ||
      requested % MEMORY_ALIGN !== 0 || requested > MAX_MEMORY_SIZE)
  ) {
    throw new ArgumentError(
      `option memorySize must be a multiple of 2 MiB from 2 MiB to 1 GiB, got ${String(requested)}`,
    );
  }

  // The page tables grow with memory_size, which grows with them: iterate to the fixed point.
  let pageTableCount = requested !== undefined ? requested / MEMORY_ALIGN : 1;
  for (;;) {
    const wasmTablesAddr = wasmTables === 0 ? 0 : PT_BASE_ADDR + pageTableCount * PAGE_SIZE;
    const inputAddr = PT_BASE_ADDR + (pageTableCount + wasmTables) * PAGE_SIZE;
    const outputAddr = inputAddr + inputSize;
    const regionsEnd = outputAddr + outputSize;
    let imageBase: number;
    if (image.fixed) {
      if (image.minVaddr < regionsEnd) {
        throw new GuestImageError(
          `invalid guest image: it is linked at ${hex(image.minVaddr)}, but guest memory below ` +
            `${hex(regionsEnd)} holds the PEB, page tables and buffers; link it at or above ` +
            `that address, or as a static-pie (ET_DYN)`,
        );
      }
      imageBase = 0;
    } else {
      imageBase = roundUp(Math.max(regionsEnd - image.minVaddr, 0), image.align);
    }
    const imageAddr = imageBase + image.minVaddr;
    const heapAddr = imageAddr + image.size;
    const guardAddr = heapAddr + heapSize;
    const stackAddr = guardAddr + PAGE_SIZE;
    const stackTop = stackAddr + stackSize;
    if (stackTop > MAX_MEMORY_SIZE) {
      const sizes: [string, number][] = [
        ["heapSize", heapSize],
        ["stackSize", stackSize],
        ["inputSize", inputSize],
        ["outputSize", outputSize],
      ];
      const largest = sizes.reduce((a, b) => (b[1] > a[1] ? b : a))[0];
      throw new ArgumentError(
        `the sandbox needs ${formatSize(stackTop)} of memory (image ${formatSize(image.size)}, ` +
          sizes.map(([name, n]) => `${name} ${formatSize(n)}`).join(", ") +
          `), more than the 1 GiB maximum; lower ${largest}`,
      );
    }
    if (requested !== undefined && requested < stackTop) {
      throw new ArgumentError(
        `option memorySize is ${formatSize(requested)}, but the sandbox needs ` +
          `${formatSize(roundUp(stackTop, MEMORY_ALIGN))}; raise memorySize or leave it out`,
      );
    }
    const memorySize = requested ?? roundUp(stackTop, MEMORY_ALIGN);
    const mappedEnd = roundUp(memorySize + codeSize, MEMORY_ALIGN);
    if (mappedEnd > MAX_MEMORY_SIZE) {
      throw new ArgumentError(
        `the sandbox needs ${formatSize(memorySize)} of memory and ${formatSize(codeSize)} of ` +
          `code, more than the 1 GiB maximum together`,
      );
    }
    if (mappedEnd / MEMORY_ALIGN > pageTableCount) {
      pageTableCount = mappedEnd / MEMORY_ALIGN;
      continue;
    }
    return {
      memorySize,
      pageTableCount,
      inputAddr,
      inputSize,
      outputAddr,
      outputSize,
      imageAddr,
      imageSize: image.size,
      imageBase,
      heapAddr,
      heapSize,
      guardAddr,
      stackAddr,
      stackSize,
      stackTop,
      codeAddr: codeSize === 0 ? 0 : memorySize,
      codeSize,
      wasmReservationSize: wasmSize,
      wasmTablesAddr,
    };
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function checkMemory(mem: Uint8Array, layout: MemoryLayout): void {
  if (mem.length < layout.memorySize) {
    throw new ArgumentError(
      `guest memory is ${mem.length} bytes, the layout needs ${layout.memorySize}`,
    );
  }
  if (mem.byteOffset % 8 !== 0) throw new ArgumentError("guest memory must be 8-byte aligned");
}

/**
 * Writes the identity-mapping page tables: PML4 at 0x6000, PDPT at 0x7000, PD at 0x8000, then one
 * page table per 2 MiB. Every 4 KiB page below `memorySize` is a present, writable,
 * non-executable user page, except:
 * - the null page and the stack guard page: not present;
 * - the host's pages (descriptor tables, page tables, ring-0 stack): supervisor-only, NX,
 *   read-only except the ring-0 stack; the exception stubs: supervisor-only, read-only,
 *   executable;
 * - the image's segments: user pages, `PF_X` ones executable and read-only, others
 *   non-executable and writable iff `PF_W`;
 * - the code region (`codeAddr`, `codeSize`), above guest memory: user, read-only, executable;
 *   anything else above guest memory is not present.
 *
 * Accessed and dirty bits are set up front, so the CPU never writes the tables.
 * `segments` are the image's, at link-time addresses.
 */
export function writePageTables(
  mem: Uint8Array,
  layout: MemoryLayout,
  segments: readonly ElfSegment[],
): void {
  checkMemory(mem, layout);
  const count = layout.pageTableCount;
  const end = pageTablesEnd(layout);
  // Each entry is two u32 words (x86 is little-endian): low = address | flags, high = NX.
  const words = new Uint32Array(mem.buffer, mem.byteOffset + PML4_ADDR, (end - PML4_ADDR) / 4);
  const table = PAGE_SIZE / 4;
  words.fill(0, 0, 3 * table);
  // Upper levels allow everything (user, writable, executable); the last level decides.
  const upper = PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_ACCESSED;
  words[0] = PDPT_ADDR | upper;
  words[(PDPT_ADDR - PML4_ADDR) / 4] = PD_ADDR | upper;
  const pd = (PD_ADDR - PML4_ADDR) / 4;
  for (let i = 0; i < count; i++) words[pd + 2 * i] = (PT_BASE_ADDR + i * PAGE_SIZE) | upper;
  if (layout.wasmTablesAddr !== 0) {
    // The Wasm reservation: PML4 entry 1 → its PDPT → its page directory → its page tables,
    // all entries of which start not present (the host maps pages with `mapWasmMemory`).
    const at = (layout.wasmTablesAddr - PML4_ADDR) / 4;
    words.fill(0, at, words.length);
    words[2 * (WASM_RESERVATION_ADDR / 2 ** 39)] = layout.wasmTablesAddr | upper;
    words[at] = (layout.wasmTablesAddr + PAGE_SIZE) | upper;
    for (let i = 0; i < layout.wasmReservationSize / MEMORY_ALIGN; i++) {
      words[at + table + 2 * i] = (layout.wasmTablesAddr + (2 + i) * PAGE_SIZE) | upper;
    }
  }

  const pt = (PT_BASE_ADDR - PML4_ADDR) / 4;
  const leaf = PTE_PRESENT | PTE_ACCESSED | PTE_DIRTY;
  const plain = plainChunks(layout, segments);
  const set = (page: number, low: number, nx: boolean) => {
    if (plain[page >> 9]) return; // mapped by a 2 MiB entry: all of it is plain
    words[pt + 2 * page] = low === 0 ? 0 : (page * PAGE_SIZE) | low;
    words[pt + 2 * page + 1] = low !== 0 && nx ? PTE_NX_HIGH : 0;
  };
  const memoryPages = layout.memorySize / PAGE_SIZE;
  for (let i = 0; i < count; i++) {
    if (plain[i]) {
      // One 2 MiB page instead of a page table: creating a guest with a large `.bss` or heap
      // writes 8 bytes per 2 MiB, not per 4 KiB (issue #9), and its page table stays untouched.
      words[pd + 2 * i] = i * MEMORY_ALIGN | leaf | PTE_WRITABLE | PTE_USER | PDE_LARGE;
      words[pd + 2 * i + 1] = PTE_NX_HIGH;
      continue;
    }
    for (let p = i * 512; p < (i + 1) * 512; p++) {
      set(p, p < memoryPages ? leaf | PTE_WRITABLE | PTE_USER : 0, true);
    }
  }
  const codeFirst = layout.codeAddr / PAGE_SIZE;
  for (let p = codeFirst; p < codeFirst + layout.codeSize / PAGE_SIZE; p++) {
    set(p, leaf | PTE_USER, false);
  }
  set(NULL_PAGE_ADDR / PAGE_SIZE, 0, false);
  set(layout.guardAddr / PAGE_SIZE, 0, false);
  // The host's pages: supervisor-only (no PTE_USER), so nothing at CPL 3 can read, write or run
  // them.
  for (let a = SYSTEM_TABLES_ADDR; a < SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE; a += PAGE_SIZE) {
    set(a / PAGE_SIZE, leaf, true);
  }
  set(STUBS_ADDR / PAGE_SIZE, leaf, false);
  set(RING0_STACK_ADDR / PAGE_SIZE, leaf | PTE_WRITABLE, true);
  for (let a = PML4_ADDR; a < end; a += PAGE_SIZE) set(a / PAGE_SIZE, leaf, true);

  for (const s of segments) {
    const first = Math.floor((layout.imageBase + s.vaddr) / PAGE_SIZE);
    const end = Math.ceil((layout.imageBase + s.vaddr + s.memsz) / PAGE_SIZE);
    if (
      end * PAGE_SIZE > layout.imageAddr + layout.imageSize || first * PAGE_SIZE < layout.imageAddr
    ) {
      throw new ArgumentError(`segment at ${hex(s.vaddr)} lies outside the image span`);
    }
    const executable = (s.flags & PF_X) !== 0;
    const low = leaf | PTE_USER | (executable || !(s.flags & PF_W) ? 0 : PTE_WRITABLE);
    for (let p = first; p < end; p++) {
      // Skip a plain chunk whole (a large `.bss` is mostly plain chunks).
      if (plain[p >> 9]) p = p | 511;
      else set(p, low, !executable);
    }
  }
}

/** The first byte after the page tables (the identity map's, then the Wasm reservation's). */
export function pageTablesEnd(layout: MemoryLayout): number {
  const wasm = layout.wasmReservationSize / MEMORY_ALIGN;
  return layout.wasmTablesAddr !== 0
    ? layout.wasmTablesAddr + (2 + wasm) * PAGE_SIZE
    : PT_BASE_ADDR + layout.pageTableCount * PAGE_SIZE;
}

/** Bit 7 of a page-directory entry: it maps a 2 MiB page itself (no page table below it). */
const PDE_LARGE = 0x80;

/**
 * Which 2 MiB chunks of guest memory are plain: every page in them a present, writable,
 * non-executable user page (heap, stack, buffers, writable data and `.bss`), so one 2 MiB entry
 * maps them with the same permissions as 512 page-table entries would. A chunk holding the null
 * page, a host page, the guard page or a read-only or executable image page is not.
 */
function plainChunks(layout: MemoryLayout, segments: readonly ElfSegment[]): Uint8Array {
  const plain = new Uint8Array(layout.pageTableCount).fill(1);
  const special = (from: number, to: number) => {
    for (let c = Math.floor(from / MEMORY_ALIGN); c <= Math.floor((to - 1) / MEMORY_ALIGN); c++) {
      if (c < plain.length) plain[c] = 0;
    }
  };
  special(NULL_PAGE_ADDR, NULL_PAGE_ADDR + PAGE_SIZE);
  special(SYSTEM_TABLES_ADDR, SYSTEM_TABLES_ADDR + SYSTEM_TABLES_SIZE);
  special(STUBS_ADDR, STUBS_ADDR + PAGE_SIZE);
  special(RING0_STACK_ADDR, RING0_STACK_ADDR + PAGE_SIZE);
  special(PML4_ADDR, pageTablesEnd(layout));
  special(layout.guardAddr, layout.guardAddr + PAGE_SIZE);
  // The code region and whatever lies above guest memory: never one plain 2 MiB page.
  if (layout.memorySize < layout.pageTableCount * MEMORY_ALIGN) {
    special(layout.memorySize, layout.pageTableCount * MEMORY_ALIGN);
  }
  for (const s of segments) {
    if ((s.flags & PF_X) === 0 && (s.flags & PF_W) !== 0) continue;
    const first = Math.floor((layout.imageBase + s.vaddr) / PAGE_SIZE) * PAGE_SIZE;
    special(first, layout.imageBase + s.vaddr + s.memsz);
  }
  return plain;
}

function setU64(view: DataView, offset: number, n: number): void {
  view.setUint32(offset, n % 0x1_0000_0000, true);
  view.setUint32(offset + 4, Math.floor(n / 0x1_0000_0000), true);
}

/** Writes the parameter block at 0x1000 (and zeroes the rest of its page). */
export function writePeb(mem: Uint8Array, layout: MemoryLayout): void {
  checkMemory(mem, layout);
  mem.fill(0, PEB_ADDR, PEB_ADDR + PAGE_SIZE);
  const view = new DataView(mem.buffer, mem.byteOffset + PEB_ADDR, PAGE_SIZE);
  view.setBigUint64(PebOffset.magic, PEB_MAGIC, true);
  view.setUint32(PebOffset.abiVersion, ABI_VERSION, true);
  setU64(view, PebOffset.inputAddr, layout.inputAddr);
  setU64(view, PebOffset.inputSize, layout.inputSize);
  setU64(view, PebOffset.outputAddr, layout.outputAddr);
  setU64(view, PebOffset.outputSize, layout.outputSize);
  setU64(view, PebOffset.heapAddr, layout.heapAddr);
  setU64(view, PebOffset.heapSize, layout.heapSize);
  setU64(view, PebOffset.stackTop, layout.stackTop);
  setU64(view, PebOffset.stackSize, layout.stackSize);
  setU64(view, PebOffset.guardAddr, layout.guardAddr);
  setU64(view, PebOffset.imageBase, layout.imageBase);
  setU64(view, PebOffset.imageSize, layout.imageSize);
  setU64(view, PebOffset.memorySize, layout.memorySize);
  if (layout.wasmReservationSize !== 0) {
    setU64(view, PebOffset.wasmReservationAddr, WASM_RESERVATION_ADDR);
    setU64(view, PebOffset.wasmReservationSize, layout.wasmReservationSize);
  }
}

/** Reads the `guest_abi_version` the guest wrote into the PEB during init (0 if it did not). */
export function readGuestAbiVersion(mem: Uint8Array): number {
  return new DataView(mem.buffer, mem.byteOffset + PEB_ADDR, PAGE_SIZE).getUint32(
    PebOffset.guestAbiVersion,
    true,
  );
}

/**
 * Prepares fresh guest memory for `elf`: writes the PEB, the host's system pages and the page
 * tables, and copies the image in, relocated for `layout.imageBase`.
 */
export function initializeMemory(mem: Uint8Array, layout: MemoryLayout, elf: ElfImage): void {
  writePeb(mem, layout);
  writeSystemTables(mem);
  writePageTables(mem, layout, elf.segments);
  loadImage(
    elf,
    mem.subarray(layout.imageAddr, layout.imageAddr + layout.imageSize),
    layout.imageBase,
    true,
  );
}

/** Returns the registers the vCPU starts with for an entry point at `entryOffset` in the image. */
export function initialRegisters(layout: MemoryLayout, entryOffset: number): InitialRegisters {
  return {
    rip: layout.imageAddr + entryOffset,
    rsp: layout.stackTop - 8,
    rdi: PEB_ADDR,
    rflags: ENTRY_RFLAGS,
  };
}

/** The registers the vCPU starts with, in the form `MicroVm.setRegisters` takes. */
export function entryRegisters(layout: MemoryLayout, entryOffset: number): Registers {
  const regs = initialRegisters(layout, entryOffset);
  return {
    rip: BigInt(regs.rip),
    rsp: BigInt(regs.rsp),
    rdi: BigInt(regs.rdi),
    rflags: BigInt(regs.rflags),
  };
}

/** Returns whether `address` (a page fault's CR2) lies in the stack guard page. */
export function isInGuardPage(layout: MemoryLayout, address: bigint): boolean {
  const guard = BigInt(layout.guardAddr);
  return address >= guard && address < guard + BigInt(PAGE_SIZE);
}

/**
 * The host-built pages below the buffers (PEB, system tables, page tables) that
 * {@linkcode fillMemory} keeps for one image, per layout: runs of non-zero pages, by address.
 */
export type LowPages = Map<string, readonly (readonly [number, Uint8Array])[]>;

/** Layouts whose host-built pages one image keeps; the oldest goes first. */
const LOW_PAGES_KEPT = 8;

/**
 * Does what {@linkcode initializeMemory} does to fresh (zero) memory, for less JS work: the pages
 * below the buffers (PEB, system tables, page tables: ~120 µs of JS stores per create on the
 * test guest) are the same for every create of one image with one layout, so the first fill
 * keeps the runs of non-zero pages it wrote there in `kept` (the image's own, as its segments
 * shape the page tables) and later fills copy them (a few `set`s). The image is copied and
 * relocated each time. Fresh memory is zero, so leaving the zero pages out writes the same bytes
 * and touches no page that `initializeMemory` does not.
 *
 * @example
 * ```ts
 * import { computeLayout, fillMemory, type LowPages } from "./layout.ts";
 * import { parseElf } from "./elf.ts";
 * const elf = parseElf(await Deno.readFile("guest/target/x86_64-unknown-linux-gnu/release/testguest"));
 * const layout = computeLayout(elf, { heapSize: 1 << 20 });
 * const kept: LowPages = new Map();
 * fillMemory(new Uint8Array(layout.memorySize), layout, elf, kept); // writes, keeps the pages
 * fillMemory(new Uint8Array(layout.memorySize), layout, elf, kept); // copies them
 * ```
 */
export function fillMemory(
  mem: Uint8Array,
  layout: MemoryLayout,
  elf: ElfImage,
  kept: LowPages,
): void {
  const key = JSON.stringify(layout);
  const low = kept.get(key);
  if (low === undefined) {
    initializeMemory(mem, layout, elf);
    const runs: [number, Uint8Array][] = [];
    const end = pageTablesEnd(layout);
    for (let at = 0; at < end;) {
      if (zeroPage(mem, at)) {
        at += PAGE_SIZE;
        continue;
      }
      let to = at + PAGE_SIZE;
      while (to < end && !zeroPage(mem, to)) to += PAGE_SIZE;
      runs.push([at, mem.slice(at, to)]);
      at = to;
    }
    if (kept.size >= LOW_PAGES_KEPT) kept.delete(kept.keys().next().value!);
    kept.set(key, runs);
    return;
  }
  checkMemory(mem, layout);
  for (const [at, bytes] of low) mem.set(bytes, at);
  loadImage(
    elf,
    mem.subarray(layout.imageAddr, layout.imageAddr + layout.imageSize),
    layout.imageBase,
    true,
  );
}

/** Whether the page at `at` of `mem` (8-byte aligned: `checkMemory`) is all zero. */
function zeroPage(mem: Uint8Array, at: number): boolean {
  const words = new BigUint64Array(mem.buffer, mem.byteOffset + at, PAGE_SIZE / 8);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  return true;
}
