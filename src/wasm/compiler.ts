/**
 * The wasmtime engine's host side: the Cranelift compiler library (`compiler/`, through
 * `src/ffi/compiler.ts`, opened on first use only) and the artifact cache (in memory, and on disk under
 * {@linkcode artifactCacheDir}). docs/design.md, "Wasm engines" and "Artifact cache".
 *
 * A module is compiled in the `hl-wasm-compile` child process (seccomp, rlimits, killed at the
 * deadline; docs/security.md, "The isolated compile"), never in this process; the library waits
 * for it on Deno's blocking thread pool, off the event loop. What comes back is checked
 * (`hlc_check`: wasmtime's header and engine section, nothing loaded) before any VM sees it.
 *
 * A cache entry is keyed by the module's SHA-256, the engine hash (wasmtime's
 * `precompile_compatibility_hash` of the exact engine settings, our settings version, fuel on/off,
 * the CPU features compiled for: {@linkcode cpuFeatureFlags}) and nothing else: the artifact does
 * not depend on any other option. On disk an entry is
 * `HLWA` + version + SHA-256 of the module + engine hash + SHA-256 of the artifact + the
 * artifact; loading checks that the file was made from these module bytes for this engine, the
 * artifact's digest, and then `hlc_check`; a refused file is a {@linkcode WasmArtifactError} and
 * is removed. The directory is used only when it and every directory above it are safe from
 * other users ({@linkcode untrustedCacheDir}); otherwise artifacts stay in memory.
 *
 * @module
 */

import { findCompileChild } from "../artifacts.ts";
import { ArgumentError, SandboxError, TimeoutError } from "../errors.ts";
import {
  compilerCheck,
  compilerCompile,
  compilerCompileIsolated,
  compilerEngineHash,
  ERR_ARTIFACT,
  ERR_CHILD,
  ERR_MODULE,
  ERR_TIMEOUT,
  FLAG_CPU_FEATURES,
  FLAG_FUEL,
} from "../ffi/compiler.ts";
import {
  CPU_GRANT,
  hypervisorInfo,
  type MemorySnapshotHandle,
  snapshotFromBytes,
} from "../ffi/vm.ts";
import { digest, sha256 } from "../snapshot.ts";
import { WasmArtifactError, WasmModuleError } from "./types.ts";
import { artifactMemoryHit, traceCompile } from "../telemetry.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The default deadline of a compile (as `initTimeoutMs`'s default). */
export const DEFAULT_COMPILE_TIMEOUT_MS = 30_000;

/**
 * How far a compile has come, as the compiler process reports it (wasmtime logs each function
 * it translates to Cranelift IR and each one it finishes compiling).
 */
export interface CompileProgress {
  /** Functions of the module translated to Cranelift IR so far. */
  translated: number;
  /** Functions compiled to machine code so far (trampolines included, so it may pass `functions`). */
  compiled: number;
  /** Function bodies in the module (0: unknown). */
  functions: number;
  /** The share of the functions done, 0 to 1 (1 only once the artifact is there). */
  fraction: number;
  /** Milliseconds since the compile started. */
  elapsedMs: number;
  /** Milliseconds still to go at the rate so far (undefined until 2 % is done). */
  etaMs?: number;
}

/** How often a compile's progress is read and reported (ms). */
const PROGRESS_EVERY_MS = 250;

/**
 * The progress to report from the three counters the compiler library stores. wasmtime
 * translates and compiles each function in turn (the two counts move together; `compiled` also
 * counts trampolines), so the share done is the share translated, held below 1 until the
 * compile has returned (what follows the last function, linking and writing the artifact, is not
 * counted).
 */
export function progressOf(
  translated: number,
  compiled: number,
  functions: number,
  elapsedMs: number,
  finished = false,
): CompileProgress {
  const fraction = finished ? 1 : functions > 0 ? Math.min(0.99, translated / functions) : 0;
  const etaMs = finished
    ? 0
    : fraction >= 0.02
    ? Math.round(elapsedMs * (1 - fraction) / fraction)
    : undefined;
  return { translated, compiled, functions, fraction, elapsedMs, etaMs };
}

/** What the tests make the compiler process do (`""`: compile). */
export type CompileFault = "" | "crash" | "loop" | "alloc" | "syscall";

let compileFault: CompileFault = "";

/**
 * Test-only switch, not part of the package's API: makes every following compile's child
 * process crash, spin, allocate without bound or make a forbidden system call after it has read
 * the module (tests/kvm/wasmtime_isolate.test.ts). `""` restores the compile.
 */
export function setCompileFaultForTests(fault: CompileFault): void {
  compileFault = fault;
}

/** The environment variable that picks the CPU features artifacts are compiled for. */
export const CPU_FEATURES_ENV = "HL_WASM_CPU_FEATURES";

/** The grant bits that are compiler feature flags (AVX, AVX2, FMA, BMI1, BMI2, LZCNT). */
const GRANTED_FLAGS = CPU_GRANT.AVX | CPU_GRANT.AVX2 | CPU_GRANT.FMA | CPU_GRANT.BMI1 |
  CPU_GRANT.BMI2 | CPU_GRANT.LZCNT;

let grantedFlags: number | undefined;
let featuresForTests: number | undefined;

/**
 * The CPU-feature flags artifacts are compiled for (docs/wasm.md "CPU features"): the features
 * the VM grants (`hypervisorInfo().grantedFeatures`: AVX, AVX2 and FMA where the VM enables the
 * AVX state; BMI1, BMI2, LZCNT), or none with `HL_WASM_CPU_FEATURES=baseline` (the SSE4.2
 * baseline; `native`, the default, is the grant). Read once per process. Part of the engine hash,
 * so the artifact cache and the start files keep the two apart. The guest's load-time check
 * refuses an artifact compiled for more than it can use only where the VM's CR4/XCR0 decide that
 * (hardware KVM); on kvm_pvm, CPL-3 code runs with the host's, so the check finds AVX usable
 * whatever the grant (docs/security.md "What the guest can read about the host").
 */
export const cpuFeatureFlags = (function cpuFeatureFlags(): number {
  if (featuresForTests !== undefined) return featuresForTests;
  if (grantedFlags === undefined) {
    let mode: string | undefined;
    try {
      mode = Deno.env.get(CPU_FEATURES_ENV) || undefined;
    } catch {
      mode = undefined; // No env permission: the default.
    }
    if (mode !== undefined && mode !== "baseline" && mode !== "native") {
      throw new ArgumentError(
        `${CPU_FEATURES_ENV} must be "baseline" or "native", got ${JSON.stringify(mode)}`,
      );
    }
    let granted = 0;
    if (mode !== "baseline") {
      try {
        granted = hypervisorInfo().grantedFeatures;
      } catch {
        granted = 0; // No usable KVM: creating the VM says so.
      }
    }
    grantedFlags = granted & GRANTED_FLAGS;
  }
  return grantedFlags;
}).bind(undefined); // Eager: on the cold path of a runtime sandbox (see the note after the imports).

/**
 * Test-only switch, not part of the package's API: compiles every following module for these
 * CPU-feature flags (`FLAG_CPU_FEATURES` bits) whatever the VM grants; `undefined` restores the
 * grant (tests/kvm/wasm_cpu_features.test.ts).
 */
export function setCpuFeaturesForTests(flags: number | undefined): void {
  if (flags !== undefined && (flags & ~FLAG_CPU_FEATURES) !== 0) {
    throw new ArgumentError(`not CPU-feature flags: ${flags}`);
  }
  featuresForTests = flags;
}

/** The compiler flags for fuel on/off and this process's CPU features. */
function compileFlags(fuel: boolean): number {
  return (fuel ? FLAG_FUEL : 0) | cpuFeatureFlags();
}

const engineHashes = new Map<number, string>();

/** The engine hash for these settings (hex), part of every cache key. */
export function engineHash(fuel: boolean): string {
  const flags = compileFlags(fuel);
  let h = engineHashes.get(flags);
  if (h === undefined) {
    h = compilerEngineHash(flags).toString(16).padStart(16, "0");
    engineHashes.set(flags, h);
  }
  return h;
}

/**
 * Compiles `wasm` with Cranelift for the guest's engine in the `hl-wasm-compile` child process,
 * killed after `timeoutMs`; the artifact is checked before it is returned. The wait runs on
 * Deno's blocking pool (the event loop keeps running). {@linkcode WasmModuleError} for a module
 * wasmtime refuses or a compiler process that crashed or ran out of memory,
 * {@linkcode TimeoutError} when it ran out of time. `onProgress` is called about every 250 ms
 * while the progress changes, and once at the end of a successful compile.
 */
export async function compileArtifact(
  wasm: Uint8Array,
  fuel: boolean,
  timeoutMs: number = DEFAULT_COMPILE_TIMEOUT_MS,
  onProgress?: (p: CompileProgress) => void,
): Promise<Uint8Array> {
  const ms = Math.max(1, Math.min(Math.ceil(timeoutMs), 0xffff_ffff));
  const cells = onProgress ? new BigUint64Array(new SharedArrayBuffer(24)) : undefined;
  const started = performance.now();
  let seen = "";
  const report = (finished = false) => {
    if (!cells || !onProgress) return;
    const [t, c, n] = [0, 1, 2].map((i) => Number(Atomics.load(cells, i)));
    const key = `${t} ${c} ${n} ${finished}`;
    if (key === seen) return;
    seen = key;
    try {
      onProgress(progressOf(t, c, n, Math.round(performance.now() - started), finished));
    } catch {
      // A listener's error does not stop the compile.
    }
  };
  const timer = cells ? setInterval(() => report(), PROGRESS_EVERY_MS) : undefined;
  let result: { status: number; bytes: Uint8Array };
  try {
    result = await compilerCompileIsolated(
      compileFlags(fuel),
      ms,
      findCompileChild(),
      compileFault,
      wasm,
      cells,
    );
  } finally {
    if (timer !== undefined) clearInterval(timer);
  }
  const { status, bytes } = result;
  if (status === 0) report(true);
  if (status === 0) return bytes;
  const message = new TextDecoder().decode(bytes);
  if (status === ERR_MODULE) throw new WasmModuleError(`invalid module: ${message}`);
  if (status === ERR_CHILD) throw new WasmModuleError(`compiling the module failed: ${message}`);
  if (status === ERR_TIMEOUT) {
    const e = new TimeoutError(ms, { cause: new Error(message) });
    e.message = `compiling the module timed out: ${message}`;
    throw e;
  }
  throw new SandboxError(`the Wasm compiler library failed: ${message}`);
}

/**
 * The same compile in this process (`hlc_compile`), for bench/wasmtime.bench.ts only: it
 * measures what the isolation costs. Never used on untrusted bytes by the library.
 */
export async function compileArtifactInProcess(
  wasm: Uint8Array,
  fuel: boolean,
): Promise<Uint8Array> {
  const { status, bytes } = await compilerCompile(compileFlags(fuel), wasm);
  if (status === 0) return bytes;
  const message = new TextDecoder().decode(bytes);
  if (status === ERR_MODULE) throw new WasmModuleError(`invalid module: ${message}`);
  throw new SandboxError(`the Wasm compiler library failed: ${message}`);
}

/** Throws {@linkcode WasmArtifactError} unless the engine for `fuel` accepts `artifact`. */
export function checkArtifact(artifact: Uint8Array, fuel: boolean): void {
  const { status, message } = compilerCheck(compileFlags(fuel), artifact);
  if (status === ERR_ARTIFACT) throw new WasmArtifactError(`the artifact was refused: ${message}`);
  if (status !== 0) throw new SandboxError(`the Wasm compiler library failed: ${message}`);
}

/**
 * The on-disk artifact cache: `$HL_WASM_CACHE_DIR`, else `$XDG_CACHE_HOME/hl-sandbox/wasmtime`,
 * else `~/.cache/hl-sandbox/wasmtime`; `undefined` when none can be named (no cache on disk).
 */
export const artifactCacheDir = (function artifactCacheDir(): string | undefined {
  const env = (name: string) => {
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined;
    }
  };
  const named = env("HL_WASM_CACHE_DIR");
  if (named !== undefined) return named;
  const xdg = env("XDG_CACHE_HOME");
  const home = env("HOME");
  const base = xdg ?? (home === undefined ? undefined : `${home}/.cache`);
  return base === undefined ? undefined : `${base}/hl-sandbox/wasmtime`;
}).bind(undefined); // Eager: see the note after the imports.

const MAGIC = [0x48, 0x4c, 0x57, 0x41]; // "HLWA"
const FORMAT_VERSION = 2;
/** Magic, version, SHA-256 of the module, engine hash, SHA-256 of the artifact. */
const HEADER_SIZE = 8 + 32 + 8 + 32;

function hexToBytes(hex: string): Uint8Array {
  return new Uint8Array(hex.match(/../g)!.map((b) => parseInt(b, 16)));
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * Encodes a cache file: magic, version, SHA-256 of the module it was compiled from
 * (`moduleDigest`, hex), the engine hash it was compiled for (`engine`, 16 hex digits), SHA-256
 * of the artifact, the artifact.
 */
export async function encodeCacheFile(
  artifact: Uint8Array,
  moduleDigest: string,
  engine: string,
): Promise<Uint8Array> {
  const out = new Uint8Array(HEADER_SIZE + artifact.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, FORMAT_VERSION, true);
  out.set(hexToBytes(moduleDigest), 8);
  out.set(hexToBytes(engine), 40);
  out.set(hexToBytes(await sha256(artifact)), 48);
  out.set(artifact, HEADER_SIZE);
  return out;
}

/** Whether `file` is a cache file of an earlier format version (this package's, older). */
function olderFormat(file: Uint8Array): boolean {
  return file.length >= 8 && MAGIC.every((b, i) => file[i] === b) &&
    new DataView(file.buffer, file.byteOffset).getUint32(4, true) < FORMAT_VERSION;
}

/** Above this many bytes an artifact's SHA-256 is taken with `node:crypto` (see below). */
const LARGE_ARTIFACT = 64 << 20;

/**
 * SHA-256 of an artifact, in hex. Large ones (the `full` Python runtime's is 423 MB) through
 * `node:crypto`, which uses the CPU's SHA instructions: measured on this AMD EPYC host 298 ms for
 * 423 MB against 904 ms with WebCrypto; importing it costs ~50 ms once, more than it saves on the
 * small artifacts, which keep WebCrypto.
 */
async function artifactDigest(artifact: Uint8Array): Promise<string> {
  if (artifact.length < LARGE_ARTIFACT) return await sha256(artifact);
  const { createHash } = await import("node:crypto");
  return createHash("sha256").update(artifact).digest("hex");
}

/**
 * Reads a cache file into one buffer of its size (`Deno.readFile` grows its buffer as it reads:
 * 1.2 s for the 423 MB artifact here, against 0.6 s into a buffer sized from `fstat`).
 */
async function readWhole(path: string): Promise<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    const size = (await f.stat()).size;
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const n = await f.read(out.subarray(done, Math.min(size, done + (64 << 20))));
      if (n === null) break; // shorter than fstat said: the checks below refuse it
      done += n;
    }
    return done === size ? out : out.subarray(0, done);
  } finally {
    f.close();
  }
}

/**
 * Decodes and verifies a cache file: it must be intact and made from the module whose SHA-256 is
 * `moduleDigest` for the engine `engine`; {@linkcode WasmArtifactError} otherwise.
 */
export async function decodeCacheFile(
  file: Uint8Array,
  moduleDigest: string,
  engine: string,
): Promise<Uint8Array> {
  if (
    file.length < HEADER_SIZE || MAGIC.some((b, i) => file[i] !== b) ||
    new DataView(file.buffer, file.byteOffset).getUint32(4, true) !== FORMAT_VERSION
  ) {
    throw new WasmArtifactError("not an artifact cache file of this version");
  }
  if (!equalBytes(file.subarray(8, 40), hexToBytes(moduleDigest))) {
    throw new WasmArtifactError("the cache file was compiled from another module");
  }
  if (!equalBytes(file.subarray(40, 48), hexToBytes(engine))) {
    throw new WasmArtifactError("the cache file was compiled for other engine settings");
  }
  const artifact = file.subarray(HEADER_SIZE);
  if (!equalBytes(hexToBytes(await artifactDigest(artifact)), file.subarray(48, HEADER_SIZE))) {
    throw new WasmArtifactError("the artifact's digest does not match: the cache file was changed");
  }
  return artifact;
}

/** A compiled module published as a code image VMs map read-only (shared, no copy). */
export interface CodeImage {
  /** The sealed memfd holding the artifact. */
  readonly code: MemorySnapshotHandle;
  /** Whether it came from memory, disk, or a fresh compile. */
  readonly source: "memory" | "disk" | "compiled";
}

/** Counters of the artifact cache of this process. */
export interface ArtifactCacheStats {
  /** Code images found in memory. */
  memoryHits: number;
  /** Artifacts loaded from disk. */
  diskHits: number;
  /** Modules compiled. */
  compiles: number;
}

const MAX_IMAGES = 32;
const images = new Map<string, Promise<MemorySnapshotHandle>>();
const counters: ArtifactCacheStats = { memoryHits: 0, diskHits: 0, compiles: 0 };

/** The artifact cache's counters (a copy). */
export function artifactCacheStats(): ArtifactCacheStats {
  return { ...counters };
}

/**
 * Releases the in-memory code images (sandboxes and snapshots that use one keep their own
 * reference). The disk cache stays.
 */
export async function clearArtifactCache(): Promise<void> {
  const all = [...images.values()];
  images.clear();
  for (const p of all) {
    try {
      (await p).release();
    } catch {
      // A failed entry holds nothing.
    }
  }
}

let knownUid: number | null | undefined;

/**
 * This process's user id: `Deno.uid()` (needs `--allow-sys`), else libc's `geteuid` through FFI
 * (the wasmtime engine runs with `--allow-ffi` anyway; `/proc/self` would need `--allow-all`);
 * `null` when neither is allowed.
 */
function userId(): number | null {
  if (knownUid !== undefined) return knownUid;
  try {
    knownUid = Deno.uid();
  } catch {
    try {
      const libc = Deno.dlopen("libc.so.6", { geteuid: { parameters: [], result: "u32" } });
      try {
        knownUid = libc.symbols.geteuid();
      } finally {
        libc.close();
      }
    } catch {
      knownUid = null;
    }
  }
  return knownUid;
}

/**
 * Whether a cache file may be read and written: the directory and the file must be the user's own
 * and writable by nobody else (anyone who could write there could plant an artifact). A path that
 * does not exist yet is fine (it is made 0700 and 0600).
 */
async function privatePath(path: string): Promise<boolean> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
  const uid = userId();
  return uid !== null && info.uid === uid && info.mode !== null && (info.mode & 0o022) === 0;
}

function parentOf(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/**
 * Why the artifact cache directory `dir` cannot be trusted, or `undefined` when it can: every
 * existing directory above it (as named and with links resolved) must belong to this user or
 * root, and one writable by everyone must be sticky (like `/tmp`), or another user could move
 * the directory away and put their own in its place.
 *
 * @example
 * ```ts
 * import { untrustedCacheDir } from "./compiler.ts";
 * console.log(await untrustedCacheDir("/tmp/cache")); // undefined: /tmp is sticky
 * ```
 */
export async function untrustedCacheDir(dir: string): Promise<string | undefined> {
  const uid = userId();
  if (uid === null) return "this process's user id cannot be read (no --allow-sys or --allow-ffi)";
  const paths = new Set<string>();
  let existing: string | undefined;
  for (let p = dir;; p = parentOf(p)) {
    try {
      await Deno.stat(p);
      paths.add(p);
      existing ??= p;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) return `${p}: ${(e as Error).message}`;
    }
    if (p === "/") break;
  }
  if (existing === undefined) return `no directory above ${dir} exists`;
  try {
    for (let p = await Deno.realPath(existing);; p = parentOf(p)) {
      paths.add(p);
      if (p === "/") break;
    }
  } catch (e) {
    return `${existing}: ${(e as Error).message}`;
  }
  for (const p of paths) {
    if (p === dir) continue; // The directory itself: privatePath.
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(p);
    } catch (e) {
      return `${p}: ${(e as Error).message}`;
    }
    const mode = info.mode ?? 0;
    if (info.uid !== uid && info.uid !== 0) return `${p} belongs to another user (${info.uid})`;
    if ((mode & 0o002) !== 0 && (mode & 0o1000) === 0) {
      return `${p} is writable by every user and not sticky`;
    }
  }
  return undefined;
}

const warned = new Set<string>();

/** Says once per directory that the disk cache is not used, and why. */
function warnUntrusted(dir: string, why: string): void {
  if (warned.has(dir)) return;
  warned.add(dir);
  console.warn(
    `hl-sandbox: not using the Wasm artifact cache in ${dir} (${why}); compiled modules are ` +
      `kept in memory only. Set HL_WASM_CACHE_DIR to a private directory to cache them on disk.`,
  );
}

async function loadOrCompile(
  wasm: Uint8Array,
  moduleDigest: string,
  fuel: boolean,
  file: string | undefined,
  timeoutMs: number,
  onProgress?: (p: CompileProgress) => void,
): Promise<{ artifact: Uint8Array; source: "disk" | "compiled" }> {
  const engine = engineHash(fuel);
  if (file !== undefined) {
    const dir = parentOf(file);
    const why = await untrustedCacheDir(dir) ??
      (!await privatePath(dir) || !await privatePath(file)
        ? `${dir} or its file is not this user's own, or others may write to it`
        : undefined);
    if (why !== undefined) {
      warnUntrusted(dir, why);
      file = undefined; // Memory only.
    }
  }
  if (file !== undefined) {
    let bytes: Uint8Array | undefined;
    try {
      bytes = await readWhole(file);
    } catch {
      bytes = undefined; // A miss (or an unreadable cache): compile.
    }
    if (bytes !== undefined && olderFormat(bytes)) {
      // Written by an older version of this package: a miss, not an error.
      await Deno.remove(file).catch(() => {});
      bytes = undefined;
    }
    if (bytes !== undefined) {
      try {
        const artifact = await decodeCacheFile(bytes, moduleDigest, engine);
        checkArtifact(artifact, fuel);
        counters.diskHits++;
        return { artifact, source: "disk" };
      } catch (e) {
        await Deno.remove(file).catch(() => {});
        throw e;
      }
    }
  }
  const artifact = await compileArtifact(wasm, fuel, timeoutMs, onProgress);
  counters.compiles++;
  if (file !== undefined) {
    const tmp = `${file}.${crypto.randomUUID()}.tmp`;
    try {
      await Deno.mkdir(parentOf(file), { recursive: true, mode: 0o700 });
      await Deno.writeFile(tmp, await encodeCacheFile(artifact, moduleDigest, engine), {
        mode: 0o600,
      });
      await Deno.rename(tmp, file);
    } catch {
      // No disk cache (read-only file system, no permission, no space): memory only.
      await Deno.remove(tmp).catch(() => {});
    }
  }
  return { artifact, source: "compiled" };
}

/**
 * The code image of `wasm` for the engine with fuel on/off: from memory, else from the disk
 * cache (verified), else compiled (and stored). The caller gets its own reference to the image
 * and releases it when done (sandboxes and snapshots that use the image take their own).
 * `WasmModuleError` for a module Cranelift refuses (or a compiler process that crashed or ran
 * out of memory), `TimeoutError` for a compile past `timeoutMs`, {@linkcode WasmArtifactError}
 * for a refused cache file. `onProgress` hears a compile this call starts (not a cache hit, nor a
 * compile another call already started).
 */
export async function codeImage(
  wasm: Uint8Array,
  fuel: boolean,
  library?: string,
  timeoutMs: number = DEFAULT_COMPILE_TIMEOUT_MS,
  onProgress?: (p: CompileProgress) => void,
): Promise<CodeImage> {
  const moduleHash = await digest(wasm);
  const key = `${moduleHash}-${engineHash(fuel)}`;
  const hit = images.get(key);
  if (hit) {
    const code = await hit;
    if (!code.released) {
      images.delete(key);
      images.set(key, hit);
      counters.memoryHits++;
      artifactMemoryHit();
      return { code: code.retain(), source: "memory" };
    }
  }
  const dir = artifactCacheDir();
  const file = dir === undefined ? undefined : `${dir}/${key}.hlwa`;
  let source: "disk" | "compiled" = "compiled";
  const pending = traceCompile(
    moduleHash,
    () => loadOrCompile(wasm, moduleHash, fuel, file, timeoutMs, onProgress),
  ).then((r) => {
    source = r.source;
    return snapshotFromBytes(r.artifact, library);
  });
  images.set(key, pending);
  let code: MemorySnapshotHandle;
  try {
    code = await pending;
  } catch (e) {
    if (images.get(key) === pending) images.delete(key);
    throw e;
  }
  code.retain(); // The caller's reference, before an eviction below can drop the cache's.
  while (images.size > MAX_IMAGES) {
    const [oldest, p] = images.entries().next().value!;
    images.delete(oldest);
    p.then((c) => c.release(), () => {});
  }
  return { code, source };
}
