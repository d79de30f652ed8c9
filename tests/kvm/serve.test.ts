/**
 * `hl serve` in this process (src/serve/): one server on 127.0.0.1, port 0, with a route of each
 * kind and strategy. Checks: /readyz before and after the routes are warm (the first route's
 * module is read from a FIFO the test fills, so "before" is certain), each kind answers, each
 * strategy keeps or drops the guest's state as it says, the request id, every error status
 * (500, 502, 503, 504, 404, 405, 413, 431) and that the route answers 200 again after each, and
 * that /metrics parses as Prometheus text. Loopback only; every loop is bounded.
 */
import assert from "node:assert/strict";
import { guestMappingCount, kvmTest, openFdCount } from "./_kvm.ts";
import { JsSandbox } from "../../src/js/sandbox.ts";
import { WasmSandbox } from "../../src/wasm/sandbox.ts";
import { parsePrometheus, serveFixtures } from "./_serve.ts";
import { bakeServeSnapshots, serve } from "../../src/serve/server.ts";

const f = serveFixtures();

interface Answer {
  status: number;
  headers: Headers;
  text: string;
}

kvmTest(
  "hl serve: readiness, route kinds, strategies, request id, error codes, metrics",
  async (t) => {
    const dir = await Deno.makeTempDir();
    const fifo = `${dir}/wagi.wasm`;
    await Deno.writeTextFile(`${dir}/hello.txt`, "from the preopen");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(mk.success, "mkfifo");
    const lines: string[] = [];
    // The loops run into timeoutMs; it is long enough that a loaded host never times out the rest.
    const common = { poolSize: 1, timeoutMs: 1000, acquireTimeoutMs: 5000 };
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      routes: [
        {
          path: "/wagi/*",
          kind: "wagi",
          module: fifo,
          env: { EXTRA: "e" },
          preopens: { "/data": dir },
          maxResponseBytes: 4096,
          ...common,
        },
        { path: "/wasm/*", kind: "wasm", module: f.wasm, ...common },
        { path: "/wasm-renew/*", kind: "wasm", module: f.wasm, strategy: "renew", ...common },
        { path: "/wasm-fuel/*", kind: "wasm", module: f.wasm, fuel: 1_000_000, ...common },
        { path: "/wasm-reuse/*", kind: "wasm", module: f.wasm, strategy: "reuse", ...common },
        { path: "/js/*", kind: "js", source: f.js, ...common, methods: ["GET", "POST"] },
        { path: "/js-renew/*", kind: "js", source: f.js, strategy: "renew", ...common },
        { path: "/js-reuse/*", kind: "js", source: f.js, strategy: "reuse", ...common },
        {
          path: "/busy/*",
          kind: "js",
          source: f.js,
          poolSize: 1,
          timeoutMs: 5000,
          acquireTimeoutMs: 0,
        },
        { path: "/guest", kind: "guest", guest: "testguest", function: "echo_bytes", ...common },
        {
          path: "/guest-panic",
          kind: "guest",
          guest: "testguest",
          function: "panic",
          strategy: "reuse",
          ...common,
        },
        {
          path: "/guest-spin",
          kind: "guest",
          guest: "testguest",
          function: "spin",
          argument: "none",
          strategy: "renew",
          ...common,
        },
        {
          path: "/small",
          kind: "guest",
          guest: "testguest",
          function: "echo_bytes",
          maxBodyBytes: 16,
          maxHeaders: 20,
          ...common,
        },
      ],
    }, { log: (l) => lines.push(l) });
    const base = `http://127.0.0.1:${server.addr.port}`;
    const get = async (path: string, init: RequestInit = {}): Promise<Answer> => {
      const r = await fetch(base + path, { redirect: "manual", ...init });
      return { status: r.status, headers: r.headers, text: await r.text() };
    };
    try {
      await t.step("healthz at once; readyz 503 until every route is warm, then 200", async () => {
        assert.equal((await get("/healthz")).status, 200);
        const before = await get("/readyz");
        assert.equal(before.status, 503);
        assert.equal(server.isReady, false);
        assert.equal((await get("/wasm/x")).status, 503, "a route not started yet");
        // The first route reads its module from the FIFO: only now can it start.
        await Deno.writeFile(fifo, await Deno.readFile(f.wagi));
        await server.ready;
        assert.equal((await get("/readyz")).status, 200);
      });

      await t.step("wagi: CGI variables, stdin, status and headers from the head", async () => {
        const r = await get("/wagi/a/b?x=1", {
          method: "POST",
          body: "hello",
          headers: { "user-agent": "t", "x-request-id": "abc-1" },
        });
        assert.equal(r.status, 201);
        assert.equal(r.headers.get("x-method"), "POST");
        assert.equal(r.headers.get("x-request-id"), "abc-1");
        assert.equal(
          r.text,
          "method=POST script=/wagi path=/a/b query=x=1 length=5 id=abc-1 agent=t extra=e\nhello",
        );
        const file = await get("/wagi/?file");
        assert.equal(file.text, "ok:from the preopen");
        const redirect = await get("/wagi/?redirect");
        assert.equal(redirect.status, 302);
        assert.equal(redirect.headers.get("location"), "/elsewhere");
      });

      await t.step("request id: a valid one is echoed, otherwise one is made", async () => {
        const made = await get("/js/x", { headers: { "x-request-id": "bad id with spaces" } });
        const id = made.headers.get("x-request-id")!;
        assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
        assert.equal(JSON.parse(made.text).id, id);
        assert.equal(
          (await get("/nowhere", { headers: { "x-request-id": "r.2" } })).headers
            .get("x-request-id"),
          "r.2",
        );
        assert.ok(lines.some((l) => JSON.parse(l).id === id), "the access log has the id");
      });

      await t.step("strategies: restore and renew start clean, reuse keeps state", async () => {
        for (const [kind, header] of [["wasm", "x-count"], ["js", "x-count"]]) {
          const counts = async (path: string) => {
            const out: string[] = [];
            for (let i = 0; i < 3; i++) {
              const r = await get(path, { method: "POST", body: "b" });
              assert.equal(r.status, 200, `${path}: ${r.text}`);
              out.push(r.headers.get(header)!);
            }
            return out;
          };
          assert.deepEqual(await counts(`/${kind}/x`), ["1", "1", "1"], `${kind} restore`);
          assert.deepEqual(await counts(`/${kind}-renew/x`), ["1", "1", "1"], `${kind} renew`);
          assert.deepEqual(await counts(`/${kind}-reuse/x`), ["1", "2", "3"], `${kind} reuse`);
        }
        const body = JSON.parse((await get("/wasm/p?q=1", { method: "POST", body: "zz" })).text);
        assert.equal(body.path, "/wasm/p");
        assert.equal(body.query, "q=1");
        assert.equal(body.body, "zz");
        const echo = await get("/guest", { method: "POST", body: "raw bytes" });
        assert.equal(echo.status, 200);
        assert.equal(echo.text, "raw bytes");
        assert.equal(echo.headers.get("content-type"), "application/octet-stream");
      });

      await t.step(
        "guest failures: 500 fault, 504 timeout, 502 bad response; then 200",
        async () => {
          const cases: [string, number, string][] = [
            ["/wagi/?trap", 500, "/wagi/x"],
            ["/wagi/?loop", 504, "/wagi/x"],
            ["/wagi/?badhead", 502, "/wagi/x"],
            ["/wagi/?nohead", 502, "/wagi/x"],
            ["/wagi/?big", 502, "/wagi/x"],
            ["/wasm/trap", 500, "/wasm/x"],
            ["/wasm/loop", 504, "/wasm/x"],
            ["/wasm-fuel/loop", 500, "/wasm-fuel/x"], // out of fuel: a trap, before the timeout
            ["/wasm-renew/trap", 500, "/wasm-renew/x"],
            ["/wasm-reuse/trap", 500, "/wasm-reuse/x"],
            ["/wasm-reuse/loop", 504, "/wasm-reuse/x"],
            ["/js/throw", 500, "/js/x"],
            ["/js/loop", 504, "/js/x"],
            ["/js/bad", 502, "/js/x"],
            ["/js-reuse/loop", 504, "/js-reuse/x"],
            ["/js-renew/loop", 504, "/js-renew/x"],
            ["/guest-panic", 500, "/guest"],
            ["/guest-spin", 504, "/guest"],
          ];
          for (const [bad, status, good] of cases) {
            const r = await get(bad, { method: "POST", body: "boom" });
            assert.equal(r.status, status, `${bad}: ${r.text}`);
            const ok = await get(good, { method: "POST", body: "b" });
            const want = good.startsWith("/wagi") ? 201 : 200; // the WAGI program answers 201
            assert.equal(ok.status, want, `${good} after ${bad}: ${ok.text}`);
          }
          // The reused sandbox that a request poisoned was replaced: its count starts again.
          assert.equal(
            (await get("/wasm-reuse/x", { method: "POST" })).headers.get("x-count"),
            "2",
          );
          const panic = await get("/guest-panic", { method: "POST", body: "again" });
          assert.equal(panic.status, 500, "the replaced member panics again, as a new one does");
        },
      );

      await t.step("limits and routing: 413, 431, 404, 405, 503", async () => {
        assert.equal((await get("/small", { method: "POST", body: "x".repeat(16) })).status, 200);
        assert.equal((await get("/small", { method: "POST", body: "x".repeat(17) })).status, 413);
        // A body without Content-Length (a stream) is counted as it is read.
        const stream = new ReadableStream<Uint8Array>({
          start(c) {
            for (let i = 0; i < 4; i++) c.enqueue(new Uint8Array(8));
            c.close();
          },
        });
        assert.equal((await get("/small", { method: "POST", body: stream })).status, 413);
        // A declared length is read whole (server.ts): a request that also names a chunked body
        // of more than it declares never reaches a route (the HTTP layer answers 400).
        const raw = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
        try {
          await raw.write(new TextEncoder().encode(
            "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n" +
              `Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n20\r\n${
                "x".repeat(32)
              }\r\n0\r\n\r\n`,
          ));
          const head = new Uint8Array(64);
          const n = await raw.read(head);
          assert.match(new TextDecoder().decode(head.subarray(0, n ?? 0)), /^HTTP\/1\.1 400 /);
        } finally {
          raw.close();
        }
        const many: Record<string, string> = {};
        for (let i = 0; i < 30; i++) many[`x-h${i}`] = "v";
        assert.equal((await get("/small", { headers: many })).status, 431);
        assert.equal((await get(`/small?${"q".repeat(20_000)}`)).status, 431, "a long query");
        assert.equal((await get("/nowhere")).status, 404);
        const odd = await get("/js/x", { method: "BREW" });
        assert.equal(odd.status, 405);
        const put = await get("/js/x", { method: "PUT" });
        assert.equal(put.status, 405);
        assert.equal(put.headers.get("allow"), "GET, POST");
        // One slow request holds /busy's only sandbox; with acquireTimeoutMs 0 the next gets 503.
        const slow = get("/busy/slow");
        let busy: Answer | undefined;
        for (let i = 0; i < 200 && busy?.status !== 503; i++) {
          busy = await get("/busy/x");
          if (busy.status === 200) await new Promise((r) => setTimeout(r, 5));
        }
        assert.equal(busy?.status, 503);
        assert.equal(busy?.headers.get("retry-after"), "1");
        assert.equal((await slow).status, 200);
      });

      await t.step("metrics: Prometheus text with the requests, errors and pools", async () => {
        const r = await get("/metrics");
        assert.equal(r.status, 200);
        assert.match(r.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
        const m = parsePrometheus(r.text);
        assert.ok(m.get('hl_serve_requests_total{route="/wagi/*",method="POST",code="201"}')! >= 1);
        assert.equal(m.get('hl_serve_requests_total{route="/wagi/*",method="POST",code="504"}'), 1);
        assert.equal(m.get('hl_serve_guest_errors_total{route="/js/*",error="JsError"}'), 1);
        assert.equal(m.get('hl_serve_guest_errors_total{route="/js/*",error="TimeoutError"}'), 1);
        assert.equal(m.get("hl_serve_ready"), 1);
        // A client's own method name is not a label value (a series per name would grow without bound).
        assert.equal(m.get('hl_serve_requests_total{route="/js/*",method="other",code="405"}'), 1);
        assert.ok(![...m.keys()].some((k) => k.includes("BREW")));
        assert.equal(m.get('hl_serve_pool_size{route="/wasm/*",strategy="restore"}'), 1);
        assert.ok(m.get('hl_serve_sandboxes_replaced_total{route="/wasm-reuse/*"}')! >= 2);
        assert.ok(m.get("process_resident_memory_bytes")! > 0);
        const count = m.get('hl_serve_request_duration_seconds_count{route="/js/*"}')!;
        assert.equal(
          m.get('hl_serve_request_duration_seconds_bucket{route="/js/*",le="+Inf"}'),
          count,
        );
      });

      await t.step("access log: one JSON line per request", () => {
        const entries = lines.map((l) => JSON.parse(l));
        const requests = entries.filter((e) => e.id !== undefined);
        assert.ok(requests.length > 50);
        for (const e of requests) {
          assert.equal(typeof e.status, "number");
          assert.equal(typeof e.ms, "number");
          assert.equal(typeof e.method, "string");
        }
        assert.ok(requests.some((e) => e.status === 504 && e.error === "TimeoutError"));
      });
    } finally {
      await server.drain();
      await Deno.remove(dir, { recursive: true });
    }
    assert.equal((await fetch(`${base}/healthz`).catch((e) => e)) instanceof TypeError, true);
  },
);

kvmTest(
  "hl serve: baked snapshots start routes warm; stale or refused files start cold",
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const js = `${dir}/handler.js`;
      await Deno.copyFile(f.js, js);
      const route = (path: string, extra: Record<string, unknown>) => ({
        path,
        poolSize: 2,
        timeoutMs: 5000,
        snapshot: `${dir}${path.replaceAll("/", "_")}.hlsnap`,
        ...extra,
      });
      const baked = [
        route("/js", { kind: "js", source: js }),
        route("/js-renew", { kind: "js", source: js, strategy: "renew" }),
        route("/js-reuse", { kind: "js", source: js, strategy: "reuse" }),
        route("/wasm", { kind: "wasm", module: f.wasm }),
        route("/guest", { kind: "guest", guest: "testguest", function: "echo_bytes" }),
      ];
      const config = {
        hostname: "127.0.0.1",
        port: 0,
        routes: [...baked, { path: "/cold", kind: "js", source: js }],
      };
      const events: Record<string, unknown>[] = [];
      const log = (l: string) => events.push(JSON.parse(l));
      assert.equal(await bakeServeSnapshots(config, { log }), 5);
      for (const r of baked) {
        assert.ok((await Deno.stat(`${r.snapshot}.key`)).isFile);
      }
      // Each server's requests go through their own HTTP client, closed after the drain: the
      // client's kept-alive socket is this process's fd too, and it closes only some time after
      // the server does.
      let client: Deno.HttpClient | undefined;
      const run = async (check: (base: string) => Promise<void>) => {
        events.length = 0;
        const server = await serve(config, { log });
        client = Deno.createHttpClient({});
        try {
          await server.ready;
          await check(`http://127.0.0.1:${server.addr.port}`);
        } finally {
          await server.drain();
          client.close();
        }
      };
      const answer = async (url: string) => {
        const r = await fetch(url, { method: "POST", body: "b", client });
        return { status: r.status, count: r.headers.get("x-count"), text: await r.text() };
      };
      const loaded = () => events.filter((e) => e.event === "snapshot_loaded").map((e) => e.route);
      const skipped = () => events.filter((e) => e.event === "snapshot_skipped");

      await run(async (base) => {
        assert.deepEqual(loaded(), ["/js", "/js-renew", "/js-reuse", "/wasm", "/guest"]);
        for (const p of ["/js", "/js-renew", "/wasm"]) {
          assert.equal((await answer(base + p)).count, "1");
          assert.equal((await answer(base + p)).count, "1", `${p}: restored each time`);
        }
        const reuse = [(await answer(base + "/js-reuse")).count];
        reuse.push((await answer(base + "/js-reuse")).count);
        assert.deepEqual(reuse, ["1", "2"], "reuse: the member that answered answers again");
        assert.equal((await answer(base + "/guest")).text, "b");
      });

      // What the process keeps after a server's drain: only what outlives servers by design
      // (the module and snapshot caches, cleared here; the library's process-wide handles,
      // opened by the first server).
      // The closed client's socket goes when the event loop gets to it: a bounded wait for the
      // count to come back to `want` (a VM's fd or mapping that stays fails the assertion), or,
      // without `want`, for three equal counts in a row.
      const held = async (want?: { mappings: number; fds: number }) => {
        let last = "";
        let same = 0;
        for (let i = 0;; i++) {
          await new Promise((r) => setTimeout(r, i === 0 ? 0 : 20));
          await JsSandbox.clearCache();
          await WasmSandbox.clearCache();
          const now = { mappings: guestMappingCount(), fds: openFdCount() };
          same = JSON.stringify(now) === last ? same + 1 : 0;
          last = JSON.stringify(now);
          // Up to 10 s: on a loaded host the closed client's socket has taken longer than 2 s
          // (3 of ~80 runs at load 5-13 ended one fd above); a VM's fd never goes.
          if (i >= 500) return now;
          if (want === undefined ? same >= 2 : last === JSON.stringify(want)) return now;
        }
      };
      const before = await held();

      // The script changed after the bake: its routes start cold and serve the new code.
      await Deno.writeTextFile(
        js,
        (await Deno.readTextFile(js)).replace('"x-count": String(count)', '"x-count": "new"'),
      );
      // A snapshot file that is cut short (its key still matches) is refused by the library.
      const wasmSnap = baked[3].snapshot;
      const bytes = await Deno.readFile(wasmSnap);
      await Deno.writeFile(wasmSnap, bytes.subarray(0, bytes.length >> 1));
      await run(async (base) => {
        assert.deepEqual(loaded(), ["/guest"]);
        const why = Object.fromEntries(skipped().map((e) => [e.route, String(e.reason)]));
        assert.match(why["/js"], /stale/);
        assert.match(why["/js-reuse"], /stale/);
        assert.match(why["/wasm"], /SnapshotFormatError/);
        assert.equal((await answer(base + "/js")).count, "new");
        assert.equal((await answer(base + "/js-renew")).count, "new");
        assert.equal((await answer(base + "/wasm")).count, "1");
      });
      assert.deepEqual(await held(before), before, "a drained server leaves no VM, mapping or fd");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);

kvmTest("hl serve: a guest's 204, 205 or 304 is sent without a body, not a 500", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const source = `${dir}/status.js`;
    await Deno.writeTextFile(
      source,
      "function handler(req) { return { status: Number(req.query), headers: { etag: 'e' } }; }",
    );
    const server = await serve({
      hostname: "127.0.0.1",
      port: 0,
      routes: [{ path: "/s", kind: "js", source, poolSize: 1, timeoutMs: 5000 }],
    }, { log: null });
    try {
      await server.ready;
      for (const status of [204, 205, 304, 200]) {
        const r = await fetch(`http://127.0.0.1:${server.addr.port}/s?${status}`);
        assert.equal(r.status, status);
        assert.equal(r.headers.get("etag"), "e");
        assert.equal(await r.text(), "");
      }
    } finally {
      await server.drain();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
