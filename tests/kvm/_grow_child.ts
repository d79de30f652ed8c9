// Child of memory_view.test.ts, run with `--v8-flags=--trace-gc,--expose-gc`: a full collection
// ("testing"), then N (the argument, default 40) one-page `memory.grow`s of a wasmtime sandbox's
// Wasm memory (each an `hl_wasm_map` host call), then a scavenge ("testing"). The line starting
// with `{` is the memory's size after them.
import { WasmSandbox } from "../../mod.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";

const grows = Number(Deno.args[0] ?? 40);
await using w = await WasmSandbox.create({ module: fixtureBytes("bounds"), engine: "wasmtime" });
const gc = (globalThis as unknown as { gc: (o?: { type: string }) => void }).gc;
gc();
for (let i = 0; i < grows; i++) await w.call("grow", 1);
gc({ type: "minor" });
console.log(JSON.stringify({ pages: (await w.memorySize()) / 65536 }));
