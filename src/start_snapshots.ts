/**
 * Start snapshots on disk: the snapshot a language-runtime sandbox (`JsSandbox`) takes after its
 * runtime's init and its `source` is kept in memory by the kind's cache, and also written here,
 * beside the compiled artifacts (`artifactCacheDir()`, the directory the Wasm artifact cache
 * trusts), so that a new process's first create with the same options maps it instead of
 * instantiating the module and initialising the runtime again (issue 20's cold create; docs/js.md
 * "Cold start"). The files are snapshot files (docs/snapshot-format.md); the name is a SHA-256 of
 * the library version, the kind's cache key (module digest, engine, memory limit, library,
 * host function names, source) and the identity of the runtime guest's file (its size, mtime and
 * inode), so a rebuilt guest or another version is a miss, and a file from another library version
 * or CPU that got there anyway is refused by the format's own checks and removed. At most
 * {@linkcode MAX_START_SNAPSHOTS} files and {@linkcode MAX_START_SNAPSHOT_BYTES} are kept, least
 * recently used out.
 *
 * Internal: the runtime layer calls {@linkcode loadStartSnapshot} on a cache miss and
 * {@linkcode storeStartSnapshot} after taking a start snapshot.
 *
 * @module
 */

import { findGuest, PACKAGE_VERSION } from "./artifacts.ts";
import { engineNamed } from "./runtime/engine.ts";
import { sha256, SnapshotFormatError } from "./snapshot.ts";
import {
  type CodeImageMemo,
  loadJsSnapshot,
  loadWasmSnapshot,
  readSnapshotDescription,
  saveJsSnapshot,
  saveSnapshotFile,
} from "./snapshot_file.ts";
import { jsStateOf, makeJsSnapshot } from "./js/snapshot.ts";
import { artifactCacheDir, untrustedCacheDir } from "./wasm/compiler.ts";
import { makeWasmSnapshot, type WasmSnapshot, wasmStateOf } from "./wasm/snapshot.ts";
import type { WasmEngine } from "./wasm/types.ts";
import type { PreopenSpec } from "./wasm/wasi_path.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** Counters of the start snapshots on disk, for this process. */
export interface StartSnapshotStats {
  /** Creates that started from a file. */
  diskHits: number;
  /** Lookups that found no file. */
  diskMisses: number;
  /** Files written. */
  diskWrites: number;
  /** Files refused (another version or CPU, corrupt) and removed. */
  diskRefused: number;
  /**
   * `PySandbox` creates that started from a runtime base state (the interpreter started, no
   * `setup` yet: {@linkcode loadPyStartSnapshot} with `base`) and ran only their `setup`.
   * Counted apart from `diskHits`, which counts states that needed no `setup` at all.
   */
  pyBaseHits: number;
  /** Runtime base states written (`storePyStartSnapshot` with `base`), apart from `diskWrites`. */
  pyBaseWrites: number;
  /**
   * Bytes of start files' code images (JavaScript's and Python's) read to check their CRC-32 (a
   * load whose file was not remembered as checked: {@linkcode loadStartSnapshot},
   * {@linkcode loadPyStartSnapshot}).
   */
  codeImageBytesRead: number;
  /** Start-file loads that skipped that read: this very file was checked before. */
  codeImageChecksSkipped: number;
}

const counters: StartSnapshotStats = {
  diskHits: 0,
  diskMisses: 0,
  diskWrites: 0,
  diskRefused: 0,
  pyBaseHits: 0,
  pyBaseWrites: 0,
  codeImageBytesRead: 0,
  codeImageChecksSkipped: 0,
};

/**
 * The counters (a copy).
 *
 * @example
 * ```ts
 * import { startSnapshotStats } from "./start_snapshots.ts";
 * console.log(startSnapshotStats().diskHits);
 * ```
 */
export function startSnapshotStats(): StartSnapshotStats {
  return { ...counters };
}

/**
 * Whether start snapshots may be written at all in this process: not turned off
 * (`HL_START_SNAPSHOTS=0`) and a cache directory is known. (A write may still fail: best effort.)
 *
 * @example
 * ```ts
 * import { startSnapshotsOn } from "./start_snapshots.ts";
 * console.log(startSnapshotsOn());
 * ```
 */
export function startSnapshotsOn(): boolean {
  return env("HL_START_SNAPSHOTS") !== "0" && artifactCacheDir() !== undefined;
}

/** Directories found trustworthy (or not) in this process, with the reason. */
const trusted = new Map<string, Promise<string | undefined>>();

/** Most file-name digests remembered ({@linkcode nameDigest}); the oldest go first. */
const MAX_NAME_DIGESTS = 64;
/** File-name digests of this process, by the text hashed: a repeated create hashes nothing. */
const nameDigests = new Map<string, Promise<string>>();

/**
 * The SHA-256 (hex) that names the file of `text` (a start snapshot's or a module digest memo's
 * key), computed once per process: each cold create needs two (the module digest memo's name, then
 * the start snapshot's), each an asynchronous WebCrypto call. The names stay SHA-256s of the same
 * text, so files already on disk keep their names. A failed digest is not remembered.
 */
const nameDigest = (function nameDigest(text: string): Promise<string> {
  const known = nameDigests.get(text);
  if (known !== undefined) return known;
  if (nameDigests.size >= MAX_NAME_DIGESTS) {
    nameDigests.delete(nameDigests.keys().next().value!);
  }
  const name = sha256(new TextEncoder().encode(text));
  nameDigests.set(text, name);
  name.catch(() => {
    if (nameDigests.get(text) === name) nameDigests.delete(text);
  });
  return name;
}).bind(undefined); // Eager: see the note after the imports.

const env = (function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The file for `key`, or undefined when there is no usable cache directory or guest. `prefix`
 * names the family (`start-`: the runtime layer's, `pystart-`: `PySandbox`'s), each with its own
 * eviction budget.
 */
const fileFor = (async function fileFor(
  key: string,
  engine: WasmEngine | undefined,
  prefix = "start-",
): Promise<string | undefined> {
  if (env("HL_START_SNAPSHOTS") === "0") return undefined;
  const dir = artifactCacheDir();
  if (dir === undefined) return undefined;
  let guest: string;
  try {
    const info = Deno.statSync(findGuest(engineNamed(engine).guest));
    guest = `${info.size}-${info.mtime?.getTime()}-${info.ino}`;
  } catch {
    return undefined;
  }
  const name = await nameDigest(JSON.stringify([PACKAGE_VERSION, key, guest]));
  return `${dir}/${prefix}${name}.hlsnap`;
}).bind(undefined); // Eager: see the note after the imports.

const parentOf = (function parentOf(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Why `dir` cannot be trusted, or undefined: the artifact cache's rule (`untrustedCacheDir` in
 * `wasm/compiler.ts`: every existing directory above it, as named and with links resolved, is
 * this user's or root's, and one writable by everyone is sticky; the directory itself is this
 * user's and writable by nobody else), checked with synchronous `stat`s: a dozen of them cost
 * less than one asynchronous round trip, and this is on the cold-create path. Without
 * `--allow-sys` (no `Deno.uid()`) it defers to the asynchronous check.
 */
const untrustedSync = (function untrustedSync(dir: string): Promise<string | undefined> {
  let uid: number | null;
  try {
    uid = Deno.uid();
  } catch {
    uid = null;
  }
  if (uid === null) return untrustedCacheDir(dir);
  try {
    // Each path is stat'ed once: what the walk up `dir` found is checked as it was found, and
    // only the resolved path's own ancestors not already seen are stat'ed anew.
    const paths = new Map<string, Deno.FileInfo | undefined>();
    let existing: string | undefined;
    for (let p = dir;; p = parentOf(p)) {
      try {
        paths.set(p, Deno.statSync(p));
        existing ??= p;
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
      }
      if (p === "/") break;
    }
    if (existing === undefined) return Promise.resolve(`no directory above ${dir} exists`);
    for (let p = Deno.realPathSync(existing);; p = parentOf(p)) {
      if (!paths.has(p)) paths.set(p, undefined);
      if (p === "/") break;
    }
    for (const [p, seen] of paths) {
      const info = seen ?? Deno.statSync(p);
      const mode = info.mode ?? 0;
      if (p === dir) {
        if (info.uid !== uid || (mode & 0o022) !== 0) {
          return Promise.resolve(`${p} is not this user's own, or others may write to it`);
        }
        continue;
      }
      if (info.uid !== uid && info.uid !== 0) {
        return Promise.resolve(`${p} belongs to another user (${info.uid})`);
      }
      if ((mode & 0o002) !== 0 && (mode & 0o1000) === 0) {
        return Promise.resolve(`${p} is writable by every user and not sticky`);
      }
    }
    return Promise.resolve(undefined);
  } catch (e) {
    return Promise.resolve((e as Error).message);
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Whether `file` in `dir` may be used: the directory passes {@linkcode untrustedSync} and the
 * file, if it exists, is a regular file (a FIFO would block a read forever) not writable by group
 * or others.
 */
const usable = (async function usable(dir: string, file: string): Promise<boolean> {
  let why = trusted.get(dir);
  if (!why) trusted.set(dir, why = untrustedSync(dir));
  if (await why !== undefined) return false;
  try {
    const info = Deno.statSync(file);
    return info.isFile && info.mode !== null && (info.mode & 0o022) === 0;
  } catch {
    return true; // Not there (yet).
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Most start snapshots kept on disk, all keys together (each holds the engine's code image, ~7 MB
 * for QuickJS with wasmtime): past it the least recently used go (a hit refreshes a file's mtime).
 */
export const MAX_START_SNAPSHOTS = 16;

/**
 * Most bytes of start snapshots kept on disk (a CPython start state holds its ~62 MB code image):
 * past it the least recently used go, though the newest file always stays.
 */
export const MAX_START_SNAPSHOT_BYTES = 512 * 1024 * 1024;

/**
 * Most Python start snapshots (`PySandbox`, `pystart-*.hlsnap`) kept on disk: each holds its
 * interpreter's code image (62 MB for `cpython`, 423 MB for `full`) and its memory, so the byte
 * bound below usually binds first (~27 `cpython` states, 4 `full` ones). One file per distinct
 * `setup`: 8 were pushed out by a test run's setups within minutes here.
 */
export const MAX_PY_START_SNAPSHOTS = 32;

/**
 * Most bytes of Python start snapshots kept on disk: one `full` start state is ~0.5-0.6 GB (its
 * 423 MB code image and the interpreter's memory), so the JavaScript budget would evict it
 * whenever another kind is stored. Past it the least recently used go; the newest always stays.
 */
export const MAX_PY_START_SNAPSHOT_BYTES = 2048 * 1024 * 1024;

/**
 * Removes the least recently used start snapshots (`start-*.hlsnap`) of `dir` beyond
 * {@linkcode MAX_START_SNAPSHOTS} files or {@linkcode MAX_START_SNAPSHOT_BYTES}, Python's
 * (`pystart-*.hlsnap`) beyond {@linkcode MAX_PY_START_SNAPSHOTS} or
 * {@linkcode MAX_PY_START_SNAPSHOT_BYTES}, module digests (`module-*.digest`) beyond
 * {@linkcode MAX_START_SNAPSHOTS}, and the memos of start files' code-image checks
 * (`start-*.hlsnap.verified`, `pystart-*.hlsnap.verified`) beyond the same counts; a start file
 * removed takes its memo with it.
 */
export function evictOldest(
  dir: string,
  maxBytes: number = MAX_START_SNAPSHOT_BYTES,
  maxPyBytes: number = MAX_PY_START_SNAPSHOT_BYTES,
): void {
  for (
    const [prefix, suffix, bytes, count] of [
      ["start-", ".hlsnap", maxBytes, MAX_START_SNAPSHOTS],
      ["pystart-", ".hlsnap", maxPyBytes, MAX_PY_START_SNAPSHOTS],
      ["module-", ".digest", Infinity, MAX_START_SNAPSHOTS],
      ["pystart-", VERIFIED_SUFFIX, Infinity, MAX_PY_START_SNAPSHOTS],
      ["start-", VERIFIED_SUFFIX, Infinity, MAX_START_SNAPSHOTS],
    ] as const
  ) {
    const files: { path: string; mtime: number; size: number }[] = [];
    for (const e of Deno.readDirSync(dir)) {
      if (!e.isFile || !e.name.startsWith(prefix) || !e.name.endsWith(suffix)) continue;
      try {
        const info = Deno.statSync(`${dir}/${e.name}`);
        files.push({
          path: `${dir}/${e.name}`,
          mtime: info.mtime?.getTime() ?? 0,
          size: info.size,
        });
      } catch {
        // Removed meanwhile.
      }
    }
    files.sort((a, b) => b.mtime - a.mtime); // newest first
    let total = 0;
    files.forEach((f, i) => {
      total += f.size;
      if (i === 0 || (i < count && total <= bytes)) return;
      try {
        Deno.removeSync(f.path);
        if (suffix === ".hlsnap") Deno.removeSync(memoOf(f.path));
      } catch {
        // Removed meanwhile (or never remembered), or not ours to remove: the next store tries
        // again.
      }
    });
  }
}

const dirOf = (function dirOf(file: string): string {
  return file.slice(0, file.lastIndexOf("/"));
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A start file served a create: counted (a Python base state apart), and marked most recently
 * used (evictOldest) at most once an hour (setting the times moves the ctime, which forgets the
 * file's remembered code-image check: rememberedCheck).
 */
const countHit = (function countHit(file: string, base = false): void {
  if (base) counters.pyBaseHits++;
  else counters.diskHits++;
  try {
    const now = new Date();
    // Setting the times sets the ctime too, which forgets the file's remembered code-image
    // check (rememberedCheck): a start file's mtime is refreshed at most once an hour.
    if (now.getTime() - (Deno.statSync(file).mtime?.getTime() ?? 0) < MTIME_STEP) {
      return;
    }
    Deno.utimeSync(file, now, now);
  } catch {
    // A read-only cache still serves.
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A start file that failed to load: one that fails its checks is refused and removed (the cold
 * path rebuilds it); one that is not there or cannot be read now (an OS error, a resource limit)
 * is a miss and stays. A disk cache never fails a create the cold path could serve.
 */
async function countFailure(file: string, e: unknown): Promise<void> {
  if (e instanceof SnapshotFormatError && e.reason !== "io") {
    counters.diskRefused++;
    await Deno.remove(file).catch(() => {});
    await Deno.remove(memoOf(file)).catch(() => {});
  } else {
    counters.diskMisses++;
  }
}

/**
 * The start snapshot of `key` from disk, or undefined (no file, no cache directory, a refused
 * file: removed). The snapshot is new: the caller owns it (the kind's cache keeps it).
 */
export const loadStartSnapshot = (async function loadStartSnapshot(
  key: string,
  engine: WasmEngine | undefined,
  library: string | undefined,
): Promise<WasmSnapshot | undefined> {
  const file = await fileFor(key, engine);
  if (file === undefined || !await usable(dirOf(file), file)) return undefined;
  try {
    const js = await checkedOnce(file, library, loadJsSnapshot);
    const state = jsStateOf(js, true);
    if (state.key !== key) {
      await state.wasm.dispose();
      throw new SnapshotFormatError("format", `${file} holds the start state of another key`);
    }
    countHit(file);
    return state.wasm;
  } catch (e) {
    await countFailure(file, e);
    return undefined;
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Writes `snap`, the start snapshot of `key` with the host function names `hostFunctions`, to
 * disk. Best effort: no cache directory, a directory that is not trusted, a read-only file
 * system or a full disk leave it in memory only.
 */
export async function storeStartSnapshot(
  key: string,
  engine: WasmEngine | undefined,
  snap: WasmSnapshot,
  hostFunctions: readonly string[],
): Promise<void> {
  const file = await fileFor(key, engine);
  if (file === undefined) return;
  try {
    await Deno.mkdir(dirOf(file), { recursive: true, mode: 0o700 });
    if (!await usable(dirOf(file), file)) return;
    await saveJsSnapshot(makeJsSnapshot({ wasm: snap, key, hostFunctions }), file, false);
    counters.diskWrites++;
    evictOldest(dirOf(file));
  } catch {
    // Memory only.
  }
}

/**
 * A Python start state from disk (`PySandbox`, src/py/sandbox.ts): the Wasm snapshot taken after
 * the interpreter's start and `setup`, with `preopens` (the runtime's own directories, named by
 * the caller's code, never by the file) and what `PySandbox` keeps beside it (`extra`, checked by
 * the caller), or undefined: no file, no cache directory, or a refused file (another version or
 * CPU, truncated, changed, another key: removed, and the caller's cold path rebuilds it). The
 * snapshot is new: the caller owns it. With `base`, `key` names a runtime base state (the
 * interpreter started, before any `setup`: docs/python.md, "The runtime base state"): the same
 * files, format, trust rule and budget, counted as `pyBaseHits`.
 */
export async function loadPyStartSnapshot(
  key: string,
  engine: WasmEngine | undefined,
  library: string | undefined,
  preopens: readonly PreopenSpec[],
  base = false,
): Promise<{ wasm: WasmSnapshot; extra: unknown } | undefined> {
  const file = await fileFor(key, engine, "pystart-");
  if (file === undefined || !await usable(dirOf(file), file)) return undefined;
  try {
    // The description is small (a few KiB: read, SHA-256 checked, parsed); the pages are read
    // (memory) or mapped (code) by the cdylib with their CRC-32s checked.
    const { description } = await readSnapshotDescription(file);
    const py = (description.extra as { py?: { key?: unknown; state?: unknown } } | undefined)?.py;
    if (typeof py !== "object" || py === null || py.key !== key) {
      throw new SnapshotFormatError("format", `${file} holds the start state of another key`);
    }
    const loaded = await checkedOnce(file, library, loadWasmSnapshot);
    // The same native snapshot, with the runtime's preopens (a file names none).
    const wasm = makeWasmSnapshot({ ...wasmStateOf(loaded, true), preopens: [...preopens] });
    countHit(file, base);
    return { wasm, extra: py.state };
  } catch (e) {
    await countFailure(file, e);
    return undefined;
  }
}

/** The memo beside a start file that its code image's CRC-32 was checked. */
const VERIFIED_SUFFIX = ".hlsnap.verified";
/** A start file's mtime (its LRU mark) is refreshed at most this often (ms). */
const MTIME_STEP = 3600_000;

/** The memo of the start file `file` (`….hlsnap`): `….hlsnap.verified`. */
const memoOf = (function memoOf(file: string): string {
  return file.slice(0, -".hlsnap".length) + VERIFIED_SUFFIX;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * `load` (`loadJsSnapshot` or `loadWasmSnapshot`) of the start file `file` with its code image's
 * CRC-32 read only if no earlier load checked this very file (rememberedCheck); a load that read
 * it leaves the memo for the next (rememberCheck). Counted: `codeImageBytesRead`,
 * `codeImageChecksSkipped`. (No closure: each arrow would be one more function compiled lazily on
 * a fresh create.)
 */
const checkedOnce = (async function checkedOnce<T>(
  file: string,
  library: string | undefined,
  load: (path: string, options: { library?: string }, memo: CodeImageMemo) => Promise<T>,
): Promise<T> {
  const memo: CodeImageMemo = { identity: rememberedCheck(file), bytesRead: 0 };
  const loaded = await load(file, { library }, memo);
  if (memo.bytesRead > 0) {
    counters.codeImageBytesRead += memo.bytesRead;
    rememberCheck(file, memo.identity);
  } else if (memo.identity[0] === 1n) {
    counters.codeImageChecksSkipped++;
  }
  return loaded;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The identity words (`CodeImageMemo`) of the start file `file` as an earlier process checked its
 * code image's CRC-32, from `<file>.verified` (its directory's trust was checked by the caller:
 * the same rule as the start file's), or `[0, …]`: no memo, or one that is not a regular file
 * private to its owner's writes, or malformed. The cdylib compares the words with the open
 * file's own `fstat` (device, inode, size, ctime to the nanosecond): any other file, or this one
 * written, truncated or touched since, is read and checked again.
 */
const rememberedCheck = (function rememberedCheck(file: string): BigUint64Array {
  const words = new BigUint64Array(6);
  const memo = memoOf(file);
  try {
    const info = Deno.statSync(memo);
    if (!info.isFile || info.mode === null || (info.mode & 0o022) !== 0 || info.size > 256) {
      return words;
    }
    const m = /^v1( [0-9]{1,20}){5}\n$/.exec(Deno.readTextFileSync(memo));
    if (m === null) return words;
    const parts = m[0].trim().split(" ").slice(1).map(BigInt);
    // A loop, not an arrow: this runs on a fresh JS create (docs/js.md "Eager compilation").
    for (const p of parts) if (p > 0xffff_ffff_ffff_ffffn) return words;
    words.set([1n, ...parts]);
  } catch {
    // No memo: the code image is read and checked.
  }
  return words;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Leaves `<file>.verified` (written whole: a temporary file renamed over it) with the identity
 * that the cdylib returned after checking the code image of `file`. Best effort.
 */
function rememberCheck(file: string, identity: BigUint64Array): void {
  if (identity[0] !== 1n) return;
  const memo = memoOf(file);
  const tmp = `${memo}.${crypto.randomUUID()}.tmp`;
  try {
    Deno.writeTextFileSync(tmp, `v1 ${[...identity.subarray(1)].join(" ")}\n`, { mode: 0o600 });
    Deno.renameSync(tmp, memo);
  } catch {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Never written.
    }
  }
}

/**
 * Writes `snap`, the Python start state of `key`, with `state` (JSON: what `PySandbox` keeps
 * beside it), to disk. The runtime's preopens are left out of the file (they are the runtime's,
 * named again by {@linkcode loadPyStartSnapshot}'s caller). Best effort, as
 * {@linkcode storeStartSnapshot}; no `fsync` (a file torn by a crash fails its checks and is
 * rewritten). With `base`, a runtime base state (counted as `pyBaseWrites`).
 */
export async function storePyStartSnapshot(
  key: string,
  engine: WasmEngine | undefined,
  snap: WasmSnapshot,
  state: unknown,
  base = false,
): Promise<void> {
  const file = await fileFor(key, engine, "pystart-");
  if (file === undefined) return;
  try {
    await Deno.mkdir(dirOf(file), { recursive: true, mode: 0o700 });
    if (!await usable(dirOf(file), file)) return;
    const s = wasmStateOf(snap, true);
    const extra = {
      key: s.key,
      imports: [...s.imports],
      exports: [...s.exports],
      wasiOn: s.wasiOn,
      wasiRegistered: s.wasiRegistered,
      py: { key, state },
    };
    await saveSnapshotFile(s.native, file, "wasm", extra, undefined, false);
    if (base) counters.pyBaseWrites++;
    else counters.diskWrites++;
    evictOldest(dirOf(file));
  } catch {
    // Memory only.
  }
}

/**
 * The memo file of the module file `path`'s digest, by the file's identity; undefined if none.
 * With `checkDir` (a reader), the directory's trust is checked too, as {@linkcode usable} would.
 */
const digestFileFor =
  (async function digestFileFor(path: string, checkDir = false): Promise<string | undefined> {
    if (env("HL_START_SNAPSHOTS") === "0") return undefined;
    const dir = artifactCacheDir();
    if (dir === undefined) return undefined;
    let identity: string;
    try {
      const real = Deno.realPathSync(path);
      const i = Deno.statSync(real);
      if (!i.isFile) return undefined;
      identity = JSON.stringify([
        PACKAGE_VERSION,
        real,
        i.dev,
        i.ino,
        i.size,
        i.mtime?.getTime(),
        i.ctime?.getTime(),
      ]);
    } catch {
      return undefined;
    }
    // The directory's trust is checked (and remembered) while the name's digest runs on Deno's
    // blocking thread: both are needed before the memo is read.
    const name = nameDigest(identity);
    if (checkDir && !trusted.has(dir)) trusted.set(dir, untrustedSync(dir));
    return `${dir}/module-${await name}.digest`;
  }).bind(undefined); // Eager: see the note after the imports.

/**
 * The SHA-256 of the module file `module` (a path), as {@linkcode rememberModuleDigest} left it on
 * disk for this file's identity (real path, device, inode, size, mtime, ctime), or undefined
 * (another source, no memo, an untrusted directory). Saves a cold create reading and hashing the
 * 1.1 MB QuickJS module only to name its cache key (docs/js.md, "Cold start"). A rewrite of the
 * file changes its mtime (ms) and ctime (Deno reports whole seconds), so its identity: only a
 * rewrite to the same size whose mtime is then set back, within the same second, would keep the
 * old digest.
 */
export const knownModuleDigest = (async function knownModuleDigest(
  module: Uint8Array | string | URL,
): Promise<string | undefined> {
  if (typeof module !== "string") return undefined;
  const file = await digestFileFor(module, true);
  if (file === undefined) return undefined;
  const dir = dirOf(file);
  let why = trusted.get(dir);
  if (!why) trusted.set(dir, why = untrustedSync(dir));
  if (await why !== undefined) return undefined;
  // One stat for what `usable` checks (a regular file, not writable by group or others) and the
  // size (read nothing larger than a digest), then one read (one op: open, read, close).
  try {
    const info = Deno.statSync(file);
    if (!info.isFile || info.mode === null || (info.mode & 0o022) !== 0 || info.size !== 64) {
      return undefined;
    }
    const text = Deno.readTextFileSync(file);
    return /^[0-9a-f]{64}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}).bind(undefined); // Eager: see the note after the imports.

/** Leaves `digest` (the SHA-256 of the module file `module`) for {@linkcode knownModuleDigest}. */
export async function rememberModuleDigest(
  module: Uint8Array | string | URL,
  digest: string,
): Promise<void> {
  if (typeof module !== "string" || !/^[0-9a-f]{64}$/.test(digest)) return;
  const file = await digestFileFor(module);
  if (file === undefined) return;
  const tmp = `${file}.${crypto.randomUUID()}.tmp`;
  try {
    Deno.mkdirSync(dirOf(file), { recursive: true, mode: 0o700 });
    if (!await usable(dirOf(file), file)) return;
    Deno.writeTextFileSync(tmp, digest, { mode: 0o600 });
    Deno.renameSync(tmp, file);
    evictOldest(dirOf(file));
  } catch {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Never written.
    }
  }
}
