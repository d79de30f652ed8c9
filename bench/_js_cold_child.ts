// Child of bench/js_cold.ts: one cold JsSandbox.create + first call in this new process, timed
// after the library's import (which is reported apart: it is Deno loading our modules); prints
// {"ms": ..., "importMs": ..., "dlopens": ..., "symbols": ..., ...the start-snapshot stats}.
// `dlopens`/`symbols`: the `Deno.dlopen` calls of the VM library (libhl_rust_vmm) in this process
// and the symbols they bound (Deno compiles a trampoline for each; docs/js.md "Cold start").
const binds = { dlopens: 0, symbols: 0 };
const dlopen = Deno.dlopen;
Deno.dlopen = ((path: string | URL, table: Deno.ForeignLibraryInterface) => {
  if (String(path).includes("hl_rust_vmm")) {
    binds.dlopens++;
    binds.symbols += Object.keys(table).length;
  }
  return dlopen(path, table);
}) as typeof Deno.dlopen;
const i0 = performance.now();
const { JsSandbox } = await import("../mod.ts");
const importMs = performance.now() - i0;
if (Deno.args[0] === "floor") {
  console.log(JSON.stringify({ ms: 0, importMs }));
  Deno.exit(0);
}
// Mode "phases" (and "inproc"): the same create + call, with the time spent inside the VM primitives summed
// (MicroVm's methods, snapshot loading: native work, guest runs and their first-use costs); the
// rest of `ms` is this library's JavaScript and Deno (first runs compile it). Not the timed mode.
const phases: Record<string, number> = {};
if (Deno.args[0] === "phases" || Deno.args[0] === "inproc") {
  const { MicroVm, MemorySnapshotHandle } = await import("../src/ffi/vm.ts");
  const timed = (obj: Record<string, unknown>, key: string, label: string) => {
    const f = obj[key] as (...a: unknown[]) => unknown;
    obj[key] = function (this: unknown, ...a: unknown[]) {
      const t = performance.now();
      const add = () => {
        const d = performance.now() - t;
        phases[label] = (phases[label] ?? 0) + d;
        // Each primitive apart too ("vmSetup.createVcpu", ...): which one a fresh process pays for.
        phases[`${label}.${key}`] = (phases[`${label}.${key}`] ?? 0) + d;
      };
      const r = f.apply(this, a);
      if (r instanceof Promise) return r.finally(add);
      add();
      return r;
    };
  };
  const proto = MicroVm.prototype as unknown as Record<string, unknown>;
  for (const k of ["mapCode", "mapSnapshot", "createVcpu", "setState", "beginCall"]) {
    timed(proto, k, "vmSetup");
  }
  timed(proto, "run", "guestRuns");
  timed(MicroVm as unknown as Record<string, unknown>, "create", "vmSetup");
  for (const k of ["fromFile", "fromFileKnown"]) {
    timed(MemorySnapshotHandle as unknown as Record<string, unknown>, k, "snapshotLoad");
  }
}
const SOURCE = "function handler(req) { return { sum: req.a + req.b }; }";
if (Deno.args[0] === "inproc") {
  // Mode "inproc [n]": cold creates inside a process that has used the library (issue 20's
  // anchors time a cold create in a benchmark loop, not a new process). One create + call first
  // (this process's first use: V8 compiles our code, the VM library is bound), then n times: the
  // kind's cache of start states emptied (JsSandbox.clearCache releases its snapshot: nothing of
  // the last create's start state stays in memory), then create + first call timed, each of which
  // must have read the start snapshot from disk (the disk-hit counter moves by one, and the
  // sandbox is not from the in-memory cache) or the run fails.
  const { startSnapshotStats } = await import("../src/start_snapshots.ts");
  const n = Number(Deno.args[1] ?? 20);
  const first = await JsSandbox.create({ source: SOURCE });
  await first.call("handler", { a: 1, b: 2 });
  await first.dispose();
  const times: number[] = [];
  const parts: Record<string, number>[] = [];
  for (let i = 0; i < n; i++) {
    await JsSandbox.clearCache();
    for (const k of Object.keys(phases)) delete phases[k];
    const hits = startSnapshotStats().diskHits;
    const t = performance.now();
    const js = await JsSandbox.create({ source: SOURCE });
    const r = await js.call("handler", { a: 1, b: 2 }) as { sum: number };
    times.push(performance.now() - t);
    parts.push({ ...phases });
    if (r.sum !== 3) throw new Error("wrong answer");
    if (startSnapshotStats().diskHits !== hits + 1 || js.fromCache) {
      throw new Error("a cold create did not read its start snapshot from disk");
    }
    await js.dispose();
  }
  console.log(JSON.stringify({ ms: 0, importMs, times, parts, ...startSnapshotStats() }));
  Deno.exit(0);
}
// The JS thread's own CPU time over the create + call (first field of its schedstat, ns): less
// swayed by other processes than wall time on a shared machine. Compilation, the library's
// JavaScript and synchronous FFI calls run here; native work on Deno's blocking threads does not.
const threadCpuNs = () =>
  Number(Deno.readTextFileSync("/proc/thread-self/schedstat").split(" ")[0]);
// Markers for the "compiles" count (bench/js_cold.ts runs this mode once more with V8's function
// log): V8 logs each marker's first compilation, so what lies between them is the create + call.
function createStarts(): void {}
function callEnded(): void {}
createStarts();
const c0 = threadCpuNs();
const t0 = performance.now();
const js = await JsSandbox.create({ source: SOURCE });
const r = await js.call("handler", { a: 1, b: 2 }) as { sum: number };
const ms = performance.now() - t0;
const cpuMs = (threadCpuNs() - c0) / 1e6;
callEnded();
if (r.sum !== 3) throw new Error("wrong answer");
await js.dispose();
const { startSnapshotStats } = await import("../src/start_snapshots.ts");
console.log(JSON.stringify({ ms, cpuMs, importMs, ...binds, ...phases, ...startSnapshotStats() }));
