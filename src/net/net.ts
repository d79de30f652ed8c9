/**
 * `Net`: the host side of a sandbox's outbound HTTP (docs/networking.md). A guest's request is
 * checked against the `net` rules, its host name resolved here and every answer checked, and the
 * request made by the host's `fetch` over a connection pinned to the checked address (no proxy
 * from the environment, no redirect followed), its response body read up to its cap.
 *
 * @module
 */

import { ArgumentError, NetworkError, NetworkPolicyError } from "../errors.ts";
import { netRefused, traceNetRequest } from "../telemetry.ts";
import type { HostFunction } from "../call/types.ts";
import { addressClass, formatIP, parseIP } from "./address.ts";
import {
  FORBIDDEN_METHODS,
  hostOf,
  type NetLimits,
  type NetOptions,
  NetPolicy,
  normalizePath,
  portOf,
} from "./policy.ts";

/** A guest's request. */
export interface NetRequest {
  /** Absolute `http:` or `https:` URL. */
  url: string;
  /** Method (default `GET`). */
  method?: string;
  /** Request headers, as an object or name/value pairs. */
  headers?: Record<string, string> | readonly (readonly [string, string])[];
  /** Body: text (sent as UTF-8) or bytes. */
  body?: string | Uint8Array;
}

/** The response a guest gets: the whole body (at most the cap), headers filtered. */
export interface NetResponse {
  /** HTTP status (a 3xx is returned as is: redirects are not followed). */
  status: number;
  /** Status text. */
  statusText: string;
  /** The URL requested (after normalisation). */
  url: string;
  /** Response headers (lower-case names), those that could leak host state dropped. */
  headers: [string, string][];
  /** The body. */
  body: Uint8Array;
}

/** Counters of one {@linkcode Net} (one sandbox's requests). */
export interface NetStats {
  /** Requests that got a response. */
  requests: number;
  /** Requests refused by the policy (nothing sent). */
  refused: number;
  /** Requests that failed after the policy allowed them (connect, timeout, body cap). */
  failed: number;
  /** Request body bytes sent. */
  bytesOut: number;
  /** Response body bytes received. */
  bytesIn: number;
}

/** Resolves a host name to IP address texts (A and AAAA). */
export type NetResolver = (hostname: string) => Promise<string[]>;

/** What a {@linkcode Net} uses that tests may replace. */
export interface NetDeps {
  /** The name resolver (default: `Deno.resolveDns`, A and AAAA). */
  resolve?: NetResolver;
}

/** The name of the kind-independent host function (docs/networking.md, "The wire shape"). */
export const NET_HOST_FUNCTION = "hl_fetch";

/** Request headers never passed on (the host sets them, or they steer proxies and framing). */
const STRIPPED_REQUEST = new Set([
  "host",
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "te",
  "trailer",
  "expect",
  "via",
  "forwarded",
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
]);
const STRIPPED_REQUEST_PREFIX = ["proxy-", "x-forwarded-", "sec-"];

/** Response headers dropped: hop-by-hop, cookies, and the connection's own state. */
const DROPPED_RESPONSE = new Set([
  "set-cookie",
  "set-cookie2",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "trailer",
  "upgrade",
  "alt-svc",
  "proxy-authenticate",
  "proxy-authentication-info",
  "proxy-connection",
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const BAD_VALUE = /[\r\n\0]/;
const NOT_BYTES = /[\u0100-\uffff]/; // a header value is a ByteString
const MAX_HEADERS = 100;
const MAX_HEADER_BYTES = 64 * 1024;
const MAX_URL = 8192;
const MAX_CLIENTS = 64;
const MIB = 1 << 20;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

async function systemResolve(hostname: string): Promise<string[]> {
  const answers: string[] = [];
  const errors: unknown[] = [];
  for (const type of ["A", "AAAA"] as const) {
    try {
      answers.push(...await Deno.resolveDns(hostname, type));
    } catch (e) {
      errors.push(e);
    }
  }
  if (answers.length === 0 && errors.length > 0) throw errors[0];
  return answers;
}

/** Headers of a request as checked pairs, stripped of those the host owns. */
function checkHeaders(headers: NetRequest["headers"]): [string, string][] {
  if (headers === undefined) return [];
  let pairs: (readonly [unknown, unknown])[];
  if (Array.isArray(headers)) pairs = headers;
  else if (typeof headers === "object" && headers !== null) pairs = Object.entries(headers);
  else throw new NetworkPolicyError("header", "headers must be an object or name/value pairs");
  if (pairs.length > MAX_HEADERS) {
    throw new NetworkPolicyError("header", `more than ${MAX_HEADERS} request headers`);
  }
  const out: [string, string][] = [];
  let size = 0;
  for (const pair of pairs) {
    if (!Array.isArray(pair) || pair.length !== 2) {
      throw new NetworkPolicyError("header", "a header is a [name, value] pair");
    }
    const [name, value] = pair;
    if (typeof name !== "string" || typeof value !== "string") {
      throw new NetworkPolicyError("header", "header names and values are strings");
    }
    if (!TOKEN.test(name)) {
      throw new NetworkPolicyError(
        "header",
        `header name ${JSON.stringify(name.slice(0, 100))} is not a token`,
      );
    }
    if (BAD_VALUE.test(value)) {
      throw new NetworkPolicyError("header", `header ${name} has CR, LF or NUL in its value`);
    }
    if (NOT_BYTES.test(value)) {
      throw new NetworkPolicyError("header", `header ${name} has a character above U+00FF`);
    }
    size += name.length + value.length;
    if (size > MAX_HEADER_BYTES) {
      throw new NetworkPolicyError("header", `request headers larger than ${MAX_HEADER_BYTES}`);
    }
    const lower = name.toLowerCase();
    if (STRIPPED_REQUEST.has(lower) || STRIPPED_REQUEST_PREFIX.some((p) => lower.startsWith(p))) {
      continue;
    }
    out.push([name, value]);
  }
  return out;
}

interface Budget {
  requests: number;
  bytes: number;
}

/**
 * One sandbox's outbound HTTP: the policy, the limits, the counters and the pinned connections.
 * A sandbox given `net` options makes its own; a `Net` can also be used directly (tests, other
 * sandbox kinds through {@linkcode Net.handle}). Needs `--allow-net` for the hosts it reaches
 * (and for `Deno.resolveDns`).
 *
 * @example
 * ```ts
 * import { Net } from "@hl/sandbox";
 * await using net = new Net({ allow: [{ url: "https://api.example.com/v1/", methods: ["GET"] }] });
 * const r = await net.request({ url: "https://api.example.com/v1/items" });
 * console.log(r.status, new TextDecoder().decode(r.body));
 * ```
 */
export class Net implements AsyncDisposable {
  #policy: NetPolicy;
  #resolve: NetResolver;
  #stats: NetStats = { requests: 0, refused: 0, failed: 0, bytesOut: 0, bytesIn: 0 };
  /** HTTP clients pinned to one address and port each (`proxy: { transport: "tcp" }`). */
  #clients = new Map<string, { client: Deno.HttpClient; busy: number }>();
  /** This handle's own: the running guest call's budget (see {@linkcode tenant}). */
  #budget: Budget = { requests: 0, bytes: 0 };
  /** Shared with every {@linkcode tenant}: requests in flight, their queue, dispose. */
  #shared = { inFlight: 0, waiting: [] as (() => void)[], disposed: false };

  /** Checks `options` (an `ArgumentError` for a bad rule or limit). */
  constructor(options: NetOptions, deps: NetDeps = {}) {
    this.#policy = new NetPolicy(options);
    this.#resolve = deps.resolve ?? systemResolve;
  }

  /**
   * A handle for one more sandbox on this `Net`: the same rules, limits, connections, counters
   * and concurrency (disposing either closes both), with its own per-call budget, so one
   * sandbox's {@linkcode beginCall} never restarts another's budget in the middle of its call.
   * A sandbox given a `Net` (`net: net`) uses a tenant of it.
   *
   * @example
   * ```ts
   * import { Net } from "@hl/sandbox";
   * await using net = new Net({ allow: ["https://api.example.com/"] });
   * const a = net.tenant();
   * a.beginCall(); // net's budget is untouched
   * console.log(a.limits === net.limits); // true
   * ```
   */
  tenant(): Net {
    const t = new Net({ allow: [] });
    t.#policy = this.#policy;
    t.#resolve = this.#resolve;
    t.#stats = this.#stats;
    t.#clients = this.#clients;
    t.#shared = this.#shared;
    return t;
  }

  /** The limits in force (defaults filled in). */
  get limits(): Readonly<Required<NetLimits>> {
    return this.#policy.limits;
  }

  /** Starts a new guest call: the per-call request and byte budgets start again. */
  beginCall(): void {
    this.#budget = { requests: 0, bytes: 0 };
  }

  /** A copy of the counters. */
  stats(): NetStats {
    return { ...this.#stats };
  }

  /**
   * Checks and performs `req`. A `NetworkPolicyError` means nothing was sent; a `NetworkError`
   * that the request was allowed and failed (connect, timeout, response past its cap).
   */
  request(req: NetRequest): Promise<NetResponse> {
    let plan: Plan;
    try {
      plan = this.#plan(req);
    } catch (e) {
      if (e instanceof NetworkPolicyError) {
        this.#stats.refused++;
        netRefused(e.rule);
      }
      return Promise.reject(e);
    }
    const attributes = {
      "http.request.method": plan.method,
      "server.address": plan.host,
      "server.port": plan.port,
      "url.path": plan.url.pathname,
    };
    return traceNetRequest(attributes, async () => {
      try {
        const r = await this.#perform(plan);
        this.#stats.requests++;
        return { ...r, bytesOut: plan.body?.length ?? 0, bytesIn: r.response.body.length };
      } catch (e) {
        if (e instanceof NetworkPolicyError) this.#stats.refused++;
        else this.#stats.failed++;
        throw e;
      }
    }).then((r) => r.response);
  }

  /** Every check that needs no network: URL, method, headers, body, rule, per-call budget. */
  #plan(req: NetRequest): Plan {
    if (this.#shared.disposed) {
      throw new NetworkPolicyError("disposed", "the sandbox's network is closed");
    }
    if (typeof req !== "object" || req === null) {
      throw new NetworkPolicyError(
        "request",
        "a request is an object { url, method, headers, body }",
      );
    }
    if (typeof req.url !== "string" || req.url.length > MAX_URL) {
      throw new NetworkPolicyError("url", `the URL must be a string of at most ${MAX_URL} chars`);
    }
    let url: URL;
    try {
      url = new URL(req.url);
    } catch {
      throw new NetworkPolicyError(
        "url",
        `not an absolute URL: ${JSON.stringify(req.url.slice(0, 200))}`,
      );
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new NetworkPolicyError(
        "scheme",
        `only http: and https: can be fetched, not ${url.protocol}`,
      );
    }
    if (url.username !== "" || url.password !== "") {
      throw new NetworkPolicyError("credentials", "a URL with credentials is refused");
    }
    url.hash = "";
    url.pathname = normalizePath(url.pathname, "the request");
    const method = req.method === undefined ? "GET" : req.method;
    if (typeof method !== "string" || !TOKEN.test(method)) {
      throw new NetworkPolicyError(
        "method",
        `${JSON.stringify(String(method).slice(0, 50))} is not a method`,
      );
    }
    const upper = method.toUpperCase();
    if (FORBIDDEN_METHODS.has(upper)) {
      throw new NetworkPolicyError("method", `${upper} is never sent`);
    }
    const headers = checkHeaders(req.headers);
    let body: Uint8Array | undefined;
    if (req.body !== undefined && req.body !== null) {
      if (typeof req.body === "string") body = utf8.encode(req.body);
      else if (req.body instanceof Uint8Array) body = req.body.slice();
      else throw new NetworkPolicyError("body", "a body is a string or a Uint8Array");
      if (upper === "GET" || upper === "HEAD") {
        throw new NetworkPolicyError("body", `a ${upper} request has no body`);
      }
    }
    const limits = this.#policy.limits;
    if (body && body.length > limits.maxRequestBodyBytes) {
      throw new NetworkPolicyError(
        "limit:request-body",
        `the request body (${body.length} bytes) is over maxRequestBodyBytes ${limits.maxRequestBodyBytes}`,
      );
    }
    const rule = this.#policy.match(url, url.pathname, upper);
    const budget = this.#budget;
    if (budget.requests >= limits.maxRequestsPerCall) {
      throw new NetworkPolicyError(
        "limit:requests",
        `more than maxRequestsPerCall ${limits.maxRequestsPerCall} requests in one call`,
      );
    }
    const out = body?.length ?? 0;
    if (budget.bytes + out > limits.maxBytesPerCall) {
      throw new NetworkPolicyError(
        "limit:bytes",
        `more than maxBytesPerCall ${limits.maxBytesPerCall} body bytes in one call`,
      );
    }
    budget.requests++;
    budget.bytes += out;
    const { name, literal } = hostOf(url);
    return {
      url,
      method: upper,
      headers,
      body,
      host: name,
      literal,
      port: portOf(url),
      rule,
      budget,
    };
  }

  /** Resolves, checks every address, takes the first, and fetches through a pinned client. */
  async #perform(plan: Plan): Promise<{ response: NetResponse; status: number }> {
    const limits = this.#policy.limits;
    const address = await this.#address(plan);
    await this.#slot();
    const ctrl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctrl.abort();
    }, limits.timeoutMs);
    const pinned = this.#client(address, plan.port);
    try {
      let res: Response;
      try {
        res = await fetch(plan.url, {
          method: plan.method,
          headers: plan.headers,
          body: plan.body as BodyInit | undefined,
          redirect: "manual",
          client: pinned.client,
          signal: ctrl.signal,
        });
      } catch (e) {
        if (timedOut) throw this.#timeout(plan);
        throw new NetworkError(
          "connect",
          `${plan.method} ${plan.url.origin} failed: ${(e as Error).message}`,
          { cause: e },
        );
      }
      this.#stats.bytesOut += plan.body?.length ?? 0;
      const body = await this.#readBody(res, plan, () => timedOut);
      const headers: [string, string][] = [];
      for (const [k, v] of res.headers) if (!DROPPED_RESPONSE.has(k)) headers.push([k, v]);
      return {
        status: res.status,
        response: {
          status: res.status,
          statusText: res.statusText,
          url: plan.url.href,
          headers,
          body,
        },
      };
    } finally {
      clearTimeout(timer);
      pinned.busy--;
      this.#release();
    }
  }

  #timeout(plan: Plan): NetworkError {
    return new NetworkError(
      "timeout",
      `${plan.method} ${plan.url.origin} took longer than timeoutMs ${this.#policy.limits.timeoutMs}`,
    );
  }

  /** The body, read chunk by chunk and cut (reader cancelled) at the first byte past a cap. */
  async #readBody(res: Response, plan: Plan, timedOut: () => boolean): Promise<Uint8Array> {
    const limits = this.#policy.limits;
    if (!res.body) return new Uint8Array(0);
    const reader = res.body.getReader();
    const chunks: Uint8Array[] = [];
    let total = 0;
    try {
      for (;;) {
        let step: ReadableStreamReadResult<Uint8Array>;
        try {
          step = await reader.read();
        } catch (e) {
          if (timedOut()) throw this.#timeout(plan);
          throw new NetworkError(
            "aborted",
            `reading the response failed: ${(e as Error).message}`,
            { cause: e },
          );
        }
        if (step.done) break;
        total += step.value.length;
        this.#stats.bytesIn += step.value.length;
        if (total > limits.maxResponseBodyBytes) {
          throw new NetworkError(
            "body-limit",
            `the response body of ${plan.method} ${plan.url.origin} is over maxResponseBodyBytes ${limits.maxResponseBodyBytes}`,
          );
        }
        plan.budget.bytes += step.value.length;
        if (plan.budget.bytes > limits.maxBytesPerCall) {
          throw new NetworkPolicyError(
            "limit:bytes",
            `more than maxBytesPerCall ${limits.maxBytesPerCall} body bytes in one call`,
          );
        }
        chunks.push(step.value);
      }
    } catch (e) {
      await reader.cancel().catch(() => {});
      throw e;
    }
    if (chunks.length === 1) return chunks[0];
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  /** The address to connect to: the literal, or the resolver's answers, all checked. */
  async #address(plan: Plan): Promise<string> {
    if (plan.literal !== undefined) {
      const cls = addressClass(parseIP(plan.literal)!);
      // A literal is reached only through a rule that names it (match() compared it).
      if (cls !== undefined && plan.rule.literal !== plan.literal) {
        throw new NetworkPolicyError("address", `${plan.literal} is a ${cls} address`);
      }
      return plan.literal;
    }
    let answers: string[];
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      // Resolution is under the request's timeout too (a resolver that never answers).
      answers = await Promise.race([
        this.#resolve(plan.host),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(this.#timeout(plan)), this.#policy.limits.timeoutMs);
        }),
      ]);
    } catch (e) {
      if (e instanceof NetworkError) throw e;
      throw new NetworkError("dns", `resolving ${plan.host} failed: ${(e as Error).message}`, {
        cause: e,
      });
    } finally {
      clearTimeout(timer);
    }
    if (!Array.isArray(answers) || answers.length === 0) {
      throw new NetworkError("dns", `${plan.host} has no address`);
    }
    let first: string | undefined;
    for (const a of answers) {
      const bytes = typeof a === "string" ? parseIP(a) : undefined;
      if (!bytes) throw new NetworkError("dns", `the resolver answered ${JSON.stringify(a)}`);
      const cls = addressClass(bytes);
      if (cls !== undefined && !this.#namedLiterally(formatIP(bytes), plan.port)) {
        // Any private answer refuses the name (unless a rule names that address and port).
        throw new NetworkPolicyError(
          "address",
          `${plan.host} resolves to ${
            formatIP(bytes)
          }, a ${cls} address (name it in a rule to reach it)`,
        );
      }
      first ??= formatIP(bytes);
    }
    return first!;
  }

  /** Whether a rule names `address` literally, with `port`: then a name may resolve to it. */
  #namedLiterally(address: string, port: number): boolean {
    return this.#policy.rules.some((r) => r.literal === address && r.port === port);
  }

  #client(address: string, port: number): { client: Deno.HttpClient; busy: number } {
    const key = `${address}|${port}`;
    let entry = this.#clients.get(key);
    if (entry) {
      this.#clients.delete(key); // most recently used last
    } else {
      entry = {
        client: Deno.createHttpClient({
          // The tcp transport parses host:port: an IPv6 address needs its brackets.
          proxy: {
            transport: "tcp",
            hostname: address.includes(":") ? `[${address}]` : address,
            port,
          },
        }),
        busy: 0,
      };
      for (const [k, e] of this.#clients) {
        if (this.#clients.size < MAX_CLIENTS) break;
        if (e.busy === 0) {
          e.client.close();
          this.#clients.delete(k);
        }
      }
    }
    this.#clients.set(key, entry);
    entry.busy++;
    return entry;
  }

  async #slot(): Promise<void> {
    while (this.#shared.inFlight >= this.#policy.limits.maxConcurrent) {
      await new Promise<void>((r) => this.#shared.waiting.push(r));
    }
    this.#shared.inFlight++;
  }

  #release(): void {
    this.#shared.inFlight--;
    this.#shared.waiting.shift()?.();
  }

  /**
   * The kind-independent host function ({@linkcode NET_HOST_FUNCTION}): a request as JSON text
   * (`{ url, method?, headers?: [[name, value]...], body?: string, bodyBase64?: string }`) to
   * a response as JSON text (`{ status, statusText, url, headers, bodyBase64 }`) or, when
   * refused or failed, `{ error: { name, message, rule?, reason? } }`. Never throws.
   */
  async handle(requestJson: string): Promise<string> {
    if (typeof requestJson !== "string" || requestJson.length > 64 * MIB) {
      this.#stats.refused++;
      return JSON.stringify(
        wireError(
          new NetworkPolicyError("request", "the request is not JSON text of at most 64 MiB"),
        ),
      );
    }
    let value: unknown;
    try {
      value = JSON.parse(requestJson);
    } catch {
      this.#stats.refused++;
      return JSON.stringify(
        wireError(new NetworkPolicyError("request", "the request is not JSON")),
      );
    }
    return JSON.stringify(await this.handleValue(value));
  }

  /**
   * {@linkcode handle} on parsed JSON (for hosts whose guests send values: JsSandbox). With
   * `preferText`, a body that is valid UTF-8 comes as `bodyText` instead of `bodyBase64` (the
   * JavaScript prelude reads either; decoding base64 and UTF-8 in the guest costs more).
   */
  async handleValue(
    request: unknown,
    preferText = false,
  ): Promise<WireResponse | WireError> {
    let req: NetRequest;
    try {
      req = decodeWireRequest(request);
    } catch (e) {
      this.#stats.refused++;
      return wireError(e);
    }
    try {
      const r = await this.request(req);
      const head = { status: r.status, statusText: r.statusText, url: r.url, headers: r.headers };
      if (preferText) {
        try {
          return { ...head, bodyText: strictUtf8.decode(r.body) };
        } catch {
          // not UTF-8: base64 below
        }
      }
      return { ...head, bodyBase64: r.body.toBase64() };
    } catch (e) {
      return wireError(e);
    }
  }

  /**
   * {@linkcode handle} as a host function of a native `Sandbox` (or any kind whose host
   * functions take a string): `hostFunctions: { hl_fetch: net.hostFunction() }`; the guest runtime's
   * `hl_guest::http_fetch` calls it. Each guest call should start its budgets: call
   * {@linkcode beginCall} before it (a native `Sandbox` has no `net` option of its own yet).
   *
   * @example
   * ```ts
   * import { guests, Net, Sandbox } from "@hl/sandbox";
   * await using net = new Net({ allow: ["https://api.example.com/"] });
   * await using sb = await Sandbox.create({
   *   guest: guests.testguest,
   *   hostFunctions: { hl_fetch: net.hostFunction() },
   * });
   * net.beginCall();
   * const answer = await sb.call("call_host_value_string", "hl_fetch", '{"url":"https://x.test/"}');
   * console.log(JSON.parse(answer as string).error.rule); // host
   * ```
   */
  hostFunction(): HostFunction {
    return { params: ["string"], result: "string", fn: (json: string) => this.handle(json) };
  }

  /** Closes the pinned connections; later requests are refused. Idempotent. */
  dispose(): Promise<void> {
    this.#shared.disposed = true;
    for (const { client } of this.#clients.values()) client.close();
    this.#clients.clear();
    return Promise.resolve();
  }

  /** Same as {@linkcode dispose}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

interface Plan {
  url: URL;
  method: string;
  headers: [string, string][];
  body: Uint8Array | undefined;
  host: string;
  literal: string | undefined;
  port: number;
  rule: ReturnType<NetPolicy["match"]>;
  budget: Budget;
}

/** The wire response of {@linkcode Net.handle}. */
export interface WireResponse {
  /** HTTP status. */
  status: number;
  /** Status text. */
  statusText: string;
  /** The URL requested. */
  url: string;
  /** Response headers. */
  headers: [string, string][];
  /** The body, base64 (always, unless `preferText` and the body is UTF-8). */
  bodyBase64?: string;
  /** The body as text, instead of `bodyBase64` (only with `preferText`, a UTF-8 body). */
  bodyText?: string;
}

/** The wire error of {@linkcode Net.handle}. */
export interface WireError {
  /** `NetworkPolicyError` or `NetworkError`, with the check or failure. */
  error: { name: string; message: string; rule?: string; reason?: string };
}

/** The wire request of {@linkcode Net.handle} (parsed JSON), checked. */
export function decodeWireRequest(v: unknown): NetRequest {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new NetworkPolicyError("request", "the request is a JSON object");
  }
  const o = v as Record<string, unknown>;
  const req: NetRequest = { url: o.url as string };
  if (o.method !== undefined) req.method = o.method as string;
  if (o.headers !== undefined) req.headers = o.headers as NetRequest["headers"];
  if (o.body !== undefined && o.bodyBase64 !== undefined) {
    throw new NetworkPolicyError("body", "give body or bodyBase64, not both");
  }
  if (o.body !== undefined) {
    if (typeof o.body !== "string") throw new NetworkPolicyError("body", "body is a string");
    req.body = o.body;
  }
  if (o.bodyBase64 !== undefined) {
    if (typeof o.bodyBase64 !== "string") {
      throw new NetworkPolicyError("body", "bodyBase64 is a string");
    }
    try {
      req.body = Uint8Array.fromBase64(o.bodyBase64);
    } catch {
      throw new NetworkPolicyError("body", "bodyBase64 is not base64");
    }
  }
  return req;
}

/** `e` as the wire error every kind sees (an error that is not a net error is "internal"). */
export function wireError(e: unknown): WireError {
  const err = e instanceof Error ? e : new Error(String(e));
  const out: WireError["error"] = { name: err.name, message: err.message };
  if (err instanceof NetworkPolicyError) out.rule = err.rule;
  if (err instanceof NetworkError) out.reason = err.reason;
  if (!(err instanceof NetworkPolicyError || err instanceof NetworkError)) {
    // Anything else is a bug of ours: the guest learns only that the request failed.
    out.name = "NetworkError";
    out.message = "the request failed";
    out.reason = "internal";
  }
  return { error: out };
}

/** Checks an optional `net` option and makes its {@linkcode Net}, or `undefined` when absent. */
export function netFromOptions(net: NetOptions | Net | undefined, what: string): Net | undefined {
  if (net === undefined) return undefined;
  if (net instanceof Net) return net.tenant(); // the caller's, maybe several sandboxes'
  if (typeof net !== "object" || net === null) {
    throw new ArgumentError(`${what}.net must be an object { allow, limits } or a Net`);
  }
  return new Net(net);
}
