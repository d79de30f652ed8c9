/**
 * The wasmtime engine's host side: the Cranelift compiler library (`compiler/`, through
 * `src/ffi/compiler.ts`, opened on first use only) and the artifact cache (in memory, and on disk under
 * {@linkcode artifactCacheDir}). docs/design.md, "Wasm engines" and "Artifact cache". Compiles
 * run on Deno's blocking thread pool, off the event loop.
 *
 * A cache entry is keyed by the module's SHA-256, the engine hash (wasmtime's
 * `precompile_compatibility_hash` of the exact engine settings, our settings version, fuel on/off)
 * and nothing else: the artifact does not depend on any other option. On disk an entry is
 * `HLWA` + version + SHA-256 of the artifact + the artifact; loading checks the digest and then
 * that the artifact is one this engine accepts (`hlc_check`); a refused file is a
 * {@linkcode WasmArtifactError} and is removed.
 *
 * @module
 */

import {
  compilerCheck,
  compilerCompile,
  compilerEngineHash,
  ERR_ARTIFACT,
  ERR_MODULE,
  FLAG_FUEL,
} from "../ffi/compiler.ts";
import { type MemorySnapshotHandle, snapshotFromBytes } from "../ffi/vm.ts";
import { digest, sha256 } from "../snapshot.ts";
import { WasmArtifactError, WasmModuleError } from "./types.ts";

const engineHashes = new Map<number, string>();

/** The engine hash for these settings (hex), part of every cache key. */
export function engineHash(fuel: boolean): string {
  const flags = fuel ? FLAG_FUEL : 0;
  let h = engineHashes.get(flags);
  if (h === undefined) {
    h = compilerEngineHash(flags).toString(16).padStart(16, "0");
    engineHashes.set(flags, h);
  }
  return h;
}

/**
 * Compiles `wasm` with Cranelift for the guest's engine, on a thread of Deno's blocking pool (the
 * event loop keeps running).
 */
export async function compileArtifact(wasm: Uint8Array, fuel: boolean): Promise<Uint8Array> {
  const { status, bytes } = await compilerCompile(fuel ? FLAG_FUEL : 0, wasm);
  if (status === 0) return bytes;
  const message = new TextDecoder().decode(bytes);
  if (status === ERR_MODULE) throw new WasmModuleError(`invalid module: ${message}`);
  throw new Error(`compiling the module failed: ${message}`);
}

/** Throws {@linkcode WasmArtifactError} unless the engine for `fuel` accepts `artifact`. */
export function checkArtifact(artifact: Uint8Array, fuel: boolean): void {
  const { status, message } = compilerCheck(fuel ? FLAG_FUEL : 0, artifact);
  if (status === ERR_ARTIFACT) throw new WasmArtifactError(`the artifact was refused: ${message}`);
  if (status !== 0) throw new Error(`checking the artifact failed: ${message}`);
}

/**
 * The on-disk artifact cache: `$HL_WASM_CACHE_DIR`, else `$XDG_CACHE_HOME/hl-sandbox/wasmtime`,
 * else `~/.cache/hl-sandbox/wasmtime`; `undefined` when none can be named (no cache on disk).
 */
export function artifactCacheDir(): string | undefined {
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
}

const MAGIC = [0x48, 0x4c, 0x57, 0x41]; // "HLWA"
const FORMAT_VERSION = 1;
const HEADER_SIZE = 8 + 32;

function hexToBytes(hex: string): Uint8Array {
  return new Uint8Array(hex.match(/../g)!.map((b) => parseInt(b, 16)));
}

/** Encodes a cache file: magic, version, SHA-256 of the artifact, the artifact. */
export async function encodeCacheFile(artifact: Uint8Array): Promise<Uint8Array> {
  const out = new Uint8Array(HEADER_SIZE + artifact.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, FORMAT_VERSION, true);
  out.set(hexToBytes(await sha256(artifact)), 8);
  out.set(artifact, HEADER_SIZE);
  return out;
}

/** Decodes and verifies a cache file; {@linkcode WasmArtifactError} when it is not intact. */
export async function decodeCacheFile(file: Uint8Array): Promise<Uint8Array> {
  if (
    file.length < HEADER_SIZE || MAGIC.some((b, i) => file[i] !== b) ||
    new DataView(file.buffer, file.byteOffset).getUint32(4, true) !== FORMAT_VERSION
  ) {
    throw new WasmArtifactError("not an artifact cache file of this version");
  }
  const artifact = file.subarray(HEADER_SIZE);
  const want = file.subarray(8, HEADER_SIZE);
  const got = hexToBytes(await sha256(artifact));
  if (got.some((b, i) => b !== want[i])) {
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

/**
 * Whether a cache file may be read and written: the host deserializes what it reads, so the
 * directory and the file must be the user's own and writable by nobody else (anyone who could
 * write there could plant an artifact). A path that does not exist yet is fine (it is made 0700
 * and 0600).
 */
async function privatePath(path: string): Promise<boolean> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    return e instanceof Deno.errors.NotFound;
  }
  const uid = Deno.uid();
  return uid !== null && info.uid === uid && info.mode !== null && (info.mode & 0o022) === 0;
}

async function loadOrCompile(
  wasm: Uint8Array,
  fuel: boolean,
  file: string | undefined,
): Promise<{ artifact: Uint8Array; source: "disk" | "compiled" }> {
  if (file !== undefined) {
    const dir = file.slice(0, file.lastIndexOf("/"));
    // Not the user's own: no disk cache at all (memory only).
    if (!await privatePath(dir) || !await privatePath(file)) file = undefined;
  }
  if (file !== undefined) {
    let bytes: Uint8Array | undefined;
    try {
      bytes = await Deno.readFile(file);
    } catch {
      bytes = undefined; // A miss (or an unreadable cache): compile.
    }
    if (bytes !== undefined) {
      try {
        const artifact = await decodeCacheFile(bytes);
        checkArtifact(artifact, fuel);
        counters.diskHits++;
        return { artifact, source: "disk" };
      } catch (e) {
        await Deno.remove(file).catch(() => {});
        throw e;
      }
    }
  }
  const artifact = await compileArtifact(wasm, fuel);
  counters.compiles++;
  if (file !== undefined) {
    const tmp = `${file}.${crypto.randomUUID()}.tmp`;
    try {
      const dir = file.slice(0, file.lastIndexOf("/"));
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.writeFile(tmp, await encodeCacheFile(artifact), { mode: 0o600 });
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
 * and releases it when done (sandboxes and snapshots that use the image take their own). `WasmModuleError` for a module Cranelift refuses,
 * {@linkcode WasmArtifactError} for a refused cache file.
 */
export async function codeImage(
  wasm: Uint8Array,
  fuel: boolean,
  library?: string,
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
      return { code: code.retain(), source: "memory" };
    }
  }
  const dir = artifactCacheDir();
  const file = dir === undefined ? undefined : `${dir}/${key}.hlwa`;
  let source: "disk" | "compiled" = "compiled";
  const pending = loadOrCompile(wasm, fuel, file).then((r) => {
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
