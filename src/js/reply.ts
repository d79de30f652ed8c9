/**
 * Decoding the QuickJS driver's replies: the runtime layer's decoder (`runtime/reply.ts`) with
 * exceptions as {@linkcode JsError}s. Internal.
 *
 * @module
 */

import { JsError } from "../errors.ts";
import { decodeReply as decode, type Reply } from "../runtime/reply.ts";

export { MAX_PENDING_CALLS, MAX_REPLY_BYTES, type PendingCall } from "../runtime/reply.ts";

/** Makes the `JsError` of an exception reply. */
export function jsError(name: string, message: string, stack: string, nonError: boolean): JsError {
  return new JsError(name, message, stack, nonError);
}

/**
 * Decodes one reply of `qjs_init`/`qjs_eval`/`qjs_call`/`qjs_resume` (see `runtime/reply.ts`);
 * a pending call of a name not in `hostFunctions` is a `ProtocolError`.
 */
export function decodeReply(bytes: Uint8Array, hostFunctions: ReadonlySet<string>): Reply<JsError> {
  return decode(bytes, hostFunctions, jsError);
}
