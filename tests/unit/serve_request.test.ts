// serveRequest (src/serve/cgi.ts) with what the server already parsed (its URL and a header
// record without a prototype, one pass over the headers) gives the handler the same request as
// parsing it again: the `js` and `wasm` routes and the plain baseline must see the same JSON.

import assert from "node:assert/strict";
import { serveRequest } from "../../src/serve/cgi.ts";

/** The header record as src/serve/server.ts collects it. */
function collected(req: Request): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  for (const [k, v] of req.headers) out[k] = v;
  return out;
}

Deno.test("serveRequest: the server's parsed URL and headers give the same request", () => {
  const body = new TextEncoder().encode('{"n":1}');
  const cases = [
    new Request("http://h:8/a/b?x=1&y=%20", { method: "POST", body: "x" }),
    new Request("http://h/a?", { headers: { "X-A": "1", "x-b": "2" } }),
    new Request("http://h/a/../b/./c"),
    new Request("http://h/q", {
      headers: [["__proto__", "p"], ["set-cookie", "a"], ["accept", "x"]],
    }),
  ];
  for (const req of cases) {
    const seen = { url: new URL(req.url), headers: collected(req) };
    for (const b of [body, new Uint8Array(0)]) {
      const again = serveRequest(req, b, "r1");
      const once = serveRequest(req, b, "r1", seen);
      assert.equal(JSON.stringify(once), JSON.stringify(again));
    }
  }
  const odd = serveRequest(cases[3], body, "r1", {
    url: new URL(cases[3].url),
    headers: collected(cases[3]),
  });
  assert.equal(JSON.parse(JSON.stringify(odd)).headers.__proto__, "p");
});
