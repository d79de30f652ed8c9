/**
 * `JsSandbox`: untrusted JavaScript in its own micro-VM. QuickJS-NG compiled to a Wasm reactor
 * (`target/runtimes/quickjs.wasm`, docs/js.md) runs in a `WasmSandbox` on either engine; this
 * class speaks the driver's ABI (JSON in, JSON replies, host calls as pending/resume rounds),
 * keeps a cache of snapshots taken after QuickJS's init and the `source`, and turns replies into
 * values, `JsError`s or, for anything malformed, a `ProtocolError` that poisons the sandbox.
 *
 * @module
 */

import {
  ArgumentError,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxPoisonedError,
} from "../errors.ts";
import { checkCount, checkTimeout } from "../options.ts";
import { readSource } from "../source.ts";
import { digest, SnapshotMismatchError } from "../snapshot.ts";
import { ContentMemo } from "../content_memo.ts";
import { findRuntimeModule } from "../artifacts.ts";
import { engineNamed } from "../runtime/engine.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import { handOverWasmSandbox } from "../sandbox_internal.ts";
import { countRuntime, uncountRuntime } from "../telemetry.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { WasmEngine } from "../wasm/types.ts";
import { decodeReply, type PendingCall, type Reply } from "./reply.ts";
import { JsSnapshot, jsStateOf, makeJsSnapshot } from "./snapshot.ts";
import { JsSnapshotCache } from "./cache.ts";
import { jsNetOptions, Net, type NetOptions, type NetStats } from "../net/mod.ts";

const MIB = 1 << 20;
const utf8 = new TextEncoder();
/** wasi-libc's own random stream is fixed (so the module cache may keep the instance); `Math.random` is seeded per copy. */
const WASI_SEED = new Uint8Array(32);
/** Room in the Wasm memory beyond QuickJS's own limit: the 1 MiB C stack, static data, malloc's slack. */
const WASM_MEMORY_HEADROOM = 16 * MIB;
const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** A host function callable from JavaScript as `host.name(...args)` (always a Promise there). */
// deno-lint-ignore no-explicit-any
export type JsHostFunction = (...args: any[]) => unknown;

/** Where `console` output goes. */
export interface JsOutputOptions {
  /**
   * Receives each line of `console` output without its newline: `"log"` for
   * `console.log/info/debug`, `"error"` for `console.error/warn/trace`. When set, `stdout` and
   * `stderr` are not used.
   */
  onLog?: (level: "log" | "error", line: string) => void;
  /** Receives `console.log` output as bytes (default: the host's stdout). */
  stdout?: (data: Uint8Array) => void;
  /** Receives `console.error` output as bytes (default: the host's stderr). */
  stderr?: (data: Uint8Array) => void;
}

/** Options of {@linkcode JsSandbox.create}. */
export interface JsSandboxOptions extends JsOutputOptions {
  /** A classic script, evaluated once at create (its globals are what `call` reaches). */
  source?: string;
  /** Host functions, callable from JavaScript as `await host.name(...args)`; JSON both ways. */
  hostFunctions?: Record<string, JsHostFunction>;
  /**
   * Default limit of each `call`/`eval`, in ms, covering the JavaScript's run time (host
   * functions' own time is not counted, but the run after them is). A timeout poisons the sandbox.
   */
  timeoutMs?: number;
  /** QuickJS's allocation limit in bytes (default 32 MiB): past it, `InternalError: out of memory`. */
  maxMemoryBytes?: number;
  /** The Wasm engine (default `"wasmtime"`). */
  engine?: WasmEngine;
  /** The QuickJS module (default: the built `quickjs.wasm`, found as the other artifacts are). */
  module?: Uint8Array | string | URL;
  /** Path of the native library (default: found as for `Sandbox`). */
  library?: string;
  /** Limit of compiling, loading and initialising, in ms (default 30 000). */
  initTimeoutMs?: number;
  /**
   * Use and fill the process's cache of snapshots taken after init and `source` (default true):
   * a second create with the same source and options starts a VM from that snapshot.
   */
  cache?: boolean;
  /**
   * Outbound HTTP through a host-held allow-list (docs/networking.md): the script gets `fetch`.
   * Off when absent. Options make a {@linkcode Net} the sandbox owns; a `Net` given is shared
   * and stays the caller's. Needs `--allow-net` for the hosts reached.
   */
  net?: NetOptions | Net;
}

/** Options of {@linkcode JsSandbox.create} from a snapshot. */
export interface JsSnapshotSandboxOptions extends JsOutputOptions {
  /** The snapshot to start from. */
  snapshot: JsSnapshot;
  /** The host functions; their names must be those the snapshot's sandbox had. */
  hostFunctions?: Record<string, JsHostFunction>;
  /** Default limit of each call, in ms. */
  timeoutMs?: number;
  /** Path of the native library. */
  library?: string;
  /** Outbound HTTP, as for a new sandbox; required when the snapshot's sandbox had it. */
  net?: NetOptions | Net;
}

/** Where the VM's WASI output goes; moves with the VM to a pool's next handle. */
class Output {
  onLog: JsOutputOptions["onLog"];
  stdout: JsOutputOptions["stdout"];
  stderr: JsOutputOptions["stderr"];
  readonly #partial = { log: "", error: "" };
  readonly #decoders = { log: new TextDecoder(), error: new TextDecoder() };

  constructor(options: JsOutputOptions) {
    this.onLog = options.onLog;
    this.stdout = options.stdout;
    this.stderr = options.stderr;
  }

  /** The WASI `stdout`/`stderr` sinks of the VM, writing here. */
  sinks(): { stdout: (b: Uint8Array) => void; stderr: (b: Uint8Array) => void } {
    return { stdout: (b) => this.write("log", b), stderr: (b) => this.write("error", b) };
  }

  /** The sink for one stream (`undefined`: the host's own stdout/stderr). */
  write(level: "log" | "error", data: Uint8Array): void {
    if (this.onLog) {
      const text = this.#partial[level] + this.#decoders[level].decode(data, { stream: true });
      const lines = text.split("\n");
      this.#partial[level] = lines.pop()!;
      for (const line of lines) this.onLog(level, line);
      return;
    }
    const sink = level === "log" ? this.stdout : this.stderr;
    if (sink) sink(data);
    else if (level === "log") Deno.stdout.writeSync(data);
    else Deno.stderr.writeSync(data);
  }

  /** Hands a line left without its newline to `onLog` (at the end of each call). */
  flush(): void {
    for (const level of ["log", "error"] as const) {
      const rest = this.#partial[level];
      this.#partial[level] = "";
      if (rest && this.onLog) this.onLog(level, rest);
    }
  }
}

function checkOutput(options: JsOutputOptions): void {
  for (const k of ["onLog", "stdout", "stderr"] as const) {
    if (options[k] !== undefined && typeof options[k] !== "function") {
      throw new ArgumentError(`${k} must be a function`);
    }
  }
}

function checkHostFunctions(
  fns: Record<string, JsHostFunction> | undefined,
): Map<string, JsHostFunction> {
  if (fns === undefined) return new Map();
  if (typeof fns !== "object" || fns === null) {
    throw new ArgumentError("hostFunctions must be an object of functions");
  }
  const out = new Map<string, JsHostFunction>();
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
}

function sameNames(a: readonly string[], b: Iterable<string>): boolean {
  const sb = [...b].sort();
  return a.length === sb.length && [...a].sort().every((n, i) => n === sb[i]);
}

/** JSON text of `value`; what JSON cannot write is an ArgumentError naming `what`. */
function toJson(value: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    throw new ArgumentError(`${what} is not JSON: ${(e as Error).message}`, { cause: e });
  }
  if (text === undefined) throw new ArgumentError(`${what} is not JSON`);
  return text;
}

/** A new 64-bit `Math.random` state for a copy, from the host's CSPRNG. */
function freshSeed(): [number, number] {
  const s = crypto.getRandomValues(new Int32Array(2));
  return [s[0], s[1]];
}

const moduleDigests = new ContentMemo<Promise<string>>(4, 16 * MIB);
const defaultCache = new JsSnapshotCache(32);

let handOverTo: (js: JsSandbox) => JsSandbox;
let reseedOf: (js: JsSandbox) => Promise<void>;

/** Internal (`JsSandboxPool`): revokes `js` and returns a new handle on its VM. */
export function handOverJsSandbox(js: JsSandbox): JsSandbox {
  return handOverTo(js);
}

/** Internal (`JsSandboxPool`): gives `Math.random` a fresh seed. */
export function reseedJsSandbox(js: JsSandbox): Promise<void> {
  return reseedOf(js);
}

/**
 * Untrusted JavaScript in its own micro-VM: QuickJS-NG (ES2023) compiled to WebAssembly, run by
 * a `WasmSandbox`. Values cross as JSON; `async` functions and Promises settle within a call;
 * JS exceptions are {@linkcode JsError}s; host functions are `await host.name(...)` in
 * JavaScript. No Node/Deno APIs, no `fetch`, no modules: a classic script and the ECMAScript
 * built-ins, `console`, `Date.now()` (the host's clock) and `Math.random()` (seeded per copy).
 *
 * @example
 * ```ts
 * import { JsSandbox } from "@hl/sandbox";
 * await using js = await JsSandbox.create({
 *   source: "async function handler(req) { return { sum: req.a + req.b, v: await host.kvGet('k') }; }",
 *   hostFunctions: { kvGet: (key: string) => `value of ${key}` },
 *   timeoutMs: 1000,
 * });
 * console.log(await js.call("handler", { a: 1, b: 2 })); // { sum: 3, v: "value of k" }
 * console.log(await js.eval("1 + 2")); // 3
 * ```
 */
export class JsSandbox implements AsyncDisposable {
  readonly #wasm: WasmSandbox;
  readonly #hostFns: Map<string, JsHostFunction>;
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
  /** The `net` option's requests (docs/networking.md); owned when made from options. */
  #net: { net: Net; owned: boolean } | undefined;

  private constructor(
    wasm: WasmSandbox,
    state: {
      hostFns: Map<string, JsHostFunction>;
      names: ReadonlySet<string>;
      key: string;
      timeoutMs: number | undefined;
      output: Output;
      poison?: Error;
      fromCache: boolean;
      /** A pool's hand-over of a live sandbox, not a new one (telemetry: not a load). */
      handOver?: boolean;
    },
  ) {
    this.#wasm = wasm;
    countRuntime("js", this, state.handOver !== true); // active_js_sandboxes (telemetry.ts)
    this.#hostFns = state.hostFns;
    this.#names = state.names;
    this.#key = state.key;
    this.#timeoutMs = state.timeoutMs;
    this.#output = state.output;
    this.#poison = state.poison;
    this.#fromCache = state.fromCache;
  }

  /** A new sandbox (not a hand-over) on `wasm`, with the host functions `hostFns`. */
  static #fresh(
    wasm: WasmSandbox,
    hostFns: Map<string, JsHostFunction>,
    key: string,
    timeoutMs: number | undefined,
    output: Output,
    fromCache: boolean,
  ): JsSandbox {
    const names = new Set(hostFns.keys());
    return new JsSandbox(wasm, { hostFns, names, key, timeoutMs, output, fromCache });
  }

  static {
    handOverTo = (js) => js.#handOver();
    reseedOf = (js) => js.#reseed();
  }

  #handOver(): JsSandbox {
    const next = handOverWasmSandbox(this.#wasm);
    uncountRuntime("js", this);
    return new JsSandbox(next, {
      handOver: true,
      hostFns: this.#hostFns,
      names: this.#names,
      key: this.#key,
      timeoutMs: this.#timeoutMs,
      output: this.#output,
      poison: this.#poison,
      fromCache: this.#fromCache,
    });
  }

  /**
   * Starts a sandbox: from `snapshot`, or with QuickJS initialised and `source` evaluated. The
   * first create of a given source and options compiles nothing new (the module's code is in the
   * artifact cache), runs QuickJS's init and the source, and snapshots the result; later creates
   * with the same source and options start a VM from that snapshot, copy-on-write (`cache:
   * false` does not). A snapshot is not kept when evaluating the source called host functions
   * (its state then depends on the host's answers). An exception in the source is a
   * {@linkcode JsError}.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * const js = await JsSandbox.create({ source: "function double(x) { return 2 * x; }" });
   * console.log(await js.call("double", 21)); // 42
   * await js.dispose();
   * ```
   */
  static async create(options: JsSandboxOptions | JsSnapshotSandboxOptions): Promise<JsSandbox> {
    const { options: withNet, net } = jsNetOptions(options);
    if (!net) return await JsSandbox.#create(options);
    const owned = !(options.net instanceof Net);
    try {
      const js = await JsSandbox.#create(withNet);
      js.#net = { net, owned };
      return js;
    } catch (e) {
      if (owned) await net.dispose();
      throw e;
    }
  }

  /**
   * The counters of this sandbox's network requests (`net` option), or `undefined` without it.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({ net: { allow: ["https://api.example.com/"] } });
   * console.log(js.netStats()); // { requests: 0, refused: 0, failed: 0, bytesOut: 0, bytesIn: 0 }
   * ```
   */
  netStats(): NetStats | undefined {
    return this.#net?.net.stats();
  }

  static async #create(options: JsSandboxOptions | JsSnapshotSandboxOptions): Promise<JsSandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("JsSandbox.create takes an options object");
    }
    checkOutput(options);
    const hostFns = checkHostFunctions(options.hostFunctions);
    checkTimeout(options.timeoutMs, "timeoutMs");
    if ("snapshot" in options && options.snapshot !== undefined) {
      const state = jsStateOf(options.snapshot, true);
      if (!sameNames(state.hostFunctions, hostFns.keys())) {
        throw new SnapshotMismatchError(
          `the snapshot's sandbox had host functions [${state.hostFunctions.join(", ")}]; ` +
            `give exactly those`,
        );
      }
      return await JsSandbox.#fromSnapshot(state.wasm, state.key, hostFns, options, false);
    }
    const o = options as JsSandboxOptions;
    if (o.source !== undefined && typeof o.source !== "string") {
      throw new ArgumentError("source must be a string");
    }
    if (o.cache !== undefined && typeof o.cache !== "boolean") {
      throw new ArgumentError("cache must be a boolean");
    }
    const maxMemory = checkCount(o.maxMemoryBytes, "maxMemoryBytes", 32 * MIB);
    if (maxMemory < MIB) throw new ArgumentError("maxMemoryBytes must be at least 1 MiB");
    const engine = engineNamed(o.engine);
    const bytes = await readSource(o.module ?? findRuntimeModule("quickjs"), "QuickJS module");
    const moduleDigest = await moduleDigests.get(bytes, (b) => digest(b));
    const names = [...hostFns.keys()].sort();
    const key = JSON.stringify({
      module: moduleDigest,
      engine: engine.name,
      maxMemory,
      library: o.library ?? "",
      hostFunctions: names,
      source: o.source ?? null,
    });
    if (o.cache === false) return (await JsSandbox.#cold(bytes, key, hostFns, o, maxMemory)).js;
    const hit = await defaultCache.get(key);
    if (hit) return await JsSandbox.#fromSnapshot(hit, key, hostFns, o, true);
    return await defaultCache.fill(key, async () => {
      const { js, calledHost } = await JsSandbox.#cold(bytes, key, hostFns, o, maxMemory);
      if (calledHost) return { value: js, snapshot: undefined };
      try {
        const snap = await js.#wasm.snapshot();
        await js.#reseed();
        return { value: js, snapshot: snap };
      } catch (e) {
        await js.dispose();
        throw e;
      }
    });
  }

  /** A new VM from a snapshot (the cache's or the caller's), with its own `Math.random` seed. */
  static async #fromSnapshot(
    snapshot: WasmSnapshot,
    key: string,
    hostFns: Map<string, JsHostFunction>,
    options: JsOutputOptions & { timeoutMs?: number; library?: string },
    fromCache: boolean,
  ): Promise<JsSandbox> {
    const output = new Output(options);
    const wasm = await WasmSandbox.create({
      snapshot,
      timeoutMs: options.timeoutMs,
      library: options.library,
      wasi: output.sinks(),
    });
    const js = JsSandbox.#fresh(wasm, hostFns, key, options.timeoutMs, output, fromCache);
    try {
      await js.#reseed();
    } catch (e) {
      await js.dispose();
      throw e;
    }
    return js;
  }

  /** Instantiates the module, initialises QuickJS and evaluates the source. */
  static async #cold(
    bytes: Uint8Array,
    key: string,
    hostFns: Map<string, JsHostFunction>,
    options: JsSandboxOptions,
    maxMemory: number,
  ): Promise<{ js: JsSandbox; calledHost: boolean }> {
    const output = new Output(options);
    const wasmMemory = maxMemory + WASM_MEMORY_HEADROOM;
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
    const js = JsSandbox.#fresh(wasm, hostFns, key, options.timeoutMs, output, false);
    try {
      const init = options.initTimeoutMs ?? 30_000;
      // A module-cache hit is a copy of an instance snapshotted before `_initialize` too.
      await wasm.callWithOptions({ timeoutMs: init }, "_initialize");
      const config = toJson({
        memoryLimit: maxMemory,
        seed: (freshSeed()[0] >>> 0) || 1, // replaced per copy (qjs_seed)
        hostFunctions: [...hostFns.keys()],
      }, "the config");
      const reply = await js.#enter("qjs_init", utf8.encode(config), init);
      if (reply.kind === "error") throw reply.error;
      if (reply.kind !== "value" || reply.value !== undefined) {
        throw js.#poisonWith(
          new ProtocolError("qjs_init answered something other than {} or an error"),
        );
      }
      let calledHost = false;
      if (options.source !== undefined) {
        calledHost = await js.#queued(async () => {
          const r = await js.#exchange("qjs_eval", utf8.encode(options.source!), options.timeoutMs);
          if (r.reply.kind === "error") throw r.reply.error;
          return r.calledHost;
        });
      }
      return { js, calledHost };
    } catch (e) {
      await js.dispose();
      throw e;
    }
  }

  /**
   * Calls the global function at `path` (a name, or a dotted path such as `"lib.fn"`, called
   * with the object before the last dot as `this`) with JSON arguments, and resolves to its
   * JSON result; a returned Promise is awaited inside the sandbox. `undefined` (or a value JSON
   * cannot hold, like a function) comes back as `undefined`. A JS exception is a
   * {@linkcode JsError}; a timeout a `TimeoutError` (the sandbox is poisoned).
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({
   *   source: "var lib = { add(a, b) { return a + b; } };",
   * });
   * console.log(await js.call("lib.add", 2, 3)); // 5
   * ```
   */
  call(path: string, ...args: unknown[]): Promise<unknown> {
    if (typeof path !== "string") {
      return Promise.reject(new ArgumentError("the function path must be a string"));
    }
    let input: string;
    try {
      input = toJson([path, ...args], "an argument");
    } catch (e) {
      return Promise.reject(e);
    }
    this.#net?.net.beginCall(); // the per-call request and byte budgets start again
    return this.#request("qjs_call", input);
  }

  /**
   * Evaluates `code` as a classic script in the global scope and resolves to its completion
   * value as JSON (a Promise is awaited). Declarations persist for later calls.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({});
   * console.log(await js.eval("[1, 2, 3].map((x) => x * 2)")); // [2, 4, 6]
   * console.log(await js.eval("Promise.resolve('later')")); // "later"
   * ```
   */
  eval(code: string): Promise<unknown> {
    if (typeof code !== "string") return Promise.reject(new ArgumentError("code must be a string"));
    this.#net?.net.beginCall();
    return this.#request("qjs_eval", code);
  }

  /**
   * Freezes this sandbox (QuickJS's heap: every global, function and closure) into a
   * {@linkcode JsSnapshot}. Waits for calls in progress.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({ source: "var n = 0; function bump() { return ++n; }" });
   * await js.call("bump");
   * await using snap = await js.snapshot();
   * await using copy = await JsSandbox.create({ snapshot: snap });
   * console.log(await copy.call("bump")); // 2
   * ```
   */
  snapshot(): Promise<JsSnapshot> {
    return this.#queued(async () => {
      this.#usable();
      const wasm = await this.#wasm.snapshot();
      return makeJsSnapshot({ wasm, key: this.#key, hostFunctions: [...this.#names] });
    });
  }

  /**
   * Brings this sandbox back to `snapshot` (of a sandbox with the same source and options, or of
   * this one) and clears poisoning. `Math.random` keeps the snapshot's state (a pool re-seeds).
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({ source: "var n = 0; function bump() { return ++n; }" });
   * await using snap = await js.snapshot();
   * await js.call("bump");
   * await js.restore(snap);
   * console.log(await js.call("bump")); // 1
   * ```
   */
  restore(snapshot: JsSnapshot): Promise<void> {
    const state = jsStateOf(snapshot, true);
    if (state.key !== this.#key) {
      return Promise.reject(
        new SnapshotMismatchError("the snapshot is of a sandbox with another source or options"),
      );
    }
    return this.#queued(async () => {
      await this.#wasm.restore(state.wasm);
      this.#poison = undefined;
    });
  }

  /** Whether a timeout, a trap or a malformed reply made this sandbox unusable (until a restore). */
  get poisoned(): boolean {
    return this.#poison !== undefined || this.#wasm.poisoned;
  }

  /** Whether {@linkcode dispose} has run (or a pool's run that lent it ended). */
  get disposed(): boolean {
    return this.#wasm.disposed;
  }

  /** Whether this sandbox started from the process's snapshot cache. */
  get fromCache(): boolean {
    return this.#fromCache;
  }

  /**
   * Stops the call in progress: it rejects with `CancelledError` and the sandbox is poisoned.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await using js = await JsSandbox.create({});
   * const spin = js.eval("for (;;) {}");
   * setTimeout(() => js.interrupt(), 50);
   * await spin.catch((e) => console.log(e.name)); // CancelledError
   * ```
   */
  interrupt(): void {
    this.#wasm.interrupt();
  }

  /**
   * Destroys the VM. Idempotent; a call in progress is stopped.
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * const js = await JsSandbox.create({});
   * await js.dispose();
   * ```
   */
  dispose(): Promise<void> {
    uncountRuntime("js", this);
    if (this.#net?.owned) void this.#net.net.dispose();
    return this.#wasm.dispose();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /**
   * Releases the snapshots that `JsSandbox.create` keeps per source and options (sandboxes
   * started from them keep working).
   *
   * @example
   * ```ts
   * import { JsSandbox } from "@hl/sandbox";
   * await JsSandbox.clearCache();
   * ```
   */
  static clearCache(): Promise<void> {
    return defaultCache.clear();
  }

  #usable(): void {
    if (this.#wasm.disposed) throw new SandboxDisposedError();
    if (this.#poison) throw new SandboxPoisonedError(this.#poison);
  }

  #queued<T>(op: () => Promise<T>): Promise<T> {
    if (this.#inHost) {
      return Promise.reject(
        new ReentrantCallError("a host function called back into its own JsSandbox"),
      );
    }
    const run = this.#queue.then(op, op);
    this.#queue = run.catch(() => {});
    return run;
  }

  #request(fn: "qjs_eval" | "qjs_call", input: string): Promise<unknown> {
    return this.#queued(async () => {
      const { reply } = await this.#exchange(fn, utf8.encode(input), this.#timeoutMs);
      if (reply.kind === "error") throw reply.error;
      return (reply as { value: unknown }).value;
    });
  }

  /** One request and its host-call rounds, to a value or an error. */
  async #exchange(
    fn: "qjs_eval" | "qjs_call",
    input: Uint8Array,
    timeoutMs: number | undefined,
  ): Promise<{ reply: Reply; calledHost: boolean }> {
    this.#usable();
    const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
    const left = () =>
      deadline === undefined ? undefined : Math.max(1, deadline - performance.now());
    let calledHost = false;
    try {
      let reply = await this.#enter(fn, input, left());
      while (reply.kind === "pending") {
        calledHost = true;
        const answers = await this.#answer(reply.calls);
        reply = await this.#enter("qjs_resume", utf8.encode(answers), left());
      }
      return { reply, calledHost };
    } finally {
      this.#output.flush();
    }
  }

  /** Runs the host functions of one round; returns `qjs_resume`'s input. */
  async #answer(calls: readonly PendingCall[]): Promise<string> {
    this.#inHost = true;
    try {
      const answers = await Promise.all(calls.map(async ({ id, fn, args }) => {
        let value: unknown;
        try {
          value = await this.#hostFns.get(fn)!(...args);
        } catch (e) {
          const err = e instanceof Error ? e : new Error(String(e));
          return JSON.stringify({
            id,
            error: { name: String(err.name), message: String(err.message) },
          });
        }
        try {
          return JSON.stringify({ id, value });
        } catch (e) {
          // A result JSON cannot write (a BigInt, a cycle) is a TypeError in the script.
          const message = `host function ${fn} returned a value that is not JSON: ${
            (e as Error).message
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
  async #enter(fn: string, input: Uint8Array, timeoutMs: number | undefined): Promise<Reply> {
    let out: Uint8Array;
    try {
      out = await this.#wasm.callBytes(fn, input, timeoutMs === undefined ? {} : { timeoutMs });
    } catch (e) {
      // A trap leaves QuickJS in an undefined state (docs/js.md): no call until a restore.
      if (!(e instanceof SandboxDisposedError) && e instanceof Error) this.#poison ??= e;
      throw e;
    }
    try {
      return decodeReply(out, this.#names);
    } catch (e) {
      throw this.#poisonWith(e as Error);
    }
  }

  #poisonWith(e: Error): Error {
    this.#poison ??= e;
    return e;
  }

  async #reseed(): Promise<void> {
    const [lo, hi] = freshSeed();
    await this.#wasm.call("qjs_seed", lo, hi);
  }
}

export { JsSnapshot };
