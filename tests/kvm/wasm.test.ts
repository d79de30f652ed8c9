import assert from "node:assert/strict";
import type { WasmSnapshotSandboxOptions } from "../../mod.ts";
import { ArgumentError, CancelledError, SandboxPoisonedError, TimeoutError } from "../../mod.ts";
import {
  WasiExitError,
  WasmLinkError,
  WasmModuleError,
  WasmSandbox,
  type WasmSandboxOptions,
  WasmTrapError,
} from "../../mod.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import { engineTest, WASM_ENGINES } from "./_kvm.ts";
import { ProtocolError } from "../../src/errors.ts";
import { Sandbox } from "../../src/sandbox.ts";
import { ImportTable } from "../../src/wasm/imports.ts";

/** Host functions satisfying values.wasm's imports; `logged` collects env.log's arguments. */
function valuesImports(logged: number[]): WasmSandboxOptions["hostFunctions"] {
  return {
    env: {
      log: { params: ["i32"], result: "void", fn: (x: number) => void logged.push(x) },
      add64: { params: ["i64", "i64"], result: "i64", fn: (a: bigint, b: bigint) => a + b },
      pair: {
        params: ["f64"],
        result: ["i32", "f32"],
        fn: (x: number) => [Math.trunc(x), x / 2],
      },
      fail: {
        params: [],
        result: "void",
        fn: () => {
          throw new RangeError("host says no");
        },
      },
    },
  };
}

async function trapOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    if (e instanceof WasmTrapError) {
      // One "wasm trap (kind): " prefix: the engine's own text follows it (wasmtime's Display of a
      // trap starts with "wasm trap: " since its `gc` feature; the guest strips it).
      assert.doesNotMatch(e.message, /\): wasm trap/, e.message);
      return e.trap;
    }
    throw e;
  }
  throw new Error("expected a trap");
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  const create = ((o: WasmSandboxOptions | WasmSnapshotSandboxOptions) =>
    WasmSandbox.create("snapshot" in o ? o : { engine, ...o })) as typeof WasmSandbox.create;
  const open = (name: string, options: Partial<WasmSandboxOptions> = {}): Promise<WasmSandbox> =>
    WasmSandbox.create({ module: fixture(name), engine, ...options });
  test("wasm: fib from a path, bytes and a URL; exports are described", async () => {
    await using a = await open("fib");
    assert.equal(await a.call("fib", 20), 6765);
    assert.equal(await a.call("noop"), undefined);
    assert.deepEqual(
      a.exports.find((e) =>
        e.name === "fib"
      ),
      { module: "", name: "fib", kind: "function", type: { params: ["i32"], results: ["i32"] } },
    );
    await using b = await create({ module: fixtureBytes("fib") });
    assert.equal(await b.call("fib", 10), 55);
    await using c = await create({ module: new URL(`file://${fixture("fib")}`) });
    assert.equal(await c.call("checksum", 0), 0);
  });

  test("wasm: i32/i64/f32/f64 marshalling and multi-value results", async () => {
    await using w = await open("values", { hostFunctions: valuesImports([]) });
    assert.equal(await w.call("id_i32", -5), -5);
    assert.equal(await w.call("id_i32", 2 ** 32 - 1), -1); // wrapped like ToInt32
    assert.equal(await w.call("id_i32", -(2 ** 31)), -(2 ** 31));
    assert.equal(await w.call("id_i64", -(2n ** 63n)), -(2n ** 63n));
    assert.equal(await w.call("id_i64", 2n ** 64n - 1n), -1n);
    assert.equal(await w.call("id_f32", 0.1), Math.fround(0.1));
    assert.ok(Object.is(await w.call("id_f64", -0), -0));
    assert.ok(Number.isNaN(await w.call("id_f64", NaN)));
    assert.equal(await w.call("id_f64", Infinity), Infinity);
    assert.deepEqual(await w.call("swap", 7, 8n, 2.5), [2.5, 8n, 7]);
    assert.equal(await w.call("nothing"), undefined);
  });

  test("wasm: bad arguments are ArgumentErrors before the VM is entered", async () => {
    await using w = await open("values", { hostFunctions: valuesImports([]) });
    const bad: [string, unknown[]][] = [
      ["id_i32", []],
      ["id_i32", [1, 2]],
      ["id_i32", [1.5]],
      ["id_i32", [2 ** 32]],
      ["id_i32", ["1"]],
      ["id_i32", [NaN]],
      ["id_i64", [1]],
      ["id_i64", [2n ** 64n]],
      ["id_f64", [1n]],
      ["takes_ref", [null]],
      ["no_such_export", []],
    ];
    for (const [name, args] of bad) {
      await assert.rejects(w.call(name, ...args), ArgumentError, `${name}(${args})`);
    }
    assert.equal(await w.call("id_i32", 3), 3); // still usable
    assert.equal(w.poisoned, false);
  });

  test(
    "wasm: host imports get and return typed values; a throw traps with kind host",
    async () => {
      const logged: number[] = [];
      await using w = await open("values", { hostFunctions: valuesImports(logged) });
      await w.call("log_twice", 41);
      assert.deepEqual(logged, [41, 42]);
      assert.equal(await w.call("add64", 2n ** 62n, 2n ** 62n), -(2n ** 63n));
      assert.deepEqual(await w.call("pair", 9.5), [9, 4.75]);
      const err = await w.call("fail").catch((e) => e);
      assert.ok(err instanceof WasmTrapError);
      assert.equal(err.trap, "host");
      assert.match(err.message, /host says no/);
      assert.ok(err.cause instanceof RangeError);
      assert.equal(await w.call("id_i32", 1), 1); // usable after the trap
    },
  );

  test("wasm: asynchronous host imports", async () => {
    await using w = await open("values", {
      hostFunctions: {
        env: {
          ...valuesImports([])!.env,
          add64: {
            params: ["i64", "i64"],
            result: "i64",
            fn: async (a: bigint, b: bigint) => {
              await new Promise((r) => setTimeout(r, 5));
              return a * b;
            },
          },
        },
      },
    });
    assert.equal(await w.call("add64", 6n, 7n), 42n);
  });

  test("wasm: a host function returning a wrong value traps with kind host", async () => {
    await using w = await open("values", {
      hostFunctions: {
        env: {
          ...valuesImports([])!.env,
          add64: { params: ["i64", "i64"], result: "i64", fn: () => 1 },
          pair: { params: ["f64"], result: ["i32", "f32"], fn: () => 1 },
        },
      },
    });
    assert.equal(await trapOf(w.call("add64", 1n, 2n)), "host");
    assert.equal(await trapOf(w.call("pair", 1)), "host");
  });

  test("wasm: a host function's thrown value is its trap's cause, itself", async () => {
    const thrown = [new TypeError("sync failure"), new Error("async failure"), { code: 7 }];
    let next = 0;
    await using w = await open("values", {
      hostFunctions: {
        env: {
          ...valuesImports([])!.env,
          fail: {
            params: [],
            result: "void",
            fn: () => {
              throw thrown[next++];
            },
          },
          add64: {
            params: ["i64", "i64"],
            result: "i64",
            fn: () => Promise.reject(thrown[next++]),
          },
          pair: { params: ["f64"], result: ["i32", "f32"], fn: () => [1] },
        },
      },
    });
    const sync = await w.call("fail").catch((e) => e);
    assert.ok(sync instanceof WasmTrapError);
    assert.equal(sync.trap, "host");
    assert.equal(sync.cause, thrown[0]); // the very object, not a copy parsed from a message
    assert.equal(sync.message, "wasm trap (host): host function env.fail threw: sync failure");
    const rejected = await w.call("add64", 1n, 2n).catch((e) => e);
    assert.equal(rejected.trap, "host");
    assert.equal(rejected.cause, thrown[1]);
    assert.match(rejected.message, /host function env\.add64 threw: async failure/);
    const plain = await w.call("fail").catch((e) => e);
    assert.equal(plain.cause, thrown[2]);
    // A result of the wrong shape: the refusal is the cause.
    const shape = await w.call("pair", 1).catch((e) => e);
    assert.equal(shape.trap, "host");
    assert.ok(shape.cause instanceof ArgumentError);
    assert.match(shape.message, /must return an array of 2 values/);
    assert.equal(await w.call("id_i32", 5), 5); // usable after each
  });

  test("wasm: missing, mistyped and unsupported imports are WasmLinkErrors", async () => {
    const missing = await open("values").catch((e) => e);
    assert.ok(missing instanceof WasmLinkError);
    assert.equal(missing.importName, "env.log");
    assert.match(missing.message, /missing import env\.log: \(i32\) -> \(\)/);

    const imports = valuesImports([])!;
    const mistyped = await open("values", {
      hostFunctions: {
        env: { ...imports.env, add64: { params: ["i64", "i32"], result: "i64", fn: () => 0n } },
      },
    }).catch((e) => e);
    assert.ok(mistyped instanceof WasmLinkError);
    assert.equal(mistyped.importName, "env.add64");
    assert.match(mistyped.message, /\(i64, i64\) -> \(i64\).*\(i64, i32\) -> \(i64\)/);

    const memory = await open("bad_imports").catch((e) => e);
    assert.ok(memory instanceof WasmLinkError);
    assert.equal(memory.importName, "env.mem");

    const noWasi = await open("wasi_return", { wasi: false }).catch((e) => e);
    assert.ok(noWasi instanceof WasmLinkError);
    assert.match(noWasi.message, /wasi_snapshot_preview1/);
  });

  test("wasm: invalid modules are WasmModuleErrors; bad options ArgumentErrors", async () => {
    await assert.rejects(
      create({ module: new Uint8Array([1, 2, 3]) }),
      WasmModuleError,
    );
    // Valid header, invalid body: reported by the guest's validator.
    const broken = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0x01, 0x05, 0x01, 0x60]);
    await assert.rejects(create({ module: broken }), WasmModuleError);
    // A type error in a function body (i32.add of an i64) fails validation.
    const badBody = new Uint8Array([
      ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
      ...[0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f], // type: () -> i32
      ...[0x03, 0x02, 0x01, 0x00], // func 0: type 0
      ...[0x0a, 0x09, 0x01, 0x07, 0x00, 0x42, 0x01, 0x41, 0x01, 0x6a, 0x0b], // i64 + i32
    ]);
    const err = await create({ module: badBody }).catch((e) => e);
    assert.ok(err instanceof WasmModuleError, String(err));
    await assert.rejects(create({ module: "/nonexistent.wasm" }), ArgumentError);
    await assert.rejects(open("fib", { fuel: -1 }), ArgumentError);
    await assert.rejects(
      open("fib", {
        hostFunctions: { env: { f: { params: ["u32" as "i32"], result: "void", fn: () => {} } } },
      }),
      ArgumentError,
    );
  });

  test("wasm: every trap kind comes back typed; the sandbox stays usable", async () => {
    await using w = await open("traps");
    assert.equal(await w.call("started"), 42); // the start function ran
    const cases: [string, unknown[], string][] = [
      ["unreachable", [], "unreachable"],
      ["div_zero", [1], "integer_divide_by_zero"],
      ["overflow", [], "integer_overflow"],
      ["bad_convert", [], "invalid_conversion_to_integer"],
      ["oob", [], "memory_out_of_bounds"],
      ["recurse", [0], "stack_overflow"],
      ["indirect_mismatch", [], "indirect_call_type_mismatch"],
      ["indirect_null", [], "indirect_call_to_null"],
      ["indirect_oob", [], "table_out_of_bounds"],
    ];
    for (const [name, args, kind] of cases) {
      assert.equal(await trapOf(w.call(name, ...args)), kind, name);
    }
    assert.equal(await w.call("indirect_ok"), 1);
    assert.equal(w.poisoned, false);
  });

  test("wasm: deep recursion is stack_overflow with a small heap and any stack", async () => {
    // wasmi keeps its frames in the guest heap and grows them infallibly (out of heap is a guest
    // panic), so its default depth is scaled to the heap; wasmtime runs Wasm frames on the guest
    // stack and derives its limit from it (capped at 64 MiB).
    for (
      const options of [
        { heapSize: 4 << 20 },
        { heapSize: 8 << 20 },
        { stackSize: 1 << 20 },
        { stackSize: 96 << 20 },
      ]
    ) {
      await using w = await open("traps", options);
      assert.equal(await trapOf(w.call("recurse", 0)), "stack_overflow", JSON.stringify(options));
      assert.equal(await w.call("started"), 42);
    }
  });

  test("wasm: fuel metering stops runaway loops (out_of_fuel) per call", async () => {
    await using w = await open("traps", { fuel: 100_000 });
    assert.equal(await w.call("count", 1000), 1000);
    const used = await w.fuelConsumed();
    assert.ok(used > 0n && used < 100_000n, `fuel used ${used}`);
    assert.equal(await trapOf(w.call("spin")), "out_of_fuel");
    assert.equal(await trapOf(w.call("count", 10_000_000)), "out_of_fuel");
    // Fuel is refilled for each call.
    assert.equal(await w.call("count", 1000), 1000);
  });

  test("wasm: a timeout stops a spinning module and poisons the sandbox", async () => {
    await using w = await open("traps", { timeoutMs: 300 });
    await assert.rejects(w.call("spin"), TimeoutError);
    assert.equal(w.poisoned, true);
    await assert.rejects(w.call("started"), SandboxPoisonedError);
  });

  test("wasm: an AbortSignal cancels a call", async () => {
    await using w = await open("traps");
    const controller = new AbortController();
    const call = w.callWithOptions({ signal: controller.signal }, "spin");
    setTimeout(() => controller.abort(new Error("stop")), 200);
    await assert.rejects(call, CancelledError);
    assert.equal(w.poisoned, true);
  });

  test("wasm: memory and table limits", async () => {
    // 1024 initial pages (64 MiB) exceed the default 16 MiB limit: instantiation fails.
    await assert.rejects(open("limits"), WasmLinkError);
    // Growth stops at maxMemoryBytes (memory.grow returns -1) and at the declared maximum.
    await using w = await open("arith", { maxMemoryBytes: 3 * 65536 });
    assert.equal(await w.call("grow", 2), 1);
    assert.equal(await w.call("grow", 1), -1);
    assert.equal(await w.call("size"), 3);
    await using t = await open("traps");
    assert.equal(await t.call("grow", 1), 1);
    assert.equal(await t.call("grow", 1), -1); // (memory 1 2)
    // A table of 4 elements against a limit of 2.
    await assert.rejects(open("traps", { maxTableElements: 2 }), WasmLinkError);
  });

  test("wasm: strings and bytes through memory (alloc convention)", async () => {
    await using w = await open("strings");
    assert.equal(await w.callString("upper", "hello, wörld"), "HELLO, WöRLD");
    assert.deepEqual(
      await w.callBytes("reverse", new Uint8Array([1, 2, 3])),
      new Uint8Array([3, 2, 1]),
    );
    assert.equal(await w.call("freed"), 2); // dealloc ran on each output
    const big = new Uint8Array(300_000).map((_, i) => i & 0xff);
    const reversed = await w.callBytes("reverse", big);
    assert.equal(reversed.length, big.length);
    assert.equal(reversed[0], big[big.length - 1]);
    const data = new Uint8Array([10, 20, 30]);
    const ptr = await w.allocBytes(data);
    assert.equal(await w.call("sum", ptr, data.length), 60);
    assert.deepEqual(await w.readBytes(ptr, 3), data);
    await w.writeBytes(ptr, new Uint8Array([1, 1, 1]));
    assert.equal(await w.call("sum", ptr, 3), 3);
    const s = await w.allocString("héllo");
    assert.equal(s.len, 6);
    assert.equal(await w.readString(s.ptr, s.len), "héllo");
    const size = await w.memorySize();
    assert.ok(size >= 65536 * 5, `memory ${size}`);
    await assert.rejects(w.readBytes(size - 1, 2), ArgumentError);
    await assert.rejects(w.writeBytes(size, new Uint8Array(1)), ArgumentError);
    await assert.rejects(w.callBytes("sum", new Uint8Array(1)), ArgumentError); // wrong result type
  });

  test("wasm: memory helpers need an exported memory and alloc", async () => {
    await using w = await open("fib");
    await assert.rejects(w.readBytes(0, 1), ArgumentError);
    await assert.rejects(w.allocBytes(new Uint8Array(1)), ArgumentError);
  });

  test("wasm: WASI command (C, wasi-libc): output, args, env, clock, random, exit", async () => {
    const decoder = new TextDecoder();
    let out = "";
    let err = "";
    const seed = new Uint8Array(32).fill(7);
    const options = {
      wasi: {
        args: ["hello", "first arg"],
        env: { GREETING: "hi there" },
        stdout: (d: Uint8Array) => void (out += decoder.decode(d)),
        stderr: (d: Uint8Array) => void (err += decoder.decode(d)),
        randomSeed: seed,
      },
    };
    {
      await using w = await open("wasi_hello", options);
      assert.deepEqual(await w.runWasi(), { exitCode: 7 });
    }
    assert.match(out, /^hello from wasi, argc=2\n/);
    assert.match(out, /argv\[0\]=hello\nargv\[1\]=first arg\n/);
    assert.match(out, /GREETING=hi there\n/);
    assert.match(out, /time_ok=1\n/);
    assert.match(out, /fopen=failed\n/); // no preopened directories
    assert.equal(err, "to stderr\n");
    const random = out.match(/random=([0-9a-f]{16})/)![1];
    // The same seed gives the same bytes; `call("_start")` reports the exit as an error.
    const first = out;
    out = "";
    err = "";
    {
      await using w = await open("wasi_hello", options);
      const e = await w.call("_start").catch((x) => x);
      assert.ok(e instanceof WasiExitError);
      assert.equal(e.exitCode, 7);
    }
    assert.equal(out.match(/random=([0-9a-f]{16})/)![1], random);
    assert.equal(out.replace(/time_ok=\d/, ""), first.replace(/time_ok=\d/, ""));
  });

  test("wasm: WASI main returning 0 and default settings", async () => {
    let out = "";
    await using w = await open("wasi_return", {
      wasi: { stdout: (d) => void (out += new TextDecoder().decode(d)) },
    });
    assert.deepEqual(await w.runWasi(), { exitCode: 0 });
    assert.equal(out, "done\n");
    assert.ok(w.imports.every((i) => i.module === "wasi_snapshot_preview1"));
  });

  test("wasm: stats count ioctls and exits; dispose is idempotent", async () => {
    const w = await open("fib");
    const before = w.stats();
    await w.call("fib", 5);
    const after = w.stats();
    assert.ok(after.exits > before.exits);
    assert.ok(after.ioctls > before.ioctls);
    await w.dispose();
    await w.dispose();
    assert.equal(w.disposed, true);
  });

  test(
    "WASI host side: fuel bounds fd_write's iovec loop; only fds 1 and 2 are written",
    async () => {
      const out: string[] = [];
      const err: string[] = [];
      const decode = (d: Uint8Array) => new TextDecoder().decode(d);
      await using w = await open("wasi_flood", {
        fuel: 5_000,
        wasi: { stdout: (d) => void out.push(decode(d)), stderr: (d) => void err.push(decode(d)) },
      });
      assert.equal(await w.call("iovecs", 100), 0);
      // 7,000 iovecs cost 7,000 fuel: more than the call has.
      await assert.rejects(
        w.call("iovecs", 7_000),
        (e) => e instanceof WasmTrapError && e.trap === "out_of_fuel",
      );
      // 2^32-1 iovecs: charged before any loop, so out of fuel at once.
      await assert.rejects(
        w.call("iovecs", 0xffff_ffff),
        (e) => e instanceof WasmTrapError && e.trap === "out_of_fuel",
      );
      // Without metering, more iovecs than memory holds is EFAULT (21), before any loop.
      await using unmetered = await open("wasi_flood", { wasi: { stdout: () => {} } });
      assert.equal(await unmetered.call("iovecs", 0xffff_ffff), 21);
      assert.equal(await w.call("write_fd", 1), 0);
      assert.equal(await w.call("write_fd", 2), 0);
      assert.equal(await w.call("write_fd", 3), 8); // EBADF
      // The 100 empty iovecs wrote nothing: buffered output delivers bytes, never empty chunks.
      assert.deepEqual(out, ["hello"]);
      assert.deepEqual(err, ["hello"]);
    },
  );
}

// The runtime guest is hostile input too. Its answers and requests are bent here, on their way
// in, as a runtime that broke the protocol would send them: each call fails with a
// ProtocolError and poisons the sandbox.
for (const engine of WASM_ENGINES) {
  const seen = { env: { seen: { params: ["i32"], result: "void", fn: () => undefined } } } as const;
  engineTest(engine)(
    "wasm: a malformed wasm_import request fails the call and poisons",
    async () => {
      const original = ImportTable.prototype.serve;
      ImportTable.prototype.serve = function (index: number, args: Uint8Array) {
        return original.call(this, index, args.subarray(0, 2)); // an i32 cut short
      };
      try {
        await using w = await WasmSandbox.create({
          engine,
          module: fixture("state"),
          hostFunctions: seen,
          cache: false,
        });
        const e = await w.call("bump").then(() => undefined, (e) => e);
        assert.ok(e instanceof ProtocolError, String(e));
        assert.equal(w.poisoned, true);
      } finally {
        ImportTable.prototype.serve = original;
      }
    },
  );

  engineTest(engine)(
    "wasm: a result or memory read of the wrong shape fails and poisons",
    async () => {
      const original = Sandbox.prototype.callWithOptions;
      for (
        const [fn, op] of [["invoke", (w: WasmSandbox) => w.call("fib", 5)], [
          "read_memory",
          (w: WasmSandbox) => w.readBytes(0, 16),
        ]] as const
      ) {
        Sandbox.prototype.callWithOptions = async function (o, name, ...args) {
          const v = await original.call(this, o, name, ...args);
          return name === fn ? new Uint8Array(1) : v; // one byte, whatever was asked
        };
        try {
          await using w = await WasmSandbox.create({
            engine,
            module: fixture(fn === "invoke" ? "fib" : "strings"),
            cache: false,
          });
          const e = await op(w).then(() => undefined, (e) => e);
          assert.ok(e instanceof ProtocolError, `${fn}: ${e}`);
          assert.equal(w.poisoned, true, fn);
        } finally {
          Sandbox.prototype.callWithOptions = original;
        }
      }
    },
  );
}

/** A module exporting `f`, a function of `n` i32 parameters that does nothing. */
function manyParams(n: number): Uint8Array {
  const leb = (v: number) => {
    const out: number[] = [];
    do {
      const b = v & 0x7f;
      v >>>= 7;
      out.push(v ? b | 0x80 : b);
    } while (v);
    return out;
  };
  const section = (id: number, body: number[]) => [id, ...leb(body.length), ...body];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [1, 0x60, ...leb(n), ...Array(n).fill(0x7f), 0]),
    ...section(3, [1, 0]),
    ...section(7, [1, 1, 0x66, 0, 0]),
    ...section(10, [1, 2, 0, 0x0b]),
  ]);
}

for (const engine of WASM_ENGINES) {
  engineTest(engine)(
    "wasm: a function of more than 255 parameters is refused, 255 load",
    async () => {
      await assert.rejects(
        WasmSandbox.create({ engine, module: manyParams(256), cache: false }),
        (e) => e instanceof WasmModuleError && /255/.test(e.message),
      );
      await using w = await WasmSandbox.create({ engine, module: manyParams(255), cache: false });
      assert.equal(w.exports[0].type?.params.length, 255);
    },
  );
}

/** `f`: sets a global to 1, then returns a null funcref (which cannot cross); `c`: the global. */
function sideEffectThenRef(): Uint8Array {
  const section = (id: number, body: number[]) => [id, body.length, ...body];
  const f = [0, 0x41, 1, 0x24, 0, 0xd0, 0x70, 0x0b];
  const c = [0, 0x23, 0, 0x0b];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, [2, 0x60, 0, 1, 0x70, 0x60, 0, 1, 0x7f]),
    ...section(3, [2, 0, 1]),
    ...section(6, [1, 0x7f, 1, 0x41, 0, 0x0b]),
    ...section(7, [2, 1, 0x66, 0, 0, 1, 0x63, 0, 1]),
    ...section(10, [2, f.length, ...f, c.length, ...c]),
  ]);
}

for (const engine of WASM_ENGINES) {
  engineTest(engine)(
    "wasm: an export whose result cannot cross is refused before it runs",
    async () => {
      await using w = await WasmSandbox.create({
        engine,
        module: sideEffectThenRef(),
        cache: false,
      });
      await assert.rejects(w.call("f"), /cannot cross|funcref/);
      assert.equal(await w.call("c"), 0, "f did not run");
    },
  );
}
