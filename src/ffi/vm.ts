/**
 * A thin TypeScript face on the cdylib's VM primitives: one VM, its memory (a zero-copy view of
 * library-owned memory), and its one vCPU. Everything guest-specific (images, layout, calls) is
 * built on top of this in `sandbox.ts`.
 *
 * @module
 */

import { check, openLibrary, type Symbols } from "./lib.ts";
import { SandboxDisposedError } from "../errors.ts";

// Eager compilation (docs/js.md): V8 compiles a class's methods lazily, on their first call, in
// every new process (Deno's code cache holds only what was compiled with the module). The bodies
// of the methods a cold create + first call runs are therefore parenthesised function expressions
// kept by `.bind(undefined)` (Deno's emit drops redundant parentheses), which V8 compiles with the
// module: module-level ones, or static private fields where the body reads `#private` fields (a
// function written inside the class body may); the method delegates with `this` as an argument.

/** Exit kinds reported by a run (the cdylib's `ExitKind`). */
export const ExitKind = {
  IoOut: 1,
  IoIn: 2,
  Halt: 3,
  Shutdown: 4,
  Mmio: 5,
  FailEntry: 6,
  InternalError: 7,
  Interrupted: 8,
  Other: 9,
  /**
   * The run's own deadline (`runSync`'s timeout) passed; a return value only (the exit record
   * then reads `interrupted`).
   */
  TimedOut: 10,
} as const;

/** One of the values of {@linkcode ExitKind}. */
export type ExitKindValue = typeof ExitKind[keyof typeof ExitKind];

/** A decoded exit. `data` is a copy. */
export type VmExit =
  | { kind: "io_out"; port: number; size: number; data: Uint8Array }
  | { kind: "io_in"; port: number; size: number }
  | { kind: "halt" }
  | { kind: "shutdown" }
  | { kind: "mmio"; address: bigint; size: number; write: boolean; data: Uint8Array }
  | { kind: "fail_entry"; reason: bigint }
  | { kind: "internal_error"; suberror: bigint }
  | { kind: "interrupted" }
  | { kind: "other"; reason: bigint; detail: string };

/**
 * What the hypervisor reports about itself.
 *
 * @example
 * ```ts
 * import { hypervisorInfo } from "@hl/sandbox";
 * const info = hypervisorInfo();
 * console.log(`KVM API ${info.apiVersion}, ${info.maxMemorySlots} memory slots`);
 * ```
 */
export interface HypervisorInfo {
  /** KVM's API version (always 12 for a usable KVM). */
  apiVersion: number;
  /** Whether a running vCPU can be kicked out race-free (`KVM_CAP_IMMEDIATE_EXIT`; required). */
  immediateExit: boolean;
  /** Whether guest memory can be mapped read-only (`KVM_CAP_READONLY_MEM`). */
  readonlyMemory: boolean;
  /** Whether memory changes can be tracked (`KVM_CAP_SYNC_MMU`, the basis of dirty logging). */
  dirtyLog: boolean;
  /** How many memory regions one VM may have. */
  maxMemorySlots: number;
  /** How many vCPUs one VM may have. */
  maxVcpus: number;
  /**
   * A fingerprint of the CPU features guests see here (16 hex digits; C ABI 9): snapshot files
   * record it and a host with another refuses them (docs/snapshot-format.md).
   */
  cpuFeatures: string;
  /**
   * What the VM grants beyond SSE (C ABI 13; {@linkcode CPU_GRANT}): the AVX state (CR4.OSXSAVE,
   * XCR0 = x87|SSE|AVX) where the CPU and KVM have it and `HL_VCPU_AVX` is not `0`, then AVX, AVX2
   * and FMA (only with the AVX state), BMI1, BMI2 and LZCNT as the guest's CPUID has them.
   */
  grantedFeatures: number;
}

/**
 * The bits of {@linkcode HypervisorInfo.grantedFeatures} (docs/cdylib-abi.md, `hl_hypervisor_info`);
 * bits 1-6 are also the Wasm compiler library's feature flags.
 *
 * @example
 * ```ts
 * import { CPU_GRANT, hypervisorInfo } from "@hl/sandbox";
 * const avx = (hypervisorInfo().grantedFeatures & CPU_GRANT.AVX_STATE) !== 0;
 * ```
 */
export const CPU_GRANT = {
  /** The VM enables the AVX state: CR4.OSXSAVE and XCR0 = x87|SSE|AVX. */
  AVX_STATE: 1,
  /** AVX (granted only with the AVX state). */
  AVX: 1 << 1,
  /** AVX2 (granted only with the AVX state). */
  AVX2: 1 << 2,
  /** FMA (granted only with the AVX state). */
  FMA: 1 << 3,
  /** BMI1. */
  BMI1: 1 << 4,
  /** BMI2. */
  BMI2: 1 << 5,
  /** LZCNT. */
  LZCNT: 1 << 6,
} as const;

/** Counters of one VM. */
export interface VmStats {
  /** Hypervisor ioctls issued for this VM so far. */
  ioctls: number;
  /** Exits from the guest to the host (interruptions excluded). */
  exits: number;
  /** Calls of the run ioctl. */
  runs: number;
}

/** General-purpose registers, in the cdylib's order. */
export interface Registers {
  rax?: bigint;
  rbx?: bigint;
  rcx?: bigint;
  rdx?: bigint;
  rsi?: bigint;
  rdi?: bigint;
  rsp?: bigint;
  rbp?: bigint;
  r8?: bigint;
  r9?: bigint;
  r10?: bigint;
  r11?: bigint;
  r12?: bigint;
  r13?: bigint;
  r14?: bigint;
  r15?: bigint;
  rip?: bigint;
  rflags?: bigint;
}

/**
 * How a vCPU starts (`hl_vcpu_create`): long mode with SSE, paging at `cr3`, and the privilege
 * level and system tables the caller built in guest memory.
 */
export interface VcpuConfig {
  /** The page-table root (4 KiB aligned). */
  readonly cr3: number;
  /** GDT base and limit (0/0 for none). */
  readonly gdt?: { readonly base: number; readonly limit: number };
  /** IDT base and limit (0/0 for none: any exception is then a triple fault). */
  readonly idt?: { readonly base: number; readonly limit: number };
  /** TSS base and limit (0/0 for none). */
  readonly tss?: { readonly base: number; readonly limit: number };
  /** CS at entry; its RPL (0 or 3) is the privilege level the vCPU starts at. */
  readonly codeSelector: number;
  /** SS, DS, ES, FS and GS at entry, with the same RPL. */
  readonly dataSelector: number;
  /** TR at entry (0 or absent: none). */
  readonly tssSelector?: number;
}

/** Control registers and selectors of a stopped vCPU. */
export interface SpecialRegisters {
  cr0: bigint;
  /** The last page-fault address. */
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  efer: bigint;
  /** CS; its low two bits are the current privilege level. */
  cs: bigint;
  ss: bigint;
}

const REGISTER_NAMES = [
  "rax",
  "rbx",
  "rcx",
  "rdx",
  "rsi",
  "rdi",
  "rsp",
  "rbp",
  "r8",
  "r9",
  "r10",
  "r11",
  "r12",
  "r13",
  "r14",
  "r15",
  "rip",
  "rflags",
] as const;

// Layout of the cdylib's exit record (docs/cdylib-abi.md).
const EXIT_KIND = 0;
const EXIT_A = 8;
const EXIT_B = 16;
const EXIT_C = 24;
const EXIT_DATA_LEN = 32;
const EXIT_DATA = 40;
const EXIT_DATA_CAPACITY = 256;
const EXIT_RECORD_SIZE = EXIT_DATA + EXIT_DATA_CAPACITY;

/**
 * How long `run` spins for the end of a run before waiting on the thread pool: about 1.5× the
 * runs this VM has been doing (a running average), at least `SPIN_MIN_NS` and at most
 * `SPIN_MAX_NS`, the longest the event loop is held. An await on the pool costs ~50-100 µs more
 * than the run on a 2-CPU host, so a spin that falls just short (a fixed 30 µs against the ~35 µs
 * runs of a Wasm call) doubled the call.
 */
const SPIN_MIN_NS = 30_000;
const SPIN_MAX_NS = 100_000;
/** A VM whose runs average more than `SPIN_MAX_NS` is not spun on, except once every this many
 * runs, to notice when they get short again. */
const SPIN_PROBE_EVERY = 16;

/**
 * Reports the hypervisor's version and capabilities (opens `/dev/kvm`). Throws a
 * `HypervisorError` whose message says how to fix it when there is no usable KVM.
 *
 * @example
 * ```ts
 * import { HypervisorError, hypervisorInfo } from "@hl/sandbox";
 * try {
 *   console.log(hypervisorInfo().apiVersion); // 12
 * } catch (e) {
 *   if (e instanceof HypervisorError) console.error(e.code, e.message); // e.g. NO_HYPERVISOR
 * }
 * ```
 */
export function hypervisorInfo(library?: string): HypervisorInfo {
  const lib = openLibrary(library);
  const out = new BigUint64Array(8);
  check(lib, lib.hl_hypervisor_info(out));
  return {
    apiVersion: Number(out[0]),
    immediateExit: out[1] === 1n,
    readonlyMemory: out[2] === 1n,
    dirtyLog: out[3] === 1n,
    maxMemorySlots: Number(out[4]),
    maxVcpus: Number(out[5]),
    cpuFeatures: out[6].toString(16).padStart(16, "0"),
    grantedFeatures: Number(out[7] & 0x7fn),
  };
}

/**
 * Process-wide counters: ioctls issued, VMs alive, memory snapshot handles alive, and guest memory
 * regions that are anonymous memory (unnamed in `/proc/self/maps` on most kernels).
 */
export function globalStats(
  library?: string,
): { ioctls: number; liveVms: number; liveSnapshots: number; anonymousRegions: number } {
  const lib = openLibrary(library);
  const out = new BigUint64Array(4);
  check(lib, lib.hl_global_stats(out));
  return {
    ioctls: Number(out[0]),
    liveVms: Number(out[1]),
    liveSnapshots: Number(out[2]),
    anonymousRegions: Number(out[3]),
  };
}

/**
 * A new sealed snapshot holding a copy of `bytes` (zero-padded to whole pages), for code that VMs
 * map read-only with {@linkcode MicroVm.mapCode}.
 */
export function snapshotFromBytes(bytes: Uint8Array, library?: string): MemorySnapshotHandle {
  const lib = openLibrary(library);
  const out = new Uint32Array(1);
  check(lib, lib.hl_snapshot_from_bytes(bytes, BigInt(bytes.length), out));
  return new MemorySnapshotHandle(lib, out[0]);
}

/**
 * Waits until every VM destroyed so far is freed: `MicroVm.destroy` (and so `Sandbox.dispose`)
 * returns once the guest can no longer run, and the cdylib joins the vCPU thread, closes the VM
 * and unmaps its memory on a background thread. For leak checks (fds, mappings, threads) and for
 * callers who want the memory back at once. Returns how many VMs were still being freed.
 *
 * @example
 * ```ts
 * import { Sandbox, teardownWait } from "@hl/sandbox";
 * await (await Sandbox.create({ guest: "path/to/testguest" })).dispose();
 * teardownWait(); // its fds, thread and memory are gone now
 * ```
 */
export function teardownWait(library?: string): number {
  const lib = openLibrary(library);
  return check(lib, lib.hl_teardown_wait());
}

/**
 * A memory snapshot handle of the cdylib (`hl_snapshot_memory`): a sealed, sparse memfd. VMs
 * mapped from it or re-based on it keep its memory alive after {@linkcode release}.
 */
export class MemorySnapshotHandle {
  readonly #lib: Symbols;
  #handle: number;
  #refs = 1;
  /** Size in bytes. */
  readonly size: number;
  /** Pages that hold data (the rest are holes that read zero). */
  readonly dataPages: number;

  /** Wraps a handle the cdylib returned. */
  constructor(lib: Symbols, handle: number) {
    this.#lib = lib;
    this.#handle = handle;
    const out = new BigUint64Array(2);
    check(lib, lib.hl_snapshot_info(handle, out));
    this.size = Number(out[0]);
    this.dataPages = Number(out[1]);
  }

  /** The cdylib handle (0 once released). */
  get handle(): number {
    if (this.#handle === 0) throw new SandboxDisposedError("the snapshot has been released");
    return this.#handle;
  }

  /** Whether the last reference has been released. */
  get released(): boolean {
    return this.#handle === 0;
  }

  /**
   * Takes another reference (a code image shared by the artifact cache, snapshots and sandboxes):
   * the handle is dropped when every holder has called {@linkcode release} once.
   * `SandboxDisposedError` once released.
   */
  retain(): this {
    if (this.#handle === 0) throw new SandboxDisposedError("the snapshot has been released");
    this.#refs++;
    return this;
  }

  /** Drops one reference, and the handle with the last one. A no-op once released. */
  release(): void {
    const h = this.#handle;
    if (h === 0) return;
    if (--this.#refs > 0) return;
    this.#handle = 0;
    check(this.#lib, this.#lib.hl_snapshot_release(h));
  }

  /**
   * The page bitmap (`hl_snapshot_bitmap`, C ABI 9): bit `p % 64` of u64 word `p / 64`, the
   * words little-endian, is set when page `p` holds data.
   */
  bitmap(): Uint8Array {
    const words = check(this.#lib, this.#lib.hl_snapshot_bitmap(this.handle, null, 0n));
    const out = new BigUint64Array(Math.max(words, 1));
    check(this.#lib, this.#lib.hl_snapshot_bitmap(this.handle, out, BigInt(words)));
    return new Uint8Array(out.buffer, 0, words * 8);
  }

  /**
   * Writes the data pages back to back (holes left out) into the existing file `path` at
   * `offset` (`hl_snapshot_save_pages`, C ABI 9); returns their CRC-32.
   */
  savePages(path: string, offset: number): number {
    const bytes = new TextEncoder().encode(path);
    const crc = new Uint32Array(1);
    check(
      this.#lib,
      this.#lib.hl_snapshot_save_pages(this.handle, bytes, bytes.length, BigInt(offset), crc),
    );
    return crc[0];
  }

  /**
   * A snapshot of `size` bytes from the page section of the file `path` at `offset` (C ABI 9):
   * `bitmap` null for a dense section, mapped from the file itself (`hl_snapshot_map_file`),
   * else the section's page bitmap (as {@linkcode bitmap}), whose pages are read into a new
   * sealed memfd (`hl_snapshot_load_pages`). The cdylib bounds every number and checks the
   * file's length and the pages' CRC-32 against `crc`: a short or corrupt file is a
   * `HypervisorError` with code `INVALID_ARGUMENT`.
   */
  static fromFile(
    path: string,
    offset: number,
    size: number,
    bitmap: Uint8Array | null,
    crc: number,
    library?: string,
  ): MemorySnapshotHandle {
    return loadFileSection(path, offset, size, bitmap, crc, library);
  }

  /**
   * A dense section of the file `path` mapped as {@linkcode fromFile} does with a null bitmap,
   * but through `hl_snapshot_map_file_known` (C ABI 12): `identity` (6 words, in and out) is
   * `[1, dev, ino, size, ctime_s, ctime_ns]` for a file whose pages an earlier load checked
   * (then, if the open file still has that identity, they are not read again), else `[0, …]`.
   * On return `identity` holds what to remember (`[0, …]`: nothing); `read` says whether the
   * pages were read and their CRC-32 checked.
   */
  static fromFileKnown(
    path: string,
    offset: number,
    size: number,
    crc: number,
    identity: BigUint64Array,
    library?: string,
  ): { handle: MemorySnapshotHandle; read: boolean } {
    return mapKnownFileSection(path, offset, size, crc, identity, library);
  }
}

/** {@linkcode MemorySnapshotHandle.fromFile}'s body (compiled with the module). */
const loadFileSection = (function loadFileSection(
  path: string,
  offset: number,
  size: number,
  bitmap: Uint8Array | null,
  crc: number,
  library?: string,
): MemorySnapshotHandle {
  const lib = openLibrary(library);
  const bytes = new TextEncoder().encode(path);
  const out = new Uint32Array(1);
  // The cdylib reads u64 words: copied into an array that is 8-byte aligned whatever `bitmap` is.
  const words = new BigUint64Array(Math.ceil((bitmap?.length ?? 0) / 8));
  if (bitmap) new Uint8Array(words.buffer).set(bitmap);
  check(
    lib,
    bitmap === null
      ? lib.hl_snapshot_map_file(bytes, bytes.length, BigInt(offset), BigInt(size), crc, out)
      : lib.hl_snapshot_load_pages(
        bytes,
        bytes.length,
        BigInt(offset),
        BigInt(size),
        words,
        BigInt(words.length),
        crc,
        out,
      ),
  );
  return new MemorySnapshotHandle(lib, out[0]);
}).bind(undefined); // Eager: see the note after the imports.

/** {@linkcode MemorySnapshotHandle.fromFileKnown}'s body (compiled with the module). */
const mapKnownFileSection = (function mapKnownFileSection(
  path: string,
  offset: number,
  size: number,
  crc: number,
  identity: BigUint64Array,
  library?: string,
): { handle: MemorySnapshotHandle; read: boolean } {
  const lib = openLibrary(library);
  const bytes = new TextEncoder().encode(path);
  const out = new Uint32Array(1);
  const status = check(
    lib,
    lib.hl_snapshot_map_file_known(
      bytes,
      bytes.length,
      BigInt(offset),
      BigInt(size),
      crc,
      identity,
      out,
    ),
  );
  return { handle: new MemorySnapshotHandle(lib, out[0]), read: status === 1 };
}).bind(undefined); // Eager: see the note after the imports.

/** One micro-VM with one vCPU. Not thread-safe: one run at a time. */
export class MicroVm {
  readonly #lib: Symbols;
  #handle: number;
  #exit: DataView | undefined;
  /** Buffers over library-owned memory, detached by {@linkcode destroy}. */
  readonly #buffers: ArrayBuffer[] = [];
  /** The slot and size of the memory mapped at each guest-physical address (what views cover). */
  readonly #slots = new Map<number, { slot: number; size: number }>();
  readonly #regs = new BigUint64Array(18);
  /** Runs so far (every `SPIN_PROBE_EVERY`th probes the spin; see `run`). */
  #runs = 0;
  /** Running average of this VM's run times (ns, as seen from here), for the spin budget. */
  #typicalRunNs = SPIN_MIN_NS;
  readonly #u32 = new Uint32Array(1);

  private constructor(lib: Symbols, handle: number) {
    this.#lib = lib;
    this.#handle = handle;
  }

  /**
   * Forgets the run times the spin budget learned (a recycled VM's next owner starts as a new
   * VM does: the exit latency it sees does not depend on the last owner's runs).
   */
  forgetRunTimes(): void {
    this.#runs = 0;
    this.#typicalRunNs = SPIN_MIN_NS;
  }

  /** Creates an empty VM (no memory, no vCPU). */
  static create(library?: string): MicroVm {
    const lib = openLibrary(library);
    const out = new Uint32Array(1);
    check(lib, lib.hl_vm_create(out));
    return new MicroVm(lib, out[0]);
  }

  /** The cdylib handle (0 once destroyed). */
  get handle(): number {
    return this.#handle;
  }

  /** Whether {@linkcode destroy} has run. */
  get destroyed(): boolean {
    return this.#handle === 0;
  }

  #live(): number {
    if (this.#handle === 0) throw new SandboxDisposedError("the VM has been destroyed");
    return this.#handle;
  }

  /**
   * Maps `size` bytes of new, zeroed, library-owned memory at guest-physical `gpa` and returns
   * a zero-copy view of it. {@linkcode destroy} detaches the view's buffer before it unmaps the
   * memory: afterwards the view (and every view of the same buffer) has length 0, so reads give
   * `undefined` and writes do nothing; it can never reach the unmapped pages.
   */
  mapMemory(gpa: number, size: number, options: { readonly?: boolean } = {}): Uint8Array {
    const vm = this.#live();
    check(
      this.#lib,
      this.#lib.hl_vm_map_memory(
        vm,
        BigInt(gpa),
        BigInt(size),
        options.readonly ? 1 : 0,
        this.#u32,
      ),
      vm,
    );
    this.#slots.set(gpa, { slot: this.#u32[0], size });
    return this.memoryView(gpa, size);
  }

  /**
   * A zero-copy view of `bytes` from `offset` (default 0) of the memory mapped at guest-physical
   * `gpa` by {@linkcode mapMemory} or {@linkcode mapSnapshot}; {@linkcode destroy} (or
   * {@linkcode releaseView}) detaches it. V8
   * counts a view's length as external memory and collects garbage as that grows: views of all
   * 138 MiB of a JsSandbox's memory cost about one collection per start (7-8 mark-compacts for 8
   * starts from a snapshot, `tests/kvm/memory_view.test.ts`), so a view should cover what the host
   * reads and writes, not more (docs/js.md, "Cold start").
   */
  memoryView(gpa: number, bytes: number, offset = 0): Uint8Array {
    return MicroVm.#memoryView(this, gpa, bytes, offset);
  }

  static readonly #memoryView = (function vmMemoryView(
    self: MicroVm,
    gpa: number,
    bytes: number,
    offset: number,
  ): Uint8Array {
    const vm = self.#live();
    const mapped = self.#slots.get(gpa);
    if (
      mapped === undefined || !Number.isSafeInteger(bytes) || bytes <= 0 ||
      !Number.isSafeInteger(offset) || offset < 0 || offset + bytes > mapped.size
    ) {
      throw new RangeError(
        `no view of ${bytes} bytes at 0x${gpa.toString(16)} + 0x${offset.toString(16)}: ${
          mapped?.size ?? 0
        } bytes mapped there`,
      );
    }
    const ptr = self.#lib.hl_vm_memory_ptr(vm, mapped.slot);
    if (ptr === null) check(self.#lib, -9, vm);
    return new Uint8Array(self.#track(Deno.UnsafePointerView.getArrayBuffer(ptr!, bytes, offset)));
  }).bind(undefined); // Eager: see the note after the imports.

  /**
   * Detaches `view`'s buffer now (one that {@linkcode memoryView}, {@linkcode mapMemory} or
   * {@linkcode mapSnapshot} gave), instead of at {@linkcode destroy}: for a view made for one use,
   * so that V8 stops counting its length as external memory. Idempotent.
   */
  releaseView(view: Uint8Array): void {
    const buffer = view.buffer as ArrayBuffer;
    const i = this.#buffers.lastIndexOf(buffer);
    if (i < 0) return;
    this.#buffers[i] = this.#buffers[this.#buffers.length - 1];
    this.#buffers.pop();
    detach(buffer);
  }

  /** Remembers a buffer over library-owned memory, for {@linkcode destroy} to detach. */
  #track(buffer: ArrayBuffer): ArrayBuffer {
    this.#buffers.push(buffer);
    return buffer;
  }

  /**
   * Maps `code` (a snapshot made by {@linkcode snapshotFromBytes}) at guest-physical `gpa` as
   * memory the guest cannot write (no copy: every VM shares its pages). Returns whether the
   * hypervisor enforces read-only too (`KVM_MEM_READONLY`); the page tables always do.
   */
  mapCode(gpa: number, code: MemorySnapshotHandle): boolean {
    const vm = this.#live();
    return check(
      this.#lib,
      this.#lib.hl_vm_map_code(vm, BigInt(gpa), code.handle, this.#u32),
      vm,
    ) === 1;
  }

  /**
   * Maps a memory snapshot copy-on-write at guest-physical `gpa` (no copy) and returns a view
   * of its first `viewBytes` (default: all of it), as {@linkcode mapMemory} does
   * ({@linkcode destroy} detaches it too; {@linkcode memoryView} gives a longer one).
   */
  mapSnapshot(
    gpa: number,
    snapshot: MemorySnapshotHandle,
    viewBytes: number = snapshot.size,
  ): Uint8Array {
    return MicroVm.#mapSnapshot(this, gpa, snapshot, viewBytes);
  }

  static readonly #mapSnapshot = (function vmMapSnapshot(
    self: MicroVm,
    gpa: number,
    snapshot: MemorySnapshotHandle,
    viewBytes: number,
  ): Uint8Array {
    const vm = self.#live();
    check(
      self.#lib,
      self.#lib.hl_vm_map_snapshot(vm, BigInt(gpa), snapshot.handle, self.#u32),
      vm,
    );
    self.#slots.set(gpa, { slot: self.#u32[0], size: snapshot.size });
    return MicroVm.#memoryView(self, gpa, Math.min(viewBytes, snapshot.size), 0);
  }).bind(undefined); // Eager: see the note after the imports.

  /**
   * Snapshots memory slot `slot` (its non-zero pages, into a sealed memfd) and re-bases the slot
   * on it, so {@linkcode rebaseMemory} with it is then one `MADV_DONTNEED`.
   */
  snapshotMemory(slot = 0): MemorySnapshotHandle {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_snapshot_memory(vm, slot, this.#u32), vm);
    return new MemorySnapshotHandle(this.#lib, this.#u32[0]);
  }

  /**
   * Brings memory slot `slot` back to the snapshot's content (views stay valid); returns the
   * number of pages put back (C ABI 8).
   */
  rebaseMemory(snapshot: MemorySnapshotHandle, slot = 0): number {
    const vm = this.#live();
    return check(this.#lib, this.#lib.hl_vm_rebase_memory(vm, slot, snapshot.handle), vm);
  }

  /**
   * {@linkcode rebaseMemory} and {@linkcode setState} in one call, overlapped: the vCPU thread
   * loads the state while this thread puts the memory back. Returns the number of pages put back
   * (C ABI 8: the private copies found, or every page of a region dropped or re-mapped whole).
   */
  restore(snapshot: MemorySnapshotHandle, state: Uint8Array, slot = 0): number {
    const vm = this.#live();
    return check(
      this.#lib,
      this.#lib.hl_vm_restore(vm, slot, snapshot.handle, state, state.length),
      vm,
    );
  }

  /**
   * Drops the pages of `[offset, offset + length)` of memory slot `slot` (page-aligned): they read
   * as the slot's base content again (its snapshot, or zeros) and the hypervisor forgets every
   * translation of them. Call it after clearing page-table entries the guest may have used: KVM
   * does not notice the host's writes to guest page tables (docs/wasm.md, "Guard pages").
   */
  dropMemory(offset: number, length: number, slot = 0): void {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_vm_memory_drop(vm, slot, BigInt(offset), BigInt(length)), vm);
  }

  /** The vCPU's complete state as an opaque blob (for {@linkcode setState}). */
  getState(): Uint8Array {
    const vm = this.#live();
    let buf = new Uint8Array(8192);
    for (;;) {
      const n = check(this.#lib, this.#lib.hl_vcpu_get_state(vm, buf, buf.length), vm);
      if (n <= buf.length) return buf.slice(0, n);
      buf = new Uint8Array(n);
    }
  }

  /** Loads a blob from {@linkcode getState}. */
  setState(state: Uint8Array): void {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_vcpu_set_state(vm, state, state.length), vm);
  }

  /**
   * Creates the vCPU (on its own thread) in long mode, as `config` says. With `overlap`, only
   * starts it and returns: the caller fills memory while the hypervisor creates the vCPU, and the next vCPU
   * call waits for it (and reports a failed creation, as every later vCPU call of the VM does).
   */
  createVcpu(config: VcpuConfig, options: { overlap?: boolean } = {}): void {
    MicroVm.#createVcpu(this, config, options.overlap === true);
  }

  static readonly #createVcpu = (function vmCreateVcpu(
    self: MicroVm,
    config: VcpuConfig,
    overlap: boolean,
  ): void {
    const vm = self.#live();
    const words = new BigUint64Array([
      config.cr3,
      config.gdt?.base ?? 0,
      config.gdt?.limit ?? 0,
      config.idt?.base ?? 0,
      config.idt?.limit ?? 0,
      config.tss?.base ?? 0,
      config.tss?.limit ?? 0,
      config.codeSelector,
      config.dataSelector,
      config.tssSelector ?? 0,
    ].map(BigInt));
    const create = overlap ? self.#lib.hl_vcpu_create_start : self.#lib.hl_vcpu_create;
    check(self.#lib, create(vm, words), vm);
    const ptr = self.#lib.hl_vcpu_exit_ptr(vm);
    if (ptr === null) check(self.#lib, -9, vm);
    self.#exit = new DataView(
      self.#track(Deno.UnsafePointerView.getArrayBuffer(ptr!, EXIT_RECORD_SIZE)),
    );
  }).bind(undefined); // Eager: see the note after the imports.

  /** Sets general-purpose registers (unnamed ones become 0). */
  setRegisters(regs: Registers): void {
    const vm = this.#live();
    for (let i = 0; i < REGISTER_NAMES.length; i++) {
      this.#regs[i] = regs[REGISTER_NAMES[i]] ?? 0n;
    }
    // RFLAGS bit 1 is reserved and must read as 1; default to just that (interrupts off).
    if (regs.rflags === undefined) this.#regs[17] = 2n;
    check(this.#lib, this.#lib.hl_vcpu_set_regs(vm, this.#regs), vm);
  }

  /** Reads the general-purpose registers. */
  getRegisters(): Required<Registers> {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_vcpu_get_regs(vm, this.#regs), vm);
    const out = {} as Required<Registers>;
    REGISTER_NAMES.forEach((name, i) => out[name] = this.#regs[i]);
    return out;
  }

  /** Reads the control registers and selectors (CR2 for a page fault, CS for the CPL). */
  getSpecialRegisters(): SpecialRegisters {
    const vm = this.#live();
    const out = new BigUint64Array(8);
    check(this.#lib, this.#lib.hl_vcpu_get_special_regs(vm, out), vm);
    return {
      cr0: out[0],
      cr2: out[1],
      cr3: out[2],
      cr4: out[3],
      efer: out[4],
      cs: out[5],
      ss: out[6],
    };
  }

  /**
   * Starts a new guest call: clears the sticky stop that {@linkcode interrupt} sets. Until then
   * every run returns `Interrupted` at once.
   */
  beginCall(): void {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_vcpu_begin_call(vm), vm);
  }

  /**
   * Runs until the next exit, blocking this thread (the synchronous path). With `timeoutNs`
   * (0: none) the run is stopped when that time has passed, and returns `TimedOut`.
   */
  runSync(timeoutNs = 0): ExitKindValue {
    const vm = this.#live();
    return check(this.#lib, this.#lib.hl_vcpu_run(vm, BigInt(timeoutNs)), vm) as ExitKindValue;
  }

  /**
   * Runs until the next exit without blocking the event loop for long: posts the run to the vCPU
   * thread, spins briefly for its end (most exits take a few tens of µs: an await on the thread
   * pool would cost more than the exit), then waits on the thread pool. The spin adapts to the
   * VM's recent runs (1.5× their average, 30-100 µs); a VM whose runs average longer is not spun
   * on, except for an occasional probe. `spinNs`
   * overrides it for one run whose length the caller knows better (a guest's initialisation).
   */
  run(spinNs?: number): Promise<ExitKindValue> {
    return MicroVm.#run(this, spinNs);
  }

  static readonly #run = (async function vmRun(
    self: MicroVm,
    spinNs: number | undefined,
  ): Promise<ExitKindValue> {
    const vm = self.#live();
    check(self.#lib, self.#lib.hl_vcpu_start(vm), vm);
    const started = performance.now();
    const probe = ++self.#runs % SPIN_PROBE_EVERY === 0;
    const spin = spinNs ?? self.#spinBudget(probe);
    const polled = check(self.#lib, self.#lib.hl_vcpu_poll(vm, spin), vm);
    // A run whose length the caller knew (`spinNs`: the initialisation) teaches nothing. One
    // that ended within the spin counts with its time; one that outlasted it counts as twice the
    // spin (its time as seen here would include the pool's hop, which is not the run's); an
    // unspun one (the VM's runs are long) teaches nothing until a probe.
    if (polled !== 0) {
      if (spinNs === undefined) self.#learn((performance.now() - started) * 1e6);
      return polled as ExitKindValue;
    }
    if (spinNs === undefined && spin !== 0) self.#learn(2 * spin);
    const status = await self.#lib.hl_vcpu_wait(vm);
    return check(self.#lib, status, vm) as ExitKindValue;
  }).bind(undefined); // Eager: see the note after the imports.

  #spinBudget(probe: boolean): number {
    const typical = this.#typicalRunNs;
    if (typical > SPIN_MAX_NS && !probe) return 0;
    return Math.round(Math.min(SPIN_MAX_NS, Math.max(SPIN_MIN_NS, typical * 1.5)));
  }

  /** Folds one run's length (ns) into the average. */
  #learn(ns: number): void {
    this.#typicalRunNs += (ns - this.#typicalRunNs) / 4;
  }

  /**
   * Stops the guest: sets the sticky stop (every run returns `Interrupted` until the next
   * {@linkcode beginCall}) and kicks the vCPU out of a run in progress; returns once it is out.
   */
  interrupt(): void {
    const vm = this.#live();
    check(this.#lib, this.#lib.hl_vcpu_interrupt(vm), vm);
  }

  /** Port of the last I/O exit. */
  get exitPort(): number {
    return Number(this.#exitView().getBigUint64(EXIT_A, true));
  }

  #exitView(): DataView {
    this.#live();
    if (!this.#exit) throw new SandboxDisposedError("the VM has no vCPU yet");
    return this.#exit;
  }

  /** Decodes the last exit. */
  lastExit(): VmExit {
    const v = this.#exitView();
    const a = v.getBigUint64(EXIT_A, true);
    const b = Number(v.getBigUint64(EXIT_B, true));
    const c = v.getBigUint64(EXIT_C, true);
    const len = Math.min(Number(v.getBigUint64(EXIT_DATA_LEN, true)), EXIT_DATA_CAPACITY);
    const data = () => new Uint8Array(v.buffer, v.byteOffset + EXIT_DATA, len).slice();
    switch (v.getUint32(EXIT_KIND, true)) {
      case ExitKind.IoOut:
        return { kind: "io_out", port: Number(a), size: b, data: data() };
      case ExitKind.IoIn:
        return { kind: "io_in", port: Number(a), size: b };
      case ExitKind.Halt:
        return { kind: "halt" };
      case ExitKind.Shutdown:
        return { kind: "shutdown" };
      case ExitKind.Mmio:
        return { kind: "mmio", address: a, size: b, write: c === 1n, data: data() };
      case ExitKind.FailEntry:
        return { kind: "fail_entry", reason: a };
      case ExitKind.InternalError:
        return { kind: "internal_error", suberror: a };
      case ExitKind.Interrupted:
        return { kind: "interrupted" };
      default:
        return { kind: "other", reason: a, detail: new TextDecoder().decode(data()) };
    }
  }

  /** Counters of this VM. */
  stats(): VmStats {
    const vm = this.#live();
    const out = new BigUint64Array(3);
    check(this.#lib, this.#lib.hl_vm_stats(vm, out), vm);
    return { ioctls: Number(out[0]), exits: Number(out[1]), runs: Number(out[2]) };
  }

  /**
   * Stops the vCPU (interrupting a run in progress; the guest never runs again once this
   * returns); the cdylib closes the VM and unmaps its memory on a background thread
   * ({@linkcode teardownWait} waits for it). Idempotent. Every buffer this VM handed out over its memory (the views of
   * {@linkcode mapMemory}, the exit record) is detached first (`ArrayBuffer.prototype.transfer(0)`:
   * no copy, the old buffer's length becomes 0), so no view outlives the unmapped memory.
   */
  destroy(): void {
    const vm = this.#handle;
    if (vm === 0) return;
    this.#handle = 0;
    this.#exit = undefined;
    for (const buffer of this.#buffers.splice(0)) detach(buffer);
    check(this.#lib, this.#lib.hl_vm_destroy(vm));
  }
}

/**
 * Detaches `buffer` (an external buffer over library memory): `transfer(0)` moves nothing and
 * leaves the old buffer detached, every view of it with length 0.
 */
function detach(buffer: ArrayBuffer): void {
  if (!buffer.detached) buffer.transfer(0);
}
