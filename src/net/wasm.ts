/**
 * The Wasm face of `net`: the `hl_http` import module (`runtimes/include/hl_http.h` is its C
 * header, docs/networking.md its reference). A module's imports carry numbers only (the host
 * cannot reach linear memory during an import, docs/wasm.md), so bytes move 8 at a time in an
 * `i64`: the module builds the request field by field with `put`, `send` makes it, and the
 * response's parts are read back with `len`/`read`. Every misuse is a negative code, never a
 * trap; the request is checked by the same {@linkcode Net} as every other kind's.
 *
 * @module
 */

import { Net, netFromOptions, type NetRequest, type NetResponse, wireError } from "./net.ts";
import type { NetOptions } from "./policy.ts";
import { ArgumentError, NetworkPolicyError } from "../errors.ts";
import type { WasmImports } from "../wasm/types.ts";

/** The import module's name. */
export const HL_HTTP = "hl_http";

/** Codes `hl_http` functions answer (negative) — the same numbers as in `hl_http.h`. */
export const HL_HTTP_CODES = Object.freeze({
  /** The policy refused the request (`NetworkPolicyError`; nothing was sent). */
  REFUSED: -1,
  /** The request was allowed and failed (`NetworkError`: connect, timeout, body cap). */
  FAILED: -2,
  /** A bad argument: unknown field, part or handle, a size past its bound. */
  INVALID: -3,
  /** Too many responses open (close some). */
  BUSY: -4,
});

/** Request fields `put` appends to, by number (`HL_HTTP_METHOD`... in `hl_http.h`). */
export const HL_HTTP_FIELDS = ["method", "url", "headers", "body"] as const;
/**
 * Response parts, by number (`HL_HTTP_PART_BODY`... in `hl_http.h`): body, headers
 * ("name: value\n" lines), error text (handle 0 only).
 */
export const HL_HTTP_PARTS = ["body", "headers", "error"] as const;
const FIELDS = HL_HTTP_FIELDS;
const PARTS = HL_HTTP_PARTS.length;
const MAX_OPEN = 16;
const MAX_FIELD = [32, 8192, 64 * 1024];
const utf8 = new TextEncoder();
const text = new TextDecoder("utf-8", { fatal: true });

class Growable {
  buf = new Uint8Array(64);
  len = 0;
  push(word: bigint, n: number): void {
    if (this.len + n > this.buf.length) {
      const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    for (let i = 0; i < n; i++) this.buf[this.len++] = Number((word >> BigInt(8 * i)) & 0xffn);
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

/**
 * The `hl_http` imports of one sandbox, served by `net`. `epoch` says which guest call is
 * running (a new value starts the per-call budgets again: `WasmSandbox` gives its run count).
 *
 * @example
 * ```ts
 * import { Net } from "@hl/sandbox";
 * import { httpImports } from "./wasm.ts";
 * const net = new Net({ allow: ["https://api.example.com/"] });
 * const imports = httpImports(net, () => 0); // { hl_http: { put, send, len, read, status, close } }
 * ```
 */
export function httpImports(net: Net, epoch: () => number): WasmImports {
  let fields = FIELDS.map(() => new Growable());
  let overflow = false;
  const open = new Map<number, { status: number; parts: Uint8Array[] }>();
  let lastError = new Uint8Array(0);
  let nextHandle = 1;
  let seenEpoch = Number.NaN;
  const maxBody = net.limits.maxRequestBodyBytes;
  const part = (h: number, p: number): Uint8Array | undefined => {
    if (!Number.isInteger(p) || p < 0 || p >= PARTS) return undefined;
    if (h === 0) return p === 2 ? lastError : undefined;
    return open.get(h)?.parts[p];
  };
  const fail = (e: unknown): number => {
    // The same face as every other kind's (an error of ours is only "internal").
    const { name, message, rule, reason } = wireError(e).error;
    const detail = rule ?? reason;
    lastError = utf8.encode(`${name}${detail === undefined ? "" : `(${detail})`}: ${message}`);
    return e instanceof NetworkPolicyError ? HL_HTTP_CODES.REFUSED : HL_HTTP_CODES.FAILED;
  };
  const reset = () => {
    fields = FIELDS.map(() => new Growable());
    overflow = false;
  };
  // Every import starts here: a new guest call (a pool member's next tenant, a restored VM) sees
  // nothing of the last one — no response handles, no error text, no half-built request — and
  // has its own budgets, whichever import it calls first.
  const enter = () => {
    const e = epoch();
    if (e === seenEpoch) return;
    seenEpoch = e;
    net.beginCall();
    open.clear();
    lastError = new Uint8Array(0);
    reset();
  };
  return {
    [HL_HTTP]: {
      put: {
        params: ["i32", "i64", "i32"],
        result: "i32",
        fn: (field: number, word: bigint, n: number) => {
          enter();
          if (field < 0 || field >= FIELDS.length || n < 1 || n > 8) return HL_HTTP_CODES.INVALID;
          const f = fields[field];
          const cap = field === 3 ? maxBody : MAX_FIELD[field];
          if (f.len + n > cap) {
            overflow = true; // the next send is refused, whatever follows
            return HL_HTTP_CODES.INVALID;
          }
          f.push(BigInt.asUintN(64, word), n);
          return 0;
        },
      },
      send: {
        params: [],
        result: "i32",
        fn: async () => {
          enter();
          const [method, url, headers, body] = fields;
          const bad = overflow;
          reset();
          if (bad) {
            return fail(
              new NetworkPolicyError("limit:field", "a request field was over its bound"),
            );
          }
          if (open.size >= MAX_OPEN) {
            lastError = utf8.encode(`too many open responses (${MAX_OPEN}): close some`);
            return HL_HTTP_CODES.BUSY;
          }
          const pairs: [string, string][] = [];
          let request: NetRequest;
          try {
            for (const line of text.decode(headers.bytes()).split("\n")) {
              if (line === "") continue;
              const colon = line.indexOf(":");
              if (colon <= 0) {
                return fail(new NetworkPolicyError("header", "a header line is 'Name: value'"));
              }
              pairs.push([line.slice(0, colon), line.slice(colon + 1).trim()]);
            }
            request = {
              url: text.decode(url.bytes()),
              method: method.len === 0 ? "GET" : text.decode(method.bytes()),
              headers: pairs,
              body: body.len === 0 ? undefined : body.bytes().slice(),
            };
          } catch {
            // Not UTF-8 (the only throw above): refused before the policy saw it.
            return fail(new NetworkPolicyError("request", "a request field is not UTF-8"));
          }
          let r: NetResponse;
          try {
            r = await net.request(request);
          } catch (e) {
            return fail(e);
          }
          const handle = nextHandle;
          nextHandle = nextHandle >= 0x7fff_fff0 ? 1 : nextHandle + 1;
          const headerText = utf8.encode(r.headers.map(([k, v]) => `${k}: ${v}\n`).join(""));
          open.set(handle, { status: r.status, parts: [r.body, headerText, new Uint8Array(0)] });
          return handle;
        },
      },
      status: {
        params: ["i32"],
        result: "i32",
        fn: (h: number) => {
          enter();
          return open.get(h)?.status ?? HL_HTTP_CODES.INVALID;
        },
      },
      len: {
        params: ["i32", "i32"],
        result: "i32",
        fn: (h: number, p: number) => {
          enter();
          return part(h, p)?.length ?? HL_HTTP_CODES.INVALID;
        },
      },
      read: {
        params: ["i32", "i32", "i32"],
        result: "i64",
        fn: (h: number, p: number, offset: number) => {
          enter();
          const bytes = part(h, p);
          if (!bytes || offset < 0 || offset >= bytes.length) return 0n;
          let word = 0n;
          const end = Math.min(bytes.length, offset + 8);
          for (let i = end - 1; i >= offset; i--) word = (word << 8n) | BigInt(bytes[i]);
          return BigInt.asIntN(64, word);
        },
      },
      close: {
        params: ["i32"],
        result: "i32",
        fn: (h: number) => {
          enter();
          return open.delete(h) ? 0 : HL_HTTP_CODES.INVALID;
        },
      },
    },
  };
}

/**
 * `WasmSandbox.create`'s wiring: with `net`, the options with the `hl_http` imports added, the
 * {@linkcode Net} serving them (owned when made from options) and `bind`, which gives the imports
 * the sandbox's run count once it exists.
 *
 * @example
 * ```ts
 * import { wasmNetOptions } from "./wasm.ts";
 * import type { WasmImports } from "../wasm/types.ts";
 * const given: { net: { allow: string[] }; hostFunctions?: WasmImports } = { net: { allow: [] } };
 * const { options, net } = wasmNetOptions(given);
 * console.log(Object.keys(options.hostFunctions ?? {}), net !== undefined); // ["hl_http"] true
 * ```
 */
export function wasmNetOptions<O extends { net?: NetOptions | Net; hostFunctions?: WasmImports }>(
  options: O,
): { options: O; net: Net | undefined; owned: boolean; bind: (epoch: () => number) => void } {
  const none = { options, net: undefined, owned: false, bind: () => {} };
  if (typeof options !== "object" || options === null || options.net === undefined) return none;
  const given = options.net;
  const fns = options.hostFunctions ?? {};
  if (typeof fns === "object" && fns !== null && Object.hasOwn(fns, HL_HTTP)) {
    throw new ArgumentError(`the import module ${HL_HTTP} is the net option's`);
  }
  const net = netFromOptions(given, "WasmSandbox.create")!;
  let epoch: () => number = () => 0;
  const imports = httpImports(net, () => epoch());
  const out = { ...options, hostFunctions: { ...fns, ...imports } } as O;
  delete out.net;
  return {
    options: out,
    net,
    owned: !(given instanceof Net),
    bind: (e) => {
      epoch = e;
    },
  };
}
