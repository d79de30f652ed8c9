/**
 * Where one `PySandbox.run("print(1+1)")` request goes (issue 21), two ways in one process:
 *
 * - **In the VM**, host-side timestamps from the call's start: the guest's stdin read (the
 *   driver's `os.read`, a `wasi_io` READ host call), the reply (the `wasi_io` OUTPUT host call
 *   that carries the driver's frame), the end of `_start` (`os._exit`), the reply decoded; then
 *   the restore that follows (off the reply's path) with the pages it put back; and the VM exits
 *   per request. Hooks on `WasiRuntime.prototype.io` and `MicroVm.prototype.restore`, as
 *   bench/_restore_first.ts does; nothing in src/ changes.
 * - **Under V8** (`node:wasi`, the same python-3.12.wasm, the same `-c` text, boot code and
 *   request frames), re-entered in place as the VM does (the `_start` guard cleared, the linear
 *   memory and the shadow-stack pointer put back before each request): the interpreter's own cost
 *   per request, with no VM, no exits and no restore. The stack pointer is a global the module
 *   does not export: a copy of the module with one more export (`sp`, global 0) is made in memory.
 *   Timestamps: `args_get` (wasi-libc's constructors done, CPython's `main` starting), the stdin
 *   read, the reply's write, `proc_exit`.
 *
 * Each row: p50 / p10 in ms over N requests (env N, default 300), after 20 warm-up requests.
 * Absolute times are this host's (2 shared, noisy cores): compare rows of one run.
 *
 *   deno run -A bench/_py_request.ts        (needs target/runtimes/python-3.12.wasm)
 */
import { WASI } from "node:wasi";
import { PySandbox } from "../src/py/sandbox.ts";
import { MicroVm } from "../src/ffi/vm.ts";
import { Op, WasiRuntime } from "../src/wasm/wasi.ts";
import { DRIVER, DRIVER_BOOT, DRIVER_ENV, REQUEST_HEADER } from "../src/py/driver.ts";

const N = Number(Deno.env.get("N") ?? 300);
const CODE = "print(1+1)";
const MODULE = new URL("../target/runtimes/python-3.12.wasm", import.meta.url);
/** wasi-libc's `_start` guard in the pinned build (src/py/runtimes.ts, CPYTHON.startedFlag). */
const STARTED_FLAG = 4728656;
const utf8 = new TextEncoder();

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const cell = (xs: number[]) => {
  const s = sorted(xs);
  return `${s[s.length >> 1].toFixed(3)} / ${s[Math.floor(s.length / 10)].toFixed(3)}`;
};

// ---- in the VM -------------------------------------------------------------------------------

let t0 = 0;
let marks: Record<string, number> = {};
{
  const proto = WasiRuntime.prototype as unknown as Record<string, (...a: unknown[]) => unknown>;
  const io = proto.io;
  proto.io = function (this: unknown, ...a: unknown[]) {
    const op = a[0] as number;
    if (op === Op.READ) marks["stdin read"] ??= performance.now() - t0;
    if (op === Op.OUTPUT) marks["reply (OUTPUT)"] ??= performance.now() - t0;
    return io.apply(this, a);
  };
}
let pages = 0;
let restoreMs = 0;
{
  const proto = MicroVm.prototype as unknown as Record<string, (...a: unknown[]) => number>;
  const restore = proto.restore;
  proto.restore = function (this: unknown, ...a: unknown[]) {
    const t = performance.now();
    const n = restore.apply(this, a);
    restoreMs += performance.now() - t;
    pages += n;
    return n;
  };
}

const py = await PySandbox.create({ setup: "import json" });
for (let i = 0; i < 20; i++) await py.run(CODE);
/** A request's restore runs after its reply, in the sandbox's queue: a macrotask later it is done. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 1));
const vm: Record<string, number[]> = {};
const add = (rows: Record<string, number[]>, k: string, v: number) => (rows[k] ??= []).push(v);
const pagesPer: number[] = [];
for (let i = 0; i < N; i++) {
  await settle();
  marks = {};
  pages = 0;
  restoreMs = 0;
  t0 = performance.now();
  const r = await py.run(CODE);
  const done = performance.now() - t0;
  if (r.stdout !== "2\n") throw new Error(`unexpected reply ${JSON.stringify(r)}`);
  for (const [k, v] of Object.entries(marks)) add(vm, k, v);
  add(vm, "reply decoded (run resolves)", done);
  await settle();
  add(vm, "restore after it (own time)", restoreMs);
  pagesPer.push(pages);
}
await py.dispose();

console.log(`In the VM (kvm_pvm), ${N} requests, ms from the call's start, p50 / p10:`);
for (const [k, v] of Object.entries(vm)) console.log(`  ${k.padEnd(32)} ${cell(v)}`);
console.log(`  pages put back per restore         ${sorted(pagesPer)[pagesPer.length >> 1]}`);

// ---- under V8 --------------------------------------------------------------------------------

/** `bytes` with one more export: global 0 (the shadow-stack pointer) as `sp`. */
function exportStackPointer(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const leb = (at: number): [number, number] => {
    let r = 0, s = 0, i = at;
    for (;;) {
      const b = bytes[i++];
      r |= (b & 0x7f) << s;
      s += 7;
      if (b < 0x80) return [r >>> 0, i];
    }
  };
  const enc = (n: number) => {
    const o: number[] = [];
    do {
      let b = n & 0x7f;
      n >>>= 7;
      if (n) b |= 0x80;
      o.push(b);
    } while (n);
    return o;
  };
  const parts: Uint8Array[] = [bytes.subarray(0, 8)];
  for (let i = 8; i < bytes.length;) {
    const id = bytes[i];
    const [size, body] = leb(i + 1);
    if (id === 7) {
      const [count, rest] = leb(body);
      const entries = bytes.subarray(rest, body + size);
      const added = [...enc(2), 0x73, 0x70, 3, ...enc(0)];
      const payload = [...enc(count + 1), ...entries, ...added];
      parts.push(new Uint8Array([7, ...enc(payload.length), ...payload]));
    } else if (id !== 0) parts.push(bytes.subarray(i, body + size)); // custom sections dropped
    i = body + size;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

class Exit {
  constructor(readonly code: number) {}
}
const v8: Record<string, number[]> = {};
{
  const module = await WebAssembly.compile(exportStackPointer(await Deno.readFile(MODULE)));
  const wasi = new WASI({
    version: "preview1",
    args: ["python", "-I", "-c", DRIVER],
    env: { PYTHONIOENCODING: "utf-8", PYTHONDONTWRITEBYTECODE: "1", [DRIVER_ENV]: DRIVER_BOOT },
    returnOnExit: true,
  });
  const imports = wasi.getImportObject() as Record<string, Record<string, unknown>>;
  const w = imports.wasi_snapshot_preview1 as Record<string, (...a: number[]) => number>;
  let stdin = new Uint8Array(0);
  let out: number[] = [];
  /** The instance's memory, set once it is instantiated (the imports close over this holder). */
  const held = { memory: undefined as unknown as WebAssembly.Memory };
  let vmarks: Record<string, number> = {};
  const mark = (k: string) => (vmarks[k] ??= performance.now() - t0);
  const iovecs = (iovs: number, n: number, each: (p: number, l: number) => number) => {
    const dv = new DataView(held.memory.buffer);
    let done = 0;
    for (let i = 0; i < n; i++) {
      done += each(dv.getUint32(iovs + 8 * i, true), dv.getUint32(iovs + 8 * i + 4, true));
    }
    return done;
  };
  const fdRead = w.fd_read, argsGet = w.args_get;
  w.args_get = (...a) => (mark("args_get (main starts)"), argsGet(...a));
  w.fd_read = (fd, iovs, n, nread) => {
    if (fd !== 0) return fdRead(fd, iovs, n, nread);
    mark("stdin read");
    const done = iovecs(iovs, n, (p, l) => {
      const k = Math.min(l, stdin.length);
      new Uint8Array(held.memory.buffer, p, k).set(stdin.subarray(0, k));
      stdin = stdin.subarray(k);
      return k;
    });
    new DataView(held.memory.buffer).setUint32(nread, done, true);
    return 0;
  };
  w.fd_write = (fd, iovs, n, written) => {
    const done = iovecs(iovs, n, (p, l) => {
      if (fd === 1) out.push(...new Uint8Array(held.memory.buffer, p, l));
      return l;
    });
    if (fd === 1) mark("reply written");
    new DataView(held.memory.buffer).setUint32(written, done, true);
    return 0;
  };
  w.proc_exit = (code) => {
    mark("proc_exit");
    throw new Exit(code);
  };
  const instance = await WebAssembly.instantiate(module, imports as WebAssembly.Imports);
  held.memory = instance.exports.memory as WebAssembly.Memory;
  const sp = instance.exports.sp as WebAssembly.Global;
  const seed = () =>
    Array.from(crypto.getRandomValues(new Uint8Array(64)), (x) => x.toString(16).padStart(2, "0"))
      .join("");
  const request = (req: unknown, first = false) => {
    const body = utf8.encode(JSON.stringify(req));
    stdin = new Uint8Array(REQUEST_HEADER + body.length);
    stdin.set(utf8.encode(String(body.length).padStart(REQUEST_HEADER, "0")));
    stdin.set(body, REQUEST_HEADER);
    out = [];
    vmarks = {};
    t0 = performance.now();
    try {
      if (first) wasi.start(instance);
      else (instance.exports._start as () => void)();
    } catch (e) {
      if (!(e instanceof Exit)) throw e;
    }
    return new TextDecoder().decode(new Uint8Array(out));
  };
  request({ op: "setup", code: "import json", value: false, seed: seed() }, true);
  new DataView(held.memory.buffer).setUint32(STARTED_FLAG, 0, true);
  const base = new Uint8Array(held.memory.buffer).slice();
  const sp0 = sp.value;
  for (let i = 0; i < N + 20; i++) {
    new Uint8Array(held.memory.buffer).set(base);
    sp.value = sp0;
    const reply = request({ op: "run", code: CODE, value: true, seed: seed() });
    if (!reply.includes('"stdout": "2\\n"')) throw new Error(`unexpected reply ${reply}`);
    if (i >= 20) { for (const [k, v] of Object.entries(vmarks)) add(v8, k, v); }
  }
}
console.log(`Under V8 (node:wasi, same module and driver), ${N} requests, p50 / p10:`);
for (const [k, v] of Object.entries(v8)) console.log(`  ${k.padEnd(32)} ${cell(v)}`);
