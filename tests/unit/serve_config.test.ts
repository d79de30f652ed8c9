/**
 * `hl serve`'s config checks and its parsers of what a guest answers (src/serve/config.ts,
 * src/serve/cgi.ts): every malformed field is a ServeConfigError naming it; every malformed head
 * or response object is a GuestResponseError; nothing a guest writes is taken as a header the
 * server frames. No KVM.
 */
import assert from "node:assert/strict";
import {
  GuestResponseError,
  jsonResponse,
  parseCgiResponse,
  wagiEnv,
} from "../../src/serve/cgi.ts";
import { parseServeConfig, ServeConfigError } from "../../src/serve/config.ts";
import { ArgumentError, SandboxError } from "../../src/errors.ts";

const js = { path: "/f", kind: "js", source: "f.js" };

function configError(raw: unknown, field: string) {
  assert.throws(() => parseServeConfig(raw, "/base"), (e: unknown) => {
    assert.ok(e instanceof ServeConfigError, String(e));
    assert.ok(e instanceof ArgumentError && e instanceof SandboxError);
    assert.equal(e.field, field, e.message);
    return true;
  });
}

Deno.test("serve config: defaults, resolved paths, per-route limits", () => {
  const c = parseServeConfig({
    port: 0,
    limits: { maxBodyBytes: 10 },
    routes: [
      js,
      { path: "/w/*", kind: "wagi", module: "w.wasm", preopens: { "/d": "data" } },
      { path: "/g", kind: "guest", guest: "testguest", function: "echo", maxBodyBytes: 5 },
      { path: "/x", kind: "wasm", module: "/abs/h.wasm", strategy: "reuse" },
    ],
  }, "/base");
  assert.equal(c.hostname, "0.0.0.0");
  assert.equal(c.port, 0);
  assert.equal(c.drainTimeoutMs, 30_000);
  assert.equal(c.drainDelayMs, 0);
  const [r0, r1, r2, r3] = c.routes;
  assert.equal(r0.strategy, "restore");
  assert.equal(r0.poolSize, 4);
  assert.equal(r0.maxBodyBytes, 10);
  assert.equal(r0.kind === "js" && r0.source, "/base/f.js");
  assert.equal(r0.kind === "js" && r0.export, "handler");
  assert.equal(r1.strategy, "restore", "a WAGI route's default: a pool restored per request");
  assert.deepEqual(r1.kind === "wagi" && r1.preopens, {
    "/d": { path: "/base/data", writable: false },
  });
  assert.equal(r2.maxBodyBytes, 5);
  assert.equal(r2.kind === "guest" && r2.guest, "testguest");
  assert.equal(r3.kind === "wasm" && r3.module, "/abs/h.wasm");
  assert.equal(r3.kind === "wasm" && r3.export, "handle");
  // A checked config passes the checks again unchanged.
  assert.deepEqual(parseServeConfig(c), c);
});

Deno.test("serve config: each malformed field is named", () => {
  configError([], "(top)");
  configError({}, "routes");
  configError({ routes: [] }, "routes");
  configError({ routes: [js], colour: 1 }, "colour");
  configError({ routes: [js], port: 70000 }, "port");
  configError({ routes: [js], drainDelayMs: -5 }, "drainDelayMs");
  configError({ routes: [{ ...js, snapshot: 7 }] }, "routes[0].snapshot");
  configError(
    { routes: [{ path: "/w", kind: "wagi", module: "w.wasm", snapshot: "s" }] },
    "routes[0].snapshot",
  );
  configError({ routes: [js], limits: { maxBodyBytes: -1 } }, "limits.maxBodyBytes");
  configError({ routes: [js], limits: { big: 1 } }, "limits.big");
  configError({ routes: [js], accessLog: "yes" }, "accessLog");
  configError({ routes: [1] }, "routes[0]");
  configError({ routes: [{ ...js, kind: "perl" }] }, "routes[0].kind");
  configError({ routes: [{ ...js, kind: "python" }] }, "routes[0].kind");
  configError({ routes: [{ path: "/f", source: "f.js" }] }, "routes[0].kind");
  configError({ routes: [{ ...js, path: "f" }] }, "routes[0].path");
  configError({ routes: [{ ...js, path: "/a*" }] }, "routes[0].path");
  configError({ routes: [{ ...js, path: "/metrics" }] }, "routes[0].path");
  configError({ routes: [js, js] }, "routes[1].path");
  configError({ routes: [{ ...js, poolSize: 0 }] }, "routes[0].poolSize");
  configError({ routes: [{ ...js, poolSize: 1.5 }] }, "routes[0].poolSize");
  configError({ routes: [{ ...js, timeoutMs: "1s" }] }, "routes[0].timeoutMs");
  configError({ routes: [{ ...js, strategy: "fresh" }] }, "routes[0].strategy");
  configError({ routes: [{ ...js, methods: ["GET", "BAD METHOD"] }] }, "routes[0].methods");
  configError({ routes: [{ ...js, module: "x.wasm" }] }, "routes[0].module");
  configError({ routes: [{ path: "/f", kind: "js" }] }, "routes[0].source");
  configError({ routes: [{ ...js, engine: "v8" }] }, "routes[0].engine");
  configError({ routes: [{ ...js, maxMemoryBytes: 1 }] }, "routes[0].maxMemoryBytes");
  const wagi = { path: "/w", kind: "wagi", module: "w.wasm" };
  configError({ routes: [{ ...wagi, strategy: "reuse" }] }, "routes[0].strategy");
  // The worst-case environment of a request must fit runWasi's 1 MiB and 65,536 entries.
  configError({ routes: [{ ...wagi, maxHeaderBytes: 300_000 }] }, "routes[0].maxHeaderBytes");
  configError(
    { routes: [{ ...wagi, env: { BIG: "x".repeat(1 << 20) } }] },
    "routes[0].maxHeaderBytes",
  );
  configError({ routes: [{ ...wagi, maxHeaders: 70_000 }] }, "routes[0].maxHeaders");
  configError(
    { routes: [{ ...wagi, maxHeaders: 65_520, maxHeaderBytes: 1000 }] },
    "routes[0].maxHeaders",
  );
  assert.equal(
    parseServeConfig({ routes: [{ ...wagi, maxHeaderBytes: 200_000 }] }, "/b").routes[0]
      .maxHeaderBytes,
    200_000,
  );
  for (const strategy of ["restore", "renew"]) {
    assert.equal(
      parseServeConfig({ routes: [{ ...wagi, strategy }] }, "/b").routes[0].strategy,
      strategy,
    );
  }
  configError({ routes: [{ ...wagi, env: { A: 1 } }] }, "routes[0].env.A");
  configError({ routes: [{ ...wagi, env: { "A=B": "x" } }] }, "routes[0].env.A=B");
  configError({ routes: [{ ...wagi, preopens: { "/d": 3 } }] }, "routes[0].preopens./d");
  configError(
    { routes: [{ ...wagi, preopens: { "/d": { path: "x", writable: "yes" } } }] },
    "routes[0].preopens./d.writable",
  );
  const guest = { path: "/g", kind: "guest", guest: "testguest", function: "f" };
  configError({ routes: [{ ...guest, argument: "all" }] }, "routes[0].argument");
  configError({ routes: [{ ...guest, function: "" }] }, "routes[0].function");
});

const enc = new TextEncoder();
const cgi = (s: string, max = 1 << 20) => parseCgiResponse(enc.encode(s), max);

function malformed(s: string | (() => unknown), why: RegExp) {
  assert.throws(typeof s === "string" ? () => cgi(s) : s, (e: unknown) => {
    assert.ok(e instanceof GuestResponseError, String(e));
    assert.match(e.message, why);
    return true;
  });
}

Deno.test("serve CGI head: status, redirect, CRLF, body bytes kept", () => {
  const r = cgi("Content-Type: text/plain\r\nStatus: 404 Not Found\r\nX-A:  b \r\n\r\n\nbody\n");
  assert.equal(r.status, 404);
  assert.deepEqual(r.headers, [["content-type", "text/plain"], ["x-a", "b"]]);
  assert.equal(new TextDecoder().decode(r.body), "\nbody\n");
  assert.equal(cgi("Location: /x\n\n").status, 302);
  assert.equal(cgi("Location: /x\nStatus: 301 Moved\n\n").status, 301);
  assert.equal(cgi("Content-Type: a/b\n\n").status, 200);
  assert.equal(cgi("Content-Type: a/b\n\n").body.length, 0);
});

Deno.test("serve CGI head: hostile heads are GuestResponseError", () => {
  malformed("", /no head/);
  malformed("just text", /no head/);
  malformed("Content-Type: a/b\nno colon here\n\n", /line 2/);
  malformed(": v\nContent-Type: a/b\n\n", /line 1/);
  malformed("Bad Name: v\nContent-Type: a/b\n\n", /not a token/);
  malformed("Content-Type: a/b\u0001\n\n", /control/);
  malformed("Content-Type: a/b\rX-Split: y\n\n", /control/);
  malformed("Content-Type: a/b\nContent-Length: 99\n\n", /set by the server/);
  malformed("Content-Type: a/b\nTransfer-Encoding: chunked\n\n", /set by the server/);
  malformed("Content-Type: a/b\nX-Request-Id: forged\n\n", /set by the server/);
  malformed("Content-Type: a/b\nStatus: 200\nStatus: 500\n\n", /second Status/);
  malformed("Content-Type: a/b\nStatus: 199 x\n\n", /200–599/);
  malformed("Content-Type: a/b\nStatus: 600\n\n", /200–599/);
  malformed("Content-Type: a/b\nStatus: ok\n\n", /NNN/);
  malformed("X-A: b\n\n", /neither Content-Type nor Location/);
  malformed("Content-Type: a/b\n" + "X-A: b\n".repeat(100) + "\n", /more than 100 lines/);
  malformed("X-A: " + "b".repeat(20_000) + "\n\n", /no end of the head/);
  malformed(() => cgi("Content-Type: a/b\n\n" + "x".repeat(100), 50), /over 50 bytes/);
  // Bytes that are not UTF-8 in a value are kept as obs-text, not a crash.
  const r = parseCgiResponse(
    new Uint8Array([...enc.encode("Content-Type: a/b\nX-A: "), 0xff, 0x0a, 0x0a]),
    100,
  );
  assert.equal(r.headers[1][0], "x-a");
});

Deno.test("serve JSON response: shapes and refusals", () => {
  const r = jsonResponse({ body: "hi" }, 100);
  assert.equal(r.status, 200);
  assert.deepEqual(r.headers, [["content-type", "text/plain; charset=utf-8"]]);
  const j = jsonResponse({ status: 201, headers: { "X-A": "1" }, body: [1, 2] }, 100);
  assert.equal(j.status, 201);
  assert.deepEqual(j.headers, [["x-a", "1"], ["content-type", "application/json"]]);
  assert.equal(new TextDecoder().decode(j.body), "[1,2]");
  assert.equal(jsonResponse({}, 1).body.length, 0);
  malformed(() => jsonResponse(null, 100), /must return an object/);
  malformed(() => jsonResponse([1], 100), /must return an object/);
  malformed(() => jsonResponse("x", 100), /must return an object/);
  malformed(() => jsonResponse({ status: 99 }, 100), /200–599/);
  malformed(() => jsonResponse({ status: "200" }, 100), /200–599/);
  malformed(() => jsonResponse({ extra: 1 }, 100), /unknown field/);
  malformed(() => jsonResponse({ headers: [] }, 100), /object of strings/);
  malformed(() => jsonResponse({ headers: { a: 1 } }, 100), /must be a string/);
  malformed(() => jsonResponse({ headers: { a: "x\ny" } }, 100), /control/);
  malformed(() => jsonResponse({ headers: { connection: "close" } }, 100), /set by the server/);
  malformed(() => jsonResponse({ body: "x".repeat(101) }, 100), /over 100 bytes/);
});

Deno.test("serve responses: 204, 205 and 304 carry no body; a body after one is malformed", () => {
  for (const status of [204, 205, 304]) {
    assert.equal(cgi(`Content-Type: a/b\nStatus: ${status} x\n\n`).status, status);
    assert.equal(cgi(`Content-Type: a/b\nStatus: ${status} x\n\n`).body.length, 0);
    malformed(`Content-Type: a/b\nStatus: ${status} x\n\nbody`, /has no body/);
    const j = jsonResponse({ status }, 100);
    assert.equal(j.status, status);
    assert.equal(j.body.length, 0);
    malformed(() => jsonResponse({ status, body: "x" }, 100), /has no body/);
  }
});

Deno.test("serve WAGI environment: CGI variables, headers, route env overridden", () => {
  const req = new Request("http://example.test:8080/app/a/b?x=1&y", {
    method: "PUT",
    headers: { "X-Thing": "v", "content-type": "text/plain" },
  });
  const env = wagiEnv(req, {
    route: "/app/*",
    body: 3,
    remote: "10.0.0.1",
    id: "rid",
    env: { REQUEST_METHOD: "forged", KEEP: "k" },
  });
  assert.equal(env.REQUEST_METHOD, "PUT");
  assert.equal(env.SCRIPT_NAME, "/app");
  assert.equal(env.PATH_INFO, "/a/b");
  assert.equal(env.QUERY_STRING, "x=1&y");
  assert.equal(env.CONTENT_LENGTH, "3");
  assert.equal(env.CONTENT_TYPE, "text/plain");
  assert.equal(env.SERVER_PORT, "8080");
  assert.equal(env.SERVER_NAME, "example.test");
  assert.equal(env.REMOTE_ADDR, "10.0.0.1");
  assert.equal(env.HTTP_X_THING, "v");
  assert.equal(env.X_REQUEST_ID, "rid");
  assert.equal(env.X_MATCHED_ROUTE, "/app/*");
  assert.equal(env.KEEP, "k");
  const exact = wagiEnv(new Request("http://h/exact"), {
    route: "/exact",
    body: 0,
    remote: "r",
    id: "i",
    env: {},
  });
  assert.equal(exact.SCRIPT_NAME, "/exact");
  assert.equal(exact.PATH_INFO, "");
});
