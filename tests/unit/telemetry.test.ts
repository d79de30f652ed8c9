/**
 * src/telemetry.ts without a VM: an application's own SDK, registered with the API's
 * `trace.setGlobalTracerProvider` (which sets it as the delegate of the API's proxy provider),
 * turns the hooks on; with nothing registered they stay off.
 */
import { deepStrictEqual as assertEquals } from "node:assert/strict";
import { createNoopMeter, metrics, trace, type Tracer } from "@opentelemetry/api";
import { telemetryActive, tracePoolRun } from "../../src/telemetry.ts";

Deno.test("telemetry: an SDK registered through the API's proxy provider turns the hooks on", async () => {
  assertEquals(telemetryActive(), false, "nothing registered: off");
  const started: string[] = [];
  const span = {
    spanContext: () => ({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      spanId: "b7ad6b7169203331",
      traceFlags: 1,
    }),
    setAttribute: () => span,
    setAttributes: () => span,
    setStatus: () => span,
    recordException: () => {},
    isRecording: () => true,
    end: () => {},
  };
  const tracer = {
    startSpan: (name: string) => {
      started.push(name);
      return span;
    },
    startActiveSpan: (name: string, ...rest: unknown[]) => {
      started.push(name);
      return (rest[rest.length - 1] as (s: typeof span) => unknown)(span);
    },
  } as unknown as Tracer;
  trace.setGlobalTracerProvider({ getTracer: () => tracer });
  metrics.setGlobalMeterProvider({ getMeter: () => createNoopMeter() });
  try {
    assertEquals(telemetryActive(), true);
    assertEquals(
      await tracePoolRun((acquired) => {
        acquired();
        return Promise.resolve(7);
      }),
      7,
    );
    assertEquals(started, ["hl.pool.run"]);
  } finally {
    trace.disable();
    metrics.disable();
  }
  assertEquals(telemetryActive(), false, "disabled again: off");
});
