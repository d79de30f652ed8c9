/**
 * Networking on demand (docs/networking.md): a JavaScript guest calls an API through the host's
 * allow-list. A local server stands in for the API; the rule names 127.0.0.1 and its port
 * literally (loopback is refused otherwise).
 *
 *   deno run --allow-net --allow-ffi --allow-read --allow-env examples/net.ts
 */
import { JsSandbox } from "../mod.ts";

const api = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const path = new URL(req.url).pathname;
  return path.startsWith("/v1/items/")
    ? Response.json({ id: path.split("/").pop(), name: "widget" })
    : new Response("admin", { status: 200 });
});
const origin = `http://127.0.0.1:${api.addr.port}`;

await using js = await JsSandbox.create({
  source: `
    async function item(origin, id) {
      const r = await fetch(origin + "/v1/items/" + id, { headers: { accept: "application/json" } });
      return { status: r.status, body: await r.json() };
    }
    async function sneak(origin) {
      try {
        await fetch(origin + "/v1/../admin");
        return "reached admin";
      } catch (e) {
        return e.name + " (" + e.rule + "): " + e.message;
      }
    }`,
  net: { allow: [{ url: `${origin}/v1/`, methods: ["GET"] }], limits: { timeoutMs: 5_000 } },
});

console.log(await js.call("item", origin, 42)); // { status: 200, body: { id: "42", name: "widget" } }
console.log(await js.call("sneak", origin)); // NetworkPolicyError (path): the path "/admin" is outside /v1/
console.log(js.netStats()); // { requests: 1, refused: 1, failed: 0, bytesOut: 0, bytesIn: ... }
await api.shutdown();
