/**
 * Recycled VMs of the module cache: a disposed `WasmSandbox` that was a cache hit is restored to
 * the cache's snapshot and kept, idle, for the next hit of the same key, which then skips
 * KVM_CREATE_VM, the vCPU and the first-touch faults of a new VM (docs/design.md, "Fast start").
 *
 * A restore brings back everything the guest can observe (memory, registers, FPU/SSE, the
 * per-vCPU MSRs: the same restore `WasmSandboxPool.run` does between borrowers), so a recycled
 * sandbox starts exactly where a new VM from the snapshot would. Only healthy, idle sandboxes are
 * recycled; the host functions and WASI of the new owner are swapped in through a
 * {@linkcode RuntimeBinding}. `WasmSandbox.create({ snapshot })` always makes a new VM.
 *
 * Bounded per key and in all. The keys are kept in least-recently-used order: when the total is
 * reached, a recycle of one key makes room by destroying an idle VM of the key used longest ago
 * (issue 19: the bounds used to fill with the first keys' VMs, and every later key's disposes
 * destroyed their VMs, so its hits all made new VMs).
 *
 * @module
 */

import type { Sandbox } from "../sandbox.ts";
import type { Snapshot } from "../snapshot.ts";
import type { ImportTable } from "./imports.ts";
import type { WasiRuntime } from "./wasi.ts";

/** What a runtime guest's host functions serve: the current owner's imports and WASI. */
export interface RuntimeBinding {
  /** The owner's import table (`wasm_import` calls). */
  imported: ImportTable;
  /** The owner's WASI runtime, if the module has WASI. */
  wasi: WasiRuntime | undefined;
}

/** An idle, restored VM of one cache key. */
export interface Idle {
  native: Sandbox;
  binding: RuntimeBinding;
  /** The cache snapshot it was restored to. */
  snapshot: Snapshot;
}

/** Counters of the idle VMs of one cache. */
export interface IdleCounters {
  /** Hits served by an idle VM. */
  reused: number;
  /** VMs kept idle after a dispose. */
  kept: number;
  /** Idle VMs destroyed to make room for another key's (least recently used first). */
  evicted: number;
}

/** The idle VMs of one module cache, by key, in least-recently-used order of keys. */
export class IdleVms {
  /** Most idle VMs for one key, and in all. */
  perKey: number;
  total: number;
  readonly #idle = new Map<string, Idle[]>();
  #count = 0;
  /** Recycles under way (restoring), so that a drain can wait for them to settle. */
  readonly #inFlight = new Set<Promise<void>>();
  readonly counters: IdleCounters = { reused: 0, kept: 0, evicted: 0 };

  constructor(perKey: number, total: number) {
    this.perKey = perKey;
    this.total = total;
  }

  /** Idle VMs kept now. */
  get count(): number {
    return this.#count;
  }

  /**
   * Whether a VM of `key` can be kept: under the per-key bound, and under the total once the
   * idle VMs of keys used less recently than `key` are destroyed (`evict`).
   */
  #room(key: string, evict: boolean): boolean {
    if (this.perKey <= 0 || this.total <= 0) return false;
    if ((this.#idle.get(key)?.length ?? 0) >= this.perKey) return false;
    while (this.#count >= this.total) {
      // The least recently used key other than `key` gives up its oldest idle VM.
      const victim = [...this.#idle.keys()].find((k) => k !== key);
      if (victim === undefined) return false;
      if (!evict) return true;
      const list = this.#idle.get(victim)!;
      const entry = list.shift()!;
      if (list.length === 0) this.#idle.delete(victim);
      this.#count--;
      this.counters.evicted++;
      void entry.native.dispose();
    }
    return true;
  }

  /** Marks `key` as the most recently used. */
  touch(key: string): void {
    const list = this.#idle.get(key);
    if (!list) return;
    this.#idle.delete(key);
    this.#idle.set(key, list);
  }

  /** An idle VM of `key` restored to `snapshot`, or `undefined`. The caller owns it. */
  take(key: string, snapshot: Snapshot): Idle | undefined {
    this.touch(key);
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const entry = list.pop()!;
      this.#count--;
      if (list.length === 0) this.#idle.delete(key);
      if (entry.snapshot === snapshot && !snapshot.disposed && !entry.native.disposed) {
        this.counters.reused++;
        return entry;
      }
      // Restored to a snapshot the cache no longer holds: of no use.
      void entry.native.dispose();
    }
    return undefined;
  }

  /**
   * Restores `native` to `snapshot` and keeps it for the next hit of `key`, or disposes it: when
   * there is no room, the restore fails, or `current()` says `snapshot` is no longer the cache's
   * entry for `key`. The last checks and the keeping happen with no await between them, so
   * concurrent recycles cannot overfill the bounds. Settles once the VM is kept or destroyed.
   */
  recycle(
    key: string,
    snapshot: Snapshot,
    native: Sandbox,
    binding: RuntimeBinding,
    current: () => boolean,
  ): Promise<void> {
    const healthy = () => current() && !snapshot.disposed && !native.disposed && !native.poisoned;
    const done = (async () => {
      if (healthy() && this.#room(key, false)) {
        try {
          await native.restore(snapshot);
          if (healthy() && this.#room(key, true)) {
            const list = this.#idle.get(key) ?? [];
            list.push({ native, binding, snapshot });
            this.#idle.delete(key);
            this.#idle.set(key, list);
            this.#count++;
            this.counters.kept++;
            return;
          }
        } catch {
          // Not restorable: destroyed below.
        }
      }
      await native.dispose();
    })();
    this.#inFlight.add(done);
    const forget = () => void this.#inFlight.delete(done);
    done.then(forget, forget);
    return done;
  }

  /** Destroys idle VMs beyond the bounds (after they were lowered), least recently used first. */
  async trim(): Promise<void> {
    const doomed: Idle[] = [];
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
    for (const entry of doomed) await entry.native.dispose();
  }

  /**
   * Disposes the idle VMs of `key`, or of every key (then after the recycles under way have
   * settled: those of a cleared cache dispose their VM themselves).
   */
  async drain(key?: string): Promise<void> {
    if (key === undefined) await Promise.allSettled([...this.#inFlight]);
    const keys = key === undefined ? [...this.#idle.keys()] : [key];
    for (const k of keys) {
      const list = this.#idle.get(k) ?? [];
      this.#idle.delete(k);
      this.#count -= list.length;
      for (const entry of list) await entry.native.dispose();
    }
  }
}
