/**
 * The layer for sandboxes whose guest runs a language runtime compiled to a Wasm reactor
 * (`JsSandbox`: QuickJS-NG; a Python kind next). The runtime is a module on `WasmSandbox`'s
 * engines (`engine.ts`); a small driver of the project's own exports init/eval/call/resume/seed
 * and answers in JSON (docs/js.md, "Engine and driver ABI"). Everything that does not depend on
 * the language is here, once:
 *
 * - {@linkcode RuntimeSandbox}, the core of a handle: the VM (a `WasmSandbox`), calls one at a
 *   time, the driver's exchange (request, host-call rounds of pending/resume, reply decoded as
 *   hostile input, poisoning until a restore), console output, snapshot/restore, the
 *   `Math.random` re-seed of each copy, the hand-over to a pool's next borrower, dispose and the
 *   telemetry counts;
 * - {@linkcode createRuntime}: option checks, the cold start (instantiate, `_initialize`, the
 *   driver's init, the `source`), the start from a snapshot, the kind's cache of start states;
 * - {@linkcode startLanguagePool}: a kind's pool over `startRuntimePool`.
 *
 * A kind says only what differs ({@linkcode LanguageKind}: names, the module, memory defaults, its
 * error class, its cache, its snapshot class and how to wrap a core in its public class), and its
 * public class forwards each documented method to the core (docs/design.md, "Runtime layer").
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import {
  ArgumentError,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  type SandboxError,
  SandboxPoisonedError,
  TimeoutError,
} from "../errors.ts";
import { checkCount, checkTimeout } from "../options.ts";
import { readSource } from "../source.ts";
import { digest, SnapshotMismatchError } from "../snapshot.ts";
import { ContentMemo } from "../content_memo.ts";
import { findRuntimeModule, type RuntimeModuleName } from "../artifacts.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import { cpuFeatureFlags } from "../wasm/compiler.ts";
import { hypervisorInfo } from "../ffi/vm.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { WasmEngine } from "../wasm/types.ts";
import { handOverWasmSandbox } from "../sandbox_internal.ts";
import { countRuntime, type RuntimeKind, uncountRuntime } from "../telemetry.ts";
import { checkPoolSizing, type PoolCore, type PoolMember, type PoolSizing } from "../pool_core.ts";
import { engineNamed } from "./engine.ts";
import { type PoolSnapshot, startRuntimePool } from "./pool.ts";
import { decodeReply, type ErrorFactory, type PendingCall, type Reply } from "./reply.ts";
import { checkOutput, Output, type OutputOptions } from "./output.ts";
import { stringifyValue, writeValue } from "./values.ts";
import type { SnapshotCache } from "./cache.ts";
import type { RuntimeSnapshotState, SnapshotStates } from "./snapshot.ts";
import {
  knownModuleDigest,
  loadStartSnapshot,
  rememberModuleDigest,
  storeStartSnapshot,
} from "../start_snapshots.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones. V8 never
// compiles a method with its module: the bodies of `RuntimeSandbox`'s methods on that path are
// static private fields spelled the same way (inside the class body, so they read its `#private`
// fields), the methods delegating with `this` as an argument.

const MIB = 1 << 20;
const utf8 = new TextEncoder();
/**
 * wasi-libc's own random stream is fixed (so the module cache may keep the instance); the
 * language's random numbers are seeded per copy.
 */
const WASI_SEED = new Uint8Array(32);
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** A host function, callable from the guest language as `host.name(...args)`; JSON and bytes. */
// deno-lint-ignore no-explicit-any
export type RuntimeHostFunction = (...args: any[]) => unknown;

/** The names of a driver's exports (docs/js.md, "Engine and driver ABI", has QuickJS's). */
export interface DriverExports {
  /** `(ptr, len) -> reply`: creates the runtime from the JSON config (`{}` or an error). */
  readonly init: string;
  /**
   * `(ptr, len) -> reply`: evaluates the UTF-8 input in the global scope. This and `call` take
   * an optional seed header first (0xFF, then the 64-bit seed little-endian), which the core
   * sends with a copy's first request (docs/js.md, "console, time, random").
   */
  readonly eval: string;
  /** `(ptr, len) -> reply`: calls the function at the JSON `[path, ...args]`'s dotted path. */
  readonly call: string;
  /** `(ptr, len) -> reply`: answers a `pending` reply's host calls. */
  readonly resume: string;
  /** `(lo, hi) -> ()`: seeds the language's random numbers (a snapshot before any request). */
  readonly seed: string;
}

/** What the core needs of a kind. */
export interface Driver<E extends SandboxError> {
  /** The public class's name, in messages (`"JsSandbox"`). */
  readonly label: string;
  /** The telemetry kind (`active_<kind>_sandboxes`, `sandbox_loads_total{kind}`). */
  readonly telemetry: RuntimeKind;
  /** The driver's exports. */
  readonly exports: DriverExports;
  /** The kind's error for an exception the driver reports (`JsError`). */
  readonly error: ErrorFactory<E>;
}

/**
 * A language-runtime kind: all that a new kind implements beside its public classes (its handle,
 * snapshot and pool classes, each forwarding to this layer).
 *
 * @example
 * ```ts ignore
 * export const pyKind: LanguageKind<PySandbox, PySnapshot, PyError> = {
 *   label: "PySandbox",
 *   telemetry: "py",
 *   module: "python",
 *   moduleLabel: "CPython module",
 *   exports: {
 *     init: "py_init",
 *     eval: "py_eval",
 *     call: "py_call",
 *     resume: "py_resume",
 *     seed: "py_seed",
 *   },
 *   defaultMaxMemory: 64 << 20,
 *   memoryHeadroom: 16 << 20,
 *   error: (name, message, stack) => new PyError(name, message, stack),
 *   cache: new SnapshotCache(32),
 *   snapshots: pySnapshots, // new SnapshotStates(PySnapshot, "a PySnapshot")
 *   wrap: (core) =>
 *     new (PySandbox as unknown as new (c: RuntimeSandbox<PyError>) => PySandbox)(core),
 * };
 * ```
 */
export interface LanguageKind<H extends object, S extends object, E extends SandboxError>
  extends Driver<E> {
  /** The runtime module found when the caller gives no `module` (`findRuntimeModule`). */
  readonly module: RuntimeModuleName;
  /** The module's name in messages (`"QuickJS module"`). */
  readonly moduleLabel: string;
  /** The runtime's own allocation limit when the caller sets no `maxMemoryBytes`. */
  readonly defaultMaxMemory: number;
  /** Wasm memory beyond the runtime's limit: its C stack, static data, malloc's slack. */
  readonly memoryHeadroom: number;
  /** The kind's cache of start states (one per kind, per process). */
  readonly cache: SnapshotCache;
  /** The states of the kind's snapshot class. */
  readonly snapshots: SnapshotStates<S>;
  /** The kind's public handle on `core` (its private constructor). */
  wrap(core: RuntimeSandbox<E>): H;
}

/** The create options every kind takes (its public options type is assignable to this). */
export interface LanguageOptions extends OutputOptions {
  source?: string;
  hostFunctions?: Record<string, RuntimeHostFunction>;
  timeoutMs?: number;
  maxMemoryBytes?: number;
  engine?: WasmEngine;
  module?: Uint8Array | string | URL;
  library?: string;
  initTimeoutMs?: number;
  cache?: boolean;
}

/** The options of a create from a snapshot `S`. */
export interface LanguageSnapshotOptions<S> extends OutputOptions {
  snapshot: S;
  hostFunctions?: Record<string, RuntimeHostFunction>;
  timeoutMs?: number;
  library?: string;
}

const checkHostFunctions = (function checkHostFunctions(
  fns: Record<string, RuntimeHostFunction> | undefined,
): Map<string, RuntimeHostFunction> {
  if (fns === undefined) return new Map();
  if (typeof fns !== "object" || fns === null) {
    throw new ArgumentError("hostFunctions must be an object of functions");
  }
  const out = new Map<string, RuntimeHostFunction>();
  for (const [name, fn] of Object.entries(fns)) {
    if (!IDENTIFIER.test(name)) {
      throw new ArgumentError(`host function name ${JSON.stringify(name)} is not an identifier`);
    }
    if (typeof fn !== "function") {
      throw new ArgumentError(`host function ${name} is not a function`);
    }
    out.set(name, fn);
  }
  return out;
}).bind(undefined); // Eager: see the note after the imports.

function sameNames(a: readonly string[], b: Iterable<string>): boolean {
  const sb = [...b].sort();
  return a.length === sb.length && [...a].sort().every((n, i) => n === sb[i]);
}

/** A new 64-bit random state for a copy, from the host's CSPRNG. */
function freshSeed(): [number, number] {
  const s = crypto.getRandomValues(new Int32Array(2));
  return [s[0], s[1]];
}

/** A request's input after its seed header. */
const withSeed = (function withSeed(seed: Uint8Array, input: Uint8Array): Uint8Array {
  const out = new Uint8Array(seed.length + input.length);
  out.set(seed);
  out.set(input, seed.length);
  return out;
}).bind(undefined); // Eager: see the note after the imports.

const moduleDigests = new ContentMemo<Promise<string>>(4, 16 * MIB);

/**
 * The `{ name, message }` the script sees for what a host function threw; never throws (a thrown
 * value may have no primitive form, or getters that throw).
 */
function thrownByHost(e: unknown): { name: string; message: string } {
  try {
    const err = e instanceof Error ? e : new Error(String(e));
    return { name: String(err.name), message: String(err.message) };
  } catch {
    return { name: "Error", message: "a host function threw a value that cannot be read" };
  }
}

/** What a core is made of; a hand-over moves all of it to the next core. */
interface CoreState {
  hostFns: Map<string, RuntimeHostFunction>;
  names: ReadonlySet<string>;
  key: string;
  timeoutMs: number | undefined;
  output: Output;
  poison?: Error;
  fromCache: boolean;
  seed?: Uint8Array;
}

/**
 * The core of a language-runtime sandbox handle (one per handle; a pool's hand-over makes a new
 * one on the same VM). Its public class forwards to it.
 *
 * @example
 * ```ts ignore
 * class PySandbox {
 *   readonly #core: RuntimeSandbox<PyError>;
 *   private constructor(core: RuntimeSandbox<PyError>) {
 *     this.#core = core;
 *   }
 *   call(path: string, ...args: unknown[]): Promise<unknown> {
 *     return this.#core.call(path, args);
 *   }
 * }
 * ```
 */
export class RuntimeSandbox<E extends SandboxError = SandboxError> {
  readonly #kind: Driver<E>;
  readonly #wasm: WasmSandbox;
  readonly #hostFns: Map<string, RuntimeHostFunction>;
  readonly #names: ReadonlySet<string>;
  readonly #key: string;
  readonly #timeoutMs: number | undefined;
  readonly #output: Output;
  /** Why this sandbox is unusable (a malformed reply, a trap), until a restore. */
  #poison: Error | undefined;
  /** Calls run one at a time: a new call would make the driver forget a waiting one. */
  #queue: Promise<unknown> = Promise.resolve();
  /** A host function of this sandbox is running (a call from it would wait on itself). */
  #inHost = false;
  readonly #fromCache: boolean;
  /** The seed header the next request carries (a copy's fresh seed, not yet in the guest). */
  #seed: Uint8Array | undefined;

  /** `load`: a new sandbox, not a pool's hand-over of a live one (telemetry). */
  private constructor(kind: Driver<E>, wasm: WasmSandbox, state: CoreState, load: boolean) {
    this.#kind = kind;
    this.#wasm = wasm;
    countRuntime(kind.telemetry, this, load); // active_<kind>_sandboxes (telemetry.ts)
    this.#hostFns = state.hostFns;
    this.#names = state.names;
    this.#key = state.key;
    this.#timeoutMs = state.timeoutMs;
    this.#output = state.output;
    this.#poison = state.poison;
    this.#fromCache = state.fromCache;
    this.#seed = state.seed;
  }

  /** A new core (not a hand-over) on `wasm`, with the host functions `hostFns`. */
  static fresh<E extends SandboxError>(
    kind: Driver<E>,
    wasm: WasmSandbox,
    hostFns: Map<string, RuntimeHostFunction>,
    key: string,
    timeoutMs: number | undefined,
    output: Output,
    fromCache: boolean,
  ): RuntimeSandbox<E> {
    const names = new Set(hostFns.keys());
    return new RuntimeSandbox(
      kind,
      wasm,
      { hostFns, names, key, timeoutMs, output, fromCache },
      true,
    );
  }

  /** Revokes this core (every later use is `SandboxDisposedError`); a new core on its VM. */
  handOver(): RuntimeSandbox<E> {
    const next = handOverWasmSandbox(this.#wasm);
    uncountRuntime(this.#kind.telemetry, this);
    return new RuntimeSandbox(this.#kind, next, {
      hostFns: this.#hostFns,
      names: this.#names,
      key: this.#key,
      timeoutMs: this.#timeoutMs,
      output: this.#output,
      poison: this.#poison,
      fromCache: this.#fromCache,
      seed: this.#seed,
    }, false);
  }

  /** The Wasm sandbox (the cache's fill snapshots it). */
  get wasm(): WasmSandbox {
    return this.#wasm;
  }

  /** The key of the module, options and source (a snapshot's must match for a restore). */
  get key(): string {
    return this.#key;
  }

  /**
   * Calls the global function at `path` with JSON arguments. `begin` runs when the call starts
   * (after the calls queued before it), e.g. to start a per-call budget.
   */
  call(path: string, args: readonly unknown[], begin?: () => void): Promise<unknown> {
    return RuntimeSandbox.#call(this, path, args, begin);
  }

  static readonly #call = (function runtimeCall<E extends SandboxError>(
    self: RuntimeSandbox<E>,
    path: string,
    args: readonly unknown[],
    begin: (() => void) | undefined,
  ): Promise<unknown> {
    if (typeof path !== "string") {
      return Promise.reject(new ArgumentError("the function path must be a string"));
    }
    let input: string;
    try {
      input = writeValue([path, ...args], "an argument");
    } catch (e) {
      return Promise.reject(e);
    }
    return self.#request(self.#kind.exports.call, input, begin);
  }).bind(undefined); // Eager: see the note after the imports.

  /** Evaluates `code` in the global scope (`begin` as for {@linkcode call}). */
  eval(code: string, begin?: () => void): Promise<unknown> {
    if (typeof code !== "string") return Promise.reject(new ArgumentError("code must be a string"));
    return this.#request(this.#kind.exports.eval, code, begin);
  }

  /** The state of a snapshot of this sandbox now (the kind wraps it in its class). */
  snapshot(): Promise<RuntimeSnapshotState> {
    return this.#queued(async () => {
      this.#usable();
      if (this.#seed) {
        // The copy's seed must be in the state a snapshot keeps (one VM entry, only here).
        const seed = new DataView(this.#seed.buffer, 1);
        await this.#wasm.call(
          this.#kind.exports.seed,
          seed.getInt32(0, true),
          seed.getInt32(4, true),
        );
        this.#seed = undefined;
      }
      const wasm = await this.#wasm.snapshot();
      return { wasm, key: this.#key, hostFunctions: [...this.#names] };
    });
  }

  /** Brings the sandbox back to a snapshot's state of the same key; clears poisoning. */
  restore(state: RuntimeSnapshotState): Promise<void> {
    if (state.key !== this.#key) {
      return Promise.reject(
        new SnapshotMismatchError("the snapshot is of a sandbox with another source or options"),
      );
    }
    return this.#queued(async () => {
      await this.#wasm.restore(state.wasm);
      this.#poison = undefined;
      this.#seed = undefined; // the snapshot's own state, random numbers included
    });
  }

  /** Whether a timeout, a trap or a malformed reply made the sandbox unusable. */
  get poisoned(): boolean {
    return this.#poison !== undefined || this.#wasm.poisoned;
  }

  /** Whether it was disposed (or a pool's run that lent it ended). */
  get disposed(): boolean {
    return this.#wasm.disposed;
  }

  /** Whether it started from the kind's cache of start states. */
  get fromCache(): boolean {
    return this.#fromCache;
  }

  /** Stops the call in progress. */
  interrupt(): void {
    this.#wasm.interrupt();
  }

  /** Destroys the VM. Idempotent. */
  dispose(): Promise<void> {
    uncountRuntime(this.#kind.telemetry, this);
    return this.#wasm.dispose();
  }

  /**
   * Gives the language's random numbers a fresh seed (each copy of a snapshot), from the host's
   * CSPRNG: it travels as the next request's seed header, so it costs no VM entry of its own
   * (before a snapshot, `snapshot()` enters the seed export). A restore forgets it.
   */
  reseed(): void {
    const seed = new Uint8Array(9);
    seed[0] = 0xff;
    crypto.getRandomValues(seed.subarray(1));
    this.#seed = seed;
  }

  /** Runs the driver's init with the config; any other answer than `{}` poisons. */
  async init(config: string, timeoutMs: number): Promise<void> {
    const reply = await RuntimeSandbox.#enter(
      this,
      this.#kind.exports.init,
      utf8.encode(config),
      timeoutMs,
    );
    if (reply.kind === "error") throw reply.error;
    if (reply.kind !== "value" || reply.value !== undefined) {
      throw this.#poisonWith(
        new ProtocolError(
          `${this.#kind.exports.init} answered something other than {} or an error`,
        ),
      );
    }
  }

  /** Evaluates the create's `source`; resolves to whether it called host functions. */
  evalSource(source: string): Promise<boolean> {
    return this.#queued(async () => {
      const r = await RuntimeSandbox.#exchange(
        this,
        this.#kind.exports.eval,
        utf8.encode(source),
        this.#timeoutMs,
      );
      if (r.reply.kind === "error") throw r.reply.error;
      return r.calledHost;
    });
  }

  #usable(): void {
    if (this.#wasm.disposed) throw new SandboxDisposedError();
    if (this.#poison) throw new SandboxPoisonedError(this.#poison);
  }

  #queued<T>(op: () => Promise<T>): Promise<T> {
    if (this.#inHost) {
      return Promise.reject(
        new ReentrantCallError(`a host function called back into its own ${this.#kind.label}`),
      );
    }
    const run = this.#queue.then(op, op);
    this.#queue = run.catch(() => {});
    return run;
  }

  #request(fn: string, input: string, begin: (() => void) | undefined): Promise<unknown> {
    return this.#queued(async () => {
      begin?.();
      const { reply } = await RuntimeSandbox.#exchange(
        this,
        fn,
        utf8.encode(input),
        this.#timeoutMs,
      );
      if (reply.kind === "error") throw reply.error;
      return (reply as { value: unknown }).value;
    });
  }

  /** One request and its host-call rounds, to a value or an error. */
  static readonly #exchange = (async function runtimeExchange<E extends SandboxError>(
    self: RuntimeSandbox<E>,
    fn: string,
    input: Uint8Array,
    timeoutMs: number | undefined,
  ): Promise<{ reply: Reply<E>; calledHost: boolean }> {
    self.#usable();
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    const left = () =>
      deadline === undefined ? undefined : Math.max(1, deadline - performance.now());
    let calledHost = false;
    try {
      const seed = self.#seed;
      let reply = await RuntimeSandbox.#enter(
        self,
        fn,
        seed ? withSeed(seed, input) : input,
        left(),
      );
      if (seed === self.#seed) self.#seed = undefined; // in the guest now
      while (reply.kind === "pending") {
        calledHost = true;
        let answers: string;
        try {
          answers = await self.#answer(reply.calls);
        } catch (e) {
          // The driver waits for this round's resume: no other call may reach it (out of step).
          throw self.#poisonWith(
            e instanceof Error ? e : new Error("a host call round failed", { cause: e }),
          );
        }
        reply = await RuntimeSandbox.#enter(
          self,
          self.#kind.exports.resume,
          utf8.encode(answers),
          left(),
        );
      }
      return { reply, calledHost };
    } catch (e) {
      // Each entry ran with what was left of the call's time; the error names the call's limit.
      if (e instanceof TimeoutError && timeoutMs !== undefined && e.timeoutMs !== timeoutMs) {
        throw new TimeoutError(timeoutMs, { cause: e });
      }
      throw e;
    } finally {
      self.#output.flush();
    }
  }).bind(undefined); // Eager: see the note after the imports.

  /** Runs the host functions of one round; returns the resume export's input. */
  async #answer(calls: readonly PendingCall[]): Promise<string> {
    this.#inHost = true;
    try {
      const answers = await Promise.all(calls.map(async ({ id, fn, args }) => {
        let value: unknown;
        try {
          value = await this.#hostFns.get(fn)!(...args);
        } catch (e) {
          return JSON.stringify({ id, error: thrownByHost(e) });
        }
        try {
          return stringifyValue({ id, value })!;
        } catch (e) {
          // A result JSON cannot write (a BigInt, a cycle) is a TypeError in the script.
          const message = `host function ${fn} returned a value that is not JSON: ${
            thrownByHost(e).message
          }`;
          return JSON.stringify({ id, error: { name: "TypeError", message } });
        }
      }));
      return `[${answers.join(",")}]`;
    } finally {
      this.#inHost = false;
    }
  }

  /** One VM entry: a driver export by the bytes convention, its reply decoded. */
  static readonly #enter = (async function runtimeEnter<E extends SandboxError>(
    self: RuntimeSandbox<E>,
    fn: string,
    input: Uint8Array,
    timeoutMs: number | undefined,
  ): Promise<Reply<E>> {
    let out: Uint8Array;
    try {
      out = await self.#wasm.callBytes(fn, input, timeoutMs === undefined ? {} : { timeoutMs });
    } catch (e) {
      // A trap leaves the runtime in an undefined state (docs/js.md): no call until a restore.
      // An ArgumentError (the input does not fit the VM's input area) entered nothing: a request
      // leaves the sandbox as it was; a resume leaves the driver waiting, so it poisons.
      const entered = !(e instanceof ArgumentError) || fn === self.#kind.exports.resume;
      if (entered && !(e instanceof SandboxDisposedError) && e instanceof Error) {
        self.#poison ??= e;
      }
      throw e;
    }
    try {
      return decodeReply(out, self.#names, self.#kind.error);
    } catch (e) {
      throw self.#poisonWith(e as Error);
    }
  }).bind(undefined); // Eager: see the note after the imports.

  #poisonWith(e: Error): Error {
    this.#poison ??= e;
    return e;
  }
}

/** The core of each public handle (`wrap` makes the handle; the pools and hand-overs read it). */
const cores = new WeakMap<object, RuntimeSandbox<SandboxError>>();

const handleOf = (function handleOf<H extends object, S extends object, E extends SandboxError>(
  kind: LanguageKind<H, S, E>,
  core: RuntimeSandbox<E>,
): H {
  const handle = kind.wrap(core);
  cores.set(handle, core);
  return handle;
}).bind(undefined); // Eager: see the note after the imports.

function coreOf<E extends SandboxError>(handle: object): RuntimeSandbox<E> {
  const core = cores.get(handle);
  if (!core) throw new ArgumentError("not a sandbox of a language-runtime kind");
  return core as RuntimeSandbox<E>;
}

/**
 * Revokes `handle` (every later use is a `SandboxDisposedError`; work in progress is stopped and
 * the VM left poisoned for the new owner's restore) and returns a new handle on its VM.
 *
 * @example
 * ```ts ignore
 * const next = handOverRuntime(pyKind, borrowed); // `borrowed` now throws SandboxDisposedError
 * ```
 */
export function handOverRuntime<H extends object, S extends object, E extends SandboxError>(
  kind: LanguageKind<H, S, E>,
  handle: H,
): H {
  return handleOf(kind, coreOf<E>(handle).handOver());
}

/**
 * A kind's `create`: from `options.snapshot`, or with the runtime initialised and `source`
 * evaluated (through the kind's cache of start states unless `cache: false`).
 *
 * @example
 * ```ts ignore
 * static create(options: PySandboxOptions | PySnapshotSandboxOptions): Promise<PySandbox> {
 *   return createRuntime(pyKind, options);
 * }
 * ```
 */
export const createRuntime =
  (async function createRuntime<H extends object, S extends object, E extends SandboxError>(
    kind: LanguageKind<H, S, E>,
    options: LanguageOptions | LanguageSnapshotOptions<S>,
  ): Promise<H> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError(`${kind.label}.create takes an options object`);
    }
    checkOutput(options);
    const hostFns = checkHostFunctions(options.hostFunctions);
    checkTimeout(options.timeoutMs, "timeoutMs");
    if ("snapshot" in options && options.snapshot !== undefined) {
      const state = kind.snapshots.of(options.snapshot, true);
      if (!sameNames(state.hostFunctions, hostFns.keys())) {
        throw new SnapshotMismatchError(
          `the snapshot's sandbox had host functions [${state.hostFunctions.join(", ")}]; ` +
            `give exactly those`,
        );
      }
      return handleOf(
        kind,
        await fromSnapshot(kind, state.wasm, state.key, hostFns, options, false),
      );
    }
    const o = options as LanguageOptions;
    if (o.source !== undefined && typeof o.source !== "string") {
      throw new ArgumentError("source must be a string");
    }
    if (o.cache !== undefined && typeof o.cache !== "boolean") {
      throw new ArgumentError("cache must be a boolean");
    }
    const maxMemory = checkCount(o.maxMemoryBytes, "maxMemoryBytes", kind.defaultMaxMemory);
    if (maxMemory < MIB) throw new ArgumentError("maxMemoryBytes must be at least 1 MiB");
    const engine = engineNamed(o.engine);
    const module = o.module ?? findRuntimeModule(kind.module);
    // The module is read only when its digest is not remembered, or for a cold start.
    let bytes: Uint8Array | undefined;
    const moduleBytes = async () => bytes ??= await readSource(module, kind.moduleLabel);
    const remembered = knownModuleDigest(module); // its SHA-256 runs on Deno's blocking thread
    // Meanwhile this thread opens the VM library and /dev/kvm, which every start needs next (a new
    // process's first `Deno.dlopen` and KVM probe, ~2-3 ms): the same calls, made early. A failure
    // is left for the step that needs them to report, as before.
    try {
      hypervisorInfo(o.library);
    } catch {
      // Reported by the start itself.
    }
    let moduleDigest = await remembered;
    if (moduleDigest === undefined) {
      moduleDigest = await moduleDigests.get(await moduleBytes(), (b) => digest(b));
      await rememberModuleDigest(module, moduleDigest);
    }
    const names = [...hostFns.keys()].sort();
    const key = JSON.stringify({
      module: moduleDigest,
      engine: engine.name,
      // The CPU features the code image is compiled for (docs/wasm.md "CPU features"): a start
      // state holds compiled code, so another set is another key (memory and disk).
      cpu: engine.name === "wasmtime" ? cpuFeatureFlags() : 0,
      maxMemory,
      library: o.library ?? "",
      hostFunctions: names,
      source: o.source ?? null,
    });
    if (o.cache === false) {
      return handleOf(
        kind,
        (await cold(kind, await moduleBytes(), key, hostFns, o, maxMemory)).core,
      );
    }
    let hit = await kind.cache.get(key);
    // Another create may have begun this key's fill since: wait for it rather than fill again.
    while (!hit && kind.cache.has(key)) hit = await kind.cache.get(key);
    if (hit) return handleOf(kind, await fromSnapshot(kind, hit, key, hostFns, o, true));
    const core = await kind.cache.fill(
      key,
      () => startState(kind, key, hostFns, o, maxMemory, names, moduleBytes),
    );
    return handleOf(kind, core);
  }).bind(undefined); // Eager: see the note after the imports.

/**
 * A cache fill of `createRuntime`: the start state from disk, else a cold start (whose snapshot is
 * stored unless its source called host functions); the core and what the cache keeps.
 */
const startState = (async function startState<
  H extends object,
  S extends object,
  E extends SandboxError,
>(
  kind: LanguageKind<H, S, E>,
  key: string,
  hostFns: Map<string, RuntimeHostFunction>,
  o: LanguageOptions,
  maxMemory: number,
  names: string[],
  moduleBytes: () => Promise<Uint8Array>,
): Promise<{ value: RuntimeSandbox<E>; snapshot: WasmSnapshot | undefined }> {
  // Another process may have left this start state on disk (src/start_snapshots.ts).
  const disk = await loadStartSnapshot(key, o.engine, o.library);
  if (disk) {
    try {
      // fromCache stays false: it means this process's cache (the disk has its own counters).
      return { value: await fromSnapshot(kind, disk, key, hostFns, o, false), snapshot: disk };
    } catch (e) {
      await disk.dispose();
      throw e;
    }
  }
  const { core, calledHost } = await cold(
    kind,
    await moduleBytes(),
    key,
    hostFns,
    o,
    maxMemory,
  );
  if (calledHost) return { value: core, snapshot: undefined };
  try {
    const snap = await core.wasm.snapshot();
    await storeStartSnapshot(key, o.engine, snap, names);
    core.reseed();
    return { value: core, snapshot: snap };
  } catch (e) {
    await core.dispose();
    throw e;
  }
}).bind(undefined); // Eager: see the note after the imports.

/** A new VM from a snapshot (the cache's or the caller's), with its own random seed. */
const fromSnapshot = (async function fromSnapshot<E extends SandboxError>(
  kind: Driver<E>,
  snapshot: WasmSnapshot,
  key: string,
  hostFns: Map<string, RuntimeHostFunction>,
  options: OutputOptions & { timeoutMs?: number; library?: string },
  fromCache: boolean,
): Promise<RuntimeSandbox<E>> {
  const output = new Output(options);
  const wasm = await WasmSandbox.create({
    snapshot,
    timeoutMs: options.timeoutMs,
    library: options.library,
    wasi: output.sinks(),
  });
  const core = RuntimeSandbox.fresh(kind, wasm, hostFns, key, options.timeoutMs, output, fromCache);
  core.reseed();
  return core;
}).bind(undefined); // Eager: see the note after the imports.

/** Instantiates the module, initialises the runtime and evaluates the source. */
async function cold<H extends object, S extends object, E extends SandboxError>(
  kind: LanguageKind<H, S, E>,
  bytes: Uint8Array,
  key: string,
  hostFns: Map<string, RuntimeHostFunction>,
  options: LanguageOptions,
  maxMemory: number,
): Promise<{ core: RuntimeSandbox<E>; calledHost: boolean }> {
  const output = new Output(options);
  const wasmMemory = maxMemory + kind.memoryHeadroom;
  const wasm = await WasmSandbox.create({
    module: bytes,
    engine: options.engine,
    maxMemoryBytes: wasmMemory,
    heapSize: Math.max(64 * MIB, 2 * wasmMemory + 16 * MIB),
    timeoutMs: options.timeoutMs,
    initTimeoutMs: options.initTimeoutMs,
    library: options.library,
    wasi: { ...output.sinks(), randomSeed: WASI_SEED },
  });
  const core = RuntimeSandbox.fresh(kind, wasm, hostFns, key, options.timeoutMs, output, false);
  try {
    const init = options.initTimeoutMs ?? 30_000;
    // A module-cache hit is a copy of an instance snapshotted before `_initialize` too.
    await wasm.callWithOptions({ timeoutMs: init }, "_initialize");
    const config = writeValue({
      memoryLimit: maxMemory,
      seed: (freshSeed()[0] >>> 0) || 1, // replaced per copy (reseed)
      hostFunctions: [...hostFns.keys()],
    }, "the config");
    await core.init(config, init);
    const calledHost = options.source === undefined ? false : await core.evalSource(options.source);
    return { core, calledHost };
  } catch (e) {
    await core.dispose();
    throw e;
  }
}

/**
 * A kind's pool: one member from the options (through the kind's cache), snapshotted, the
 * others from that snapshot; or all from `options.snapshot`. Each run's member is restored to the
 * snapshot and re-seeded before the next borrower gets it.
 *
 * @example
 * ```ts ignore
 * class PySandboxPool extends Pool<PySandbox> {
 *   static async create(options: PySandboxPoolOptions): Promise<PySandboxPool> {
 *     return new PySandboxPool(await startLanguagePool(pyKind, options));
 *   }
 * }
 * ```
 */
export async function startLanguagePool<
  H extends PoolMember,
  S extends PoolSnapshot,
  E extends SandboxError,
>(
  kind: LanguageKind<H, S, E>,
  options: LanguageOptions & PoolSizing & { snapshot?: S },
): Promise<PoolCore<H>> {
  const pool = `${kind.label}Pool`;
  if (typeof options !== "object" || options === null) {
    throw new ArgumentError(`${pool}.create takes an options object`);
  }
  const size = checkPoolSizing(options);
  if (options.snapshot !== undefined && options.source !== undefined) {
    throw new ArgumentError(`${pool}.create takes \`source\` or \`snapshot\`, not both`);
  }
  const { size: _s, acquireTimeoutMs: _a, maxWaiting: _m, snapshot: _n, ...rest } = options;
  const member = (snapshot: S) =>
    createRuntime(kind, {
      snapshot,
      hostFunctions: options.hostFunctions,
      timeoutMs: options.timeoutMs,
      library: options.library,
      onLog: options.onLog,
      stdout: options.stdout,
      stderr: options.stderr,
    });
  return await startRuntimePool({
    size,
    snapshot: options.snapshot,
    first: () => createRuntime(kind, rest),
    snapshotOf: async (first) => kind.snapshots.wrap(await coreOf<E>(first).snapshot()),
    fromSnapshot: member,
    handOver: (h) => handOverRuntime(kind, h),
    restore: async (h, snap) => {
      const core = coreOf<E>(h);
      await core.restore(kind.snapshots.of(snap, true));
      core.reseed();
    },
  }, options);
}
