/**
 * The cache of `JsSandbox` start states: one instance of the runtime layer's
 * {@linkcode SnapshotCache} (`runtime/cache.ts`) for the JavaScript kind, the snapshots taken after
 * QuickJS's init and the source's evaluation. Internal.
 *
 * @module
 */

import { SnapshotCache } from "../runtime/cache.ts";

/** The JavaScript kind's start states, at most 32 (least recently used out). */
export const jsSnapshotCache: SnapshotCache = new SnapshotCache(32);
