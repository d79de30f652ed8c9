/**
 * Types shared by `Sandbox` and the call machinery.
 *
 * @module
 */

import type { ValueType } from "../abi.ts";
import type { JsValue } from "../wire.ts";

/** A host function the guest may call by name. */
export interface HostFunction {
  /** Parameter types, checked on every call from the guest. */
  params: readonly ValueType[];
  /** Result type (`"void"` for none). */
  result: ValueType;
  /**
   * The implementation. It may return a Promise on the asynchronous path (`call`); a throw or
   * rejection is returned to the guest as an error, which the guest may surface.
   */
  // deno-lint-ignore no-explicit-any
  fn: (...args: any[]) => JsValue | Promise<JsValue>;
}

/** Why a call was stopped. */
export type StopReason = { kind: "timeout"; ms: number } | { kind: "cancel"; reason?: unknown };
