/**
 * `Sandbox`: a guest binary in its own micro-VM, with typed calls both ways.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import { ABI_VERSION, FRAME_HEADER_SIZE, WASM_MAP_FUNCTION } from "./abi.ts";
import {
  ArgumentError,
  CancelledError,
  DEFAULT_MAX_EXITS_PER_CALL,
  GuestAbiError,
  GuestError,
  GuestLinkError,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
} from "./errors.ts";
import { type MemorySnapshotHandle, MicroVm } from "./ffi/vm.ts";
import {
  type Frame,
  FrameDecoder,
  fromValue,
  type FunctionSignature,
  type JsValue,
  toValues,
  type Value,
} from "./wire.ts";
import { type ElfImage, parseElf } from "./elf.ts";
import { ContentMemo } from "./content_memo.ts";
import { GUEST_VCPU_CONFIG } from "./system.ts";
import { readSource } from "./source.ts";
import { checkCount, checkHostFunctions, checkTimeout, lookupName } from "./options.ts";
import {
  computeLayout,
  entryRegisters,
  fillMemory,
  type LowPages,
  type MemoryLayout,
  readGuestAbiVersion,
} from "./layout.ts";
import { droppedByRestore, mapWasmMemory, touchPages, wasmMapping } from "./wasm_reservation.ts";
import { exitStep, serveHostCall } from "./call/protocol.ts";
import { driveAsync, driveSync, type ExchangeHost } from "./call/driver.ts";
import { poisons } from "./call/poison.ts";
import { SMALL_VIEW_BYTES, type Widen, WindowedDecoder, WindowedEncoder } from "./call/window.ts";
import { describeThrown, isInstance } from "./call/describe.ts";
import type { HostFunction, StopReason } from "./call/types.ts";
import type { TypedGuest } from "./host_function.ts";
import {
  checkHostSignatures,
  checkLayout,
  hostSignatures,
  makeSnapshot,
  onSnapshotRelease,
  sha256,
  type Snapshot,
  SnapshotMismatchError,
  type SnapshotState,
  stateOf,
} from "./snapshot.ts";
import { CDYLIB_ABI_VERSION } from "./ffi/lib.ts";
import { configEnv } from "./host_io.ts";
import { snapshotVms } from "./recycle.ts";
import {
  refuseKey,
  type StartCacheCore,
  startCacheFor,
  type StartSnapshotCache,
} from "./start_cache.ts";
import { registerSandbox } from "./sandbox_internal.ts";
import { type Deadline, deadlines } from "./deadlines.ts";
import {
  type CallTrace,
  countSandbox,
  startCall,
  traceCreate,
  traceRestore,
  traceSnapshot,
} from "./telemetry.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** A value that crosses the sandbox boundary; `undefined` stands for `void`. */
export type { JsValue } from "./wire.ts";
/** The type names of the guest ABI. */
export type { ValueType } from "./abi.ts";
/** A guest function's signature. */
export type { FunctionSignature } from "./wire.ts";

/** A host function the guest may call by name. */
export type { HostFunction } from "./call/types.ts";

/** Sizes of the guest's memory regions (bytes, multiples of 4096). */
export interface MemoryOptions {
  /** Heap size (default 8 MiB). */
  heapSize?: number;
  /** Stack size (default 1 MiB); an unmapped guard page sits below it. */
  stackSize?: number;
  /** Host → guest buffer (default 4 MiB): bounds the size of call arguments. */
  inputSize?: number;
  /** Guest → host buffer (default 4 MiB): bounds the size of results. */
  outputSize?: number;
}

/** Options of {@linkcode Sandbox.create}. */
export interface SandboxOptions extends MemoryOptions {
  /** The guest: a path, a `file:` URL, or the ELF bytes. */
  guest: string | URL | Uint8Array;
  /** Host functions the guest may call, by name. */
  hostFunctions?: Record<string, HostFunction>;
  /** Default timeout of every call, in milliseconds (none by default). */
  timeoutMs?: number;
  /** Timeout of the guest's initialisation (default 30 000 ms). */
  initTimeoutMs?: number;
  /**
   * Receives the guest's log messages (default: none; LOG exits are then counted in
   * `stats().logsSkipped` and never decoded).
   */
  onLog?: (level: number, message: string) => void;
  /**
   * The most VM exits (LOGs and host calls) one call may make before it fails with
   * {@linkcode ExitBudgetError} and poisons the sandbox (default
   * {@linkcode DEFAULT_MAX_EXITS_PER_CALL}, one million).
   */
  maxExitsPerCall?: number;
  /** Path of `libhl_rust_vmm.so` (default: `$HL_SANDBOX_LIB`, then the local build). */
  library?: string;
  /**
   * Per-image start snapshots (default `true`: {@linkcode StartSnapshotCache.default}; or a cache
   * of your own): the first create of an image and options runs the guest's start and snapshots
   * it, later ones start from that snapshot instead of running the start again. A start that
   * calls a host function or logs is never snapshotted. `false` runs the start on every create
   * (so does `HL_START_SNAPSHOT=0` for the creates without this option).
   */
  startSnapshot?: boolean | StartSnapshotCache;
}

/**
 * Options of {@linkcode Sandbox.create} that start the sandbox from a {@linkcode Snapshot}: a VM
 * whose memory is the snapshot's, copy-on-write (no copy, no initialisation run) — a new one, or
 * one a disposed sandbox of the same snapshot left, restored to it (`recycle`). The memory sizes
 * are the snapshot's.
 */
export interface SnapshotSandboxOptions {
  /** The snapshot to start from. */
  snapshot: Snapshot;
  /**
   * Host functions: the same names and types as the sandbox the snapshot was taken of (checked;
   * a {@linkcode SnapshotMismatchError} otherwise).
   */
  hostFunctions?: Record<string, HostFunction>;
  /** Default timeout of every call, in milliseconds (none by default). */
  timeoutMs?: number;
  /** Receives the guest's log messages (default: dropped). */
  onLog?: (level: number, message: string) => void;
  /** Path of `libhl_rust_vmm.so` (default: `$HL_SANDBOX_LIB`, then the local build). */
  library?: string;
  /**
   * Whether `dispose()` may keep this sandbox's VM, restored in place to the snapshot, for the
   * next create from the same snapshot, which then takes it instead of making a VM (default
   * `true`; `HL_SNAPSHOT_RECYCLE=0` turns it off for the process). Only a healthy, idle sandbox
   * is kept, at most 2 per snapshot and 8 in all, and they are destroyed when the snapshot is
   * released. The next owner sees exactly the snapshot's state and gets a new handle.
   */
  recycle?: boolean;
}

/** Per-call options. */
export interface CallOptions {
  /** Timeout in milliseconds; the sandbox is poisoned when it fires. */
  timeoutMs?: number;
  /** Cancels the call; the sandbox is poisoned when it fires during the call. */
  signal?: AbortSignal;
  /** This call's exit budget (default: the sandbox's `maxExitsPerCall`). */
  maxExitsPerCall?: number;
}

/**
 * Counters of one sandbox's VM: ioctls, exits and runs since it was created, and the LOG exits
 * skipped for want of an `onLog`.
 */
export interface SandboxStats {
  /** Hypervisor ioctls issued for this VM so far. */
  ioctls: number;
  /** Exits from the guest to the host (interruptions excluded). */
  exits: number;
  /** Calls of the run ioctl. */
  runs: number;
  /** LOG exits skipped (not decoded) because the sandbox has no `onLog`. */
  logsSkipped: number;
}

/**
 * Marks the host functions a sandbox is running (through their awaits too), so a call back into
 * that sandbox from one of them fails at once instead of deadlocking.
 */
const hostFunctionContext = new AsyncLocalStorage<Sandbox>();

/** A guest image as `Sandbox.create` needs it: parsed, and its SHA-256 when first asked for. */
interface GuestImage {
  readonly elf: ElfImage;
  /** SHA-256 of the image (for snapshots), computed on first use. */
  readonly id: () => Promise<string>;
  /** The host-built pages below the buffers, per layout (`fillMemory`). */
  readonly low: LowPages;
  /** The last FUNCTION_TABLE frame this image's start wrote, with its exact bytes (`TableDecoder`). */
  table?: { readonly bytes: Uint8Array; readonly frame: Frame };
}

/**
 * Guest images by content (`ContentMemo`): creating sandboxes of the same guest parses it once
 * (~150 µs for the test guest) and then costs a compare. The digest waits until a snapshot needs
 * it (hashing the test guest is ~250 µs, mostly synchronous inside `crypto.subtle.digest`); it
 * hashes the memo's private copy, so a caller's later change to its array cannot change it.
 */
const guestImages = new ContentMemo<GuestImage>(16, 256 * 1024 * 1024);

function guestImage(copy: Uint8Array): GuestImage {
  const elf = parseElf(copy);
  let id: Promise<string> | undefined;
  // The memo's own copy, hashed once: not through `digest`'s memo, which would keep a second copy.
  return { elf, id: () => id ??= sha256(copy), low: new Map() };
}

/**
 * The decoder of a cold create's initialisation: a FUNCTION_TABLE frame byte for byte the same as
 * the one this image's start wrote last is that frame again, not decoded again. Every start of an
 * image writes the same table, and decoding it right after the VM's first run (a table of 47
 * functions) took ~100 µs of a create: the first decode after a VM's run costs ~3x a second one
 * of the same bytes (~35-40 µs), from guest memory or a copy alike (likely cold caches and branch
 * predictors after the run; not a page fault). A compare is exact (the guest's bytes against the
 * memo's private copy), so the guest gets nothing from it that decoding its bytes would not give;
 * the frame's signatures are frozen, as they are shared by every sandbox of the image (as a
 * snapshot's are by its copies).
 */
class TableDecoder extends FrameDecoder {
  readonly #out: Uint8Array;
  readonly #image: GuestImage;

  constructor(out: Uint8Array, image: GuestImage) {
    super(out);
    this.#out = out;
    this.#image = image;
  }

  override decode(): Frame {
    const out = this.#out;
    const memo = this.#image.table;
    if (memo && sameFrame(out, memo.bytes)) return memo.frame;
    const frame = super.decode();
    if (frame.kind === "FUNCTION_TABLE") {
      for (const f of [...frame.functions, ...frame.imports ?? []]) {
        Object.freeze(f.params);
        Object.freeze(f);
      }
      Object.freeze(frame.functions);
      if (frame.imports) Object.freeze(frame.imports);
      // `super.decode` checked the payload length against the buffer.
      const length = FRAME_HEADER_SIZE +
        new DataView(out.buffer, out.byteOffset, FRAME_HEADER_SIZE).getUint32(4, true);
      this.#image.table = { bytes: out.slice(0, length), frame: Object.freeze(frame) };
    }
    return frame;
  }
}

/** Whether `out` starts with the frame `bytes` (its length field included). */
/**
 * How much a live sandbox views from guest address 0: the low region (PEB, stubs, ring-0 stack,
 * page tables) and the input buffer's first `SMALL_VIEW_BYTES`. V8 counts a view's length as
 * external memory and collects garbage for it (`MicroVm.memoryView`): views of the whole 4 MiB
 * buffers, 8.2 GB at 1,000 live sandboxes, cost ~100 full collections in a 4 s create loop
 * (docs/design.md, "Scale"). A larger frame gets a view of its whole buffer for itself
 * (`call/window.ts`).
 */
const lowViewBytes = (function lowViewBytes(layout: MemoryLayout): number {
  return layout.inputAddr + Math.min(layout.inputSize, SMALL_VIEW_BYTES);
}).bind(undefined); // Eager: see the note after the imports.

/** A view of the output buffer's first `SMALL_VIEW_BYTES` (`lowViewBytes`). */
const outputView = (function outputView(vm: MicroVm, layout: MemoryLayout): Uint8Array {
  return vm.memoryView(0, Math.min(layout.outputSize, SMALL_VIEW_BYTES), layout.outputAddr);
}).bind(undefined); // Eager: see the note after the imports.

/** Views of the whole buffer at `addr` of `size` bytes, one per frame that needs it. */
const widen = (function widen(vm: MicroVm, addr: number, size: number): Widen {
  return { view: () => vm.memoryView(0, size, addr), release: (view) => vm.releaseView(view) };
}).bind(undefined); // Eager: see the note after the imports.

function sameFrame(out: Uint8Array, bytes: Uint8Array): boolean {
  if (out.length < bytes.length) return false;
  const n = bytes.length;
  const a = new DataView(out.buffer, out.byteOffset, n);
  const b = new DataView(bytes.buffer, bytes.byteOffset, n);
  let i = 0;
  for (; i + 4 <= n; i += 4) if (a.getUint32(i) !== b.getUint32(i)) return false;
  for (; i < n; i++) if (out[i] !== bytes[i]) return false;
  return true;
}

/**
 * How long the first run of a guest's initialisation spins for its end before it waits on the
 * thread pool: a first run in a new VM takes ~200-400 µs (its pages fault in), past the adaptive
 * 30-100 µs spin of calls, and the hop through the pool added ~100 µs to a create (p10, interleaved
 * A/B). Bounded, and for the first run only: a longer one still waits on the pool, with the event
 * loop free, and later runs spin as calls do.
 */
const INIT_SPIN_NS = 600_000;

/**
 * How long the first call of a new VM (the first after its initialisation, or after a create
 * from a snapshot) spins for its first run's end: that run pays KVM's first-touch faults on the
 * pages the call reaches first (~10-15 µs each on kvm_pvm), so it outlasts the VM's default
 * 30-45 µs spin, and the hop through the thread pool then added ~100-200 µs to the call
 * (`bench/_cold_steps.ts`). Once per VM; later runs spin adaptively as before.
 */
const FIRST_CALL_SPIN_NS = 300_000;

const finalizer = new FinalizationRegistry<Held>((held) => {
  try {
    held.vm.destroy();
    held.code?.release();
    countSandbox(-1);
  } catch {
    // Nothing to report to at GC time.
  }
});

/** What an undisposed sandbox holds, for the finalizer. */
interface Held {
  vm: MicroVm;
  code: MemorySnapshotHandle | undefined;
}

/**
 * A guest binary running in its own KVM micro-VM. Create with {@linkcode Sandbox.create}, call
 * guest functions with {@linkcode Sandbox.call}, and dispose (or `await using`) when done.
 *
 * @example
 * ```ts
 * import { Sandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({
 *   guest: "guest/target/x86_64-unknown-linux-gnu/release/testguest",
 *   hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
 * });
 * console.log(await sb.call("add", 2, 3)); // 5
 * console.log(await sb.call("call_host", "double", 21)); // 42
 * ```
 */
export class Sandbox implements AsyncDisposable {
  #vm: MicroVm | undefined;
  /** The low region (PEB, stubs, page tables) and the input buffer's first bytes (`lowViewBytes`). */
  #memory: Uint8Array | undefined;
  /** The output buffer's first bytes (`outputViewBytes`). */
  #output: Uint8Array | undefined;
  #encoder: WindowedEncoder | undefined;
  #decoder: WindowedDecoder | undefined;
  readonly #layout: MemoryLayout;
  /** Host-published code mapped at `layout.codeAddr` (the wasmtime engine's artifact), if any. */
  #code: MemorySnapshotHandle | undefined;
  readonly #functions: Map<string, FunctionSignature>;
  /** The host functions the guest declared it imports; undefined: it declared none. */
  #imports: readonly FunctionSignature[] | undefined;
  readonly #hostFunctions: Map<string, HostFunction>;
  readonly #options: Omit<SandboxOptions, "guest">;
  /** SHA-256 of the guest image, for snapshots (computed when first asked for). */
  #guestId: (() => Promise<string>) | undefined;
  #poison: Error | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #stop: StopReason | undefined;
  /** Wakes a call that is waiting for an asynchronous host function (stop or dispose). */
  #wake: (() => void) | undefined;
  #busy = false;
  /** Revoked by a hand-over (`handOverSandbox`): every use is `SandboxDisposedError`. */
  #revoked = false;
  /** Exchanges (calls, the initialisation) started so far: a host function's answer is only
   * written for the exchange that called it. */
  #exchanges = 0;
  /** Whether a call has run on this VM (the first one spins longer: `FIRST_CALL_SPIN_NS`). */
  #called = false;
  /** LOG and host-call exits so far: a start that made any is not snapshotted (start_cache.ts). */
  #told = 0;
  /** The snapshot this sandbox's VM was made from (or taken over at), for recycling. */
  #base: SnapshotState | undefined;
  /** The VM's counters when this handle got it (a recycled VM's earlier owners' are not its). */
  #statsBase: { ioctls: number; exits: number; runs: number } | undefined;
  #logsSkipped = 0;
  /** The call in progress's trace, when telemetry is on (its host calls are its children). */
  #trace: CallTrace | undefined;

  /**
   * `memory`: a view from guest address 0 of at least `lowViewBytes(layout)`; `output`: a view of
   * the output buffer's first `outputViewBytes(layout)` (`Sandbox.#views`).
   */
  private constructor(
    vm: MicroVm,
    memory: Uint8Array,
    output: Uint8Array,
    layout: MemoryLayout,
    hostFunctions: Map<string, HostFunction>,
    options: Omit<SandboxOptions, "guest">,
  ) {
    this.#vm = vm;
    this.#memory = memory;
    this.#output = output;
    this.#layout = layout;
    this.#encoder = new WindowedEncoder(
      memory.subarray(layout.inputAddr, lowViewBytes(layout)),
      layout.inputSize,
      widen(vm, layout.inputAddr, layout.inputSize),
      "inputSize",
    );
    this.#decoder = new WindowedDecoder(
      output,
      layout.outputSize,
      widen(vm, layout.outputAddr, layout.outputSize),
    );
    this.#functions = new Map();
    this.#hostFunctions = hostFunctions;
    this.#options = options;
  }

  /**
   * Loads the guest into a new micro-VM and runs its initialisation, which publishes the guest's
   * function table. Bad options or a bad image are rejected before a VM is created.
   *
   * Per-image start snapshots (`startSnapshot`, on by default): the first cold create of an image
   * with these sizes, host function types and library runs the guest's start and snapshots the
   * sandbox right after it; later ones start from that snapshot (as `create({ snapshot })` does)
   * instead of running the start again. So the start runs once per image and options per
   * {@linkcode StartSnapshotCache} (per process by default): whatever it computed — a seed read
   * from `rdtsc`/`rdrand` included — is shared by those sandboxes; nothing else a guest or host
   * can observe changes. A start that calls a host function or logs is never snapshotted: it runs
   * in every create, and its logs reach every sandbox's `onLog`. `startSnapshot: false` (or
   * `HL_START_SNAPSHOT=0`) runs the start in every create.
   *
   * With `{ snapshot }`: a sandbox on the snapshot's memory, copy-on-write, and its vCPU state; on
   * a VM a disposed sandbox of the same snapshot left, restored in place to it, when there is one
   * (`recycle` in {@linkcode SnapshotSandboxOptions}), else on a new VM.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * const sb = await Sandbox.create({ guest: "path/to/guest", heapSize: 16 << 20 });
   * console.log(sb.functions.map((f) => f.name));
   * await sb.dispose();
   * ```
   */
  static create(options: SandboxOptions | SnapshotSandboxOptions): Promise<Sandbox> {
    return Sandbox.#traced(options, undefined);
  }

  /** `#create` in a span (telemetry.ts). */
  static #traced(
    options: SandboxOptions | SnapshotSandboxOptions,
    code: MemorySnapshotHandle | undefined,
    wasmReservationSize = 0,
  ): Promise<Sandbox> {
    const path = typeof options === "object" && options !== null && "snapshot" in options &&
        options.snapshot !== undefined
      ? "snapshot"
      : "cold";
    return traceCreate(
      "native",
      undefined,
      path,
      () => Sandbox.#create(options, code, true, wasmReservationSize),
    );
  }

  static {
    // The library's privileged operations on a sandbox (sandbox_internal.ts), registered once.
    registerSandbox({
      createWithCode: (options, code, wasm) => Sandbox.#traced(options, code, wasm),
      createUnlinked: (options) => Sandbox.#create(options, undefined, false),
      codeAddr: (sandbox) => sandbox.#layout.codeAddr,
      poison: (sandbox, error) => {
        sandbox.#poison ??= error;
      },
      handOver: (sandbox) => sandbox.#handOver(),
    });
  }

  /**
   * The host function `name` as the guest's host calls see it: the caller's, or for
   * `hl_wasm_map` in a sandbox with a Wasm reservation, the host's own (wasm_reservation.ts).
   */
  #hostFunction(name: string): HostFunction | undefined {
    if (name !== WASM_MAP_FUNCTION || this.#layout.wasmReservationSize === 0) {
      return this.#hostFunctions.get(name);
    }
    return {
      params: ["u64", "u64"],
      result: "void",
      fn: (base: bigint, bytes: bigint) => {
        // The page tables are in the low view; the pages newly mapped are made present through a
        // view of just them, detached right after: V8 counts a view's length as external memory
        // and a view of all memory per grow cost a full collection each (`MicroVm.memoryView`).
        const vm = this.#vm!;
        const drop = mapWasmMemory(
          this.#memory!,
          this.#layout,
          Number(base),
          Number(bytes),
          (from, to) => {
            const pages = vm.memoryView(0, to - from, from);
            try {
              touchPages(pages);
            } finally {
              vm.releaseView(pages);
            }
          },
        );
        if (drop) vm.dropMemory(drop.offset, drop.length);
      },
    };
  }

  /** `handOverSandbox` (sandbox_internal.ts): revokes this handle and moves its VM into a new one. */
  async #handOver(): Promise<Sandbox> {
    this.#live();
    this.#revoked = true;
    if (this.#busy) {
      // The guest is stopped wherever it is: the VM needs a restore before it serves anyone.
      this.#poison ??= new CancelledError("the run that lent this sandbox ended during a call");
      this.#requestStop({ kind: "cancel" });
    }
    // The call, snapshot or restore in progress settles (a stopped call, or one waiting for a host
    // function, is woken); those queued behind it find the handle revoked and touch nothing.
    await this.#queue;
    const vm = this.#vm;
    if (!vm) throw new SandboxDisposedError();
    const next = new Sandbox(
      vm,
      this.#memory!,
      this.#output!,
      this.#layout,
      this.#hostFunctions,
      this.#options,
    );
    next.#code = this.#code;
    next.#guestId = this.#guestId;
    next.#poison = this.#poison;
    next.#logsSkipped = this.#logsSkipped;
    next.#called = this.#called;
    next.#base = this.#base;
    next.#statsBase = this.#statsBase;
    for (const [name, f] of this.#functions) next.#functions.set(name, f);
    next.#imports = this.#imports;
    // The old handle reaches nothing from here on (its dispose is a no-op).
    this.#vm = undefined;
    this.#memory = undefined;
    this.#output = undefined;
    this.#encoder = undefined;
    this.#decoder = undefined;
    this.#code = undefined;
    finalizer.unregister(this);
    finalizer.register(next, { vm, code: next.#code }, next);
    return next;
  }

  static readonly #create = (async function sandboxCreate(
    options: SandboxOptions | SnapshotSandboxOptions,
    code: MemorySnapshotHandle | undefined,
    link = true,
    wasmReservationSize = 0,
  ): Promise<Sandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("Sandbox.create takes an options object with a `guest`");
    }
    if ("snapshot" in options && options.snapshot !== undefined) {
      return Sandbox.#fromSnapshot(options);
    }
    if (!("guest" in options)) {
      throw new ArgumentError("Sandbox.create takes an options object with a `guest`");
    }
    const hostFunctions = checkHostFunctions(options.hostFunctions ?? {});
    checkTimeout(options.timeoutMs, "timeoutMs");
    checkTimeout(options.initTimeoutMs, "initTimeoutMs");
    checkCount(options.maxExitsPerCall, "maxExitsPerCall", DEFAULT_MAX_EXITS_PER_CALL);
    const bytes = await readSource(options.guest, "guest");
    const image = guestImages.get(bytes, guestImage);
    const elf = image.elf;
    const layout = computeLayout(elf, { ...options, codeSize: code?.size, wasmReservationSize });
    // Per-image start snapshots (start_cache.ts): for the public cold path only.
    const cache = link && !code && wasmReservationSize === 0
      ? startCacheFor(options.startSnapshot)
      : undefined;
    if (cache) return Sandbox.#startCached(cache, options, hostFunctions, image, layout);
    return Sandbox.#cold(options, hostFunctions, image, layout, code, link);
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /**
   * A cold create through a start-snapshot cache: from the key's start snapshot when there is
   * one; else the start runs, and a start that told the host nothing is snapshotted for the next.
   */
  static async #startCached(
    cache: StartCacheCore,
    options: SandboxOptions,
    hostFunctions: Map<string, HostFunction>,
    image: GuestImage,
    layout: MemoryLayout,
  ): Promise<Sandbox> {
    const guestId = await image.id();
    const key = startKey(guestId, layout, hostFunctions, options.library);
    let hit = await cache.snapshots.get(key);
    // Another create of the key began its start meanwhile: wait for that one too.
    while (!hit && cache.snapshots.has(key)) hit = await cache.snapshots.get(key);
    if (hit) {
      cache.stats.hits++;
      return Sandbox.#fromState(stateOf(hit), hostFunctions, options);
    }
    cache.stats.starts++;
    if (cache.refused.has(key)) return Sandbox.#cold(options, hostFunctions, image, layout);
    return cache.snapshots.fill(key, async () => {
      const sandbox = await Sandbox.#cold(options, hostFunctions, image, layout);
      if (sandbox.#told > 0) {
        refuseKey(cache, key);
        return { value: sandbox, snapshot: undefined };
      }
      let snapshot: Snapshot | undefined;
      try {
        snapshot = sandbox.#startSnapshot(guestId);
        cache.stats.taken++;
      } catch {
        // Not snapshotted (e.g. out of memory for the memfd): the sandbox itself is fine.
      }
      return { value: sandbox, snapshot };
    });
  }

  /** The snapshot of a sandbox right after its start (what `snapshot()` would take then). */
  #startSnapshot(guestId: string): Snapshot {
    const vm = this.#vm!;
    const vcpu = vm.getState();
    const memory = vm.snapshotMemory();
    return makeSnapshot({
      memory,
      vcpu,
      layout: this.#layout,
      code: undefined,
      functions: new Map(this.#functions),
      imports: this.#imports,
      hostSignatures: hostSignatures(this.#hostFunctions),
      guestId,
      abiVersion: ABI_VERSION,
    });
  }

  /** A new VM: memory filled by the host, then the guest's start. */
  static async #cold(
    options: SandboxOptions,
    hostFunctions: Map<string, HostFunction>,
    image: GuestImage,
    layout: MemoryLayout,
    code?: MemorySnapshotHandle,
    link = true,
  ): Promise<Sandbox> {
    const elf = image.elf;
    const vm = MicroVm.create(options.library);
    let sandbox: Sandbox | undefined;
    try {
      // The vCPU is created on its thread while this one maps and fills memory (~200 µs each).
      vm.createVcpu(GUEST_VCPU_CONFIG, { overlap: true });
      const whole = vm.mapMemory(0, layout.memorySize);
      if (code) vm.mapCode(layout.codeAddr, code);
      fillMemory(whole, layout, elf, image.low);
      // The view of all memory is not kept: V8 counts its length as external memory.
      vm.releaseView(whole);
      vm.setRegisters(entryRegisters(layout, elf.entryOffset));
      const memory = vm.memoryView(0, lowViewBytes(layout));
      sandbox = new Sandbox(vm, memory, outputView(vm, layout), layout, hostFunctions, options);
      sandbox.#code = code?.retain();
      sandbox.#guestId = image.id;
      await sandbox.#initialise(options.initTimeoutMs ?? 30_000, image);
      if (link) checkImports(sandbox.#imports, hostFunctions);
    } catch (e) {
      vm.destroy();
      if (sandbox) sandbox.#code?.release();
      throw e;
    }
    finalizer.register(sandbox, { vm, code: sandbox.#code }, sandbox);
    countSandbox(1);
    return sandbox;
  }

  /** `create({ snapshot })`: a new VM on the snapshot's memory, copy-on-write, and its vCPU state. */
  static #fromSnapshot(options: SnapshotSandboxOptions): Sandbox {
    const state = stateOf(options.snapshot);
    const hostFunctions = checkHostFunctions(options.hostFunctions ?? {});
    checkHostSignatures(state.hostSignatures, hostFunctions);
    checkTimeout(options.timeoutMs, "timeoutMs");
    checkSnapshotAbi(state.abiVersion);
    if (options.recycle !== undefined && typeof options.recycle !== "boolean") {
      throw new ArgumentError("recycle must be a boolean");
    }
    return Sandbox.#fromState(state, hostFunctions, options);
  }

  /** A new VM on `state` (checked by the caller against `hostFunctions`). */
  static readonly #fromState = (function sandboxFromState(
    state: SnapshotState,
    hostFunctions: Map<string, HostFunction>,
    options: Omit<SandboxOptions, "guest"> & { recycle?: boolean },
  ): Sandbox {
    const recycle = options.recycle !== false && recyclable(state);
    const idle = recycle ? snapshotVms.take(state, () => !state.memory.released) : undefined;
    if (idle) {
      // A VM restored to this snapshot at its last owner's dispose (recycle.ts): a new handle.
      // Its spin budget starts afresh: how long the last owner's runs took is not this one's.
      idle.vm.forgetRunTimes();
      let sandbox: Sandbox;
      try {
        sandbox = new Sandbox(
          idle.vm,
          idle.memory,
          idle.output,
          state.layout,
          hostFunctions,
          options,
        );
      } catch (e) {
        // Taken out of the store and owned by no handle: destroyed here, not leaked.
        idle.vm.destroy();
        throw e;
      }
      sandbox.#statsBase = idle.vm.stats();
      sandbox.#base = state;
      // Its pages are present already: its first call needs no longer spin.
      sandbox.#called = true;
      sandbox.#guestId = () => Promise.resolve(state.guestId);
      for (const [name, f] of state.functions) sandbox.#functions.set(name, f);
      sandbox.#imports = state.imports;
      finalizer.register(sandbox, { vm: idle.vm, code: undefined }, sandbox);
      countSandbox(1);
      return sandbox;
    }
    const vm = MicroVm.create(options.library);
    let sandbox: Sandbox;
    try {
      // The vCPU is created on its thread while this one maps the snapshot.
      vm.createVcpu(GUEST_VCPU_CONFIG, { overlap: true });
      // The page tables, PEB, stubs, ring-0 stack and the input buffer's first bytes; the output
      // buffer's first bytes beside them (`lowViewBytes`).
      const memory = vm.mapSnapshot(0, state.memory, lowViewBytes(state.layout));
      if (state.layout.codeSize > 0) {
        if (!state.code) throw new SnapshotMismatchError("the snapshot has no code image");
        vm.mapCode(state.layout.codeAddr, state.code);
      }
      vm.setState(state.vcpu);
      sandbox = new Sandbox(
        vm,
        memory,
        outputView(vm, state.layout),
        state.layout,
        hostFunctions,
        options,
      );
      sandbox.#code = state.code?.retain();
    } catch (e) {
      vm.destroy();
      throw e;
    }
    sandbox.#guestId = () => Promise.resolve(state.guestId);
    if (recycle) sandbox.#base = state;
    for (const [name, f] of state.functions) sandbox.#functions.set(name, f);
    // Its host functions match the snapshot's (checked above), which were linked at create.
    sandbox.#imports = state.imports;
    finalizer.register(sandbox, { vm, code: sandbox.#code }, sandbox);
    countSandbox(1);
    return sandbox;
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /**
   * Freezes this sandbox as it is now — memory, vCPU state (registers, system registers, FPU/SSE,
   * MSRs) and function table — into an immutable {@linkcode Snapshot}. Waits for calls in
   * progress; from inside one of this sandbox's host functions (which that call waits for) it
   * rejects at once with {@linkcode ReentrantCallError}. Afterwards {@linkcode restore} with it costs work in proportion to the pages the
   * guest writes, not to its memory size.
   *
   * @example
   * ```ts
   * import { guests, Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * await using snap = await sb.snapshot();
   * console.log(snap.dataPages > 0); // true
   * ```
   */
  snapshot(): Promise<Snapshot> {
    try {
      this.#notReentrant("snapshot");
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.#queue.then(traceSnapshot(async () => {
      this.#usable();
      const vm = this.#vm!;
      const guestId = await this.#guestId!();
      this.#usable();
      const vcpu = vm.getState();
      const memory = vm.snapshotMemory();
      return makeSnapshot({
        memory,
        vcpu,
        layout: this.#layout,
        code: this.#code,
        functions: new Map(this.#functions),
        imports: this.#imports,
        hostSignatures: hostSignatures(this.#hostFunctions),
        guestId,
        abiVersion: ABI_VERSION,
      });
    }));
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Brings this sandbox back to `snapshot`: its memory (only the pages written since are
   * dropped), its vCPU state and its function table. Clears poisoning. Waits for calls in
   * progress (from inside one of this sandbox's host functions: {@linkcode ReentrantCallError}
   * at once). The snapshot must be of the same guest, layout and host functions
   * ({@linkcode SnapshotMismatchError} otherwise) and not disposed
   * ({@linkcode SnapshotDisposedError}).
   *
   * @example
   * ```ts
   * import { guests, Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * await using snap = await sb.snapshot();
   * await sb.call("counter"); // 1
   * await sb.call("counter"); // 2
   * await sb.restore(snap);
   * console.log(await sb.call("counter")); // 1
   * ```
   */
  restore(snapshot: Snapshot): Promise<void> {
    try {
      this.#notReentrant("restore");
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.#queue.then(traceRestore(async () => {
      this.#live();
      const state = stateOf(snapshot);
      checkSnapshotAbi(state.abiVersion);
      checkLayout(this.#layout, state.layout);
      if (state.code !== this.#code) {
        throw new SnapshotMismatchError("the snapshot has another code image");
      }
      checkHostSignatures(state.hostSignatures, this.#hostFunctions);
      if (state.guestId !== await this.#guestId!()) {
        throw new SnapshotMismatchError("the snapshot is of another guest image");
      }
      return this.#restoreNow(state);
    }));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** The synchronous part of a restore (checks done); returns the number of pages put back. */
  #restoreNow(state: ReturnType<typeof stateOf>): number {
    this.#live();
    const vm = this.#vm!;
    let pages: number;
    const wasm = this.#layout.wasmReservationSize !== 0;
    const before = wasm ? wasmMapping(this.#memory!, this.#layout) : undefined;
    try {
      pages = vm.restore(state.memory, state.vcpu);
      // Reservation pages the snapshot does not map: KVM must forget them (wasm_reservation.ts).
      const drop = before && droppedByRestore(before, wasmMapping(this.#memory!, this.#layout));
      if (drop) vm.dropMemory(drop.offset, drop.length);
    } catch (e) {
      // A restore that fails part-way may leave memory and vCPU state half restored: the VM
      // serves nobody until a restore succeeds. The page tables may no longer say what the
      // reservation mapped before, so the next restore could not work out what to drop: drop all
      // of it now (the pages read as the region's base content; the next restore rewrites them).
      if (before && before.bytes !== 0) {
        try {
          vm.dropMemory(before.base, before.bytes);
        } catch {
          // The restore's own error is the one to report; the VM is poisoned either way.
        }
      }
      this.#poison ??= e instanceof Error ? e : new Error(String(e));
      throw e;
    }
    this.#functions.clear();
    for (const [name, f] of state.functions) this.#functions.set(name, f);
    this.#imports = state.imports;
    this.#poison = undefined;
    return pages;
  }

  async #initialise(timeoutMs: number, image: GuestImage): Promise<void> {
    let frame: Frame;
    const layout = this.#layout;
    const plain = this.#decoder;
    const table = new WindowedDecoder(
      this.#output!,
      layout.outputSize,
      widen(this.#vm!, layout.outputAddr, layout.outputSize),
      (view) => new TableDecoder(view, image),
    );
    this.#decoder = table;
    try {
      frame = await Sandbox.#exchange(this, false, { timeoutMs }, "initialisation", INIT_SPIN_NS);
    } catch (e) {
      // A guest of another ABI version writes its version and then gives up (docs/abi.md):
      // report the mismatch, with how it gave up as the cause.
      const version = this.#memory ? readGuestAbiVersion(this.#memory) : 0;
      if (version !== 0 && version !== ABI_VERSION) {
        throw this.#fail(abiVersionError(version, e)!, true);
      }
      throw e;
    } finally {
      // Calls decode with the plain decoder (unless a dispose dropped it meanwhile).
      if (this.#decoder === table) this.#decoder = plain;
    }
    if (frame.kind !== "FUNCTION_TABLE") {
      throw this.#fail(
        new ProtocolError(`expected FUNCTION_TABLE after initialisation, got ${frame.kind}`),
        true,
      );
    }
    const mismatch = abiVersionError(readGuestAbiVersion(this.#memory!));
    if (mismatch) throw this.#fail(mismatch, true);
    for (const f of frame.functions) {
      if (this.#functions.has(f.name)) {
        throw this.#fail(new ProtocolError(`function table lists ${f.name} twice`), true);
      }
      this.#functions.set(f.name, f);
    }
    this.#imports = frame.imports;
  }

  /** The guest's functions, as its function table declared them. */
  get functions(): readonly FunctionSignature[] {
    return [...this.#functions.values()];
  }

  /**
   * The host functions the guest declares it imports (`hl_guest::host_functions!`), each checked
   * at create against `hostFunctions`; `undefined` when the guest declares none (it may still
   * call host functions by name, unchecked until the call).
   *
   * @example
   * ```ts
   * import { guests, Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: guests.testguest });
   * console.log(sb.imports); // undefined
   * ```
   */
  get imports(): readonly FunctionSignature[] | undefined {
    return this.#imports === undefined ? undefined : [...this.#imports];
  }

  /** Whether a panic, fault, timeout or cancellation has made this sandbox unusable. */
  get poisoned(): boolean {
    return this.#poison !== undefined;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return this.#vm === undefined || this.#revoked;
  }

  /**
   * Calls guest function `name`. Arguments are checked against the guest's signature before the
   * VM is entered (an {@linkcode ArgumentError} otherwise). Never blocks the event loop; calls on
   * one sandbox run one at a time, in order.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * const text: string = await sb.call("echo", "hello") as string;
   * const sum = await sb.call<number>("add", 2, 3); // typed by the caller (not checked)
   * ```
   */
  call<T extends JsValue = JsValue>(name: string, ...args: unknown[]): Promise<T> {
    return this.callWithOptions({}, name, ...args) as Promise<T>;
  }

  /**
   * The guest's functions as methods typed by interface `T` (write it with `hl inspect --ts
   * <guest>`): `sb.typed<MyGuest>().add(2, 3)` is a `Promise<number>`, checked by the compiler.
   * Each method is {@linkcode call} with that name; the guest still checks every argument at
   * run time. Only the functions of the guest's table are present.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * interface TestGuest {
   *   add(a0: number, a1: number): number;
   *   echo(a0: string): string;
   * }
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * const g = sb.typed<TestGuest>();
   * console.log(await g.add(2, 3)); // 5
   * ```
   */
  typed<T extends object>(): TypedGuest<T> {
    // No prototype: a guest function named "toString" or "__proto__" is just a method.
    const methods: Record<string, (...args: unknown[]) => Promise<JsValue>> = Object.create(null);
    for (const name of this.#functions.keys()) {
      methods[name] = (...args) => this.callWithOptions({}, name, ...args);
    }
    return Object.freeze(methods) as unknown as TypedGuest<T>;
  }

  /**
   * Calls guest function `name` with a timeout and/or an `AbortSignal`. When either fires the
   * guest is stopped, the promise rejects with {@linkcode TimeoutError} or
   * {@linkcode CancelledError}, and the sandbox is poisoned.
   *
   * @example
   * ```ts
   * import { Sandbox, TimeoutError } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * try {
   *   await sb.callWithOptions({ timeoutMs: 100 }, "spin");
   * } catch (e) {
   *   console.log(e instanceof TimeoutError); // true
   * }
   * ```
   */
  callWithOptions(options: CallOptions, name: string, ...args: unknown[]): Promise<JsValue> {
    // Check and encode-ready validation happens now, so a bad call fails without queueing.
    let values: Value[];
    let signature: FunctionSignature;
    try {
      this.#usable();
      this.#notReentrant(name);
      checkTimeout(options.timeoutMs, "timeoutMs");
      checkCount(options.maxExitsPerCall, "maxExitsPerCall", 1);
      signature = this.#signature(name);
      values = toValues(args, signature.params, name);
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.#queue.then(() => this.#call(false, options, signature, values));
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Calls guest function `name` on the synchronous fast path: blocks this thread until the call
   * returns, so it is for short calls only. Host functions must be synchronous here. The
   * sandbox's `timeoutMs` applies as a native deadline ({@linkcode callSyncWithOptions}).
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * console.log(sb.callSync("add", 1, 2)); // 3
   * ```
   */
  callSync(name: string, ...args: unknown[]): JsValue {
    return this.callSyncWithOptions({}, name, ...args);
  }

  /**
   * {@linkcode callSync} with a timeout (`options.timeoutMs`, else the sandbox's `timeoutMs`).
   * The timeout is a native deadline: the guest is stopped by the native library even though this
   * thread is blocked, and the call throws {@linkcode TimeoutError} (the sandbox is poisoned).
   *
   * @example
   * ```ts
   * import { Sandbox, TimeoutError } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * try {
   *   sb.callSyncWithOptions({ timeoutMs: 50 }, "spin");
   * } catch (e) {
   *   console.log(e instanceof TimeoutError); // true
   * }
   * ```
   */
  callSyncWithOptions(
    options: { timeoutMs?: number; maxExitsPerCall?: number },
    name: string,
    ...args: unknown[]
  ): JsValue {
    this.#usable();
    this.#notReentrant(name);
    if (this.#busy) throw new SandboxError("another call is in progress on this sandbox");
    checkTimeout(options.timeoutMs, "timeoutMs");
    checkCount(options.maxExitsPerCall, "maxExitsPerCall", 1);
    const signature = this.#signature(name);
    const values = toValues(args, signature.params, name);
    const result = this.#call(true, options, signature, values);
    if (result instanceof Promise) {
      // Unreachable: the synchronous driver never returns a Promise.
      throw new SandboxError("callSync: internal error, the synchronous path went asynchronous");
    }
    return result;
  }

  /**
   * Stops the call in progress: it rejects with {@linkcode CancelledError} and the sandbox is
   * poisoned. No-op when no call is running.
   *
   * @example
   * ```ts
   * import { CancelledError, Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * const running = sb.call("spin");
   * setTimeout(() => sb.interrupt(), 10);
   * try {
   *   await running;
   * } catch (e) {
   *   console.log(e instanceof CancelledError); // true
   * }
   * ```
   */
  interrupt(): void {
    if (!this.#vm || !this.#busy) return;
    this.#requestStop({ kind: "cancel" });
  }

  /**
   * Stops the call in progress: the stop is sticky in the cdylib (no run of this call enters the
   * guest again), the vCPU is kicked out of a run, and a wait on a host function is woken.
   * Called from timers and abort listeners: it never throws.
   */
  #requestStop(reason: StopReason): void {
    this.#stop ??= reason;
    try {
      this.#vm?.interrupt();
    } catch (e) {
      // The vCPU could not be stopped (a hypervisor failure): nothing can be trusted any more.
      this.#poison ??= isInstance(e, Error)
        ? e
        : new SandboxError(`interrupt failed: ${describeThrown(e)}`, { cause: e });
    }
    this.#wake?.();
  }

  /** Counters of this sandbox's VM (ioctls, exits, runs), for benchmarks. */
  stats(): SandboxStats {
    this.#live();
    const now = this.#vm!.stats();
    const base = this.#statsBase;
    if (!base) return { ...now, logsSkipped: this.#logsSkipped };
    return {
      ...now,
      ioctls: now.ioctls - base.ioctls,
      exits: now.exits - base.exits,
      runs: now.runs - base.runs,
      logsSkipped: this.#logsSkipped,
    };
  }

  /**
   * Destroys the VM and frees its memory. Idempotent. A call in progress is interrupted and
   * rejects with {@linkcode SandboxDisposedError}.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * const sb = await Sandbox.create({ guest: "path/to/testguest" });
   * await sb.dispose();
   * await sb.dispose(); // no-op
   * ```
   */
  dispose(): Promise<void> {
    const vm = this.#vm;
    // A revoked handle's VM is (or is about to be) another handle's: not this one's to destroy.
    if (vm && !this.#revoked) {
      const memory = this.#memory!;
      const output = this.#output!;
      const keep = this.#keepable();
      this.#vm = undefined;
      this.#memory = undefined;
      this.#output = undefined;
      this.#encoder = undefined;
      this.#decoder = undefined;
      finalizer.unregister(this);
      if (!keep || !Sandbox.#park(keep, vm, memory, output)) vm.destroy();
      countSandbox(-1);
      this.#code?.release();
      this.#wake?.();
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /** The snapshot to restore this sandbox's VM to at dispose, if it may be kept (recycle.ts). */
  #keepable(): SnapshotState | undefined {
    const base = this.#base;
    if (!base || this.#busy || this.#poison || base.memory.released || !recycleOn()) {
      return undefined;
    }
    return snapshotVms.room(base, false) ? base : undefined;
  }

  /**
   * Restores `vm` in place to `base` (memory and vCPU state: the restore `restore()` does) and
   * keeps it idle for the next create from `base`; false when it cannot be kept.
   */
  static #park(base: SnapshotState, vm: MicroVm, memory: Uint8Array, output: Uint8Array): boolean {
    try {
      vm.restore(base.memory, base.vcpu);
    } catch {
      return false;
    }
    if (!snapshotVms.room(base, true)) return false;
    snapshotVms.put(base, { vm, memory, output });
    return true;
  }

  #live(): void {
    if (this.#revoked) {
      throw new SandboxDisposedError(
        "this sandbox handle was revoked: the pool run that lent it has ended",
      );
    }
    if (!this.#vm) throw new SandboxDisposedError();
  }

  #usable(): void {
    this.#live();
    if (this.#poison) throw new SandboxPoisonedError(this.#poison);
  }

  #signature(name: string): FunctionSignature {
    if (typeof name !== "string") {
      throw new ArgumentError(`the function name must be a string, got ${typeof name}`);
    }
    return lookupName(this.#functions, name, "the guest has no function");
  }

  /** Refuses a call from inside one of this sandbox's own host functions (a deadlock). */
  #notReentrant(name: string): void {
    if (hostFunctionContext.getStore() === this) {
      throw new ReentrantCallError(
        `${name}: a host function called back into its own sandbox, which is waiting for it`,
      );
    }
  }

  /**
   * The one exit of every error from a call: a dispose during the call turns it into
   * `SandboxDisposedError`, and `poisons` decides whether the sandbox stays usable.
   */
  #fail(e: unknown, entered: boolean): Error {
    // Every error that leaves a call is a SandboxError; anything else (a TypeError of a hostile
    // value, a bug) becomes one, described without running its code, with itself as the cause.
    let error: SandboxError = isInstance(e, SandboxError)
      ? e
      : new SandboxError(describeThrown(e), { cause: e });
    if (
      (this.#vm === undefined || this.#revoked) && !(error instanceof SandboxDisposedError)
    ) {
      error = new SandboxDisposedError(
        this.#revoked
          ? "the pool run that lent this sandbox ended during the call"
          : "the sandbox was disposed during the call",
        { cause: error },
      );
    }
    if (poisons(error, entered)) this.#poison ??= error;
    return error;
  }

  /** One guest call, in a span when telemetry is on (telemetry.ts). */
  #call(
    sync: boolean,
    options: CallOptions,
    signature: FunctionSignature,
    values: Value[],
  ): JsValue | Promise<JsValue> {
    const t = startCall(signature.name);
    if (t === undefined) return Sandbox.#callNow(this, sync, options, signature, values);
    this.#trace = t;
    return t.run(() => Sandbox.#callNow(this, sync, options, signature, values), () => {
      this.#trace = undefined;
    });
  }

  /** One guest call: write CALL, run the exchange, check the result against the signature. */
  static readonly #callNow = (function sandboxCallNow(
    self: Sandbox,
    sync: boolean,
    options: CallOptions,
    signature: FunctionSignature,
    values: Value[],
  ): JsValue | Promise<JsValue> {
    self.#usable();
    // Before the guest is entered: a CALL that does not fit is the caller's ArgumentError.
    self.#encoder!.encode({ kind: "CALL", name: signature.name, args: values });
    const finish = (frame: Frame): JsValue => {
      if (frame.kind === "ERROR") throw self.#fail(new GuestError(frame.code, frame.message), true);
      if (frame.kind !== "RETURN") {
        throw self.#fail(new ProtocolError(`expected RETURN or ERROR, got ${frame.kind}`), true);
      }
      if (frame.value.type !== signature.result) {
        throw self.#fail(
          new ProtocolError(
            `${signature.name} returned a ${frame.value.type}, its signature says ${signature.result}`,
          ),
          true,
        );
      }
      return fromValue(frame.value);
    };
    const first = self.#called ? undefined : FIRST_CALL_SPIN_NS;
    self.#called = true;
    const frame = Sandbox.#exchange(self, sync, options, signature.name, first);
    return frame instanceof Promise ? frame.then(finish) : finish(frame);
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /**
   * Runs the guest until it signals DONE and returns the frame it left in the output buffer,
   * serving host calls and logs on the way (`call/driver.ts`), synchronously or not.
   */
  static readonly #exchange = (function sandboxExchange(
    self: Sandbox,
    sync: boolean,
    options: CallOptions,
    what: string,
    spinNs: number | undefined,
  ): Frame | Promise<Frame> {
    const timeoutMs = options.timeoutMs ?? self.#options.timeoutMs;
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(new CancelledError(`${what}: cancelled before it started`));
    }
    const vm = self.#vm;
    if (!vm) throw new SandboxDisposedError();
    self.#busy = true;
    self.#stop = undefined;
    const exchange = ++self.#exchanges;
    // A host function may never settle: a stop or dispose must not wait for it.
    const woken = new Promise<void>((resolve) => self.#wake = resolve);
    // The call's limit is a deadline on the process's one timer (src/deadlines.ts).
    let timer: Deadline | undefined;
    const onAbort = () => self.#requestStop({ kind: "cancel", reason: signal?.reason });
    const cleanup = () => {
      self.#busy = false;
      self.#wake = undefined;
      if (timer !== undefined) deadlines.remove(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const host: ExchangeHost = {
      what,
      woken,
      maxExits: options.maxExitsPerCall ?? self.#options.maxExitsPerCall ??
        DEFAULT_MAX_EXITS_PER_CALL,
      firstSpinNs: spinNs,
      vm: () => self.#liveVm(what),
      stopReason: () => self.#stop,
      step: (kind) => {
        const trace = self.#trace;
        trace?.exit(kind);
        const s = exitStep(
          {
            vm: self.#liveVm(what),
            memory: self.#memory!,
            layout: self.#layout,
            output: self.#decoder!,
            onLog: trace ? trace.onLog(self.#options.onLog) : self.#options.onLog,
            skipLog: () => self.#logsSkipped++,
          },
          kind,
          what,
        );
        if (s.kind === "resume" || s.kind === "host_call") self.#told++;
        return s;
      },
      hostCall: (name, args, isSync) => {
        const traced = self.#trace?.hostCall(name);
        return serveHostCall(
          self.#hostFunction(name),
          name,
          args,
          (frame) => {
            // A call stopped or a sandbox disposed while the host function ran: nobody to answer.
            // Nor after a later call started (the stop is cleared then): that call's input buffer
            // is not this answer's to write.
            if (!self.#encoder || self.#stop || self.#exchanges !== exchange) {
              return traced?.end(frame);
            }
            self.#encoder.encode(frame);
            traced?.end(frame);
          },
          self.#layout.inputSize - FRAME_HEADER_SIZE - 4,
          isSync,
          traced
            ? (fn) => hostFunctionContext.run(self, () => traced.run(fn))
            : (fn) => hostFunctionContext.run(self, fn),
        );
      },
    };
    try {
      // A new call: the sticky stop of an earlier one no longer applies.
      vm.beginCall();
    } catch (e) {
      cleanup();
      throw self.#fail(e, false);
    }
    if (sync) {
      try {
        return driveSync(host, timeoutMs);
      } catch (e) {
        throw self.#fail(e, true);
      } finally {
        cleanup();
      }
    }
    if (timeoutMs !== undefined) {
      timer = deadlines.add(timeoutMs, () => self.#requestStop({ kind: "timeout", ms: timeoutMs }));
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    return driveAsync(host).catch((e) => {
      throw self.#fail(e, true);
    }).finally(cleanup);
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  #liveVm(what: string): MicroVm {
    const vm = this.#vm;
    if (!vm) throw new SandboxDisposedError(`${what}: the sandbox was disposed during the call`);
    return vm;
  }
}

/** Whether `HL_SNAPSHOT_RECYCLE=0` has not turned recycled VMs off (read once). */
let recycleSetting: boolean | undefined;
const recycleOn = (function recycleOn(): boolean {
  return recycleSetting ??= configEnv("HL_SNAPSHOT_RECYCLE") !== "0";
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Whether a sandbox from `state` may be recycled: no host-published code and no Wasm reservation
 * (the module cache recycles those VMs itself, wasm/recycle.ts).
 */
const recyclable = (function recyclable(state: SnapshotState): boolean {
  return state.layout.codeSize === 0 && state.layout.wasmReservationSize === 0;
}).bind(undefined); // Eager: see the note after the imports.

// A released snapshot's idle VMs are of no more use.
onSnapshotRelease((state) => void snapshotVms.drain(state));

/**
 * The start-snapshot key of a cold create (start_cache.ts): the image, the layout computed from
 * it and the sizes, the host functions' names and types, the library.
 */
const startKey = (function startKey(
  guestId: string,
  layout: MemoryLayout,
  hostFunctions: ReadonlyMap<string, HostFunction>,
  library: string | undefined,
): string {
  const sigs = [...hostFunctions].map(([n, f]) => [n, f.params.join(","), f.result])
    .sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
  return JSON.stringify([guestId, layout, sigs, library ?? ""]);
}).bind(undefined); // Eager: see the note after the imports.

/** `(i32, f64) -> f64`. */
function signatureText(s: { readonly params: readonly string[]; readonly result: string }): string {
  return `(${s.params.join(", ")}) -> ${s.result}`;
}

/**
 * Checks the guest's declared host imports against `hostFunctions`: each must be provided with
 * the same parameter and result types. Throws {@linkcode GuestLinkError} listing every import
 * that is missing or differs; a guest that declared none (`undefined`) is not checked.
 */
export function checkImports(
  imports: readonly FunctionSignature[] | undefined,
  hostFunctions: ReadonlyMap<string, HostFunction>,
): void {
  if (imports === undefined) return;
  const problems: [string, string][] = [];
  for (const imp of imports) {
    const given = hostFunctions.get(imp.name);
    const want = signatureText(imp);
    if (given === undefined) {
      problems.push([
        imp.name,
        `the guest imports host function ${JSON.stringify(imp.name)} ${want}, ` +
        "which hostFunctions does not provide",
      ]);
    } else if (signatureText(given) !== want) {
      problems.push([
        imp.name,
        `the guest imports host function ${JSON.stringify(imp.name)} as ${want}, ` +
        `but hostFunctions gives it ${signatureText(given)}`,
      ]);
    }
  }
  if (problems.length > 0) {
    throw new GuestLinkError(problems.map((p) => p[1]).join("; "), problems[0][0]);
  }
}

/** Throws `SnapshotMismatchError` for a snapshot taken under another guest ABI. */
const checkSnapshotAbi = (function checkSnapshotAbi(version: number): void {
  if (version !== ABI_VERSION) {
    throw new SnapshotMismatchError(
      `the snapshot was taken under guest ABI ${version}, this host speaks ${ABI_VERSION} ` +
        `(C ABI ${CDYLIB_ABI_VERSION})`,
    );
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The error for a guest that reported ABI version `guestVersion` (0: reported none), or
 * undefined when it speaks ours. Exported for tests.
 */
export function abiVersionError(guestVersion: number, cause?: unknown): GuestAbiError | undefined {
  if (guestVersion === ABI_VERSION) return undefined;
  const options = cause === undefined ? undefined : { cause };
  return new GuestAbiError(
    guestVersion === 0
      ? "the guest did not report its ABI version (guest_abi_version is 0)"
      : `the guest was built for ABI version ${guestVersion}, this host speaks ${ABI_VERSION}: ` +
        "rebuild the guest against this version of the guest runtime",
    options,
  );
}
