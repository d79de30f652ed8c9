/**
 * OpenTelemetry traces, metrics and logs of sandboxes (docs/observability.md). Every span and
 * instrument is made here; the call path calls in at a few points. Only `npm:@opentelemetry/api`
 * is used: its tracer and meter are no-ops unless the application registers a provider (Deno's
 * built-in exporter with `OTEL_DENO=true`, or its own SDK).
 *
 * Free when off: each hook first asks {@linkcode active} whether a real tracer or meter provider
 * is registered (two global look-ups, compared with the last ones seen) and does nothing more
 * when none is. Counts that gauges report (live sandboxes, pool members) are plain integers kept
 * whether telemetry is on or not.
 *
 * @module
 */

import {
  type Attributes,
  type Context,
  context,
  type Counter,
  createNoopMeter,
  type Histogram,
  type Meter,
  metrics,
  ProxyTracerProvider,
  type Span,
  type SpanOptions,
  SpanStatusCode,
  trace,
  type Tracer,
  // The library names its one dependency itself, so a program that imports a clone's mod.ts by
  // path (with no import map of ours) resolves it too; deno.json maps the bare name to the same
  // version for the benches.
  // deno-lint-ignore no-import-prefix
} from "npm:@opentelemetry/api@1.10.0";
import { CancelledError, TimeoutError } from "./errors.ts";
import { ExitKind } from "./ffi/vm.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The instrumentation scope of every span and instrument. */
export const SCOPE = "@hl/sandbox";

/** The instruments, made once per meter provider. */
interface Instruments {
  guestErrors: Counter;
  cancellations: Counter;
  callDuration: Histogram;
  hostCallDuration: Histogram;
  creates: Counter;
  restores: Counter;
  exits: Counter;
  loads: Counter;
  restorePages: Counter;
  compileDuration: Histogram;
  artifactHits: Counter;
  poolWait: Histogram;
  netRequests: Counter;
  netBytes: Counter;
}

/** What is on: a tracer (a no-op one when only metrics are) and the instruments. */
interface State {
  readonly tracer: Tracer;
  readonly m: Instruments;
}

let seenTracerProvider: unknown;
let seenDelegate: unknown;
let seenMeterProvider: unknown;
let state: State | undefined;
const NoopMeter = createNoopMeter().constructor;

/**
 * The module-level switch of every hook: `false` makes each one return at its first line, as if
 * the hooks were not there. Always `true` in the library; `bench/telemetry.bench.ts` loads a copy
 * of `src/` with it `false` (a `const`, so V8 folds the checks away) to measure what the hooks
 * cost when telemetry is off.
 */
const HOOKS = true;

/** Where `npm:@opentelemetry/api` keeps its registered globals (absent until one registers). */
const OTEL_GLOBAL = Symbol.for("opentelemetry.js.api.1");
const globals = globalThis as unknown as Record<symbol, unknown>;

/**
 * The telemetry state, or `undefined` when no tracer or meter provider is registered. When
 * nothing at all registered with the API (no `OTEL_DENO`, no SDK) this is one property read of
 * `globalThis` and a compare; else two global look-ups compared with the last ones seen; the
 * tracer and instruments are remade only when a provider changes.
 */
const active = (function active(): State | undefined {
  if (!HOOKS || globals[OTEL_GLOBAL] === undefined) return undefined;
  const tp = trace.getTracerProvider();
  const mp = metrics.getMeterProvider();
  // An SDK's provider is registered as the delegate of the API's proxy (the proxy is the global:
  // the same object before and after); Deno's OTEL_DENO registers its own provider.
  const delegate = tp instanceof ProxyTracerProvider ? tp.getDelegate() : tp;
  if (tp === seenTracerProvider && delegate === seenDelegate && mp === seenMeterProvider) {
    return state;
  }
  seenTracerProvider = tp;
  seenDelegate = delegate;
  seenMeterProvider = mp;
  const tracing = !(tp instanceof ProxyTracerProvider) ||
    tp.getDelegateTracer(SCOPE) !== undefined;
  const meter = mp.getMeter(SCOPE);
  const metering = !(meter instanceof NoopMeter);
  state = tracing || metering ? { tracer: tp.getTracer(SCOPE), m: instruments(meter) } : undefined;
  return state;
}).bind(undefined); // Eager: see the note after the imports.

/** Whether a tracer or meter provider is registered (for tests and benches). */
export function telemetryActive(): boolean {
  return active() !== undefined;
}

function instruments(meter: Meter): Instruments {
  meter.createObservableGauge("active_sandboxes", {
    description: "Sandboxes (micro-VMs) alive in this process",
  }).addCallback((r) => r.observe(liveSandboxes));
  for (const kind of ["wasm", "js"] as const) {
    meter.createObservableGauge(`active_${kind}_sandboxes`, {
      description: `${kind === "wasm" ? "WasmSandbox" : "JsSandbox"} handles alive in this process`,
    }).addCallback((r) => r.observe(liveRuntimes[kind]));
  }
  meter.createObservableGauge("pool_members", {
    description: "Members of the pools of this process, by state (free, busy)",
  }).addCallback((r) => {
    let free = 0;
    let all = 0;
    for (const ref of pools) {
      const pool = ref.deref();
      if (!pool) {
        pools.delete(ref);
        continue;
      }
      free += pool.available;
      all += pool.size;
    }
    r.observe(free, { state: "free" });
    r.observe(all - free, { state: "busy" });
  });
  const seconds = { unit: "s" } as const;
  return {
    guestErrors: meter.createCounter("guest_errors_total", {
      description: "Guest calls that failed, by error class (kind)",
    }),
    cancellations: meter.createCounter("guest_cancellations_total", {
      description: "Guest calls stopped by a timeout or a cancellation (kind: timeout, cancel)",
    }),
    callDuration: meter.createHistogram("guest_call_duration_seconds", {
      ...seconds,
      description: "Duration of guest calls, by function_name",
    }),
    hostCallDuration: meter.createHistogram("host_call_duration_seconds", {
      ...seconds,
      description: "Duration of host functions called by guests, by function_name",
    }),
    creates: meter.createCounter("sandbox_creates_total", {
      description: "Sandboxes created, by kind (native, wasm) and path",
    }),
    restores: meter.createCounter("sandbox_restores_total", {
      description: "Restores of a sandbox to a snapshot",
    }),
    exits: meter.createCounter("vm_exits_total", { description: "VM exits made by guest calls" }),
    loads: meter.createCounter("sandbox_loads_total", {
      description: "Runtime sandboxes created (a module or script loaded into a VM), by kind",
    }),
    restorePages: meter.createCounter("sandbox_restore_pages_total", {
      description: "Guest memory pages put back by restores (4 KiB each)",
    }),
    compileDuration: meter.createHistogram("wasm_compile_duration_seconds", {
      ...seconds,
      description: "Time to compile a Wasm module or load its artifact from disk, by source",
    }),
    artifactHits: meter.createCounter("wasm_artifact_cache_hits_total", {
      description: "Compiled Wasm artifacts found in the cache, by source (memory, disk)",
    }),
    poolWait: meter.createHistogram("pool_wait_duration_seconds", {
      ...seconds,
      description: "Time a pool run waited for a free member",
    }),
    netRequests: meter.createCounter("net_requests_total", {
      description:
        "Guest network requests (net option), by outcome (ok, refused with its rule, failed)",
    }),
    netBytes: meter.createCounter("net_bytes_total", {
      unit: "By",
      description: "Body bytes of guest network requests, by direction (out, in)",
    }),
  };
}

// ---- Gauges' counts (kept whether telemetry is on or not) ----

let liveSandboxes = 0;

/** Counts a sandbox VM made (`+1`) or destroyed (`-1`), for the `active_sandboxes` gauge. */
export const countSandbox = (function countSandbox(delta: 1 | -1): void {
  liveSandboxes += delta;
}).bind(undefined); // Eager: see the note after the imports.

/** The runtimes counted by `active_wasm_sandboxes` and `active_js_sandboxes`. */
export type RuntimeKind = "wasm" | "js";

const liveRuntimes: Record<RuntimeKind, number> = { wasm: 0, js: 0 };
/** A handle dropped without a dispose stops counting when it is collected. */
const runtimeFinalizer = new FinalizationRegistry<RuntimeKind>((kind) => liveRuntimes[kind]--);

/**
 * Counts a live runtime sandbox handle of `kind` (a `WasmSandbox`; a `JsSandbox`) for the
 * `active_<kind>_sandboxes` gauge, until {@linkcode uncountRuntime} or until it is collected;
 * `load`: a new sandbox (counted in `sandbox_loads_total`), not a pool's hand-over of one.
 *
 * @example
 * ```ts ignore
 * countRuntime("wasm", this, true); // in the constructor
 * uncountRuntime("wasm", this); // where the handle lets go of its VM
 * ```
 */
export const countRuntime =
  (function countRuntime(kind: RuntimeKind, handle: object, load: boolean): void {
    liveRuntimes[kind]++;
    if (load) active()?.m.loads.add(1, kind === "wasm" ? WASM : JS);
    runtimeFinalizer.register(handle, kind, handle);
  }).bind(undefined); // Eager: see the note after the imports.

/** Stops counting `handle` (idempotent: a handle not counted, or no longer, is ignored). */
export function uncountRuntime(kind: RuntimeKind, handle: object): void {
  if (runtimeFinalizer.unregister(handle)) liveRuntimes[kind]--;
}

/** What the `pool_members` gauge reads of a pool. */
export interface PoolGauge {
  readonly size: number;
  readonly available: number;
}

const pools = new Set<WeakRef<PoolGauge>>();
const poolRefs = new WeakMap<PoolGauge, WeakRef<PoolGauge>>();

/** Registers a pool for the `pool_members` gauge (`false`: unregisters it, at dispose). */
export function countPool(pool: PoolGauge, live: boolean): void {
  if (live) {
    const ref = new WeakRef(pool);
    poolRefs.set(pool, ref);
    pools.add(ref);
  } else {
    const ref = poolRefs.get(pool);
    if (ref) pools.delete(ref);
    poolRefs.delete(pool);
  }
}

// ---- Spans ----

/** Marks `span` failed with `e`: its class as `error.type`, the exception as an event. */
function recordError(span: Span, e: unknown): string {
  const type = e instanceof Error ? e.name : typeof e;
  span.setAttribute("error.type", type);
  if (e instanceof Error) span.recordException(e);
  span.setStatus({ code: SpanStatusCode.ERROR, message: e instanceof Error ? e.message : type });
  return type;
}

/**
 * Runs `body` inside span `name` (a child of the active span), ending it when `body` settles:
 * an error is recorded on it; `onResult` may add attributes from the result.
 */
function inSpan<T>(
  s: State,
  name: string,
  attributes: Attributes,
  body: (span: Span) => Promise<T>,
  onResult?: (span: Span, result: T) => void,
): Promise<T> {
  return s.tracer.startActiveSpan(name, { attributes }, async (span) => {
    try {
      const result = await body(span);
      onResult?.(span, result);
      return result;
    } catch (e) {
      recordError(span, e);
      throw e;
    } finally {
      span.end();
    }
  });
}

/** What {@linkcode traceNetRequest}'s body reports when the request is done. */
export interface NetOutcome {
  /** The HTTP status, when a response came. */
  status?: number;
  /** Request body bytes sent. */
  bytesOut: number;
  /** Response body bytes read. */
  bytesIn: number;
}

/**
 * One guest network request (src/net/) in span `hl.net.request` (attributes `http.request.method`,
 * `server.address`, `server.port`, `url.path`; `http.response.status_code` and the body sizes
 * when it ends), counted in `net_requests_total{outcome}` and `net_bytes_total{direction}`.
 * A refusal is outcome `refused` (a `NetworkPolicyError`), any other throw `failed`.
 */
export function traceNetRequest<T extends NetOutcome>(
  attributes: Attributes,
  body: () => Promise<T>,
): Promise<T> {
  const s = active();
  if (s === undefined) return body();
  return inSpan(s, "hl.net.request", attributes, body, (span, r) => {
    if (r.status !== undefined) span.setAttribute("http.response.status_code", r.status);
    span.setAttribute("hl.net.bytes_out", r.bytesOut);
    span.setAttribute("hl.net.bytes_in", r.bytesIn);
    s.m.netRequests.add(1, { outcome: "ok" });
    s.m.netBytes.add(r.bytesOut, { direction: "out" });
    s.m.netBytes.add(r.bytesIn, { direction: "in" });
  }).catch((e) => {
    const refused = e instanceof Error && e.name === "NetworkPolicyError";
    const rule = refused ? String((e as { rule?: unknown }).rule) : undefined;
    s.m.netRequests.add(1, refused ? { outcome: "refused", rule: rule! } : { outcome: "failed" });
    throw e;
  });
}

/** A guest network request refused before it started (no span): `net_requests_total{refused}`. */
export function netRefused(rule: string): void {
  const s = active();
  if (s === undefined) return;
  s.m.netRequests.add(1, { outcome: "refused", rule });
}

/** How a sandbox was made: a new VM, or one started from or restored to a snapshot. */
export type CreatePath = "cold" | "snapshot" | "cache_hit" | "recycled";

interface CreateRecord {
  path: CreatePath;
  span: Span;
}

const CREATE_KEY = Symbol("hl.create");
const createKey = CREATE_KEY as unknown as Parameters<Context["getValue"]>[0];

/**
 * `Sandbox.create` / `WasmSandbox.create` in span `hl.sandbox.create` (attributes `hl.kind`,
 * `hl.engine`, `hl.create.path`), counted in `sandbox_creates_total` when it succeeds.
 * `path` is the default; {@linkcode createPath} inside `body` changes it.
 */
export const traceCreate = (function traceCreate<T>(
  kind: "native" | "wasm",
  engine: string | undefined,
  path: CreatePath,
  body: () => Promise<T>,
): Promise<T> {
  const s = active();
  if (s === undefined) return body();
  const attributes: Attributes = { "hl.kind": kind, "hl.create.path": path };
  if (engine !== undefined) attributes["hl.engine"] = engine;
  let record: CreateRecord | undefined;
  return inSpan(s, "hl.sandbox.create", attributes, (span) => {
    record = { path, span };
    return context.with(context.active().setValue(createKey, record), body);
  }, () => s.m.creates.add(1, { kind, path: record!.path }));
}).bind(undefined); // Eager: see the note after the imports.

/** Says which path the create in progress took (a cache hit, a recycled VM). */
export const createPath = (function createPath(path: CreatePath): void {
  if (active() === undefined) return;
  const record = context.active().getValue(createKey) as CreateRecord | undefined;
  if (!record) return;
  record.path = path;
  record.span.setAttribute("hl.create.path", path);
}).bind(undefined); // Eager: see the note after the imports.

/** `body`, a snapshot, in span `hl.sandbox.snapshot` (attribute `hl.snapshot.pages`). */
export function traceSnapshot<T extends { readonly dataPages: number }>(
  body: () => Promise<T>,
): () => Promise<T> {
  return () => {
    const s = active();
    if (s === undefined) return body();
    return inSpan(
      s,
      "hl.sandbox.snapshot",
      {},
      body,
      (span, snap) => span.setAttribute("hl.snapshot.pages", snap.dataPages),
    );
  };
}

/**
 * `body`, a restore that returns the number of pages it put back, in span `hl.sandbox.restore`
 * (attribute `hl.restore.pages`), counted in `sandbox_restores_total` and
 * `sandbox_restore_pages_total`.
 */
export function traceRestore(body: () => Promise<number>): () => Promise<void> {
  return async () => {
    const s = active();
    if (s === undefined) {
      await body();
      return;
    }
    await inSpan(s, "hl.sandbox.restore", {}, body, (span, pages) => {
      span.setAttribute("hl.restore.pages", pages);
      s.m.restores.add(1);
      s.m.restorePages.add(pages);
    });
  };
}

/**
 * A pool's `run` in span `hl.pool.run` (attribute `hl.pool.wait_ms`, also recorded in
 * `pool_wait_duration_seconds`): `body` calls `acquired` once it holds a member; the borrower's
 * calls nest under the span.
 */
export function tracePoolRun<T>(body: (acquired: () => void) => Promise<T>): Promise<T> {
  const s = active();
  if (s === undefined) return body(noop);
  const start = performance.now();
  return inSpan(s, "hl.pool.run", {}, (span) =>
    body(() => {
      const waitMs = performance.now() - start;
      span.setAttribute("hl.pool.wait_ms", waitMs);
      s.m.poolWait.record(waitMs / 1000);
    }));
}

function noop(): void {}

/**
 * A Wasm compile (or load of its artifact from disk) in span `hl.wasm.compile` (attributes
 * `hl.wasm.module_sha256`, `hl.wasm.artifact_source`: `disk` or `compiled`); its time goes to
 * `wasm_compile_duration_seconds`, and a disk load counts as an artifact cache hit.
 */
export function traceCompile<T extends { readonly source: "disk" | "compiled" }>(
  moduleSha256: string,
  body: () => Promise<T>,
): Promise<T> {
  const s = active();
  if (s === undefined) return body();
  const start = performance.now();
  return inSpan(
    s,
    "hl.wasm.compile",
    { "hl.wasm.module_sha256": moduleSha256 },
    body,
    (span, r) => {
      span.setAttribute("hl.wasm.artifact_source", r.source);
      s.m.compileDuration.record((performance.now() - start) / 1000, { source: r.source });
      if (r.source === "disk") s.m.artifactHits.add(1, { source: "disk" });
    },
  );
}

/** A compiled artifact found in memory: counted in `wasm_artifact_cache_hits_total`. */
export function artifactMemoryHit(): void {
  active()?.m.artifactHits.add(1, { source: "memory" });
}

// ---- Calls and host functions ----

/** Whether guest LOG frames go to `console` (and so, with `OTEL_DENO`, to OTLP logs). */
const LOGS_ON = envFlag("HL_OTEL_LOGS");

/**
 * Whether `guest_call_duration_seconds` and `host_call_duration_seconds` are recorded: opt-in
 * (`HL_OTEL_CALL_METRICS=1`), as Hyperlight's `function_call_metrics` feature: a histogram record
 * costs Deno's exporter 2-3 µs a call here, and each call's span carries its duration anyway.
 */
const CALL_METRICS = envFlag("HL_OTEL_CALL_METRICS");

function envFlag(name: string): boolean {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
      return false;
    }
    const v = Deno.env.get(name);
    return v !== undefined && v !== "" && v !== "0" && v !== "false";
  } catch {
    return false;
  }
}

const consoleByLevel = [console.error, console.warn, console.info, console.debug, console.debug];

const stderrDecoder = new TextDecoder();

/**
 * With `HL_OTEL_LOGS=1` and telemetry on, a WASI guest's stderr write also goes to
 * `console.error` (as `[wasi stderr] text`): it runs in the host function span of the guest's
 * write, so Deno's exporter sends it as a log record with the call's trace id.
 */
export function logWasiStderr(data: Uint8Array): void {
  if (!LOGS_ON || active() === undefined) return;
  console.error(`[wasi stderr] ${stderrDecoder.decode(data).replace(/\n$/, "")}`);
}

/**
 * The `guest_call_duration_seconds` attributes of function `fn` and outcome `outcome`, made once
 * and reused (a record then allocates nothing); at most `ATTRS_MAX` functions are kept.
 */
function callAttributes(fn: string, outcome: string): Attributes {
  let byOutcome = callAttrs.get(fn);
  if (byOutcome === undefined) {
    byOutcome = new Map();
    if (callAttrs.size < ATTRS_MAX) callAttrs.set(fn, byOutcome);
  }
  let a = byOutcome.get(outcome);
  if (a === undefined) {
    a = Object.freeze({ function_name: fn, outcome });
    byOutcome.set(outcome, a);
  }
  return a;
}

const ATTRS_MAX = 4096;
const callAttrs = new Map<string, Map<string, Attributes>>();
const hostAttrs = new Map<string, Map<string, Attributes>>();

function hostAttributes(fn: string, outcome: string): Attributes {
  let byOutcome = hostAttrs.get(fn);
  if (byOutcome === undefined) {
    byOutcome = new Map();
    if (hostAttrs.size < ATTRS_MAX) hostAttrs.set(fn, byOutcome);
  }
  let a = byOutcome.get(outcome);
  if (a === undefined) {
    a = Object.freeze({ function_name: fn, outcome });
    byOutcome.set(outcome, a);
  }
  return a;
}

/**
 * One guest call's span `hl.sandbox.call`, a child of the span active where the call was made.
 * Made by {@linkcode startCall}; the exchange loop reports each VM exit ({@linkcode exit}), and
 * host calls and guest logs are children ({@linkcode hostCall}, {@linkcode onLog}).
 *
 * The fast path (a call with no host calls or logs) is: one `startSpan` with the function's name
 * among its options, two `performance.now()`, two attributes set at the end (outcome, exits) when
 * the span is recording, `end`, one counter add, and with `HL_OTEL_CALL_METRICS=1` one histogram
 * record with attributes made once per function. No `context.with` and no FFI read: the exits are counted by the exchange loop,
 * and the call's context (its span as the parent) is made only when a host call or a log needs it.
 */
export class CallTrace {
  readonly #s: State;
  readonly #span: Span;
  readonly #parent: Context;
  #ctx: Context | undefined;
  readonly #fn: string;
  readonly #start: number;
  #exits = 0;
  #hostMs = 0;
  #hostCalls = 0;

  constructor(s: State, fn: string) {
    this.#s = s;
    this.#fn = fn;
    this.#parent = context.active();
    this.#span = s.tracer.startSpan(
      "hl.sandbox.call",
      { attributes: { "hl.function": fn } },
      this.#parent,
    );
    this.#start = performance.now();
  }

  /** The call's context: its span, under the caller's context (made when first needed). */
  get context(): Context {
    return this.#ctx ??= trace.setSpan(this.#parent, this.#span);
  }

  /** Counts a run of the call that ended in a VM exit (exit kind `kind`). */
  exit(kind: number): void {
    // As the cdylib's counter: a run cut short by a stop is not an exit.
    if (kind !== ExitKind.Interrupted && kind !== ExitKind.TimedOut) this.#exits++;
  }

  /**
   * Runs the call's `body`, and ends the span when it settles (synchronously or not); `done`
   * runs first, whatever the outcome.
   */
  run<T>(body: () => T | Promise<T>, done: () => void): T | Promise<T> {
    let result: T | Promise<T>;
    try {
      result = body();
    } catch (e) {
      done();
      this.#end(e);
      throw e;
    }
    if (result instanceof Promise) {
      return result.then((v) => {
        done();
        this.#end(undefined);
        return v;
      }, (e) => {
        done();
        this.#end(e);
        throw e;
      });
    }
    done();
    this.#end(undefined);
    return result;
  }

  #end(e: unknown): void {
    const ms = performance.now() - this.#start;
    const span = this.#span;
    const m = this.#s.m;
    const exits = this.#exits;
    m.exits.add(exits);
    let outcome = "ok";
    if (e !== undefined) {
      const type = recordError(span, e);
      if (e instanceof TimeoutError || e instanceof CancelledError) {
        outcome = e instanceof TimeoutError ? "timeout" : "cancelled";
        m.cancellations.add(1, e instanceof TimeoutError ? TIMEOUT : CANCEL);
      } else {
        outcome = "error";
        m.guestErrors.add(1, { kind: type });
      }
    }
    if (span.isRecording()) {
      span.setAttribute("hl.call.outcome", outcome);
      span.setAttribute("hl.call.exits", exits);
      if (this.#hostCalls > 0) {
        span.setAttribute("hl.call.host_calls", this.#hostCalls);
        span.setAttribute("hl.call.host_ms", this.#hostMs);
        span.setAttribute("hl.call.guest_ms", Math.max(0, ms - this.#hostMs));
      }
    }
    span.end();
    if (CALL_METRICS) m.callDuration.record(ms / 1000, callAttributes(this.#fn, outcome));
  }

  /** Starts the span of host function `name`, a child of this call's span. */
  hostCall(name: string): HostCallTrace {
    this.#hostCalls++;
    return new HostCallTrace(this, name);
  }

  /** Makes span `name` a child of this call. */
  childSpan(name: string, options: SpanOptions): { span: Span; ctx: Context } {
    const span = this.#s.tracer.startSpan(name, options, this.context);
    return { span, ctx: trace.setSpan(this.context, span) };
  }

  /** Adds a host function's time (ms) to this call's, and to `host_call_duration_seconds`. */
  hostTime(name: string, ms: number, outcome: string): void {
    this.#hostMs += ms;
    if (CALL_METRICS) this.#s.m.hostCallDuration.record(ms / 1000, hostAttributes(name, outcome));
  }

  /**
   * The `onLog` of this call: with `HL_OTEL_LOGS=1`, every guest LOG also goes to `console`
   * (error, warn, info, debug by level) with this call's span active, which Deno's exporter
   * sends as a log record with the call's trace id; then `onLog`, if any.
   */
  onLog(
    onLog: ((level: number, message: string) => void) | undefined,
  ): ((level: number, message: string) => void) | undefined {
    if (!LOGS_ON) return onLog;
    return (level, message) => {
      context.with(
        this.context,
        () => (consoleByLevel[level] ?? console.log)(`[guest] ${message}`),
      );
      onLog?.(level, message);
    };
  }
}

const TIMEOUT = Object.freeze({ kind: "timeout" });
const WASM = Object.freeze({ kind: "wasm" });
const JS = Object.freeze({ kind: "js" });
const CANCEL = Object.freeze({ kind: "cancel" });

/** One host function's span `hl.host_function`, a child of its call's span. */
export class HostCallTrace {
  readonly #call: CallTrace;
  readonly #name: string;
  readonly #span: Span;
  readonly #ctx: Context;
  readonly #start = performance.now();
  #ended = false;

  constructor(call: CallTrace, name: string) {
    this.#call = call;
    this.#name = name;
    ({ span: this.#span, ctx: this.#ctx } = call.childSpan("hl.host_function", {
      attributes: { "hl.function": name },
    }));
  }

  /** Runs the host function with its span active (its own spans, e.g. `fetch`, nest under it). */
  run<T>(fn: () => T): T {
    return context.with(this.#ctx, fn);
  }

  /**
   * Ends the span with the answer the guest gets: `HOST_RETURN` is `ok`, `HOST_ERROR` an error
   * with its message. Idempotent (a result that did not fit is answered again as an error).
   */
  end(answer: { kind: string; message?: string }): void {
    if (this.#ended) return;
    this.#ended = true;
    const ok = answer.kind === "HOST_RETURN";
    const outcome = ok ? "ok" : "error";
    this.#span.setAttribute("hl.host_function.outcome", outcome);
    if (!ok) {
      this.#span.setAttribute("error.type", "HostFunctionError");
      this.#span.setStatus({ code: SpanStatusCode.ERROR, message: answer.message });
    }
    this.#call.hostTime(this.#name, performance.now() - this.#start, outcome);
    this.#span.end();
  }
}

/**
 * The trace of a guest call of function `fn`, or `undefined` when telemetry is off (the one
 * check a call pays then: {@linkcode active}).
 */
export const startCall = (function startCall(fn: string): CallTrace | undefined {
  const s = active();
  return s === undefined ? undefined : new CallTrace(s, fn);
}).bind(undefined); // Eager: see the note after the imports.
