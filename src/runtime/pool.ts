/**
 * Pool creation for sandboxes that start from a snapshot (`SandboxPool`, `WasmSandboxPool`,
 * `JsSandboxPool`): one member made from the options and snapshotted (or the caller's snapshot),
 * the rest started from that snapshot, copy-on-write; the `PoolCore` hooks that revoke a
 * borrower's handle, restore to the snapshot, replace a member that cannot be restored, and
 * release the snapshot the pool made. The pools only say how a member is made and restored.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { PoolCore, type PoolMember, type PoolSizing } from "../pool_core.ts";

/** A snapshot a runtime pool starts its members from. */
export interface PoolSnapshot {
  dispose(): Promise<void>;
}

/** How a runtime pool makes, hands over and restores its members. */
export interface RuntimePoolSpec<M extends PoolMember, S extends PoolSnapshot> {
  /** The pool's size (checked by `checkPoolSizing`). */
  readonly size: number;
  /** The caller's snapshot (not disposed by the pool), or undefined to make one from `first`. */
  readonly snapshot: S | undefined;
  /** Makes the first member from the options (when no snapshot was given). */
  first(): Promise<M>;
  /** Snapshots the first member. */
  snapshotOf(member: M): Promise<S>;
  /** A new member from the snapshot. */
  fromSnapshot(snapshot: S): Promise<M>;
  /** Revokes a borrower's handle and returns a new handle on the same VM (see `PoolHooks`). */
  handOver(member: M): M | Promise<M>;
  /** Brings a member back to the snapshot (and whatever else a run must not inherit). */
  restore(member: M, snapshot: S): Promise<void>;
}

/** Starts the members and returns the pool's core; on a failure, disposes what it made. */
export async function startRuntimePool<M extends PoolMember, S extends PoolSnapshot>(
  spec: RuntimePoolSpec<M, S>,
  sizing: PoolSizing,
): Promise<PoolCore<M>> {
  const members: M[] = [];
  let snapshot = spec.snapshot;
  const owns = snapshot === undefined;
  try {
    if (snapshot === undefined) {
      const first = await spec.first();
      members.push(first);
      snapshot = await spec.snapshotOf(first);
    }
    while (members.length < spec.size) members.push(await spec.fromSnapshot(snapshot));
  } catch (e) {
    for (const m of members) await m.dispose();
    if (owns) await snapshot?.dispose();
    throw e;
  }
  const snap = snapshot;
  return new PoolCore(members, sizing, {
    revoke: (m) => Promise.resolve().then(() => spec.handOver(m)),
    restore: (m) => spec.restore(m, snap),
    replace: () => spec.fromSnapshot(snap),
    disposed: () => owns ? snap.dispose() : Promise.resolve(),
  });
}
