/**
 * `WasmSandbox.runWasi` with a per-run WASI context (issue 24): each run of a WASI command on a
 * sandbox restored to its post-instantiate snapshot sees its own args, env, stdin, sinks and a
 * fresh random stream, never the previous run's; a second such run without a restore is a typed
 * error with no effect; hostile contexts (oversized, NUL, bad names) are `ArgumentError` before
 * the VM is entered, and malformed `run_wasi` requests are `STATE` errors in the guest itself.
 * Both engines.
 */
import assert from "node:assert/strict";
import {
  ArgumentError,
  GuestError,
  Sandbox,
  WasmSandbox,
  type WasmSandboxOptions,
  WasmSandboxPool,
} from "../../mod.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import { engineTest, kvmTest, WASM_ENGINES } from "./_kvm.ts";
import { findGuest } from "../../src/artifacts.ts";
import { Writer } from "../../src/wasm/codec.ts";
import { runtimeHostFunctions } from "../../src/wasm/imports.ts";
import { WasiRuntime } from "../../src/wasm/wasi.ts";

const decoder = new TextDecoder();

/** A sink and what it received. */
function sink(): { write: (b: Uint8Array) => void; text: () => string } {
  let text = "";
  return { write: (b) => void (text += decoder.decode(b)), text: () => text };
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  const create = (o: WasmSandboxOptions) => WasmSandbox.create({ engine, cache: false, ...o });

  test("wasi run context: each run after a restore sees its own args, env, sinks, random", async () => {
    const base = sink();
    await using w = await create({
      module: fixture("wasi_hello"),
      wasi: {
        args: ["hello", "base"],
        env: { GREETING: "base" },
        stdout: base.write,
        stderr: () => {},
        randomSeed: new Uint8Array(32).fill(1),
      },
    });
    await using before = await w.snapshot();
    const one = sink();
    const r1 = await w.runWasi({
      args: ["hello", "one"],
      env: { GREETING: "one" },
      stdout: one.write,
    });
    assert.deepEqual(r1, { exitCode: 7 });
    assert.match(one.text(), /^hello from wasi, argc=2\nargv\[0\]=hello\nargv\[1\]=one\n/);
    assert.match(one.text(), /\nGREETING=one\n/);
    assert.equal(base.text(), "", "the run's sink got the output, not the sandbox's");

    await w.restore(before);
    const two = sink();
    assert.deepEqual(await w.runWasi({ env: { OTHER: "x" }, stdout: two.write }), { exitCode: 7 });
    // args not given: the sandbox's; env given: replaced whole (no GREETING at all).
    assert.match(two.text(), /argv\[1\]=base\n/);
    assert.match(two.text(), /\nGREETING=\(unset\)\n/);
    const random = (s: string) => s.match(/random=([0-9a-f]{16})/)![1];
    assert.notEqual(random(one.text()), random(two.text()), "a fresh random stream per run");

    // A fixed per-run seed gives the same stream each time.
    const seeded: string[] = [];
    for (let i = 0; i < 2; i++) {
      await w.restore(before);
      const s = sink();
      await w.runWasi({ stdout: s.write, randomSeed: new Uint8Array(32).fill(9) });
      seeded.push(random(s.text()));
    }
    assert.equal(seeded[0], seeded[1]);

    // Without a per-run context, runWasi is the plain `_start` with the sandbox's own context.
    await w.restore(before);
    assert.deepEqual(await w.runWasi(), { exitCode: 7 });
    assert.match(base.text(), /argv\[1\]=base\n[^]*GREETING=base\n/);
  });

  test("wasi run context: a second run without a restore is ArgumentError, with no effect", async () => {
    await using w = await create({
      module: fixture("wasi_hello"),
      wasi: { stdout: () => {}, stderr: () => {} },
    });
    await using before = await w.snapshot();
    await w.runWasi({ env: { A: "1" } });
    const again = sink();
    const exitsBefore = w.stats().exits;
    await assert.rejects(() => w.runWasi({ env: { A: "2" }, stdout: again.write }), (e) => {
      assert.ok(e instanceof ArgumentError, String(e));
      assert.match(e.message, /_start already ran/);
      return true;
    });
    assert.equal(again.text(), "", "no code of the module ran");
    assert.equal(w.poisoned, false);
    // A plain run entered `_start` too: a per-run run after it is refused the same way.
    await w.restore(before);
    await w.runWasi();
    await assert.rejects(() => w.runWasi({ env: {} }), ArgumentError);
    await w.restore(before);
    const ok = sink();
    assert.deepEqual(await w.runWasi({ env: { GREETING: "back" }, stdout: ok.write }), {
      exitCode: 7,
    });
    assert.match(ok.text(), /GREETING=back/);
    assert.ok(w.stats().exits > exitsBefore);
  });

  test("wasi run context: per-run stdin, never the previous run's", async () => {
    await using w = await create({
      module: fixture("wasi_files"),
      wasi: { args: ["wasi_files", "count"], stdin: "sandbox's own", stdout: () => {} },
    });
    await using before = await w.snapshot();
    const runs: string[] = [];
    for (const stdin of ["a".repeat(100_000), "", new TextEncoder().encode("xyz")]) {
      await w.restore(before);
      const s = sink();
      assert.deepEqual(await w.runWasi({ stdin, stdout: s.write }), { exitCode: 0 });
      runs.push(s.text());
    }
    assert.match(runs[0], /^count bytes=100000 /);
    assert.match(runs[1], /^count bytes=0 sum=0\n$/);
    assert.match(runs[2], /^count bytes=3 /);
  });

  test("wasi run context: a pool's runs each see their own env", async () => {
    await using pool = await WasmSandboxPool.create({
      module: fixture("wasi_hello"),
      engine,
      size: 1,
      wasi: { stdout: () => {}, stderr: () => {} },
    });
    for (const name of ["first", "second", "third"]) {
      const s = sink();
      const r = await pool.run((w) => w.runWasi({ env: { GREETING: name }, stdout: s.write }));
      assert.deepEqual(r, { exitCode: 7 });
      assert.match(s.text(), new RegExp(`\\nGREETING=${name}\\n`));
    }
  });

  test("wasi run context: hostile contexts are ArgumentError before the VM is entered", async () => {
    await using w = await create({
      module: fixture("wasi_hello"),
      wasi: { stdout: () => {}, stderr: () => {} },
    });
    const exits = w.stats().exits;
    const bad: [string, Parameters<WasmSandbox["runWasi"]>[0]][] = [
      ["oversized env", { env: { BIG: "x".repeat(1024 * 1024) } }],
      ["too many env entries", {
        env: Object.fromEntries([...Array(70_000)].map((_, i) => [`K${i}`, ""])),
      }],
      ["oversized args", { args: ["a".repeat(600_000), "b".repeat(600_000)] }],
      ["NUL in a value", { env: { A: "x\0y" } }],
      ["NUL in an arg", { args: ["a\0"] }],
      ["= in a name", { env: { "A=B": "c" } }],
      ["empty name", { env: { "": "c" } }],
      ["a value that is not a string", { env: { A: 1 as unknown as string } }],
      ["args not an array", { args: "x" as unknown as string[] }],
      ["a short seed", { randomSeed: new Uint8Array(8) }],
      ["a sink that is not a function", { stdout: 1 as unknown as () => void }],
    ];
    for (const [what, options] of bad) {
      await assert.rejects(() => w.runWasi(options), ArgumentError, what);
    }
    assert.equal(w.stats().exits, exits, "no request reached the VM");
    assert.equal(w.poisoned, false);
    assert.deepEqual(await w.runWasi({ env: { GREETING: "fine" } }), { exitCode: 7 });
    // A sandbox without WASI cannot be given a context.
    await using plain = await create({ module: fixture("fib") });
    await assert.rejects(() => plain.runWasi({ env: {} }), ArgumentError);
  });
}

kvmTest(
  "run_wasi in the wasm-runtime guest: a malformed request is STATE, no module code runs",
  async () => {
    // The guest function itself, on a bare runtime guest with wasi_hello instantiated (WASI on).
    let output = 0;
    const wasi = new WasiRuntime({ stdout: () => output++, stderr: () => output++ }, "m.wasm", []);
    await using sb = await Sandbox.create({
      guest: findGuest("wasm-runtime"),
      heapSize: 64 << 20,
      hostFunctions: runtimeHostFunctions(() => new Uint8Array(0), () => wasi),
    });
    const load = new Writer();
    load.u64(0n); // fuel off
    load.u32(0); // default recursion depth
    await sb.call("load", fixtureBytes("wasi_hello"), load.finish());
    const inst = new Writer();
    inst.u64(0n);
    inst.u64(0n);
    inst.u8(1);
    wasi.encode(inst);
    await sb.call("instantiate", inst.finish());
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const cat = (...parts: Uint8Array[]) => new Uint8Array(parts.flatMap((p) => [...p]));
    const malformed: [string, Uint8Array][] = [
      ["empty", new Uint8Array(0)],
      ["an unknown flag", new Uint8Array([8])],
      ["a count past the end", cat(new Uint8Array([1]), u32(1_000_000))],
      ["an entry past the end", cat(new Uint8Array([2]), u32(1), u32(100), new Uint8Array(3))],
      ["a short seed", cat(new Uint8Array([4]), new Uint8Array(31))],
      ["trailing bytes", cat(new Uint8Array([0]), new Uint8Array(1))],
    ];
    for (const [what, config] of malformed) {
      await assert.rejects(() => sb.call("run_wasi", config), (e) => {
        assert.ok(e instanceof GuestError, `${what}: ${e}`);
        assert.equal(e.code, 1002, what); // STATE
        return true;
      });
    }
    assert.equal(output, 0, "no module code ran");
    // A well-formed one runs _start (exit 7 is EXIT, 1003); a second is BAD_ARGS (1005).
    const ok = cat(new Uint8Array([2]), u32(1), u32(3), new TextEncoder().encode("A=b"));
    for (const code of [1003, 1005]) {
      await assert.rejects(() => sb.call("run_wasi", ok), (e) => {
        assert.ok(e instanceof GuestError && e.code === code, String(e));
        return true;
      });
    }
    assert.ok(output > 0);
  },
);
