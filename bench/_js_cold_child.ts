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
// Mode "phases": the same create + call, with the time spent inside the VM primitives summed
// (MicroVm's methods, snapshot loading: native work, guest runs and their first-use costs); the
// rest of `ms` is this library's JavaScript and Deno (first runs compile it). Not the timed mode.
const phases: Record<string, number> = {};
if (Deno.args[0] === "phases") {
  const { MicroVm, MemorySnapshotHandle } = await import("../src/ffi/vm.ts");
  const timed = (obj: Record<string, unknown>, key: string, label: string) => {
    const f = obj[key] as (...a: unknown[]) => unknown;
    obj[key] = function (this: unknown, ...a: unknown[]) {
      const t = performance.now();
      const add = () => phases[label] = (phases[label] ?? 0) + performance.now() - t;
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
  timed(MemorySnapshotHandle as unknown as Record<string, unknown>, "fromFile", "snapshotLoad");
}
const t0 = performance.now();
const js = await JsSandbox.create({
  source: "function handler(req) { return { sum: req.a + req.b }; }",
});
const r = await js.call("handler", { a: 1, b: 2 }) as { sum: number };
const ms = performance.now() - t0;
if (r.sum !== 3) throw new Error("wrong answer");
await js.dispose();
const { startSnapshotStats } = await import("../src/start_snapshots.ts");
console.log(JSON.stringify({ ms, importMs, ...binds, ...phases, ...startSnapshotStats() }));
