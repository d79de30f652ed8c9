/**
 * `hl serve`'s configuration: the JSON file's shape ({@linkcode ServeConfig}), loading it
 * ({@linkcode loadServeConfig}) and checking it ({@linkcode parseServeConfig}). Every problem is
 * a {@linkcode ServeConfigError} that names the field (`routes[2].timeoutMs`). Relative paths in
 * a route (`module`, `source`, `guest`, preopens) are resolved against the config file's folder
 * (docs/serve.md, "Configuration").
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { MAX_RUN_BYTES, MAX_RUN_ENTRIES } from "../wasm/wasi.ts";

/**
 * The configuration is not valid: `field` names where (`routes[0].strategy`), the message says
 * why.
 *
 * @example
 * ```ts
 * import { parseServeConfig, ServeConfigError } from "@hl/sandbox";
 * try {
 *   parseServeConfig({ routes: [{ path: "/x", kind: "js", source: "h.js", poolSize: 0 }] });
 * } catch (e) {
 *   if (e instanceof ServeConfigError) console.log(e.field); // routes[0].poolSize
 * }
 * ```
 */
export class ServeConfigError extends ArgumentError {
  /** The field at fault, as a path into the config (`routes[1].module`). */
  readonly field: string;

  /** Creates the error for `field`; the message is prefixed with the field. */
  constructor(field: string, message: string, options?: ErrorOptions) {
    super(`${field}: ${message}`, options);
    this.name = "ServeConfigError";
    this.field = field;
  }
}

/** How a route's sandboxes live across requests (docs/serve.md, "Strategies"). */
export type ServeStrategy = "restore" | "renew" | "reuse";

/** The route kinds. */
export type ServeRouteKind = "wagi" | "wasm" | "js" | "guest" | "python";

/** Limits of a request, per route (defaults from {@linkcode ServeConfig.limits}). */
export interface ServeLimits {
  /** Largest request body in bytes (default 1 MiB); more answers 413. */
  maxBodyBytes: number;
  /**
   * Largest total size of the request's path, query, header names and values (default 16 KiB);
   * more: 431.
   */
  maxHeaderBytes: number;
  /** Most request headers (default 100); more answers 431. */
  maxHeaders: number;
  /** Largest response the guest may produce, head and body, in bytes (default 4 MiB); more: 502. */
  maxResponseBytes: number;
}

/** What every route has. */
export interface ServeRouteBase extends ServeLimits {
  /** URL path: exact (`/hello`) or a prefix ending in `/*` (`/api/*`). */
  path: string;
  /** Allowed methods (default: all); another answers 405. */
  methods?: string[];
  /** The strategy (default `restore`; `wagi` routes: `restore` or `renew`). */
  strategy: ServeStrategy;
  /** Sandboxes of the route: the pool size, or the most at once with `renew` (default 4). */
  poolSize: number;
  /** Limit of one request's guest run in ms (default 1 000); past it: 504. */
  timeoutMs: number;
  /** Longest wait for a free sandbox in ms (default 1 000); past it: 503. */
  acquireTimeoutMs: number;
}

/** A WASI command with WAGI semantics: request in env and stdin, CGI-style response on stdout. */
export interface WagiRoute extends ServeRouteBase {
  /** Kind. */
  kind: "wagi";
  /** The module file (resolved). */
  module: string;
  /** `wasmtime` (default) or `wasmi`. */
  engine?: "wasmtime" | "wasmi";
  /** Largest linear memory in bytes. */
  maxMemoryBytes?: number;
  /** Fuel per request. */
  fuel?: number;
  /** Extra environment variables (the request's CGI variables win). */
  env: Record<string, string>;
  /** Preopened directories: guest name → host path (resolved) and writability. */
  preopens: Record<string, { path: string; writable: boolean }>;
}

/** A Wasm export by the bytes convention: request JSON in, CGI-style response out. */
export interface WasmRoute extends ServeRouteBase {
  /** Kind. */
  kind: "wasm";
  /** The module file (resolved). */
  module: string;
  /** The export (default `handle`). */
  export: string;
  /** `wasmtime` (default) or `wasmi`. */
  engine?: "wasmtime" | "wasmi";
  /** Largest linear memory in bytes. */
  maxMemoryBytes?: number;
  /** Fuel per request. */
  fuel?: number;
  /** A baked snapshot file to start from (resolved; docs/serve.md, "Baked snapshots"). */
  snapshot?: string;
}

/** A `JsSandbox` function: `(request) => response`, JSON both ways. */
export interface JsRoute extends ServeRouteBase {
  /** Kind. */
  kind: "js";
  /** The script's file (resolved). */
  source: string;
  /** The function (default `handler`). */
  export: string;
  /** QuickJS's allocation limit in bytes. */
  maxMemoryBytes?: number;
  /** `wasmtime` (default) or `wasmi`. */
  engine?: "wasmtime" | "wasmi";
  /** A baked snapshot file to start from (resolved; docs/serve.md, "Baked snapshots"). */
  snapshot?: string;
}

/** A native guest function taking the body (bytes or string, by its signature) or nothing. */
export interface GuestRoute extends ServeRouteBase {
  /** Kind. */
  kind: "guest";
  /** `testguest` (the built-in test guest) or a guest ELF file (resolved). */
  guest: string;
  /** The guest function. */
  function: string;
  /** `body` (default): the body is the one argument; `none`: no argument. */
  argument: "body" | "none";
  /** The response's `Content-Type` (default `application/octet-stream`). */
  contentType: string;
  /** Guest heap in bytes. */
  heapSize?: number;
  /** A baked snapshot file to start from (resolved; docs/serve.md, "Baked snapshots"). */
  snapshot?: string;
}

/** A route of the configuration, checked. */
export type ServeRoute = WagiRoute | WasmRoute | JsRoute | GuestRoute;

/** The configuration, checked and with defaults filled in. */
export interface ServeConfig {
  /** Address to listen on (default `0.0.0.0`). */
  hostname: string;
  /** Port (default 8080; 0: any free port). */
  port: number;
  /** How long a drain waits for requests in flight, in ms (default 30 000). */
  drainTimeoutMs: number;
  /**
   * How long a drain keeps serving with `/readyz` at 503 before it stops accepting connections,
   * in ms (default 0; behind a Kubernetes Service a few seconds, so endpoints are updated first).
   */
  drainDelayMs: number;
  /** One JSON line per request on stdout (default true). */
  accessLog: boolean;
  /** The routes, matched in order. */
  routes: ServeRoute[];
}

const KINDS = ["wagi", "wasm", "js", "guest", "python"];
const STRATEGIES = ["restore", "renew", "reuse"];
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const COMMON = [
  "path",
  "methods",
  "kind",
  "strategy",
  "poolSize",
  "timeoutMs",
  "acquireTimeoutMs",
  "maxBodyBytes",
  "maxHeaderBytes",
  "maxHeaders",
  "maxResponseBytes",
];
const KIND_FIELDS: Record<string, string[]> = {
  wagi: ["module", "engine", "maxMemoryBytes", "fuel", "env", "preopens"],
  wasm: ["module", "export", "engine", "maxMemoryBytes", "fuel", "snapshot"],
  js: ["source", "export", "maxMemoryBytes", "engine", "snapshot"],
  guest: ["guest", "function", "argument", "contentType", "heapSize", "snapshot"],
};
const TOP = [
  "hostname",
  "port",
  "drainTimeoutMs",
  "drainDelayMs",
  "accessLog",
  "limits",
  "routes",
];
const LIMITS = ["maxBodyBytes", "maxHeaderBytes", "maxHeaders", "maxResponseBytes"];
const DEFAULT_LIMITS: ServeLimits = {
  maxBodyBytes: 1 << 20,
  maxHeaderBytes: 16 << 10,
  maxHeaders: 100,
  maxResponseBytes: 4 << 20,
};

function at(where: string, key: string): string {
  return where ? `${where}.${key}` : key;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function onlyKnown(obj: Record<string, unknown>, known: readonly string[], where: string) {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) {
      throw new ServeConfigError(where ? `${where}.${k}` : k, "unknown field");
    }
  }
}

function int(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  dflt: number | undefined,
  min: number,
  max = Number.MAX_SAFE_INTEGER,
): number | undefined {
  const v = obj[key];
  if (v === undefined) return dflt;
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new ServeConfigError(
      at(where, key),
      `must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function str(obj: Record<string, unknown>, key: string, where: string): string | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || v === "") {
    throw new ServeConfigError(at(where, key), "must be a non-empty string");
  }
  return v;
}

function required(obj: Record<string, unknown>, key: string, where: string): string {
  const v = str(obj, key, where);
  if (v === undefined) throw new ServeConfigError(at(where, key), "is required");
  return v;
}

function oneOf<T extends string>(
  obj: Record<string, unknown>,
  key: string,
  where: string,
  values: readonly T[],
): T | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (!values.includes(v as T)) {
    throw new ServeConfigError(
      at(where, key),
      `must be one of ${values.join(", ")}, got ${JSON.stringify(v)}`,
    );
  }
  return v as T;
}

function resolvePath(base: string | undefined, p: string): string {
  if (p.startsWith("/") || base === undefined) return p;
  return `${base.replace(/\/+$/, "")}/${p}`;
}

function limitsOf(
  obj: Record<string, unknown>,
  where: string,
  dflt: ServeLimits,
): ServeLimits {
  const big = 1 << 30;
  return {
    maxBodyBytes: int(obj, "maxBodyBytes", where, dflt.maxBodyBytes, 0, big)!,
    maxHeaderBytes: int(obj, "maxHeaderBytes", where, dflt.maxHeaderBytes, 1, big)!,
    maxHeaders: int(obj, "maxHeaders", where, dflt.maxHeaders, 1, 100_000)!,
    maxResponseBytes: int(obj, "maxResponseBytes", where, dflt.maxResponseBytes, 1, big)!,
  };
}

/**
 * A WAGI request's environment must fit `runWasi`'s per-run bounds (`MAX_RUN_BYTES`,
 * `MAX_RUN_ENTRIES`) whatever the request: its worst case from the route's limits is checked here,
 * so an oversized request is a 431 at the door, never a failed run. Per header byte at most 4
 * bytes (a value is in `HTTP_*` and may be in `CONTENT_TYPE`/`SERVER_NAME`/`X_FULL_URL`; a
 * Latin-1 character is 2 bytes of UTF-8), per header 8 (`HTTP_`, `=`, NUL, the entry's pointer
 * does not count), the route's own env, and 2 KiB plus the route's path twice for the rest.
 */
function wagiEnvBound(
  limits: ServeLimits & { path: string },
  env: Record<string, string>,
  where: string,
): void {
  const enc = new TextEncoder();
  const own = Object.entries(env).reduce(
    (n, [k, v]) => n + enc.encode(k).length + enc.encode(v).length + 2,
    0,
  );
  const worst = 4 * limits.maxHeaderBytes + 8 * limits.maxHeaders + own + 2048 +
    2 * limits.path.length;
  if (worst > MAX_RUN_BYTES) {
    throw new ServeConfigError(
      `${where}.maxHeaderBytes`,
      `a request's WAGI environment could reach ${worst} bytes with these limits and env, ` +
        `over the ${MAX_RUN_BYTES} a run takes (4 bytes per header byte, 8 per header)`,
    );
  }
  if (limits.maxHeaders + Object.keys(env).length + 20 > MAX_RUN_ENTRIES) {
    throw new ServeConfigError(
      `${where}.maxHeaders`,
      `a request's WAGI environment could have more than the ${MAX_RUN_ENTRIES} entries a run takes`,
    );
  }
}

function stringMap(v: unknown, where: string): Record<string, string> {
  if (v === undefined) return {};
  if (!isObject(v)) throw new ServeConfigError(where, "must be an object of strings");
  const out: Record<string, string> = {};
  for (const [k, s] of Object.entries(v)) {
    if (typeof s !== "string") throw new ServeConfigError(`${where}.${k}`, "must be a string");
    if (k === "" || k.includes("=") || k.includes("\0") || s.includes("\0")) {
      throw new ServeConfigError(`${where}.${k}`, "names and values cannot hold = or NUL");
    }
    out[k] = s;
  }
  return out;
}

function route(raw: unknown, i: number, base: string | undefined, limits: ServeLimits) {
  const where = `routes[${i}]`;
  if (!isObject(raw)) throw new ServeConfigError(where, "must be an object");
  const kind = oneOf(raw, "kind", where, KINDS);
  if (kind === undefined) throw new ServeConfigError(`${where}.kind`, "is required");
  if (kind === "python") {
    throw new ServeConfigError(
      `${where}.kind`,
      "python routes are an extension point not built yet (docs/serve.md, 'Python')",
    );
  }
  onlyKnown(raw, [...COMMON, ...KIND_FIELDS[kind]], where);
  const path = required(raw, "path", where);
  if (!/^\/[^\s?#*]*(\/\*)?$/.test(path)) {
    throw new ServeConfigError(
      `${where}.path`,
      `must start with / and be exact or end in /*, with no ?, # or spaces: ${
        JSON.stringify(path)
      }`,
    );
  }
  let methods: string[] | undefined;
  if (raw.methods !== undefined) {
    if (
      !Array.isArray(raw.methods) || raw.methods.length === 0 ||
      !raw.methods.every((m) => typeof m === "string" && METHOD.test(m))
    ) {
      throw new ServeConfigError(`${where}.methods`, "must be a non-empty array of method names");
    }
    methods = raw.methods.map((m: string) => m.toUpperCase());
  }
  const strategy = oneOf(raw, "strategy", where, STRATEGIES as ServeStrategy[]) ?? "restore";
  if (kind === "wagi" && strategy === "reuse") {
    throw new ServeConfigError(
      `${where}.strategy`,
      "a WASI command's _start runs once per instance (wasi-libc traps on a second start, and " +
        "its state is the last request's): a WAGI route takes restore (a pool restored after " +
        "each request) or renew; a wasm route (bytes convention) supports reuse",
    );
  }
  const common = {
    path,
    methods,
    strategy,
    poolSize: int(raw, "poolSize", where, 4, 1, 1024)!,
    timeoutMs: int(raw, "timeoutMs", where, 1000, 1, 3_600_000)!,
    acquireTimeoutMs: int(raw, "acquireTimeoutMs", where, 1000, 0, 3_600_000)!,
    ...limitsOf(raw, where, limits),
  };
  const engine = oneOf(raw, "engine", where, ["wasmtime", "wasmi"] as const);
  const snapshotPath = str(raw, "snapshot", where);
  const snapshot = snapshotPath === undefined ? undefined : resolvePath(base, snapshotPath);
  const mem = int(raw, "maxMemoryBytes", where, undefined, 65536, 4 << 30);
  switch (kind) {
    case "wagi": {
      const preopens: WagiRoute["preopens"] = {};
      if (raw.preopens !== undefined) {
        if (!isObject(raw.preopens)) {
          throw new ServeConfigError(`${where}.preopens`, "must be an object");
        }
        for (const [name, p] of Object.entries(raw.preopens)) {
          const pw = `${where}.preopens.${name}`;
          if (typeof p === "string" && p !== "") {
            preopens[name] = { path: resolvePath(base, p), writable: false };
          } else if (isObject(p) && typeof p.path === "string" && p.path !== "") {
            onlyKnown(p, ["path", "writable"], pw);
            if (p.writable !== undefined && typeof p.writable !== "boolean") {
              throw new ServeConfigError(`${pw}.writable`, "must be a boolean");
            }
            preopens[name] = { path: resolvePath(base, p.path), writable: p.writable === true };
          } else {
            throw new ServeConfigError(pw, "must be a path or { path, writable }");
          }
        }
      }
      const env = stringMap(raw.env, `${where}.env`);
      wagiEnvBound(common, env, where);
      return {
        ...common,
        kind,
        module: resolvePath(base, required(raw, "module", where)),
        engine,
        maxMemoryBytes: mem,
        fuel: int(raw, "fuel", where, undefined, 1),
        env,
        preopens,
      } satisfies WagiRoute;
    }
    case "wasm":
      return {
        ...common,
        kind,
        module: resolvePath(base, required(raw, "module", where)),
        export: str(raw, "export", where) ?? "handle",
        engine,
        maxMemoryBytes: mem,
        fuel: int(raw, "fuel", where, undefined, 1),
        snapshot,
      } satisfies WasmRoute;
    case "js":
      return {
        ...common,
        kind,
        source: resolvePath(base, required(raw, "source", where)),
        export: str(raw, "export", where) ?? "handler",
        maxMemoryBytes: mem,
        engine,
        snapshot,
      } satisfies JsRoute;
    default: {
      const guest = required(raw, "guest", where);
      return {
        ...common,
        kind: "guest",
        guest: guest === "testguest" ? guest : resolvePath(base, guest),
        function: required(raw, "function", where),
        argument: oneOf(raw, "argument", where, ["body", "none"] as const) ?? "body",
        contentType: str(raw, "contentType", where) ?? "application/octet-stream",
        heapSize: int(raw, "heapSize", where, undefined, 65536, 4 << 30),
        snapshot,
      } satisfies GuestRoute;
    }
  }
}

/**
 * Checks a configuration object (the parsed JSON) and fills in the defaults; relative paths are
 * resolved against `baseDir` when given. Throws {@linkcode ServeConfigError} naming the field.
 *
 * @example
 * ```ts
 * import { parseServeConfig } from "@hl/sandbox";
 * const config = parseServeConfig({
 *   port: 0,
 *   routes: [{ path: "/hello", kind: "js", source: "hello.js" }],
 * }, "/srv");
 * console.log(config.routes[0].strategy); // restore
 * console.log(config.routes[0].poolSize); // 4
 * ```
 */
export function parseServeConfig(raw: unknown, baseDir?: string): ServeConfig {
  if (!isObject(raw)) throw new ServeConfigError("(top)", "the config must be a JSON object");
  onlyKnown(raw, TOP, "");
  let limits = DEFAULT_LIMITS;
  if (raw.limits !== undefined) {
    if (!isObject(raw.limits)) throw new ServeConfigError("limits", "must be an object");
    onlyKnown(raw.limits, LIMITS, "limits");
    limits = limitsOf(raw.limits, "limits", DEFAULT_LIMITS);
  }
  if (raw.accessLog !== undefined && typeof raw.accessLog !== "boolean") {
    throw new ServeConfigError("accessLog", "must be a boolean");
  }
  if (!Array.isArray(raw.routes) || raw.routes.length === 0) {
    throw new ServeConfigError("routes", "must be a non-empty array");
  }
  const routes = raw.routes.map((r, i) => route(r, i, baseDir, limits));
  const seen = new Set<string>();
  routes.forEach((r, i) => {
    if (seen.has(r.path)) throw new ServeConfigError(`routes[${i}].path`, "appears twice");
    seen.add(r.path);
  });
  for (const r of routes) {
    if (["/healthz", "/readyz", "/metrics"].includes(r.path)) {
      throw new ServeConfigError(
        `routes[${routes.indexOf(r)}].path`,
        `${r.path} is an operations endpoint`,
      );
    }
  }
  return {
    hostname: str(raw, "hostname", "") ?? "0.0.0.0",
    port: int(raw, "port", "", 8080, 0, 65535)!,
    drainTimeoutMs: int(raw, "drainTimeoutMs", "", 30_000, 0, 3_600_000)!,
    drainDelayMs: int(raw, "drainDelayMs", "", 0, 0, 600_000)!,
    accessLog: raw.accessLog !== false,
    routes,
  };
}

/**
 * Reads and checks a JSON config file; relative paths in it are relative to its folder.
 *
 * @example
 * ```ts
 * import { loadServeConfig } from "@hl/sandbox";
 * const path = await Deno.makeTempFile({ suffix: ".json" });
 * await Deno.writeTextFile(path, JSON.stringify({ routes: [{ path: "/f", kind: "js", source: "f.js" }] }));
 * const config = await loadServeConfig(path);
 * console.log(config.routes.length); // 1
 * await Deno.remove(path);
 * ```
 */
export async function loadServeConfig(path: string): Promise<ServeConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new ServeConfigError("(file)", `cannot read ${path}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ServeConfigError("(file)", `${path} is not JSON: ${(e as Error).message}`);
  }
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? Deno.cwd() : slash === 0 ? "/" : path.slice(0, slash);
  const base = dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
  return parseServeConfig(raw, base);
}
