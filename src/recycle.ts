/**
 * Idle VMs kept for reuse, by key, with bounds per key and in all: the shared layer under the
 * module cache's recycled VMs (`wasm/recycle.ts`, keyed by cache key) and `Sandbox`'s recycled VMs
 * for `Sandbox.create({ snapshot })` (keyed by the snapshot; docs/design.md "Scale"). A VM is put
 * here only after it was restored to the key's snapshot — the same restore `restore()` and the
 * pools rely on — so the next owner sees exactly the snapshot's state; the owner that gave it up
 * has lost its handle before (its `dispose` ran), and the next one gets a new handle.
 *
 * The keys are kept in least-recently-used order: when the total is reached, keeping a VM of one
 * key makes room by destroying an idle VM of the key used longest ago (issue 19: bounds that
 * never gave way filled with the first keys' VMs, and every later key made new VMs).
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import type { MicroVm } from "./ffi/vm.ts";

/** Counters of an {@linkcode IdleStore}. */
export interface IdleCounters {
  /** Takes served by an idle VM. */
  reused: number;
  /** VMs kept idle. */
  kept: number;
  /** Idle VMs destroyed to make room for another key's, or beyond lowered bounds. */
  evicted: number;
}

/**
 * Idle entries by key, least recently used key first, bounded per key and in all; `destroy`
 * frees an entry that is evicted, trimmed, drained or found unusable.
 *
 * @example
 * ```ts ignore
 * const idle = new IdleStore<string, Vm>(2, 8, (vm) => vm.destroy());
 * if (idle.room("k", false) && restore(vm) && idle.room("k", true)) idle.put("k", vm);
 * const next = idle.take("k", (vm) => !vm.broken);
 * ```
 */
export class IdleStore<K, E> {
  /** Most idle entries for one key, and in all. */
  perKey: number;
  total: number;
  readonly #destroy: (entry: E) => void | Promise<void>;
  readonly #idle = new Map<K, E[]>();
  #count = 0;
  readonly counters: IdleCounters = { reused: 0, kept: 0, evicted: 0 };

  constructor(perKey: number, total: number, destroy: (entry: E) => void | Promise<void>) {
    this.perKey = perKey;
    this.total = total;
    this.#destroy = destroy;
  }

  /** Idle entries kept now. */
  get count(): number {
    return this.#count;
  }

  /** Idle entries of `key` now. */
  countOf(key: K): number {
    return this.#idle.get(key)?.length ?? 0;
  }

  /**
   * Whether an entry of `key` can be kept: under the per-key bound, and under the total once the
   * idle entries of keys used less recently than `key` are destroyed (only when `evict`).
   */
  room(key: K, evict: boolean): boolean {
    if (this.perKey <= 0 || this.total <= 0) return false;
    if ((this.#idle.get(key)?.length ?? 0) >= this.perKey) return false;
    while (this.#count >= this.total) {
      // The least recently used key other than `key` gives up its oldest idle entry.
      let victim: K | undefined;
      let found = false;
      for (const k of this.#idle.keys()) {
        if (k !== key) {
          victim = k;
          found = true;
          break;
        }
      }
      if (!found) return false;
      if (!evict) return true;
      const list = this.#idle.get(victim!)!;
      const entry = list.shift()!;
      if (list.length === 0) this.#idle.delete(victim!);
      this.#count--;
      this.counters.evicted++;
      this.#discard(entry);
    }
    return true;
  }

  /**
   * Destroys an entry the store gives up (evicted, or refused by `take`) without letting a failed
   * destroy escape into the caller's `dispose` or create: the entry is out of the store either
   * way, and the caller's own VM must still be parked or destroyed.
   */
  #discard(entry: E): void {
    try {
      const done = this.#destroy(entry);
      if (done) done.catch(() => {});
    } catch {
      // Nothing to report to: the entry has left the store.
    }
  }

  /** Keeps `entry` for `key` (after `room(key, true)`) and marks `key` most recently used. */
  put(key: K, entry: E): void {
    const list = this.#idle.get(key) ?? [];
    list.push(entry);
    this.#idle.delete(key);
    this.#idle.set(key, list);
    this.#count++;
    this.counters.kept++;
  }

  /** Marks `key` as the most recently used. */
  touch(key: K): void {
    const list = this.#idle.get(key);
    if (!list) return;
    this.#idle.delete(key);
    this.#idle.set(key, list);
  }

  /**
   * An idle entry of `key` that `usable` accepts (the newest first), or `undefined`; the ones it
   * refuses are destroyed. The caller owns what it gets.
   */
  take(key: K, usable: (entry: E) => boolean): E | undefined {
    this.touch(key);
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const entry = list.pop()!;
      this.#count--;
      if (list.length === 0) this.#idle.delete(key);
      if (usable(entry)) {
        this.counters.reused++;
        return entry;
      }
      this.#discard(entry);
    }
    return undefined;
  }

  /** Destroys idle entries beyond the bounds (after they were lowered), least recently used first. */
  async trim(): Promise<void> {
    const doomed: E[] = [];
    for (const [k, list] of this.#idle) {
      while (list.length > this.perKey) doomed.push(list.shift()!);
      if (list.length === 0) this.#idle.delete(k);
    }
    for (const [k, list] of this.#idle) {
      while (list.length > 0 && this.#count - doomed.length > this.total) {
        doomed.push(list.shift()!);
      }
      if (list.length === 0) this.#idle.delete(k);
    }
    this.#count -= doomed.length;
    this.counters.evicted += doomed.length;
    for (const entry of doomed) await this.#destroy(entry);
  }

  /** Destroys the idle entries of `key`, or of every key. */
  async drain(key?: K): Promise<void> {
    const keys = key === undefined ? [...this.#idle.keys()] : [key];
    for (const k of keys) {
      const list = this.#idle.get(k) ?? [];
      this.#idle.delete(k);
      this.#count -= list.length;
      // Synchronous destroys run at once (a snapshot's dispose frees its VMs before it returns).
      for (const entry of list) {
        const done = this.#destroy(entry);
        if (done) await done;
      }
    }
  }
}

/** A VM kept idle for the next `Sandbox.create({ snapshot })` of its snapshot, with its views. */
export interface IdleVm {
  readonly vm: MicroVm;
  /** `Sandbox`'s low view and output view of it (valid until the VM is destroyed). */
  readonly memory: Uint8Array;
  readonly output: Uint8Array;
}

/** Most idle VMs `Sandbox` keeps for one snapshot (as the module cache's `maxIdleVmsPerKey`). */
export const MAX_IDLE_VMS_PER_SNAPSHOT = 2;
/** Most idle VMs `Sandbox` keeps, all snapshots together (as the module cache's `maxIdleVms`). */
export const MAX_IDLE_VMS = 8;

/**
 * `Sandbox`'s recycled VMs, keyed by the snapshot's state: a disposed sandbox from a snapshot,
 * healthy and idle, is restored in place to it and kept here; the next create from it takes the
 * VM instead of making one. Freed when the snapshot is released.
 */
export const snapshotVms: IdleStore<object, IdleVm> = new IdleStore(
  MAX_IDLE_VMS_PER_SNAPSHOT,
  MAX_IDLE_VMS,
  (entry) => entry.vm.destroy(),
);
