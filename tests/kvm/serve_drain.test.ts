/**
 * `hl serve` as a subprocess (`deno run cli.ts serve`): SIGTERM while requests are in flight.
 * /readyz answers 503 at once while the server keeps serving for `drainDelayMs`; every request
 * the server had accepted before the signal gets its 200, the process exits 0 after logging
 * `drained`, and afterwards nothing listens. The requests are known to be in
 * flight from /metrics (`hl_serve_requests_in_flight`), not from a sleep. Loopback only.
 */
import assert from "node:assert/strict";
import { kvmTest, runDeno } from "./_kvm.ts";
import { parsePrometheus, serveFixtures } from "./_serve.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const N = 40; // ~100 ms each on 2 sandboxes: ~2 s of work, most of it after drainDelayMs

kvmTest("hl serve: SIGTERM drains, every accepted request completes, exit 0", async () => {
  const f = serveFixtures();
  const dir = await Deno.makeTempDir();
  const config = `${dir}/hl-serve.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({
      hostname: "127.0.0.1",
      port: 0,
      drainDelayMs: 500,
      routes: [{
        path: "/js/*",
        kind: "js",
        source: f.js,
        poolSize: 2,
        timeoutMs: 5000,
        acquireTimeoutMs: 30_000,
      }],
    }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "serve", "--config", config],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const lines: Record<string, unknown>[] = [];
  let port = 0;
  const gotPort = Promise.withResolvers<void>();
  const reading = (async () => {
    let buf = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const e = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        lines.push(e);
        if (e.event === "listening") {
          port = e.port;
          gotPort.resolve();
        }
      }
    }
    gotPort.resolve();
  })();
  const stderr = new Response(child.stderr).text();
  try {
    await gotPort.promise;
    assert.ok(port > 0, "the server said where it listens");
    const base = `http://127.0.0.1:${port}`;
    let ready = 0;
    for (let i = 0; i < 600 && ready !== 200; i++) {
      const r = await fetch(`${base}/readyz`);
      await r.body?.cancel();
      ready = r.status;
      if (ready !== 200) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(ready, 200, "ready within the bound");
    // N slow requests (~100 ms each, two sandboxes): most of them wait for a sandbox.
    const requests = Array.from(
      { length: N },
      (_, i) =>
        fetch(`${base}/js/slow`, { headers: { "x-request-id": `drain-${i}` } })
          .then(async (r) => ({ status: r.status, body: await r.text() })),
    );
    let inFlight = 0;
    for (let i = 0; i < 1000 && inFlight < N; i++) {
      const m = parsePrometheus(await (await fetch(`${base}/metrics`)).text());
      inFlight = m.get("hl_serve_requests_in_flight")! - 1; // less the metrics request itself
      if (inFlight < N) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(inFlight, N, "all requests accepted before the signal");
    child.kill("SIGTERM");
    // During drainDelayMs the server still answers, but is no longer ready.
    let readyz = 200;
    for (let i = 0; i < 200 && readyz === 200; i++) {
      const r = await fetch(`${base}/readyz`);
      await r.body?.cancel();
      readyz = r.status;
      if (readyz === 200) await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(readyz, 503, "not ready once draining");
    const m = parsePrometheus(await (await fetch(`${base}/metrics`)).text());
    const left = m.get("hl_serve_requests_in_flight")! - 1;
    assert.ok(left > 0, "requests still in flight when the server stops accepting");
    const answers = await Promise.all(requests);
    for (const a of answers) assert.equal(a.status, 200, a.body);
    const status = await child.status;
    await reading;
    assert.equal(status.code, 0, await stderr);
    assert.ok(lines.some((e) => e.event === "drained"));
    const logged = lines.filter((e) => typeof e.id === "string" && e.id.startsWith("drain-"));
    assert.equal(logged.length, N);
    assert.ok(logged.every((e) => e.status === 200));
    const after = await fetch(`${base}/healthz`).catch((e) => e);
    assert.ok(after instanceof TypeError, "nothing listens after the drain");
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
    await child.status;
    await stderr;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("hl serve: a bad config is exit 2 naming the field; --check passes a good one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bad = `${dir}/bad.json`;
    await Deno.writeTextFile(
      bad,
      JSON.stringify({ routes: [{ path: "/x", kind: "js", source: "a.js", timeoutMs: -1 }] }),
    );
    const r = await runDeno(["run", "-A", CLI, "serve", "--config", bad]);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /^hl serve: .*bad\.json: routes\[0\]\.timeoutMs: must be an integer/);
    assert.equal(r.err.trim().split("\n").length, 1);
    const good = `${dir}/good.json`;
    await Deno.writeTextFile(
      good,
      JSON.stringify({ routes: [{ path: "/x", kind: "js", source: "a.js" }] }),
    );
    const ok = await runDeno(["run", "-A", CLI, "serve", "--config", good, "--check"]);
    assert.equal(ok.code, 0, ok.err);
    const none = await runDeno(["run", "-A", CLI, "serve"]);
    assert.equal(none.code, 2);
    assert.match(none.err, /--config FILE is required/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
