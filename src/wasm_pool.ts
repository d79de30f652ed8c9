/**
 * `WasmSandboxPool`: a fixed number of warm `WasmSandbox`es started from one `WasmSnapshot`; each
 * `run` borrows one and restores it to the snapshot before the next borrower gets it.
 *
 * @module
 */

import { ArgumentError } from "./errors.ts";
import { checkPoolSizing, Pool, type PoolCore, type PoolSizing } from "./pool_core.ts";
import { startRuntimePool } from "./runtime/pool.ts";
import { WasmSandbox } from "./wasm/sandbox.ts";
import { handOverWasmSandbox } from "./sandbox_internal.ts";
import type { WasmSnapshot } from "./wasm/snapshot.ts";
import type { WasiOptions, WasmImports, WasmSandboxOptions } from "./wasm/types.ts";

/** Options of {@linkcode WasmSandboxPool.create}. */
export interface WasmSandboxPoolOptions extends Omit<WasmSandboxOptions, "module">, PoolSizing {
  /** The module (one sandbox is created, through the module cache, and snapshotted); or `snapshot`. */
  module?: Uint8Array | string | URL;
  /** The snapshot every sandbox starts from and is restored to (the pool does not dispose it). */
  snapshot?: WasmSnapshot;
  /** Host functions the module imports. */
  hostFunctions?: WasmImports;
  /**
   * WASI settings (with `snapshot`: only `stdout`/`stderr`/`stdin`). `stdin` must be bytes or a
   * string: every sandbox reads its own copy, from the start again after each `run`.
   */
  wasi?: boolean | WasiOptions;
}

/**
 * A pool of warm Wasm sandboxes from one snapshot. {@linkcode run} borrows a free sandbox
 * (waiting, within a bound, when all are busy), runs `fn` with it, then restores it to the
 * snapshot — each `run` sees the module exactly as it was after instantiation (or as
 * snapshotted) — and hands it to the next waiter. Errors: {@linkcode PoolExhaustedError} when
 * the wait bound runs out, `CancelledError` when the `signal` aborts the wait.
 *
 * @example
 * ```ts
 * import { WasmSandboxPool } from "@hl/sandbox";
 * await using pool = await WasmSandboxPool.create({ module: "fib.wasm", size: 4 });
 * const results = await Promise.all([10, 20, 30].map((n) => pool.run((w) => w.call("fib", n))));
 * console.log(results); // [55, 6765, 832040]
 * ```
 */
export class WasmSandboxPool extends Pool<WasmSandbox> {
  private constructor(core: PoolCore<WasmSandbox>) {
    super(core);
  }

  /**
   * Starts `size` sandboxes: from `snapshot`, or from `module` (one is created — a cache hit when
   * the module was created before with the same options — snapshotted, and the others start from
   * that snapshot, copy-on-write).
   *
   * @example
   * ```ts
   * import { WasmSandbox, WasmSandboxPool } from "@hl/sandbox";
   * await using w = await WasmSandbox.create({ module: "counter.wasm" });
   * await w.call("bump");
   * await using snap = await w.snapshot();
   * await using pool = await WasmSandboxPool.create({ snapshot: snap, size: 2 });
   * console.log(await pool.run((s) => s.call("bump"))); // 2
   * ```
   */
  static async create(options: WasmSandboxPoolOptions): Promise<WasmSandboxPool> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("WasmSandboxPool.create takes an options object");
    }
    const size = checkPoolSizing(options);
    const stdin = typeof options.wasi === "object" ? options.wasi.stdin : undefined;
    if (stdin !== undefined && typeof stdin !== "string" && !(stdin instanceof Uint8Array)) {
      throw new ArgumentError(
        "a pool's wasi.stdin must be bytes or a string (each sandbox reads its own copy)",
      );
    }
    if ((options.module === undefined) === (options.snapshot === undefined)) {
      throw new ArgumentError(
        "WasmSandboxPool.create takes exactly one of `module` and `snapshot`",
      );
    }
    const { size: _s, acquireTimeoutMs: _a, maxWaiting: _m, snapshot: _n, ...rest } = options;
    return new WasmSandboxPool(
      await startRuntimePool({
        size,
        snapshot: options.snapshot,
        first: () => WasmSandbox.create({ ...rest, module: options.module! }),
        snapshotOf: (first) => first.snapshot(),
        fromSnapshot: (snap) => WasmSandbox.create(WasmSandboxPool.#memberOptions(options, snap)),
        handOver: (m) => handOverWasmSandbox(m),
        restore: (m, snap) => m.restore(snap),
      }, options),
    );
  }

  static #memberOptions(options: WasmSandboxPoolOptions, snapshot: WasmSnapshot) {
    const wasi = typeof options.wasi === "object"
      ? { stdout: options.wasi.stdout, stderr: options.wasi.stderr, stdin: options.wasi.stdin }
      : undefined;
    return {
      snapshot,
      hostFunctions: options.hostFunctions,
      net: options.net, // the hl_http imports again; a Net from options is each member's own
      wasi,
      timeoutMs: options.timeoutMs,
      library: options.library,
    };
  }
}
