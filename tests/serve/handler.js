// deno-lint-ignore-file -- a classic script QuickJS evaluates in the guest: `var` state, a global handler and busy loops on purpose
// A JavaScript handler for hl serve (tests/kvm/serve.test.ts, tools/serve_load.sh): answers the
// request as JSON; `x-count` counts the calls this sandbox answered (1 on every request when
// restored). Paths ending in /throw, /loop, /bad and /slow throw, spin, return a bad status and
// busy-wait about 100 ms.
var count = 0;
function handler(req) {
  count++;
  if (req.path.endsWith("/throw")) throw new Error("boom");
  if (req.path.endsWith("/loop")) { for (;;) {} }
  if (req.path.endsWith("/bad")) return { status: 99 };
  if (req.path.endsWith("/slow")) {
    const end = Date.now() + 100;
    while (Date.now() < end) {}
  }
  return {
    status: 200,
    headers: { "x-count": String(count) },
    body: { method: req.method, path: req.path, query: req.query, body: req.body, id: req.id },
  };
}
