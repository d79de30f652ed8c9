/**
 * `JsSandboxPool`: a fixed number of warm `JsSandbox`es started from one `JsSnapshot`; each `run`
 * borrows one, and it is restored to the snapshot before the next borrower gets it, with a fresh
 * `Math.random` seed that travels with that borrower's first request (docs/js.md).
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { Pool, type PoolCore, type PoolSizing } from "../pool_core.ts";
import { startLanguagePool } from "../runtime/language.ts";
import { jsKind, type JsSandbox, type JsSandboxOptions, type JsSnapshot } from "./sandbox.ts";

/** Options of {@linkcode JsSandboxPool.create}. */
export interface JsSandboxPoolOptions extends JsSandboxOptions, PoolSizing {
  /** The snapshot every sandbox starts from and is restored to (the pool does not dispose it). */
  snapshot?: JsSnapshot;
}

/**
 * A pool of warm JavaScript sandboxes from one snapshot (taken after `source` was evaluated, or
 * the caller's). {@linkcode run} borrows a free sandbox, runs `fn` with it, then restores it —
 * each run sees the globals exactly as they were in the snapshot, with a fresh `Math.random`
 * seed — and hands it to the next waiter. The handle `fn` gets is revoked when its run ends.
 *
 * @example
 * ```ts
 * import { JsSandboxPool } from "@hl/sandbox";
 * await using pool = await JsSandboxPool.create({
 *   source: "var seen = 0; function handler(x) { seen++; return { x, seen }; }",
 *   size: 2,
 * });
 * console.log(await pool.run((js) => js.call("handler", 1))); // { x: 1, seen: 1 }
 * console.log(await pool.run((js) => js.call("handler", 2))); // { x: 2, seen: 1 }
 * ```
 */
export class JsSandboxPool extends Pool<JsSandbox> {
  private constructor(core: PoolCore<JsSandbox>) {
    super(core);
  }

  /**
   * Starts `size` sandboxes: one from the options (through the snapshot cache), snapshotted, and
   * the others from that snapshot, copy-on-write; or all from `snapshot`.
   *
   * @example
   * ```ts
   * import { JsSandboxPool } from "@hl/sandbox";
   * await using pool = await JsSandboxPool.create({ source: "function f() { return 1; }", size: 1 });
   * console.log(pool.size); // 1
   * ```
   */
  static async create(options: JsSandboxPoolOptions): Promise<JsSandboxPool> {
    if (typeof options === "object" && options !== null && options.net !== undefined) {
      // Each run would need its own per-call budget and counters (docs/networking.md).
      throw new ArgumentError("JsSandboxPool does not take `net` yet: use JsSandbox.create");
    }
    return new JsSandboxPool(await startLanguagePool(jsKind, options));
  }
}
