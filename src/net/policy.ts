/**
 * The `net` option's rules and limits (docs/networking.md): parsing them once, and checking a
 * guest's request against them before anything leaves the host.
 *
 * @module
 */

import { ArgumentError, NetworkPolicyError } from "../errors.ts";
import { formatIP, parseIP } from "./address.ts";

/**
 * One allow rule: a URL prefix string such as `"https://api.example.com/v1/"` (scheme, exact host
 * or `*.example.com` for its subdomains, port — the scheme's default when not written — and path
 * prefix on segment boundaries; every method but `CONNECT`/`TRACE`), or that string with a method
 * filter.
 */
export type NetRule = string | {
  /** The URL prefix, as the string form. */
  url: string;
  /** Methods allowed (upper case; default: all but `CONNECT`, `TRACE`, `TRACK`). */
  methods?: readonly string[];
};

/** Limits of the `net` capability; each has a default (docs/networking.md). */
export interface NetLimits {
  /** Largest request body in bytes (default 16 MiB). */
  maxRequestBodyBytes?: number;
  /** Largest response body in bytes (default 16 MiB); past it the request fails, body cut. */
  maxResponseBodyBytes?: number;
  /** Requests in flight at once per sandbox (default 16); more wait. */
  maxConcurrent?: number;
  /** Limit of one request, from connect to the last body byte, in ms (default 30 000). */
  timeoutMs?: number;
  /** Requests per guest call (default 64). */
  maxRequestsPerCall?: number;
  /** Body bytes both ways per guest call (default 64 MiB). */
  maxBytesPerCall?: number;
}

/** The `net` option of a sandbox: deny by default, allow what `allow` names. */
export interface NetOptions {
  /** The rules; a request must match one. Empty or absent: nothing is allowed. */
  allow?: readonly NetRule[];
  /** Limits (defaults in {@linkcode NET_DEFAULTS}). */
  limits?: NetLimits;
}

const MIB = 1 << 20;

/** The default limits. */
export const NET_DEFAULTS: Readonly<Required<NetLimits>> = Object.freeze({
  maxRequestBodyBytes: 16 * MIB,
  maxResponseBodyBytes: 16 * MIB,
  maxConcurrent: 16,
  timeoutMs: 30_000,
  maxRequestsPerCall: 64,
  maxBytesPerCall: 64 * MIB,
});

/** Methods never sent, whatever a rule says. */
export const FORBIDDEN_METHODS: ReadonlySet<string> = new Set(["CONNECT", "TRACE", "TRACK"]);

/** A parsed rule. */
export interface CompiledRule {
  readonly text: string;
  readonly scheme: "http:" | "https:";
  /** Lower-case host; for a wildcard, the suffix with its dot (`.example.com`). */
  readonly host: string;
  readonly wildcard: boolean;
  /** The host is an IP literal (canonical text): only then may it be a private address. */
  readonly literal: string | undefined;
  readonly port: number;
  readonly path: string;
  readonly methods: ReadonlySet<string> | undefined;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** The port of `url`, its scheme's default when not written. */
export function portOf(url: URL): number {
  if (url.port !== "") return Number(url.port);
  return url.protocol === "https:" ? 443 : 80;
}

/** The host of `url` without IPv6 brackets, and its canonical IP text when it is a literal. */
export function hostOf(url: URL): { name: string; literal: string | undefined } {
  const h = url.hostname.toLowerCase();
  const bare = h.startsWith("[") ? h.slice(1, -1) : h;
  const ip = parseIP(bare);
  return { name: bare, literal: ip ? formatIP(ip) : undefined };
}

function compileRule(rule: NetRule, i: number): CompiledRule {
  const where = `net.allow[${i}]`;
  const text = typeof rule === "string" ? rule : rule?.url;
  if (typeof text !== "string") throw new ArgumentError(`${where} must be a URL string or { url }`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ArgumentError(`${where} is not a URL: ${JSON.stringify(text)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new ArgumentError(`${where}: only http: and https: rules are possible`);
  }
  if (url.username || url.password || url.search || url.hash) {
    throw new ArgumentError(`${where}: a rule has no credentials, query or fragment`);
  }
  const { name, literal } = hostOf(url);
  let wildcard = false;
  let host = name;
  if (name.includes("*")) {
    if (!name.startsWith("*.") || name.slice(2).includes("*") || name.split(".").length < 3) {
      throw new ArgumentError(
        `${where}: a wildcard is a whole first label over at least two more (*.example.com)`,
      );
    }
    wildcard = true;
    host = name.slice(1);
  }
  let methods: Set<string> | undefined;
  if (typeof rule === "object" && rule.methods !== undefined) {
    if (!Array.isArray(rule.methods)) throw new ArgumentError(`${where}.methods must be an array`);
    methods = new Set();
    for (const m of rule.methods) {
      if (typeof m !== "string" || !TOKEN.test(m)) {
        throw new ArgumentError(`${where}.methods: ${JSON.stringify(m)} is not a method`);
      }
      methods.add(m.toUpperCase());
    }
  }
  const path = normalizePath(url.pathname, where, true);
  return {
    text,
    scheme: url.protocol as "http:" | "https:",
    host,
    wildcard,
    literal,
    port: portOf(url),
    path,
    methods,
  };
}

/**
 * A path as the policy sees it and as it is sent: the URL parser has resolved `.`/`..` (also
 * `%2e`), runs of `/` become one; an encoded `/`, `\` or `.` left in it is refused (servers
 * disagree on what they mean).
 */
export function normalizePath(pathname: string, where: string, forRule = false): string {
  if (/%2f|%5c|%2e|%00/i.test(pathname) || pathname.includes("\\")) {
    const msg = `${where}: the path ${
      JSON.stringify(pathname.slice(0, 200))
    } has an encoded '/', '\\', '.' or NUL`;
    if (forRule) throw new ArgumentError(msg);
    throw new NetworkPolicyError("path", msg);
  }
  const p = pathname.replace(/\/{2,}/g, "/");
  return p === "" ? "/" : p;
}

/** Whether `path` is `prefix` or under it on a segment boundary. */
function underPrefix(path: string, prefix: string): boolean {
  if (prefix === "/" || path === prefix) return true;
  if (prefix.endsWith("/")) return path.startsWith(prefix);
  return path.startsWith(prefix + "/");
}

function positive(v: unknown, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1) {
    throw new ArgumentError(`net.limits.${name} must be a positive integer`);
  }
  return v;
}

/** A checked `net` option. */
export class NetPolicy {
  readonly rules: readonly CompiledRule[];
  readonly limits: Readonly<Required<NetLimits>>;

  constructor(options: NetOptions) {
    if (typeof options !== "object" || options === null) {
      throw new ArgumentError("net must be an object { allow, limits }");
    }
    if (options.allow !== undefined && !Array.isArray(options.allow)) {
      throw new ArgumentError("net.allow must be an array of rules");
    }
    this.rules = (options.allow ?? []).map(compileRule);
    const l = options.limits ?? {};
    if (typeof l !== "object" || l === null) {
      throw new ArgumentError("net.limits must be an object");
    }
    this.limits = Object.freeze({
      maxRequestBodyBytes: positive(
        l.maxRequestBodyBytes,
        "maxRequestBodyBytes",
        NET_DEFAULTS.maxRequestBodyBytes,
      ),
      maxResponseBodyBytes: positive(
        l.maxResponseBodyBytes,
        "maxResponseBodyBytes",
        NET_DEFAULTS.maxResponseBodyBytes,
      ),
      maxConcurrent: positive(l.maxConcurrent, "maxConcurrent", NET_DEFAULTS.maxConcurrent),
      timeoutMs: positive(l.timeoutMs, "timeoutMs", NET_DEFAULTS.timeoutMs),
      maxRequestsPerCall: positive(
        l.maxRequestsPerCall,
        "maxRequestsPerCall",
        NET_DEFAULTS.maxRequestsPerCall,
      ),
      maxBytesPerCall: positive(l.maxBytesPerCall, "maxBytesPerCall", NET_DEFAULTS.maxBytesPerCall),
    });
  }

  /**
   * The rule that allows `method` on `url` (already parsed, path normalised), or a
   * `NetworkPolicyError` naming the check that failed for the closest rule.
   */
  match(url: URL, path: string, method: string): CompiledRule {
    const { name, literal } = hostOf(url);
    const port = portOf(url);
    let failed: [string, string] = [
      "host",
      `no net rule allows the host ${JSON.stringify(name)}`,
    ];
    const rank = { host: 0, scheme: 1, port: 2, path: 3, method: 4 } as Record<string, number>;
    const worse = (rule: string, msg: string) => {
      if (rank[rule] > rank[failed[0]]) failed = [rule, msg];
    };
    for (const r of this.rules) {
      const hostOk = r.wildcard
        ? name.endsWith(r.host) && name.length > r.host.length && literal === undefined
        : (r.literal !== undefined ? r.literal === literal : r.host === name);
      if (!hostOk) continue;
      if (r.scheme !== url.protocol) {
        worse("scheme", `the rule for ${name} allows ${r.scheme} only, not ${url.protocol}`);
        continue;
      }
      if (r.port !== port) {
        worse("port", `the rule for ${name} allows port ${r.port} only, not ${port}`);
        continue;
      }
      if (!underPrefix(path, r.path)) {
        worse("path", `the path ${JSON.stringify(path.slice(0, 200))} is outside ${r.path}`);
        continue;
      }
      if (r.methods && !r.methods.has(method)) {
        worse("method", `the rule ${r.text} does not allow ${method}`);
        continue;
      }
      return r;
    }
    throw new NetworkPolicyError(failed[0], failed[1]);
  }
}
