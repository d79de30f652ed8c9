/**
 * Networking benchmark (issue 25): one GET over loopback made by a guest against the same
 * `fetch` made by the host directly, interleaved in the same run. Prints once, as p50s:
 *
 * - host `fetch` (the floor: Deno's default client, the same server);
 * - `Net.request` (the capability alone: policy, pinned client, body read with its cap);
 * - JsSandbox `fetch` (one `js.call` whose script awaits `fetch`: the call, the host-call round,
 *   the JSON/base64 wire, the guest's Response).
 *
 * Goal: guest minus host ≤ 1 ms p50. The JsSandbox figure includes a whole guest call and its
 * host-function round (the call pauses, the host answers, the call resumes); the same call
 * without a request, and with one host-function round that does no request, are printed as
 * well, so the request's own share reads off.
 *
 *   deno bench --allow-all bench/net.bench.ts        (needs target/runtimes/quickjs.wasm)
 *
 * Absolute times are this host's (2 shared, noisy cores); read the differences.
 */
import { JsSandbox } from "../src/js/sandbox.ts";
import { Net } from "../src/net/mod.ts";
import { startServer } from "../tests/_net_servers.ts";

const ROUNDS = Number(Deno.env.get("HL_NET_BENCH_ROUNDS") ?? 300);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function timeUs(op: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await op();
  return (performance.now() - t) * 1000;
}

{
  const server = startServer();
  const url = `${server.origin}/v1/x`;
  const allow = { allow: [`${server.origin}/v1/`], limits: { maxRequestsPerCall: 1_000_000 } };
  const net = new Net(allow);
  const js = await JsSandbox.create({
    source: "async function get(u) { const r = await fetch(u); return (await r.text()).length; }" +
      "function noop() { return 0; }" +
      "async function round() { return (await host.nop()).length; }",
    hostFunctions: { nop: () => "ok" },
    net: allow,
    cache: false,
  });
  const series: Record<string, number[]> = { host: [], net: [], js: [], jsNoop: [], jsRound: [] };
  const ops: [string, () => Promise<unknown>][] = [
    ["host", async () => await (await fetch(url)).text()],
    ["net", () => net.request({ url })],
    ["js", () => js.call("get", url)],
    ["jsNoop", () => js.call("noop")],
    ["jsRound", () => js.call("round")],
  ];
  for (let i = 0; i < 30 + ROUNDS; i++) {
    for (const [k, op] of ops) {
      const t = await timeUs(op);
      if (i >= 30) series[k].push(t);
    }
  }
  const p = Object.fromEntries(Object.entries(series).map(([k, v]) => [k, median(v)]));
  const us = (x: number) => `${x.toFixed(0)} µs`;
  console.log(`\nNetworking (issue 25), p50 of ${ROUNDS} interleaved rounds, loopback GET:`);
  console.log(`  host fetch                 ${us(p.host)}`);
  console.log(`  Net.request                ${us(p.net)}   (+${us(p.net - p.host)} over host)`);
  console.log(
    `  JsSandbox fetch (a call)   ${us(p.js)}   (+${us(p.js - p.host)} over host; goal ≤ 1 ms)`,
  );
  console.log(`  JsSandbox call, no request ${us(p.jsNoop)}`);
  console.log(`  JsSandbox call, one host-function round, no request ${us(p.jsRound)}`);
  console.log(
    `  so the request's own share in the guest: ${us(p.js - p.jsRound)} ` +
      `(JsSandbox fetch minus the host-function round), vs host fetch ${us(p.host)}`,
  );
  await js.dispose();
  await net.dispose();
  await server.close();
}

Deno.bench("Net.request loopback GET", { n: 100 }, async (b) => {
  const server = startServer();
  await using net = new Net({
    allow: [`${server.origin}/`],
    limits: { maxRequestsPerCall: 1_000_000 },
  });
  b.start();
  for (let i = 0; i < 100; i++) await net.request({ url: `${server.origin}/x` });
  b.end();
  await server.close();
});
