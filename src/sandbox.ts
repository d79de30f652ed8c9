/**
 * `Sandbox`: a guest binary in its own micro-VM, with typed calls both ways.
 *
 * @module
 */

import { ABI_VERSION, isValueType, Port, type ValueType } from "./abi.ts";
import {
  ArgumentError,
  CancelledError,
  GuestAbiError,
  GuestError,
  type GuestFaultDetails,
  GuestFaultError,
  GuestPanicError,
  HypervisorError,
  ProtocolError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  StackOverflowError,
  TimeoutError,
} from "./errors.ts";
import { ExitKind, MicroVm, type VmStats } from "../ffi/vm.ts";
import {
  type Frame,
  FrameDecoder,
  FrameEncoder,
  fromValue,
  type FunctionSignature,
  type JsValue,
  toValue,
  toValues,
  type Value,
} from "./wire.ts";
import { parseElf } from "./elf.ts";
import { GUEST_VCPU_CONFIG, readCpuFault, stubVector } from "./system.ts";
import { readSource } from "./source.ts";
import {
  computeLayout,
  initializeMemory,
  initialRegisters,
  isInGuardPage,
  type MemoryLayout,
  readGuestAbiVersion,
} from "./layout.ts";

/** A value that crosses the sandbox boundary; `undefined` stands for `void`. */
export type { JsValue } from "./wire.ts";
/** The type names of the guest ABI. */
export type { ValueType } from "./abi.ts";
/** A guest function's signature. */
export type { FunctionSignature } from "./wire.ts";

/** A host function the guest may call by name. */
export interface HostFunction {
  /** Parameter types, checked on every call from the guest. */
  params: readonly ValueType[];
  /** Result type (`"void"` for none). */
  result: ValueType;
  /**
   * The implementation. It may return a Promise on the asynchronous path (`call`); a throw or
   * rejection is returned to the guest as an error, which the guest may surface.
   */
  // deno-lint-ignore no-explicit-any
  fn: (...args: any[]) => JsValue | Promise<JsValue>;
}

/** Sizes of the guest's memory regions (bytes, multiples of 4096). */
export interface MemoryOptions {
  /** Heap size (default 8 MiB). */
  heapSize?: number;
  /** Stack size (default 1 MiB); an unmapped guard page sits below it. */
  stackSize?: number;
  /** Host → guest buffer (default 4 MiB): bounds the size of call arguments. */
  inputSize?: number;
  /** Guest → host buffer (default 4 MiB): bounds the size of results. */
  outputSize?: number;
}

/** Options of {@linkcode Sandbox.create}. */
export interface SandboxOptions extends MemoryOptions {
  /** The guest: a path, a `file:` URL, or the ELF bytes. */
  guest: string | URL | Uint8Array;
  /** Host functions the guest may call, by name. */
  hostFunctions?: Record<string, HostFunction>;
  /** Default timeout of every call, in milliseconds (none by default). */
  timeoutMs?: number;
  /** Timeout of the guest's initialisation (default 30 000 ms). */
  initTimeoutMs?: number;
  /** Receives the guest's log messages (default: dropped). */
  onLog?: (level: number, message: string) => void;
  /** Path of `libhl_rust_vmm.so` (default: `$HL_SANDBOX_LIB`, then the local build). */
  library?: string;
}

/** Per-call options. */
export interface CallOptions {
  /** Timeout in milliseconds; the sandbox is poisoned when it fires. */
  timeoutMs?: number;
  /** Cancels the call; the sandbox is poisoned when it fires during the call. */
  signal?: AbortSignal;
}

/** Counters of one sandbox's VM: ioctls, exits and runs since it was created. */
export type SandboxStats = VmStats;

// The async path (a run on a pool thread) or the synchronous fast path.
type Runner = (vm: MicroVm) => number | Promise<number>;
const runAsync: Runner = (vm) => vm.run();
const runSync: Runner = (vm) => vm.runSync();

/** What stopping a call was for, when it was stopped. */
type StopReason = { kind: "timeout"; ms: number } | { kind: "cancel"; reason?: unknown };

const finalizer = new FinalizationRegistry<MicroVm>((vm) => {
  try {
    vm.destroy();
  } catch {
    // Nothing to report to at GC time.
  }
});

/**
 * A guest binary running in its own KVM micro-VM. Create with {@linkcode Sandbox.create}, call
 * guest functions with {@linkcode Sandbox.call}, and dispose (or `await using`) when done.
 *
 * @example
 * ```ts
 * import { Sandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({
 *   guest: "guest/target/x86_64-unknown-linux-gnu/release/testguest",
 *   hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
 * });
 * console.log(await sb.call("add", 2, 3)); // 5
 * console.log(await sb.call("call_host", "double", 21)); // 42
 * ```
 */
export class Sandbox implements AsyncDisposable {
  #vm: MicroVm | undefined;
  #memory: Uint8Array | undefined;
  #encoder: FrameEncoder | undefined;
  #decoder: FrameDecoder | undefined;
  readonly #layout: MemoryLayout;
  readonly #functions: Map<string, FunctionSignature>;
  readonly #hostFunctions: Map<string, HostFunction>;
  readonly #options: SandboxOptions;
  #poison: Error | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #stop: StopReason | undefined;
  /** Wakes a call that is waiting for an asynchronous host function (stop or dispose). */
  #wake: (() => void) | undefined;
  #busy = false;

  private constructor(
    vm: MicroVm,
    memory: Uint8Array,
    layout: MemoryLayout,
    hostFunctions: Map<string, HostFunction>,
    options: SandboxOptions,
  ) {
    this.#vm = vm;
    this.#memory = memory;
    this.#layout = layout;
    this.#encoder = new FrameEncoder(
      memory.subarray(layout.inputAddr, layout.inputAddr + layout.inputSize),
      "inputSize",
    );
    this.#decoder = new FrameDecoder(
      memory.subarray(layout.outputAddr, layout.outputAddr + layout.outputSize),
    );
    this.#functions = new Map();
    this.#hostFunctions = hostFunctions;
    this.#options = options;
  }

  /**
   * Loads the guest into a new micro-VM and runs its initialisation, which publishes the guest's
   * function table. Bad options or a bad image are rejected before a VM is created.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * const sb = await Sandbox.create({ guest: "path/to/guest", heapSize: 16 << 20 });
   * console.log(sb.functions.map((f) => f.name));
   * await sb.dispose();
   * ```
   */
  static async create(options: SandboxOptions): Promise<Sandbox> {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("Sandbox.create takes an options object with a `guest`");
    }
    const hostFunctions = checkHostFunctions(options.hostFunctions ?? {});
    checkTimeout(options.timeoutMs, "timeoutMs");
    checkTimeout(options.initTimeoutMs, "initTimeoutMs");
    const bytes = await readSource(options.guest, "guest");
    const elf = parseElf(bytes);
    const layout = computeLayout(elf, options);
    const vm = MicroVm.create(options.library);
    let sandbox: Sandbox | undefined;
    try {
      const memory = vm.mapMemory(0, layout.memorySize);
      initializeMemory(memory, layout, elf);
      vm.createVcpu(GUEST_VCPU_CONFIG);
      const regs = initialRegisters(layout, elf.entryOffset);
      vm.setRegisters({
        rip: BigInt(regs.rip),
        rsp: BigInt(regs.rsp),
        rdi: BigInt(regs.rdi),
        rflags: BigInt(regs.rflags),
      });
      sandbox = new Sandbox(vm, memory, layout, hostFunctions, options);
      await sandbox.#initialise(options.initTimeoutMs ?? 30_000);
    } catch (e) {
      vm.destroy();
      throw e;
    }
    finalizer.register(sandbox, vm, sandbox);
    return sandbox;
  }

  async #initialise(timeoutMs: number): Promise<void> {
    let frame: Frame;
    try {
      frame = await this.#exchange(runAsync, { timeoutMs }, "initialisation");
    } catch (e) {
      // A guest of another ABI version writes its version and then gives up (docs/abi.md):
      // report the mismatch, with how it gave up as the cause.
      const version = this.#memory ? readGuestAbiVersion(this.#memory) : 0;
      if (version !== 0 && version !== ABI_VERSION) {
        throw this.#poisonWith(abiVersionError(version, e)!);
      }
      throw e;
    }
    if (frame.kind !== "FUNCTION_TABLE") {
      throw this.#poisonWith(
        new ProtocolError(`expected FUNCTION_TABLE after initialisation, got ${frame.kind}`),
      );
    }
    const mismatch = abiVersionError(readGuestAbiVersion(this.#memory!));
    if (mismatch) throw this.#poisonWith(mismatch);
    for (const f of frame.functions) {
      if (this.#functions.has(f.name)) {
        throw this.#poisonWith(new ProtocolError(`function table lists ${f.name} twice`));
      }
      this.#functions.set(f.name, f);
    }
  }

  /** The guest's functions, as its function table declared them. */
  get functions(): readonly FunctionSignature[] {
    return [...this.#functions.values()];
  }

  /** Whether a panic, fault, timeout or cancellation has made this sandbox unusable. */
  get poisoned(): boolean {
    return this.#poison !== undefined;
  }

  /** Whether {@linkcode dispose} has run. */
  get disposed(): boolean {
    return this.#vm === undefined;
  }

  /**
   * Calls guest function `name`. Arguments are checked against the guest's signature before the
   * VM is entered (an {@linkcode ArgumentError} otherwise). Never blocks the event loop; calls on
   * one sandbox run one at a time, in order.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * const text: string = await sb.call("echo", "hello") as string;
   * ```
   */
  call(name: string, ...args: unknown[]): Promise<JsValue> {
    return this.callWithOptions({}, name, ...args);
  }

  /**
   * Calls guest function `name` with a timeout and/or an `AbortSignal`. When either fires the
   * guest is stopped, the promise rejects with {@linkcode TimeoutError} or
   * {@linkcode CancelledError}, and the sandbox is poisoned.
   *
   * @example
   * ```ts
   * import { Sandbox, TimeoutError } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * try {
   *   await sb.callWithOptions({ timeoutMs: 100 }, "spin");
   * } catch (e) {
   *   console.log(e instanceof TimeoutError); // true
   * }
   * ```
   */
  callWithOptions(options: CallOptions, name: string, ...args: unknown[]): Promise<JsValue> {
    // Check and encode-ready validation happens now, so a bad call fails without queueing.
    let values: Value[];
    let signature: FunctionSignature;
    try {
      this.#usable();
      checkTimeout(options.timeoutMs, "timeoutMs");
      signature = this.#signature(name);
      values = toValues(args, signature.params, name);
    } catch (e) {
      return Promise.reject(e);
    }
    const run = this.#queue.then(() => this.#call(runAsync, options, signature, values));
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Calls guest function `name` on the synchronous fast path: blocks this thread until the call
   * returns, so it is for short calls only. Host functions must be synchronous here. No timeout
   * (use the asynchronous `call` for anything that may run long).
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * await using sb = await Sandbox.create({ guest: "path/to/testguest" });
   * console.log(sb.callSync("add", 1, 2)); // 3
   * ```
   */
  callSync(name: string, ...args: unknown[]): JsValue {
    this.#usable();
    if (this.#busy) throw new SandboxError("another call is in progress on this sandbox");
    const signature = this.#signature(name);
    const values = toValues(args, signature.params, name);
    const result = this.#call(runSync, {}, signature, values);
    if (result instanceof Promise) {
      // Unreachable: with the synchronous runner every step is synchronous.
      throw new SandboxError("callSync: internal error, the synchronous path went asynchronous");
    }
    return result;
  }

  /** Stops the call in progress (it rejects with {@linkcode CancelledError}); no-op when idle. */
  interrupt(): void {
    if (!this.#vm || !this.#busy) return;
    this.#requestStop({ kind: "cancel" });
  }

  /** Stops the call in progress: kicks the vCPU out of a run and wakes a host-function wait. */
  #requestStop(reason: StopReason): void {
    this.#stop ??= reason;
    this.#vm?.interrupt();
    this.#wake?.();
  }

  /** Counters of this sandbox's VM (ioctls, exits, runs), for benchmarks. */
  stats(): SandboxStats {
    this.#live();
    return this.#vm!.stats();
  }

  /**
   * Destroys the VM and frees its memory. Idempotent. A call in progress is interrupted and
   * rejects with {@linkcode SandboxDisposedError}.
   *
   * @example
   * ```ts
   * import { Sandbox } from "@hl/sandbox";
   * const sb = await Sandbox.create({ guest: "path/to/testguest" });
   * await sb.dispose();
   * await sb.dispose(); // no-op
   * ```
   */
  dispose(): Promise<void> {
    const vm = this.#vm;
    if (vm) {
      this.#vm = undefined;
      this.#memory = undefined;
      this.#encoder = undefined;
      this.#decoder = undefined;
      finalizer.unregister(this);
      vm.destroy();
      this.#wake?.();
    }
    return Promise.resolve();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #live(): void {
    if (!this.#vm) throw new SandboxDisposedError();
  }

  #usable(): void {
    this.#live();
    if (this.#poison) throw new SandboxPoisonedError(this.#poison);
  }

  #signature(name: string): FunctionSignature {
    if (typeof name !== "string") {
      throw new ArgumentError(`the function name must be a string, got ${typeof name}`);
    }
    const signature = this.#functions.get(name);
    if (!signature) {
      const known = [...this.#functions.keys()].join(", ");
      throw new ArgumentError(`the guest has no function "${name}" (it has: ${known})`);
    }
    return signature;
  }

  #poisonWith<E extends Error>(error: E): E {
    this.#poison ??= error;
    return error;
  }

  /** One guest call: write CALL, run the exchange, check the result against the signature. */
  #call(
    runner: Runner,
    options: CallOptions,
    signature: FunctionSignature,
    values: Value[],
  ): JsValue | Promise<JsValue> {
    this.#usable();
    this.#encoder!.encode({ kind: "CALL", name: signature.name, args: values });
    const finish = (frame: Frame): JsValue => {
      if (frame.kind === "ERROR") throw new GuestError(frame.code, frame.message);
      if (frame.kind !== "RETURN") {
        throw this.#poisonWith(new ProtocolError(`expected RETURN or ERROR, got ${frame.kind}`));
      }
      if (frame.value.type !== signature.result) {
        throw this.#poisonWith(
          new ProtocolError(
            `${signature.name} returned a ${frame.value.type}, its signature says ${signature.result}`,
          ),
        );
      }
      return fromValue(frame.value);
    };
    const frame = this.#exchange(runner, options, signature.name);
    return frame instanceof Promise ? frame.then(finish) : finish(frame);
  }

  /**
   * Runs the guest until it signals DONE and returns the frame it left in the output buffer,
   * serving host calls and logs on the way. Synchronous when `runner` and every host function
   * are; a Promise otherwise.
   */
  #exchange(runner: Runner, options: CallOptions, what: string): Frame | Promise<Frame> {
    const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
    const signal = options.signal;
    if (signal?.aborted) {
      return Promise.reject(new CancelledError(`${what}: cancelled before it started`));
    }
    this.#busy = true;
    this.#stop = undefined;
    // A host function may never settle: a stop or dispose must not wait for it.
    const woken = new Promise<void>((resolve) => this.#wake = resolve);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const onAbort = () => this.#requestStop({ kind: "cancel", reason: signal?.reason });
    if (timeoutMs !== undefined && runner === runAsync) {
      timer = setTimeout(() => this.#requestStop({ kind: "timeout", ms: timeoutMs }), timeoutMs);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      this.#busy = false;
      this.#wake = undefined;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const afterHostCall = (pending: Promise<void>): Promise<Frame> => {
      // The loser of the race settles later; its outcome no longer matters.
      pending.catch(() => {});
      return Promise.race([pending, woken]).then(() => loop());
    };

    const loop = (): Frame | Promise<Frame> => {
      while (true) {
        if (this.#stop) return this.#stopped(what);
        const vm = this.#vm;
        if (!vm) {
          throw new SandboxDisposedError(`${what}: the sandbox was disposed during the call`);
        }
        const kind = runner(vm);
        if (kind instanceof Promise) return kind.then((k) => continueWith(k));
        const next = this.#onExit(kind, what, true);
        if (next === "resume") continue;
        if (next instanceof Promise) return afterHostCall(next);
        return next;
      }
    };
    const continueWith = (kind: number): Frame | Promise<Frame> => {
      const next = this.#onExit(kind, what, false);
      if (next === "resume") return loop();
      if (next instanceof Promise) return afterHostCall(next);
      return next;
    };

    let result: Frame | Promise<Frame>;
    try {
      result = loop();
    } catch (e) {
      cleanup();
      throw e;
    }
    if (result instanceof Promise) {
      return result.finally(cleanup);
    }
    cleanup();
    return result;
  }

  /** Handles one exit: the final frame, "resume", or a Promise that settles before resuming. */
  #onExit(kind: number, what: string, sync: boolean): Frame | "resume" | Promise<void> {
    const vm = this.#vm;
    if (!vm) throw new SandboxDisposedError(`${what}: the sandbox was disposed during the call`);
    switch (kind) {
      case ExitKind.IoOut:
        return this.#onPort(vm, vm.exitPort, what, sync);
      case ExitKind.Interrupted:
        if (this.#stop) return this.#stopped(what);
        // An interrupt nobody asked for through this call (e.g. dispose racing): cancelled.
        throw this.#poisonWith(new CancelledError(`${what}: interrupted`));
      case ExitKind.Shutdown:
        throw this.#poisonWith(
          new GuestFaultError(
            {},
            `${what}: the guest triple-faulted (an exception it could not handle)`,
          ),
        );
      case ExitKind.Mmio: {
        const exit = vm.lastExit();
        const address = exit.kind === "mmio" ? exit.address : undefined;
        throw this.#poisonWith(
          new GuestFaultError(
            { address },
            `${what}: the guest accessed guest-physical address 0x${
              address?.toString(16)
            }, outside its memory`,
          ),
        );
      }
      case ExitKind.Halt:
        throw this.#poisonWith(
          new ProtocolError(`${what}: the guest halted instead of signalling`),
        );
      case ExitKind.IoIn:
        throw this.#poisonWith(
          new ProtocolError(`${what}: the guest read I/O port 0x${vm.exitPort.toString(16)}`),
        );
      default: {
        const exit = vm.lastExit();
        let rip = "unknown";
        try {
          rip = `0x${vm.getRegisters().rip.toString(16)}`;
        } catch {
          // Diagnostics only.
        }
        throw this.#poisonWith(
          new HypervisorError(
            "HYPERVISOR",
            `${what}: the vCPU stopped unexpectedly at rip ${rip}: ${
              JSON.stringify(exit, bigintText)
            }`,
          ),
        );
      }
    }
  }

  #onPort(
    vm: MicroVm,
    port: number,
    what: string,
    sync: boolean,
  ): Frame | "resume" | Promise<void> {
    switch (port) {
      case Port.DONE:
        return this.#decode(what);
      case Port.HOST_CALL: {
        const frame = this.#decode(what);
        if (frame.kind !== "HOST_CALL") {
          throw this.#poisonWith(
            new ProtocolError(`${what}: expected HOST_CALL, got ${frame.kind}`),
          );
        }
        return this.#hostCall(frame.name, frame.args, sync);
      }
      case Port.LOG: {
        const frame = this.#decode(what);
        if (frame.kind !== "LOG") {
          throw this.#poisonWith(new ProtocolError(`${what}: expected LOG, got ${frame.kind}`));
        }
        this.#options.onLog?.(frame.level, frame.message);
        return "resume";
      }
      case Port.ABORT: {
        const frame = this.#decode(what);
        if (frame.kind === "PANIC") {
          throw this.#poisonWith(new GuestPanicError(frame.message));
        }
        // FAULT frames are ABI version 1: faults are now read from the CPU, never from guest
        // memory, so a guest-written FAULT is as untrustworthy as any other frame.
        throw this.#poisonWith(
          new ProtocolError(`${what}: expected a PANIC frame with ABORT, got ${frame.kind}`),
        );
      }
      case Port.FAULT:
        throw this.#poisonWith(this.#fault(vm, what));
      default:
        throw this.#poisonWith(
          new ProtocolError(`${what}: the guest wrote to unknown I/O port 0x${port.toString(16)}`),
        );
    }
  }

  #decode(what: string): Frame {
    try {
      return this.#decoder!.decode();
    } catch (e) {
      if (e instanceof ProtocolError) {
        throw this.#poisonWith(new ProtocolError(`${what}: ${e.detail}`, { cause: e }));
      }
      throw e;
    }
  }

  /**
   * A CPU exception, reported by the host's ring-0 stub: the vector from which stub made the
   * exit, the details from the CPU-pushed frame on the ring-0 stack and CR2 from the vCPU — none
   * of it from memory the guest can write. A FAULT exit that no stub made is the guest itself
   * writing the port: a protocol violation.
   */
  #fault(vm: MicroVm, what: string): GuestFaultError | ProtocolError {
    const rip = vm.getRegisters().rip;
    const special = vm.getSpecialRegisters();
    const vector = stubVector(rip, special.cs);
    if (vector === undefined) {
      return new ProtocolError(
        `${what}: the guest wrote to the FAULT port 0x${Port.FAULT.toString(16)} (rip 0x${
          rip.toString(16)
        }), which only the host's exception handlers use`,
      );
    }
    const cpu = readCpuFault(this.#memory!, vector);
    const details: GuestFaultDetails = {
      vector,
      rip: cpu.rip,
      address: vector === 14 ? special.cr2 : undefined,
      errorCode: cpu.errorCode,
    };
    // Decided from the host's own layout, not the PEB: the guest can write the PEB.
    const stackOverflow = vector === 14 && isInGuardPage(this.#layout, special.cr2);
    return stackOverflow ? new StackOverflowError(details) : new GuestFaultError(details);
  }

  /** Serves one host call; writes HOST_RETURN or HOST_ERROR into the input buffer. */
  #hostCall(name: string, args: readonly Value[], sync: boolean): "resume" | Promise<void> {
    const reply = (frame: Frame) => {
      // A call stopped or a sandbox disposed while the host function ran: nobody to answer.
      if (!this.#encoder || this.#stop) return;
      this.#encoder.encode(frame);
    };
    const fail = (message: string) => reply({ kind: "HOST_ERROR", message });
    const def = this.#hostFunctions.get(name);
    if (!def) {
      fail(`no host function named "${name}"`);
      return "resume";
    }
    if (
      args.length !== def.params.length || args.some((a, i) => a.type !== def.params[i])
    ) {
      fail(
        `host function ${name} takes (${def.params.join(", ")}), the guest passed (${
          args.map((a) => a.type).join(", ")
        })`,
      );
      return "resume";
    }
    const succeed = (result: unknown) => {
      let value: Value;
      try {
        value = toValue(result, def.result, name, -1);
      } catch (e) {
        return fail(`host function ${name} returned a bad value: ${(e as Error).message}`);
      }
      try {
        reply({ kind: "HOST_RETURN", value });
      } catch (e) {
        fail(`host function ${name}: ${(e as Error).message}`);
      }
    };
    let result: unknown;
    try {
      result = def.fn(...args.map(fromValue));
    } catch (e) {
      fail(`host function ${name} threw: ${errorText(e)}`);
      return "resume";
    }
    if (result instanceof Promise) {
      if (sync) {
        // The synchronous path cannot wait; the promise's outcome is dropped, not lost silently.
        result.catch(() => {});
        fail(`host function ${name} returned a Promise on the synchronous path (use call())`);
        return "resume";
      }
      return result.then(succeed, (e) => fail(`host function ${name} threw: ${errorText(e)}`));
    }
    succeed(result);
    return "resume";
  }

  #stopped(what: string): never {
    const stop = this.#stop!;
    if (stop.kind === "timeout") {
      throw this.#poisonWith(new TimeoutError(stop.ms));
    }
    throw this.#poisonWith(
      new CancelledError(
        `${what}: cancelled`,
        stop.reason === undefined ? {} : { cause: stop.reason },
      ),
    );
  }
}

/**
 * The error for a guest that reported ABI version `guestVersion` (0: reported none), or
 * undefined when it speaks ours. Exported for tests.
 */
export function abiVersionError(guestVersion: number, cause?: unknown): GuestAbiError | undefined {
  if (guestVersion === ABI_VERSION) return undefined;
  const options = cause === undefined ? undefined : { cause };
  return new GuestAbiError(
    guestVersion === 0
      ? "the guest did not report its ABI version (guest_abi_version is 0)"
      : `the guest was built for ABI version ${guestVersion}, this host speaks ${ABI_VERSION}: ` +
        "rebuild the guest against this version of the guest runtime",
    options,
  );
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function bigintText(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

function checkTimeout(ms: number | undefined, name: string): void {
  if (ms === undefined) return;
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0 || ms > 2 ** 31 - 1) {
    throw new ArgumentError(`${name} must be a number of milliseconds from 0 to 2^31-1, got ${ms}`);
  }
}

function checkHostFunctions(defs: Record<string, HostFunction>): Map<string, HostFunction> {
  if (typeof defs !== "object" || defs === null) {
    throw new ArgumentError("hostFunctions must be an object of { params, result, fn }");
  }
  const out = new Map<string, HostFunction>();
  for (const [name, def] of Object.entries(defs)) {
    const where = `hostFunctions.${name}`;
    if (typeof def !== "object" || def === null || typeof def.fn !== "function") {
      throw new ArgumentError(`${where} must be { params, result, fn } with fn a function`);
    }
    if (!Array.isArray(def.params) || def.params.some((p) => !isValueType(p) || p === "void")) {
      throw new ArgumentError(
        `${where}.params must be an array of value types (i32 u32 i64 u64 f32 f64 bool string bytes)`,
      );
    }
    if (!isValueType(def.result)) {
      throw new ArgumentError(`${where}.result must be a value type or "void", got ${def.result}`);
    }
    out.set(name, { params: [...def.params], result: def.result, fn: def.fn });
  }
  return out;
}
