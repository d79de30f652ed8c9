/**
 * The `wasi_io` requests of one run of each I/O workload of bench/wasm_real.bench.ts (SQLite with
 * a database file, gzip of stdin), by op, beside the run's VM exits: where a workload's exits go
 * (docs/wasm.md, "File calls cross in batches"). A `BATCH` request is listed by the request it
 * carried (`BATCH+SYNC`; `BATCH+none` when it crossed alone) with the deferred requests it held;
 * an `OUTPUT_THEN` by the request the output rode in front of (`OUTPUT+RMDIR`).
 * Counts, not timings: they are the same on every host for the same guest and module.
 *
 *   deno run -A bench/_wasi_requests.ts [wasmtime|wasmi]
 */
import type { WasmEngine } from "../mod.ts";
import { Op, WasiRuntime } from "../src/wasm/wasi.ts";
import { fixtureBytes } from "../tests/wasm/fixtures.ts";
import { BENCH_WORKLOADS, runCountingExits } from "../tests/wasm/codebases/workloads.ts";

const engine = (Deno.args[0] ?? "wasmtime") as WasmEngine;
const names = new Map<number, string>(Object.entries(Op).map(([k, v]) => [v, k]));
const counts = new Map<string, number>();
const count = (key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);

/** The ops of a `BATCH` request: its deferred requests and the one it carried (and its request). */
function batchOps(bytes: Uint8Array): { deferred: number[]; last: number; rest: Uint8Array } {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const deferred: number[] = [];
  let at = 4;
  for (let i = 0; i < view.getUint32(0, true); i++) {
    deferred.push(view.getUint32(at, true));
    at += 8 + view.getUint32(at + 4, true);
  }
  return { deferred, last: view.getUint32(at, true), rest: bytes.subarray(at + 4) };
}

/** A request's name; `OUTPUT+X` for request X carried behind output (`OUTPUT_THEN`). */
function opName(op: number, bytes: Uint8Array): string {
  if (op !== Op.OUTPUT_THEN) return names.get(op) ?? (op === 0 ? "none" : `op ${op}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return `OUTPUT+${names.get(view.getUint32(4 + view.getUint32(0, true), true))}`;
}

// Counts each request the guest sent (a batch's carried request is served by a nested call).
const serve = WasiRuntime.prototype.io;
let depth = 0;
WasiRuntime.prototype.io = function (op: number, bytes: Uint8Array) {
  if (depth === 0) {
    if (op === Op.BATCH) {
      const { deferred, last, rest } = batchOps(bytes);
      count(`BATCH+${opName(last, rest)}`);
      for (const d of deferred) count(`  deferred ${names.get(d)}`);
    } else count(opName(op, bytes));
  }
  depth++;
  try {
    return serve.call(this, op, bytes);
  } finally {
    depth--;
  }
};

for (const w of BENCH_WORKLOADS.filter((w) => w.dir || w.stdin)) {
  counts.clear();
  {
    const { exits } = await runCountingExits(w, fixtureBytes(w.module), engine);
    const requests = [...counts].filter(([k]) => !k.startsWith(" ")).reduce((a, [, n]) => a + n, 0);
    console.log(`${w.name} (${engine}): ${exits} VM exits, ${requests} wasi_io requests`);
    for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`  ${k}: ${n}`);
  }
}
