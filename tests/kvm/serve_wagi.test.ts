/**
 * `hl serve` WAGI routes on a pool (issue 24): `restore` (the default) runs each request's
 * `_start` on a member restored to the post-instantiate snapshot, with the request's own WASI
 * environment and stdin (`WasmSandbox.runWasi` with a per-run context). Checks that a request never
 * sees the previous request's variables or body (one member, so every request is on the same VM),
 * the same under `renew`, and that a guest fault or a timeout answers 500/504 and the route's pool
 * is whole afterwards. Loopback only; every loop is bounded.
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { parsePrometheus, serveFixtures } from "./_serve.ts";
import { serve } from "../../src/serve/server.ts";

const f = serveFixtures();

kvmTest("hl serve: WAGI with restore and renew, a request's own env and stdin", async (t) => {
  const common = { kind: "wagi", module: f.wagi, timeoutMs: 2000, acquireTimeoutMs: 10_000 };
  const server = await serve({
    hostname: "127.0.0.1",
    port: 0,
    routes: [
      { path: "/one/*", poolSize: 1, env: { EXTRA: "route" }, ...common },
      { path: "/renew/*", poolSize: 1, strategy: "renew", ...common },
      { path: "/two/*", poolSize: 2, ...common },
    ],
  }, { log: null });
  const base = `http://127.0.0.1:${server.addr.port}`;
  const get = async (path: string, init: RequestInit = {}) => {
    const r = await fetch(base + path, init);
    return { status: r.status, headers: r.headers, text: await r.text() };
  };
  const envOf = (text: string) => new Set(text.split("\n").filter((l) => l.includes("=")));
  try {
    await server.ready;

    for (const route of ["/one", "/renew"]) {
      await t.step(
        `${route}: each request sees its own variables, never the previous one's`,
        async () => {
          const a = await get(`${route}/a?env`, {
            method: "POST",
            body: "A".repeat(1000),
            headers: { "x-secret": "from-a", "x-request-id": "req-a" },
          });
          assert.equal(a.status, 200, a.text);
          const envA = envOf(a.text);
          assert.ok(envA.has("HTTP_X_SECRET=from-a"), a.text);
          assert.ok(envA.has("X_REQUEST_ID=req-a"));
          assert.ok(envA.has("CONTENT_LENGTH=1000"));
          assert.ok(envA.has("PATH_INFO=/a"));
          const b = await get(`${route}/b?env`, { headers: { "x-request-id": "req-b" } });
          assert.equal(b.status, 200, b.text);
          const envB = envOf(b.text);
          assert.ok(![...envB].some((v) => v.startsWith("HTTP_X_SECRET=")), b.text);
          assert.ok(envB.has("X_REQUEST_ID=req-b"));
          assert.ok(envB.has("REQUEST_METHOD=GET"));
          assert.ok(envB.has("PATH_INFO=/b"));
          assert.ok(!envB.has("CONTENT_LENGTH=1000"));
          if (route === "/one") assert.ok(envB.has("EXTRA=route"), "the route's env is kept");
          // stdin: the body of this request only (the previous one was 1,000 bytes longer).
          const c = await get(`${route}/c`, { method: "POST", body: "short" });
          assert.equal(c.status, 201);
          assert.match(c.text, /\nshort$/);
          const d = await get(`${route}/d`, { method: "POST", body: "" });
          assert.equal(d.status, 201);
          assert.match(d.text, / length=0 .*\n$/);
        },
      );
    }

    await t.step("/two: a fault answers 500, a loop 504; the pool is whole after", async () => {
      const cases: [string, number][] = [["/two/?trap", 500], ["/two/?loop", 504]];
      for (const [bad, status] of cases) {
        const r = await get(bad, { method: "POST", body: "boom" });
        assert.equal(r.status, status, `${bad}: ${r.text}`);
        // Both members answer (4 at once on 2 members), each with its own request id and body.
        const good = await Promise.all(
          [0, 1, 2, 3].map((k) =>
            get(`/two/k${k}`, {
              method: "POST",
              body: `body-${k}`,
              headers: { "x-request-id": `good-${k}` },
            })
          ),
        );
        good.forEach((g, k) => {
          assert.equal(g.status, 201, g.text);
          assert.match(g.text, new RegExp(` id=good-${k} .*\\nbody-${k}$`));
        });
      }
      const m = parsePrometheus((await get("/metrics")).text);
      assert.equal(m.get('hl_serve_pool_size{route="/two/*",strategy="restore"}'), 2);
      assert.equal(m.get('hl_serve_pool_available{route="/two/*"}'), 2);
      assert.equal(m.get('hl_serve_guest_errors_total{route="/two/*",error="WasmTrapError"}'), 1);
      assert.equal(m.get('hl_serve_guest_errors_total{route="/two/*",error="TimeoutError"}'), 1);
      assert.equal(m.get('hl_serve_pool_size{route="/one/*",strategy="restore"}'), 1);
      assert.equal(m.get('hl_serve_pool_size{route="/renew/*",strategy="renew"}'), 1);
    });
  } finally {
    await server.drain();
  }
});
