import assert from "node:assert/strict";
import fc from "fast-check";
import { ArgumentError, ProtocolError, SandboxError } from "../../src/errors.ts";
import {
  packValues,
  parseDescription,
  unpackResult,
  unpackValues,
  Writer,
} from "../../src/wasm/codec.ts";
import { WasmModuleError, WasmSandbox, type WasmValueType } from "../../mod.ts";

const HEADER = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);

Deno.test("wasm codec: packed values round-trip for every type", () => {
  const value = (t: WasmValueType): fc.Arbitrary<number | bigint> =>
    t === "i32"
      ? fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })
      : t === "i64"
      ? fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n })
      : t === "f32"
      ? fc.float({ noNaN: true })
      : fc.double({ noNaN: true });
  const typed = fc.array(fc.constantFrom<WasmValueType>("i32", "i64", "f32", "f64"), {
    maxLength: 8,
  }).chain((types) => fc.tuple(fc.constant(types), fc.tuple(...types.map(value))));
  fc.assert(fc.property(typed, ([types, values]) => {
    const bytes = packValues(values, types, "t");
    assert.equal(bytes.length, types.reduce((n, t) => n + (t === "i32" || t === "f32" ? 4 : 8), 0));
    assert.deepEqual(unpackValues(bytes, types, "t"), values);
  }));
});

Deno.test("wasm codec: i32 accepts [-2^31, 2^32) integers and wraps; i64 only bigints", () => {
  const i32 = (v: unknown) => unpackValues(packValues([v], ["i32"], "t"), ["i32"], "t")[0];
  assert.equal(i32(2 ** 32 - 1), -1);
  assert.equal(i32(2 ** 31), -(2 ** 31));
  for (const bad of [2 ** 32, -(2 ** 31) - 1, 1.5, NaN, "1", 1n, undefined]) {
    assert.throws(() => packValues([bad], ["i32"], "t"), ArgumentError, String(bad));
  }
  assert.equal(
    unpackValues(packValues([2n ** 64n - 1n], ["i64"], "t"), ["i64"], "t")[0],
    -1n,
  );
  for (const bad of [1, 2n ** 64n, -(2n ** 63n) - 1n]) {
    assert.throws(() => packValues([bad], ["i64"], "t"), ArgumentError);
  }
  assert.throws(() => packValues([1n], ["f64"], "t"), ArgumentError);
});

Deno.test("wasm codec: results are undefined, a value, or an array", () => {
  assert.equal(unpackResult(new Uint8Array(0), [], "t"), undefined);
  assert.equal(unpackResult(packValues([7], ["i32"], "t"), ["i32"], "t"), 7);
  assert.deepEqual(
    unpackResult(packValues([1, 2n], ["i32", "i64"], "t"), ["i32", "i64"], "t"),
    [1, 2n],
  );
  assert.throws(() => unpackValues(new Uint8Array(3), ["i32"], "t"), SandboxError);
  assert.throws(() => unpackValues(new Uint8Array(5), ["i32"], "t"), SandboxError);
});

Deno.test("wasm codec: module description", () => {
  const w = new Writer();
  const str = (s: string) => w.bytes(new TextEncoder().encode(s));
  w.u32(2); // imports
  str("env");
  str("log");
  w.u8(0); // func
  w.u8(1);
  w.u8(0x7f);
  w.u8(0);
  str("env");
  str("mem");
  w.u8(2); // memory
  w.u64(1n);
  w.u8(1);
  w.u64(2n);
  w.u32(2); // exports
  str("f");
  w.u8(0);
  w.u8(2);
  w.u8(0x7e);
  w.u8(0x6f);
  w.u8(2);
  w.u8(0x7d);
  w.u8(0x7c);
  str("g");
  w.u8(3); // global
  w.u8(0x7f);
  w.u8(1);
  const bytes = w.finish();
  assert.deepEqual(parseDescription(bytes), {
    imports: [
      { module: "env", name: "log", kind: "function", type: { params: ["i32"], results: [] } },
      { module: "env", name: "mem", kind: "memory" },
    ],
    exports: [
      {
        module: "",
        name: "f",
        kind: "function",
        type: { params: ["i64", "externref"], results: ["f32", "f64"] },
      },
      { module: "", name: "g", kind: "global" },
    ],
  });
  for (let n = 0; n < bytes.length; n++) {
    assert.throws(() => parseDescription(bytes.subarray(0, n)), SandboxError);
  }
  assert.throws(() => parseDescription(new Uint8Array([...bytes, 0])), SandboxError);
});

Deno.test("WasmSandbox.create rejects bad bytes and options before creating a VM", async () => {
  await assert.rejects(
    WasmSandbox.create({ module: new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]) }),
    WasmModuleError,
  );
  await assert.rejects(WasmSandbox.create({ module: new Uint8Array(0) }), WasmModuleError);
  // @ts-expect-error: not an options object
  await assert.rejects(WasmSandbox.create(null), ArgumentError);
  await assert.rejects(WasmSandbox.create({ module: "/nonexistent/x.wasm" }), ArgumentError);
  const bad: Record<string, unknown>[] = [
    { fuel: 0 },
    { fuel: 1.5 },
    { fuel: 2n ** 64n },
    { maxMemoryBytes: -1 },
    { maxTableElements: 0.5 },
    { wasi: "yes" },
    { hostFunctions: { env: null } },
    { hostFunctions: { env: { f: { params: ["i32"], result: "void" } } } },
    { hostFunctions: { env: { f: { params: ["bytes"], result: "void", fn: () => {} } } } },
    { hostFunctions: { env: { f: { params: [], result: ["i32", "u8"], fn: () => {} } } } },
  ];
  for (const options of bad) {
    await assert.rejects(
      WasmSandbox.create({ module: HEADER, ...options }),
      ArgumentError,
      JSON.stringify(options, (_k, v) => typeof v === "bigint" ? String(v) : v),
    );
  }
});

Deno.test("wasm codec: hostile guest bytes are ProtocolErrors, never another exception", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      for (
        const decode of [
          () => parseDescription(bytes),
          () => unpackValues(bytes, ["i32", "i64", "f64"], "test"),
        ]
      ) {
        try {
          decode();
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
        }
      }
    }),
    { numRuns: 2000 },
  );
});
