/**
 * `PySandbox`'s start states on disk (docs/python.md, "Cold create"): their keys, their writes off
 * the create's path, and an interpreter started from one.
 *
 * @module
 */

import { WasmSandbox } from "../wasm/sandbox.ts";
import type { WasmSnapshot } from "../wasm/snapshot.ts";
import type { WasmEngine } from "../wasm/types.ts";
import { checkPreopens } from "../wasm/wasi_path.ts";
import { DEFAULT_ENGINE, engineNamed } from "../runtime/engine.ts";
import { loadPyStartSnapshot, storePyStartSnapshot } from "../start_snapshots.ts";
import { PACKAGE_VERSION } from "../artifacts.ts";
import { DRIVER, TURN_DRIVER, TURN_ENTRY } from "./driver.ts";
import {
  CPYTHON,
  FULL,
  pinnedKnown,
  pinnedModule,
  type PyEntry,
  type PyRuntimeSpec,
} from "./runtimes.ts";
import { Interp } from "./interp.ts";
import type { PySandboxOptions } from "./sandbox.ts";

const utf8 = new TextEncoder();

/** The start-snapshot writes under way in this process, by key (they never reject). */
export const storesInFlight = new Map<string, Promise<void>>();

/**
 * Writes `snap` (with the entry state it needs) as the start state (or, with `base`, the runtime
 * base state) of `key`, off the
 * create's path: `interp`'s dispose waits for it, and a create of the same key in this process
 * waits for it before it looks for the file.
 */
export function storeStart(
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
export interface StartKeys {
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
export async function startKeysOf(
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
export async function fromStartSnapshot(
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
