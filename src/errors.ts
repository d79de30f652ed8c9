/**
 * The errors `@hl/sandbox` throws. Every one extends {@link SandboxError}, so one `instanceof`
 * check catches them all; the subclasses say what went wrong and carry its details.
 *
 * @module
 */

/**
 * The base class of every error this library throws.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, SandboxError } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("add", 1, 2);
 * } catch (err) {
 *   if (err instanceof SandboxError) console.error(err.name, err.message);
 * }
 * ```
 */
export class SandboxError extends Error {
  /** Creates an error with a message and, optionally, the error that caused it. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SandboxError";
  }
}

/**
 * The hypervisor could not be used: KVM is missing or not permitted, its API version is wrong, or
 * one of its calls failed. `code` says which: `"NO_HYPERVISOR"`, `"PERMISSION"`, `"API_VERSION"`,
 * `"HYPERVISOR"` (a failed ioctl), `"OS"` (memory or thread setup), `"INVALID_ARGUMENT"`,
 * `"INVALID_HANDLE"`, `"PANIC"` (a bug in the native library), or `"STATE"`.
 *
 * @example
 * ```ts
 * import { guests, HypervisorError, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: guests.testguest });
 * } catch (err) {
 *   if (err instanceof HypervisorError && err.code === "PERMISSION") {
 *     console.error("add yourself to the kvm group");
 *   }
 * }
 * ```
 */
export class HypervisorError extends SandboxError {
  /** Which kind of failure this is, e.g. `"NO_HYPERVISOR"` or `"PERMISSION"`. */
  readonly code: string;

  /** Creates an error for a hypervisor failure of kind `code`. */
  constructor(code: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HypervisorError";
    this.code = code;
  }
}

/** Which limit a {@linkcode ResourceLimitError} ran into. */
export type ResourceLimit = "RLIMIT_NOFILE" | "fs.file-max" | "memory" | "threads";

/**
 * Making a VM ran into a limit of the host (docs/design.md, "Scale"): open files
 * (`RLIMIT_NOFILE`: each live sandbox holds a few fds), the system's file table (`fs.file-max`),
 * memory or address space (`memory`: also `vm.max_map_count`, `RLIMIT_AS`, a memory cgroup) or
 * threads (`threads`: `RLIMIT_NPROC`, `kernel.threads-max`, a pids cgroup). `limit` names it; the
 * message says what to raise. Nothing was left behind: disposing other sandboxes, or raising the
 * limit, makes the next create work. A {@linkcode HypervisorError}, so older checks still match.
 *
 * @example
 * ```ts
 * import { guests, ResourceLimitError, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: guests.testguest });
 * } catch (err) {
 *   if (err instanceof ResourceLimitError) console.error(`raise ${err.limit}`);
 * }
 * ```
 */
export class ResourceLimitError extends HypervisorError {
  /** The limit that was reached. */
  readonly limit: ResourceLimit;

  /** Creates an error for a create that reached `limit`. */
  constructor(code: string, limit: ResourceLimit, message: string, options?: ErrorOptions) {
    super(code, message, options);
    this.name = "ResourceLimitError";
    this.limit = limit;
  }
}

/**
 * The native library (`libhl_rust_vmm.so`) was not found. The message lists where it was looked
 * for and how to build it.
 *
 * @example
 * ```ts
 * import { guests, LibraryNotFoundError, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: guests.testguest });
 * } catch (err) {
 *   if (err instanceof LibraryNotFoundError) console.error(err.searched);
 * }
 * ```
 */
export class LibraryNotFoundError extends SandboxError {
  /** The paths that were tried, in order. */
  readonly searched: readonly string[];

  /**
   * Creates the error from the paths tried; `hint` says how to get the library.
   */
  constructor(
    searched: readonly string[],
    hint = "build it with `deno task build` (cargo build --release)",
    options?: ErrorOptions,
  ) {
    const where = searched.length > 0 ? `; looked in: ${searched.join(", ")}` : "";
    super(`native library not found${where}. To fix: ${hint}`, options);
    this.name = "LibraryNotFoundError";
    this.searched = [...searched];
  }
}

/**
 * A Deno permission the library needs was not granted. `flag` is the command-line flag that grants
 * it (`--allow-ffi` for the native library; `--allow-read` only where FFI is not granted either).
 * With `--allow-ffi` the library reads its own files (the native library, built-in guests, guest
 * and module paths) through the C library, so `deno test --allow-ffi` is enough.
 *
 * @example
 * ```ts
 * import { guests, PermissionError, Sandbox } from "@hl/sandbox";
 * try {
 *   await using sb = await Sandbox.create({ guest: guests.testguest });
 * } catch (err) {
 *   if (err instanceof PermissionError) console.error(`run with ${err.flag}`);
 * }
 * ```
 */
export class PermissionError extends SandboxError {
  /** The flag that grants the permission, e.g. `"--allow-ffi"`. */
  readonly flag: string;

  /** Creates the error from the flag and what needed it (e.g. "loading the native library"). */
  constructor(flag: string, what: string, options?: ErrorOptions) {
    super(`${what} needs the ${flag} permission: run deno with ${flag}`, options);
    this.name = "PermissionError";
    this.flag = flag;
  }
}

/**
 * A built-in guest (`guests.testguest`, the `wasm-runtime` guest of `WasmSandbox`) is not built
 * yet. The message names the command that builds it (`deno task build` in a clone, the setup
 * entry point otherwise); `searched` lists the paths tried.
 *
 * @example
 * ```ts
 * import { GuestNotFoundError, guests } from "@hl/sandbox";
 * try {
 *   console.log(guests.testguest);
 * } catch (err) {
 *   if (err instanceof GuestNotFoundError) console.error(err.message);
 * }
 * ```
 */
export class GuestNotFoundError extends SandboxError {
  /** The guest's name, e.g. `"testguest"`. */
  readonly guest: string;
  /** The paths that were tried, in order. */
  readonly searched: readonly string[];

  /** Creates the error from the guest's name, the paths tried and the command that fixes it. */
  constructor(guest: string, searched: readonly string[], hint: string, options?: ErrorOptions) {
    const where = searched.length > 0 ? `; looked in: ${searched.join(", ")}` : "";
    super(`the built-in guest "${guest}" is not built${where}. To fix: ${hint}`, options);
    this.name = "GuestNotFoundError";
    this.guest = guest;
    this.searched = [...searched];
  }
}

/**
 * The guest binary is not a loadable image: not an x86-64 ELF64 executable, malformed or
 * truncated headers, overlapping or out-of-range segments, or an unsupported feature (a dynamic
 * interpreter, TLS, a relocation other than `R_X86_64_RELATIVE`).
 *
 * @example
 * ```ts
 * import { GuestImageError, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: new Uint8Array(16) });
 * } catch (err) {
 *   if (err instanceof GuestImageError) console.error(`bad guest: ${err.message}`);
 * }
 * ```
 */
export class GuestImageError extends SandboxError {
  /** Creates an error that says what is wrong with the image. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestImageError";
  }
}

/**
 * The guest was built for another ABI version, or finished initialising without saying which
 * version it was built for.
 *
 * @example
 * ```ts
 * import { GuestAbiError, guests, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: guests.testguest });
 * } catch (err) {
 *   if (err instanceof GuestAbiError) console.error("rebuild the guest", err.message);
 * }
 * ```
 */
export class GuestAbiError extends SandboxError {
  /** Creates an error that says which versions disagree. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestAbiError";
  }
}

/**
 * The guest declares a host function (`hl_guest::host_functions!`) that `hostFunctions` does not
 * provide, or provides with other parameter or result types. Thrown by `Sandbox.create`, before
 * any call; no sandbox is made. The native counterpart of `WasmLinkError`. `importName` is the
 * first such import; the message lists every one. Guests that declare nothing are not checked.
 *
 * @example
 * ```ts
 * import { GuestLinkError, Sandbox } from "@hl/sandbox";
 * try {
 *   await Sandbox.create({ guest: "path/to/importguest", hostFunctions: {} });
 * } catch (err) {
 *   if (err instanceof GuestLinkError) console.error(err.importName, err.message);
 * }
 * ```
 */
export class GuestLinkError extends SandboxError {
  /** The name of the (first) declared host function that is missing or of another type. */
  readonly importName: string;

  /** Creates the error; the message says what is missing or differs. */
  constructor(message: string, importName: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestLinkError";
    this.importName = importName;
  }
}

/**
 * An argument or option was wrong: an unknown function name, the wrong number or type of call
 * arguments, a value out of range, or a bad `Sandbox.create` option. It plays the role of a
 * `TypeError`/`RangeError`, but extends {@link SandboxError}.
 *
 * @example
 * ```ts
 * import { ArgumentError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("add", 1); // add takes two arguments
 * } catch (err) {
 *   if (err instanceof ArgumentError) console.error(err.message);
 * }
 * ```
 */
export class ArgumentError extends SandboxError {
  /** Creates an error that says which argument or option is wrong and why. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ArgumentError";
  }
}

/**
 * The guest function reported an error (an `ERROR` frame). `code` is 1 for an unknown function,
 * 2 for bad arguments, 3 when a host call failed and the guest passed that on, and 1000 or more
 * for the guest function's own codes. The sandbox stays usable.
 *
 * @example
 * ```ts
 * import { GuestError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("fail", 1001, "bad input"); // the guest returns an error
 * } catch (err) {
 *   if (err instanceof GuestError && err.code >= 1000) console.error(err.code, err.message);
 * }
 * ```
 */
export class GuestError extends SandboxError {
  /** The error code the guest returned. */
  readonly code: number;

  /** Creates an error from the guest's code and message. */
  constructor(code: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestError";
    this.code = code;
  }
}

/**
 * The guest panicked. The sandbox is poisoned: later calls throw {@link SandboxPoisonedError}.
 *
 * @example
 * ```ts
 * import { GuestPanicError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("panic", "boom"); // the guest panics
 * } catch (err) {
 *   if (err instanceof GuestPanicError) console.error(err.guestMessage);
 * }
 * ```
 */
export class GuestPanicError extends SandboxError {
  /** The panic message, as the guest wrote it. */
  readonly guestMessage: string;

  /** Creates an error from the guest's panic message. */
  constructor(guestMessage: string, options?: ErrorOptions) {
    super(`guest panicked: ${guestMessage}`, options);
    this.name = "GuestPanicError";
    this.guestMessage = guestMessage;
  }
}

/** The details of a guest CPU fault; every field is optional because not every exit has it. */
export interface GuestFaultDetails {
  /** The CPU exception number (14 = page fault), when known. */
  vector?: number;
  /** The instruction pointer at the fault, when known. */
  rip?: bigint;
  /** The faulting address: CR2 for a page fault, or the address of an access outside memory. */
  address?: bigint;
  /** The exception's error code, when it has one. */
  errorCode?: bigint;
}

/** Short names of the x86 exception vectors, indexed by vector number. */
const VECTOR_NAMES: readonly (string | undefined)[] = [
  "#DE",
  "#DB",
  "NMI",
  "#BP",
  "#OF",
  "#BR",
  "#UD",
  "#NM",
  "#DF",
  "#CSO",
  "#TS",
  "#NP",
  "#SS",
  "#GP",
  "#PF",
  undefined,
  "#MF",
  "#AC",
  "#MC",
  "#XM",
  "#VE",
  "#CP",
];

/**
 * Returns the short name of an x86 exception vector (`14` → `"#PF"`), or `"#<n>"` for a vector
 * without one and `"unknown"` when the vector is not known.
 *
 * @example
 * ```ts
 * import { vectorName } from "./errors.ts";
 * vectorName(13); // "#GP"
 * ```
 */
export function vectorName(vector: number | undefined): string {
  if (vector === undefined) return "unknown";
  return VECTOR_NAMES[vector] ?? `#${vector}`;
}

function hex(n: bigint): string {
  return `0x${n.toString(16)}`;
}

function describeFault(details: GuestFaultDetails, stackOverflow: boolean): string {
  const what = stackOverflow
    ? "guest stack overflow"
    : `guest CPU exception ${vectorName(details.vector)}`;
  const parts: string[] = [];
  if (details.rip !== undefined) parts.push(`rip ${hex(details.rip)}`);
  if (details.address !== undefined) parts.push(`address ${hex(details.address)}`);
  if (details.errorCode !== undefined) parts.push(`error code ${hex(details.errorCode)}`);
  return parts.length > 0 ? `${what} (${parts.join(", ")})` : what;
}

/**
 * The guest hit a CPU exception, a triple fault (vector unknown), or accessed a physical address
 * outside its memory (`address` set). The sandbox is poisoned. A stack overflow is the subclass
 * {@link StackOverflowError}, with `stackOverflow` true.
 *
 * @example
 * ```ts
 * import { GuestFaultError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("ud2"); // an invalid instruction: #UD
 * } catch (err) {
 *   if (err instanceof GuestFaultError) console.error(err.vectorName, err.rip, err.address);
 * }
 * ```
 */
export class GuestFaultError extends SandboxError {
  /** The CPU exception number, or `undefined` when unknown (a triple fault). */
  readonly vector: number | undefined;
  /** The short name of the vector, e.g. `"#PF"`, or `"unknown"`. */
  readonly vectorName: string;
  /** The instruction pointer at the fault, when known. */
  readonly rip: bigint | undefined;
  /** The faulting address (CR2 of a page fault, or the address accessed outside memory). */
  readonly address: bigint | undefined;
  /** The exception's error code, when it has one. */
  readonly errorCode: bigint | undefined;
  /** Whether the fault was a page fault in the stack guard page. */
  readonly stackOverflow: boolean;

  /**
   * Creates a fault error; `message` defaults to a description built from `details`.
   */
  constructor(details: GuestFaultDetails, message?: string, options?: ErrorOptions) {
    super(message ?? describeFault(details, false), options);
    this.name = "GuestFaultError";
    this.vector = details.vector;
    this.vectorName = vectorName(details.vector);
    this.rip = details.rip;
    this.address = details.address;
    this.errorCode = details.errorCode;
    this.stackOverflow = false;
  }
}

/**
 * The guest overflowed its stack (a page fault in the guard page below the stack). Raise the
 * `stackSize` option if the guest legitimately needs more.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, StackOverflowError } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("stack_overflow"); // unbounded recursion
 * } catch (err) {
 *   if (err instanceof StackOverflowError) console.error("raise stackSize");
 * }
 * ```
 */
export class StackOverflowError extends GuestFaultError {
  /** Always true: the fault was in the stack guard page. */
  override readonly stackOverflow: boolean;

  /** Creates a stack overflow error from the page fault's details. */
  constructor(details: GuestFaultDetails, message?: string, options?: ErrorOptions) {
    super(details, message ?? describeFault(details, true), options);
    this.name = "StackOverflowError";
    this.stackOverflow = true;
  }
}

/**
 * The call ran longer than its timeout and was stopped. The sandbox is poisoned.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, TimeoutError } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.callWithOptions({ timeoutMs: 100 }, "spin"); // loops forever
 * } catch (err) {
 *   if (err instanceof TimeoutError) console.error(`gave up after ${err.timeoutMs} ms`);
 * }
 * ```
 */
export class TimeoutError extends SandboxError {
  /** The timeout that was exceeded, in milliseconds. */
  readonly timeoutMs: number;

  /** Creates an error for a call stopped after `timeoutMs` milliseconds. */
  constructor(timeoutMs: number, options?: ErrorOptions) {
    super(`call timed out after ${timeoutMs} ms`, options);
    this.name = "TimeoutError";
    this.timeoutMs = timeoutMs;
  }
}

/**
 * The call was cancelled by its `AbortSignal` or by `interrupt()`. The sandbox is poisoned.
 * `cause` holds the signal's reason, when there was one.
 *
 * @example
 * ```ts
 * import { CancelledError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * const controller = new AbortController();
 * setTimeout(() => controller.abort(), 50);
 * try {
 *   await sandbox.callWithOptions({ signal: controller.signal }, "spin");
 * } catch (err) {
 *   if (err instanceof CancelledError) console.error("cancelled");
 * }
 * ```
 */
export class CancelledError extends SandboxError {
  /** Creates a cancellation error. */
  constructor(message = "call cancelled", options?: ErrorOptions) {
    super(message, options);
    this.name = "CancelledError";
  }
}

/**
 * The call made more VM exits (logs, host calls) than its budget allows (`maxExitsPerCall`,
 * default {@linkcode DEFAULT_MAX_EXITS_PER_CALL}): a flood is stopped at a known cost. The
 * sandbox is poisoned.
 *
 * @example
 * ```ts
 * import { ExitBudgetError, guests, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest, maxExitsPerCall: 100 });
 * try {
 *   await sandbox.call("log_flood", 1000);
 * } catch (err) {
 *   if (err instanceof ExitBudgetError) console.error(`stopped after ${err.maxExits} exits`);
 * }
 * ```
 */
export class ExitBudgetError extends SandboxError {
  /** The budget that was exceeded. */
  readonly maxExits: number;

  /** Creates the error for a call that exceeded `maxExits` exits. */
  constructor(maxExits: number, what: string, options?: ErrorOptions) {
    super(`${what}: more than ${maxExits} VM exits in one call (maxExitsPerCall)`, options);
    this.name = "ExitBudgetError";
    this.maxExits = maxExits;
  }
}

/** The default `maxExitsPerCall`: one million exits (about 20-60 s of exits on one core). */
export const DEFAULT_MAX_EXITS_PER_CALL = 1_000_000;

/**
 * The guest broke the wire protocol: a malformed frame, an unexpected exit, or a frame of the
 * wrong kind. The sandbox is poisoned.
 *
 * @example
 * ```ts
 * import { guests, ProtocolError, Sandbox } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * try {
 *   await sandbox.call("forbidden", 14); // reads an I/O port the ABI only writes
 * } catch (err) {
 *   if (err instanceof ProtocolError) console.error(err.detail);
 * }
 * ```
 */
export class ProtocolError extends SandboxError {
  /** What exactly was wrong with the guest's data. */
  readonly detail: string;

  /** Creates an error from a description of the violation. */
  constructor(detail: string, options?: ErrorOptions) {
    super(`guest protocol error: ${detail}`, options);
    this.name = "ProtocolError";
    this.detail = detail;
  }
}

/**
 * The sandbox cannot be used any more because an earlier call panicked, faulted, timed out, was
 * cancelled or broke the protocol. `cause` is that earlier error. Create a new sandbox.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, SandboxPoisonedError } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * await sandbox.call("panic", "boom").catch(() => {}); // poisons the sandbox
 * try {
 *   await sandbox.call("add", 1, 2);
 * } catch (err) {
 *   if (err instanceof SandboxPoisonedError) console.error("earlier failure:", err.cause);
 * }
 * ```
 */
export class SandboxPoisonedError extends SandboxError {
  /** The error that made the sandbox unusable. */
  declare readonly cause: Error;

  /** Creates the error from the failure that poisoned the sandbox. */
  constructor(cause: Error) {
    super(`sandbox is unusable after an earlier failure: ${cause.message}`, { cause });
    this.name = "SandboxPoisonedError";
  }
}

/**
 * The sandbox was disposed; it cannot run calls any more.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, SandboxDisposedError } from "@hl/sandbox";
 * await using sandbox = await Sandbox.create({ guest: guests.testguest });
 * await sandbox.dispose();
 * try {
 *   await sandbox.call("add", 1, 2);
 * } catch (err) {
 *   if (err instanceof SandboxDisposedError) console.error("already disposed");
 * }
 * ```
 */
export class SandboxDisposedError extends SandboxError {
  /** Creates the error. */
  constructor(message = "sandbox has been disposed", options?: ErrorOptions) {
    super(message, options);
    this.name = "SandboxDisposedError";
  }
}

/**
 * A host function called back into the sandbox that is calling it (directly, or after an
 * `await`). The outer call is waiting for the host function, so the inner call could never run:
 * it fails at once instead of deadlocking. The outer call is not affected.
 *
 * @example
 * ```ts
 * import { ReentrantCallError, Sandbox } from "@hl/sandbox";
 * const sb: Sandbox = await Sandbox.create({
 *   guest: "guest/target/x86_64-unknown-linux-gnu/release/testguest",
 *   hostFunctions: {
 *     double: {
 *       params: ["i32"],
 *       result: "i32",
 *       fn: async (x: number) => {
 *         try {
 *           await sb.call("add", x, x);
 *         } catch (err) {
 *           console.log(err instanceof ReentrantCallError); // true
 *         }
 *         return 2 * x;
 *       },
 *     },
 *   },
 * });
 * console.log(await sb.call("call_host", "double", 21)); // 42
 * ```
 */
export class ReentrantCallError extends SandboxError {
  /** Creates the error; `message` says which call was refused. */
  constructor(
    message = "a host function called back into its own sandbox",
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = "ReentrantCallError";
  }
}

/**
 * A JavaScript exception from a `JsSandbox`: thrown by the script (or a rejected Promise) and not
 * caught there. `jsName`, `jsMessage` and `jsStack` are the JS error's `name`, `message` and
 * `stack` (QuickJS's format, `    at fn (<eval>:line:col)` lines); for a thrown non-error value
 * (`throw 42`) `nonError` is true, `jsName` is `""` and `jsMessage` is `String(value)`. A JS
 * exception does not poison the sandbox: the engine is in a consistent state.
 *
 * @example
 * ```ts
 * import { JsError, JsSandbox } from "@hl/sandbox";
 * await using js = await JsSandbox.create({ source: "function f() { throw new TypeError('no'); }" });
 * try {
 *   await js.call("f");
 * } catch (err) {
 *   if (err instanceof JsError) console.log(err.jsName, err.jsMessage); // TypeError no
 * }
 * ```
 */
export class JsError extends SandboxError {
  /** The JS error's `name` (`"TypeError"`, ...); `""` for a thrown non-error value. */
  readonly jsName: string;
  /** The JS error's `message`. */
  readonly jsMessage: string;
  /** The JS stack trace as the engine wrote it (may be `""`). */
  readonly jsStack: string;
  /** Whether the script threw something that is not an object (`throw 42`). */
  readonly nonError: boolean;

  /** Creates the error from what the engine reported. */
  constructor(
    jsName: string,
    jsMessage: string,
    jsStack: string,
    nonError = false,
    options?: ErrorOptions,
  ) {
    super(jsName ? `${jsName}: ${jsMessage}` : `uncaught ${jsMessage}`, options);
    this.name = "JsError";
    this.jsName = jsName;
    this.jsMessage = jsMessage;
    this.jsStack = jsStack;
    this.nonError = nonError;
  }
}

/**
 * A guest's network request was refused by the sandbox's `net` policy before anything left the
 * host (docs/networking.md): no rule allows the URL or method, the name resolved to a private,
 * loopback, link-local or metadata address no rule names, a forbidden method (`CONNECT`,
 * `TRACE`), credentials in the URL, CR/LF in a header, or a per-call limit. `rule` says which
 * check refused it (for example `"host"`, `"path"`, `"address"`, `"method"`, `"limit:requests"`).
 *
 * @example
 * ```ts
 * import { Net, NetworkPolicyError } from "@hl/sandbox";
 * await using net = new Net({ allow: ["https://api.example.com/v1/"] });
 * try {
 *   await net.request({ url: "https://evil.example.net/" });
 * } catch (err) {
 *   if (err instanceof NetworkPolicyError) console.log(err.rule); // host
 * }
 * ```
 */
export class NetworkPolicyError extends SandboxError {
  /** Which check refused the request (`"host"`, `"path"`, `"address"`, `"limit:bytes"`, ...). */
  readonly rule: string;

  /** Creates the error for the check `rule`. */
  constructor(rule: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NetworkPolicyError";
    this.rule = rule;
  }
}

/**
 * An allowed network request failed on the way: the connection or name resolution failed, the
 * timeout passed (`reason: "timeout"`), or the response body went past its cap
 * (`reason: "body-limit"`, cut without buffering the rest). `reason` names it.
 *
 * @example
 * ```ts
 * import { Net, NetworkError } from "@hl/sandbox";
 * await using net = new Net({ allow: ["http://127.0.0.1:9/"], limits: { timeoutMs: 500 } });
 * try {
 *   await net.request({ url: "http://127.0.0.1:9/" });
 * } catch (err) {
 *   if (err instanceof NetworkError) console.log(err.reason); // connect
 * }
 * ```
 */
export class NetworkError extends SandboxError {
  /** What failed: `"connect"`, `"dns"`, `"timeout"`, `"body-limit"`, `"aborted"`. */
  readonly reason: string;

  /** Creates the error for the failure `reason`. */
  constructor(reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NetworkError";
    this.reason = reason;
  }
}
