/**
 * Total formatting of values a host function, an `onLog` callback or a WASI sink threw or
 * returned: the user's code is as untrusted as the guest's in what it hands back (an object whose
 * `toString` throws, a revoked `Proxy`, a getter that throws), and a message built from it must
 * never throw in turn, or the call would reject with that `TypeError` instead of a
 * `SandboxError` whose `cause` is the value.
 *
 * @module
 */

/**
 * Text for `value`, whatever it is; never throws. An `Error`'s message, else `String(value)`,
 * else `Object.prototype.toString` (`[object Object]`), else a fixed text.
 */
export function describeThrown(value: unknown): string {
  try {
    if (isInstance(value, Error)) {
      const message = (value as Error).message;
      if (typeof message === "string") return message;
    }
  } catch {
    // A throwing `message` getter: fall through to the generic forms.
  }
  try {
    return String(value);
  } catch {
    // A throwing toString / Symbol.toPrimitive, or a revoked Proxy.
  }
  try {
    return Object.prototype.toString.call(value);
  } catch {
    // A revoked Proxy throws even here (IsArray on it).
  }
  return `a value of type ${typeof value} that cannot be described`;
}

/** `value instanceof ctor`, false instead of throwing (a revoked Proxy throws on the check). */
// deno-lint-ignore no-explicit-any
export function isInstance<C extends abstract new (...args: any) => unknown>(
  value: unknown,
  ctor: C,
): value is InstanceType<C> {
  try {
    return value instanceof ctor;
  } catch {
    return false;
  }
}
