// Child of memory_view.test.ts, run with `--v8-flags=--trace-gc,--expose-gc` (V8 prints each
// garbage collection and its reason to stdout): a full collection ("testing"), then N (the
// argument, default 8) JsSandboxes started from one snapshot and called, then a scavenge
// ("testing"); after that one of them grows its Wasm memory by 24 MiB and reads it back as zeros.
// The line starting with `{` is the calls' results.
import { JsSandbox } from "../../mod.ts";
import { QUICKJS_MODULE } from "./_js.ts";

const source =
  "function grow(n) { const a = new Uint8Array(n); return a.every((b) => b === 0) && n; }";
const first = await JsSandbox.create({ source, module: QUICKJS_MODULE.pathname, cache: false });
const snap = await first.snapshot();
const gc = (globalThis as unknown as { gc: (o?: { type: string }) => void }).gc;
gc(); // a full collection ("testing"): the external-memory limit starts afresh
const copies: JsSandbox[] = [];
const small: unknown[] = [];
for (let i = 0; i < Number(Deno.args[0] ?? 8); i++) {
  const js = await JsSandbox.create({ snapshot: snap });
  copies.push(js);
  small.push(await js.call("grow", 4096));
}
gc({ type: "minor" }); // a scavenge ("testing"): the end of what is counted
const big = await copies[0].call("grow", 24 << 20);
for (const js of [first, ...copies]) await js.dispose();
await snap.dispose();
console.log(JSON.stringify({ small, big }));
