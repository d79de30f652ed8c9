/**
 * The public types of `WasmSandbox`: options, values, module descriptions, and its error
 * classes. The conventions are in `docs/wasm.md`.
 *
 * @module
 */

import { SandboxError } from "../errors.ts";
import type { WasmSnapshot } from "./snapshot.ts";
import type { WasmModuleCache } from "./cache.ts";
import type { Net, NetOptions } from "../net/mod.ts";

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

/**
 * What a module's stdin (fd 0) reads: bytes, a string (UTF-8), a stream, or `"inherit"` (this
 * process's own stdin). Read on demand, when the module asks.
 */
export type WasiStdin = Uint8Array | string | ReadableStream<Uint8Array> | "inherit";

/**
 * A preopened directory: a host path (read-only), or `{ path, writable: true }` to let the
 * module create, change and remove files under it.
 */
export type WasiPreopen = string | URL | { path: string | URL; writable?: boolean };

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
  /** What fd 0 reads (default: nothing, end of file at once). */
  stdin?: WasiStdin;
  /**
   * Directories the module may use, by the name it sees them under: `{ "/data": "./dir" }`
   * (read-only) or `{ "/data": { path: "./dir", writable: true } }`. The module cannot reach
   * anything outside them (docs/wasm.md, "Files"). Default: none.
   */
  preopens?: Record<string, WasiPreopen>;
}

/** Options of {@linkcode WasmSandbox.create}. */
export interface WasmSandboxOptions {
  /** The module: its bytes, a path, or a `file:` URL. */
  module: Uint8Array | string | URL;
  /** Host functions the module imports, by namespace and name. */
  hostFunctions?: WasmImports;
  /**
   * Outbound HTTP through a host-held allow-list: the `hl_http` imports (docs/networking.md,
   * `runtimes/include/hl_http.h`). Off when absent. Options make a `Net` the sandbox owns; a
   * `Net` given stays the caller's. Needs `--allow-net` for the hosts reached.
   */
  net?: NetOptions | Net;
  /**
   * WASI preview 1 for imports from `wasi_snapshot_preview1`: `true` or settings to enable,
   * `false` to treat them as ordinary imports. Default: enabled when the module imports it.
   */
  wasi?: boolean | WasiOptions;
  /** Fuel (roughly: instructions) each call may use; a call that runs out traps `out_of_fuel`. */
  fuel?: number | bigint;
  /**
   * The engine (docs/wasm.md, "Engines"): `"wasmtime"` (default) runs code compiled ahead of
   * time with Cranelift in the `wasmtime-runtime` guest; the compile runs in the locked-down
   * `hl-wasm-compile` child process (seccomp, rlimits, killed after `initTimeoutMs`), driven by
   * the `hl-wasm-compiler` library (loaded on first use), and artifacts are cached in memory and
   * on disk. `"wasmi"` interprets the module in the `wasm-runtime` guest: no compile, no native
   * code, slower calls.
   */
  engine?: WasmEngine;
  /** Largest size of the module's linear memory in bytes (default 16 MiB). */
  maxMemoryBytes?: number;
  /** Largest number of table elements (default 65 536). */
  maxTableElements?: number;
  /**
   * Deepest Wasm call nesting before the `stack_overflow` trap. wasmi: frames (default 200 000,
   * or `heapSize` / 256 when less; its value stack is also capped, at 16 MiB). wasmtime: converted
   * to a Wasm stack limit of 128 bytes per frame, never above what `stackSize` allows (default:
   * that, `stackSize` less 512 KiB).
   */
  maxRecursionDepth?: number;
  /** Default timeout of every call in milliseconds; the sandbox is poisoned when it fires. */
  timeoutMs?: number;
  /**
   * Timeout of compiling (wasmtime engine), loading and instantiating the module, each (default
   * 30 000 ms).
   */
  initTimeoutMs?: number;
  /** Guest heap in bytes (default 64 MiB; untouched pages cost nothing). */
  heapSize?: number;
  /**
   * Guest stack in bytes (default 16 MiB with wasmtime, whose Wasm frames live there, and 4 MiB
   * with wasmi; at least 1 MiB with wasmtime). Untouched pages cost nothing.
   */
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
   * A {@linkcode WasmModuleCache} uses that cache instead of `WasmModuleCache.default`.
   */
  cache?: boolean | WasmModuleCache;
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
  /** Outbound HTTP (the `hl_http` imports), as for a new sandbox; needed when the module imports them. */
  net?: NetOptions | Net;
  /**
   * Where WASI output goes and what stdin reads. `args`, `env`, `randomSeed` and `preopens` are
   * in the snapshot (the module's memory holds them) and cannot be given here.
   */
  wasi?: Pick<WasiOptions, "stdout" | "stderr" | "stdin">;
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
  /** Bytes of snapshot data (written pages) held now. */
  bytes: number;
  /** Keys evicted (least recently used first) to keep within the bounds. */
  evictions: number;
  /** Idle VMs kept for reuse now. */
  idleVms: number;
  /** Hits served by an idle VM (no new VM made). */
  recycledHits: number;
  /** Idle VMs destroyed to make room for another key's. */
  idleEvictions: number;
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

/**
 * Options of {@linkcode WasmSandbox.runWasi}: the call's limits, and this run's own WASI context.
 * Given any of `args`, `env`, `stdin`, `stdout`, `stderr`, `randomSeed`, the run is a **per-run
 * context** run: `_start` sees this run's `args` and `env` (each replacing the sandbox's when
 * given), reads this `stdin` and writes to these sinks (the sandbox's own otherwise), and draws
 * random bytes from `randomSeed` (default: fresh bytes each run, never the snapshot's stream).
 * Such a run needs a sandbox whose `_start` has not run since it was instantiated or restored
 * (`ArgumentError` otherwise, before any of the module's code runs): restore it to a snapshot
 * taken before `_start` between runs, as `WasmSandboxPool.run` does. Bounds: at most 65,536
 * entries of `args` and `env` together and 1 MiB of them (`ArgumentError`).
 *
 * @example
 * ```ts
 * import { WasmSandboxPool } from "@hl/sandbox";
 * await using pool = await WasmSandboxPool.create({ module: "hello.wasm", size: 2 });
 * const out: Uint8Array[] = [];
 * await pool.run((w) => w.runWasi({ env: { NAME: "ann" }, stdin: "body", stdout: (b) => out.push(b) }));
 * ```
 */
export interface WasiRunOptions {
  /** Timeout of the run in milliseconds (default: the sandbox's); it poisons the sandbox. */
  timeoutMs?: number;
  /** Stops the run; the sandbox is poisoned when it fires during the run. */
  signal?: AbortSignal;
  /** The run's exit budget (default: the sandbox's `maxExitsPerCall`). */
  maxExitsPerCall?: number;
  /** This run's `argv`, including `argv[0]` (default: the sandbox's). */
  args?: readonly string[];
  /** This run's whole environment (default: the sandbox's). */
  env?: Record<string, string>;
  /** What fd 0 reads in this run (default: the sandbox's stdin). */
  stdin?: WasiStdin;
  /** Receives what this run writes to fd 1 (default: the sandbox's sink). */
  stdout?: (data: Uint8Array) => void;
  /** Receives what this run writes to fd 2 (default: the sandbox's sink). */
  stderr?: (data: Uint8Array) => void;
  /** 32 bytes that key this run's `random_get` stream (default: fresh random bytes). */
  randomSeed?: Uint8Array;
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

/** The Wasm engines of {@linkcode WasmSandboxOptions.engine}. */
export type WasmEngine = "wasmi" | "wasmtime";

/**
 * A compiled artifact (wasmtime engine) was refused when loaded: its digest does not match (the
 * cache file was changed), or it was built by another engine version or with other settings.
 * A refused cache file is removed, so the next `create` compiles afresh.
 *
 * @example
 * ```ts
 * import { WasmArtifactError } from "@hl/sandbox";
 * const e = new WasmArtifactError("digest mismatch");
 * console.log(e.name); // "WasmArtifactError"
 * ```
 */
export class WasmArtifactError extends SandboxError {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "WasmArtifactError";
  }
}

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
