/**
 * OpenTelemetry end to end (docs/observability.md): a child program run with `OTEL_DENO=true`
 * exports to an OTLP/HTTP JSON receiver started here on loopback; the trace and the metrics it
 * sends are checked against the known sequence `_telemetry_child.ts` runs.
 */
import { deepStrictEqual as assertEquals, ok as assert } from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`missing: ${what}`);
  return value;
}

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  status: { code: number; message: string };
  attributes: { key: string; value: Record<string, unknown> }[];
}

function attrs(list: { key: string; value: Record<string, unknown> }[]): Record<string, unknown> {
  return Object.fromEntries(list.map((a) => [a.key, Object.values(a.value)[0]]));
}

/**
 * Runs the child (in `mode`, with `env` added) against a receiver until it has seen the
 * observable instruments `gauges` exported; returns what was posted, by path.
 */
async function runChild(
  mode: "native" | "wasm",
  gauges: string[],
  env: Record<string, string> = {},
): Promise<{ out: string; posts: Record<string, Json[]> }> {
  const posts: Record<string, Json[]> = {};
  // Gauges exported after the child first asked (its work done): only those are checked.
  let marked = false;
  const metricNames = new Set<string>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/seen-gauges") {
      if (!marked) metricNames.clear();
      marked = true;
      return new Response(gauges.every((g) => metricNames.has(g)) ? "yes" : "no");
    }
    const body = await req.json();
    (posts[path] ??= []).push(body);
    if (path === "/v1/metrics" && marked) {
      for (const r of body.resourceMetrics ?? []) {
        for (const sm of r.scopeMetrics ?? []) {
          for (const m of sm.metrics ?? []) metricNames.add(m.name);
        }
      }
    }
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("./_telemetry_child.ts", import.meta.url).pathname, mode],
      env: {
        ...env,
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
        OTEL_SERVICE_NAME: "hl-telemetry-test",
        OTEL_METRIC_EXPORT_INTERVAL: "100",
      },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const output = await child.output();
    clearTimeout(timer);
    const out = new TextDecoder().decode(output.stdout).trim();
    assert(output.success, `child failed: ${out}\n${new TextDecoder().decode(output.stderr)}`);
    return { out, posts };
  } finally {
    await server.shutdown();
  }
}

function spansOf(posts: Record<string, Json[]>): OtlpSpan[] {
  return (posts["/v1/traces"] ?? []).flatMap((b) =>
    b.resourceSpans.flatMap((r: Json) => r.scopeSpans.flatMap((s: Json) => s.spans))
  );
}

/** The names of the metrics of scope `@hl/sandbox` exported. */
function exported(posts: Record<string, Json[]>): Set<string> {
  const names = new Set<string>();
  for (const b of posts["/v1/metrics"] ?? []) {
    for (const r of b.resourceMetrics) {
      for (const sm of r.scopeMetrics) {
        if (sm.scope.name === "@hl/sandbox") { for (const m of sm.metrics) names.add(m.name); }
      }
    }
  }
  return names;
}

/** The value of a metric of scope `@hl/sandbox` in its last export, summed over the points. */
function metricValues(posts: Record<string, Json[]>) {
  const last = new Map<string, Json>();
  for (const b of posts["/v1/metrics"] ?? []) {
    for (const r of b.resourceMetrics) {
      for (const sm of r.scopeMetrics) {
        if (sm.scope.name !== "@hl/sandbox") continue;
        for (const m of sm.metrics) last.set(m.name, m);
      }
    }
  }
  const points = (name: string) => {
    const m = must(last.get(name), `metric ${name} exported`);
    const data = m.sum ?? m.gauge ?? m.histogram;
    return data.dataPoints.map((p: Json) => ({
      attributes: attrs(p.attributes),
      value: Number(p.asInt ?? p.asDouble ?? p.count),
    })) as { attributes: Record<string, unknown>; value: number }[];
  };
  return (name: string, match: Record<string, unknown> = {}) =>
    points(name).filter((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v))
      .reduce((n, p) => n + p.value, 0);
}

kvmTest("telemetry: OTEL_DENO exports the trace and metrics of sandbox work", async () => {
  const { out, posts } = await runChild("native", ["active_sandboxes", "pool_members"], {
    HL_OTEL_CALL_METRICS: "1",
  });
  assertEquals(out, "ok");

  // ---- Trace ----
  const spans = spansOf(posts);
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const parent = (s: OtlpSpan) => byId.get(s.parentSpanId);
  // The server span of the request: a GET span whose parent is the client's fetch span.
  const server = must(
    spans.find((s) => s.name === "GET" && parent(s)?.name === "GET"),
    "the Deno.serve request span",
  );
  const calls = spans.filter((s) => s.name === "hl.sandbox.call");
  assertEquals(calls.length, 6, "call_host ×2, add ×2 (callSync), write_addr, add in the pool");
  for (const c of calls) assertEquals(c.traceId, server.traceId);

  const ok = calls.find((c) =>
    attrs(c.attributes)["hl.function"] === "call_host" &&
    attrs(c.attributes)["hl.call.outcome"] === "ok"
  )!;
  assert(ok, "the call_host(double) span");
  assertEquals(parent(ok), server, "a call made in the handler is a child of the request span");
  const okAttrs = attrs(ok.attributes);
  assertEquals(okAttrs["hl.call.host_calls"], 1);
  assertEquals(okAttrs["hl.call.exits"], 2, "one HOST_CALL exit, one DONE exit");
  assertEquals(typeof okAttrs["hl.call.host_ms"], "number");
  // A call without host calls: its exits, and no host-call attributes (absent means 0).
  const add = attrs(
    calls.find((c) => attrs(c.attributes)["hl.function"] === "add")!.attributes,
  );
  assertEquals(add["hl.call.exits"], 1);
  assertEquals(add["hl.call.outcome"], "ok");
  assertEquals(add["hl.call.host_calls"], undefined);
  assertEquals(ok.status.code, 0);
  const hostSpans = spans.filter((s) => s.name === "hl.host_function");
  const double = hostSpans.find((s) => attrs(s.attributes)["hl.function"] === "double")!;
  assertEquals(parent(double), ok, "the host function span is a child of its call");
  assertEquals(attrs(double.attributes)["hl.host_function.outcome"], "ok");

  const boom = hostSpans.find((s) => attrs(s.attributes)["hl.function"] === "boom")!;
  assertEquals(boom.status.code, 2, "a host function that threw: error status");
  assertEquals(attrs(parent(boom)!.attributes)["error.type"], "GuestError");

  const fault = calls.find((c) => attrs(c.attributes)["hl.function"] === "write_addr")!;
  assertEquals(fault.status.code, 2, "the faulting call has error status");
  assertEquals(attrs(fault.attributes)["error.type"], "GuestFaultError");
  assertEquals(attrs(fault.attributes)["hl.call.outcome"], "error");
  assertEquals(parent(fault), server);

  const creates = spans.filter((s) => s.name === "hl.sandbox.create");
  assertEquals(
    creates.map((s) => attrs(s.attributes)["hl.create.path"]).sort(),
    ["cold", "cold", "cold", "snapshot"],
  );
  for (const c of creates) assertEquals(parent(c), server);

  const run = spans.find((s) => s.name === "hl.pool.run")!;
  assertEquals(parent(run), server, "the pool run is a child of the request span");
  assertEquals(typeof attrs(run.attributes)["hl.pool.wait_ms"], "number");
  const inPool = calls.filter((c) => parent(c) === run);
  assertEquals(inPool.length, 1, "the borrower's call is a child of the pool run");
  const restore = spans.find((s) => s.name === "hl.sandbox.restore")!;
  assertEquals(parent(restore), run, "the restore on release is part of the run");
  const snapshot = spans.find((s) => s.name === "hl.sandbox.snapshot")!;
  assert((attrs(snapshot.attributes)["hl.snapshot.pages"] as number) > 0);

  // The pages the restore put back: the span says, and the counter agrees.
  const pages = attrs(restore.attributes)["hl.restore.pages"] as number;
  assert(pages > 0, `hl.restore.pages ${pages}: the borrower's call wrote its stack at least`);

  // ---- Metrics: the last export of each (cumulative) ----
  const value = metricValues(posts);

  assertEquals(value("guest_errors_total", { kind: "GuestFaultError" }), 1);
  assertEquals(value("guest_errors_total", { kind: "GuestError" }), 1);
  assertEquals(value("guest_errors_total"), 2);
  assertEquals(value("guest_call_duration_seconds"), 6, "six calls");
  assertEquals(value("guest_call_duration_seconds", { function_name: "add" }), 3);
  assertEquals(value("guest_call_duration_seconds", { outcome: "error" }), 2);
  assertEquals(value("host_call_duration_seconds", { function_name: "double" }), 1);
  assertEquals(value("host_call_duration_seconds", { function_name: "boom", outcome: "error" }), 1);
  assertEquals(value("sandbox_creates_total", { kind: "native", path: "cold" }), 3);
  assertEquals(value("sandbox_creates_total", { kind: "native", path: "snapshot" }), 1);
  assertEquals(value("sandbox_restores_total"), 1);
  assertEquals(value("sandbox_restore_pages_total"), pages);
  // call_host: HOST_CALL + DONE (2 each), add ×3: 1 each, write_addr: its FAULT exit.
  assertEquals(value("vm_exits_total"), 2 + 2 + 3 + 1);
  assertEquals(value("pool_wait_duration_seconds"), 1);
  // Read while the pool's two members were alive and free (the other sandboxes disposed).
  assertEquals(value("active_sandboxes"), 2);
  assertEquals(value("pool_members", { state: "free" }), 2);
  assertEquals(value("pool_members", { state: "busy" }), 0);
});

kvmTest(
  "telemetry: guest LOGs and WASI stderr as log records of their call; Wasm/JS gauges",
  async () => {
    const { out, posts } = await runChild(
      "wasm",
      ["active_wasm_sandboxes", "active_js_sandboxes", "sandbox_loads_total"],
      // Console output exported, not printed (it is the log records' route).
      { HL_OTEL_LOGS: "1", OTEL_DENO_CONSOLE: "replace" },
    );
    assertEquals(out, "ok");
    const spans = spansOf(posts);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    const records: { body: string; traceId: string; spanId: string }[] = (posts["/v1/logs"] ?? [])
      .flatMap((b) =>
        b.resourceLogs.flatMap((r: Json) =>
          r.scopeLogs.flatMap((s: Json) =>
            s.logRecords.map((l: Json) => ({
              body: String(l.body?.stringValue ?? ""),
              traceId: l.traceId,
              spanId: l.spanId,
            }))
          )
        )
      );

    // The guest's LOG: a record carrying the ids of the `log` call's span.
    const log = must(records.find((r) => r.body.includes("[guest] hello otel")), "the LOG record");
    const call = must(byId.get(log.spanId), "the span of the LOG record");
    assertEquals(call.name, "hl.sandbox.call");
    assertEquals(attrs(call.attributes)["hl.function"], "log");
    assertEquals(log.traceId, call.traceId);

    // WASI stderr: a record carrying the ids of the host function span the guest's write ran in,
    // a child of a call of the Wasm sandbox's VM, in the request's trace.
    const stderr = must(
      records.find((r) => r.body.includes("[wasi stderr] to stderr")),
      "the WASI stderr record",
    );
    const host = must(byId.get(stderr.spanId), "the span of the stderr record");
    assertEquals(host.name, "hl.host_function");
    assertEquals(byId.get(host.parentSpanId)?.name, "hl.sandbox.call");
    assertEquals(stderr.traceId, call.traceId, "one request: one trace");

    // Gauges and loads: two Wasm sandboxes made, one still alive; two JsSandboxes made, one
    // still alive, each in a WasmSandbox of its own (counted there too).
    const value = metricValues(posts);
    assertEquals(value("sandbox_loads_total", { kind: "wasm" }), 2 + 2);
    assertEquals(value("sandbox_loads_total", { kind: "js" }), 2);
    assertEquals(value("active_wasm_sandboxes"), 1 + 1);
    assertEquals(value("active_js_sandboxes"), 1);
    // Without HL_OTEL_CALL_METRICS the duration histograms are not recorded (opt-in).
    assert(!exported(posts).has("guest_call_duration_seconds"));
    assert(!exported(posts).has("host_call_duration_seconds"));
    assert(value("vm_exits_total") > 0, "counters are recorded either way");
    const creates = spans.filter((s) =>
      s.name === "hl.sandbox.create" && attrs(s.attributes)["hl.kind"] === "wasm"
    );
    assertEquals(creates.length, 2 + 2);
  },
);
