/**
 * A language-runtime kind's cache of start states (one per kind, `LanguageKind.cache`): per
 * module, engine, memory limit, source and host function names, the `WasmSnapshot` taken after
 * the runtime's init and the source's evaluation (`JsSandbox`: QuickJS's). Least recently used
 * out beyond a bound on entries; an evicted snapshot is released (sandboxes started from it keep
 * working). Concurrent creates of one key wait for the first.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import type { WasmSnapshot } from "../wasm/snapshot.ts";

/** What the cache keeps: a snapshot it may dispose (`WasmSnapshot`, or a native `Snapshot`). */
export interface CachedSnapshot {
  /** Whether it was disposed (a disposed entry is a miss). */
  readonly disposed: boolean;
  /** Releases it (on eviction and `clear`). */
  dispose(): Promise<void>;
}

/**
 * A bounded LRU of snapshots by key.
 *
 * @example
 * ```ts ignore
 * const cache = new SnapshotCache(32);
 * let hit = await cache.get(key); // waits for a fill of `key` under way
 * while (!hit && cache.has(key)) hit = await cache.get(key); // another create began its fill
 * const value = hit ?? await cache.fill(key, async () => ({ value: await make(), snapshot }));
 * ```
 */
export class SnapshotCache<S extends CachedSnapshot = WasmSnapshot> {
  readonly #entries = new Map<string, Promise<S | undefined>>();
  /** Sizes of the settled entries (`size`), for the byte bound. */
  readonly #sizes = new Map<Promise<S | undefined>, number>();
  #bytes = 0;
  /** Bounds: entries and bytes (the native start-snapshot cache sets both; src/start_cache.ts). */
  max: number;
  maxBytes: number;
  readonly #size: (s: S) => number;

  /**
   * Keeps at most `max` snapshots, and at most `maxBytes` of them by `size` (default: no byte
   * bound), least recently used out.
   */
  constructor(max: number, maxBytes = Infinity, size: (s: S) => number = () => 0) {
    this.max = max;
    this.maxBytes = maxBytes;
    this.#size = size;
  }

  /** Settled entries' total `size`. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Entries (snapshots and fills under way). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Whether `key` has an entry (a snapshot, or a fill under way). Checked in the same synchronous
   * step as a {@linkcode fill}, it makes that fill the only one of its key: a fill replaces the
   * entry, so a second one would leave the first's snapshot to nobody.
   */
  has(key: string): boolean {
    return this.#entries.has(key);
  }

  /** The live snapshot of `key`, waiting for a fill under way; undefined on a miss. */
  async get(key: string): Promise<S | undefined> {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry); // most recently used last
    const snap = await entry;
    if (snap && !snap.disposed) return snap;
    this.#forget(key, entry);
    return undefined;
  }

  /**
   * Runs `make` (which returns its value and the snapshot to keep, if any) with `key` marked
   * as being filled, so that concurrent `get`s wait for it.
   */
  async fill<T>(
    key: string,
    make: () => Promise<{ value: T; snapshot: S | undefined }>,
  ): Promise<T> {
    let settle!: (s: S | undefined) => void;
    const entry = new Promise<S | undefined>((r) => settle = r);
    this.#entries.set(key, entry);
    try {
      const { value, snapshot } = await make();
      settle(snapshot);
      if (!snapshot) this.#forget(key, entry);
      else {
        if (this.#entries.get(key) === entry) {
          const n = this.#size(snapshot);
          this.#sizes.set(entry, n);
          this.#bytes += n;
        }
        await this.evict();
      }
      return value;
    } catch (e) {
      settle(undefined);
      this.#forget(key, entry);
      throw e;
    }
  }

  #forget(key: string, entry: Promise<S | undefined>): void {
    if (this.#entries.get(key) === entry) {
      this.#entries.delete(key);
      this.#unsize(entry);
    }
  }

  #unsize(entry: Promise<S | undefined>): void {
    this.#bytes -= this.#sizes.get(entry) ?? 0;
    this.#sizes.delete(entry);
  }

  /** Releases the least recently used entries beyond the bounds. */
  async evict(): Promise<void> {
    while (
      this.#entries.size > this.max || (this.#bytes > this.maxBytes && this.#entries.size > 0)
    ) {
      const [key, entry] = this.#entries.entries().next().value!;
      this.#entries.delete(key);
      this.#unsize(entry);
      await (await entry)?.dispose();
    }
  }

  /** Releases every snapshot. */
  async clear(): Promise<void> {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    this.#sizes.clear();
    this.#bytes = 0;
    for (const e of all) await (await e)?.dispose();
  }
}
