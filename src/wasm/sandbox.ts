/**
 * `WasmSandbox`: a WebAssembly module run by the wasmi interpreter inside its own KVM micro-VM
 * (the `wasm-runtime` guest), with typed calls, host imports and WASI preview 1.
 *
 * The conventions (value marshalling, strings and bytes, traps, WASI) are in `docs/wasm.md`.
 *
 * @module
 */

import { ArgumentError, CancelledError, ProtocolError, SandboxDisposedError } from "../errors.ts";
import {
  type CallOptions,
  type JsValue,
  Sandbox,
  type SandboxOptions,
  type SandboxStats,
} from "../sandbox.ts";
import {
  createSandboxWithCode,
  poisonSandbox,
  registerWasmSandbox,
  sandboxCodeAddr,
} from "../sandbox_internal.ts";
import { engineNamed } from "../runtime/engine.ts";
import { type Snapshot, SnapshotMismatchError } from "../snapshot.ts";
import { readSource } from "../source.ts";
import {
  checkCount,
  checkFuel,
  checkTimeout,
  checkU32,
  checkWasmHostFunctions,
  lookupName,
} from "../options.ts";
import { findGuest } from "../artifacts.ts";
import { checkRuntimeTable, type RuntimeFunction, runtimeResult } from "./runtime_table.ts";
import {
  mapGuestError,
  numberTypes,
  packValues,
  parseDescription,
  unpackResult,
  Writer,
} from "./codec.ts";
import { bindImports, ImportTable, runtimeHostFunctions, WASI } from "./imports.ts";
import { type Net, type NetStats, wasmNetOptions } from "../net/mod.ts";
import { WasiRuntime } from "./wasi.ts";
import { checkPreopens } from "./wasi_path.ts";
import {
  makeWasmSnapshot,
  type WasmSnapshot,
  type WasmSnapshotState,
  wasmStateOf,
} from "./snapshot.ts";
import { type CacheCore, type CacheEntry, cacheKey, coreOf, WasmModuleCache } from "./cache.ts";
import type { RuntimeBinding } from "./recycle.ts";
import { countRuntime, createPath, traceCreate, uncountRuntime } from "../telemetry.ts";
import {
  type WasiExit,
  WasiExitError,
  type WasiOptions,
  type WasiRunOptions,
  type WasmCacheStats,
  type WasmExtern,
  type WasmFunctionType,
  type WasmImports,
  type WasmJsValue,
  WasmLinkError,
  WasmModuleError,
  type WasmSandboxOptions,
  type WasmSnapshotSandboxOptions,
} from "./types.ts";

const MIB = 1 << 20;
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
/** The `runWasi` options that make a run's own WASI context. */
const RUN_CONTEXT = ["args", "env", "stdin", "stdout", "stderr", "randomSeed"] as const;

/**
 * A WebAssembly module in its own micro-VM, run by the wasmi interpreter. Create with
 * {@linkcode WasmSandbox.create}, call exports with {@linkcode WasmSandbox.call}, dispose (or
 * `await using`) when done.
 *
 * @example
 * ```ts
 * import { WasmSandbox } from "@hl/sandbox";
 * await using w = await WasmSandbox.create({
 *   module: await Deno.readFile("fib.wasm"),
 *   hostFunctions: { env: { log: { params: ["i32"], result: "void", fn: (x: number) => void console.log(x) } } },
 * });
 * console.log(await w.call("fib", 20)); // 6765
 * ```
 */
export class WasmSandbox implements AsyncDisposable {
  /** The VM; `undefined` once it went to another sandbox (recycled). */
  #sandbox: Sandbox | undefined;
  readonly #imports: WasmExtern[];
  readonly #exports: Map<string, WasmExtern>;
  /** The exported functions, by name. */
  readonly #functions: Map<string, WasmExtern>;
  readonly #imported: ImportTable;
  readonly #key: string;
  readonly #wasiOn: boolean;
  readonly #wasiRegistered: boolean;
  readonly #wasi: WasiRuntime | undefined;
  /** A cache hit's: how its VM's host functions reach this sandbox (swapped when recycled). */
  readonly #binding: RuntimeBinding | undefined;
  /** A cache hit's: the cache entry it came from (its VM is only recycled while it is current). */
  readonly #cacheEntry:
    | { entry: CacheEntry; native: Snapshot; cache: CacheCore }
    | undefined;
  /** The default timeout of calls (the VM may have served another sandbox before). */
  readonly #timeoutMs: number | undefined;
  /** The VM's counters when this sandbox got it. */
  readonly #statsBase: SandboxStats;
  /** Calls, snapshots and restores in progress. */
  #pending = 0;
  #disposing: Promise<void> | undefined;
  /** `poisoned` as it was at dispose (the VM may serve another sandbox afterwards). */
  #poisonedAtDispose = false;
  /** The `net` option's requests (docs/networking.md); `calls` starts each call's budgets. */
  #net: { net: Net; owned: boolean; calls: number } | undefined;

  private constructor(
    sandbox: Sandbox,
    imports: readonly WasmExtern[],
    exports: readonly WasmExtern[],
    imported: ImportTable,
    identity: {
      key: string;
      wasiOn: boolean;
      wasiRegistered: boolean;
      binding?: RuntimeBinding;
      cacheEntry?: { entry: CacheEntry; native: Snapshot; cache: CacheCore };
      timeoutMs?: number;
      recycled?: boolean;
      /** A hand-over's: the counters' base of the handle it replaces. */
      statsBase?: SandboxStats;
    },
    wasi: WasiRuntime | undefined,
  ) {
    this.#binding = identity.binding;
    this.#cacheEntry = identity.cacheEntry;
    this.#timeoutMs = identity.timeoutMs;
    // A recycled VM's counters start where its previous owners left them.
    this.#statsBase = identity.statsBase ??
      (identity.recycled ? sandbox.stats() : { ioctls: 0, exits: 0, runs: 0, logsSkipped: 0 });
    this.#wasi = wasi;
    this.#sandbox = sandbox;
    this.#imports = [...imports];
    this.#exports = new Map(exports.map((e) => [e.name, e]));
    this.#functions = new Map(exports.filter((e) => e.kind === "function").map((e) => [e.name, e]));
    this.#imported = imported;
    this.#key = identity.key;
    this.#wasiOn = identity.wasiOn;
    this.#wasiRegistered = identity.wasiRegistered;
    // A live handle for `active_wasm_sandboxes`; a new one, not a hand-over, is a load.
    countRuntime("wasm", this, identity.statsBase === undefined);
  }

  static {
    // The library's privileged operations on a WasmSandbox (sandbox_internal.ts), registered once.
    registerWasmSandbox({ handOver: (sandbox) => sandbox.#handOver() });
  }

  /** `handOverWasmSandbox` (sandbox_internal.ts): revokes this handle and moves its VM into a new one. */
  #handOver(): WasmSandbox {
    const native = this.#live();
    this.#sandbox = undefined;
    uncountRuntime("wasm", this);
    this.#poisonedAtDispose = native.poisoned;
    if (this.#pending > 0) {
      // Poisoned first, so that work of this handle still queued on the VM is refused; then the
      // call in progress, if any, is stopped. The new owner's restore clears both.
      poisonSandbox(
        native,
        new CancelledError("the run that lent this sandbox ended while it had work in progress"),
      );
      native.interrupt();
    }
    const next = new WasmSandbox(
      native,
      this.#imports,
      [...this.#exports.values()],
      this.#imported,
      {
        key: this.#key,
        wasiOn: this.#wasiOn,
        wasiRegistered: this.#wasiRegistered,
        binding: this.#binding,
        cacheEntry: this.#cacheEntry,
        timeoutMs: this.#timeoutMs,
        statsBase: this.#statsBase,
      },
      this.#wasi,
    );
    next.#net = this.#net; // the hl_http imports count the VM's calls, whichever handle makes them
    return next;
  }

  /**
   * Starts a `wasm-runtime` guest, sends it the module, checks the module's imports against
   * `hostFunctions` (and WASI), and instantiates it (running its start function). Bad options,
   * bytes that are not a module ({@linkcode WasmModuleError}) and unsatisfied imports
   * ({@linkcode WasmLinkError}) are reported before any of the module's code runs.
   *
   * The same module bytes and options a second time are a hit of the module cache: a VM started
   * from the snapshot taken after the first instantiation, or one that an earlier hit disposed,
   * restored to that snapshot (docs/wasm.md, "Recycled VMs"). `cache: false` always loads
   * afresh; `create({ snapshot })` always makes a new VM.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * const w = await WasmSandbox.create({ module: "fib.wasm", fuel: 1_000_000, timeoutMs: 1000 });
   * console.log(w.exports.map((e) => e.name));
   * await w.dispose();
   * ```
   */
  static create(
    options: WasmSandboxOptions | WasmSnapshotSandboxOptions,
  ): Promise<WasmSandbox> {
    const engine = typeof options === "object" && options !== null && "module" in options
      ? String(options.engine ?? "wasmtime")
      : undefined;
    return traceCreate("wasm", engine, "cold", () => WasmSandbox.#create(options));
  }

  /** `create`, in its span (telemetry.ts). */
  static readonly #create = (async function wasmSandboxCreate(
    options: WasmSandboxOptions | WasmSnapshotSandboxOptions,
  ): Promise<WasmSandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("WasmSandbox.create takes an options object with a `module`");
    }
    if (options.net !== undefined) {
      // The hl_http imports (src/net/wasm.ts) join hostFunctions; the Net is this sandbox's.
      const wired = wasmNetOptions(options);
      try {
        const w = await WasmSandbox.#create(wired.options);
        const state = { net: wired.net!, owned: wired.owned, calls: 0 };
        w.#net = state;
        wired.bind(() => state.calls);
        return w;
      } catch (e) {
        if (wired.owned) await wired.net!.dispose();
        throw e;
      }
    }
    if ("snapshot" in options && options.snapshot !== undefined) {
      const wasi = options.wasi;
      if (wasi !== undefined && (typeof wasi !== "object" || wasi === null)) {
        throw new ArgumentError("wasi must be an options object with stdout/stderr/stdin");
      }
      for (const k of ["args", "env", "randomSeed", "preopens"]) {
        if (wasi && k in wasi) {
          throw new ArgumentError(`wasi.${k} is fixed in the snapshot and cannot be given again`);
        }
      }
      createPath("snapshot");
      return await WasmSandbox.#fromSnapshot(
        wasmStateOf(options.snapshot, true),
        options,
        undefined,
      );
    }
    if (!("module" in options)) {
      throw new ArgumentError("WasmSandbox.create takes an options object with a `module`");
    }
    if (
      options.cache !== undefined && typeof options.cache !== "boolean" &&
      !(options.cache instanceof WasmModuleCache)
    ) {
      throw new ArgumentError("cache must be a boolean or a WasmModuleCache");
    }
    if (options.cache === false) return await WasmSandbox.#cold(options, undefined);
    const cache = coreOf(
      options.cache instanceof WasmModuleCache ? options.cache : WasmModuleCache.default,
    );
    const bytes = await readSource(options.module, "module");
    // Checks the options (a bad one must fail the same with and without a cache entry).
    checkWasmHostFunctions(options.hostFunctions ?? {});
    const key = await cacheKey(bytes, options);
    const entry = cache.get(key);
    const cached = entry ? await entry : undefined;
    if (entry && cached && !cached.native.disposed) {
      cache.hit(key, entry);
      createPath("cache_hit");
      return await WasmSandbox.#fromSnapshot(cached, options, { cache, entry });
    }
    let settle!: (s: WasmSnapshotState | undefined) => void;
    const pending = new Promise<WasmSnapshotState | undefined>((r) => settle = r);
    cache.miss(key, pending);
    let sb: WasmSandbox;
    try {
      // Our own copy, checked against the key: bytes the caller changes while this create is
      // under way must not be instantiated (or compiled) under the digest of other bytes.
      const copy = bytes.slice();
      if (await cacheKey(copy, options) !== key) {
        throw new ArgumentError("the module's bytes changed while the sandbox was being created");
      }
      sb = await WasmSandbox.#cold({ ...options, module: copy }, options.module);
    } catch (e) {
      settle(undefined);
      cache.forget(key, pending);
      throw e;
    }
    const seeded = typeof options.wasi === "object" && options.wasi.randomSeed !== undefined;
    if (sb.#wasiOn && !seeded) {
      // Every sandbox must draw its own random stream: never shared through a snapshot.
      settle(undefined);
      cache.forget(key, pending);
      return sb;
    }
    try {
      const snap = wasmStateOf(await sb.snapshot());
      settle({ ...snap, key });
    } catch (e) {
      settle(undefined);
      cache.forget(key, pending);
      await sb.dispose();
      throw e;
    }
    return sb;
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /** `create({ snapshot })` and cache hits: a new VM on the snapshot, copy-on-write. */
  static readonly #fromSnapshot = (async function wasmSandboxFromSnapshot(
    state: WasmSnapshotState,
    options: {
      hostFunctions?: WasmImports;
      wasi?: boolean | WasiOptions;
      timeoutMs?: number;
      library?: string;
    },
    cacheEntry: { cache: CacheCore; entry: CacheEntry } | undefined,
  ): Promise<WasmSandbox> {
    const fromCache = cacheEntry !== undefined;
    const fromEntry = cacheEntry && { ...cacheEntry, native: state.native };
    const hostFunctions = checkWasmHostFunctions(options.hostFunctions ?? {});
    let imported: ImportTable;
    try {
      imported = new ImportTable(bindImports(state.imports, hostFunctions, state.wasiOn));
    } catch (e) {
      if (fromCache || !(e instanceof WasmLinkError)) throw e;
      throw new SnapshotMismatchError(
        `the host functions do not match the snapshot's module: ${e.message}`,
        { cause: e },
      );
    }
    const wasi = state.wasiOn
      ? new WasiRuntime(
        typeof options.wasi === "object" ? options.wasi : {},
        "module.wasm",
        state.preopens,
      )
      : undefined;
    let sandbox: Sandbox;
    let binding: RuntimeBinding = { imported, wasi };
    // A cache hit takes an idle VM restored to the same snapshot when there is one (recycle.ts),
    // and points its host functions at this sandbox's imports and WASI.
    try {
      checkTimeout(options.timeoutMs, "timeoutMs");
    } catch (e) {
      wasi?.close();
      throw e;
    }
    const recycled = cacheEntry?.cache.takeIdle(state.key, state.native);
    if (recycled) createPath("recycled");
    try {
      if (recycled) {
        binding = Object.assign(recycled.binding, binding);
        sandbox = recycled.native;
      } else {
        sandbox = await Sandbox.create({
          snapshot: state.native,
          hostFunctions: runtimeHostFunctions(
            (index, args) => binding.imported.serve(index, args),
            state.wasiRegistered ? () => binding.wasi : undefined,
          ),
          // Not the VM's: each call passes this sandbox's own (the VM may serve others later).
          library: options.library,
          // The module cache recycles its hits' VMs itself (recycle.ts); the others are not kept.
          recycle: false,
        });
      }
    } catch (e) {
      wasi?.close();
      if (recycled) await recycled.native.dispose();
      throw e;
    }
    return new WasmSandbox(sandbox, state.imports, state.exports, imported, {
      key: state.key,
      wasiOn: state.wasiOn,
      wasiRegistered: state.wasiRegistered,
      binding: fromCache ? binding : undefined,
      cacheEntry: fromEntry,
      timeoutMs: options.timeoutMs,
      recycled: recycled !== undefined,
    }, wasi);
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /** Loads and instantiates the module in a new `wasm-runtime` guest (no cache). */
  static async #cold(
    options: WasmSandboxOptions,
    originalModule: Uint8Array | string | URL | undefined,
  ): Promise<WasmSandbox> {
    // A copy: the caller may change its array while the module is compiled and loaded.
    const bytes = (await readSource(options.module, "module")).slice();
    if (
      bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 ||
      bytes[3] !== 0x6d
    ) {
      throw new WasmModuleError("not a WebAssembly binary module (no \\0asm magic)");
    }
    const hostFunctions = checkWasmHostFunctions(options.hostFunctions ?? {});
    const fuel = checkFuel(options.fuel);
    const maxMemory = checkCount(options.maxMemoryBytes, "maxMemoryBytes", 16 * MIB);
    const maxTable = checkCount(options.maxTableElements, "maxTableElements", 65_536);
    const depth = checkCount(options.maxRecursionDepth, "maxRecursionDepth", 0);
    const wasiSetting = options.wasi;
    if (
      wasiSetting !== undefined && typeof wasiSetting !== "boolean" &&
      (typeof wasiSetting !== "object" || wasiSetting === null)
    ) {
      throw new ArgumentError("wasi must be a boolean or an options object");
    }
    const preopens = checkPreopens(
      typeof wasiSetting === "object" ? wasiSetting.preopens : undefined,
    );
    const engine = engineNamed(options.engine);
    if (options.stackSize !== undefined && options.stackSize < engine.minStackSize) {
      throw new ArgumentError(
        `stackSize must be at least ${
          engine.minStackSize / 1024
        } KiB with the ${engine.name} engine`,
      );
    }
    const runtime = options.runtime ?? findGuest(engine.guest);
    const image = await engine.codeImage(
      bytes,
      fuel !== 0n,
      options.library,
      options.initTimeoutMs ?? 30_000,
    );
    const inputSize = options.inputSize ?? engine.defaultInputSize(bytes.length);

    // The imports are bound once the guest has described them (after `load`).
    let imported: ImportTable | undefined;
    let wasi: WasiRuntime | undefined;
    const sandboxOptions: SandboxOptions = {
      guest: runtime,
      heapSize: options.heapSize ?? 64 * MIB,
      stackSize: options.stackSize ?? engine.defaultStackSize,
      inputSize,
      outputSize: options.outputSize,
      timeoutMs: options.timeoutMs,
      initTimeoutMs: options.initTimeoutMs,
      library: options.library,
      // The runtime guest's start runs per VM, as before per-image start snapshots (issue 19).
      startSnapshot: false,
      hostFunctions: runtimeHostFunctions(
        (index, args) => {
          if (!imported) throw new Error("no import is bound before instantiation");
          return imported.serve(index, args);
        },
        wasiSetting === false ? undefined : () => wasi,
      ),
    };
    let sandbox: Sandbox;
    try {
      sandbox = image
        ? await createSandboxWithCode(
          sandboxOptions,
          image.code,
          // Guard pages (docs/wasm.md): the guest maps its linear memory, up to the store limit,
          // into a reservation the host lays out.
          Math.min(Math.ceil(maxMemory / (2 * MIB)) * 2 * MIB, 1024 * MIB),
        )
        : await Sandbox.create(sandboxOptions);
    } finally {
      image?.code.release(); // The sandbox holds its own reference.
    }
    try {
      // The runtime guest is as hostile as any: its table must be exactly the one we call.
      checkRuntimeTable(sandbox.functions);
      const config = new Writer();
      config.u64(fuel);
      config.u32(depth || engine.defaultRecursionDepth(sandboxOptions.heapSize ?? 64 * MIB));
      if (image) {
        config.u64(BigInt(sandboxCodeAddr(sandbox)));
        config.u64(BigInt(image.code.size));
        // The guest derives wasmtime's Wasm stack limit from its own stack.
        config.u64(BigInt(options.stackSize ?? engine.defaultStackSize));
      }
      const description = await sandbox.callWithOptions(
        { timeoutMs: options.initTimeoutMs ?? 30_000 },
        "load",
        image ? new Uint8Array(0) : bytes,
        config.finish(),
      ).then((v) => runtimeResult("load", v), (e) => {
        throw mapGuestError(e, undefined);
      }) as Uint8Array;
      const { imports, exports } = parseDescription(description);
      const usesWasi = imports.some((i) => i.module === WASI);
      const wasiOn = wasiSetting === undefined ? usesWasi : wasiSetting !== false;
      const table = new ImportTable(bindImports(imports, hostFunctions, wasiOn));
      imported = table;
      if (wasiOn) {
        wasi = new WasiRuntime(
          typeof wasiSetting === "object" ? wasiSetting : {},
          originalModule ?? options.module,
          preopens,
        );
      }
      const inst = new Writer();
      inst.u64(BigInt(maxMemory));
      inst.u64(BigInt(maxTable));
      inst.u8(wasi ? 1 : 0);
      if (wasi) wasi.encode(inst);
      const self = new WasmSandbox(sandbox, imports, exports, table, {
        key: await cacheKey(bytes, { ...options, module: originalModule ?? options.module }),
        wasiOn: wasi !== undefined,
        wasiRegistered: wasiSetting !== false,
        timeoutMs: options.timeoutMs,
      }, wasi);
      await sandbox.callWithOptions(
        { timeoutMs: options.initTimeoutMs ?? 30_000 },
        "instantiate",
        inst.finish(),
      ).catch((e) => {
        throw table.takeViolation() ?? wasi?.takeViolation() ??
          mapGuestError(e, table.takeFailure());
      });
      // The start function may have broken the protocol and carried on: such an instance is not
      // handed out (nor, on a cache miss, snapshotted for others).
      const violation = table.takeViolation() ?? wasi?.takeViolation();
      if (violation) throw violation;
      return self;
    } catch (e) {
      wasi?.close();
      await sandbox.dispose();
      throw e;
    }
  }

  /**
   * Freezes this sandbox as it is now into a {@linkcode WasmSnapshot}: the module's memory,
   * globals, tables and the runtime's state (see {@linkcode WasmSnapshot} for what is and is not
   * in it). Waits for calls in progress.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "counter.wasm" });
   * await w.call("bump");
   * await using snap = await w.snapshot();
   * await using copy = await WasmSandbox.create({ snapshot: snap });
   * console.log(await copy.call("bump")); // 2
   * ```
   */
  async snapshot(): Promise<WasmSnapshot> {
    const native = await this.#track(() => this.#live().snapshot()).catch((e) => {
      throw this.#gone(e);
    });
    return makeWasmSnapshot({
      native,
      key: this.#key,
      imports: this.#imports,
      exports: [...this.#exports.values()],
      wasiOn: this.#wasiOn,
      wasiRegistered: this.#wasiRegistered,
      preopens: this.#wasi?.preopens ?? [],
    });
  }

  /**
   * Brings this sandbox back to `snapshot`: the module's memory and globals and the runtime's
   * state (only the pages written since are dropped). Clears poisoning; waits for calls in
   * progress. The snapshot must be of the same module bytes and instantiation options
   * ({@linkcode SnapshotMismatchError}) and not disposed ({@linkcode SnapshotDisposedError}).
   * This sandbox keeps its host functions and WASI output sinks.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "counter.wasm" });
   * await using snap = await w.snapshot();
   * await w.call("bump"); // 1
   * await w.call("bump"); // 2
   * await w.restore(snap);
   * console.log(await w.call("bump")); // 1
   * ```
   */
  async restore(snapshot: WasmSnapshot): Promise<void> {
    const state = wasmStateOf(snapshot, true);
    if (state.key !== this.#key) {
      throw new SnapshotMismatchError(
        "the snapshot is of another module, or of the same module with other options",
      );
    }
    await this.#track(() => this.#live().restore(state.native)).catch((e) => {
      throw this.#gone(e);
    });
    this.#imported.takeFailure();
    this.#wasi?.reset();
  }

  /**
   * Whether this sandbox was started from the module cache (no load, no instantiate; possibly on
   * a VM an earlier hit disposed, restored to the cache's snapshot).
   */
  get fromCache(): boolean {
    return this.#cacheEntry !== undefined;
  }

  /**
   * Counters of the default module cache (`WasmModuleCache.default.stats()`).
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * const before = WasmSandbox.cacheStats(); // counts since the process started
   * await WasmSandbox.clearCache();
   * await (await WasmSandbox.create({ module: "fib.wasm" })).dispose(); // a miss
   * await (await WasmSandbox.create({ module: "fib.wasm" })).dispose(); // a hit
   * console.log(WasmSandbox.cacheStats().hits - before.hits); // 1
   * ```
   */
  static cacheStats(): WasmCacheStats {
    return WasmModuleCache.default.stats();
  }

  /**
   * Empties the default module cache (`WasmModuleCache.default.clear()`): releases its snapshots
   * and destroys the idle VMs it kept for reuse (sandboxes started from them keep working). The
   * counters are kept.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await WasmSandbox.clearCache();
   * console.log(WasmSandbox.cacheStats().entries); // 0
   * ```
   */
  static clearCache(): Promise<void> {
    return WasmModuleCache.default.clear();
  }

  /** The module's exports (name, kind, function type). */
  get exports(): readonly WasmExtern[] {
    return [...this.#exports.values()];
  }

  /** The module's imports (namespace, name, kind, function type). */
  get imports(): readonly WasmExtern[] {
    return [...this.#imports];
  }

  /** Whether a timeout, cancellation or guest failure has made this sandbox unusable. */
  get poisoned(): boolean {
    return this.#sandbox ? this.#sandbox.poisoned : this.#poisonedAtDispose;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return this.#sandbox === undefined || this.#sandbox.disposed;
  }

  /**
   * Stops the call in progress: it rejects with `CancelledError` and the sandbox is poisoned
   * (the Wasm instance may be anywhere in its code). No-op when no call is running.
   *
   * @example
   * ```ts
   * import { CancelledError, WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "traps.wasm" });
   * const running = w.call("spin");
   * setTimeout(() => w.interrupt(), 10);
   * try {
   *   await running;
   * } catch (e) {
   *   console.log(e instanceof CancelledError); // true
   * }
   * ```
   */
  interrupt(): void {
    this.#sandbox?.interrupt();
  }

  /**
   * Calls export `name`. Arguments are converted by the export's type (docs/wasm.md): i32 from
   * an integer number in [-2^31, 2^32) (wrapped to signed), i64 from a bigint in [-2^63, 2^64),
   * f32/f64 from any number. Results: `undefined`, one value (i32 a signed number, i64 a
   * bigint), or an array for several. A trap rejects with {@linkcode WasmTrapError}.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm" });
   * console.log(await w.call("fib", 10)); // 55
   * ```
   */
  call(name: string, ...args: unknown[]): Promise<WasmJsValue> {
    return this.callWithOptions({}, name, ...args);
  }

  /**
   * {@linkcode call} with a timeout and/or an `AbortSignal`: when either fires the VM is
   * stopped, the promise rejects with `TimeoutError` / `CancelledError`, and the sandbox is
   * poisoned.
   *
   * @example
   * ```ts
   * import { TimeoutError } from "@hl/sandbox";
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "traps.wasm" });
   * try {
   *   await w.callWithOptions({ timeoutMs: 100 }, "spin");
   * } catch (e) {
   *   console.log(e instanceof TimeoutError); // true
   * }
   * ```
   */
  async callWithOptions(
    options: CallOptions,
    name: string,
    ...args: unknown[]
  ): Promise<WasmJsValue> {
    const type = this.#functionType(name);
    const params = numberTypes(type.params, `export ${name}`, "parameter");
    const results = numberTypes(type.results, `export ${name}`, "result");
    if (args.length !== params.length) {
      throw new ArgumentError(
        `${name} takes ${params.length} argument(s) (${params.join(", ")}), got ${args.length}`,
      );
    }
    const packed = packValues(args, params, name);
    const out = await this.#run(options, "invoke", name, packed) as Uint8Array;
    return this.#decode(() => unpackResult(out, results, name));
  }

  /**
   * Runs a WASI command: calls `_start` and returns its exit code (0 when `_start` returns,
   * the `proc_exit` code otherwise). With any of `args`, `env`, `stdin`, `stdout`, `stderr`,
   * `randomSeed` ({@linkcode WasiRunOptions}) the run has its own WASI context: `_start` sees
   * those `args`/`env` (one VM entry sets them and runs `_start`), reads that stdin, writes to
   * those sinks and draws fresh random bytes; such a run needs a sandbox whose `_start` has not
   * run since it was instantiated or restored (`ArgumentError` otherwise, with no effect), e.g.
   * a `WasmSandboxPool` member (docs/wasm.md, "A WASI command per run").
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "hello.wasm", wasi: { args: ["hello"] } });
   * await using before = await w.snapshot(); // instantiated, `_start` not run
   * const { exitCode } = await w.runWasi();
   * await w.restore(before);
   * await w.runWasi({ args: ["hello", "again"], env: { NAME: "ann" }, stdin: "input" });
   * ```
   */
  async runWasi(options: WasiRunOptions = {}): Promise<WasiExit> {
    const call: CallOptions = {
      timeoutMs: options.timeoutMs,
      signal: options.signal,
      maxExitsPerCall: options.maxExitsPerCall,
    };
    const perRun = RUN_CONTEXT.some((k) => options[k] !== undefined);
    try {
      if (perRun) await this.#runWasiWith(options, call);
      else await this.callWithOptions(call, "_start");
      return { exitCode: 0 };
    } catch (e) {
      if (e instanceof WasiExitError) return { exitCode: e.exitCode };
      throw e;
    }
  }

  /** `runWasi` with a per-run context: the `run_wasi` request, this run's stdin and sinks. */
  async #runWasiWith(options: WasiRunOptions, call: CallOptions): Promise<void> {
    const wasi = this.#wasi;
    if (!wasi) {
      throw new ArgumentError(
        "this sandbox has no WASI (wasi: false, or a module that imports none): a run cannot " +
          "be given args, env, stdin or sinks",
      );
    }
    this.#functionType("_start");
    if (this.#pending > 0) {
      // Its stdin and sinks must be this run's only: no other call may be under way or queued.
      throw new ArgumentError(
        "a run with its own WASI context needs the sandbox to itself: another call, snapshot " +
          "or restore is in progress",
      );
    }
    const config = wasi.beginRun(options);
    try {
      await this.#run(call, "run_wasi", config);
    } finally {
      wasi.endRun();
    }
  }

  /**
   * Calls export `name` by the bytes convention (docs/wasm.md): the input is copied into memory
   * obtained from the module's `alloc(len) -> ptr`, `name(ptr, len)` returns `(ptr, len)` or an
   * i64 `ptr << 32 | len`, the output is copied out and handed to `dealloc(ptr, len)` if the
   * module exports it. One VM entry for the whole exchange.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * const out = await w.callBytes("reverse", new Uint8Array([1, 2, 3])); // [3, 2, 1]
   * ```
   */
  async callBytes(
    name: string,
    input: Uint8Array,
    options: CallOptions = {},
  ): Promise<Uint8Array> {
    this.#functionType(name);
    if (!(input instanceof Uint8Array)) throw new ArgumentError("input must be a Uint8Array");
    return await this.#run(options, "call_bytes", name, input) as Uint8Array;
  }

  /**
   * {@linkcode callBytes} with UTF-8 text in and out.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * console.log(await w.callString("upper", "hello")); // "HELLO"
   * ```
   */
  async callString(name: string, input: string, options: CallOptions = {}): Promise<string> {
    if (typeof input !== "string") throw new ArgumentError("input must be a string");
    const out = await this.callBytes(name, utf8.encode(input), options);
    try {
      return utf8Decoder.decode(out);
    } catch (e) {
      throw new ArgumentError(`${name} returned bytes that are not UTF-8`, { cause: e });
    }
  }

  /**
   * Copies `len` bytes at `ptr` out of the module's exported `memory`.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * const header = await w.readBytes(0, 16);
   * ```
   */
  async readBytes(ptr: number, len: number): Promise<Uint8Array> {
    checkU32(ptr, "ptr");
    checkU32(len, "len");
    const bytes = await this.#run({}, "read_memory", BigInt(ptr), len) as Uint8Array;
    return this.#decode(() => {
      if (bytes.length !== len) {
        throw new ProtocolError(
          `read_memory returned ${bytes.length} bytes, ${len} were asked for`,
        );
      }
      return bytes;
    });
  }

  /**
   * Copies `data` into the module's exported `memory` at `ptr`.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * await w.writeBytes(2048, new Uint8Array([1, 2, 3]));
   * ```
   */
  async writeBytes(ptr: number, data: Uint8Array): Promise<void> {
    checkU32(ptr, "ptr");
    if (!(data instanceof Uint8Array)) throw new ArgumentError("data must be a Uint8Array");
    await this.#run({}, "write_memory", BigInt(ptr), data);
  }

  /**
   * Allocates `data.length` bytes with the module's `alloc(len) -> ptr`, copies `data` there and
   * returns the pointer (one VM entry).
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * const data = new Uint8Array([1, 2, 3]);
   * const ptr = await w.allocBytes(data);
   * console.log(await w.call("sum", ptr, data.length)); // 6
   * ```
   */
  async allocBytes(data: Uint8Array): Promise<number> {
    if (!(data instanceof Uint8Array)) throw new ArgumentError("data must be a Uint8Array");
    return await this.#run({}, "write_alloc", data) as number;
  }

  /**
   * {@linkcode allocBytes} for UTF-8 text: returns the pointer and the byte length.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * const { ptr, len } = await w.allocString("héllo");
   * console.log(await w.readString(ptr, len)); // "héllo"
   * ```
   */
  async allocString(text: string): Promise<{ ptr: number; len: number }> {
    if (typeof text !== "string") throw new ArgumentError("text must be a string");
    const bytes = utf8.encode(text);
    return { ptr: await this.allocBytes(bytes), len: bytes.length };
  }

  /**
   * Reads `len` bytes at `ptr` as UTF-8 text.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * const { ptr, len } = await w.allocString("hi");
   * console.log(await w.readString(ptr, len)); // "hi"
   * ```
   */
  async readString(ptr: number, len: number): Promise<string> {
    const bytes = await this.readBytes(ptr, len);
    try {
      return utf8Decoder.decode(bytes);
    } catch (e) {
      throw new ArgumentError(`the ${len} bytes at ${ptr} are not UTF-8`, { cause: e });
    }
  }

  /**
   * The current size of the module's exported `memory`, in bytes.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "strings.wasm" });
   * console.log(await w.memorySize()); // 65536
   * ```
   */
  async memorySize(): Promise<number> {
    return Number(await this.#run({}, "memory_size") as bigint);
  }

  /**
   * Fuel the last call used (0 when `fuel` metering is off).
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm", fuel: 10_000_000 });
   * await w.call("fib", 10);
   * console.log(await w.fuelConsumed());
   * ```
   */
  async fuelConsumed(): Promise<bigint> {
    return await this.#run({}, "fuel_consumed") as bigint;
  }

  /**
   * Counters of the VM (ioctls, exits, runs), for benchmarks.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm" });
   * await w.call("fib", 1);
   * console.log(w.stats());
   * ```
   */
  stats(): SandboxStats {
    const now = this.#live().stats();
    const base = this.#statsBase;
    return {
      ioctls: now.ioctls - base.ioctls,
      exits: now.exits - base.exits,
      runs: now.runs - base.runs,
      logsSkipped: now.logsSkipped - base.logsSkipped,
    };
  }

  /**
   * Destroys the VM, or, for an idle and healthy cache hit, restores it to the cache's snapshot
   * and keeps it for the next hit of the same module and options. Either way this handle is
   * done with: every later use is a `SandboxDisposedError`. Idempotent; a call in progress is
   * stopped (and its VM destroyed).
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * const w = await WasmSandbox.create({ module: "fib.wasm" });
   * await w.dispose();
   * ```
   */
  dispose(): Promise<void> {
    return this.#disposing ??= this.#dispose();
  }

  /**
   * The counters of this sandbox's network requests (`net` option, the `hl_http` imports), or
   * `undefined` without it.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fetcher.wasm", net: { allow: [] } });
   * console.log(w.netStats()?.requests); // 0
   * ```
   */
  netStats(): NetStats | undefined {
    return this.#net?.net.stats();
  }

  async #dispose(): Promise<void> {
    const native = this.#sandbox;
    if (!native) return; // a dispose() re-entered from a WASI stream's cancel below
    // From here on this handle reaches nothing, whoever gets the VM.
    this.#poisonedAtDispose = native.poisoned;
    this.#sandbox = undefined;
    uncountRuntime("wasm", this);
    if (this.#net?.owned) void this.#net.net.dispose();
    this.#wasi?.close();
    // A cache hit's VM, idle and healthy, is restored and kept for the next hit while its cache
    // entry is current (recycle.ts); anything else is destroyed.
    const from = this.#cacheEntry;
    if (from && this.#binding && this.#pending === 0 && !native.poisoned && !native.disposed) {
      const key = this.#key;
      // An idle VM keeps nothing of this owner: no imports (a call of one would be a protocol
      // violation), no WASI.
      this.#binding.imported = new ImportTable([]);
      this.#binding.wasi = undefined;
      await from.cache.recycle(key, from.entry, from.native, native, this.#binding);
      return;
    }
    await native.dispose();
  }

  /** The VM, unless this sandbox was disposed (it may be serving another sandbox by now). */
  #live(): Sandbox {
    if (!this.#sandbox) throw new SandboxDisposedError();
    return this.#sandbox;
  }

  /**
   * `e`, unless this handle lost its VM while the work was under way (a dispose, a pool's
   * hand-over): then a `SandboxDisposedError` with `e` as its cause.
   */
  #gone(e: unknown): unknown {
    if (this.#sandbox || e instanceof SandboxDisposedError) return e;
    const message = "the sandbox was disposed, or its pool run ended, during the call";
    return new SandboxDisposedError(message, { cause: e });
  }

  /** Runs `op` counted as in progress (a sandbox with work in progress is not recycled). */
  async #track<T>(op: () => Promise<T>): Promise<T> {
    this.#pending++;
    try {
      return await op();
    } finally {
      this.#pending--;
    }
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #functionType(name: string): WasmFunctionType {
    return WasmSandbox.#functionTypeOf(this, name);
  }

  static readonly #functionTypeOf = (function wasmFunctionType(
    self: WasmSandbox,
    name: string,
  ): WasmFunctionType {
    if (typeof name !== "string") {
      throw new ArgumentError(`the export name must be a string, got ${typeof name}`);
    }
    const e = self.#exports.get(name);
    if (e && e.kind !== "function") {
      throw new ArgumentError(`export "${name}" is a ${e.kind}, not a function`);
    }
    const f = lookupName(self.#functions, name, "the module exports no function");
    if (!f.type) throw new ArgumentError(`export "${name}" has no function type`);
    return f.type;
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  #run(options: CallOptions, fn: RuntimeFunction, ...args: unknown[]): Promise<JsValue> {
    return WasmSandbox.#runNow(this, options, fn, ...args);
  }

  static readonly #runNow = (async function wasmRun(
    self: WasmSandbox,
    options: CallOptions,
    fn: RuntimeFunction,
    ...args: unknown[]
  ): Promise<JsValue> {
    if (self.#net) self.#net.calls++;
    self.#imported.takeFailure();
    self.#imported.takeViolation();
    self.#wasi?.takeViolation();
    let value: JsValue;
    try {
      const native = self.#live();
      value = await self.#track(() =>
        native.callWithOptions(
          { ...options, timeoutMs: options.timeoutMs ?? self.#timeoutMs },
          fn,
          ...args,
        )
      );
    } catch (e) {
      throw self.#gone(self.#violation() ?? mapGuestError(e, self.#imported.takeFailure()));
    }
    const violation = self.#violation();
    if (violation) throw violation;
    return self.#decode(() => runtimeResult(fn, value));
  }).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

  /**
   * Decodes what the runtime guest answered; a `ProtocolError` (an answer of the wrong shape)
   * poisons the sandbox: the guest is not in the state the host thinks.
   */
  #decode<T>(decode: () => T): T {
    try {
      return decode();
    } catch (e) {
      if (e instanceof ProtocolError && this.#sandbox) {
        poisonSandbox(this.#sandbox, e);
      }
      throw e;
    }
  }

  /**
   * A malformed `wasm_import` or `wasi_io` request during the call: the runtime guest is not following the
   * protocol, so the call fails with that `ProtocolError` and the sandbox is poisoned, whatever
   * the guest made of the error it was answered with.
   */
  #violation(): ProtocolError | undefined {
    const v = this.#imported.takeViolation() ?? this.#wasi?.takeViolation();
    if (v && this.#sandbox) poisonSandbox(this.#sandbox, v);
    return v;
  }
}
