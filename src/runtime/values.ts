/**
 * How values cross between the host and a language runtime's driver: JSON, plus `Uint8Array`
 * both ways as a tagged object (docs/js.md, "Values"):
 *
 * - a `Uint8Array` is written `{"$bytes": "<base64>"}`;
 * - a plain object whose only key is `"$bytes"` or `"$escape"` (one that could be read as a tag)
 *   is written `{"$escape": {...}}`, and read back as that object;
 * - everything else is plain JSON, unchanged.
 *
 * The driver's prelude does the same on its side (`runtimes/quickjs/driver.c`). What the driver
 * writes is hostile: a tag it could never have written (`"$bytes"` that is not base64 text,
 * `"$escape"` that is not an object) is a `ProtocolError`.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { ArgumentError, ProtocolError } from "../errors.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

// The TC39 base64 methods (V8 has them; the `lib` types may not yet).
const toBase64 = (Uint8Array.prototype as unknown as { toBase64(this: Uint8Array): string })
  .toBase64;
const fromBase64 = (Uint8Array as unknown as { fromBase64(s: string): Uint8Array }).fromBase64;

const BYTES = "$bytes";
const ESCAPE = "$escape";

const tagLike = (function tagLike(v: object): boolean {
  if (Array.isArray(v)) return false;
  const k = Object.keys(v);
  return k.length === 1 && (k[0] === BYTES || k[0] === ESCAPE);
}).bind(undefined); // Eager: see the note after the imports.

/**
 * JSON text of `value` with the tags above, as `JSON.stringify` (which throws for a BigInt or a
 * cycle, and gives `undefined` for a value JSON cannot hold).
 *
 * @example
 * ```ts ignore
 * stringifyValue({ id: 1, value: new Uint8Array([1]) }); // '{"id":1,"value":{"$bytes":"AQ=="}}'
 * ```
 */
export const stringifyValue = (function stringifyValue(value: unknown): string | undefined {
  const wrappers = new WeakSet<object>();
  function replacer(this: unknown, _key: string, v: unknown): unknown {
    if (typeof v !== "object" || v === null || wrappers.has(this as object)) return v;
    if (v instanceof Uint8Array) return { [BYTES]: toBase64.call(v) };
    if (!tagLike(v)) return v;
    const w = { [ESCAPE]: v };
    wrappers.add(w);
    return w;
  }
  return JSON.stringify(value, replacer);
}).bind(undefined); // Eager: see the note after the imports.

/**
 * JSON text of `value` with the tags above; what JSON cannot write is an ArgumentError naming
 * `what`.
 *
 * @example
 * ```ts ignore
 * writeValue(["f", { $bytes: "x" }], "an argument"); // '["f",{"$escape":{"$bytes":"x"}}]'
 * ```
 */
export const writeValue = (function writeValue(value: unknown, what: string): string {
  let text: string | undefined;
  try {
    text = stringifyValue(value);
  } catch (e) {
    throw new ArgumentError(`${what} is not JSON: ${(e as Error).message}`, { cause: e });
  }
  if (text === undefined) throw new ArgumentError(`${what} is not JSON`);
  return text;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Whether JSON `text` may hold a tag (so {@linkcode readTags} has something to do).
 *
 * @example
 * ```ts ignore
 * mayHoldTags('{"value":[1,2]}'); // false: nothing to walk
 * ```
 */
export const mayHoldTags = (function mayHoldTags(text: string): boolean {
  return text.includes('"$');
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Turns the tags in a value parsed from the driver's JSON into what they stand for (in place
 * where the value is an array or object). A malformed tag is a `ProtocolError`; so is nesting
 * too deep for the host's stack.
 *
 * @example
 * ```ts ignore
 * readTags(JSON.parse('{"$bytes":"AQI="}')); // Uint8Array [1, 2]
 * ```
 */
export function readTags(value: unknown): unknown {
  try {
    return revive(value);
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError("a value from the driver is nested too deeply to decode", { cause: e });
  }
}

function revive(v: unknown): unknown {
  if (typeof v !== "object" || v === null) return v;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) v[i] = revive(v[i]);
    return v;
  }
  let o = v as Record<string, unknown>;
  const k = Object.keys(o);
  if (k.length === 1 && k[0] === BYTES) {
    const text = o[BYTES];
    if (typeof text !== "string") throw new ProtocolError(`a "${BYTES}" tag that is not text`);
    try {
      return fromBase64(text);
    } catch (e) {
      throw new ProtocolError(`a "${BYTES}" tag that is not base64`, { cause: e });
    }
  }
  if (k.length === 1 && k[0] === ESCAPE) {
    const inner = o[ESCAPE];
    if (typeof inner !== "object" || inner === null || Array.isArray(inner)) {
      throw new ProtocolError(`an "${ESCAPE}" tag that does not hold an object`);
    }
    o = inner as Record<string, unknown>;
  }
  for (const p of Object.keys(o)) {
    const before = o[p];
    const after = revive(before);
    if (after !== before) {
      Object.defineProperty(o, p, {
        value: after,
        writable: true,
        enumerable: true,
        configurable: true,
      });
    }
  }
  return o;
}
