/**
 * The module's imports on the host: matching them with the user's host functions
 * ({@linkcode bindImports}), serving the guest's `wasm_import(index, args)` calls
 * ({@linkcode ImportTable}), and the runtime guest's host function table
 * ({@linkcode runtimeHostFunctions}).
 *
 * @module
 */

import { ArgumentError, ProtocolError } from "../errors.ts";
import type { HostFunction } from "../call/types.ts";
import { describeThrown, isInstance } from "../call/describe.ts";
import { type HostFailure, packValues, unpackValues } from "./codec.ts";
import { wasiHostFunctions, type WasiRuntime } from "./wasi.ts";
import {
  type WasmExtern,
  type WasmHostFunction,
  type WasmImports,
  WasmLinkError,
  type WasmResultType,
  type WasmValueType,
} from "./types.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The WASI preview 1 import namespace. */
export const WASI = "wasi_snapshot_preview1";

/** A checked host import: where it is (`"module.name"`), its types and its implementation. */
export interface Binding {
  readonly where: string;
  readonly params: WasmValueType[];
  readonly results: WasmValueType[];
  readonly fn: WasmHostFunction["fn"];
}

function typeText(params: readonly string[], results: readonly string[]): string {
  return `(${params.join(", ")}) -> (${results.join(", ")})`;
}

function resultList(result: WasmResultType): WasmValueType[] {
  if (result === "void") return [];
  if (typeof result === "string") return [result];
  return [...result];
}

/**
 * Matches every import with a host function (or WASI, `undefined` in the list when `wasiOn`);
 * a {@linkcode WasmLinkError} names the first miss.
 */
export const bindImports = (function bindImports(
  imports: readonly WasmExtern[],
  hostFunctions: WasmImports,
  wasiOn: boolean,
): (Binding | undefined)[] {
  for (const imp of imports) {
    if (imp.kind !== "function" || !imp.type) {
      const where = `${imp.module}.${imp.name}`;
      throw new WasmLinkError(
        `import ${where} is a ${imp.kind}: only function imports are supported`,
        where,
      );
    }
  }
  return imports.map((imp) => {
    const where = `${imp.module}.${imp.name}`;
    if (!imp.type) throw new WasmLinkError(`import ${where} has no type`, where);
    if (wasiOn && imp.module === WASI) return undefined;
    const moduleType = typeText(imp.type.params, imp.type.results);
    const def = Object.hasOwn(hostFunctions, imp.module) &&
        Object.hasOwn(hostFunctions[imp.module], imp.name)
      ? hostFunctions[imp.module][imp.name]
      : undefined;
    if (!def) {
      const hint = imp.module === WASI ? " (or enable `wasi`)" : "";
      throw new WasmLinkError(
        `missing import ${where}: ${moduleType}; declare it in hostFunctions["${imp.module}"]["${imp.name}"]${hint}`,
        where,
      );
    }
    const results = resultList(def.result);
    const declared = typeText(def.params, results);
    if (declared !== moduleType) {
      throw new WasmLinkError(
        `import ${where} has type ${moduleType}, but hostFunctions declares ${declared}`,
        where,
      );
    }
    return { where, params: [...def.params], results, fn: def.fn };
  });
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The bound imports of one sandbox. {@linkcode serve} answers `wasm_import(index, args)`; when a
 * host function throws (or returns a value of the wrong shape), the failure is kept here, with
 * the thrown value itself, until {@linkcode takeFailure} hands it to the call's error as its
 * `cause`. The guest only learns that the call failed.
 */
export class ImportTable {
  readonly #bindings: readonly (Binding | undefined)[];
  #failure: HostFailure | undefined;
  /** A malformed `wasm_import` request: the runtime guest broke the protocol (it poisons). */
  #violation: ProtocolError | undefined;

  constructor(bindings: readonly (Binding | undefined)[]) {
    this.#bindings = bindings;
  }

  /** The protocol violation of the current call, if any, and forgets it. */
  takeViolation(): ProtocolError | undefined {
    const v = this.#violation;
    this.#violation = undefined;
    return v;
  }

  /** The failure of the current call, if any, and forgets it. */
  takeFailure(): HostFailure | undefined {
    const f = this.#failure;
    this.#failure = undefined;
    return f;
  }

  /** Serves `wasm_import(index, args)`: unpack, call the user's function, pack its result. */
  serve(index: number, args: Uint8Array): Uint8Array | Promise<Uint8Array> {
    // A malformed request is kept for the call (which then fails with it and poisons), whatever
    // the guest makes of the error it is answered with.
    const binding = this.#bindings[index];
    if (!binding) {
      throw this.#violation ??= new ProtocolError(`import #${index} has no host function`);
    }
    let values: (number | bigint)[];
    try {
      values = unpackValues(args, binding.params, binding.where);
    } catch (e) {
      if (e instanceof ProtocolError) this.#violation ??= e;
      throw e;
    }
    const finish = (result: unknown): Uint8Array => {
      // Everything that looks at the result is inside: a revoked Proxy throws on `isArray` too.
      try {
        let list: unknown[];
        if (binding.results.length === 0) list = [];
        else if (binding.results.length === 1) list = [result];
        else if (Array.isArray(result) && result.length === binding.results.length) list = result;
        else {
          throw new ArgumentError(
            `host function ${binding.where} must return an array of ${binding.results.length} values`,
          );
        }
        return packValues(list, binding.results, `host function ${binding.where} result`);
      } catch (e) {
        throw this.#refused(e);
      }
    };
    let result: unknown;
    try {
      result = binding.fn(...values);
    } catch (e) {
      throw this.#threw(binding.where, e);
    }
    // `isInstance`: a returned revoked Proxy throws on a plain `instanceof`.
    if (isInstance(result, Promise)) {
      try {
        return result.then(finish, (e) => {
          throw this.#threw(binding.where, e);
        });
      } catch (e) {
        // A Promise subclass whose `then` throws.
        throw this.#threw(binding.where, e);
      }
    }
    return finish(result);
  }

  // The texts never throw, whatever the user's function threw or returned (`describeThrown`);
  // the value itself stays the failure's `error`, the call's `cause`.
  #threw(where: string, error: unknown): unknown {
    this.#failure = { message: `host function ${where} threw: ${describeThrown(error)}`, error };
    return error;
  }

  #refused(error: unknown): unknown {
    this.#failure = { message: describeThrown(error), error };
    return error;
  }
}

/**
 * The host functions the runtime guest may call: `wasm_import` always; the WASI layer's
 * (`wasi.ts`) only when WASI may be on (`wasi` given: they answer once the WASI runtime exists,
 * and fail before or without it). With `wasi: false` they are not registered at all.
 */
export const runtimeHostFunctions = (function runtimeHostFunctions(
  hostImport: (index: number, args: Uint8Array) => Uint8Array | Promise<Uint8Array>,
  wasi: (() => WasiRuntime | undefined) | undefined,
): Record<string, HostFunction> {
  return {
    wasm_import: { params: ["u32", "bytes"], result: "bytes", fn: hostImport },
    ...(wasi ? wasiHostFunctions(wasi) : {}),
  };
}).bind(undefined); // Eager: see the note after the imports.
