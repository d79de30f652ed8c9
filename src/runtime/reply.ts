/**
 * Decoding a language runtime's driver replies (docs/js.md, "Engine and driver ABI": the QuickJS
 * driver's; a new kind's driver speaks the same JSON). Everything the driver writes is guest
 * output, so hostile: a reply that is too large, not UTF-8, not JSON, or not exactly one of the
 * shapes the ABI allows is a `ProtocolError` (and the sandbox poisons itself); so is a malformed
 * `Uint8Array` tag in a value or a host call's arguments (`values.ts`). The kind only says which
 * error class an exception becomes (`JsError`, ...).
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { ProtocolError, type SandboxError } from "../errors.ts";
import { mayHoldTags, readTags } from "./values.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The largest reply accepted (the driver's own replies are bounded by the guest's output area). */
export const MAX_REPLY_BYTES = 64 << 20;
/** The most host calls one `pending` reply may carry. */
export const MAX_PENDING_CALLS = 4096;

/** One host call a `pending` reply asks for. */
export interface PendingCall {
  readonly id: number;
  readonly fn: string;
  readonly args: readonly unknown[];
}

/** Makes a kind's exception error from what the driver reported (all checked). */
export type ErrorFactory<E extends SandboxError = SandboxError> = (
  name: string,
  message: string,
  stack: string,
  nonError: boolean,
) => E;

/** A decoded reply. */
export type Reply<E extends SandboxError = SandboxError> =
  | { readonly kind: "value"; readonly value: unknown }
  | { readonly kind: "error"; readonly error: E }
  | { readonly kind: "pending"; readonly calls: readonly PendingCall[] };

const utf8 = new TextDecoder("utf-8", { fatal: true });

const isRecord = (function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}).bind(undefined); // Eager: see the note after the imports.

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw new ProtocolError(`${what} has an unexpected key "${k}"`);
  }
}

/**
 * Decodes one reply of the driver's init/eval/call/resume exports (`qjs_init`, ...).
 * `hostFunctions` are the names registered at init: a pending call of any other name is a
 * protocol violation. An exception reply becomes `makeError(...)`.
 *
 * @example
 * ```ts ignore
 * const reply = decodeReply(bytes, new Set(["kvGet"]), (name, message, stack, nonError) =>
 *   new JsError(name, message, stack, nonError));
 * if (reply.kind === "pending") console.log(reply.calls.map((c) => c.fn));
 * ```
 */
export const decodeReply = (function decodeReply<E extends SandboxError>(
  bytes: Uint8Array,
  hostFunctions: ReadonlySet<string>,
  makeError: ErrorFactory<E>,
): Reply<E> {
  if (!(bytes instanceof Uint8Array)) throw new ProtocolError("the driver's reply is not bytes");
  if (bytes.length > MAX_REPLY_BYTES) {
    throw new ProtocolError(
      `the driver's reply is ${bytes.length} bytes (at most ${MAX_REPLY_BYTES})`,
    );
  }
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch (e) {
    throw new ProtocolError("the driver's reply is not UTF-8", { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ProtocolError("the driver's reply is not JSON", { cause: e });
  }
  if (!isRecord(json)) throw new ProtocolError("the driver's reply is not a JSON object");
  const keys = Object.keys(json);
  if (keys.length === 0) return { kind: "value", value: undefined };
  if (keys.length !== 1) {
    throw new ProtocolError(`the driver's reply has ${keys.length} keys (${keys.join(", ")})`);
  }
  const tags = mayHoldTags(text);
  if ("value" in json) return { kind: "value", value: tags ? readTags(json.value) : json.value };
  if ("error" in json) return { kind: "error", error: decodeError(json.error, makeError) };
  if ("pending" in json) {
    return { kind: "pending", calls: decodePending(json.pending, hostFunctions, tags) };
  }
  throw new ProtocolError(`the driver's reply has an unknown key "${keys[0]}"`);
}).bind(undefined); // Eager: see the note after the imports.

function decodeError<E extends SandboxError>(e: unknown, makeError: ErrorFactory<E>): E {
  if (!isRecord(e)) throw new ProtocolError("the driver's error is not an object");
  onlyKeys(e, ["name", "message", "stack", "nonError"], "the driver's error");
  const { name, message, stack, nonError } = e;
  if (typeof name !== "string" || typeof message !== "string") {
    throw new ProtocolError("the driver's error lacks a string name and message");
  }
  if (stack !== undefined && typeof stack !== "string") {
    throw new ProtocolError("the driver's error stack is not a string");
  }
  if (nonError !== undefined && typeof nonError !== "boolean") {
    throw new ProtocolError("the driver's error nonError flag is not a boolean");
  }
  return makeError(name, message, stack ?? "", nonError ?? false);
}

function decodePending(
  p: unknown,
  hostFunctions: ReadonlySet<string>,
  tags: boolean,
): PendingCall[] {
  if (!Array.isArray(p) || p.length === 0) {
    throw new ProtocolError("the driver's pending list is not a non-empty array");
  }
  if (p.length > MAX_PENDING_CALLS) {
    throw new ProtocolError(`the driver asked for ${p.length} host calls at once`);
  }
  const ids = new Set<number>();
  return p.map((c) => {
    if (!isRecord(c)) throw new ProtocolError("a pending host call is not an object");
    onlyKeys(c, ["id", "fn", "args"], "a pending host call");
    const { id, fn, args } = c;
    if (typeof id !== "number" || !Number.isSafeInteger(id) || id < 0 || ids.has(id)) {
      throw new ProtocolError(`a pending host call has a bad or repeated id ${JSON.stringify(id)}`);
    }
    ids.add(id);
    if (typeof fn !== "string" || !hostFunctions.has(fn)) {
      throw new ProtocolError(`a pending host call names no registered host function`);
    }
    if (!Array.isArray(args)) throw new ProtocolError("a pending host call's args is not an array");
    return { id, fn, args: tags ? readTags(args) as unknown[] : args };
  });
}
