/**
 * Typed host functions: {@linkcode hostFunction} checks a host function's implementation against
 * its declared parameter and result types, and keeps `result: "f64"` a `ValueType` (not widened to
 * `string`) when the table is declared as its own `const`.
 *
 * @module
 */

import type { ValueType } from "./abi.ts";
import type { HostFunction } from "./call/types.ts";

/** The JavaScript type of a value of ABI type `T` (i64/u64 are `bigint`, bytes `Uint8Array`). */
export type JsOf<T extends ValueType> = T extends "i64" | "u64" ? bigint
  : T extends "bool" ? boolean
  : T extends "string" ? string
  : T extends "bytes" ? Uint8Array
  : T extends "void" ? void
  : number;

/** The JavaScript parameter types of ABI parameter types `P`. */
export type JsParams<P extends readonly ValueType[]> = { -readonly [K in keyof P]: JsOf<P[K]> };

/** A host function's declaration whose `fn` is typed by `params` and `result`. */
export interface TypedHostFunction<P extends readonly ValueType[], R extends ValueType> {
  /** Parameter types. */
  params: P;
  /** Result type (`"void"` for none). */
  result: R;
  /** The implementation; may return a Promise on the asynchronous path (`call`). */
  fn: (...args: JsParams<P>) => JsOf<R> | Promise<JsOf<R>>;
}

/**
 * Declares a host function with its implementation checked against its types: `fn`'s parameters
 * are inferred from `params` and its return type must match `result`. Returns a
 * {@linkcode HostFunction} for `hostFunctions`, also when the table is a separate `const`.
 *
 * @example
 * ```ts
 * import { guests, hostFunction, Sandbox } from "@hl/sandbox";
 * const host = {
 *   double: hostFunction({ params: ["i32"], result: "i32", fn: (x) => 2 * x }),
 * };
 * await using sb = await Sandbox.create({ guest: guests.testguest, hostFunctions: host });
 * console.log(await sb.call("call_host", "double", 21)); // 42
 * ```
 */
export function hostFunction<
  const P extends readonly ValueType[],
  const R extends ValueType,
>(def: TypedHostFunction<P, R>): HostFunction {
  return def as unknown as HostFunction;
}

/**
 * The object {@linkcode Sandbox.typed} returns for a guest described by interface `T` (as
 * `hl inspect --ts` writes it): each method takes `T`'s parameters and resolves `T`'s result,
 * so `typed<MyGuest>().add(2, 3)` is a `Promise<number>` and a wrong argument is a type error.
 *
 * @example
 * ```ts
 * import type { TypedGuest } from "@hl/sandbox";
 * interface Calc {
 *   add(a0: number, a1: number): number;
 * }
 * const calc: TypedGuest<Calc> = { add: (a, b) => Promise.resolve(a + b) };
 * console.log(await calc.add(2, 3)); // 5
 * ```
 */
export type TypedGuest<T> = {
  readonly [K in keyof T]: T[K] extends (...args: infer A) => infer R
    ? (...args: A) => Promise<Awaited<R>>
    : never;
};
