/**
 * A route's handler: starts the route's sandboxes by its kind and strategy ({@linkcode startRoute})
 * and turns one request into a {@linkcode GuestResponse}. Kinds (docs/serve.md, "Configuration"):
 * `wagi` (a WASI command: request in env and stdin, CGI-style response on stdout), `wasm` (an
 * export by the bytes convention: request JSON in, CGI-style response out), `js` (a `JsSandbox`
 * function: request object in, response object out) and `guest` (a native guest function: the
 * body in, the result out). `python` is an extension point (see docs/serve.md).
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { guests } from "../artifacts.ts";
import { Sandbox } from "../sandbox.ts";
import { SandboxPool } from "../pool.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import { WasmSandboxPool } from "../wasm_pool.ts";
import { JsSandbox } from "../js/sandbox.ts";
import { JsSandboxPool } from "../js/pool.ts";
import {
  GuestResponseError,
  jsonResponse,
  parseCgiResponse,
  serveRequest,
  wagiEnv,
} from "./cgi.ts";
import type { GuestResponse } from "./cgi.ts";
import type { GuestRoute, JsRoute, ServeRoute, WagiRoute, WasmRoute } from "./config.ts";
import { type Member, RenewRunner, RestoreRunner, ReuseRunner, type Runner } from "./strategy.ts";
import type { Pool } from "../pool_core.ts";
import { Snapshot } from "../snapshot.ts";
import { WasmSnapshot } from "../wasm/snapshot.ts";
import { JsSnapshot } from "../js/snapshot.ts";
import { type EventLog, loadBaked, type RouteIdentity, routeKey, saveBaked } from "./baked.ts";

/** What a handler gets of a request beside the `Request`. */
export interface RequestContext {
  /** The body, read within the route's limit. */
  body: Uint8Array;
  /** The request id. */
  id: string;
  /** The client's address. */
  remote: string;
  /** The request's URL, parsed once by the server. */
  url?: URL;
  /** The request's headers (lower-case names), collected once by the server. */
  headers?: Record<string, string>;
}

/** What the server already parsed of a request, for `serveRequest`. */
function seen(ctx: RequestContext): { url: URL; headers: Record<string, string> } | undefined {
  return ctx.url && ctx.headers ? { url: ctx.url, headers: ctx.headers } : undefined;
}

/** A started route. */
export interface RouteHandler {
  /** The route's configuration. */
  readonly route: ServeRoute;
  /** Its sandboxes. */
  readonly runner: Runner<Member>;
  /** Answers one request (guest errors propagate; the server maps them to status codes). */
  handle(req: Request, ctx: RequestContext): Promise<GuestResponse>;
}

const drop = (_: Uint8Array) => {};

/** Collects a guest's stdout up to `max` bytes; past it, `over` is set and the rest dropped. */
class Collector {
  readonly #chunks: Uint8Array[] = [];
  #n = 0;
  over = false;
  constructor(readonly max: number) {}
  write = (b: Uint8Array): void => {
    if (this.#n + b.length > this.max) {
      this.over = true;
      return;
    }
    this.#chunks.push(b.slice());
    this.#n += b.length;
  };
  bytes(): Uint8Array {
    const out = new Uint8Array(this.#n);
    let at = 0;
    for (const c of this.#chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

async function readModule(path: string, field: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new ArgumentError(`${field}: cannot read ${path}: ${(e as Error).message}`);
  }
}

async function startWagi(r: WagiRoute, i: number): Promise<RouteHandler | undefined> {
  const module = await readModule(r.module, `routes[${i}].module`);
  const name = r.module.slice(r.module.lastIndexOf("/") + 1);
  // Every sandbox is instantiated, not started: each request runs `_start` once with its own
  // WASI context (env, args, stdin, stdout, a fresh random seed: WasmSandbox.runWasi), on a pool
  // member restored to the post-instantiate snapshot (restore) or a new VM from it (renew).
  const wasi = { args: [name], env: r.env, preopens: r.preopens, stdout: drop, stderr: drop };
  const opts = {
    module,
    cache: false,
    engine: r.engine,
    fuel: r.fuel,
    maxMemoryBytes: r.maxMemoryBytes,
    timeoutMs: r.timeoutMs,
    wasi,
  };
  const runner = await runnerOf(r, wasmWays(r, opts), undefined);
  return routeHandler(r, runner, async (w, req, ctx) => {
    const out = new Collector(r.maxResponseBytes);
    const env = wagiEnv(req, {
      route: r.path,
      body: ctx.body.length,
      remote: ctx.remote,
      id: ctx.id,
      env: r.env,
    });
    const { exitCode } = await w.runWasi({
      timeoutMs: r.timeoutMs,
      args: [name],
      env,
      stdin: ctx.body,
      stdout: out.write,
      stderr: drop,
    });
    if (out.over) throw new GuestResponseError(`the output is over ${out.max} bytes`);
    if (exitCode !== 0) throw new GuestResponseError(`the program exited with ${exitCode}`);
    return parseCgiResponse(out.bytes(), r.maxResponseBytes);
  });
}

/**
 * A started route: each request runs `answer` on a sandbox the runner lends (waiting at most the
 * route's `acquireTimeoutMs`). `undefined` for no runner (baking).
 */
function routeHandler<M extends Member>(
  r: ServeRoute,
  runner: Runner<M> | undefined,
  answer: (m: M, req: Request, ctx: RequestContext) => Promise<GuestResponse>,
): RouteHandler | undefined {
  if (!runner) return undefined;
  return {
    route: r,
    runner,
    handle: (req, ctx) => runner.run((m) => answer(m, req, ctx), r.acquireTimeoutMs),
  };
}

/** How a kind makes its sandboxes, for {@linkcode runnerOf}. */
interface Ways<M extends Member, S extends { dispose(): Promise<void> }> {
  /** The `restore` pool from the route's options. */
  pool: () => Promise<Pool<M>>;
  /** The `restore` pool from a snapshot (which the pool does not dispose). */
  poolFrom: (s: S) => Promise<Pool<M>>;
  /** A cold sandbox (to snapshot; `reuse`'s members). */
  first: () => Promise<M & { snapshot(): Promise<S> }>;
  /** A sandbox from a snapshot. */
  fromSnapshot: (s: S) => Promise<M>;
}

/**
 * The ways of the `wagi` and `wasm` kinds: `opts` for a cold sandbox; from a snapshot, the
 * route's timeout and output dropped (a `wagi` run gives its own sinks).
 */
function wasmWays(
  r: WagiRoute | WasmRoute,
  opts: Parameters<typeof WasmSandbox.create>[0],
): Ways<WasmSandbox, WasmSnapshot> {
  const fromSnapshot = { timeoutMs: r.timeoutMs, wasi: { stdout: drop, stderr: drop } };
  return {
    pool: () => WasmSandboxPool.create({ ...opts, size: r.poolSize }),
    poolFrom: (snapshot) => WasmSandboxPool.create({ ...fromSnapshot, snapshot, size: r.poolSize }),
    first: () => WasmSandbox.create(opts),
    fromSnapshot: (snapshot) => WasmSandbox.create({ ...fromSnapshot, snapshot }),
  };
}

/**
 * Starts a runner by strategy. With `baked` (a snapshot loaded from disk) no sandbox starts cold:
 * the pool, the renew snapshot and the reuse members all come from it, and the runner disposes
 * it at the end.
 */
async function runnerOf<M extends Member, S extends { dispose(): Promise<void> }>(
  r: ServeRoute,
  ways: Ways<M, S>,
  baked: S | undefined,
): Promise<Runner<M>> {
  try {
    switch (r.strategy) {
      case "restore": {
        if (!baked) return new RestoreRunner(await ways.pool());
        return new RestoreRunner(await ways.poolFrom(baked), () => baked.dispose());
      }
      case "renew": {
        let snap = baked;
        if (!snap) {
          const first = await ways.first();
          try {
            snap = await first.snapshot();
          } finally {
            await first.dispose();
          }
        }
        const s = snap;
        return new RenewRunner(r.poolSize, () => ways.fromSnapshot(s), () => s.dispose());
      }
      default: {
        const fresh = baked ? () => ways.fromSnapshot(baked) : ways.first;
        const members: M[] = [];
        try {
          for (let k = 0; k < r.poolSize; k++) members.push(await fresh());
        } catch (e) {
          for (const m of members) await m.dispose();
          throw e;
        }
        return new ReuseRunner(members, fresh, () => baked?.dispose() ?? Promise.resolve());
      }
    }
  } catch (e) {
    await baked?.dispose();
    throw e;
  }
}

async function startWasm(
  r: WasmRoute,
  i: number,
  start: StartOptions,
): Promise<RouteHandler | undefined> {
  const module = await readModule(r.module, `routes[${i}].module`);
  const opts = {
    module,
    engine: r.engine,
    fuel: r.fuel,
    maxMemoryBytes: r.maxMemoryBytes,
    timeoutMs: r.timeoutMs,
    wasi: { stdout: drop, stderr: drop },
  };
  const identity = {
    code: module,
    options: { engine: r.engine, fuel: r.fuel, maxMemoryBytes: r.maxMemoryBytes },
  };
  const runner = await started(
    r,
    i,
    start,
    identity,
    (p) => WasmSnapshot.load(p),
    wasmWays(r, opts),
  );
  const enc = new TextEncoder();
  return routeHandler(r, runner, async (w, req, ctx) => {
    const input = enc.encode(JSON.stringify(serveRequest(req, ctx.body, ctx.id, seen(ctx))));
    const out = await w.callBytes(r.export, input, { timeoutMs: r.timeoutMs });
    return parseCgiResponse(out, r.maxResponseBytes);
  });
}

async function startJs(
  r: JsRoute,
  i: number,
  start: StartOptions,
): Promise<RouteHandler | undefined> {
  let source: string;
  try {
    source = await Deno.readTextFile(r.source);
  } catch (e) {
    throw new ArgumentError(
      `routes[${i}].source: cannot read ${r.source}: ${(e as Error).message}`,
    );
  }
  const opts = {
    source,
    engine: r.engine,
    maxMemoryBytes: r.maxMemoryBytes,
    timeoutMs: r.timeoutMs,
    stdout: drop,
    stderr: drop,
  };
  const identity = {
    code: new TextEncoder().encode(source),
    options: { engine: r.engine, maxMemoryBytes: r.maxMemoryBytes },
  };
  const runner = await started(r, i, start, identity, (p) => JsSnapshot.load(p), {
    pool: () => JsSandboxPool.create({ ...opts, size: r.poolSize }),
    poolFrom: (snapshot) =>
      JsSandboxPool.create({
        snapshot,
        size: r.poolSize,
        timeoutMs: r.timeoutMs,
        stdout: drop,
        stderr: drop,
      }),
    first: () => JsSandbox.create(opts),
    fromSnapshot: (snapshot) =>
      JsSandbox.create({ snapshot, timeoutMs: r.timeoutMs, stdout: drop, stderr: drop }),
  });
  return routeHandler(r, runner, async (js, req, ctx) => {
    const value = await js.call(r.export, serveRequest(req, ctx.body, ctx.id, seen(ctx)));
    return jsonResponse(value, r.maxResponseBytes);
  });
}

async function startGuest(
  r: GuestRoute,
  i: number,
  start: StartOptions,
): Promise<RouteHandler | undefined> {
  const guest = r.guest === "testguest" ? guests.testguest : r.guest;
  const opts = { guest, heapSize: r.heapSize, timeoutMs: r.timeoutMs };
  // Checks the function and its argument type once, at start.
  const probe = await Sandbox.create(opts);
  let param: string | undefined;
  try {
    const sig = probe.functions.find((f) => f.name === r.function);
    if (!sig) throw new ArgumentError(`routes[${i}].function: the guest has no ${r.function}`);
    const want = r.argument === "body" ? 1 : 0;
    if (sig.params.length !== want) {
      throw new ArgumentError(
        `routes[${i}].function: ${r.function} takes ${sig.params.length} arguments, ` +
          `argument "${r.argument}" gives ${want}`,
      );
    }
    param = sig.params[0];
    if (param !== undefined && param !== "bytes" && param !== "string") {
      throw new ArgumentError(
        `routes[${i}].function: ${r.function} takes ${param}; the body is bytes or a string`,
      );
    }
  } finally {
    await probe.dispose();
  }
  const identity = {
    code: typeof guest === "string" ? await readModule(guest, `routes[${i}].guest`) : guest,
    options: { heapSize: r.heapSize },
  };
  const runner = await started(r, i, start, identity, (p) => Snapshot.load(p), {
    pool: () => SandboxPool.create({ ...opts, size: r.poolSize }),
    poolFrom: (snapshot) =>
      SandboxPool.create({ snapshot, size: r.poolSize, timeoutMs: r.timeoutMs }),
    first: () => Sandbox.create(opts),
    fromSnapshot: (snapshot) => Sandbox.create({ snapshot, timeoutMs: r.timeoutMs }),
  });
  const enc = new TextEncoder();
  return routeHandler(r, runner, async (sb, _req, ctx) => {
    const args = param === undefined
      ? []
      : [param === "string" ? new TextDecoder().decode(ctx.body) : ctx.body];
    const result = await sb.call(r.function, ...args);
    const body = result instanceof Uint8Array
      ? new Uint8Array(result)
      : typeof result === "string"
      ? enc.encode(result)
      : enc.encode(
        JSON.stringify(result ?? null, (_k, v) => typeof v === "bigint" ? `${v}` : v),
      );
    if (body.length > r.maxResponseBytes) {
      throw new GuestResponseError(`the result is over ${r.maxResponseBytes} bytes`);
    }
    return { status: 200, headers: [["content-type", r.contentType]], body };
  });
}

/** How routes start. */
export interface StartOptions {
  /** Where events (snapshot loaded or skipped) go. */
  log: EventLog;
  /** Bake instead: save the route's snapshot to its `snapshot` file and start nothing. */
  bake?: boolean;
}

/**
 * The runner of a route from its baked snapshot when it has a usable one, else cold; or, when
 * baking, the snapshot saved and `undefined`.
 */
async function started<M extends Member, S extends SnapshotLike>(
  r: ServeRoute,
  i: number,
  start: StartOptions,
  identity: RouteIdentity,
  load: (path: string) => Promise<S>,
  ways: Ways<M, S>,
): Promise<Runner<M> | undefined> {
  const path = "snapshot" in r ? r.snapshot : undefined;
  if (start.bake) {
    if (path === undefined) return undefined;
    const first = await ways.first();
    try {
      await using snap = await first.snapshot();
      await saveBaked(snap, path, await routeKey(r.kind, identity));
      start.log({ event: "snapshot_baked", route: r.path, path });
    } catch (e) {
      throw new ArgumentError(
        `routes[${i}].snapshot: cannot bake ${path}: ${e instanceof Error ? e.message : e}`,
      );
    } finally {
      await first.dispose();
    }
    return undefined;
  }
  const baked = path === undefined
    ? undefined
    : await loadBaked(r.path, path, await routeKey(r.kind, identity), load, start.log);
  return await runnerOf(r, ways, baked);
}

/** What a snapshot of each kind can do here. */
interface SnapshotLike {
  dispose(): Promise<void>;
  save(path: string): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts route `i`: reads its files, creates its sandboxes by strategy — from its baked snapshot
 * when it has a usable one — and resolves when they are warm. With `bake`, saves the route's
 * snapshot instead and resolves `undefined` (also for a route without `snapshot`).
 */
export function startRoute(
  r: ServeRoute,
  i: number,
  start: StartOptions,
): Promise<RouteHandler | undefined> {
  switch (r.kind) {
    case "wagi":
      return start.bake ? Promise.resolve(undefined) : startWagi(r, i);
    case "wasm":
      return startWasm(r, i, start);
    case "js":
      return startJs(r, i, start);
    case "guest":
      return startGuest(r, i, start);
  }
}
