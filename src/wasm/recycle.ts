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
 * Bounded per key and in all, least recently used key out: the shared layer `src/recycle.ts`
 * ({@linkcode IdleStore}), which `Sandbox.create({ snapshot })`'s recycled VMs use too.
 *
 * @module
 */

import { type IdleCounters, IdleStore } from "../recycle.ts";
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
export type { IdleCounters } from "../recycle.ts";

/**
 * The idle VMs of one module cache, by key, in least-recently-used order of keys: the shared
 * {@linkcode IdleStore} (`src/recycle.ts`) plus the cache's asynchronous restore.
 */
export class IdleVms {
  readonly #store = new IdleStore<string, Idle>(0, 0, (entry) => entry.native.dispose());
  /** Recycles under way (restoring), so that a drain can wait for them to settle. */
  readonly #inFlight = new Set<Promise<void>>();

  constructor(perKey: number, total: number) {
    this.#store.perKey = perKey;
    this.#store.total = total;
  }

  /** Most idle VMs for one key. */
  get perKey(): number {
    return this.#store.perKey;
  }
  set perKey(n: number) {
    this.#store.perKey = n;
  }

  /** Most idle VMs in all. */
  get total(): number {
    return this.#store.total;
  }
  set total(n: number) {
    this.#store.total = n;
  }

  /** Counters (reused, kept, evicted). */
  get counters(): IdleCounters {
    return this.#store.counters;
  }

  /** Idle VMs kept now. */
  get count(): number {
    return this.#store.count;
  }

  /** Marks `key` as the most recently used. */
  touch(key: string): void {
    this.#store.touch(key);
  }

  /** An idle VM of `key` restored to `snapshot`, or `undefined`. The caller owns it. */
  take(key: string, snapshot: Snapshot): Idle | undefined {
    // Restored to a snapshot the cache no longer holds: of no use (destroyed).
    return this.#store.take(
      key,
      (entry) => entry.snapshot === snapshot && !snapshot.disposed && !entry.native.disposed,
    );
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
    const store = this.#store;
    const done = (async () => {
      if (healthy() && store.room(key, false)) {
        try {
          await native.restore(snapshot);
          if (healthy() && store.room(key, true)) {
            store.put(key, { native, binding, snapshot });
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
  trim(): Promise<void> {
    return this.#store.trim();
  }

  /**
   * Disposes the idle VMs of `key`, or of every key (then after the recycles under way have
   * settled: those of a cleared cache dispose their VM themselves).
   */
  async drain(key?: string): Promise<void> {
    if (key === undefined) await Promise.allSettled([...this.#inFlight]);
    await this.#store.drain(key);
  }
}
