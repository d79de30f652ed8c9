/**
 * The privileged operations of the sandbox classes, in one place: what the library's own modules
 * may do to a `Sandbox` or a `WasmSandbox` that users of `mod.ts` may not (map host-published
 * code, poison from outside a call, hand a pool member's VM to a new handle). Each class registers
 * its operations here once, from its own body (the only code that can reach its `#` fields);
 * every other module calls the functions below. Replaces one `static {}` block per accessor and
 * the `let x; export function y() { return x(); }` pairs that went with them.
 *
 * Internal: not exported by `mod.ts`. A module that calls these has imported the class itself
 * (it holds an instance, or creates through it), so the class has registered by then.
 *
 * @module
 */

import type { MemorySnapshotHandle } from "./ffi/vm.ts";
import type { Sandbox, SandboxOptions } from "./sandbox.ts";
import type { WasmSandbox } from "./wasm/sandbox.ts";

/** What `Sandbox` registers. */
export interface SandboxInternals {
  /** `Sandbox.create` with host-published code mapped at `MemoryLayout.codeAddr`. */
  createWithCode(
    options: SandboxOptions,
    code: MemorySnapshotHandle | undefined,
    wasmReservationSize?: number,
  ): Promise<Sandbox>;
  /** `Sandbox.create` without the check of the guest's declared host imports. */
  createUnlinked(options: SandboxOptions): Promise<Sandbox>;
  /** Where the sandbox's host-published code is mapped. */
  codeAddr(sandbox: Sandbox): number;
  /** Poisons the sandbox with `error` unless it is poisoned already. */
  poison(sandbox: Sandbox, error: Error): void;
  /** Revokes the handle and returns a new one on its VM. */
  handOver(sandbox: Sandbox): Promise<Sandbox>;
}

/** What `WasmSandbox` registers. */
export interface WasmSandboxInternals {
  /**
   * Revokes the handle and returns a new one on its VM, with the same imports, WASI and cache
   * identity.
   */
  handOver(sandbox: WasmSandbox): WasmSandbox;
}

/** The operations of one class, registered once by the class. */
class Registry<T> {
  readonly #owner: string;
  #ops: T | undefined;

  constructor(owner: string) {
    this.#owner = owner;
  }

  register(ops: T): void {
    if (this.#ops) throw new Error(`${this.#owner} registered its internals twice`);
    this.#ops = ops;
  }

  get ops(): T {
    if (!this.#ops) throw new Error(`${this.#owner} is not loaded (import it first)`);
    return this.#ops;
  }
}

const sandbox = new Registry<SandboxInternals>("Sandbox");
const wasmSandbox = new Registry<WasmSandboxInternals>("WasmSandbox");

/**
 * Called once, from `Sandbox`'s static block.
 *
 * @example
 * ```ts ignore
 * static {
 *   registerSandbox({ handOver: (sandbox) => sandbox.#handOver(), ... });
 * }
 * ```
 */
export function registerSandbox(ops: SandboxInternals): void {
  sandbox.register(ops);
}

/**
 * Called once, from `WasmSandbox`'s static block.
 *
 * @example
 * ```ts ignore
 * static {
 *   registerWasmSandbox({ handOver: (sandbox) => sandbox.#handOver() });
 * }
 * ```
 */
export function registerWasmSandbox(ops: WasmSandboxInternals): void {
  wasmSandbox.register(ops);
}

/**
 * `Sandbox.create` with host-published code (a compiled Wasm artifact) mapped read-only and
 * executable above guest memory (`MemoryLayout.codeAddr`): the wasmtime engine's runtime guest.
 * Snapshots of the sandbox carry the code image.
 *
 * @example
 * ```ts ignore
 * const sb = await createSandboxWithCode({ guest: findGuest("wasmtime-runtime") }, image.code);
 * ```
 */
export function createSandboxWithCode(
  options: SandboxOptions,
  code: MemorySnapshotHandle,
  wasmReservationSize = 0,
): Promise<Sandbox> {
  return sandbox.ops.createWithCode(options, code, wasmReservationSize);
}

/**
 * `Sandbox.create` without the check of the guest's declared host imports against
 * `hostFunctions` (`hl inspect`, which lists a guest's imports without providing them). A call
 * of an import that is not provided fails as for an undeclared one.
 *
 * @example
 * ```ts ignore
 * await using sb = await createSandboxUnlinked({ guest: bytes }); // lists imports it is not given
 * ```
 */
export function createSandboxUnlinked(options: SandboxOptions): Promise<Sandbox> {
  return sandbox.ops.createUnlinked(options);
}

/**
 * Where a sandbox made by {@linkcode createSandboxWithCode} has its code mapped.
 *
 * @example
 * ```ts ignore
 * config.u64(BigInt(sandboxCodeAddr(sb)));
 * ```
 */
export function sandboxCodeAddr(sb: Sandbox): number {
  return sandbox.ops.codeAddr(sb);
}

/**
 * Poisons `sb` with `error` (`WasmSandbox`, when its runtime guest broke the WASI or import
 * protocol inside a call that otherwise completed). Cleared by a restore, like any poisoning.
 *
 * @example
 * ```ts ignore
 * poisonSandbox(native, new ProtocolError("a malformed wasi_io request"));
 * ```
 */
export function poisonSandbox(sb: Sandbox, error: Error): void {
  sandbox.ops.poison(sb, error);
}

/**
 * Revokes `sb` and returns a new handle on its VM (`SandboxPool`, when a borrower's run ends).
 * From this call on, every use of the old handle is a `SandboxDisposedError`: a call of it still
 * queued is refused, one in progress is stopped (it rejects with `SandboxDisposedError`, and the
 * VM is left poisoned, for the new owner to restore). Settles once the old handle's work has;
 * rejects with `SandboxDisposedError` when it was disposed (its VM is gone).
 *
 * @example
 * ```ts ignore
 * const next = await handOverSandbox(borrowed); // the pool keeps `next`; `borrowed` is revoked
 * ```
 */
export function handOverSandbox(sb: Sandbox): Promise<Sandbox> {
  return sandbox.ops.handOver(sb);
}

/**
 * Revokes `w` and returns a new handle on its VM, with the same imports, WASI and cache identity
 * (`WasmSandboxPool` and the language-runtime layer, when a borrower's run ends). From this call
 * on, every use of the old handle is a `SandboxDisposedError`; work of it in progress is stopped
 * (it rejects with `SandboxDisposedError`) and the VM left poisoned, for the new owner to
 * restore. Throws `SandboxDisposedError` when the old handle was disposed (its VM is gone).
 *
 * @example
 * ```ts ignore
 * const next = handOverWasmSandbox(borrowed);
 * ```
 */
export function handOverWasmSandbox(w: WasmSandbox): WasmSandbox {
  return wasmSandbox.ops.handOver(w);
}
