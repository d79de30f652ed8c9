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
 * Restores `native` to `snapshot` and keeps it for the next hit of `key`. Returns false (and
 * keeps nothing) when there is no room, or the restore failed: the caller then disposes it.
 * `current` says whether `snapshot` is still the cache's entry for `key`.
 */
export async function recycle(
  key: string,
  snapshot: Snapshot,
  native: Sandbox,
  binding: RuntimeBinding,
  current: () => Promise<boolean>,
): Promise<boolean> {
  if (total >= TOTAL || (idle.get(key)?.length ?? 0) >= PER_KEY) return false;
  if (snapshot.disposed || native.disposed || native.poisoned || !await current()) return false;
  try {
    await native.restore(snapshot);
  } catch {
    return false;
  }
  // Checked again: the cache may have dropped the entry, or the room filled, meanwhile.
  if (total >= TOTAL || (idle.get(key)?.length ?? 0) >= PER_KEY) return false;
  if (snapshot.disposed || !await current()) return false;
  const list = idle.get(key) ?? [];
  list.push({ native, binding, snapshot });
  idle.set(key, list);
  total++;
  return true;
}

/** Disposes the idle VMs of `key`, or of every key. */
export async function drainRecycled(key?: string): Promise<void> {
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
