/**
 * Hyperlight for Deno: run untrusted code — a native x86-64 guest binary or a WebAssembly module
 * — inside its own KVM micro-VM with no operating system in it, and call it with typed values.
 *
 * @example
 * ```ts
 * import { Sandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({
 *   guest: "guest/target/x86_64-unknown-linux-gnu/release/testguest",
 *   hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
 * });
 * console.log(await sb.call("add", 2, 3)); // 5
 * ```
 *
 * @module
 */

export {
  type CallOptions,
  type FunctionSignature,
  type HostFunction,
  type JsValue,
  type MemoryOptions,
  Sandbox,
  type SandboxOptions,
  type SandboxStats,
  type ValueType,
} from "./src/sandbox.ts";
export {
  ArgumentError,
  CancelledError,
  GuestAbiError,
  GuestError,
  type GuestFaultDetails,
  GuestFaultError,
  GuestImageError,
  GuestPanicError,
  HypervisorError,
  LibraryNotFoundError,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  StackOverflowError,
  TimeoutError,
} from "./src/errors.ts";
export { type HypervisorInfo, hypervisorInfo } from "./ffi/vm.ts";
export * from "./src/wasm_sandbox.ts";
