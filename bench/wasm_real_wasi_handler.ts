/**
 * The host's WASI request handler alone (`WasiRuntime.io`, no VM): wall and CPU time per request
 * for the requests SQLite with a database file makes in every transaction (bench/_wasi_requests.ts
 * lists them), in a fresh directory on this host's disk. What a request costs the JS thread
 * besides its exit: path decoding, the confined resolution (one `lstat` per component), the
 * checks, the Deno file call, the reply. A missing path is SQLite's journal/WAL status check.
 *
 *   deno run -A bench/wasm_real_wasi_handler.ts [iterations]
 */
import process from "node:process";
import { Op, WasiRuntime } from "../src/wasm/wasi.ts";

const N = Number(Deno.args[0] ?? 3000);
const dir = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "hl-wasi-handler-" }));
Deno.writeFileSync(`${dir}/shop.db`, new Uint8Array(8192));
const rt = new WasiRuntime({ stdout: () => {}, stderr: () => {} }, "m.wasm", [
  { guest: "/data", host: dir, writable: true },
]);
const utf8 = new TextEncoder();

/** A request: numbers as u32, bigints as u64, `[n]` as u8, bytes as a blob. */
function req(...parts: (number | bigint | [number] | Uint8Array)[]): Uint8Array {
  const out: number[] = [];
  for (const p of parts) {
    if (typeof p === "number") out.push(...new Uint8Array(new Uint32Array([p]).buffer));
    else if (typeof p === "bigint") out.push(...new Uint8Array(new BigUint64Array([p]).buffer));
    else if (Array.isArray(p)) out.push(p[0]);
    else out.push(...new Uint8Array(new Uint32Array([p.length]).buffer), ...p);
  }
  return new Uint8Array(out);
}

function reply(op: number, request: Uint8Array): Uint8Array {
  const out = rt.io(op, request);
  if (out instanceof Promise) throw new Error("a file request answered asynchronously");
  return out;
}

const READ_WRITE = (1n << 1n) | (1n << 2n) | (1n << 6n);
const opened = reply(Op.OPEN, req(3, 1, utf8.encode("shop.db"), 0, READ_WRITE, 0n, 0));
const fd = new DataView(opened.buffer).getUint32(4, true);
const cases: [string, () => void][] = [
  ["path_filestat, missing", () => reply(Op.PATH_FILESTAT, req(3, 1, utf8.encode("shop.db-wal")))],
  ["path_filestat, present", () => reply(Op.PATH_FILESTAT, req(3, 1, utf8.encode("shop.db")))],
  ["fd_filestat_get", () => reply(Op.FILESTAT, req(fd))],
  [
    "seek + read 16 bytes (a batch)",
    () => reply(Op.BATCH, req(1, Op.SEEK, req(fd, 24n, [0]), Op.READ, fd, 16)),
  ],
  [
    "path_filestat_set_times, both now",
    () => reply(Op.PATH_SET_TIMES, req(3, 0, utf8.encode("shop.db"), 0n, 0n, 2 | 8)),
  ],
  ["path_open + fd_close", () => {
    const o = reply(Op.OPEN, req(3, 1, utf8.encode("shop.db"), 0, READ_WRITE, 0n, 0));
    reply(Op.CLOSE, req(new DataView(o.buffer).getUint32(4, true)));
  }],
  ["output (one record)", () => reply(Op.OUTPUT, req(1, utf8.encode("row\n")))],
];

console.log(
  `WasiRuntime.io per request (${N} each after as many untimed; load ${
    Deno.loadavg()[0].toFixed(2)
  }):`,
);
for (const [name, fn] of cases) {
  for (let i = 0; i < N; i++) fn();
  const cpu = process.cpuUsage();
  const t = performance.now();
  for (let i = 0; i < N; i++) fn();
  const wallUs = (performance.now() - t) * 1000 / N;
  const used = process.cpuUsage(cpu);
  console.log(
    `  ${name}: ${wallUs.toFixed(1)} µs wall, ${((used.user + used.system) / N).toFixed(1)} µs CPU`,
  );
}
rt.close();
Deno.removeSync(dir, { recursive: true });
