/**
 * QuickJS-NG with the project's driver (target/runtimes/quickjs.wasm, tools/build_quickjs.sh) runs
 * in a WasmSandbox on both engines, driven only through WasmSandbox's public API: `_initialize`,
 * then the driver's exports by the bytes convention (docs/js.md, "Engine and driver ABI").
 * Skipped when the module is not built (no clang/wasi-libc).
 */
import assert from "node:assert/strict";
import { TimeoutError, WasmSandbox, type WasmSandboxOptions } from "../../mod.ts";
import { kvmTest } from "./_kvm.ts";

const MODULE = new URL("../../target/runtimes/quickjs.wasm", import.meta.url);
const BUILT = (() => {
  try {
    return Deno.statSync(MODULE).isFile;
  } catch {
    return false;
  }
})();
const ENGINES = ["wasmtime", "wasmi"] as const;
const enc = new TextEncoder();
const dec = new TextDecoder();

interface JsErrorInfo {
  name: string;
  message: string;
  stack: string;
}
interface Reply {
  value?: unknown;
  error?: JsErrorInfo;
  pending?: { id: number; fn: string; args: unknown[] }[];
}

type HostFns = Record<string, (...args: unknown[]) => unknown>;

/** A minimal host side of the driver ABI, for these tests (JsSandbox is the real one). */
class Qjs {
  readonly stdout: string[] = [];
  constructor(readonly w: WasmSandbox, readonly host: HostFns = {}) {}

  static async create(
    engine: (typeof ENGINES)[number],
    config: Record<string, unknown> = {},
    host: HostFns = {},
    options: Partial<WasmSandboxOptions> = {},
  ): Promise<Qjs> {
    const out: string[] = [];
    const w = await WasmSandbox.create({
      module: MODULE,
      engine,
      maxMemoryBytes: 64 << 20,
      timeoutMs: 20_000,
      wasi: { stdout: (b) => out.push(dec.decode(b)), randomSeed: new Uint8Array(32) },
      ...options,
    });
    const q = new Qjs(w, host);
    (q as { stdout: string[] }).stdout = out;
    await w.call("_initialize");
    const init = await q.bytes(
      "qjs_init",
      JSON.stringify({ hostFunctions: Object.keys(host), ...config }),
    );
    assert.deepEqual(init, {});
    return q;
  }

  async bytes(name: string, input: string, timeoutMs?: number): Promise<Reply> {
    const out = await this.w.callBytes(name, enc.encode(input), timeoutMs ? { timeoutMs } : {});
    return JSON.parse(dec.decode(out));
  }

  /** Runs an export, then answers host calls until the reply is a value or an error. */
  async run(name: string, input: string, timeoutMs?: number): Promise<Reply> {
    let reply = await this.bytes(name, input, timeoutMs);
    while (reply.pending) {
      const answers = [];
      for (const { id, fn, args } of reply.pending) {
        try {
          answers.push({ id, value: await this.host[fn](...args) });
        } catch (e) {
          const err = e as Error;
          answers.push({ id, error: { name: err.name, message: err.message } });
        }
      }
      reply = await this.bytes("qjs_resume", JSON.stringify(answers), timeoutMs);
    }
    return reply;
  }

  eval(source: string, timeoutMs?: number): Promise<Reply> {
    return this.run("qjs_eval", source, timeoutMs);
  }

  call(path: string, ...args: unknown[]): Promise<Reply> {
    return this.run("qjs_call", JSON.stringify([path, ...args]));
  }
}

function qjsTest(name: string, fn: (engine: (typeof ENGINES)[number]) => Promise<void>): void {
  for (const engine of ENGINES) {
    if (BUILT) kvmTest(`quickjs (${engine}): ${name}`, () => fn(engine));
    else Deno.test({ name: `quickjs (${engine}): ${name}`, ignore: true, fn() {} });
  }
}

qjsTest("eval, calls with JSON arguments, async functions, errors", async (engine) => {
  const q = await Qjs.create(engine);
  await using _ = q.w;
  assert.deepEqual(await q.eval("1 + 2"), { value: 3 });
  assert.deepEqual(await q.eval("undefined"), {});
  const defs = await q.eval(`
    function add(a, b) { return { sum: a.x + b, list: [a, b] }; }
    var lib = { twice(n) { return this.factor * n; }, factor: 2 };
    async function later(n) { await null; return n + 1; }
    function fails() { throw new TypeError("bad input"); }
  `);
  assert.deepEqual(defs, {});
  assert.deepEqual(await q.call("add", { x: 40 }, 2), { value: { sum: 42, list: [{ x: 40 }, 2] } });
  assert.deepEqual(await q.call("lib.twice", 21), { value: 42 });
  assert.deepEqual(await q.call("later", 41), { value: 42 });
  assert.deepEqual(await q.eval("Promise.resolve('settled')"), { value: "settled" });
  const err = (await q.call("fails")).error!;
  assert.equal(err.name, "TypeError");
  assert.equal(err.message, "bad input");
  assert.match(err.stack, /at fails \(<eval>:5/);
  assert.equal((await q.eval("Promise.reject(new RangeError('no'))")).error?.name, "RangeError");
  assert.equal((await q.call("nope")).error?.message, "nope is not a function");
  assert.equal((await q.eval("1n")).error?.name, "TypeError"); // a BigInt is not JSON
  assert.equal((await q.eval("new Promise(() => {})")).error?.name, "UnsettledPromiseError");
});

qjsTest("console.log reaches the WASI stdout sink", async (engine) => {
  const q = await Qjs.create(engine);
  await using _ = q.w;
  await q.eval("console.log('hello', 42, { a: [1] })");
  assert.equal(q.stdout.join(""), 'hello 42 {"a":[1]}\n');
});

qjsTest("host functions: JSON in and out, a host throw is a JS exception", async (engine) => {
  const calls: unknown[] = [];
  const q = await Qjs.create(engine, {}, {
    kvGet: (key) => {
      calls.push(key);
      return { key, v: "value" };
    },
    fail: () => {
      throw new RangeError("host says no");
    },
  });
  await using _ = q.w;
  await q.eval(`
    async function handler(k) { const r = await host.kvGet(k); return r.v + ":" + r.key; }
    async function both() { return Promise.all([host.kvGet("a"), host.kvGet("b")]); }
    async function caught() { try { await host.fail(); } catch (e) { return e.name + "/" + e.message; } }
  `);
  assert.deepEqual(await q.call("handler", "k1"), { value: "value:k1" });
  assert.deepEqual(await q.call("both"), {
    value: [{ key: "a", v: "value" }, { key: "b", v: "value" }],
  });
  assert.deepEqual(calls, ["k1", "a", "b"]);
  assert.deepEqual(await q.call("caught"), { value: "RangeError/host says no" });
});

qjsTest(
  "limits: deep recursion is a RangeError, a memory bomb an out-of-memory error",
  async (engine) => {
    const q = await Qjs.create(engine, { memoryLimit: 16 << 20 });
    await using _ = q.w;
    await q.eval("function r(n) { return n ? r(n - 1) + 1 : 0; }");
    assert.deepEqual(await q.call("r", 100), { value: 100 });
    const deep = (await q.call("r", 10_000)).error!;
    assert.equal(deep.name, "RangeError");
    assert.match(deep.message, /stack/);
    const bomb =
      (await q.eval("(() => { const a = []; for (;;) a.push('x'.repeat(4096) + a.length); })()"))
        .error!;
    assert.equal(bomb.name, "InternalError");
    assert.equal(bomb.message, "out of memory");
    // The engine is still usable: the bomb's memory was garbage.
    assert.deepEqual(await q.call("r", 100), { value: 100 });
  },
);

qjsTest("a runaway script times out and poisons the sandbox", async (engine) => {
  const q = await Qjs.create(engine);
  await using _ = q.w;
  await assert.rejects(q.eval("while (1) {}", 300), TimeoutError);
  assert.equal(q.w.poisoned, true);
});

qjsTest("snapshot after init and a source, restore, call again", async (engine) => {
  const q = await Qjs.create(engine);
  await using _ = q.w;
  await q.eval("var count = 0; function bump() { return ++count; }");
  const snap = await q.w.snapshot();
  assert.deepEqual(await q.call("bump"), { value: 1 });
  assert.deepEqual(await q.call("bump"), { value: 2 });
  await q.w.restore(snap);
  assert.deepEqual(await q.call("bump"), { value: 1 });
  // A new sandbox from the snapshot: QuickJS is there already, and Math.random can be re-seeded.
  await using w2 = await WasmSandbox.create({ snapshot: snap });
  const q2 = new Qjs(w2);
  await w2.call("qjs_seed", 1, 0);
  const a = await q2.eval("Math.random()");
  await w2.call("qjs_seed", 1, 0);
  assert.deepEqual(await q2.eval("Math.random()"), a);
  // The seed header (0xFF, the state little-endian) before a qjs_eval or qjs_call input seeds as
  // qjs_seed does, in the same entry; text without one is not re-seeded.
  const seeded = async (name: string, lo: number, hi: number, text: string) => {
    const input = new Uint8Array(9 + text.length);
    input[0] = 0xff;
    new DataView(input.buffer).setUint32(1, lo, true);
    new DataView(input.buffer).setUint32(5, hi, true);
    input.set(enc.encode(text), 9);
    return JSON.parse(dec.decode(await w2.callBytes(name, input)));
  };
  assert.deepEqual(await seeded("qjs_eval", 1, 0, "Math.random()"), a);
  assert.deepEqual(await seeded("qjs_call", 1, 0, '["Math.random"]'), a);
  assert.notDeepEqual(await q2.eval("Math.random()"), a);
  await w2.call("qjs_seed", 7, 0x9e3779b9);
  const b = await q2.eval("Math.random()");
  assert.deepEqual(await seeded("qjs_eval", 7, 0x9e3779b9, "Math.random()"), b);
  assert.deepEqual(await q2.call("bump"), { value: 1 });
});

/** The driver's largest `stackLimit` (its 1 MiB linked stack less 128 KiB; docs/js.md). */
const MAX_STACK_LIMIT = 896 * 1024;

// QuickJS's recursion in C over nested data takes far more of the Wasm engine's stack (wasmtime:
// the guest's native stack; wasmi: its value stack and frames) per byte of its own linear-memory
// stack than JS calls do; the guests' limits are sized so that QuickJS's own check fires first
// even at the largest stack limit (docs/js.md, "Limits"). A trap instead would leave QuickJS in an
// undefined state; the engine is used again after the RangeErrors to show there was none.
qjsTest(
  "recursion over nested data is a RangeError, at the default and largest limit",
  async (engine) => {
    for (const stackLimit of [undefined, MAX_STACK_LIMIT]) {
      const q = await Qjs.create(engine, { stackLimit });
      await using _ = q.w;
      for (
        const source of [
          "JSON.parse('['.repeat(100000) + ']'.repeat(100000))",
          `JSON.parse('{"a":'.repeat(100000) + '1' + '}'.repeat(100000))`,
          "eval('('.repeat(100000) + '1' + ')'.repeat(100000))",
          "eval('['.repeat(100000) + ']'.repeat(100000))",
          "function r(n) { return n ? r(n - 1) + 1 : 0; } r(100000)",
        ]
      ) {
        const reply = await q.eval(source);
        assert.equal(reply.error?.name, "RangeError", `${source}: ${JSON.stringify(reply)}`);
      }
      assert.deepEqual(await q.eval("JSON.stringify(JSON.parse('[[[1]]]'))"), { value: "[[[1]]]" });
    }
    // JSON.stringify checks each level against every level above it for a cycle (quadratic in the
    // depth: 100,000 levels reach the default limit after ~50 s on wasmi), so this case runs at a
    // smaller limit; its engine-stack use per byte is within the figures of the cases above.
    const q = await Qjs.create(engine, { stackLimit: 128 * 1024 });
    await using _ = q.w;
    const nested = await q.eval(
      "let o = []; for (let i = 0; i < 100000; i++) o = [o]; JSON.stringify(o).length",
    );
    assert.equal(nested.error?.name, "RangeError", JSON.stringify(nested));
    assert.deepEqual(await q.eval("JSON.stringify([[1]])"), { value: "[[1]]" });
  },
);
