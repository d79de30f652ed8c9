/**
 * The JavaScript face of `net` (docs/networking.md): a prelude that defines `fetch`, `Headers`
 * and `Response` (a subset) in the guest over the one host function {@linkcode NET_HOST_FUNCTION},
 * and the option wiring `JsSandbox.create` uses.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { type Net, NET_HOST_FUNCTION, netFromOptions } from "./net.ts";
import type { NetOptions } from "./policy.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/**
 * The guest-side `fetch`, evaluated before the sandbox's `source` (one line, so the source's
 * line numbers are unchanged). Only what the host function answers reaches the script: the
 * policy is the host's; a refusal rejects with an `Error` named `NetworkPolicyError` (with
 * `rule`) or `NetworkError` (with `reason`).
 */
export const JS_NET_PRELUDE: string = `(() => {
  "use strict";
  const call = host.${NET_HOST_FUNCTION};
  const enc = (s) => {
    const b = unescape(encodeURIComponent(String(s).toWellFormed ? String(s).toWellFormed() : String(s)));
    const out = new Uint8Array(b.length);
    for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
    return out;
  };
  const dec = (u) => {
    let s = "";
    for (let i = 0; i < u.length; i += 8192) s += String.fromCharCode.apply(null, u.subarray(i, i + 8192));
    try { return decodeURIComponent(escape(s)); } catch { return slowDec(u); }
  };
  const slowDec = (u) => {
    const n = u.length, c = (k) => k < n && (u[k] & 0xc0) === 0x80;
    let out = "", cps = [], i = 0;
    while (i < n) {
      const b = u[i];
      let cp = 0xfffd, len = 1;
      if (b < 0x80) cp = b;
      else if (b >= 0xc2 && b <= 0xdf && c(i + 1)) { cp = ((b & 0x1f) << 6) | (u[i + 1] & 0x3f); len = 2; }
      else if (b >= 0xe0 && b <= 0xef && c(i + 1) && c(i + 2)) {
        const v = ((b & 0xf) << 12) | ((u[i + 1] & 0x3f) << 6) | (u[i + 2] & 0x3f);
        if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) { cp = v; len = 3; }
      } else if (b >= 0xf0 && b <= 0xf4 && c(i + 1) && c(i + 2) && c(i + 3)) {
        const v = ((b & 0x7) << 18) | ((u[i + 1] & 0x3f) << 12) | ((u[i + 2] & 0x3f) << 6) | (u[i + 3] & 0x3f);
        if (v >= 0x10000 && v <= 0x10ffff) { cp = v; len = 4; }
      }
      cps.push(cp); i += len;
      if (cps.length >= 4096) { out += String.fromCodePoint.apply(null, cps); cps = []; }
    }
    return out + String.fromCodePoint.apply(null, cps);
  };
  class Headers {
    #m = new Map();
    constructor(init) {
      if (init instanceof Headers) init = [...init];
      if (Array.isArray(init)) for (const [k, v] of init) this.append(k, v);
      else if (init && typeof init === "object") for (const k of Object.keys(init)) this.append(k, init[k]);
    }
    append(k, v) { k = String(k).toLowerCase(); const o = this.#m.get(k); this.#m.set(k, o === undefined ? String(v) : o + ", " + v); }
    set(k, v) { this.#m.set(String(k).toLowerCase(), String(v)); }
    get(k) { const v = this.#m.get(String(k).toLowerCase()); return v === undefined ? null : v; }
    has(k) { return this.#m.has(String(k).toLowerCase()); }
    delete(k) { this.#m.delete(String(k).toLowerCase()); }
    forEach(f, t) { for (const [k, v] of this.#m) f.call(t, v, k, this); }
    entries() { return this.#m.entries(); }
    keys() { return this.#m.keys(); }
    values() { return this.#m.values(); }
    [Symbol.iterator]() { return this.#m.entries(); }
  }
  class Response {
    #body; #used = false;
    #text;
    constructor(r) {
      this.status = r.status; this.statusText = r.statusText; this.url = r.url;
      this.ok = r.status >= 200 && r.status < 300; this.redirected = false;
      this.headers = new Headers(r.headers);
      if (r.bodyText !== undefined) this.#text = r.bodyText; else this.#body = r.bodyBase64;
    }
    #take() { if (this.#used) throw new TypeError("body already used"); this.#used = true; }
    get bodyUsed() { return this.#used; }
    async arrayBuffer() { return (await this.bytes()).buffer; }
    async bytes() { this.#take(); return this.#text !== undefined ? enc(this.#text) : Uint8Array.fromBase64(this.#body); }
    async text() { this.#take(); return this.#text !== undefined ? this.#text : dec(Uint8Array.fromBase64(this.#body)); }
    async json() { return JSON.parse(await this.text()); }
  }
  const fetch = async (input, init = {}) => {
    const url = String(typeof URL !== "undefined" && input instanceof URL ? input.href : input && input.url !== undefined ? input.url : input);
    const req = { url, method: init.method === undefined ? "GET" : String(init.method), headers: [...new Headers(init.headers)] };
    const body = init.body;
    if (body !== undefined && body !== null) {
      if (typeof body === "string") req.body = body;
      else if (body instanceof ArrayBuffer) req.bodyBase64 = new Uint8Array(body).toBase64();
      else if (ArrayBuffer.isView(body)) req.bodyBase64 = new Uint8Array(body.buffer, body.byteOffset, body.byteLength).toBase64();
      else throw new TypeError("fetch: the body must be a string, an ArrayBuffer or a typed array");
    }
    const r = await call(req);
    if (r && r.error) {
      const e = new Error(r.error.message);
      e.name = r.error.name;
      if (r.error.rule !== undefined) e.rule = r.error.rule;
      if (r.error.reason !== undefined) e.reason = r.error.reason;
      throw e;
    }
    return new Response(r);
  };
  Object.defineProperty(globalThis, "fetch", { value: fetch, writable: true, configurable: true });
  Object.defineProperty(globalThis, "Headers", { value: Headers, writable: true, configurable: true });
  Object.defineProperty(globalThis, "Response", { value: Response, writable: true, configurable: true });
  if (typeof TextEncoder === "undefined") {
    globalThis.TextEncoder = class TextEncoder { get encoding() { return "utf-8"; } encode(s = "") { return enc(s); } };
    globalThis.TextDecoder = class TextDecoder { get encoding() { return "utf-8"; } decode(u) { return u === undefined ? "" : dec(u instanceof Uint8Array ? u : new Uint8Array(u.buffer || u)); } };
  }
})();`.replace(/\n\s*/g, " ");

/** Options that can carry `net` (JsSandbox's, and the snapshot form's). */
interface WithNet {
  net?: NetOptions | Net;
  hostFunctions?: Record<string, (...args: never[]) => unknown>;
  source?: string;
  snapshot?: unknown;
}

/**
 * `JsSandbox.create`'s wiring: with `net`, the options with the host function
 * {@linkcode NET_HOST_FUNCTION} added and, unless the sandbox starts from a snapshot (which has
 * it already), the prelude put before `source`; and the {@linkcode Net} that serves it.
 */
export const jsNetOptions =
  (function jsNetOptions<O extends WithNet>(options: O): { options: O; net: Net | undefined } {
    if (typeof options !== "object" || options === null || options.net === undefined) {
      return { options, net: undefined };
    }
    const fns = options.hostFunctions ?? {};
    if (typeof fns === "object" && fns !== null && Object.hasOwn(fns, NET_HOST_FUNCTION)) {
      throw new ArgumentError(`the host function name ${NET_HOST_FUNCTION} is the net option's`);
    }
    const net = netFromOptions(options.net, "JsSandbox.create")!;
    const hostFunctions = {
      ...fns,
      [NET_HOST_FUNCTION]: (req: unknown) => net.handleValue(req, true),
    };
    const out = { ...options, hostFunctions } as O;
    delete out.net;
    if (options.snapshot === undefined) {
      if (options.source !== undefined && typeof options.source !== "string") {
        throw new ArgumentError("source must be a string");
      }
      out.source = JS_NET_PRELUDE + (options.source ?? "");
    }
    return { options: out, net };
  }).bind(undefined); // Eager: see the note after the imports.
