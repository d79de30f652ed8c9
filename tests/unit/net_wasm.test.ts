/**
 * The `hl_http` imports (src/net/wasm.ts) called directly, as a module would: what one guest call
 * leaves behind must not reach the next (a pool member's next tenant, a restored VM), whichever
 * import that call uses first.
 */

import assert from "node:assert/strict";
import { HL_HTTP, HL_HTTP_CODES, httpImports, Net, wasmNetOptions } from "../../src/net/mod.ts";
import { HL_HTTP_FIELDS, HL_HTTP_PARTS } from "../../src/net/wasm.ts";
import type { WasmImports } from "../../src/wasm/types.ts";
import { startServer } from "../_net_servers.ts";

type Fn = (...args: unknown[]) => unknown;

function importsOf(net: Net, epoch: () => number): Record<string, Fn> {
  const m = httpImports(net, epoch)[HL_HTTP];
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v.fn as Fn]));
}

/** Puts `s` into `field` 8 bytes at a time, as hl_http.h's helper does. */
function put(f: Record<string, Fn>, field: number, s: string): void {
  const bytes = new TextEncoder().encode(s);
  for (let i = 0; i < bytes.length; i += 8) {
    let word = 0n;
    const n = Math.min(8, bytes.length - i);
    for (let j = n - 1; j >= 0; j--) word = (word << 8n) | BigInt(bytes[i + j]);
    assert.equal(f.put(field, word, n), 0);
  }
}

Deno.test("hl_http: a new call sees none of the last call's responses, error or request", async () => {
  const srv = startServer();
  let call = 1;
  const net = new Net({ allow: [`${srv.origin}/`] });
  try {
    const f = importsOf(net, () => call);
    put(f, 1, `${srv.origin}/secret`);
    const h = await f.send() as number;
    assert.ok(h > 0);
    assert.equal(f.status(h), 200);
    assert.ok((f.len(h, 0) as number) > 0);
    put(f, 1, "http://refused.test/");
    assert.equal(await f.send(), HL_HTTP_CODES.REFUSED);
    assert.ok((f.len(0, 2) as number) > 0, "the error text is there within the call");
    put(f, 1, `${srv.origin}/half`); // a request left half-built (the call trapped)

    call = 2; // the next tenant: its first import is a read, not a send
    assert.equal(f.read(h, 0, 0), 0n, "the last call's body is gone");
    assert.equal(f.len(h, 0), HL_HTTP_CODES.INVALID);
    assert.equal(f.status(h), HL_HTTP_CODES.INVALID);
    assert.equal(f.len(0, 2), 0, "the last call's error text is gone");
    assert.equal(f.close(h), HL_HTTP_CODES.INVALID);
    put(f, 1, `${srv.origin}/mine`);
    const h2 = await f.send() as number;
    assert.ok(h2 > 0);
    assert.deepEqual(srv.seen.map((s) => s.path), ["/secret", "/mine"]);
  } finally {
    await net.dispose();
    await srv.close();
  }
});

Deno.test("hl_http: an error that is not a net error reaches the module only as 'internal'", async () => {
  const net = new Net({ allow: ["http://127.0.0.1:1/"] });
  // A bug of ours, stood in for by a request that throws a host error with host details.
  net.request = () => Promise.reject(new Error("/home/host/secret: bug"));
  try {
    const f = importsOf(net, () => 1);
    put(f, 1, "http://127.0.0.1:1/");
    assert.equal(await f.send(), HL_HTTP_CODES.FAILED);
    const n = f.len(0, 2) as number;
    let text = "";
    for (let i = 0; i < n; i += 8) {
      const w = BigInt.asUintN(64, f.read(0, 2, i) as bigint);
      for (let j = 0; j < Math.min(8, n - i); j++) {
        text += String.fromCharCode(Number((w >> BigInt(8 * j)) & 0xffn));
      }
    }
    assert.equal(text, "NetworkError(internal): the request failed");
  } finally {
    await net.dispose();
  }
});

Deno.test("hl_http: sandboxes given one Net (a pool's members) each keep their own per-call budget", async () => {
  const srv = startServer();
  const shared = new Net({ allow: [`${srv.origin}/`], limits: { maxRequestsPerCall: 2 } });
  const member = () => {
    let call = 0;
    const wired = wasmNetOptions<{ net: Net; hostFunctions?: WasmImports }>({ net: shared });
    wired.bind(() => call);
    const m = wired.options.hostFunctions![HL_HTTP];
    const f = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v.fn as Fn]));
    return { f, next: () => call++ };
  };
  try {
    const a = member();
    const b = member();
    a.next();
    for (let i = 0; i < 2; i++) {
      put(a.f, 1, `${srv.origin}/a`);
      assert.ok((await a.f.send() as number) > 0);
    }
    b.next(); // b's call starts while a's is still running
    put(b.f, 1, `${srv.origin}/b`);
    assert.ok((await b.f.send() as number) > 0);
    put(a.f, 1, `${srv.origin}/a`);
    assert.equal(await a.f.send(), HL_HTTP_CODES.REFUSED, "a's third request in one call");
    assert.deepEqual(srv.seen.map((s) => s.path), ["/a", "/a", "/b"]);
    assert.equal(shared.stats().requests, 3, "the counters stay the shared Net's");
  } finally {
    await shared.dispose();
    await srv.close();
  }
});

Deno.test("hl_http.h's numbers are the host's (fields, parts, codes), and it defines no other", async () => {
  const header = await Deno.readTextFile(
    new URL("../../runtimes/include/hl_http.h", import.meta.url),
  );
  const defined = new Map<string, number>();
  for (const m of header.matchAll(/^#define (HL_HTTP_[A-Z_]+) \(?(-?\d+)\)?$/gm)) {
    defined.set(m[1], Number(m[2]));
  }
  const expected = new Map<string, number>([
    ...HL_HTTP_FIELDS.map((f, i) => [`HL_HTTP_${f.toUpperCase()}`, i] as const),
    ...HL_HTTP_PARTS.map((p, i) => [`HL_HTTP_PART_${p.toUpperCase()}`, i] as const),
    ...Object.entries(HL_HTTP_CODES).map(([k, v]) => [`HL_HTTP_${k}`, v] as const),
  ]);
  assert.deepEqual(defined, expected);
});
