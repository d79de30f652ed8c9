/**
 * The isolated compile (issue 18, item 7) and the artifact cache's binding to its module (item 4):
 * the wasmtime engine compiles every module in the `hl-wasm-compile` child process; a child that
 * crashes, spins, allocates without bound or makes a forbidden system call is a typed error, and
 * this process, its other sandboxes and the next compile keep working, with no child process or
 * descriptor left behind. A cache file is accepted only for the module and engine it was made
 * from; a cache directory others could swap is not used.
 */
import assert from "node:assert/strict";
import { TimeoutError, WasmArtifactError, WasmModuleError, WasmSandbox } from "../../mod.ts";
import {
  artifactCacheDir,
  clearArtifactCache,
  codeImage,
  compileArtifact,
  type CompileFault,
  type CompileProgress,
  encodeCacheFile,
  engineHash,
  setCompileFaultForTests,
} from "../../src/wasm/compiler.ts";
import { digest } from "../../src/snapshot.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest, openFdCount } from "./_kvm.ts";

// Every test here uses its own artifact cache directory (under /tmp: sticky, so trusted).
const cacheDir = Deno.makeTempDirSync({ prefix: "hl-wasm-isolate-" });
Deno.env.set("HL_WASM_CACHE_DIR", cacheDir);
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(cacheDir, { recursive: true });
  } catch {
    // Already gone.
  }
});

let named = 0;

/** `wasm` plus a custom section: a module no cache has seen. */
function fresh(wasm: Uint8Array): Uint8Array {
  const name = new TextEncoder().encode(`hl-isolate-${Deno.pid}-${named++}`);
  const body = [name.length, ...name];
  return new Uint8Array([...wasm, 0, body.length, ...body]);
}

/** Children of this process (any state, zombies included), from every thread's list. */
function childProcesses(): number {
  let n = 0;
  for (const t of Deno.readDirSync("/proc/self/task")) {
    const text = Deno.readTextFileSync(`/proc/self/task/${t.name}/children`).trim();
    if (text !== "") n += text.split(/\s+/).length;
  }
  return n;
}

const FAULTS: [CompileFault, (e: unknown) => boolean][] = [
  ["crash", (e) => e instanceof WasmModuleError && /crashed .*SIGSEGV/.test(e.message)],
  ["loop", (e) => e instanceof TimeoutError],
  ["alloc", (e) => e instanceof WasmModuleError && /ran out of memory/.test(e.message)],
  ["syscall", (e) => e instanceof WasmModuleError && /seccomp .*SIGSYS/.test(e.message)],
];

kvmTest(
  "isolated compile: a compiler that crashes, spins, exhausts memory or breaks its filter is a typed error; all else keeps working",
  async () => {
    await using bystander = await WasmSandbox.create({
      module: fixture("fib"),
      engine: "wasmtime",
      cache: false,
    });
    assert.equal(await bystander.call("fib", 10), 55);
    // Counted with both caches empty (each holds a memfd per module), after one round of what
    // the loop does (the first restore opens /proc/self/pagemap once and keeps it).
    const settle = async () => {
      await WasmSandbox.clearCache();
      await clearArtifactCache();
    };
    {
      await using warm = await WasmSandbox.create({
        module: fresh(fixtureBytes("fib")),
        engine: "wasmtime",
      });
      assert.equal(await warm.call("fib", 20), 6765);
    }
    await settle();
    const fds = openFdCount();
    const children = childProcesses();
    try {
      for (const [fault, expected] of FAULTS) {
        setCompileFaultForTests(fault);
        const e = await WasmSandbox.create({
          module: fresh(fixtureBytes("fib")),
          engine: "wasmtime",
          // Only the spinning child waits for the deadline; the others end at once.
          initTimeoutMs: fault === "loop" ? 2_000 : 60_000,
        }).then(() => undefined, (e) => e);
        assert.ok(expected(e), `${fault}: ${e}`);
        setCompileFaultForTests("");
        // The next sandbox compiles (in a new child) and runs; the one from before still runs.
        await using next = await WasmSandbox.create({
          module: fresh(fixtureBytes("fib")),
          engine: "wasmtime",
        });
        assert.equal(await next.call("fib", 20), 6765, fault);
        assert.equal(await bystander.call("fib", 15), 610, fault);
        assert.equal(childProcesses(), children, `${fault}: a child process is left`);
      }
    } finally {
      setCompileFaultForTests("");
    }
    await settle();
    assert.equal(openFdCount(), fds, "descriptors leaked");
  },
);

kvmTest(
  "isolated compile: an invalid module is a WasmModuleError with wasmtime's message",
  async () => {
    // A valid header, then a type section that claims more than there is.
    const bad = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 1, 0x20, 1]);
    const e = await WasmSandbox.create({ module: bad, engine: "wasmtime" }).catch((e) => e);
    assert.ok(e instanceof WasmModuleError, String(e));
    assert.match(e.message, /invalid module: .+/);
    assert.doesNotMatch(e.message, /crashed|killed/);
  },
);

kvmTest(
  "isolated compile: progress reaches onProgress through the child's records and ends at every function",
  async () => {
    // 200 empty functions of type () -> (): the code section's count is what the child reports.
    const n = 200;
    const body = Array(n).fill([2, 0, 0x0b]).flat();
    const wasm = fresh(
      new Uint8Array([
        ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
        ...[1, 4, 1, 0x60, 0, 0],
        ...[3, 0xca, 0x01, 0xc8, 0x01, ...Array(n).fill(0)],
        ...[10, 0xda, 0x04, 0xc8, 0x01, ...body],
      ]),
    );
    const seen: CompileProgress[] = [];
    const artifact = await compileArtifact(wasm, false, undefined, (p) => seen.push(p));
    assert.ok(artifact.length > 0);
    const last = seen.at(-1);
    assert.ok(last, "no progress reported");
    assert.equal(last.fraction, 1);
    assert.equal(last.functions, n);
    assert.equal(last.translated, n);
    assert.ok(last.compiled >= n, `compiled ${last.compiled}`);
    assert.ok(seen.every((p) => p.fraction >= 0 && p.fraction <= 1));
  },
);

kvmTest(
  "artifact cache: A's intact file under B's name is refused and removed; B then compiles and runs B's code",
  async () => {
    const a = fresh(fixtureBytes("fib"));
    const b = fresh(fixtureBytes("arith"));
    const fileOf = async (wasm: Uint8Array) =>
      `${artifactCacheDir()}/${await digest(wasm)}-${engineHash(false)}.hlwa`;
    await clearArtifactCache();
    (await codeImage(a, false)).code.release(); // A compiled, now on disk
    await Deno.copyFile(await fileOf(a), await fileOf(b));
    await clearArtifactCache();
    const e = await WasmSandbox.create({ module: b, engine: "wasmtime", cache: false })
      .catch((e) => e);
    assert.ok(e instanceof WasmArtifactError, String(e));
    assert.match(e.message, /another module/);
    await assert.rejects(Deno.stat(await fileOf(b)), Deno.errors.NotFound);
    await using sb = await WasmSandbox.create({ module: b, engine: "wasmtime", cache: false });
    assert.equal(await sb.call("i32_add", 2, 3), 5);
    assert.ok(!sb.exports.some((x) => x.name === "fib"), "B runs B's code");

    // A file of the previous format (version 1: no module digest) is a miss, not an error.
    await Deno.writeFile(
      await fileOf(b),
      new Uint8Array([0x48, 0x4c, 0x57, 0x41, 1, 0, 0, 0, ...new Uint8Array(32), 1, 2, 3]),
    );
    await clearArtifactCache();
    const upgraded = await codeImage(b, false);
    assert.equal(upgraded.source, "compiled");
    upgraded.code.release();

    // Intact, right module, but recorded for the other engine settings: refused too.
    const fuel = await compileArtifact(b, true);
    await Deno.writeFile(
      await fileOf(b),
      await encodeCacheFile(fuel, await digest(b), engineHash(true)),
    );
    await clearArtifactCache();
    const e2 = await codeImage(b, false).catch((e) => e);
    assert.ok(e2 instanceof WasmArtifactError, String(e2));
    assert.match(e2.message, /other engine settings/);
    await assert.rejects(Deno.stat(await fileOf(b)), Deno.errors.NotFound);
    await clearArtifactCache();
  },
);

kvmTest(
  "artifact cache: a directory under a parent everyone may write (not sticky) is not used",
  async () => {
    const root = Deno.makeTempDirSync({ dir: cacheDir, prefix: "tree-" });
    const open = `${root}/open`;
    Deno.mkdirSync(open);
    Deno.chmodSync(open, 0o777);
    const dir = `${open}/cache/wasmtime`;
    Deno.env.set("HL_WASM_CACHE_DIR", dir);
    try {
      const wasm = fresh(fixtureBytes("fib"));
      for (let i = 0; i < 2; i++) {
        await clearArtifactCache();
        const image = await codeImage(wasm, false);
        assert.equal(image.source, "compiled", `attempt ${i}`);
        image.code.release();
      }
      await assert.rejects(Deno.stat(dir), Deno.errors.NotFound, "nothing was written there");
      // The same tree with the sticky bit (as /tmp): used.
      Deno.chmodSync(open, 0o1777);
      await clearArtifactCache();
      (await codeImage(wasm, false)).code.release();
      await clearArtifactCache();
      const again = await codeImage(wasm, false);
      assert.equal(again.source, "disk");
      again.code.release();
      await clearArtifactCache();
    } finally {
      Deno.env.set("HL_WASM_CACHE_DIR", cacheDir);
    }
  },
);
