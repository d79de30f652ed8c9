/**
 * `WasmSandbox`: a WebAssembly module run by the wasmi interpreter inside its own KVM micro-VM
 * (the `wasm-runtime` guest), with typed calls, host imports and WASI preview 1.
 *
 * The conventions (value marshalling, strings and bytes, traps, WASI) are in `docs/wasm.md`.
 *
 * @module
 */

import { ArgumentError, GuestError, SandboxError } from "./errors.ts";
import { type CallOptions, type JsValue, Sandbox, type SandboxStats } from "./sandbox.ts";
import { digest, type Snapshot, SnapshotDisposedError, SnapshotMismatchError } from "./snapshot.ts";
import { packValues, parseDescription, unpackResult, unpackValues, Writer } from "./wasm/codec.ts";
import { readSource } from "./source.ts";
import { checkCount, checkFuel, checkU32, checkWasmHostFunctions, lookupName } from "./options.ts";
import { findGuest } from "./artifacts.ts";
import { checkRuntimeTable, type RuntimeFunction, runtimeResult } from "./wasm/runtime_table.ts";
import type { HostFunction } from "./call/types.ts";
import { asyncSink } from "./wasm/wasi_sink.ts";

/** A WebAssembly number type that crosses the boundary. */
export type WasmValueType = "i32" | "i64" | "f32" | "f64";

/** Any WebAssembly value type as a module declares it (references and vectors cannot cross). */
export type WasmAnyType = WasmValueType | "v128" | "funcref" | "externref";

/** A host function's result: `"void"`, one type, or a list of types (multi-value). */
export type WasmResultType = "void" | WasmValueType | readonly WasmValueType[];

/**
 * A JavaScript value of a Wasm parameter or result: `number` for i32/f32/f64, `bigint` for i64,
 * an array of those for multi-value results, `undefined` for none.
 */
export type WasmJsValue = number | bigint | (number | bigint)[] | undefined;

/** A function a module imports, implemented on the host. */
export interface WasmHostFunction {
  /** Parameter types; must equal the module's import type. */
  params: readonly WasmValueType[];
  /** Result type(s); must equal the module's import type. */
  result: WasmResultType;
  /**
   * The implementation: receives numbers (bigint for i64), returns a value of `result` (an array
   * for several results). May return a Promise. A throw traps the Wasm call with trap kind
   * `"host"` ({@linkcode WasmTrapError}, the thrown error as `cause`).
   */
  // deno-lint-ignore no-explicit-any
  fn: (...args: any[]) => WasmJsValue | Promise<WasmJsValue>;
}

/** Host functions by module namespace, then by name: `{ env: { log: {...} } }`. */
export type WasmImports = Record<string, Record<string, WasmHostFunction>>;

/** WASI preview 1 settings (see docs/wasm.md for what is implemented). */
export interface WasiOptions {
  /** `argv`, including `argv[0]` (default: `["module.wasm"]`, or the module file's name). */
  args?: readonly string[];
  /** Environment variables (default: none; the host's environment is never passed). */
  env?: Record<string, string>;
  /** Receives what the module writes to fd 1 (default: the host's stdout). */
  stdout?: (data: Uint8Array) => void;
  /** Receives what the module writes to fd 2 (default: the host's stderr). */
  stderr?: (data: Uint8Array) => void;
  /** 32 bytes that key `random_get`'s ChaCha20 stream (default: fresh random bytes). */
  randomSeed?: Uint8Array;
}

/** Options of {@linkcode WasmSandbox.create}. */
export interface WasmSandboxOptions {
  /** The module: its bytes, a path, or a `file:` URL. */
  module: Uint8Array | string | URL;
  /** Host functions the module imports, by namespace and name. */
  hostFunctions?: WasmImports;
  /**
   * WASI preview 1 for imports from `wasi_snapshot_preview1`: `true` or settings to enable,
   * `false` to treat them as ordinary imports. Default: enabled when the module imports it.
   */
  wasi?: boolean | WasiOptions;
  /** Fuel (roughly: instructions) each call may use; a call that runs out traps `out_of_fuel`. */
  fuel?: number | bigint;
  /** Largest size of the module's linear memory in bytes (default 16 MiB). */
  maxMemoryBytes?: number;
  /** Largest number of table elements (default 65 536). */
  maxTableElements?: number;
  /** Deepest Wasm call nesting before the `stack_overflow` trap (default: wasmi's, 1000). */
  maxRecursionDepth?: number;
  /** Default timeout of every call in milliseconds; the sandbox is poisoned when it fires. */
  timeoutMs?: number;
  /** Timeout of loading and instantiating the module (default 30 000 ms). */
  initTimeoutMs?: number;
  /** Guest heap in bytes (default 64 MiB; untouched pages cost nothing). */
  heapSize?: number;
  /** Guest stack in bytes (default 4 MiB). */
  stackSize?: number;
  /** Host → guest buffer (default: 4 MiB or enough for the module); bounds module and inputs. */
  inputSize?: number;
  /** Guest → host buffer (default 4 MiB); bounds results and reads. */
  outputSize?: number;
  /**
   * The `wasm-runtime` guest binary (default: `$HL_WASM_RUNTIME`, else the local build, else the
   * setup cache: see {@linkcode guests}).
   */
  runtime?: string | URL | Uint8Array;
  /** Path of `libhl_rust_vmm.so` (default: `$HL_SANDBOX_LIB`, then the local build). */
  library?: string;
  /**
   * Use the module cache (default `true`): the first `create` of these module bytes and these
   * options in this process snapshots the sandbox after instantiation; later ones start a new VM
   * from that snapshot, copy-on-write, without loading or instantiating again. `false` always
   * loads and instantiates afresh. WASI modules without a `wasi.randomSeed` are never cached
   * (each sandbox must get its own random stream). See docs/wasm.md "Snapshots and the cache".
   */
  cache?: boolean;
}

/**
 * Options of {@linkcode WasmSandbox.create} that start the sandbox from a
 * {@linkcode WasmSnapshot}: a new VM on the snapshot's memory, copy-on-write, with the module
 * already instantiated (no load, no instantiate, no start function).
 */
export interface WasmSnapshotSandboxOptions {
  /** The snapshot to start from. */
  snapshot: WasmSnapshot;
  /**
   * Host functions the module imports: every import the module had bound must be given again,
   * with the same types ({@linkcode SnapshotMismatchError} otherwise). Implementations may differ.
   */
  hostFunctions?: WasmImports;
  /**
   * Where WASI output goes. `args`, `env` and `randomSeed` are in the snapshot (the module's
   * memory holds them) and cannot be given here.
   */
  wasi?: Pick<WasiOptions, "stdout" | "stderr">;
  /** Default timeout of every call in milliseconds; the sandbox is poisoned when it fires. */
  timeoutMs?: number;
  /** Path of `libhl_rust_vmm.so` (default: `$HL_SANDBOX_LIB`, then the local build). */
  library?: string;
}

/** Module cache counters of this process ({@linkcode WasmSandbox.cacheStats}). */
export interface WasmCacheStats {
  /** `create` calls served from a cached snapshot. */
  hits: number;
  /** `create` calls (with the cache on) that loaded and instantiated the module. */
  misses: number;
  /** Snapshots held by the cache now. */
  entries: number;
}

/** A function type. */
export interface WasmFunctionType {
  /** Parameter types. */
  params: WasmAnyType[];
  /** Result types. */
  results: WasmAnyType[];
}

/** One import or export of the module. */
export interface WasmExtern {
  /** Import namespace (`""` for exports). */
  module: string;
  /** Name. */
  name: string;
  /** What it is. */
  kind: "function" | "table" | "memory" | "global";
  /** The function type, for functions. */
  type?: WasmFunctionType;
}

/** How a WASI command ended: `_start` returned (0) or `proc_exit` was called. */
export interface WasiExit {
  /** The exit code. */
  exitCode: number;
}

/** Trap kinds of {@linkcode WasmTrapError}. */
export type WasmTrapKind =
  | "unreachable"
  | "memory_out_of_bounds"
  | "table_out_of_bounds"
  | "indirect_call_to_null"
  | "integer_divide_by_zero"
  | "integer_overflow"
  | "invalid_conversion_to_integer"
  | "stack_overflow"
  | "indirect_call_type_mismatch"
  | "out_of_fuel"
  | "growth_limited"
  | "out_of_memory"
  | "host"
  | "other";

/**
 * The module's bytes are not a valid module, or use a feature the sandbox does not support.
 * Nothing of the module ran.
 *
 * @example
 * ```ts
 * import { WasmModuleError, WasmSandbox } from "@hl/sandbox";
 * try {
 *   await WasmSandbox.create({ module: new Uint8Array([1, 2, 3]) });
 * } catch (e) {
 *   console.log(e instanceof WasmModuleError); // true
 * }
 * ```
 */
export class WasmModuleError extends SandboxError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WasmModuleError";
  }
}

/**
 * The module's imports could not be satisfied: a missing or mistyped host function, an
 * unsupported import kind, or instantiation failed (e.g. a memory larger than the limit).
 * `importName` is `"module.name"` of the offending import when there is one.
 *
 * @example
 * ```ts
 * import { WasmLinkError, WasmSandbox } from "@hl/sandbox";
 * try {
 *   await WasmSandbox.create({ module: "needs_env_log.wasm" });
 * } catch (e) {
 *   if (e instanceof WasmLinkError) console.log(e.importName); // "env.log"
 * }
 * ```
 */
export class WasmLinkError extends SandboxError {
  /** `"module.name"` of the import at fault, if any. */
  readonly importName: string | undefined;

  /** Creates the error. */
  constructor(message: string, importName?: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WasmLinkError";
    this.importName = importName;
  }
}

/**
 * The Wasm code trapped. `trap` says why; the sandbox stays usable (as with a trap in a
 * JavaScript engine, the instance's state is whatever the code left).
 *
 * @example
 * ```ts
 * import { WasmSandbox, WasmTrapError } from "@hl/sandbox";
 * await using w = await WasmSandbox.create({ module: "traps.wasm" });
 * try {
 *   await w.call("div_zero", 1);
 * } catch (e) {
 *   if (e instanceof WasmTrapError) console.log(e.trap); // "integer_divide_by_zero"
 * }
 * ```
 */
export class WasmTrapError extends SandboxError {
  /** The trap kind. */
  readonly trap: WasmTrapKind;

  /** Creates the error. */
  constructor(trap: WasmTrapKind, message: string, options?: ErrorOptions) {
    super(`wasm trap (${trap}): ${message}`, options);
    this.name = "WasmTrapError";
    this.trap = trap;
  }
}

/**
 * The module called WASI `proc_exit` during {@linkcode WasmSandbox.call}.
 * ({@linkcode WasmSandbox.runWasi} returns the code instead.)
 *
 * @example
 * ```ts
 * import { WasiExitError, WasmSandbox } from "@hl/sandbox";
 * await using w = await WasmSandbox.create({ module: "hello.wasm" });
 * try {
 *   await w.call("_start");
 * } catch (e) {
 *   if (e instanceof WasiExitError) console.log(e.exitCode);
 * }
 * ```
 */
export class WasiExitError extends SandboxError {
  /** The exit code passed to `proc_exit`. */
  readonly exitCode: number;

  /** Creates the error. */
  constructor(exitCode: number, options?: ErrorOptions) {
    super(`the module exited with code ${exitCode}`, options);
    this.name = "WasiExitError";
    this.exitCode = exitCode;
  }
}

// ERROR codes of the wasm-runtime guest (guest/wasm-runtime/src/main.rs).
const CODE_MODULE = 1000;
const CODE_LINK = 1001;
const CODE_EXIT = 1003;
const CODE_NO_EXPORT = 1004;
const CODE_BAD_ARGS = 1005;
const CODE_MEMORY = 1006;
const CODE_TRAP_BASE = 1100;
const TRAPS: Record<number, WasmTrapKind> = {
  0: "unreachable",
  1: "memory_out_of_bounds",
  2: "table_out_of_bounds",
  3: "indirect_call_to_null",
  4: "integer_divide_by_zero",
  5: "integer_overflow",
  6: "invalid_conversion_to_integer",
  7: "stack_overflow",
  8: "indirect_call_type_mismatch",
  9: "out_of_fuel",
  10: "growth_limited",
  11: "out_of_memory",
  20: "host",
  21: "other",
};

const NUMBER_TYPES = new Set<string>(["i32", "i64", "f32", "f64"]);
const MIB = 1 << 20;
const WASI = "wasi_snapshot_preview1";
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
const HOST_THREW = /^host function wasm_import threw: /;

/** A checked host import: its index in the module's import list and its implementation. */
interface Binding {
  where: string;
  params: WasmValueType[];
  results: WasmValueType[];
  fn: WasmHostFunction["fn"];
}

/** What a {@linkcode WasmSnapshot} holds beside the native snapshot. */
interface WasmSnapshotState {
  readonly native: Snapshot;
  /** Module digest + the canonical options that shaped the instance (see `cacheKey`). */
  readonly key: string;
  readonly imports: readonly WasmExtern[];
  readonly exports: readonly WasmExtern[];
  /** WASI bound at instantiation. */
  readonly wasiOn: boolean;
  /** The runtime's WASI host functions registered (`wasi` was not `false`). */
  readonly wasiRegistered: boolean;
}

const wasmStates = new WeakMap<WasmSnapshot, WasmSnapshotState>();

/**
 * A {@linkcode WasmSandbox} frozen at one moment: the `wasm-runtime` guest's memory and vCPU
 * state (so the module's linear memory, globals, tables, fuel setting and WASI state: args, env,
 * random stream), plus what the host keeps beside the guest: the module's imports and exports
 * and whether WASI is bound. Host function implementations and WASI output sinks are not in it:
 * `WasmSandbox.create({ snapshot })` is given them again. Immutable; dispose it when done.
 *
 * @example
 * ```ts
 * import { WasmSandbox } from "@hl/sandbox";
 * await using w = await WasmSandbox.create({ module: "counter.wasm" });
 * await using snap = await w.snapshot();
 * await w.call("bump"); // 1
 * await w.restore(snap);
 * console.log(await w.call("bump")); // 1 again
 * await using copy = await WasmSandbox.create({ snapshot: snap });
 * console.log(await copy.call("bump")); // 1
 * ```
 */
export class WasmSnapshot implements AsyncDisposable {
  /** Use `WasmSandbox.snapshot()`; not constructible from outside. */
  private constructor(state: WasmSnapshotState) {
    wasmStates.set(this, state);
  }

  /** The module's exports. */
  get exports(): readonly WasmExtern[] {
    return [...wasmStateOf(this).exports];
  }

  /** The module's imports. */
  get imports(): readonly WasmExtern[] {
    return [...wasmStateOf(this).imports];
  }

  /** Pages of the snapshot's memory that hold data (4 KiB each). */
  get dataPages(): number {
    return wasmStateOf(this).native.dataPages;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return wasmStateOf(this).native.disposed;
  }

  /**
   * Releases the snapshot. Idempotent; sandboxes made from it keep working.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "fib.wasm" });
   * const snap = await w.snapshot();
   * await snap.dispose();
   * console.log(snap.disposed); // true
   * ```
   */
  dispose(): Promise<void> {
    return wasmStateOf(this).native.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

function makeWasmSnapshot(state: WasmSnapshotState): WasmSnapshot {
  const Ctor = WasmSnapshot as unknown as new (s: WasmSnapshotState) => WasmSnapshot;
  return new Ctor(state);
}

/** The state of `snap`; `SnapshotMismatchError` for anything else, `SnapshotDisposedError` once disposed. */
function wasmStateOf(snap: WasmSnapshot, live = false): WasmSnapshotState {
  const state = snap instanceof WasmSnapshot ? wasmStates.get(snap) : undefined;
  if (!state) {
    throw new SnapshotMismatchError(
      "not a WasmSnapshot (a snapshot of a native Sandbox cannot start a WasmSandbox)",
    );
  }
  if (live && state.native.disposed) throw new SnapshotDisposedError();
  return state;
}

/** Most snapshots the module cache keeps; the least recently used one goes first. */
const CACHE_LIMIT = 32;
const cache = new Map<string, Promise<WasmSnapshotState | undefined>>();
const cacheCounters = { hits: 0, misses: 0 };

function touchCache(key: string, entry: Promise<WasmSnapshotState | undefined>): void {
  cache.delete(key);
  cache.set(key, entry);
  while (cache.size > CACHE_LIMIT) {
    const [oldest, p] = cache.entries().next().value!;
    cache.delete(oldest);
    p.then((s) => s?.native.dispose(), () => {});
  }
}

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
  readonly #sandbox: Sandbox;
  readonly #imports: WasmExtern[];
  readonly #exports: Map<string, WasmExtern>;
  readonly #bindings: (Binding | undefined)[];
  readonly #key: string;
  readonly #wasiOn: boolean;
  readonly #wasiRegistered: boolean;
  readonly #fromCache: boolean;
  #lastHostError: unknown;

  private constructor(
    sandbox: Sandbox,
    imports: readonly WasmExtern[],
    exports: readonly WasmExtern[],
    bindings: (Binding | undefined)[],
    identity: { key: string; wasiOn: boolean; wasiRegistered: boolean; fromCache: boolean },
  ) {
    this.#sandbox = sandbox;
    this.#imports = [...imports];
    this.#exports = new Map(exports.map((e) => [e.name, e]));
    this.#bindings = bindings;
    this.#key = identity.key;
    this.#wasiOn = identity.wasiOn;
    this.#wasiRegistered = identity.wasiRegistered;
    this.#fromCache = identity.fromCache;
  }

  /**
   * Starts a `wasm-runtime` guest, sends it the module, checks the module's imports against
   * `hostFunctions` (and WASI), and instantiates it (running its start function). Bad options,
   * bytes that are not a module ({@linkcode WasmModuleError}) and unsatisfied imports
   * ({@linkcode WasmLinkError}) are reported before any of the module's code runs.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * const w = await WasmSandbox.create({ module: "fib.wasm", fuel: 1_000_000, timeoutMs: 1000 });
   * console.log(w.exports.map((e) => e.name));
   * await w.dispose();
   * ```
   */
  static async create(
    options: WasmSandboxOptions | WasmSnapshotSandboxOptions,
  ): Promise<WasmSandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("WasmSandbox.create takes an options object with a `module`");
    }
    if ("snapshot" in options && options.snapshot !== undefined) {
      const wasi = options.wasi;
      if (wasi !== undefined && (typeof wasi !== "object" || wasi === null)) {
        throw new ArgumentError("wasi must be an options object with stdout/stderr");
      }
      for (const k of ["args", "env", "randomSeed"]) {
        if (wasi && k in wasi) {
          throw new ArgumentError(`wasi.${k} is fixed in the snapshot and cannot be given again`);
        }
      }
      return await WasmSandbox.#fromSnapshot(wasmStateOf(options.snapshot, true), options, false);
    }
    if (!("module" in options)) {
      throw new ArgumentError("WasmSandbox.create takes an options object with a `module`");
    }
    if (options.cache !== undefined && typeof options.cache !== "boolean") {
      throw new ArgumentError("cache must be a boolean");
    }
    if (options.cache === false) return await WasmSandbox.#cold(options, undefined);
    const bytes = await readSource(options.module, "module");
    // Checks the options (a bad one must fail the same with and without a cache entry).
    checkWasmHostFunctions(options.hostFunctions ?? {});
    const key = await cacheKey(bytes, options);
    const entry = cache.get(key);
    const cached = entry ? await entry : undefined;
    if (entry && cached && !cached.native.disposed) {
      touchCache(key, entry);
      cacheCounters.hits++;
      return await WasmSandbox.#fromSnapshot(cached, options, true);
    }
    cacheCounters.misses++;
    let settle!: (s: WasmSnapshotState | undefined) => void;
    const pending = new Promise<WasmSnapshotState | undefined>((r) => settle = r);
    touchCache(key, pending);
    let sb: WasmSandbox;
    try {
      sb = await WasmSandbox.#cold({ ...options, module: bytes }, options.module);
    } catch (e) {
      settle(undefined);
      if (cache.get(key) === pending) cache.delete(key);
      throw e;
    }
    const seeded = typeof options.wasi === "object" && options.wasi.randomSeed !== undefined;
    if (sb.#wasiOn && !seeded) {
      // Every sandbox must draw its own random stream: never shared through a snapshot.
      settle(undefined);
      if (cache.get(key) === pending) cache.delete(key);
      return sb;
    }
    try {
      const snap = wasmStateOf(await sb.snapshot());
      settle({ ...snap, key });
    } catch (e) {
      settle(undefined);
      if (cache.get(key) === pending) cache.delete(key);
      await sb.dispose();
      throw e;
    }
    return sb;
  }

  /** `create({ snapshot })` and cache hits: a new VM on the snapshot, copy-on-write. */
  static async #fromSnapshot(
    state: WasmSnapshotState,
    options: {
      hostFunctions?: WasmImports;
      wasi?: boolean | WasiOptions;
      timeoutMs?: number;
      library?: string;
    },
    fromCache: boolean,
  ): Promise<WasmSandbox> {
    const hostFunctions = checkWasmHostFunctions(options.hostFunctions ?? {});
    let bindings: (Binding | undefined)[];
    try {
      bindings = bindImports([...state.imports], hostFunctions, state.wasiOn);
    } catch (e) {
      if (fromCache || !(e instanceof WasmLinkError)) throw e;
      throw new SnapshotMismatchError(
        `the host functions do not match the snapshot's module: ${e.message}`,
        { cause: e },
      );
    }
    const wasi = state.wasiOn
      ? new WasiRuntime(typeof options.wasi === "object" ? options.wasi : {}, "module.wasm")
      : undefined;
    const ref: { self?: WasmSandbox } = {};
    const sandbox = await Sandbox.create({
      snapshot: state.native,
      hostFunctions: runtimeHostFunctions(
        (index, args) => ref.self!.#hostImport(index, args),
        state.wasiRegistered ? () => wasi : undefined,
      ),
      timeoutMs: options.timeoutMs,
      library: options.library,
    });
    ref.self = new WasmSandbox(sandbox, state.imports, state.exports, bindings, {
      key: state.key,
      wasiOn: state.wasiOn,
      wasiRegistered: state.wasiRegistered,
      fromCache,
    });
    return ref.self;
  }

  /** Loads and instantiates the module in a new `wasm-runtime` guest (no cache). */
  static async #cold(
    options: WasmSandboxOptions,
    originalModule: Uint8Array | string | URL | undefined,
  ): Promise<WasmSandbox> {
    const bytes = await readSource(options.module, "module");
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
    const runtime = options.runtime ?? findGuest("wasm-runtime");
    const pageAlign = (n: number) => Math.ceil(n / 4096) * 4096;
    const inputSize = options.inputSize ?? Math.max(4 * MIB, pageAlign(bytes.length + 64 * 1024));

    let self: WasmSandbox | undefined;
    let wasi: WasiRuntime | undefined;
    const sandbox = await Sandbox.create({
      guest: runtime,
      heapSize: options.heapSize ?? 64 * MIB,
      stackSize: options.stackSize ?? 4 * MIB,
      inputSize,
      outputSize: options.outputSize,
      timeoutMs: options.timeoutMs,
      initTimeoutMs: options.initTimeoutMs,
      library: options.library,
      hostFunctions: runtimeHostFunctions(
        (index, args) => self!.#hostImport(index, args),
        wasiSetting === false ? undefined : () => wasi,
      ),
    });
    try {
      // The runtime guest is as hostile as any: its table must be exactly the one we call.
      checkRuntimeTable(sandbox.functions);
      const config = new Writer();
      config.u64(fuel);
      config.u32(depth);
      const description = await sandbox.callWithOptions(
        { timeoutMs: options.initTimeoutMs ?? 30_000 },
        "load",
        bytes,
        config.finish(),
      ).then((v) => runtimeResult("load", v), (e) => {
        throw mapGuestError(e, undefined);
      }) as Uint8Array;
      const { imports, exports } = parseDescription(description);
      const usesWasi = imports.some((i) => i.module === WASI);
      const wasiOn = wasiSetting === undefined ? usesWasi : wasiSetting !== false;
      const bindings = bindImports(imports, hostFunctions, wasiOn);
      if (wasiOn) {
        wasi = new WasiRuntime(
          typeof wasiSetting === "object" ? wasiSetting : {},
          originalModule ?? options.module,
        );
      }
      const inst = new Writer();
      inst.u64(BigInt(maxMemory));
      inst.u64(BigInt(maxTable));
      inst.u8(wasi ? 1 : 0);
      if (wasi) wasi.encode(inst);
      self = new WasmSandbox(sandbox, imports, exports, bindings, {
        key: await cacheKey(bytes, { ...options, module: originalModule ?? options.module }),
        wasiOn: wasi !== undefined,
        wasiRegistered: wasiSetting !== false,
        fromCache: false,
      });
      await sandbox.callWithOptions(
        { timeoutMs: options.initTimeoutMs ?? 30_000 },
        "instantiate",
        inst.finish(),
      ).catch((e) => {
        throw mapGuestError(e, self!.#takeHostError());
      });
      return self;
    } catch (e) {
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
    const native = await this.#sandbox.snapshot();
    return makeWasmSnapshot({
      native,
      key: this.#key,
      imports: this.#imports,
      exports: [...this.#exports.values()],
      wasiOn: this.#wasiOn,
      wasiRegistered: this.#wasiRegistered,
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
    await this.#sandbox.restore(state.native);
    this.#lastHostError = undefined;
  }

  /** Whether this sandbox was started from the module cache (no load, no instantiate). */
  get fromCache(): boolean {
    return this.#fromCache;
  }

  /**
   * Counters of the module cache of this process.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await (await WasmSandbox.create({ module: "fib.wasm" })).dispose(); // a miss
   * await (await WasmSandbox.create({ module: "fib.wasm" })).dispose(); // a hit
   * console.log(WasmSandbox.cacheStats()); // { hits: 1, misses: 1, entries: 1 }
   * ```
   */
  static cacheStats(): WasmCacheStats {
    return { ...cacheCounters, entries: cache.size };
  }

  /**
   * Empties the module cache and releases its snapshots (sandboxes started from them keep
   * working). The counters are kept.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await WasmSandbox.clearCache();
   * console.log(WasmSandbox.cacheStats().entries); // 0
   * ```
   */
  static async clearCache(): Promise<void> {
    const entries = [...cache.values()];
    cache.clear();
    for (const p of entries) {
      const state = await p.catch(() => undefined);
      await state?.native.dispose();
    }
  }

  /** The module's exports (name, kind, function type). */
  get exports(): readonly WasmExtern[] {
    return [...this.#exports.values()];
  }

  /** The module's imports (namespace, name, kind, function type). */
  get imports(): readonly WasmExtern[] {
    return [...this.#imports];
  }

  /** The underlying native {@linkcode Sandbox} (for `stats()`, `poisoned`, ...). */
  get sandbox(): Sandbox {
    return this.#sandbox;
  }

  /** Whether a timeout, cancellation or guest failure has made this sandbox unusable. */
  get poisoned(): boolean {
    return this.#sandbox.poisoned;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return this.#sandbox.disposed;
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
    this.#sandbox.interrupt();
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
    return unpackResult(out, results, name);
  }

  /**
   * Runs a WASI command: calls `_start` and returns its exit code (0 when `_start` returns,
   * the `proc_exit` code otherwise).
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "hello.wasm", wasi: { args: ["hello"] } });
   * const { exitCode } = await w.runWasi();
   * ```
   */
  async runWasi(options: CallOptions = {}): Promise<WasiExit> {
    try {
      await this.callWithOptions(options, "_start");
      return { exitCode: 0 };
    } catch (e) {
      if (e instanceof WasiExitError) return { exitCode: e.exitCode };
      throw e;
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
    return await this.#run({}, "read_memory", BigInt(ptr), len) as Uint8Array;
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
    return this.#sandbox.stats();
  }

  /**
   * Destroys the VM. Idempotent; a call in progress is stopped.
   *
   * @example
   * ```ts
   * import { WasmSandbox } from "@hl/sandbox";
   * const w = await WasmSandbox.create({ module: "fib.wasm" });
   * await w.dispose();
   * ```
   */
  dispose(): Promise<void> {
    return this.#sandbox.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #functionType(name: string): WasmFunctionType {
    if (typeof name !== "string") {
      throw new ArgumentError(`the export name must be a string, got ${typeof name}`);
    }
    const e = this.#exports.get(name);
    if (e && e.kind !== "function") {
      throw new ArgumentError(`export "${name}" is a ${e.kind}, not a function`);
    }
    const functions = new Map(
      [...this.#exports.values()].filter((x) => x.kind === "function").map((x) => [x.name, x]),
    );
    const f = lookupName(functions, name, "the module exports no function");
    if (!f.type) throw new ArgumentError(`export "${name}" has no function type`);
    return f.type;
  }

  async #run(options: CallOptions, fn: RuntimeFunction, ...args: unknown[]): Promise<JsValue> {
    this.#lastHostError = undefined;
    let value: JsValue;
    try {
      value = await this.#sandbox.callWithOptions(options, fn, ...args);
    } catch (e) {
      throw mapGuestError(e, this.#takeHostError());
    }
    return runtimeResult(fn, value);
  }

  #takeHostError(): unknown {
    const e = this.#lastHostError;
    this.#lastHostError = undefined;
    return e;
  }

  /** Serves `wasm_import(index, args)`: unpack, call the user's function, pack its result. */
  #hostImport(index: number, args: Uint8Array): Uint8Array | Promise<Uint8Array> {
    const binding = this.#bindings[index];
    if (!binding) throw new Error(`import #${index} has no host function`);
    const values = unpackValues(args, binding.params, binding.where);
    const finish = (result: unknown): Uint8Array => {
      let list: unknown[];
      if (binding.results.length === 0) list = [];
      else if (binding.results.length === 1) list = [result];
      else if (Array.isArray(result) && result.length === binding.results.length) list = result;
      else {
        throw this.#remember(
          new ArgumentError(
            `host function ${binding.where} must return an array of ${binding.results.length} values`,
          ),
        );
      }
      try {
        return packValues(list, binding.results, `host function ${binding.where} result`);
      } catch (e) {
        throw this.#remember(e);
      }
    };
    let result: unknown;
    try {
      result = binding.fn(...values);
    } catch (e) {
      throw this.#remember(e);
    }
    if (result instanceof Promise) {
      return result.then(finish, (e) => {
        throw this.#remember(e);
      });
    }
    return finish(result);
  }

  #remember(e: unknown): unknown {
    this.#lastHostError = e;
    return e;
  }
}

/**
 * The module cache's key: SHA-256 of the module bytes and the options that shape the
 * instantiated guest (memory sizes, limits, fuel, the runtime, WASI on/off with its args, env and
 * seed). Host function implementations, WASI sinks and timeouts are not in it.
 */
async function cacheKey(
  bytes: Uint8Array,
  options: WasmSandboxOptions,
): Promise<string> {
  const runtime = options.runtime instanceof Uint8Array
    ? `sha256:${await digest(options.runtime)}`
    : String(options.runtime ?? "");
  const w = options.wasi;
  // Without settings, a WASI module is not cached (its random seed is fresh): on/off is enough.
  let wasi: unknown = w !== false;
  if (typeof w === "object" && w !== null) {
    const module = options.module;
    const name = typeof module === "string"
      ? module.split("/").pop()!
      : module instanceof URL
      ? module.pathname.split("/").pop()!
      : "module.wasm";
    wasi = {
      args: w.args ? [...w.args] : [name],
      env: Object.entries(w.env ?? {}),
      seed: w.randomSeed ? [...w.randomSeed] : null,
    };
  }
  return JSON.stringify({
    module: await digest(bytes),
    runtime,
    library: options.library ?? "",
    heapSize: options.heapSize ?? null,
    stackSize: options.stackSize ?? null,
    inputSize: options.inputSize ?? null,
    outputSize: options.outputSize ?? null,
    fuel: options.fuel === undefined ? null : String(options.fuel),
    maxMemoryBytes: options.maxMemoryBytes ?? null,
    maxTableElements: options.maxTableElements ?? null,
    maxRecursionDepth: options.maxRecursionDepth ?? null,
    wasi,
  });
}

/** Converts the guest's ERROR codes into this module's error classes. */
function mapGuestError(e: unknown, hostError: unknown): unknown {
  if (!(e instanceof GuestError)) return e;
  const options = { cause: e };
  if (e.code === CODE_MODULE) return new WasmModuleError(`invalid module: ${e.message}`, options);
  if (e.code === CODE_LINK) {
    return new WasmLinkError(`instantiation failed: ${e.message}`, undefined, options);
  }
  if (e.code === CODE_EXIT) return new WasiExitError(Number(e.message), options);
  if (e.code === CODE_NO_EXPORT || e.code === CODE_BAD_ARGS || e.code === CODE_MEMORY) {
    return new ArgumentError(e.message, options);
  }
  const trap = TRAPS[e.code - CODE_TRAP_BASE];
  if (trap) {
    if (trap === "host") {
      return new WasmTrapError(
        trap,
        e.message.replace(HOST_THREW, ""),
        hostError === undefined ? options : { cause: hostError },
      );
    }
    return new WasmTrapError(trap, e.message, options);
  }
  return e;
}

function numberTypes(types: WasmAnyType[], where: string, what: string): WasmValueType[] {
  for (const t of types) {
    if (!NUMBER_TYPES.has(t)) {
      throw new ArgumentError(`${where} has a ${t} ${what}: only i32, i64, f32, f64 can cross`);
    }
  }
  return types as WasmValueType[];
}

function typeText(params: readonly string[], results: readonly string[]): string {
  return `(${params.join(", ")}) -> (${results.join(", ")})`;
}

function resultList(result: WasmResultType): WasmValueType[] {
  if (result === "void") return [];
  if (typeof result === "string") return [result];
  return [...result];
}

/** Matches every import with a host function (or WASI); a clear error names the first miss. */
function bindImports(
  imports: WasmExtern[],
  hostFunctions: WasmImports,
  wasiOn: boolean,
): (Binding | undefined)[] {
  for (const imp of imports) {
    if (imp.kind !== "function" || !imp.type) {
      const where = `${imp.module}.${imp.name}`;
      throw new WasmLinkError(
        `import ${where} is a ${imp.kind}: only function imports are supported`,
        where,
      );
    }
  }
  return imports.map((imp) => {
    const where = `${imp.module}.${imp.name}`;
    if (!imp.type) throw new WasmLinkError(`import ${where} has no type`, where);
    if (wasiOn && imp.module === WASI) return undefined;
    const moduleType = typeText(imp.type.params, imp.type.results);
    const def = Object.hasOwn(hostFunctions, imp.module) &&
        Object.hasOwn(hostFunctions[imp.module], imp.name)
      ? hostFunctions[imp.module][imp.name]
      : undefined;
    if (!def) {
      const hint = imp.module === WASI ? " (or enable `wasi`)" : "";
      throw new WasmLinkError(
        `missing import ${where}: ${moduleType}; declare it in hostFunctions["${imp.module}"]["${imp.name}"]${hint}`,
        where,
      );
    }
    const results = resultList(def.result);
    const declared = typeText(def.params, results);
    if (declared !== moduleType) {
      throw new WasmLinkError(
        `import ${where} has type ${moduleType}, but hostFunctions declares ${declared}`,
        where,
      );
    }
    return { where, params: [...def.params], results, fn: def.fn };
  });
}

/**
 * The host functions the runtime guest may call: `wasm_import` always; `wasi_write` and
 * `wasi_clock` only when WASI may be on (`wasi` given: they answer once the WASI runtime exists,
 * and fail before or without it). With `wasi: false` they are not registered at all.
 */
export function runtimeHostFunctions(
  hostImport: (index: number, args: Uint8Array) => Uint8Array | Promise<Uint8Array>,
  wasi: (() => WasiRuntime | undefined) | undefined,
): Record<string, HostFunction> {
  const functions: Record<string, HostFunction> = {
    wasm_import: { params: ["u32", "bytes"], result: "bytes", fn: hostImport },
  };
  if (!wasi) return functions;
  const on = (): WasiRuntime => {
    const runtime = wasi();
    if (!runtime) throw new Error("WASI is not enabled for this module");
    return runtime;
  };
  functions.wasi_write = {
    params: ["u32", "bytes"],
    result: "void",
    fn: (fd: number, data: Uint8Array) => {
      on().write(fd, data);
      return undefined;
    },
  };
  functions.wasi_clock = {
    params: ["u32"],
    result: "u64",
    fn: (id: number) => {
      on();
      return clockNow(id);
    },
  };
  return functions;
}

/** WASI clocks in nanoseconds: 0 realtime, 1 monotonic, 2/3 (CPU time) monotonic too. */
function clockNow(id: number): bigint {
  if (id === 0) return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return BigInt(Math.round(performance.now() * 1e6));
}

/** The host side of WASI: settings to send to the guest, and the stdout/stderr sinks. */
class WasiRuntime {
  readonly #args: string[];
  readonly #env: string[];
  readonly #seed: Uint8Array;
  readonly #stdout: (data: Uint8Array) => void;
  readonly #stderr: (data: Uint8Array) => void;

  constructor(options: WasiOptions, module: Uint8Array | string | URL) {
    const name = typeof module === "string"
      ? module.split("/").pop()!
      : module instanceof URL
      ? module.pathname.split("/").pop()!
      : "module.wasm";
    this.#args = options.args ? [...options.args] : [name];
    if (this.#args.some((a) => typeof a !== "string")) {
      throw new ArgumentError("wasi.args must be strings");
    }
    this.#env = Object.entries(options.env ?? {}).map(([k, v]) => {
      if (typeof v !== "string" || k.includes("=")) {
        throw new ArgumentError(`wasi.env.${k} must be a string and its name has no "="`);
      }
      return `${k}=${v}`;
    });
    if (options.randomSeed !== undefined) {
      if (!(options.randomSeed instanceof Uint8Array) || options.randomSeed.length !== 32) {
        throw new ArgumentError("wasi.randomSeed must be a Uint8Array of 32 bytes");
      }
      this.#seed = options.randomSeed;
    } else {
      this.#seed = crypto.getRandomValues(new Uint8Array(32));
    }
    this.#stdout = options.stdout ?? asyncSink(Deno.stdout);
    this.#stderr = options.stderr ?? asyncSink(Deno.stderr);
  }

  encode(w: Writer): void {
    for (const list of [this.#args, this.#env]) {
      w.u32(list.length);
      for (const s of list) w.bytes(utf8.encode(s));
    }
    w.raw(this.#seed);
  }

  /** fd 1 → stdout, fd 2 → stderr; any other fd is EBADF (the runtime guest may ask anyway). */
  write(fd: number, data: Uint8Array): void {
    if (fd === 1) this.#stdout(data);
    else if (fd === 2) this.#stderr(data);
    else throw new Error(`EBADF: fd ${fd} is not writable`);
  }
}
