/**
 * `JsSandbox`: untrusted JavaScript in its own micro-VM. QuickJS-NG compiled to a Wasm reactor
 * (`target/runtimes/quickjs.wasm`, docs/js.md) runs in a `WasmSandbox` on either engine. The
 * JavaScript kind of the language-runtime layer (`runtime/language.ts`, docs/design.md "Runtime
 * layer"): the layer speaks the driver's ABI (JSON in, JSON replies, host calls as pending/resume
 * rounds), keeps the cache of snapshots taken after QuickJS's init and the `source`, and turns
 * replies into values, errors or, for anything malformed, a `ProtocolError` that poisons the
 * sandbox; this module says what is JavaScript's ({@linkcode jsKind}) and documents the API.
 *
 * @module
 */

import type { JsError } from "../errors.ts";
import { createRuntime, type LanguageKind, type RuntimeSandbox } from "../runtime/language.ts";
import type { WasmEngine } from "../wasm/types.ts";
import { jsError } from "./reply.ts";
import { JsSnapshot, jsSnapshots } from "./snapshot.ts";
import { jsSnapshotCache } from "./cache.ts";
import { jsNetOptions, Net, type NetOptions, type NetStats } from "../net/mod.ts";

const MIB = 1 << 20;

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
  /**
   * Host functions, callable from JavaScript as `await host.name(...args)`; JSON and `Uint8Array`
   * both ways.
   */
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

/**
 * Untrusted JavaScript in its own micro-VM: QuickJS-NG (ES2023) compiled to WebAssembly, run by
 * a `WasmSandbox`. Values cross as JSON, plus `Uint8Array`; `async` functions and Promises settle
 * within a call; JS exceptions are {@linkcode JsError}s; host functions are `await host.name(...)`
 * in JavaScript. No Node/Deno APIs, no `fetch` (unless `net` allows it), no modules: a classic
 * script and the ECMAScript built-ins, `console`, `Date.now()` (the host's clock) and
 * `Math.random()` (seeded per copy).
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
  /** The runtime layer's core (`runtime/language.ts`): the VM, calls, snapshots, hand-over. */
  readonly #core: RuntimeSandbox<JsError>;
  /** The `net` option's requests (docs/networking.md); owned when made from options. */
  #net: { net: Net; owned: boolean } | undefined;
  readonly #beginCall = (): void => this.#net?.net.beginCall();

  private constructor(core: RuntimeSandbox<JsError>) {
    this.#core = core;
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
  static create(options: JsSandboxOptions | JsSnapshotSandboxOptions): Promise<JsSandbox> {
    return JsSandbox.#create(options);
  }

  // Compiled with the module (docs/js.md "Eager compilation"): V8 compiles a method lazily, in
  // every new process; a parenthesised function kept by `.bind` is in Deno's code cache.
  static readonly #create = (async function jsSandboxCreate(
    options: JsSandboxOptions | JsSnapshotSandboxOptions,
  ): Promise<JsSandbox> {
    const { options: withNet, net } = jsNetOptions(options);
    if (!net) return await createRuntime(jsKind, options);
    const owned = !(options.net instanceof Net);
    try {
      const js = await createRuntime(jsKind, withNet);
      js.#net = { net, owned };
      return js;
    } catch (e) {
      if (owned) await net.dispose();
      throw e;
    }
  }).bind(undefined);

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

  /**
   * Calls the global function at `path` (a name, or a dotted path such as `"lib.fn"`, called
   * with the object before the last dot as `this`) with JSON arguments, and resolves to its
   * JSON result (a `Uint8Array` crosses as one, both ways: docs/js.md "Values"); a returned
   * Promise is awaited inside the sandbox. `undefined` (or a value JSON cannot hold, like a
   * function) comes back as `undefined`. A JS exception is a
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
    // The per-call request and byte budgets start again when this call runs (calls queue).
    return this.#core.call(path, args, this.#beginCall);
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
    return this.#core.eval(code, this.#beginCall);
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
  async snapshot(): Promise<JsSnapshot> {
    return jsSnapshots.wrap(await this.#core.snapshot());
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
    return this.#core.restore(jsSnapshots.of(snapshot, true));
  }

  /** Whether a timeout, a trap or a malformed reply made this sandbox unusable (until a restore). */
  get poisoned(): boolean {
    return this.#core.poisoned;
  }

  /** Whether {@linkcode dispose} has run (or a pool's run that lent it ended). */
  get disposed(): boolean {
    return this.#core.disposed;
  }

  /** Whether this sandbox started from the process's snapshot cache. */
  get fromCache(): boolean {
    return this.#core.fromCache;
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
    this.#core.interrupt();
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
    if (this.#net?.owned) void this.#net.net.dispose();
    return this.#core.dispose();
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
    return jsSnapshotCache.clear();
  }
}

/**
 * The JavaScript kind of the runtime layer (internal: `JsSandbox`, `JsSandboxPool`): QuickJS-NG
 * and its driver (`runtimes/quickjs/driver.c`, docs/js.md).
 */
export const jsKind: LanguageKind<JsSandbox, JsSnapshot, JsError> = {
  label: "JsSandbox",
  telemetry: "js",
  module: "quickjs",
  moduleLabel: "QuickJS module",
  exports: {
    init: "qjs_init",
    eval: "qjs_eval",
    call: "qjs_call",
    resume: "qjs_resume",
    seed: "qjs_seed",
  },
  defaultMaxMemory: 32 * MIB,
  // Room in the Wasm memory beyond QuickJS's own limit: the 1 MiB C stack, static data, malloc's slack.
  memoryHeadroom: 16 * MIB,
  error: jsError,
  cache: jsSnapshotCache,
  snapshots: jsSnapshots,
  wrap: (core) => new (JsSandbox as unknown as new (c: RuntimeSandbox<JsError>) => JsSandbox)(core),
};

export { JsSnapshot };
