/**
 * `serve(config, options)`: the HTTP function host on `Deno.serve` (docs/serve.md). Routes map
 * paths to sandboxed functions (src/serve/routes.ts); the server adds the limits (413, 431), the
 * status codes of guest failures (500 fault, 502 malformed response, 503 no free sandbox, 504
 * timeout), the operations endpoints (`/healthz`, `/readyz`, `/metrics`), a request id, one JSON
 * access-log line per request, and a graceful drain.
 *
 * @module
 */

import { PoolExhaustedError } from "../pool_core.ts";
import { GuestResponseError, NULL_BODY_STATUSES } from "./cgi.ts";
import { loadServeConfig, parseServeConfig, type ServeConfig, type ServeRoute } from "./config.ts";
import { processMemory, ServeMetrics } from "./metrics.ts";
import { type RouteHandler, startRoute } from "./routes.ts";

/** Options of {@linkcode serve} (they override the config's). */
export interface ServeOptions {
  /** Port (0: any free port; see {@linkcode HlServer.addr}). */
  port?: number;
  /** Address to listen on. */
  hostname?: string;
  /** Where access-log and server-log lines go (default: stdout; `null`: nowhere). */
  log?: ((line: string) => void) | null;
}

/** A running server. */
export interface HlServer extends AsyncDisposable {
  /** The address it listens on. */
  readonly addr: Deno.NetAddr;
  /** Resolves when every route's sandboxes are warm; rejects when a route cannot start. */
  readonly ready: Promise<void>;
  /** Whether `/readyz` answers 200 now (warm and not draining). */
  readonly isReady: boolean;
  /** Resolves when the server has stopped and its sandboxes are disposed. */
  readonly finished: Promise<void>;
  /**
   * Drains: `/readyz` answers 503 at once and responses carry `Connection: close`; after the
   * config's `drainDelayMs` (still serving) the server stops accepting connections, lets requests
   * in flight finish (at most `drainTimeoutMs`), then disposes every sandbox. Idempotent.
   */
  drain(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** Methods that get their own label in the metrics; the rest are `other`. */
const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]);

function matches(route: ServeRoute, path: string): boolean {
  if (route.path.endsWith("/*")) {
    const prefix = route.path.slice(0, -2);
    return path === prefix || path.startsWith(`${prefix}/`);
  }
  return path === route.path;
}

function text(status: number, body: string, extra: Record<string, string> = {}): Response {
  return new Response(body + "\n", {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...extra },
  });
}

/** An empty body (no `content-length`, or 0, and no stream). */
const EMPTY = new Uint8Array(0);

class BodyTooLarge extends Error {}

/** What answering a request found out, for the metrics and the access log. */
interface Note {
  /** The matched route's path ("" when none matched). */
  route: string;
  /** The error class when the guest failed. */
  error?: string;
  /** Whether the response was made with its `x-request-id` header already. */
  idSet: boolean;
}

/**
 * The body, at most `max` bytes (`BodyTooLarge` past it). `declared` is the request's
 * `content-length` (null: none, e.g. chunked). With a declared length within `max`, the HTTP
 * layer delivers exactly that many bytes, so the body is read whole (`Request.bytes()`, one
 * collect); without one it is read chunk by chunk and refused as soon as it passes `max`.
 */
async function readBody(req: Request, declared: string | null, max: number): Promise<Uint8Array> {
  if (declared !== null) {
    const n = Number(declared);
    if (n > max) throw new BodyTooLarge();
    if (n === 0) return EMPTY;
    // Not `req.body` first: that getter makes the body's stream, which `bytes()` may not need.
    const whole = await req.bytes();
    // Hyper frames the body by its content-length; a longer one cannot arrive (a check, not a hope).
    if (whole.length > max) throw new BodyTooLarge();
    return whole;
  }
  if (!req.body) return EMPTY;
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > max) {
      await reader.cancel().catch(() => {});
      throw new BodyTooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(n);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Maps an error from a handler to a status; `guest` says whether it counts as a guest error. */
function statusOf(e: unknown): { status: number; guest: boolean } {
  if (e instanceof PoolExhaustedError) return { status: 503, guest: false };
  if (e instanceof Error && e.name === "TimeoutError") return { status: 504, guest: true };
  if (e instanceof GuestResponseError) return { status: 502, guest: true };
  return { status: 500, guest: true };
}

/**
 * The checked config (read from its file when `config` is a path; a checked config passes the
 * checks again unchanged, its paths already resolved) and where log lines go: `options.log`,
 * stdout when absent, nowhere when `null`. For {@linkcode serve} and {@linkcode bakeServeSnapshots}.
 */
async function configAndLog(
  config: ServeConfig | Record<string, unknown> | string,
  options: Pick<ServeOptions, "log">,
): Promise<{ cfg: ServeConfig; log: (line: string) => void }> {
  const cfg: ServeConfig = typeof config === "string"
    ? await loadServeConfig(config)
    : parseServeConfig(config);
  const log = options.log === undefined
    ? (line: string) => console.log(line)
    : options.log ?? (() => {});
  return { cfg, log };
}

/**
 * Starts the HTTP function host: `config` is a checked config, a config object as in the JSON
 * file, or the path of the file. It listens at once (`/healthz` answers 200) and starts every
 * route's sandboxes; `/readyz` answers 200 once all are warm ({@linkcode HlServer.ready}).
 *
 * @example
 * ```ts
 * import { serve } from "@hl/sandbox";
 * const source = await Deno.makeTempFile({ suffix: ".js" });
 * await Deno.writeTextFile(source, "function handler(req) { return { body: 'hi ' + req.path }; }");
 * await using server = await serve({
 *   routes: [{ path: "/hello", kind: "js", source }],
 * }, { port: 0, hostname: "127.0.0.1", log: null });
 * await server.ready;
 * const res = await fetch(`http://127.0.0.1:${server.addr.port}/hello`);
 * console.log(res.status); // 200
 * ```
 */
export async function serve(
  config: ServeConfig | Record<string, unknown> | string,
  options: ServeOptions = {},
): Promise<HlServer> {
  const { cfg, log } = await configAndLog(config, options);
  const event = (e: Record<string, unknown>) =>
    log(JSON.stringify({ time: new Date().toISOString(), ...e }));
  const metrics = new ServeMetrics();
  const handlers: (RouteHandler | undefined)[] = cfg.routes.map(() => undefined);
  // A gauge's samples: one per started route, labelled by its path (and strategy).
  const perRoute = (value: (h: RouteHandler) => number, strategy = false) => () =>
    handlers.flatMap((h) =>
      h
        ? [{
          labels: strategy
            ? { route: h.route.path, strategy: h.route.strategy } as Record<string, string>
            : { route: h.route.path },
          value: value(h),
        }]
        : []
    );
  let warm = false;
  let draining = false;

  metrics.gauge({
    name: "hl_serve_ready",
    help: "1 when every route's sandboxes are warm and the server is not draining.",
    read: () => [{ labels: {}, value: warm && !draining ? 1 : 0 }],
  });
  metrics.gauge({
    name: "hl_serve_pool_size",
    help: "Sandboxes of a route (with renew: the most at once).",
    read: perRoute((h) => h.runner.size, true),
  });
  metrics.gauge({
    name: "hl_serve_pool_available",
    help: "Sandboxes of a route free now.",
    read: perRoute((h) => h.runner.available),
  });
  metrics.gauge({
    name: "hl_serve_sandboxes_replaced_total",
    type: "counter",
    help: "Sandboxes replaced since start because a request poisoned them (reuse).",
    read: perRoute((h) => h.runner.replaced),
  });
  metrics.gauge({
    name: "process_resident_memory_bytes",
    help: "Resident set size of this process.",
    read: () => [{ labels: {}, value: processMemory().rss ?? 0 }],
  });
  metrics.gauge({
    name: "hl_serve_peak_resident_memory_bytes",
    help: "Peak resident set size of this process (VmHWM).",
    read: () => [{ labels: {}, value: processMemory().peak ?? 0 }],
  });

  async function answer(
    req: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
    id: string,
    note: Note,
  ): Promise<Response> {
    const url = new URL(req.url);
    const path = url.pathname;
    if (path === "/healthz") return text(200, "ok");
    if (path === "/readyz") {
      return warm && !draining ? text(200, "ready") : text(503, draining ? "draining" : "warming");
    }
    if (path === "/metrics") {
      return new Response(metrics.text(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    }
    const i = cfg.routes.findIndex((r) => matches(r, path));
    if (i < 0) return text(404, "no route");
    const route = cfg.routes[i];
    note.route = route.path;
    if (route.methods && !route.methods.includes(req.method)) {
      return text(405, "method not allowed", { allow: route.methods.join(", ") });
    }
    // The request line's target counts with the headers: WAGI passes it in the environment.
    // One pass over the headers checks the limits and keeps them for the handler's request.
    let count = 0;
    let bytes = url.pathname.length + url.search.length;
    // No prototype: a header named `__proto__` is an own key, as Object.fromEntries makes it.
    const headers: Record<string, string> = Object.create(null);
    for (const [k, v] of req.headers) {
      count++;
      bytes += k.length + v.length;
      headers[k] = v;
    }
    if (count > route.maxHeaders || bytes > route.maxHeaderBytes) {
      return text(431, "request headers too large");
    }
    const h = handlers[i];
    if (!h) return text(503, "route not ready", { "retry-after": "1" });
    let body: Uint8Array;
    try {
      // A declared length is what arrives (hyper frames the body by it, and answers 400 to a
      // request that also names a transfer coding: tests/kvm/serve.test.ts); otherwise, count.
      const declared = headers["transfer-encoding"] === undefined
        ? headers["content-length"] ?? null
        : null;
      body = await readBody(req, declared, route.maxBodyBytes);
    } catch (e) {
      if (e instanceof BodyTooLarge) return text(413, "request body too large");
      return text(400, "cannot read the request body");
    }
    try {
      const r = await h.handle(req, {
        body,
        id,
        remote: info.remoteAddr.hostname,
        url,
        headers,
      });
      // The request id goes in with the guest's headers (which may not name it: cgi.ts), so the
      // response's header list is built once instead of amended after.
      const head: [string, string][] = [...r.headers, ["x-request-id", id]];
      note.idSet = true;
      // 204, 205 and 304 take no body at all (the parsers refused a non-empty one).
      return new Response(NULL_BODY_STATUSES.has(r.status) ? null : r.body, {
        status: r.status,
        headers: head,
      });
    } catch (e) {
      const { status, guest } = statusOf(e);
      const name = e instanceof Error ? e.name : "Error";
      note.error = name;
      if (guest) metrics.guestError(route.path, name);
      const what = status === 504
        ? "the function timed out"
        : status === 503
        ? "no sandbox free"
        : status === 502
        ? "the function's response is malformed"
        : "the function failed";
      return text(status, what, status === 503 ? { "retry-after": "1" } : {});
    }
  }

  const server = Deno.serve({
    port: options.port ?? cfg.port,
    hostname: options.hostname ?? cfg.hostname,
    onListen: () => {},
    onError: () => text(500, "internal error"),
  }, async (req, info) => {
    const t0 = performance.now();
    const given = req.headers.get("x-request-id");
    const id = given !== null && REQUEST_ID.test(given) ? given : crypto.randomUUID();
    const note: Note = { route: "", idSet: false };
    metrics.inFlight++;
    let res: Response;
    try {
      res = await answer(req, info, id, note);
    } catch (e) {
      note.error = e instanceof Error ? e.name : "Error";
      res = text(500, "internal error");
    } finally {
      metrics.inFlight--;
    }
    if (!note.idSet) res.headers.set("x-request-id", id);
    // While draining, a keep-alive client is told to take its next request elsewhere.
    if (draining) res.headers.set("connection", "close");
    const ms = performance.now() - t0;
    // The method is the client's: any other token would make a new series per name.
    const method = METHODS.has(req.method) ? req.method : "other";
    if (note.route) metrics.request(note.route, method, res.status, ms / 1000);
    if (cfg.accessLog) {
      const url = new URL(req.url);
      log(JSON.stringify({
        time: new Date().toISOString(),
        id,
        method: req.method,
        path: url.pathname,
        route: note.route || undefined,
        status: res.status,
        ms: Math.round(ms * 1000) / 1000,
        remote: info.remoteAddr.hostname,
        ...(note.error ? { error: note.error } : {}),
      }));
    }
    return res;
  });

  const ready = (async () => {
    try {
      for (let i = 0; i < cfg.routes.length; i++) {
        if (draining) return;
        handlers[i] = await startRoute(cfg.routes[i], i, { log: event });
      }
      warm = !draining;
      log(
        JSON.stringify({
          time: new Date().toISOString(),
          event: "ready",
          routes: cfg.routes.length,
        }),
      );
    } catch (e) {
      log(JSON.stringify({
        time: new Date().toISOString(),
        event: "route_failed",
        error: e instanceof Error ? `${e.name}: ${e.message}` : String(e),
      }));
      throw e;
    }
  })();
  ready.catch(() => {});

  let drained: Promise<void> | undefined;
  let finish!: () => void;
  const finished = new Promise<void>((r) => finish = r);
  const drain = (): Promise<void> =>
    drained ??= (async () => {
      draining = true;
      event({ event: "draining", delayMs: cfg.drainDelayMs });
      // Still serving, but /readyz says 503, so load balancers stop sending new requests first.
      if (cfg.drainDelayMs > 0) await new Promise((r) => setTimeout(r, cfg.drainDelayMs));
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        server.shutdown(),
        new Promise<void>((r) => timer = setTimeout(r, cfg.drainTimeoutMs)),
      ]);
      clearTimeout(timer);
      await ready.catch(() => {});
      for (const h of handlers) await h?.runner.dispose().catch(() => {});
      log(JSON.stringify({ time: new Date().toISOString(), event: "drained" }));
      finish();
    })();

  return {
    addr: server.addr as Deno.NetAddr,
    ready,
    get isReady() {
      return warm && !draining;
    },
    finished,
    drain,
    [Symbol.asyncDispose]: drain,
  };
}

/**
 * Bakes the snapshots of a config's routes (docs/serve.md, "Baked snapshots"): each `wasm`, `js`
 * or `guest` route with a `snapshot` file starts once, cold, and its snapshot is saved there
 * with its key beside it; a server started later with the same config starts those routes from
 * the files. Resolves the number of snapshots written. Events go to `log` as for
 * {@linkcode serve}.
 *
 * @example
 * ```ts
 * import { bakeServeSnapshots } from "@hl/sandbox";
 * const dir = await Deno.makeTempDir();
 * await Deno.writeTextFile(`${dir}/f.js`, "function handler() { return { body: 'hi' }; }");
 * const config = { routes: [{ path: "/f", kind: "js", source: `${dir}/f.js`, snapshot: `${dir}/f.hlsnap` }] };
 * console.log(await bakeServeSnapshots(config, { log: null })); // 1
 * ```
 */
export async function bakeServeSnapshots(
  config: ServeConfig | Record<string, unknown> | string,
  options: Pick<ServeOptions, "log"> = {},
): Promise<number> {
  const { cfg, log } = await configAndLog(config, options);
  let n = 0;
  for (let i = 0; i < cfg.routes.length; i++) {
    await startRoute(cfg.routes[i], i, {
      bake: true,
      log: (e) => {
        if (e.event === "snapshot_baked") n++;
        log(JSON.stringify({ time: new Date().toISOString(), ...e }));
      },
    });
  }
  return n;
}
