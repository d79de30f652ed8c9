/**
 * Every network act is visible (issue 25): a span `hl.net.request` per request that starts, with
 * its attributes, and `net_requests_total` / `net_bytes_total` for allowed, refused and failed
 * requests. A recording tracer and meter registered through the API stand in for an SDK.
 */
import assert from "node:assert/strict";
import { type Meter, metrics, trace, type Tracer } from "@opentelemetry/api";
import { Net } from "../../src/net/mod.ts";
import { startServer } from "../_net_servers.ts";

Deno.test("net telemetry: spans and counters for ok, refused and failed requests", async () => {
  const spans: { name: string; attrs: Record<string, unknown>; ended: boolean }[] = [];
  const adds: { name: string; value: number; attrs: Record<string, unknown> }[] = [];
  const tracer = {
    startSpan: () => {
      throw new Error("not used");
    },
    startActiveSpan: (name: string, ...rest: unknown[]) => {
      const rec = {
        name,
        attrs: { ...((rest[0] as { attributes?: object })?.attributes ?? {}) },
        ended: false,
      };
      spans.push(rec);
      const span = {
        spanContext: () => ({
          traceId: "0".repeat(31) + "1",
          spanId: "0".repeat(15) + "1",
          traceFlags: 1,
        }),
        setAttribute: (
          k: string,
          v: unknown,
        ) => ((rec.attrs as Record<string, unknown>)[k] = v, span),
        setAttributes: () => span,
        setStatus: () => span,
        recordException: () => {},
        isRecording: () => true,
        end: () => void (rec.ended = true),
      };
      return (rest[rest.length - 1] as (s: unknown) => unknown)(span);
    },
  } as unknown as Tracer;
  const instrument = (name: string) => ({
    add: (value: number, attrs: Record<string, unknown> = {}) => adds.push({ name, value, attrs }),
    record: () => {},
    addCallback: () => {},
  });
  const meter = {
    createCounter: instrument,
    createHistogram: instrument,
    createObservableGauge: instrument,
  } as unknown as Meter;
  trace.setGlobalTracerProvider({ getTracer: () => tracer });
  metrics.setGlobalMeterProvider({ getMeter: () => meter });
  const server = startServer();
  const net = new Net({
    allow: [`${server.origin}/`],
    limits: { maxResponseBodyBytes: 1024 },
  });
  try {
    await net.request({ url: `${server.origin}/echo`, method: "POST", body: "12345" });
    await net.request({ url: "http://127.0.0.1:1/" }).catch(() => {});
    await net.request({ url: `${server.origin}/big?n=100000` }).catch(() => {});
    assert.deepEqual(spans.map((s) => s.name), ["hl.net.request", "hl.net.request"]);
    const ok = spans[0];
    assert.equal(ok.ended, true);
    assert.equal(ok.attrs["http.request.method"], "POST");
    assert.equal(ok.attrs["server.address"], "127.0.0.1");
    assert.equal(ok.attrs["server.port"], server.port);
    assert.equal(ok.attrs["url.path"], "/echo");
    assert.equal(ok.attrs["http.response.status_code"], 200);
    assert.equal(ok.attrs["hl.net.bytes_out"], 5);
    const requests = adds.filter((a) => a.name === "net_requests_total").map((a) => a.attrs);
    assert.deepEqual(requests, [
      { outcome: "ok" },
      { outcome: "refused", rule: "port" },
      { outcome: "failed" },
    ]);
    const out = adds.filter((a) => a.name === "net_bytes_total" && a.attrs.direction === "out");
    assert.deepEqual(out.map((a) => a.value), [5]);
  } finally {
    trace.disable();
    metrics.disable();
    await net.dispose();
    await server.close();
  }
});
