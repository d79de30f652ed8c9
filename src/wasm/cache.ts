/**
 * The module cache of `WasmSandbox`: per process, snapshots of freshly instantiated modules by
 * a key of the module bytes and the options that shaped the instance (docs/wasm.md, "Snapshots
 * and the cache").
 *
 * @module
 */

import { digest } from "../snapshot.ts";
import type { WasmSnapshotState } from "./snapshot.ts";
import type { WasmCacheStats, WasmSandboxOptions } from "./types.ts";
import { moduleName } from "./wasi.ts";
import { checkPreopens } from "./wasi_path.ts";
import { drainRecycled } from "./recycle.ts";

/** Most snapshots the module cache keeps; the least recently used one goes first. */
const CACHE_LIMIT = 32;
/** The entries: settle to `undefined` when the first create failed or is not cacheable. */
export const cache = new Map<string, Promise<WasmSnapshotState | undefined>>();
/** Hits and misses of this process. */
export const cacheCounters = { hits: 0, misses: 0 };

/** Marks `key` as the most recently used entry; drops the oldest past the limit. */
export function touchCache(key: string, entry: Promise<WasmSnapshotState | undefined>): void {
  cache.delete(key);
  cache.set(key, entry);
  while (cache.size > CACHE_LIMIT) {
    const [oldest, p] = cache.entries().next().value!;
    cache.delete(oldest);
    void drainRecycled(oldest);
    p.then((s) => s?.native.dispose(), () => {});
  }
}

/** The counters and the number of entries. */
export function cacheStats(): WasmCacheStats {
  return { ...cacheCounters, entries: cache.size };
}

/** Empties the cache, releases its snapshots and destroys its idle VMs; the counters are kept. */
export async function clearCache(): Promise<void> {
  const entries = [...cache.values()];
  cache.clear();
  await drainRecycled();
  for (const p of entries) {
    const state = await p.catch(() => undefined);
    await state?.native.dispose();
  }
}

/**
 * The module cache's key: SHA-256 of the module bytes and the options that shape the
 * instantiated guest (memory sizes, limits, fuel, the runtime, WASI on/off with its args, env and
 * seed). Host function implementations, WASI sinks and timeouts are not in it.
 */
export async function cacheKey(
  bytes: Uint8Array,
  options: WasmSandboxOptions,
): Promise<string> {
  const runtime = options.runtime instanceof Uint8Array
    ? `sha256:${await digest(options.runtime)}`
    : String(options.runtime ?? "");
  const w = options.wasi;
  // Without settings, a WASI module is not cached (its random seed is fresh): on/off is enough.
  let wasi: unknown = w !== false;
  if (typeof w === "object" && w !== null) {
    wasi = {
      preopens: checkPreopens(w.preopens),
      args: w.args ? [...w.args] : [moduleName(options.module)],
      env: Object.entries(w.env ?? {}),
      seed: w.randomSeed ? [...w.randomSeed] : null,
    };
  }
  return JSON.stringify({
    module: await digest(bytes),
    runtime,
    library: options.library ?? "",
    engine: options.engine ?? "wasmtime", // WasmSandbox.create's default
    heapSize: options.heapSize ?? null,
    stackSize: options.stackSize ?? null,
    inputSize: options.inputSize ?? null,
    outputSize: options.outputSize ?? null,
    fuel: options.fuel === undefined ? null : String(options.fuel),
    maxMemoryBytes: options.maxMemoryBytes ?? null,
    maxTableElements: options.maxTableElements ?? null,
    maxRecursionDepth: options.maxRecursionDepth ?? null,
    wasi,
  });
}
