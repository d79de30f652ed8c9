/**
 * Telemetry overhead (docs/observability.md): a noop `callSync` and `call` with this code against
 * the same code with the hooks compiled out: a copy of `src/` (in a temporary directory) whose
 * `src/telemetry.ts` has its module-level `HOOKS` switch `false`, so every hook returns at its
 * first line. Both run in one process, on two sandboxes of the same guest, alternating call by
 * call; each call is timed on its own and the figures are the medians (and quartiles) of the
 * per-call times: on this shared 2-core machine a call preempted by another process is an
 * outlier, which moves a median no more than any other. A control row compares two sandboxes of
 * the same code (what two sandboxes differ by alone).
 *
 * 1. Telemetry off (no provider registered): the off path against the hooks compiled out.
 * 2. A child run with `OTEL_DENO=true`, exporting OTLP/HTTP JSON to a receiver started here on
 *    loopback: telemetry on (a span and a histogram record per call) against the hooks compiled
 *    out in the same process; then what Deno's own span and histogram cost in isolation.
 *
 *   deno bench --allow-all bench/telemetry.bench.ts
 *   (HL_TELEMETRY_CALLS changes the sample size.)
 */
import process from "node:process";
import { createNoopMeter, metrics, trace, type Tracer } from "@opentelemetry/api";
import { Sandbox } from "../src/sandbox.ts";
import { telemetryActive } from "../src/telemetry.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const CALLS = Number(Deno.env.get("HL_TELEMETRY_CALLS") ?? 20_000);
const root = new URL("../", import.meta.url).pathname;
const library = `${root}target/release/libhl_rust_vmm.so`;

/**
 * A copy of `src/` with `HOOKS = false` in telemetry.ts, beside links to this checkout's
 * `target/`, `guest/` and `deno.json` (so its package root finds the same builds); its Sandbox.
 */
async function hooksOut(): Promise<typeof Sandbox> {
  const dir = await Deno.makeTempDir({ prefix: "hl-hooks-out-" });
  const cp = await new Deno.Command("cp", { args: ["-r", `${root}src`, `${dir}/src`] }).output();
  if (!cp.success) throw new Error("cannot copy src/");
  for (const p of ["target", "guest", "deno.json"]) {
    await Deno.symlink(`${root}${p}`, `${dir}/${p}`);
  }
  const file = `${dir}/src/telemetry.ts`;
  const text = await Deno.readTextFile(file);
  if (!text.includes("const HOOKS = true;")) throw new Error("telemetry.ts has no HOOKS switch");
  await Deno.writeTextFile(file, text.replace("const HOOKS = true;", "const HOOKS = false;"));
  return (await import(`file://${dir}/src/sandbox.ts`)).Sandbox;
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
}

/** Quartiles of one side's per-call times, µs. */
interface Side {
  q1: number;
  median: number;
  q3: number;
}

interface Figure {
  a: Side;
  b: Side;
  /** a's median over b's. */
  ratio: number;
}

function side(xs: number[]): Side {
  return { q1: quantile(xs, 0.25), median: quantile(xs, 0.5), q3: quantile(xs, 0.75) };
}

/**
 * `a` and `b` alternating call by call (which goes first alternating too), each call timed on
 * its own: the medians of the per-call times, which a call preempted by another process (this
 * machine is shared and noisy) moves no more than any other outlier.
 */
async function interleaved(a: () => unknown, b: () => unknown): Promise<Figure> {
  const ta: number[] = [];
  const tb: number[] = [];
  const time = async (op: () => unknown, out: number[]) => {
    const t0 = performance.now();
    const r = op();
    if (r instanceof Promise) await r;
    out.push((performance.now() - t0) * 1000);
  };
  for (let i = 0; i < 500; i++) {
    await time(a, []);
    await time(b, []);
  }
  for (let i = 0; i < CALLS; i++) {
    if (i % 2 === 0) {
      await time(a, ta);
      await time(b, tb);
    } else {
      await time(b, tb);
      await time(a, ta);
    }
  }
  const fa = side(ta);
  const fb = side(tb);
  return { a: fa, b: fb, ratio: fa.median / fb.median };
}

const q = (x: Side) => `${x.median.toFixed(2)} µs (${x.q1.toFixed(2)}..${x.q3.toFixed(2)})`;
const show = (x: Figure) =>
  `${q(x.a)} vs ${q(x.b)}: ${x.ratio.toFixed(3)}x, ${(x.a.median - x.b.median).toFixed(2)} µs`;

/** µs per op of `op`, median of 15 rounds of 5,000. */
function micro(op: () => void): number {
  for (let i = 0; i < 2000; i++) op();
  const xs: number[] = [];
  for (let r = 0; r < 15; r++) {
    const t0 = performance.now();
    for (let i = 0; i < 5000; i++) op();
    xs.push((performance.now() - t0) * 1000 / 5000);
  }
  return quantile(xs, 0.5);
}

async function measure(on: boolean): Promise<string> {
  const Out = await hooksOut();
  const now = await Sandbox.create({ guest: TESTGUEST, library });
  const out = await Out.create({ guest: TESTGUEST, library });
  try {
    const sync = await interleaved(() => now.callSync("noop"), () => out.callSync("noop"));
    const async_ = await interleaved(() => now.call("noop"), () => out.call("noop"));
    // The control: two sandboxes of the hooks-out copy (what two sandboxes differ by alone).
    const out2 = await Out.create({ guest: TESTGUEST, library });
    const control = await interleaved(() => out2.callSync("noop"), () => out.callSync("noop"))
      .finally(() => out2.dispose());
    const lines = [
      `noop callSync: ${show(sync)}`,
      `noop call:     ${show(async_)}`,
      `control:       ${show(control)}  (noop callSync, two hooks-out sandboxes)`,
    ];
    if (on) {
      // What Deno's exporter charges for the pieces a call uses, alone: on this thread (µs per
      // op, back to back), and in the whole process per op spaced 40 µs apart (as calls are:
      // the exporter's thread serialises and sends each recorded span).
      const tracer = trace.getTracer("bench");
      const h = metrics.getMeter("bench").createHistogram("bench_seconds");
      const attrs = Object.freeze({ function_name: "noop", outcome: "ok" });
      const span = () => tracer.startSpan("s", { attributes: { "hl.function": "noop" } }).end();
      const rec = () => h.record(0.001, attrs);
      lines.push(
        `Deno, alone: startSpan + end ${micro(span).toFixed(2)} µs, histogram record ` +
          `${micro(rec).toFixed(2)} µs on this thread; process CPU per op 40 µs apart: span ` +
          `${spaced(span).toFixed(2)} µs, histogram ${spaced(rec).toFixed(2)} µs`,
      );
    }
    return lines.join("\n");
  } finally {
    await now.dispose();
    await out.dispose();
  }
}

/** Process CPU µs per `op` run 40 µs apart, less the CPU of the 40 µs alone. */
function spaced(op: () => void): number {
  const spin = () => {
    const t = performance.now() + 0.04;
    while (performance.now() < t) { /* spin */ }
  };
  const cpu = (f: () => void) => {
    const c0 = process.cpuUsage();
    for (let i = 0; i < 5000; i++) f();
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 5000;
  };
  const xs: number[] = [];
  for (let r = 0; r < 5; r++) {
    xs.push(
      cpu(() => {
        op();
        spin();
      }) - cpu(spin),
    );
  }
  return quantile(xs, 0.5);
}

const header = `per-call medians (quartiles) of ${CALLS} calls each, alternating`;
/**
 * A tracer provider whose spans record nothing and cost next to nothing (and the API's no-op
 * meter): with it registered, the hooks run their whole "on" path, so what a call costs over the
 * hooks compiled out is the library's own share, without any exporter's.
 */
function registerStubProvider(): void {
  const context = { traceId: "0af7651916cd43dd8448eb211c80319c", spanId: "b7ad6b7169203331" };
  const spanContext = { ...context, traceFlags: 1 };
  class StubSpan {
    spanContext() {
      return spanContext;
    }
    setAttribute() {
      return this;
    }
    setAttributes() {
      return this;
    }
    addEvent() {
      return this;
    }
    addLink() {
      return this;
    }
    addLinks() {
      return this;
    }
    setStatus() {
      return this;
    }
    updateName() {
      return this;
    }
    end() {}
    isRecording() {
      return true;
    }
    recordException() {}
  }
  const tracer = {
    startSpan: () => new StubSpan(),
    startActiveSpan: (_name: string, ...rest: unknown[]) =>
      (rest[rest.length - 1] as (s: StubSpan) => unknown)(new StubSpan()),
  } as unknown as Tracer;
  trace.setGlobalTracerProvider({ getTracer: () => tracer });
  metrics.setGlobalMeterProvider({ getMeter: () => createNoopMeter() });
}

const CHILD = Deno.env.get("HL_TELEMETRY_BENCH_CHILD");
if (CHILD === "stub") {
  registerStubProvider();
  if (!telemetryActive()) throw new Error("the stub provider did not turn telemetry on");
  console.log(await measure(false));
} else if (CHILD) {
  console.log(await measure(true));
} else if (!Deno.env.get("HL_TELEMETRY_BENCH_SKIP")) {
  console.log(`telemetry off: this code vs the hooks compiled out (${header}):`);
  console.log(await measure(false));
  const stub = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname],
    env: { HL_TELEMETRY_BENCH_CHILD: "stub" },
    stderr: "inherit",
  }).output();
  console.log(
    `the library's share: telemetry on with a stub provider (spans that record nothing, no-op ` +
      `meter) vs the hooks compiled out (${header}):`,
  );
  console.log(new TextDecoder().decode(stub.stdout).trim());
  let posts = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    await req.arrayBuffer();
    posts++;
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  const samplers: [string, Record<string, string>][] = [
    ["every span recorded (the default sampler)", {}],
    ["1% of traces sampled (OTEL_TRACES_SAMPLER=traceidratio, ARG=0.01)", {
      OTEL_TRACES_SAMPLER: "traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.01",
    }],
    ["1% of traces sampled, and HL_OTEL_CALL_METRICS=1 (the duration histograms)", {
      OTEL_TRACES_SAMPLER: "traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.01",
      HL_OTEL_CALL_METRICS: "1",
    }],
  ];
  for (const [what, env] of samplers) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname],
      env: {
        ...env,
        HL_TELEMETRY_BENCH_CHILD: "1",
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
      },
      stderr: "inherit",
    }).output();
    console.log(
      `telemetry on (OTEL_DENO=true, OTLP/HTTP JSON to a loopback receiver), ${what}, vs the ` +
        `hooks compiled out in the same process (${header}):`,
    );
    console.log(new TextDecoder().decode(out.stdout).trim());
  }
  await server.shutdown();
  console.log(`(${posts} OTLP posts received)`);
}

if (!Deno.env.get("HL_TELEMETRY_BENCH_CHILD")) {
  // Deno.bench's own rows: the off path against the hooks compiled out.
  const Out = await hooksOut();
  const sb = await Sandbox.create({ guest: TESTGUEST, library });
  const ob = await Out.create({ guest: TESTGUEST, library });
  Deno.bench("noop callSync, hooks compiled out", { group: "off", baseline: true }, () => {
    ob.callSync("noop");
  });
  Deno.bench("noop callSync, telemetry off", { group: "off" }, () => {
    sb.callSync("noop");
  });
}
