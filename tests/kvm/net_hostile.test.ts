/**
 * `net` through the guests (issue 25): JavaScript's `fetch` in a JsSandbox and the `hl_http`
 * imports of a Wasm module, against loopback servers the test starts. The full hostile battery
 * at the capability is tests/unit/net_hostile.test.ts; here every refusal is checked to arrive in
 * the guest typed (the error's name and rule) and to reach no server, and the per-call limits to
 * hold across the guest boundary.
 */
import assert from "node:assert/strict";
import {
  ArgumentError,
  guests,
  JsError,
  JsSandbox,
  JsSandboxPool,
  Net,
  NET_HOST_FUNCTION,
  type NetOptions,
  Sandbox,
  WasmSandbox,
  WasmSandboxPool,
} from "../../mod.ts";
import { QUICKJS_BUILT } from "./_js.ts";
import { kvmTest } from "./_kvm.ts";
import { startServer, type TestServer } from "../_net_servers.ts";

function jsTest(name: string, fn: () => Promise<void>): void {
  if (QUICKJS_BUILT) kvmTest(`net js: ${name}`, fn);
  else Deno.test({ name: `net js: ${name} (quickjs.wasm not built)`, ignore: true, fn() {} });
}

/** A script whose `attempt(url, init)` answers the response or the error's name/rule/reason. */
const SOURCE = `
async function attempt(url, init) {
  try {
    const r = await fetch(url, init);
    return { status: r.status, text: await r.text(), location: r.headers.get("location") };
  } catch (e) {
    return { name: e.name, rule: e.rule, reason: e.reason };
  }
}
async function loop(url, n) {
  let ok = 0, refused = 0, last;
  for (let i = 0; i < n; i++) {
    try { await fetch(url); ok++; } catch (e) { refused++; last = e.rule; }
  }
  return { ok, refused, last };
}
async function echo(url, body, headers) {
  const r = await fetch(url, { method: "POST", body, headers });
  return await r.json();
}
async function bytes(url) {
  const r = await fetch(url, { method: "POST", body: new Uint8Array([0, 1, 2, 255]) });
  return await r.json();
}
async function uncaught(url) { return await fetch(url); }
async function binary(url) {
  const a = Array.from(new Uint8Array(await (await fetch(url)).arrayBuffer()));
  const t = await (await fetch(url)).text();
  const u = Array.from(await (await fetch(url.replace("/bin", "/echo"), { method: "POST", body: "é" })).bytes()).length > 0;
  return { a, t, u };
}
`;

async function withServers(
  fn: (a: TestServer, b: TestServer, opts: NetOptions) => Promise<void>,
): Promise<void> {
  const a = startServer();
  const b = startServer();
  try {
    await fn(a, b, {
      allow: [
        `${a.origin}/v1/`,
        `${a.origin}/echo`,
        `${a.origin}/bin`,
        `${a.origin}/big`,
        `${a.origin}/slow`,
        `${a.origin}/redirect`,
        `http://private.test:${a.port}/`,
      ],
      limits: { maxResponseBodyBytes: 256 * 1024, timeoutMs: 700, maxRequestsPerCall: 20 },
    });
  } finally {
    await a.close();
    await b.close();
  }
}

jsTest("fetch: allowed requests, bodies both ways, the URL's Host", async () => {
  await withServers(async (a, _b, allow) => {
    await using js = await JsSandbox.create({ source: SOURCE, net: allow, cache: false });
    assert.deepEqual(await js.call("attempt", `${a.origin}/v1/x`), {
      status: 200,
      text: "ok",
      location: null,
    });
    const echo = await js.call("echo", `${a.origin}/echo`, "héllo", {
      "Content-Type": "text/plain",
      Host: "evil.test",
    }) as { body: string; host: string; method: string };
    assert.equal(echo.body, "héllo");
    assert.equal(echo.method, "POST");
    assert.equal(echo.host, `127.0.0.1:${a.port}`); // the spoofed Host is not sent
    const bin = await js.call("bytes", `${a.origin}/echo`) as { bodyLength: number };
    assert.equal(bin.bodyLength, 4);
    // A body that is not UTF-8 comes as bytes; text() decodes it with replacement characters.
    assert.deepEqual(await js.call("binary", `${a.origin}/bin`), {
      a: [0xff, 0, 1, 0xc3, 0xa9],
      t: "\ufffd\u0000\u0001é",
      u: true,
    });
    const s = js.netStats()!;
    assert.equal(s.requests, 6);
    assert.ok(s.bytesOut >= 10 && s.bytesIn > 0);
  });
});

jsTest("fetch: refusals arrive typed in the script and reach no server", async () => {
  await withServers(async (a, b, allow) => {
    const net = new Net(allow, {
      resolve: (h) => Promise.resolve(h === "private.test" ? ["10.0.0.7"] : []),
    });
    await using js = await JsSandbox.create({ source: SOURCE, net, cache: false });
    const cases: [string, Record<string, unknown> | undefined, string][] = [
      [`http://localhost:${a.port}/v1/`, undefined, "host"],
      [`${b.origin}/v1/`, undefined, "port"],
      [`${a.origin}/v1/../admin`, undefined, "path"],
      [`${a.origin}/v1/%2e%2e/admin`, undefined, "path"],
      [`${a.origin}//admin/v1/`, undefined, "path"],
      [`${a.origin}/v1/`, { method: "CONNECT" }, "method"],
      [`${a.origin}/v1/`, { method: "TRACE" }, "method"],
      [`http://private.test:${a.port}/`, undefined, "address"],
      [`${a.origin}/v1/`, { headers: { "x-a": "1\r\nX-Injected: 1" } }, "header"],
      [`http://u:p@127.0.0.1:${a.port}/v1/`, undefined, "credentials"],
      ["http://169.254.169.254/latest/meta-data/", undefined, "host"],
    ];
    for (const [url, init, rule] of cases) {
      const r = await js.call("attempt", url, init ?? {});
      assert.deepEqual(r, { name: "NetworkPolicyError", rule }, url);
    }
    assert.equal(a.seen.length + b.seen.length, 0);
    assert.equal(net.stats().refused, cases.length);
    // Uncaught, it is the call's JsError, named.
    const e = await js.call("uncaught", `${b.origin}/`).catch((e) => e);
    assert.ok(e instanceof JsError && e.jsName === "NetworkPolicyError", String(e));
    assert.equal(js.poisoned, false);
    await net.dispose();
  });
});

jsTest("fetch: redirects are returned, 1 GB is cut, slowloris times out", async () => {
  await withServers(async (a, b, allow) => {
    await using js = await JsSandbox.create({ source: SOURCE, net: allow, cache: false });
    const to = `${b.origin}/v1/`;
    const r = await js.call("attempt", `${a.origin}/redirect?to=${encodeURIComponent(to)}`);
    assert.deepEqual(r, { status: 302, text: "", location: to });
    assert.equal(b.seen.length, 0);
    assert.deepEqual(await js.call("attempt", `${a.origin}/big?n=${2 ** 30}`), {
      name: "NetworkError",
      reason: "body-limit",
    });
    assert.deepEqual(await js.call("attempt", `${a.origin}/slow`), {
      name: "NetworkError",
      reason: "timeout",
    });
  });
});

jsTest(
  "fetch: 1,000 requests in one call stop at the per-call limit; the next call may go on",
  async () => {
    await withServers(async (a, _b, allow) => {
      await using js = await JsSandbox.create({ source: SOURCE, net: allow, cache: false });
      assert.deepEqual(await js.call("loop", `${a.origin}/v1/n`, 1000), {
        ok: 20,
        refused: 980,
        last: "limit:requests",
      });
      assert.equal(a.seen.length, 20);
      assert.deepEqual(await js.call("loop", `${a.origin}/v1/n`, 3), { ok: 3, refused: 0 });
    });
  },
);

jsTest("without net there is no fetch; a snapshot made with net needs net", async () => {
  await using plain = await JsSandbox.create({ cache: false });
  assert.equal(await plain.eval("typeof fetch"), "undefined");
  await using js = await JsSandbox.create({ net: { allow: [] }, cache: false });
  assert.equal(await js.eval("typeof fetch"), "function");
  await using snap = await js.snapshot();
  await assert.rejects(JsSandbox.create({ snapshot: snap }));
  await using copy = await JsSandbox.create({ snapshot: snap, net: { allow: [] } });
  assert.equal(await copy.eval("typeof fetch"), "function");
});

// ---- Wasm: the hl_http imports, through examples/net_fetch.c ----

const SYSROOT = ["/usr/share/wasi-sysroot", "/usr"].find((d) => {
  try {
    return Deno.statSync(d === "/usr" ? "/usr/lib/wasm32-wasi/libc.a" : d).isFile ||
      d !== "/usr";
  } catch {
    return false;
  }
});

/** examples/net_fetch.c built with clang for wasm32-wasi, or undefined without the toolchain. */
const NET_FETCH: Uint8Array | undefined = (() => {
  if (!SYSROOT) return undefined;
  const root = new URL("../../", import.meta.url).pathname;
  const out = Deno.makeTempFileSync({ suffix: ".wasm" });
  try {
    const r = new Deno.Command("clang", {
      args: [
        "--target=wasm32-wasi",
        `--sysroot=${SYSROOT}`,
        "-O2",
        "-nodefaultlibs",
        "-lc",
        "-I",
        `${root}runtimes/include`,
        `${root}examples/net_fetch.c`,
        "-o",
        out,
      ],
      stdout: "null",
      stderr: "piped",
    }).outputSync();
    if (!r.success) throw new Error(new TextDecoder().decode(r.stderr));
    return Deno.readFileSync(out);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined; // no clang
    throw e;
  } finally {
    Deno.removeSync(out);
  }
})();

function wasmTest(name: string, fn: () => Promise<void>): void {
  if (NET_FETCH) kvmTest(`net wasm: ${name}`, fn);
  else Deno.test({ name: `net wasm: ${name} (no clang/wasi-libc)`, ignore: true, fn() {} });
}

async function runFetch(
  net: NetOptions | Net,
  ...args: string[]
): Promise<{ exitCode: number; out: string; stats: ReturnType<WasmSandbox["netStats"]> }> {
  let out = "";
  await using w = await WasmSandbox.create({
    module: NET_FETCH!,
    net,
    wasi: {
      args: ["net_fetch", ...args],
      stdout: (d) => void (out += new TextDecoder().decode(d)),
    },
  });
  const { exitCode } = await w.runWasi();
  return { exitCode, out, stats: w.netStats() };
}

wasmTest("the C example fetches, posts, and gets refusals as codes", async () => {
  await withServers(async (a, b, allow) => {
    const got = await runFetch(allow, `${a.origin}/v1/x`);
    assert.equal(got.exitCode, 0, got.out);
    assert.match(got.out, /^status 200\n/);
    assert.match(got.out, /\nok\n$/);
    assert.equal(got.stats?.requests, 1);
    const posted = await runFetch(allow, `${a.origin}/echo`, "POST", "from C");
    const echo = JSON.parse(posted.out.trim().split("\n").at(-1)!);
    assert.deepEqual([echo.method, echo.body, echo.host], [
      "POST",
      "from C",
      `127.0.0.1:${a.port}`,
    ]);
    assert.ok(echo.headers.some(([k, v]: string[]) => k === "accept" && v === "text/plain"));
    const n = a.seen.length;
    for (
      const [url, rule] of [
        [`${b.origin}/v1/`, "port"],
        [`${a.origin}/v1/../admin`, "path"],
        [`http://u:p@127.0.0.1:${a.port}/v1/`, "credentials"],
        ["http://169.254.169.254/", "host"],
      ]
    ) {
      const r = await runFetch(allow, url);
      assert.equal(r.exitCode, 2, r.out);
      assert.match(
        r.out,
        new RegExp(`^error -1: NetworkPolicyError\\(${rule.replace(/[()]/g, "")}\\)`),
      );
    }
    const trace = await runFetch(allow, `${a.origin}/v1/`, "TRACE", "");
    assert.match(trace.out, /^error -1: NetworkPolicyError\(method\)/);
    assert.equal(a.seen.length, n);
    assert.equal(b.seen.length, 0);
    const big = await runFetch(allow, `${a.origin}/big?n=${2 ** 30}`);
    assert.match(big.out, /^error -2: NetworkError\(body-limit\)/);
  });
});

wasmTest("1,000 requests in one Wasm call stop at the per-call limit", async () => {
  await withServers(async (a, _b, allow) => {
    const r = await runFetch(allow, `${a.origin}/v1/n`, "LOOP");
    assert.equal(r.out, "ok 20 refused 980 last -1\n");
    assert.equal(a.seen.length, 20);
  });
});

// ---- Native guests: the hl_fetch host function (what hl_guest::http_fetch calls) ----

kvmTest("net native: hl_fetch through a native guest, JSON both ways", async () => {
  await withServers(async (a, b, allow) => {
    await using net = new Net(allow);
    await using sb = await Sandbox.create({
      guest: guests.testguest,
      hostFunctions: { [NET_HOST_FUNCTION]: net.hostFunction() },
    });
    const fetchJson = async (req: unknown) => {
      net.beginCall();
      const text = await sb.call("call_host_value_string", NET_HOST_FUNCTION, JSON.stringify(req));
      return JSON.parse(text as string);
    };
    const ok = await fetchJson({ url: `${a.origin}/echo`, method: "POST", body: "native" });
    assert.equal(ok.status, 200);
    assert.equal(JSON.parse(atob(ok.bodyBase64)).body, "native");
    const refused = await fetchJson({ url: `${b.origin}/` });
    assert.deepEqual([refused.error.name, refused.error.rule], ["NetworkPolicyError", "port"]);
    const junk = await sb.call("call_host_value_string", NET_HOST_FUNCTION, "{");
    assert.equal(JSON.parse(junk as string).error.rule, "request");
    assert.equal(b.seen.length, 0);
    assert.deepEqual(net.stats().requests, 1);
  });
});

wasmTest("a WasmSandboxPool's members have the hl_http imports and their own budgets", async () => {
  await withServers(async (a, _b, allow) => {
    let out = "";
    await using pool = await WasmSandboxPool.create({
      module: NET_FETCH!,
      net: allow,
      size: 2,
      wasi: {
        args: ["net_fetch", `${a.origin}/v1/p`, "LOOP"],
        stdout: (d) => void (out += new TextDecoder().decode(d)),
      },
    });
    for (let i = 0; i < 3; i++) await pool.run((w) => w.runWasi());
    assert.equal(out, "ok 20 refused 980 last -1\n".repeat(3));
    assert.equal(a.seen.length, 60);
  });
});

jsTest("a JsSandboxPool refuses net (not wired yet) instead of dropping it", async () => {
  await assert.rejects(JsSandboxPool.create({ net: { allow: [] }, size: 1 }), ArgumentError);
});
