/**
 * The guest protocol (docs/abi.md), apart from how runs are driven: what one VM exit means for
 * the call in progress ({@linkcode exitStep}), and how a host call is served
 * ({@linkcode serveHostCall}). Every failure is a typed error; whether it poisons is decided in
 * one place, `poison.ts`.
 *
 * @module
 */

import {
  LogLevel,
  NULL_PAGE_ADDR,
  PAGE_SIZE,
  PEB_ADDR,
  PebOffset,
  Port,
  RING0_STACK_TOP,
  STUB_SIZE,
  STUBS_ADDR,
} from "../abi.ts";
import {
  GuestFaultError,
  GuestPanicError,
  HypervisorError,
  ProtocolError,
  SandboxError,
  StackOverflowError,
} from "../errors.ts";
import { type Frame, fromValue, toValue, type Value } from "../wire.ts";
import { isInGuardPage, type MemoryLayout } from "../layout.ts";
import {
  DELIVERABLE_VECTORS,
  PAGE_FAULT_VECTOR,
  readCpuFault,
  STUB_RESUME,
  stubVector,
} from "../system.ts";
import { inWasmReservation } from "../wasm_reservation.ts";
import { ExitKind, type MicroVm } from "../ffi/vm.ts";
import type { HostFunction } from "./types.ts";
import { describeThrown, isInstance } from "./describe.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** What an exit means for the call in progress. */
export type Step =
  /** The guest signalled DONE: its answer is in the output buffer. */
  | { readonly kind: "done"; readonly frame: Frame }
  /** Handled (a LOG): run the guest again. */
  | { readonly kind: "resume" }
  /** The guest asks for a host function; answer, then run it again. */
  | { readonly kind: "host_call"; readonly name: string; readonly args: readonly Value[] }
  /** The run was interrupted (a stop, a dispose). */
  | { readonly kind: "interrupted" }
  /** The run's own deadline passed (the synchronous path's timeout). */
  | { readonly kind: "timed_out" };

/** What the protocol reads an exit with: the VM, its memory and the sandbox's layout. */
export interface ExitContext {
  readonly vm: MicroVm;
  readonly memory: Uint8Array;
  readonly layout: MemoryLayout;
  /** Decodes the frame in the output buffer (a `FrameDecoder`, or `call/window.ts`'s). */
  readonly output: { decode(): Frame };
  readonly onLog?: (level: number, message: string) => void;
  /** Counts a LOG exit that nobody consumes (no `onLog`): it is skipped, never decoded. */
  readonly skipLog?: () => void;
}

/** Turns the exit of kind `kind` into a step, or throws the typed error it amounts to. */
export const exitStep = (function exitStep(ctx: ExitContext, kind: number, what: string): Step {
  switch (kind) {
    case ExitKind.IoOut:
      return portStep(ctx, ctx.vm.exitPort, what);
    case ExitKind.Interrupted:
      return { kind: "interrupted" };
    case ExitKind.TimedOut:
      return { kind: "timed_out" };
    case ExitKind.Shutdown:
      throw new GuestFaultError(
        {},
        `${what}: the guest triple-faulted (an exception during exception delivery)`,
      );
    case ExitKind.Mmio: {
      const exit = ctx.vm.lastExit();
      const address = exit.kind === "mmio" ? exit.address : undefined;
      throw new GuestFaultError(
        { address },
        `${what}: the guest accessed guest-physical address 0x${
          address?.toString(16)
        }, outside its memory`,
      );
    }
    case ExitKind.Halt:
      throw new ProtocolError(`${what}: the guest halted instead of signalling`);
    case ExitKind.IoIn:
      throw new ProtocolError(`${what}: the guest read I/O port 0x${ctx.vm.exitPort.toString(16)}`);
    default: {
      const exit = ctx.vm.lastExit();
      let rip = "unknown";
      try {
        rip = `0x${ctx.vm.getRegisters().rip.toString(16)}`;
      } catch {
        // Diagnostics only.
      }
      throw new HypervisorError(
        "HYPERVISOR",
        `${what}: the vCPU stopped unexpectedly at rip ${rip}: ${JSON.stringify(exit, bigintText)}`,
      );
    }
  }
}).bind(undefined); // Eager: see the note after the imports.

const portStep = (function portStep(ctx: ExitContext, port: number, what: string): Step {
  switch (port) {
    case Port.DONE:
      return { kind: "done", frame: decode(ctx, what) };
    case Port.HOST_CALL: {
      const frame = decode(ctx, what);
      if (frame.kind !== "HOST_CALL") {
        throw new ProtocolError(`${what}: expected HOST_CALL, got ${frame.kind}`);
      }
      return { kind: "host_call", name: frame.name, args: frame.args };
    }
    case Port.LOG: {
      if (!ctx.onLog) {
        // No consumer: no decoding work for the guest to amplify; counted, then resumed.
        ctx.skipLog?.();
        return { kind: "resume" };
      }
      const frame = decode(ctx, what);
      if (frame.kind !== "LOG") throw new ProtocolError(`${what}: expected LOG, got ${frame.kind}`);
      if (frame.level > LogLevel.TRACE) {
        throw new ProtocolError(`${what}: LOG level ${frame.level} is above ${LogLevel.TRACE}`);
      }
      if (ctx.onLog) {
        try {
          ctx.onLog(frame.level, frame.message);
        } catch (e) {
          throw new SandboxError(`${what}: the onLog callback threw: ${errorText(e)}`, {
            cause: e,
          });
        }
      }
      return { kind: "resume" };
    }
    case Port.ABORT: {
      const frame = decode(ctx, what);
      if (frame.kind === "PANIC") throw new GuestPanicError(frame.message);
      // FAULT frames are ABI version 1: faults are now read from the CPU, never from guest
      // memory, so a guest-written FAULT is as untrustworthy as any other frame.
      throw new ProtocolError(`${what}: expected a PANIC frame with ABORT, got ${frame.kind}`);
    }
    case Port.FAULT:
      if (deliverWasmFault(ctx)) return { kind: "resume" };
      throw cpuFault(ctx, what);
    default:
      throw new ProtocolError(
        `${what}: the guest wrote to unknown I/O port 0x${port.toString(16)}`,
      );
  }
}).bind(undefined); // Eager: see the note after the imports.

const decode = (function decode(ctx: ExitContext, what: string): Frame {
  try {
    return ctx.output.decode();
  } catch (e) {
    if (e instanceof ProtocolError) throw new ProtocolError(`${what}: ${e.detail}`, { cause: e });
    throw e;
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A CPU exception, reported by the host's ring-0 stub: the vector from which stub made the exit,
 * the details from the CPU-pushed frame on the ring-0 stack and CR2 from the vCPU — none of it
 * from memory the guest can write. A FAULT exit that no stub made is a protocol violation.
 */
function cpuFault(ctx: ExitContext, what: string): GuestFaultError | ProtocolError {
  const rip = ctx.vm.getRegisters().rip;
  const special = ctx.vm.getSpecialRegisters();
  const vector = stubVector(rip, special.cs);
  if (vector === undefined) {
    return new ProtocolError(
      `${what}: an exit on the FAULT port 0x${Port.FAULT.toString(16)} at rip 0x${
        rip.toString(16)
      } that no exception stub made`,
    );
  }
  const cpu = readCpuFault(ctx.memory, vector);
  const details = {
    vector,
    rip: cpu.rip,
    address: vector === 14 ? special.cr2 : undefined,
    errorCode: cpu.errorCode,
  };
  // Decided from the host's own layout, not the PEB: the guest can write the PEB.
  const stackOverflow = vector === 14 && isInGuardPage(ctx.layout, special.cr2);
  return stackOverflow ? new StackOverflowError(details) : new GuestFaultError(details);
}

/** Bytes below a SysV function's stack pointer that it may use without moving it. */
const RED_ZONE = 128n;

/**
 * Delivers a Wasm trap (docs/abi.md, "Wasm guard pages"): a #DE or #UD at CPL 3 (wasmtime's trap
 * instructions), or a not-present #PF at CPL 3 whose address lies in the Wasm reservation (a
 * bounds trap) or the null page (a null reference), whose RIP lies in the host-published code, becomes a call of the guest's trap
 * entry (`wasm_trap_entry` in the PEB, inside the guest image) as `entry(rip, rbp, has_address,
 * cr2)` on the faulting stack below its red zone, through the stub's `iretq`. Returns false for
 * every other fault, which stays fatal. Everything it checks comes from the CPU's frame, the vCPU
 * and the host's own layout, except the entry, which only selects where in the guest's own image
 * it resumes at CPL 3.
 */
function deliverWasmFault(ctx: ExitContext): boolean {
  const layout = ctx.layout;
  if (layout.wasmReservationSize === 0 || layout.codeSize === 0) return false;
  const regs = ctx.vm.getRegisters();
  const special = ctx.vm.getSpecialRegisters();
  const vector = stubVector(regs.rip, special.cs);
  if (vector === undefined || !DELIVERABLE_VECTORS.has(vector)) return false;
  const frame = readCpuFault(ctx.memory, vector);
  if ((frame.cs & 3n) !== 3n) return false;
  const pageFault = vector === PAGE_FAULT_VECTOR;
  // Not present, and in the reservation (a bounds trap) or the null page (wasmtime's null
  // reference checks load through the null pointer).
  const trapAddress = inWasmReservation(layout, special.cr2) ||
    (special.cr2 >= BigInt(NULL_PAGE_ADDR) && special.cr2 < BigInt(NULL_PAGE_ADDR + PAGE_SIZE));
  if (pageFault && (((frame.errorCode ?? 1n) & 1n) !== 0n || !trapAddress)) return false;
  const code = BigInt(layout.codeAddr);
  if (frame.rip < code || frame.rip >= code + BigInt(layout.codeSize)) return false;
  const view = new DataView(ctx.memory.buffer, ctx.memory.byteOffset, ctx.memory.byteLength);
  const entry = view.getBigUint64(PEB_ADDR + PebOffset.wasmTrapEntry, true);
  const image = BigInt(layout.imageAddr);
  if (entry < image || entry >= image + BigInt(layout.imageSize)) return false;
  const rsp = ((frame.rsp - RED_ZONE) & ~15n) - 8n;
  if (rsp < BigInt(layout.stackAddr) || frame.rsp > BigInt(layout.stackTop)) return false;
  // The CPU's frame on the ring-0 stack: RIP at top - 40, RSP at top - 16 (CS, RFLAGS and SS
  // stay as the CPU pushed them: CPL 3).
  view.setBigUint64(RING0_STACK_TOP - 40, entry, true);
  view.setBigUint64(RING0_STACK_TOP - 16, rsp, true);
  ctx.vm.setRegisters({
    ...regs,
    rip: BigInt(STUBS_ADDR + vector * STUB_SIZE + STUB_RESUME),
    rdi: frame.rip,
    rsi: regs.rbp,
    rdx: pageFault ? 1n : 0n,
    rcx: pageFault ? special.cr2 : 0n,
  });
  return true;
}

/** Where a host call's answer goes: the input buffer's encoder, and how much fits. */
export interface Reply {
  /** Writes `frame` into the input buffer; throws when it does not fit. */
  (frame: Frame): void;
}

/**
 * Serves one host call: runs the host function and writes HOST_RETURN, or HOST_ERROR with a
 * message truncated to fit the input buffer (`maxMessageBytes`). Synchronous when the function
 * is; a Promise that settles once the answer is written otherwise. `run` wraps the host
 * function's invocation (it marks the async context, so a re-entrant call can be refused).
 * Throws only when not even the HOST_ERROR fits: the exchange is then broken.
 */
export function serveHostCall(
  def: HostFunction | undefined,
  name: string,
  args: readonly Value[],
  reply: Reply,
  maxMessageBytes: number,
  sync: boolean,
  run: <T>(fn: () => T) => T,
): void | Promise<void> {
  const fail = (message: string) =>
    reply({ kind: "HOST_ERROR", message: truncateUtf8(message, maxMessageBytes) });
  if (!def) return fail(`no host function named "${truncateUtf8(name, 255)}"`);
  if (args.length !== def.params.length || args.some((a, i) => a.type !== def.params[i])) {
    return fail(
      `host function ${name} takes (${def.params.join(", ")}), the guest passed (${
        args.map((a) => a.type).join(", ")
      })`,
    );
  }
  const succeed = (result: unknown) => {
    let value: Value;
    try {
      value = toValue(result, def.result, name, -1);
    } catch (e) {
      return fail(`host function ${name} returned a bad value: ${errorText(e)}`);
    }
    try {
      reply({ kind: "HOST_RETURN", value });
    } catch (e) {
      // The result does not fit the input buffer.
      fail(`host function ${name}: ${errorText(e)}`);
    }
  };
  let result: unknown;
  try {
    result = run(() => def.fn(...args.map(fromValue)));
  } catch (e) {
    return fail(`host function ${name} threw: ${errorText(e)}`);
  }
  // `isInstance`: a returned revoked Proxy throws on a plain `instanceof`.
  if (isInstance(result, Promise)) {
    // A Promise subclass may override `then`/`catch` to throw: that is its failure, answered as such.
    try {
      if (sync) {
        // The synchronous path cannot wait; the promise's outcome is dropped, not lost silently.
        result.catch(() => {});
        return fail(
          `host function ${name} returned a Promise on the synchronous path (use call())`,
        );
      }
      return result.then(succeed, (e) => fail(`host function ${name} threw: ${errorText(e)}`));
    } catch (e) {
      return fail(
        `host function ${name} returned a Promise that cannot be awaited: ${errorText(e)}`,
      );
    }
  }
  succeed(result);
}

/** `text` cut to at most `maxBytes` bytes of UTF-8, at a character boundary. */
export function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = utf8.encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = Math.max(0, maxBytes);
  // Back up over continuation bytes (10xxxxxx) to the start of a character.
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return utf8Decoder.decode(bytes.subarray(0, end));
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Never throws, whatever was thrown (`describe.ts`). */
function errorText(e: unknown): string {
  return describeThrown(e);
}

function bigintText(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}
