/**
 * The module cache of `WasmSandbox`: snapshots of freshly instantiated modules by a key of the
 * module bytes and the options that shaped the instance (docs/wasm.md, "Snapshots and the
 * cache"), and the idle VMs recycled for them (`recycle.ts`). One default instance per process;
 * a server or a test can have its own (`cache` option of `WasmSandbox.create`).
 *
 * @module
 */

import { digest } from "../snapshot.ts";
import type { Sandbox } from "../sandbox.ts";
import type { Snapshot } from "../snapshot.ts";
import { ArgumentError } from "../errors.ts";
import { checkCacheBound } from "../options.ts";
import type { WasmSnapshotState } from "./snapshot.ts";
import type { WasmCacheStats, WasmSandboxOptions } from "./types.ts";
import { moduleName } from "./wasi.ts";
import { checkPreopens } from "./wasi_path.ts";
import { DEFAULT_ENGINE } from "../runtime/engine.ts";
import { type Idle, IdleVms, type RuntimeBinding } from "./recycle.ts";

/** A cache entry: settles to `undefined` when the first create failed or is not cacheable. */
export type CacheEntry = Promise<WasmSnapshotState | undefined>;

/** Bounds of a {@linkcode WasmModuleCache}; every field is optional (defaults in brackets). */
export interface WasmModuleCacheOptions {
  /** Most modules (keys) whose snapshot is kept [32]. */
  maxEntries?: number;
  /** Most bytes of snapshot data (written pages) kept, all keys together [1 GiB]. */
  maxBytes?: number;
  /** A snapshot with more data than this is not kept (the next create misses again) [256 MiB]. */
  maxEntryBytes?: number;
  /** Most idle VMs kept for reuse, all keys together [8]. */
  maxIdleVms?: number;
  /** Most idle VMs kept for one key [2]. */
  maxIdleVmsPerKey?: number;
}

const DEFAULTS: Required<WasmModuleCacheOptions> = {
  maxEntries: 32,
  maxBytes: 1024 * 1024 * 1024,
  maxEntryBytes: 256 * 1024 * 1024,
  maxIdleVms: 8,
  maxIdleVmsPerKey: 2,
};

const PAGE = 4096;

/** A cache's state and the operations `WasmSandbox` uses (internal: not exported from mod.ts). */
export class CacheCore {
  #bounds: Required<WasmModuleCacheOptions> = { ...DEFAULTS };
  /** The entries, least recently used first. */
  readonly #entries = new Map<string, CacheEntry>();
  /** Snapshot data bytes of the settled entries. */
  readonly #bytes = new Map<string, number>();
  #totalBytes = 0;
  readonly #idle = new IdleVms(DEFAULTS.maxIdleVmsPerKey, DEFAULTS.maxIdleVms);
  #hits = 0;
  #misses = 0;
  #evictions = 0;

  constructor(options: WasmModuleCacheOptions) {
    this.set(options);
  }

  /** Checks and sets bounds (all or nothing). */
  set(options: WasmModuleCacheOptions): void {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("WasmModuleCache options must be an object");
    }
    const next = { ...this.#bounds };
    for (const k of Object.keys(DEFAULTS) as (keyof WasmModuleCacheOptions)[]) {
      if (options[k] !== undefined) next[k] = checkCacheBound(k, options[k]);
    }
    this.#bounds = next;
    this.#idle.perKey = next.maxIdleVmsPerKey;
    this.#idle.total = next.maxIdleVms;
  }

  /**
   * Changes bounds (the others keep their values); what is now over a bound is released, least
   * recently used first.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * await WasmModuleCache.default.configure({ maxEntries: 200, maxIdleVms: 32 });
   * ```
   */
  async configure(options: WasmModuleCacheOptions): Promise<void> {
    this.set(options);
    this.#evictOverBounds();
    await this.#idle.trim();
  }

  /** The bounds in force. */
  get bounds(): Readonly<Required<WasmModuleCacheOptions>> {
    return { ...this.#bounds };
  }

  /**
   * Counters and sizes of this cache.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * console.log(WasmModuleCache.default.stats().entries);
   * ```
   */
  stats(): WasmCacheStats {
    return {
      hits: this.#hits,
      misses: this.#misses,
      entries: this.#entries.size,
      bytes: this.#totalBytes,
      evictions: this.#evictions,
      idleVms: this.#idle.count,
      recycledHits: this.#idle.counters.reused,
      idleEvictions: this.#idle.counters.evicted,
    };
  }

  /**
   * Empties the cache, releases its snapshots and destroys its idle VMs; the counters are kept.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * await WasmModuleCache.default.clear();
   * ```
   */
  async clear(): Promise<void> {
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    this.#bytes.clear();
    this.#totalBytes = 0;
    await this.#idle.drain();
    for (const p of entries) {
      const state = await p.catch(() => undefined);
      await state?.native.dispose();
    }
  }

  /** The entry of `key` (internal). */
  get(key: string): CacheEntry | undefined {
    return this.#entries.get(key);
  }

  /** Whether `entry` is the current entry of `key` (internal). */
  isCurrent(key: string, entry: CacheEntry): boolean {
    return this.#entries.get(key) === entry;
  }

  /** Counts a hit and marks `key` as the most recently used (internal). */
  hit(key: string, entry: CacheEntry): void {
    this.#hits++;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    this.#idle.touch(key);
  }

  /**
   * Counts a miss and adds `entry` as the most recently used (internal). Once it settles, its
   * bytes are counted and the byte bounds applied.
   */
  miss(key: string, entry: CacheEntry): void {
    this.#misses++;
    this.#remove(key);
    this.#entries.set(key, entry);
    this.#evictOverBounds();
    entry.then((state) => {
      if (!state || this.#entries.get(key) !== entry) return;
      const bytes = state.native.disposed ? 0 : state.native.dataPages * PAGE;
      if (bytes > this.#bounds.maxEntryBytes) {
        this.#evict(key);
        return;
      }
      this.#bytes.set(key, bytes);
      this.#totalBytes += bytes;
      this.#evictOverBounds(key);
      if (this.#totalBytes > this.#bounds.maxBytes) this.#evict(key);
    }, () => {});
  }

  /** Drops `key` if `entry` is still its entry (a failed or uncacheable first create). */
  forget(key: string, entry: CacheEntry): void {
    if (this.#entries.get(key) === entry) this.#remove(key);
  }

  /** An idle VM of `key` restored to `snapshot`, or `undefined` (internal). */
  takeIdle(key: string, snapshot: Snapshot): Idle | undefined {
    return this.#idle.take(key, snapshot);
  }

  /** Restores and keeps a hit's VM for the next hit of `key`, or destroys it (internal). */
  recycle(
    key: string,
    entry: CacheEntry,
    snapshot: Snapshot,
    native: Sandbox,
    binding: RuntimeBinding,
  ): Promise<void> {
    return this.#idle.recycle(key, snapshot, native, binding, () => this.isCurrent(key, entry));
  }

  /** Removes `key`'s entry from the maps (its snapshot and idle VMs are not released here). */
  #remove(key: string): CacheEntry | undefined {
    const entry = this.#entries.get(key);
    this.#entries.delete(key);
    this.#totalBytes -= this.#bytes.get(key) ?? 0;
    this.#bytes.delete(key);
    return entry;
  }

  /** Releases `key`: its snapshot and its idle VMs, nothing of any other key. */
  #evict(key: string): void {
    const entry = this.#remove(key);
    if (!entry) return;
    this.#evictions++;
    void this.#idle.drain(key);
    entry.then((s) => s?.native.dispose(), () => {});
  }

  /** Evicts least recently used entries (never `keep`) until the bounds hold. */
  #evictOverBounds(keep?: string): void {
    const b = this.#bounds;
    for (const key of [...this.#entries.keys()]) {
      if (this.#entries.size <= b.maxEntries && this.#totalBytes <= b.maxBytes) return;
      if (key !== keep) this.#evict(key);
    }
  }
}

/** The state of each `WasmModuleCache` (its constructor sets it; `WasmSandbox` reads it). */
const cores = new WeakMap<WasmModuleCache, CacheCore>();

/** The state and internal operations of `cache` (for `WasmSandbox`). */
export function coreOf(cache: WasmModuleCache): CacheCore {
  return cores.get(cache)!;
}

/**
 * A module cache for {@linkcode WasmSandbox.create}: the snapshot taken after the first
 * instantiation of each module and options (its key), least recently used first out, within
 * bounds on keys and bytes; and up to a few idle VMs per key, restored to that snapshot after a
 * hit's dispose, so the next hit skips making a VM. The idle VMs are bounded per key and in all;
 * when the total is reached, the key used longest ago gives up its VM. Evicting a key releases
 * only that key's snapshot and VMs.
 *
 * `WasmModuleCache.default` serves every create that names no cache; a long-running host sets
 * its bounds there ({@linkcode WasmModuleCache.configure}) or gives its own instance.
 *
 * @example
 * ```ts
 * import { WasmModuleCache, WasmSandbox } from "@hl/sandbox";
 * const cache = new WasmModuleCache({ maxEntries: 100, maxIdleVms: 16 });
 * await (await WasmSandbox.create({ module: "fib.wasm", cache })).dispose(); // a miss
 * await (await WasmSandbox.create({ module: "fib.wasm", cache })).dispose(); // a hit
 * console.log(cache.stats()); // { hits: 1, misses: 1, entries: 1, ... }
 * await cache.clear();
 * ```
 */
export class WasmModuleCache {
  /** The cache of every `WasmSandbox.create` that names none. */
  static readonly default: WasmModuleCache = new WasmModuleCache();

  readonly #core: CacheCore;

  /**
   * A cache with these bounds (the others at their defaults).
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * const cache = new WasmModuleCache({ maxBytes: 256 * 1024 * 1024 });
   * ```
   */
  constructor(options: WasmModuleCacheOptions = {}) {
    this.#core = new CacheCore(options);
    cores.set(this, this.#core);
  }

  /**
   * Changes bounds (the others keep their values); what is now over a bound is released, least
   * recently used first.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * await WasmModuleCache.default.configure({ maxEntries: 200, maxIdleVms: 32 });
   * ```
   */
  configure(options: WasmModuleCacheOptions): Promise<void> {
    return this.#core.configure(options);
  }

  /** The bounds in force. */
  get bounds(): Readonly<Required<WasmModuleCacheOptions>> {
    return this.#core.bounds;
  }

  /**
   * Counters and sizes of this cache.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * console.log(WasmModuleCache.default.stats().entries);
   * ```
   */
  stats(): WasmCacheStats {
    return this.#core.stats();
  }

  /**
   * Empties the cache, releases its snapshots and destroys its idle VMs; the counters are kept.
   *
   * @example
   * ```ts
   * import { WasmModuleCache } from "@hl/sandbox";
   * await WasmModuleCache.default.clear();
   * ```
   */
  clear(): Promise<void> {
    return this.#core.clear();
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
    engine: options.engine ?? DEFAULT_ENGINE, // WasmSandbox.create's default
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
