import assert from "node:assert/strict";
import { ProtocolError } from "../../src/errors.ts";
import {
  checkRuntimeTable,
  RUNTIME_FUNCTIONS,
  runtimeResult,
} from "../../src/wasm/runtime_table.ts";
import { asyncSink } from "../../src/wasm/wasi_sink.ts";
import { runtimeHostFunctions } from "../../src/wasm/imports.ts";
import type { FunctionSignature } from "../../src/wire.ts";

const table = (): FunctionSignature[] =>
  Object.entries(RUNTIME_FUNCTIONS).map(([name, t]) => ({ name, ...t }));

Deno.test("runtime table: the real one passes, extra functions are ignored", () => {
  checkRuntimeTable(table());
  checkRuntimeTable([...table(), { name: "extra", params: ["i32"], result: "void" }]);
});

Deno.test("runtime table: a hostile table is a ProtocolError, never a TypeError", () => {
  const cases: [string, FunctionSignature[]][] = [
    ["load returns i32", table().map((f) => f.name === "load" ? { ...f, result: "i32" } : f)],
    ["no load", table().filter((f) => f.name !== "load")],
    ["empty", []],
    [
      "invoke takes bytes first",
      table().map((f) => f.name === "invoke" ? { ...f, params: ["bytes", "bytes"] } : f),
    ],
    [
      "memory_size takes an argument",
      table().map((f) => f.name === "memory_size" ? { ...f, params: ["u32"] } : f),
    ],
    [
      "write_alloc returns u64",
      table().map((f) => f.name === "write_alloc" ? { ...f, result: "u64" } : f),
    ],
  ];
  for (const [what, t] of cases) {
    assert.throws(() => checkRuntimeTable(t), ProtocolError, what);
  }
});

Deno.test("runtime results are checked at the call site", () => {
  assert.deepEqual(runtimeResult("load", new Uint8Array(1)), new Uint8Array(1));
  assert.equal(runtimeResult("memory_size", 5n), 5n);
  assert.equal(runtimeResult("write_alloc", 7), 7);
  assert.equal(runtimeResult("instantiate", undefined), undefined);
  for (
    const [name, v] of [
      ["load", 1],
      ["memory_size", 5],
      ["write_alloc", -1],
      ["write_alloc", 5n],
      ["instantiate", "x"],
      ["read_memory", "x"],
    ] as const
  ) {
    assert.throws(() => runtimeResult(name, v), ProtocolError, `${name} ${v}`);
  }
});

Deno.test("WASI sink: a blocked stream never blocks the caller; the quota bounds it", async () => {
  let release!: () => void;
  const blocked = new Promise<void>((r) => release = r);
  const written: number[] = [];
  const sink = asyncSink({
    write: async (p) => {
      await blocked;
      written.push(p.length);
      return p.length;
    },
  }, 1000);
  // The writer is blocked; the sink must not wait for it (a wait would hang this test).
  sink(new Uint8Array(600));
  sink(new Uint8Array(400));
  assert.throws(() => sink(new Uint8Array(1)), /quota/);
  release();
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(written, [600, 400]);
  sink(new Uint8Array(10)); // drained: room again
});

Deno.test("WASI sink: short writes are completed, a failed stream fails later writes", async () => {
  const got: number[] = [];
  const sink = asyncSink({
    write: (p) => {
      if (p.length === 3) return Promise.reject(new Error("EPIPE"));
      got.push(Math.min(p.length, 4));
      return Promise.resolve(Math.min(p.length, 4));
    },
  });
  sink(new Uint8Array(10));
  await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(got, [4, 4, 2]);
  sink(new Uint8Array(3));
  await new Promise((r) => setTimeout(r, 10));
  assert.throws(() => sink(new Uint8Array(1)), /EPIPE/);
});

Deno.test("wasi: false registers no WASI host functions; WASI off makes them fail", () => {
  const hostImport = () => new Uint8Array();
  assert.deepEqual(Object.keys(runtimeHostFunctions(hostImport, undefined)), ["wasm_import"]);
  const maybe = runtimeHostFunctions(hostImport, () => undefined);
  assert.deepEqual(Object.keys(maybe).sort(), [
    "wasi_clock",
    "wasi_io",
    "wasi_write",
    "wasm_import",
  ]);
  assert.throws(() => maybe.wasi_write.fn(1, new Uint8Array(1)), /not enabled/);
  assert.throws(() => maybe.wasi_clock.fn(0), /not enabled/);
  assert.throws(() => maybe.wasi_io.fn(1, new Uint8Array(8)), /not enabled/);
});
