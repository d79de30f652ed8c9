/**
 * Hyperlight for Deno: run untrusted code — a native x86-64 guest binary or a WebAssembly module
 * — inside its own KVM micro-VM with no operating system in it, and call it with typed values.
 *
 * @example
 * ```ts
 * import { guests, Sandbox, WasmSandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({
 *   guest: guests.testguest,
 *   hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
 * });
 * console.log(await sb.call("add", 2, 3)); // 5
 *
 * // A module with one export, `answer() -> i32` (42).
 * const wasm = new Uint8Array([
 *   0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f,
 *   0x03, 0x02, 0x01, 0x00, 0x07, 0x0a, 0x01, 0x06, 0x61, 0x6e, 0x73, 0x77, 0x65, 0x72, 0x00,
 *   0x00, 0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b,
 * ]);
 * await using w = await WasmSandbox.create({ module: wasm });
 * console.log(await w.call("answer")); // 42
 * ```
 *
 * The native library and the built-in guests are found automatically: the local build in a clone
 * (`deno task build`), else the cache that `deno run -A jsr:@hl/sandbox/setup` fills.
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
  type SnapshotSandboxOptions,
  type ValueType,
} from "./src/sandbox.ts";
export {
  Snapshot,
  SnapshotDisposedError,
  SnapshotFormatError,
  type SnapshotFormatReason,
  type SnapshotLoadOptions,
  SnapshotMismatchError,
} from "./src/snapshot.ts";
export {
  StartSnapshotCache,
  type StartSnapshotCacheOptions,
  type StartSnapshotCacheStats,
} from "./src/start_cache.ts";
export {
  Pool,
  PoolExhaustedError,
  type PoolRunOptions,
  type PoolSizing,
  SandboxPool,
  type SandboxPoolOptions,
} from "./src/pool.ts";
export {
  ArgumentError,
  CancelledError,
  DEFAULT_MAX_EXITS_PER_CALL,
  ExitBudgetError,
  GuestAbiError,
  GuestError,
  type GuestFaultDetails,
  GuestFaultError,
  GuestImageError,
  GuestLinkError,
  GuestNotFoundError,
  GuestPanicError,
  HypervisorError,
  JsError,
  LibraryNotFoundError,
  PermissionError,
  ProtocolError,
  ReentrantCallError,
  type ResourceLimit,
  ResourceLimitError,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  StackOverflowError,
  TimeoutError,
} from "./src/errors.ts";
export { CPU_GRANT, type HypervisorInfo, hypervisorInfo, teardownWait } from "./src/ffi/vm.ts";
export { type BuiltinGuests, guests } from "./src/artifacts.ts";
export {
  hostFunction,
  type JsOf,
  type JsParams,
  type TypedGuest,
  type TypedHostFunction,
} from "./src/host_function.ts";
export {
  type WasiExit,
  WasiExitError,
  type WasiOptions,
  type WasiPreopen,
  type WasiRunOptions,
  type WasiStdin,
  type WasmAnyType,
  WasmArtifactError,
  type WasmCacheStats,
  type WasmEngine,
  type WasmExtern,
  type WasmFunctionType,
  type WasmHostFunction,
  type WasmImports,
  type WasmJsValue,
  WasmLinkError,
  WasmModuleError,
  type WasmResultType,
  type WasmSandboxOptions,
  type WasmSnapshotSandboxOptions,
  WasmTrapError,
  type WasmTrapKind,
  type WasmValueType,
} from "./src/wasm/types.ts";
export { WasmSandbox } from "./src/wasm/sandbox.ts";
export { WasmModuleCache, type WasmModuleCacheOptions } from "./src/wasm/cache.ts";
export { WasmSnapshot } from "./src/wasm/snapshot.ts";
export { WasmSandboxPool, type WasmSandboxPoolOptions } from "./src/wasm_pool.ts";
export {
  type JsHostFunction,
  type JsOutputOptions,
  JsSandbox,
  type JsSandboxOptions,
  type JsSnapshotSandboxOptions,
} from "./src/js/sandbox.ts";
export { JsSnapshot } from "./src/js/snapshot.ts";
export { JsSandboxPool, type JsSandboxPoolOptions } from "./src/js/pool.ts";
export {
  type CompileProgress,
  type PyOutputOptions,
  type PyResult,
  type PyRunOptions,
  type PyRuntime,
  PySandbox,
  type PySandboxOptions,
  PySnapshot,
  type PySnapshotSandboxOptions,
} from "./src/py/sandbox.ts";
export { PyEngineError, PyError, PyExitError } from "./src/py/errors.ts";
export { type PyPoolRunOptions, PySandboxPool, type PySandboxPoolOptions } from "./src/py/pool.ts";
export { NetworkError, NetworkPolicyError } from "./src/errors.ts";
export {
  Net,
  NET_DEFAULTS,
  NET_HOST_FUNCTION,
  type NetDeps,
  type NetLimits,
  type NetOptions,
  type NetRequest,
  type NetResolver,
  type NetResponse,
  type NetRule,
  type NetStats,
  type WireError,
  type WireResponse,
} from "./src/net/mod.ts";
export { bakeServeSnapshots, type HlServer, serve, type ServeOptions } from "./src/serve/server.ts";
export {
  type GuestRoute,
  type JsRoute,
  loadServeConfig,
  parseServeConfig,
  type ServeConfig,
  ServeConfigError,
  type ServeLimits,
  type ServeRoute,
  type ServeRouteBase,
  type ServeRouteKind,
  type ServeStrategy,
  type WagiRoute,
  type WasmRoute,
} from "./src/serve/config.ts";
export {
  type GuestResponse,
  GuestResponseError,
  jsonResponse,
  MAX_HEAD_BYTES,
  MAX_HEAD_LINES,
  NULL_BODY_STATUSES,
  parseCgiResponse,
  type ServeRequest,
  wagiEnv,
} from "./src/serve/cgi.ts";
