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
export class SnapshotCache {
  readonly #entries = new Map<string, Promise<WasmSnapshot | undefined>>();
  readonly #max: number;

  /** Keeps at most `max` snapshots. */
  constructor(max: number) {
    this.#max = max;
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
  async get(key: string): Promise<WasmSnapshot | undefined> {
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    this.#entries.delete(key);
    this.#entries.set(key, entry); // most recently used last
    const snap = await entry;
    if (snap && !snap.disposed) return snap;
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
    return undefined;
  }

  /**
   * Runs `make` (which returns its value and the snapshot to keep, if any) with `key` marked
   * as being filled, so that concurrent `get`s wait for it.
   */
  async fill<T>(
    key: string,
    make: () => Promise<{ value: T; snapshot: WasmSnapshot | undefined }>,
  ): Promise<T> {
    let settle!: (s: WasmSnapshot | undefined) => void;
    const entry = new Promise<WasmSnapshot | undefined>((r) => settle = r);
    this.#entries.set(key, entry);
    try {
      const { value, snapshot } = await make();
      settle(snapshot);
      if (!snapshot) this.#forget(key, entry);
      else await this.#evict();
      return value;
    } catch (e) {
      settle(undefined);
      this.#forget(key, entry);
      throw e;
    }
  }

  #forget(key: string, entry: Promise<WasmSnapshot | undefined>): void {
    if (this.#entries.get(key) === entry) this.#entries.delete(key);
  }

  async #evict(): Promise<void> {
    while (this.#entries.size > this.#max) {
      const [key, entry] = this.#entries.entries().next().value!;
      this.#entries.delete(key);
      await (await entry)?.dispose();
    }
  }

  /** Releases every snapshot. */
  async clear(): Promise<void> {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    for (const e of all) await (await e)?.dispose();
  }
}
