/**
 * The one decision of which errors poison a sandbox.
 *
 * @module
 */

import { GuestError, SandboxDisposedError, SandboxPoisonedError } from "../errors.ts";

/**
 * Whether `error`, escaping a call, makes the sandbox unusable.
 *
 * - Before the guest was entered (`entered` false: bad arguments, a re-entrant call, a CALL that
 *   does not fit the input buffer), nothing in the VM changed: no error poisons.
 * - After it, the guest may be anywhere in its protocol, so every error poisons (faults, panics,
 *   protocol errors, timeouts and cancellations, hypervisor errors, a throwing `onLog`, an answer
 *   that cannot be written, and any error this library did not anticipate) except:
 *   - `GuestError`: the guest answered with an ERROR frame and is back in its call loop;
 *   - `SandboxDisposedError` / `SandboxPoisonedError`: the sandbox is already gone or poisoned.
 */
export function poisons(error: unknown, entered: boolean): boolean {
  if (!entered) return false;
  return !(
    error instanceof GuestError ||
    error instanceof SandboxDisposedError ||
    error instanceof SandboxPoisonedError
  );
}
