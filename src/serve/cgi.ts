/**
 * The guest's side of an HTTP exchange, both ways: the WAGI/CGI environment of a request
 * ({@linkcode wagiEnv}), the strict parser of a CGI-style response that a guest wrote
 * ({@linkcode parseCgiResponse}: a head of `Name: value` lines, a blank line, the body), and the
 * check of a JSON response object from a JavaScript handler ({@linkcode jsonResponse}). What a
 * guest writes is hostile: every size is bounded, every malformed head or object is a
 * {@linkcode GuestResponseError} (the server answers 502), never a crash.
 *
 * @module
 */

import { SandboxError } from "../errors.ts";

/**
 * The guest's response is malformed (a bad head line, a status out of range, too large): the
 * server answers 502 Bad Gateway.
 *
 * @example
 * ```ts
 * import { GuestResponseError, parseCgiResponse } from "@hl/sandbox";
 * try {
 *   parseCgiResponse(new TextEncoder().encode("no head here"), 1024);
 * } catch (e) {
 *   console.log(e instanceof GuestResponseError); // true
 * }
 * ```
 */
export class GuestResponseError extends SandboxError {
  /** Creates the error; the message says what was wrong with the response. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestResponseError";
  }
}

/** A response as a guest gave it, checked. */
export interface GuestResponse {
  /** HTTP status, 200–599 (the server's own 1xx handling is not the guest's). */
  status: number;
  /** Header names (lower case) and values, as `Headers` accepts them. */
  headers: [string, string][];
  /** The body (empty for a status in {@linkcode NULL_BODY_STATUSES}). */
  body: Uint8Array<ArrayBuffer>;
}

/** The most head lines a guest may write. */
export const MAX_HEAD_LINES = 100;
/** The largest head a guest may write, in bytes. */
export const MAX_HEAD_BYTES = 16 << 10;

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible ASCII, space, tab and obs-text; no CR, LF, NUL or other controls.
const VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
/** Headers a guest may not set: the server frames the response itself. */
const FORBIDDEN = new Set([
  "connection",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "proxy-connection",
  "te",
  "trailer",
  "x-request-id",
]);

function checkHeader(name: string, value: string, where: string): [string, string] {
  if (!TOKEN.test(name)) {
    throw new GuestResponseError(`${where}: header name ${JSON.stringify(name)} is not a token`);
  }
  if (!VALUE.test(value)) {
    throw new GuestResponseError(`${where}: header ${name} has control characters in its value`);
  }
  const lower = name.toLowerCase();
  if (FORBIDDEN.has(lower)) {
    throw new GuestResponseError(`${where}: header ${name} is set by the server, not the guest`);
  }
  return [lower, value.trim()];
}

/**
 * Statuses whose response has no body (RFC 9110 §15.3.5, §15.3.6, §15.4.5): `Response` refuses a
 * body with them, even an empty one, so the server sends `null` for these.
 */
export const NULL_BODY_STATUSES: ReadonlySet<number> = new Set([204, 205, 304]);

/** A body with a null-body status is malformed (the server could not send it). */
function checkNullBody(status: number, length: number, where: string): void {
  if (length > 0 && NULL_BODY_STATUSES.has(status)) {
    throw new GuestResponseError(
      `${where}: status ${status} has no body, but ${length} bytes follow`,
    );
  }
}

function checkStatus(n: unknown, where: string): number {
  if (typeof n !== "number" || !Number.isInteger(n) || n < 200 || n > 599) {
    throw new GuestResponseError(`${where}: status ${JSON.stringify(n)} is not 200–599`);
  }
  return n;
}

/**
 * Parses a CGI-style response (RFC 3875 §6): header lines ending in LF or CRLF up to an empty
 * line, then the body. `Status: NNN reason` sets the status (default 200, or 302 with a
 * `Location`); `Content-Type` is required unless `Location` is given. Strict: no head, a line
 * without a colon, a bad name or value, a duplicate `Status`, more than {@linkcode MAX_HEAD_LINES}
 * lines or {@linkcode MAX_HEAD_BYTES} bytes, more than `maxBytes` in all, or a body after a
 * status in {@linkcode NULL_BODY_STATUSES} are {@linkcode GuestResponseError}.
 *
 * @example
 * ```ts
 * import { parseCgiResponse } from "@hl/sandbox";
 * const r = parseCgiResponse(
 *   new TextEncoder().encode("Content-Type: text/plain\nStatus: 201 Created\n\nhi"),
 *   1 << 20,
 * );
 * console.log(r.status); // 201
 * console.log(r.headers); // [["content-type", "text/plain"]]
 * console.log(new TextDecoder().decode(r.body)); // hi
 * ```
 */
export function parseCgiResponse(out: Uint8Array, maxBytes: number): GuestResponse {
  if (out.length > maxBytes) {
    throw new GuestResponseError(`the response is over ${maxBytes} bytes`);
  }
  // The end of the head: the first empty line (LF LF or CRLF CRLF, or a mix).
  let end = -1;
  let bodyAt = -1;
  const limit = Math.min(out.length, MAX_HEAD_BYTES + 4);
  for (let i = 0; i < limit; i++) {
    if (out[i] !== 0x0a) continue;
    if (out[i + 1] === 0x0a) {
      end = i;
      bodyAt = i + 2;
      break;
    }
    if (out[i + 1] === 0x0d && out[i + 2] === 0x0a) {
      end = i;
      bodyAt = i + 3;
      break;
    }
  }
  if (end < 0) {
    throw new GuestResponseError(
      out.length > MAX_HEAD_BYTES
        ? `no end of the head within ${MAX_HEAD_BYTES} bytes`
        : "the output has no head (header lines, then an empty line)",
    );
  }
  // latin1 keeps every byte one character, so the value check sees what was sent.
  const head = new TextDecoder("latin1").decode(out.subarray(0, end));
  const lines = head.split("\n").map((l) => l.endsWith("\r") ? l.slice(0, -1) : l);
  if (lines.length > MAX_HEAD_LINES) {
    throw new GuestResponseError(`the head has more than ${MAX_HEAD_LINES} lines`);
  }
  let status: number | undefined;
  let location = false;
  let contentType = false;
  const headers: [string, string][] = [];
  lines.forEach((line, i) => {
    const where = `head line ${i + 1}`;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new GuestResponseError(`${where}: not "Name: value"`);
    const [name, value] = checkHeader(line.slice(0, colon), line.slice(colon + 1), where);
    if (name === "status") {
      if (status !== undefined) throw new GuestResponseError(`${where}: a second Status`);
      const m = /^(\d{3})(?: [\t\x20-\x7e]*)?$/.exec(value);
      if (!m) throw new GuestResponseError(`${where}: Status must be "NNN reason"`);
      status = checkStatus(Number(m[1]), where);
      return;
    }
    if (name === "location") location = true;
    if (name === "content-type") contentType = true;
    headers.push([name, value]);
  });
  if (!contentType && !location) {
    throw new GuestResponseError("the head has neither Content-Type nor Location");
  }
  const code = status ?? (location ? 302 : 200);
  checkNullBody(code, out.length - bodyAt, "the response");
  return { status: code, headers, body: out.slice(bodyAt) };
}

/**
 * Checks what a JavaScript handler returned: `{ status?, headers?, body? }` where `body` is a
 * string (sent as is, `text/plain` unless a content type is given) or any other JSON value (sent
 * as JSON); a body with a status in {@linkcode NULL_BODY_STATUSES} or anything else is
 * {@linkcode GuestResponseError}.
 *
 * @example
 * ```ts
 * import { jsonResponse } from "@hl/sandbox";
 * const r = jsonResponse({ status: 201, body: { ok: true } }, 1 << 20);
 * console.log(r.status); // 201
 * console.log(r.headers); // [["content-type", "application/json"]]
 * ```
 */
export function jsonResponse(value: unknown, maxBytes: number): GuestResponse {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new GuestResponseError("the handler must return an object { status, headers, body }");
  }
  const v = value as Record<string, unknown>;
  for (const k of Object.keys(v)) {
    if (!["status", "headers", "body"].includes(k)) {
      throw new GuestResponseError(`the response has an unknown field ${JSON.stringify(k)}`);
    }
  }
  const status = v.status === undefined ? 200 : checkStatus(v.status, "response");
  const headers: [string, string][] = [];
  if (v.headers !== undefined) {
    if (typeof v.headers !== "object" || v.headers === null || Array.isArray(v.headers)) {
      throw new GuestResponseError("response.headers must be an object of strings");
    }
    const entries = Object.entries(v.headers);
    if (entries.length > MAX_HEAD_LINES) {
      throw new GuestResponseError(`response.headers has more than ${MAX_HEAD_LINES} entries`);
    }
    for (const [name, value] of entries) {
      if (typeof value !== "string") {
        throw new GuestResponseError(`response.headers.${name} must be a string`);
      }
      headers.push(checkHeader(name, value, "response.headers"));
    }
  }
  const hasType = headers.some(([n]) => n === "content-type");
  let body: Uint8Array<ArrayBuffer>;
  if (v.body === undefined || v.body === null) body = new Uint8Array(0);
  else if (typeof v.body === "string") {
    body = new TextEncoder().encode(v.body);
    if (!hasType) headers.push(["content-type", "text/plain; charset=utf-8"]);
  } else {
    body = new TextEncoder().encode(JSON.stringify(v.body));
    if (!hasType) headers.push(["content-type", "application/json"]);
  }
  if (body.length > maxBytes) throw new GuestResponseError(`the body is over ${maxBytes} bytes`);
  checkNullBody(status, body.length, "response");
  return { status, headers, body };
}

/** What a handler sees of a request (the JSON the `js` and `wasm` kinds get). */
export interface ServeRequest {
  /** The method, upper case. */
  method: string;
  /** The path, percent-encoded as received. */
  path: string;
  /** The query string without `?` (empty when none). */
  query: string;
  /** The headers, names in lower case. */
  headers: Record<string, string>;
  /** The body as UTF-8 text (invalid sequences replaced). */
  body: string;
  /** The request id (`x-request-id`). */
  id: string;
}

/**
 * The request as the `js` and `wasm` kinds see it (and `tools/serve_plain.ts`, the load test's
 * baseline, so that both hand a handler the same JSON): `body` is the request's body bytes.
 * `seen` is what the server already parsed of `req` (its URL, and its headers as a record with
 * lower-case names, as `Object.fromEntries(req.headers)` gives them), so it is not parsed twice.
 *
 * @example
 * ```ts
 * import { serveRequest } from "./cgi.ts";
 * const r = serveRequest(new Request("http://h/a?b=1"), new Uint8Array(), "r1");
 * console.log(r.path, r.query); // /a b=1
 * ```
 */
export function serveRequest(
  req: Request,
  body: Uint8Array,
  id: string,
  seen?: { url: URL; headers: Record<string, string> },
): ServeRequest {
  const url = seen?.url ?? new URL(req.url);
  const search = url.search;
  return {
    method: req.method,
    path: url.pathname,
    query: search.length > 0 ? search.slice(1) : "",
    headers: seen?.headers ?? Object.fromEntries(req.headers),
    body: body.length === 0 ? "" : utf8.decode(body),
    id,
  };
}

const utf8 = new TextDecoder();

/**
 * The WAGI/CGI environment of a request (RFC 3875 §4.1 and WAGI's additions): `REQUEST_METHOD`,
 * `SCRIPT_NAME` (the route's prefix), `PATH_INFO` (the rest), `QUERY_STRING`, `CONTENT_LENGTH`,
 * `CONTENT_TYPE`, `SERVER_*`, `REMOTE_ADDR`, `X_FULL_URL`, `X_MATCHED_ROUTE`, `X_REQUEST_ID` and
 * one `HTTP_<NAME>` per header (`-` as `_`, upper case). The route's own `env` comes first; the
 * request's variables win.
 *
 * @example
 * ```ts
 * import { wagiEnv } from "@hl/sandbox";
 * const env = wagiEnv(new Request("http://h/app/x?a=1", { method: "POST" }), {
 *   route: "/app/*", body: 0, remote: "127.0.0.1", id: "r1", env: {},
 * });
 * console.log(env.PATH_INFO); // /x
 * console.log(env.QUERY_STRING); // a=1
 * console.log(env.REQUEST_METHOD); // POST
 * ```
 */
export function wagiEnv(
  req: Request,
  at: { route: string; body: number; remote: string; id: string; env: Record<string, string> },
): Record<string, string> {
  const url = new URL(req.url);
  const prefix = at.route.endsWith("/*") ? at.route.slice(0, -2) : at.route;
  const env: Record<string, string> = { ...at.env };
  for (const [name, value] of req.headers) {
    // NUL cannot cross in an environment entry; Deno's Headers refuse it already.
    env[`HTTP_${name.toUpperCase().replaceAll("-", "_")}`] = value.replaceAll("\0", "");
  }
  Object.assign(env, {
    GATEWAY_INTERFACE: "CGI/1.1",
    REQUEST_METHOD: req.method,
    SCRIPT_NAME: prefix,
    PATH_INFO: url.pathname.slice(prefix.length),
    X_RAW_PATH_INFO: url.pathname.slice(prefix.length),
    QUERY_STRING: url.search.replace(/^\?/, ""),
    CONTENT_LENGTH: String(at.body),
    CONTENT_TYPE: req.headers.get("content-type") ?? "",
    SERVER_NAME: url.hostname,
    SERVER_PORT: url.port || (url.protocol === "https:" ? "443" : "80"),
    SERVER_PROTOCOL: "HTTP/1.1",
    SERVER_SOFTWARE: "hl-serve",
    REMOTE_ADDR: at.remote,
    X_FULL_URL: url.href,
    X_MATCHED_ROUTE: at.route,
    X_REQUEST_ID: at.id,
  });
  return env;
}
