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
interface Idle {
  native: Sandbox;
  binding: RuntimeBinding;
  /** The cache snapshot it was restored to. */
  snapshot: Snapshot;
}

/** Most idle VMs kept for one key, and in all (each holds a VM, its vCPU thread and pages). */
const PER_KEY = 2;
const TOTAL = 4;

const idle = new Map<string, Idle[]>();
let total = 0;
/** Recycles under way (restoring), so that a drain can wait for them to settle. */
const inFlight = new Set<Promise<void>>();

function room(key: string): boolean {
  return total < TOTAL && (idle.get(key)?.length ?? 0) < PER_KEY;
}

/**
 * An idle VM of `key` restored to `snapshot`, or `undefined`. The caller owns it from here on.
 */
export function takeRecycled(key: string, snapshot: Snapshot): Idle | undefined {
  const list = idle.get(key);
  while (list && list.length > 0) {
    const entry = list.pop()!;
    total--;
    if (list.length === 0) idle.delete(key);
    if (entry.snapshot === snapshot && !snapshot.disposed && !entry.native.disposed) {
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
export function recycleOrDispose(
  key: string,
  snapshot: Snapshot,
  native: Sandbox,
  binding: RuntimeBinding,
  current: () => boolean,
): Promise<void> {
  const keepable = () =>
    room(key) && current() && !snapshot.disposed && !native.disposed && !native.poisoned;
  const done = (async () => {
    if (keepable()) {
      try {
        await native.restore(snapshot);
        if (keepable()) {
          const list = idle.get(key) ?? [];
          list.push({ native, binding, snapshot });
          idle.set(key, list);
          total++;
          return;
        }
      } catch {
        // Not restorable: destroyed below.
      }
    }
    await native.dispose();
  })();
  inFlight.add(done);
  const forget = () => void inFlight.delete(done);
  done.then(forget, forget);
  return done;
}

/**
 * Disposes the idle VMs of `key`, or of every key (then after the recycles under way have
 * settled: those of a cleared cache dispose their VM themselves).
 */
export async function drainRecycled(key?: string): Promise<void> {
  if (key === undefined) await Promise.allSettled([...inFlight]);
  const keys = key === undefined ? [...idle.keys()] : [key];
  for (const k of keys) {
    const list = idle.get(k) ?? [];
    idle.delete(k);
    total -= list.length;
    for (const entry of list) await entry.native.dispose();
  }
}

/** How many idle VMs are kept now (for tests). */
export function recycledCount(): number {
  return total;
}
