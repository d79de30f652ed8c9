/**
 * Outbound HTTP for sandboxes through a host-held allow-list (docs/networking.md).
 *
 * @module
 */

export {
  decodeWireRequest,
  Net,
  NET_HOST_FUNCTION,
  type NetDeps,
  netFromOptions,
  type NetRequest,
  type NetResolver,
  type NetResponse,
  type NetStats,
  type WireError,
  type WireResponse,
} from "./net.ts";
export { NET_DEFAULTS, type NetLimits, type NetOptions, type NetRule } from "./policy.ts";
export { type AddressClass, addressClass } from "./address.ts";
export { JS_NET_PRELUDE, jsNetOptions } from "./js.ts";
export { HL_HTTP, HL_HTTP_CODES, httpImports, wasmNetOptions } from "./wasm.ts";
