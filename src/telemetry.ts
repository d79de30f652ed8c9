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
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { CancelledError, TimeoutError } from "./errors.ts";

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
  compileDuration: Histogram;
  artifactHits: Counter;
  poolWait: Histogram;
}

/** What is on: a tracer (a no-op one when only metrics are) and the instruments. */
interface State {
  readonly tracer: Tracer;
  readonly m: Instruments;
}

let seenTracerProvider: unknown;
let seenMeterProvider: unknown;
let state: State | undefined;
const NoopMeter = createNoopMeter().constructor;

/**
 * The telemetry state, or `undefined` when no tracer or meter provider is registered. Cheap:
 * two global look-ups and two compares; the tracer and instruments are remade only when a
 * provider changes.
 */
function active(): State | undefined {
  const tp = trace.getTracerProvider();
  const mp = metrics.getMeterProvider();
  if (tp === seenTracerProvider && mp === seenMeterProvider) return state;
  seenTracerProvider = tp;
  seenMeterProvider = mp;
  const tracing = !(tp instanceof ProxyTracerProvider);
  const meter = mp.getMeter(SCOPE);
  const metering = !(meter instanceof NoopMeter);
  state = tracing || metering ? { tracer: tp.getTracer(SCOPE), m: instruments(meter) } : undefined;
  return state;
}

/** Whether a tracer or meter provider is registered (for tests and benches). */
export function telemetryActive(): boolean {
  return active() !== undefined;
}

function instruments(meter: Meter): Instruments {
  meter.createObservableGauge("active_sandboxes", {
    description: "Sandboxes (micro-VMs) alive in this process",
  }).addCallback((r) => r.observe(liveSandboxes));
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
  };
}

// ---- Gauges' counts (kept whether telemetry is on or not) ----

let liveSandboxes = 0;

/** Counts a sandbox VM made (`+1`) or destroyed (`-1`), for the `active_sandboxes` gauge. */
export function countSandbox(delta: 1 | -1): void {
  liveSandboxes += delta;
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
export function traceCreate<T>(
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
}

/** Says which path the create in progress took (a cache hit, a recycled VM). */
export function createPath(path: CreatePath): void {
  if (active() === undefined) return;
  const record = context.active().getValue(createKey) as CreateRecord | undefined;
  if (!record) return;
  record.path = path;
  record.span.setAttribute("hl.create.path", path);
}

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

/** `body`, a restore, in span `hl.sandbox.restore`, counted in `sandbox_restores_total`. */
export function traceRestore<T>(body: () => Promise<T>): () => Promise<T> {
  return () => {
    const s = active();
    if (s === undefined) return body();
    return inSpan(s, "hl.sandbox.restore", {}, body, () => s.m.restores.add(1));
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

/**
 * One guest call's span `hl.sandbox.call`. Made by {@linkcode startCall}; its host calls are
 * children ({@linkcode CallTrace.hostCall}).
 */
export class CallTrace {
  readonly #s: State;
  readonly #span: Span;
  readonly #ctx: Context;
  readonly #fn: string;
  readonly #start = performance.now();
  readonly #exits: () => number;
  readonly #exits0: number;
  #hostMs = 0;
  #hostCalls = 0;

  constructor(s: State, fn: string, exits: () => number) {
    this.#s = s;
    this.#fn = fn;
    this.#span = s.tracer.startSpan("hl.sandbox.call", { attributes: { "hl.function": fn } });
    this.#ctx = trace.setSpan(context.active(), this.#span);
    this.#exits = exits;
    this.#exits0 = exits();
  }

  /**
   * Runs the call's `body` with the call's span active, and ends the span when it settles
   * (synchronously or not); `done` runs first, whatever the outcome.
   */
  run<T>(body: () => T | Promise<T>, done: () => void): T | Promise<T> {
    let result: T | Promise<T>;
    try {
      result = context.with(this.#ctx, body);
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
    const span = this.#span;
    const ms = performance.now() - this.#start;
    const exits = this.#exits() - this.#exits0;
    span.setAttribute("hl.call.host_calls", this.#hostCalls);
    span.setAttribute("hl.call.guest_ms", Math.max(0, ms - this.#hostMs));
    span.setAttribute("hl.call.host_ms", this.#hostMs);
    if (Number.isFinite(exits)) {
      span.setAttribute("hl.call.exits", exits);
      this.#s.m.exits.add(exits);
    }
    let outcome = "ok";
    if (e !== undefined) {
      const type = recordError(span, e);
      if (e instanceof TimeoutError || e instanceof CancelledError) {
        outcome = e instanceof TimeoutError ? "timeout" : "cancelled";
        this.#s.m.cancellations.add(1, { kind: e instanceof TimeoutError ? "timeout" : "cancel" });
      } else {
        outcome = "error";
        this.#s.m.guestErrors.add(1, { kind: type });
      }
    }
    span.setAttribute("hl.call.outcome", outcome);
    this.#s.m.callDuration.record(ms / 1000, { function_name: this.#fn, outcome });
    span.end();
  }

  /** Starts the span of host function `name`, a child of this call's span. */
  hostCall(name: string): HostCallTrace {
    this.#hostCalls++;
    return new HostCallTrace(this, name);
  }

  /** Makes span `name` a child of this call. */
  childSpan(name: string, attributes: Attributes): { span: Span; ctx: Context } {
    const span = this.#s.tracer.startSpan(name, { attributes }, this.#ctx);
    return { span, ctx: trace.setSpan(this.#ctx, span) };
  }

  /** Adds a host function's time (ms) to this call's, and to `host_call_duration_seconds`. */
  hostTime(name: string, ms: number, outcome: string): void {
    this.#hostMs += ms;
    this.#s.m.hostCallDuration.record(ms / 1000, { function_name: name, outcome });
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
      context.with(this.#ctx, () => (consoleByLevel[level] ?? console.log)(`[guest] ${message}`));
      onLog?.(level, message);
    };
  }
}

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
      "hl.function": name,
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
 * check a call pays then). `exits` reads the VM's exit counter (NaN when it cannot).
 */
export function startCall(fn: string, exits: () => number): CallTrace | undefined {
  const s = active();
  return s === undefined ? undefined : new CallTrace(s, fn, exits);
}
