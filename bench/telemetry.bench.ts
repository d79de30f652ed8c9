/**
 * Telemetry overhead (docs/observability.md): a noop `callSync` and `call` with this code against
 * the code before telemetry (`git archive` of the commit before src/telemetry.ts, loaded from a
 * temporary directory), in interleaved rounds of one process; ratios of the medians. Then the same
 * in a child process run with `OTEL_DENO=true`, exporting OTLP/HTTP JSON to a receiver started
 * here on loopback (telemetry on: a span and histogram records per call).
 *
 *   deno bench --allow-all bench/telemetry.bench.ts
 */
import { Sandbox } from "../src/sandbox.ts";
import { TESTGUEST } from "../tests/_guests.ts";

const BEFORE = Deno.env.get("HL_TELEMETRY_BASE") ?? "b69789f^";
const ROUNDS = 15;
const PER_ROUND = 400;
const root = new URL("../", import.meta.url).pathname;
const library = `${root}target/release/libhl_rust_vmm.so`;

/** The `src/` of commit `rev`, extracted to a temporary directory; returns its sandbox module. */
async function baseline(rev: string): Promise<typeof Sandbox> {
  const dir = Deno.env.get("HL_TELEMETRY_BASE_DIR") ??
    await Deno.makeTempDir({ prefix: "hl-base-" });
  if (!Deno.env.get("HL_TELEMETRY_BASE_DIR")) {
    const archive = new Deno.Command("git", {
      args: ["archive", rev, "src", "deno.json"],
      cwd: root,
      stdout: "piped",
    })
      .spawn();
    const tar = new Deno.Command("tar", { args: ["-x", "-C", dir], stdin: "piped" }).spawn();
    await archive.stdout.pipeTo(tar.stdin);
    if (!(await tar.status).success) throw new Error(`cannot extract ${rev}`);
  }
  return (await import(`file://${dir}/src/sandbox.ts`)).Sandbox;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** µs per call of `op`, in interleaved rounds of `a` and `b`. */
async function interleaved(
  a: () => unknown,
  b: () => unknown,
): Promise<{ a: number; b: number; ratio: number }> {
  const ta: number[] = [];
  const tb: number[] = [];
  const round = async (op: () => unknown, out: number[]) => {
    const t0 = performance.now();
    for (let i = 0; i < PER_ROUND; i++) await op();
    out.push((performance.now() - t0) * 1000 / PER_ROUND);
  };
  await round(a, []);
  await round(b, []);
  for (let r = 0; r < ROUNDS; r++) {
    if (r % 2 === 0) {
      await round(a, ta);
      await round(b, tb);
    } else {
      await round(b, tb);
      await round(a, ta);
    }
  }
  return { a: median(ta), b: median(tb), ratio: median(ta) / median(tb) };
}

async function measure(): Promise<string> {
  const Base = await baseline(BEFORE);
  const now = await Sandbox.create({ guest: TESTGUEST, library });
  const before = await Base.create({ guest: TESTGUEST, library });
  try {
    const sync = await interleaved(() => now.callSync("noop"), () => before.callSync("noop"));
    const async_ = await interleaved(() => now.call("noop"), () => before.call("noop"));
    const f = (x: { a: number; b: number; ratio: number }) =>
      `${x.a.toFixed(2)} µs vs ${x.b.toFixed(2)} µs = ${x.ratio.toFixed(3)}x`;
    return `noop callSync: ${f(sync)}\nnoop call:     ${f(async_)}`;
  } finally {
    await now.dispose();
    await before.dispose();
  }
}

if (Deno.env.get("HL_TELEMETRY_BENCH_CHILD")) {
  console.log(await measure());
} else {
  console.log(`telemetry off (this code vs ${BEFORE}, medians of ${ROUNDS} interleaved rounds):`);
  console.log(await measure());
  let posts = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    await req.arrayBuffer();
    posts++;
    return new Response("{}", { headers: { "content-type": "application/json" } });
  });
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname],
    env: {
      HL_TELEMETRY_BENCH_CHILD: "1",
      OTEL_DENO: "true",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${server.addr.port}`,
    },
    stderr: "inherit",
  }).output();
  await server.shutdown();
  console.log("telemetry on (OTEL_DENO=true, OTLP/HTTP JSON to a loopback receiver):");
  console.log(new TextDecoder().decode(out.stdout).trim() + `\n(${posts} OTLP posts received)`);
}

const sb = await Sandbox.create({ guest: TESTGUEST });
Deno.bench("noop callSync (telemetry off)", () => {
  sb.callSync("noop");
});
