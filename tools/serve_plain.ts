/**
 * The baseline of `tools/serve_load.sh`: a plain `Deno.serve` handler doing the same work as an
 * `hl serve` route, in this process with no sandbox. `--kind wasm` runs the same Wasm handler
 * (tests/serve/handler.c) in V8's WebAssembly with the same request JSON in and the same CGI
 * parse out; `--kind js` runs the same JavaScript handler (tests/serve/handler.js) in V8 with the
 * same response check. Prints one JSON line `{"event":"listening","port":N}`.
 *
 * Usage: deno run -A tools/serve_plain.ts --kind wasm|js --module PATH [--port N]
 *
 * @module
 */

import { parseArgs } from "node:util";
import { jsonResponse, parseCgiResponse, serveRequest } from "../src/serve/cgi.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { kind: { type: "string" }, module: { type: "string" }, port: { type: "string" } },
});
const kind = values.kind;
if ((kind !== "wasm" && kind !== "js") || !values.module) {
  console.error("usage: serve_plain.ts --kind wasm|js --module PATH [--port N]");
  Deno.exit(2);
}

const enc = new TextEncoder();
const MAX = 4 << 20;

async function requestJson(req: Request, id: string) {
  return serveRequest(req, new Uint8Array(await req.arrayBuffer()), id);
}

let handle: (req: Request) => Promise<Response>;
if (kind === "wasm") {
  const { instance } = await WebAssembly.instantiate(await Deno.readFile(values.module));
  const ex = instance.exports as {
    memory: WebAssembly.Memory;
    alloc(n: number): number;
    handle(p: number, n: number): bigint;
  };
  handle = async (req) => {
    const input = enc.encode(JSON.stringify(await requestJson(req, crypto.randomUUID())));
    const p = ex.alloc(input.length);
    new Uint8Array(ex.memory.buffer, p, input.length).set(input);
    const r = ex.handle(p, input.length);
    const ptr = Number(r >> 32n);
    const len = Number(r & 0xffffffffn);
    const out = new Uint8Array(ex.memory.buffer, ptr, len).slice();
    const g = parseCgiResponse(out, MAX);
    return new Response(g.body, { status: g.status, headers: g.headers });
  };
} else {
  const source = await Deno.readTextFile(values.module);
  const fn = new Function(`${source}\nreturn handler;`)() as (r: unknown) => unknown;
  handle = async (req) => {
    const g = jsonResponse(await fn(await requestJson(req, crypto.randomUUID())), MAX);
    return new Response(g.body, { status: g.status, headers: g.headers });
  };
}

const server = Deno.serve({
  port: Number(values.port ?? 0),
  hostname: "127.0.0.1",
  onListen: () => {},
}, handle);
console.log(JSON.stringify({ event: "listening", port: server.addr.port }));
