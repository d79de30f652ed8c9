/**
 * Per-image start snapshots for cold `Sandbox.create` (issue 19; docs/design.md "Fast start"):
 * the first cold create of a guest image runs the guest's start as before and then snapshots the
 * sandbox; later cold creates of the same key start from that snapshot (the
 * `create({ snapshot })` path: no fill, no start run, copy-on-write memory). The key is the image's
 * SHA-256, the memory layout computed from it and the sizes, the host functions' names and types
 * and the library path: everything that shapes the VM's memory, layout and start.
 *
 * Only a start that told the host nothing — no host-function call, no log, only its DONE — is
 * kept: what a guest can tell the host is then the same either way. A start that did is marked
 * (the key is remembered as not snapshot-able) and every create of it runs the start again, so its
 * logs reach every sandbox's `onLog`. What changes: the start runs once per image and key per cache
 * (per process for {@linkcode StartSnapshotCache.default}), so whatever it computed — a seed read
 * from `rdtsc`/`rdrand` included — is shared by the sandboxes started from its snapshot.
 *
 * The LRU and concurrent-fill logic is the runtime layer's (`runtime/cache.ts`, `SnapshotCache`),
 * with a byte bound added for this cache.
 *
 * @module
 */

import { ArgumentError } from "./errors.ts";
import { checkCacheBound } from "./options.ts";
import { configEnv } from "./host_io.ts";
import { SnapshotCache } from "./runtime/cache.ts";
import type { Snapshot } from "./snapshot.ts";

/** Bounds of a {@linkcode StartSnapshotCache}. */
export interface StartSnapshotCacheOptions {
  /** Most start snapshots kept (images × keys) [16]. */
  maxEntries?: number;
  /** Most snapshot data kept, all entries together, in bytes [256 MiB]. */
  maxBytes?: number;
}

/** Counters of a {@linkcode StartSnapshotCache}. */
export interface StartSnapshotCacheStats {
  /** Cold creates that started from a start snapshot (no start run). */
  hits: number;
  /** Cold creates that ran the guest's start (a first create of its key, or a refused key). */
  starts: number;
  /** Start snapshots taken. */
  taken: number;
  /** Starts not snapshotted because they called a host function or logged. */
  refused: number;
  /** Start snapshots kept now. */
  entries: number;
  /** Their data, in bytes. */
  bytes: number;
}

const DEFAULTS: Required<StartSnapshotCacheOptions> = {
  maxEntries: 16,
  maxBytes: 256 * 1024 * 1024,
};

/** How many refused keys are remembered (a forgotten one is tried, and refused, again). */
const MAX_REFUSED = 256;

/** What `Sandbox` uses of a cache (internal). */
export interface StartCacheCore {
  readonly snapshots: SnapshotCache<Snapshot>;
  readonly refused: Set<string>;
  readonly stats: Omit<StartSnapshotCacheStats, "entries" | "bytes">;
}

const cores = new WeakMap<StartSnapshotCache, StartCacheCore>();

/**
 * A bounded, least-recently-used cache of per-image start snapshots for cold
 * `Sandbox.create`: {@linkcode StartSnapshotCache.default} serves every create without a
 * `startSnapshot` option; a server or a test can pass its own (`startSnapshot: cache`), or turn it
 * off for one create (`startSnapshot: false`) or for the process (`HL_START_SNAPSHOT=0`, where
 * `--allow-env` grants it). An evicted snapshot is released (sandboxes started from it keep
 * working).
 *
 * @example
 * ```ts
 * import { guests, Sandbox, StartSnapshotCache } from "@hl/sandbox";
 * const cache = new StartSnapshotCache({ maxEntries: 4 });
 * await using a = await Sandbox.create({ guest: guests.testguest, startSnapshot: cache });
 * await using b = await Sandbox.create({ guest: guests.testguest, startSnapshot: cache });
 * console.log(cache.stats().hits); // 1: b started from a's start snapshot
 * await cache.clear();
 * ```
 */
export class StartSnapshotCache {
  /** The cache of every cold create without a `startSnapshot` option. */
  static readonly default: StartSnapshotCache = new StartSnapshotCache();

  /** A cache with these bounds (the others default). */
  constructor(options: StartSnapshotCacheOptions = {}) {
    const core: StartCacheCore = {
      snapshots: new SnapshotCache<Snapshot>(
        DEFAULTS.maxEntries,
        DEFAULTS.maxBytes,
        (s) => s.dataPages * 4096,
      ),
      refused: new Set(),
      stats: { hits: 0, starts: 0, taken: 0, refused: 0 },
    };
    cores.set(this, core);
    this.#set(options);
  }

  #set(options: StartSnapshotCacheOptions): void {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("StartSnapshotCache options must be an object");
    }
    const core = cores.get(this)!;
    const max = options.maxEntries === undefined
      ? core.snapshots.max
      : checkCacheBound("maxEntries", options.maxEntries);
    const bytes = options.maxBytes === undefined
      ? core.snapshots.maxBytes
      : checkCacheBound("maxBytes", options.maxBytes);
    core.snapshots.max = max;
    core.snapshots.maxBytes = bytes;
  }

  /**
   * Changes bounds (the others keep their values); what is now over a bound is released, least
   * recently used first.
   *
   * @example
   * ```ts
   * import { StartSnapshotCache } from "@hl/sandbox";
   * await StartSnapshotCache.default.configure({ maxEntries: 64 });
   * ```
   */
  async configure(options: StartSnapshotCacheOptions): Promise<void> {
    this.#set(options);
    await cores.get(this)!.snapshots.evict();
  }

  /**
   * Counters and sizes of this cache.
   *
   * @example
   * ```ts
   * import { StartSnapshotCache } from "@hl/sandbox";
   * console.log(StartSnapshotCache.default.stats().entries);
   * ```
   */
  stats(): StartSnapshotCacheStats {
    const core = cores.get(this)!;
    return { ...core.stats, entries: core.snapshots.size, bytes: core.snapshots.bytes };
  }

  /**
   * Releases every start snapshot and forgets the refused keys (counters stay).
   *
   * @example
   * ```ts
   * import { StartSnapshotCache } from "@hl/sandbox";
   * await StartSnapshotCache.default.clear();
   * ```
   */
  async clear(): Promise<void> {
    const core = cores.get(this)!;
    core.refused.clear();
    await core.snapshots.clear();
  }
}

/**
 * The cache a cold create uses, or undefined when start snapshots are off for it: `false`, or no
 * option and `HL_START_SNAPSHOT=0`.
 */
export const startCacheFor = (function startCacheFor(
  option: boolean | StartSnapshotCache | undefined,
): StartCacheCore | undefined {
  if (option === false) return undefined;
  if (option instanceof StartSnapshotCache) return cores.get(option);
  if (option !== undefined && option !== true) {
    throw new ArgumentError("startSnapshot must be a boolean or a StartSnapshotCache");
  }
  if (option === undefined && configEnv("HL_START_SNAPSHOT") === "0") return undefined;
  return cores.get(StartSnapshotCache.default);
}).bind(undefined); // Eager: compiled with the module (docs/js.md "Eager compilation").

/** Remembers `key` as not snapshot-able (bounded: the oldest is forgotten first). */
export function refuseKey(core: StartCacheCore, key: string): void {
  core.stats.refused++;
  core.refused.delete(key);
  core.refused.add(key);
  if (core.refused.size > MAX_REFUSED) core.refused.delete(core.refused.values().next().value!);
}
