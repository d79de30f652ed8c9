/**
 * The two drivers of an exchange (run the guest until it signals DONE, serving host calls and
 * logs on the way): one synchronous, one asynchronous. They only loop; what an exit means is
 * `protocol.ts`'s, and what an error does to the sandbox is `poison.ts`'s.
 *
 * @module
 */

import { CancelledError, ExitBudgetError, TimeoutError } from "../errors.ts";
import type { Frame, Value } from "../wire.ts";
import type { MicroVm } from "../ffi/vm.ts";
import type { Step } from "./protocol.ts";
import type { StopReason } from "./types.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** What a driver needs from the sandbox whose exchange it runs. */
export interface ExchangeHost {
  /** The VM; throws `SandboxDisposedError` once the sandbox is disposed. */
  vm(): MicroVm;
  /** Reads the exit of kind `kind` (protocol.ts's `exitStep`). */
  step(kind: number): Step;
  /** Serves a host call, writing the answer into the input buffer. */
  hostCall(name: string, args: readonly Value[], sync: boolean): void | Promise<void>;
  /** Why the call was stopped, once it was (a timeout, a cancellation). */
  stopReason(): StopReason | undefined;
  /** Settles when the call is stopped or the sandbox disposed (to stop waiting on a host call). */
  readonly woken: Promise<void>;
  /** What the exchange is, for messages (e.g. `"add"`, `"initialisation"`). */
  readonly what: string;
  /** The most exits (LOG, HOST_CALL) this exchange may serve before it fails. */
  readonly maxExits: number;
  /**
   * How long the exchange's first run spins for its end before waiting on the thread pool
   * (default, and for every later run: the VM's adaptive spin).
   */
  readonly firstSpinNs?: number;
}

/** Counts one served exit; past the budget, the exchange fails with `ExitBudgetError`. */
function spend(h: ExchangeHost, served: number): number {
  if (served >= h.maxExits) throw new ExitBudgetError(h.maxExits, h.what);
  return served + 1;
}

/** The error for a stopped call. */
export function stopError(stop: StopReason, what: string): TimeoutError | CancelledError {
  if (stop.kind === "timeout") return new TimeoutError(stop.ms);
  return new CancelledError(
    `${what}: cancelled`,
    stop.reason === undefined ? {} : { cause: stop.reason },
  );
}

function interrupted(h: ExchangeHost): TimeoutError | CancelledError {
  // An interrupt nobody asked for through this call (e.g. dispose racing): cancelled.
  return stopError(h.stopReason() ?? { kind: "cancel" }, h.what);
}

/**
 * Runs the exchange on this thread, blocking it. Host functions must be synchronous. With
 * `timeoutMs`, every run gets the time left as a native deadline: the cdylib stops the guest
 * itself when it passes (no timer can fire while this thread is blocked).
 */
export function driveSync(h: ExchangeHost, timeoutMs?: number): Frame {
  const deadline = timeoutMs === undefined ? undefined : performance.now() + timeoutMs;
  let served = 0;
  for (;;) {
    const stop = h.stopReason();
    if (stop) throw stopError(stop, h.what);
    let timeoutNs = 0;
    if (deadline !== undefined) {
      const left = deadline - performance.now();
      if (left <= 0) throw new TimeoutError(timeoutMs!);
      timeoutNs = Math.max(1, Math.round(left * 1e6));
    }
    const step = h.step(h.vm().runSync(timeoutNs));
    switch (step.kind) {
      case "done":
        return step.frame;
      case "resume":
        served = spend(h, served);
        continue;
      case "host_call":
        served = spend(h, served);
        h.hostCall(step.name, step.args, true);
        continue;
      case "interrupted":
        throw interrupted(h);
      case "timed_out":
        throw new TimeoutError(timeoutMs ?? 0);
    }
  }
}

/**
 * Runs the exchange without blocking the event loop for long: each run is posted to the vCPU
 * thread, briefly spun on (`MicroVm.run`), then awaited. Host functions may be asynchronous; a
 * stop or dispose ends the wait for one that never settles.
 */
export const driveAsync = (async function driveAsync(h: ExchangeHost): Promise<Frame> {
  let served = 0;
  for (;;) {
    const stop = h.stopReason();
    if (stop) throw stopError(stop, h.what);
    const step = h.step(await h.vm().run(served === 0 ? h.firstSpinNs : undefined));
    switch (step.kind) {
      case "done":
        return step.frame;
      case "resume":
        served = spend(h, served);
        continue;
      case "host_call": {
        served = spend(h, served);
        const pending = h.hostCall(step.name, step.args, false);
        if (pending) {
          // The loser of the race settles later; its outcome no longer matters.
          pending.catch(() => {});
          await Promise.race([pending, h.woken]);
        }
        continue;
      }
      case "interrupted":
        throw interrupted(h);
      case "timed_out":
        // Only the synchronous path sets a native deadline.
        throw interrupted(h);
    }
  }
}).bind(undefined); // Eager: see the note after the imports.
