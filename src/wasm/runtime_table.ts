/**
 * The `wasm-runtime` guest's function table, as `WasmSandbox` relies on it. The runtime guest is
 * as hostile as any guest: its table is checked exactly at create, and every result at its call
 * site, so a runtime that declares other types fails with a typed {@linkcode ProtocolError}, never
 * a `TypeError` from a wrong-typed value.
 *
 * @module
 */

import type { ValueType } from "../abi.ts";
import { ProtocolError } from "../errors.ts";
import type { FunctionSignature, JsValue } from "../wire.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The functions `WasmSandbox` calls, with their exact types (guest/wasm-runtime/src/main.rs). */
export const RUNTIME_FUNCTIONS: Readonly<
  Record<string, { params: readonly ValueType[]; result: ValueType }>
> = {
  load: { params: ["bytes", "bytes"], result: "bytes" },
  instantiate: { params: ["bytes"], result: "void" },
  invoke: { params: ["string", "bytes"], result: "bytes" },
  call_bytes: { params: ["string", "bytes"], result: "bytes" },
  run_wasi: { params: ["bytes"], result: "bytes" },
  write_alloc: { params: ["bytes"], result: "u32" },
  read_memory: { params: ["u64", "u32"], result: "bytes" },
  write_memory: { params: ["u64", "bytes"], result: "void" },
  memory_size: { params: [], result: "u64" },
  fuel_consumed: { params: [], result: "u64" },
};

/** The name of the runtime function `WasmSandbox` calls. */
export type RuntimeFunction = keyof typeof RUNTIME_FUNCTIONS;

function text(params: readonly string[], result: string): string {
  return `(${params.join(", ")}) -> ${result}`;
}

/**
 * Checks the runtime guest's function table: each function `WasmSandbox` calls is present with
 * exactly its type. Extra functions are ignored (never called). Throws `ProtocolError`.
 */
export function checkRuntimeTable(functions: readonly FunctionSignature[]): void {
  const byName = new Map(functions.map((f) => [f.name, f]));
  for (const [name, want] of Object.entries(RUNTIME_FUNCTIONS)) {
    const got = byName.get(name);
    if (!got) {
      throw new ProtocolError(`the wasm-runtime guest has no function ${name}`);
    }
    const expected = text(want.params, want.result);
    const actual = text(got.params, got.result);
    if (expected !== actual) {
      throw new ProtocolError(
        `the wasm-runtime guest's ${name} has type ${actual}, expected ${expected}`,
      );
    }
  }
}

const JS_TYPES: Record<string, (v: JsValue) => boolean> = {
  bytes: (v) => v instanceof Uint8Array,
  void: (v) => v === undefined,
  u32: (v) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < 2 ** 32,
  u64: (v) => typeof v === "bigint" && v >= 0n && v < 1n << 64n,
};

/**
 * `value`, checked against the result type of runtime function `name`: a `ProtocolError` when it
 * is not (never reached with a verified table; a second line of defence at every call site).
 */
export const runtimeResult =
  (function runtimeResult(name: RuntimeFunction, value: JsValue): JsValue {
    const want = RUNTIME_FUNCTIONS[name].result;
    if (!JS_TYPES[want](value)) {
      throw new ProtocolError(
        `the wasm-runtime guest's ${name} returned a value that is not ${want}`,
      );
    }
    return value;
  }).bind(undefined); // Eager: see the note after the imports.
