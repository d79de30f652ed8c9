/**
 * Telemetry overhead (docs/observability.md): a noop `callSync` and `call` with this code against
 * the same code with the hooks compiled out: a copy of `src/` (in a temporary directory) whose
 * `src/telemetry.ts` has its module-level `HOOKS` switch `false`, so every hook returns at its
 * first line. Both run in one process, on two sandboxes of the same guest, in interleaved rounds;
 * each round's time is paired with its neighbour's, and the figure is the median of the paired
 * ratios with their quartiles (this machine is noisy: a round's ratio is what it is, the median
 * says where they sit).
 *
 * 1. Telemetry off (no provider registered): the off path against the hooks compiled out.
 * 2. A child run with `OTEL_DENO=true`, exporting OTLP/HTTP JSON to a receiver started here on
 *    loopback: telemetry on (a span and a histogram record per call) against the hooks compiled
 *    out in the same process; then what Deno's own span and histogram cost in isolation.
 *
 *   deno bench --allow-all bench/telemetry.bench.ts
 *   (HL_TELEMETRY_ROUNDS, HL_TELEMETRY_PER_ROUND change the sample sizes.)
 */
import process from "node:process";
import { metrics, trace } from "@opentelemetry/api";
import { Sandbox } from "../src/sandbox.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const ROUNDS = Number(Deno.env.get("HL_TELEMETRY_ROUNDS") ?? 31);
const PER_ROUND = Number(Deno.env.get("HL_TELEMETRY_PER_ROUND") ?? 300);
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

interface Figure {
  /** µs per op, medians of the rounds. */
  a: number;
  b: number;
  /** Paired ratios a/b: median and quartiles. */
  ratio: number;
  q1: number;
  q3: number;
}

function figure(ta: number[], tb: number[]): Figure {
  const ratios = ta.map((x, i) => x / tb[i]);
  return {
    a: quantile(ta, 0.5),
    b: quantile(tb, 0.5),
    ratio: quantile(ratios, 0.5),
    q1: quantile(ratios, 0.25),
    q3: quantile(ratios, 0.75),
  };
}

/**
 * µs per op of `a` and `b`, in interleaved rounds (order alternating), paired per round: wall
 * time, and the CPU time of the whole process (all its threads: this one, the vCPU threads and
 * the exporter's), which other processes' load disturbs less.
 */
async function interleaved(
  a: () => unknown,
  b: () => unknown,
): Promise<{ wall: Figure; cpu: Figure }> {
  const ta: number[] = [];
  const tb: number[] = [];
  const ca: number[] = [];
  const cb: number[] = [];
  const round = async (op: () => unknown, wall: number[], cpu: number[]) => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < PER_ROUND; i++) await op();
    wall.push((performance.now() - t0) * 1000 / PER_ROUND);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / PER_ROUND);
  };
  await round(a, [], []);
  await round(b, [], []);
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      await round(a, ta, ca);
      await round(b, tb, cb);
    } else {
      await round(b, tb, cb);
      await round(a, ta, ca);
    }
  }
  return { wall: figure(ta, tb), cpu: figure(ca, cb) };
}

const one = (x: Figure) =>
  `${x.a.toFixed(2)} vs ${x.b.toFixed(2)} µs: ${x.ratio.toFixed(3)}x ` +
  `(quartiles ${x.q1.toFixed(3)}..${x.q3.toFixed(3)}, +${(x.a - x.b).toFixed(2)} µs)`;
const show = (x: { wall: Figure; cpu: Figure }) =>
  `wall ${one(x.wall)}\n               cpu  ${one(x.cpu)}`;

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
      `control (noop callSync, two hooks-out sandboxes):\n               ${show(control)}`,
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

const header = `medians of ${ROUNDS} interleaved rounds of ${PER_ROUND} calls`;
if (Deno.env.get("HL_TELEMETRY_BENCH_CHILD")) {
  console.log(await measure(true));
} else if (!Deno.env.get("HL_TELEMETRY_BENCH_SKIP")) {
  console.log(`telemetry off: this code vs the hooks compiled out (${header}):`);
  console.log(await measure(false));
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
