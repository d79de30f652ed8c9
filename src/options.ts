/**
 * Validators of the options and arguments of `Sandbox` and `WasmSandbox`, and the lookup of a
 * name among known ones ("... (it has: a, b, c)"). Each throws {@linkcode ArgumentError} with a
 * message that names the option and what it must be.
 *
 * @module
 */

import { isValueType } from "./abi.ts";
import { ArgumentError } from "./errors.ts";
import type { HostFunction } from "./call/types.ts";
import type { WasmImports } from "./wasm/types.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

const NUMBER_TYPES = new Set<string>(["i32", "i64", "f32", "f64"]);

/**
 * Looks `name` up in `known`; a miss throws `ArgumentError` "`what` "name" (it has: a, b)".
 * `what` reads like "the guest has no function".
 */
export const lookupName =
  (function lookupName<T>(known: ReadonlyMap<string, T>, name: string, what: string): T {
    const found = known.get(name);
    if (found === undefined) {
      throw new ArgumentError(`${what} "${name}" (it has: ${[...known.keys()].join(", ")})`);
    }
    return found;
  }).bind(undefined); // Eager: see the note after the imports.

/** Checks a timeout option: milliseconds from 0 to 2^31-1, or undefined. */
export const checkTimeout = (function checkTimeout(ms: number | undefined, name: string): void {
  if (ms === undefined) return;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0 || ms > 2 ** 31 - 1) {
    throw new ArgumentError(`${name} must be a number of milliseconds from 0 to 2^31-1, got ${ms}`);
  }
}).bind(undefined); // Eager: see the note after the imports.

/** Checks `Sandbox` host functions (`{ name: { params, result, fn } }`) and copies them. */
export const checkHostFunctions =
  (function checkHostFunctions(defs: Record<string, HostFunction>): Map<string, HostFunction> {
    if (typeof defs !== "object" || defs === null) {
      throw new ArgumentError("hostFunctions must be an object of { params, result, fn }");
    }
    const out = new Map<string, HostFunction>();
    for (const [name, def] of Object.entries(defs)) {
      const where = `hostFunctions.${name}`;
      if (typeof def !== "object" || def === null || typeof def.fn !== "function") {
        throw new ArgumentError(`${where} must be { params, result, fn } with fn a function`);
      }
      if (!Array.isArray(def.params) || def.params.some((p) => !isValueType(p) || p === "void")) {
        throw new ArgumentError(
          `${where}.params must be an array of value types (i32 u32 i64 u64 f32 f64 bool string bytes)`,
        );
      }
      if (!isValueType(def.result)) {
        throw new ArgumentError(
          `${where}.result must be a value type or "void", got ${def.result}`,
        );
      }
      out.set(name, { params: [...def.params], result: def.result, fn: def.fn });
    }
    return out;
  }).bind(undefined); // Eager: see the note after the imports.

/** Checks `WasmSandbox` host functions (`{ namespace: { name: { params, result, fn } } }`). */
export const checkWasmHostFunctions =
  (function checkWasmHostFunctions(defs: WasmImports): WasmImports {
    if (typeof defs !== "object" || defs === null) {
      throw new ArgumentError(
        "hostFunctions must be { namespace: { name: { params, result, fn } } }",
      );
    }
    for (const [ns, fns] of Object.entries(defs)) {
      if (typeof fns !== "object" || fns === null) {
        throw new ArgumentError(`hostFunctions.${ns} must be an object of host functions`);
      }
      for (const [name, def] of Object.entries(fns)) {
        const where = `hostFunctions.${ns}.${name}`;
        if (typeof def !== "object" || def === null || typeof def.fn !== "function") {
          throw new ArgumentError(`${where} must be { params, result, fn } with fn a function`);
        }
        if (!Array.isArray(def.params) || def.params.some((p) => !NUMBER_TYPES.has(p))) {
          throw new ArgumentError(
            `${where}.params must be an array of "i32" | "i64" | "f32" | "f64"`,
          );
        }
        const r = def.result;
        const ok = r === "void" || (typeof r === "string" && NUMBER_TYPES.has(r)) ||
          (Array.isArray(r) && r.every((x) => NUMBER_TYPES.has(x)));
        if (!ok) {
          throw new ArgumentError(
            `${where}.result must be "void", a number type, or an array of them`,
          );
        }
      }
    }
    return defs;
  }).bind(undefined); // Eager: see the note after the imports.

/** Checks the `fuel` option: a positive integer below 2^64 (0n when unset: no limit). */
export function checkFuel(fuel: number | bigint | undefined): bigint {
  if (fuel === undefined) return 0n;
  const f = typeof fuel === "number" && Number.isSafeInteger(fuel) ? BigInt(fuel) : fuel;
  if (typeof f !== "bigint" || f < 1n || f >= 1n << 64n) {
    throw new ArgumentError(`fuel must be a positive integer below 2^64, got ${fuel}`);
  }
  return f;
}

/** Checks a positive-integer option, `fallback` when unset. */
export const checkCount =
  (function checkCount(v: number | undefined, name: string, fallback: number): number {
    if (v === undefined) return fallback;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
      throw new ArgumentError(`${name} must be a positive integer, got ${v}`);
    }
    return v;
  }).bind(undefined); // Eager: see the note after the imports.

/** A cache bound (entries, bytes, idle VMs): a non-negative safe integer, or an `ArgumentError`. */
export function checkCacheBound(name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) {
    throw new ArgumentError(`${name} must be a non-negative integer`);
  }
  return v;
}

/** Checks an integer argument in [0, 2^32). */
export function checkU32(v: number, name: string): void {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= 2 ** 32) {
    throw new ArgumentError(`${name} must be an integer in [0, 2^32), got ${v}`);
  }
}
