/**
 * The compute kernels of the Wasm speed bench (tests/wasm/kernels.c, bench/wasm_real.bench.ts)
 * print the same checksums under wasmtime in a WasmSandbox as under V8 (`node:wasi`): the bench's
 * ratios compare equal work. wasmtime only: wasmi takes seconds per kernel.
 */
import assert from "node:assert/strict";
import { WasmSandbox } from "../../mod.ts";
import { runInV8 } from "../wasm/codebases/workloads.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

const decoder = new TextDecoder();

kvmTest("wasm kernels: wasmtime prints V8's checksums for every kernel", async () => {
  const bytes = fixtureBytes("kernels");
  const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  for (const k of ["hash", "nbody", "qsort", "matmul", "strings"]) {
    const args = ["kernels", k];
    const v8 = runInV8(module, { args });
    assert.equal(v8.exitCode, 0);
    let stdout = "";
    await using w = await WasmSandbox.create({
      module: bytes,
      engine: "wasmtime",
      maxMemoryBytes: 64 << 20, // the hash kernel's 16 MiB buffer
      heapSize: 160 << 20,
      wasi: { args, stdout: (b) => void (stdout += decoder.decode(b)) },
    });
    assert.deepEqual(await w.runWasi(), { exitCode: 0 });
    assert.equal(stdout, decoder.decode(v8.stdout), k);
    assert.match(stdout, new RegExp(`^${k} `));
  }
});
