/**
 * Real, unmodified C code bases (SQLite and zlib from crates.io packages, built by
 * tools/build_c_codebases.sh with a small driver each) run as WASI commands in a WasmSandbox and
 * in V8 through `node:wasi`: stdout, stderr and the exit code must be identical byte for byte.
 * Besides the comparison, each workload's own facts are checked (exit code, error message, row
 * counts derived from the workload's parameters), so two engines agreeing on a broken run fails.
 */
import assert from "node:assert/strict";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { type Outcome, runInSandbox, runInV8, WORKLOADS } from "../wasm/codebases/workloads.ts";
import { kvmTest } from "./_kvm.ts";

const decoder = new TextDecoder();
const text = (b: Uint8Array) => decoder.decode(b);

/** Facts about each workload's output that do not come from either engine. */
const CHECKS: Record<string, (o: Outcome) => void> = {
  "sqlite: 2,000 orders": (o) => {
    const lines = text(o.stdout).split("\n");
    // count(*), sum(id), min/max day over ids 1..2000 as the workload generates them.
    const n = 2000;
    let qty = 0;
    for (let i = 1; i <= n; i++) qty += 1 + (i * 31) % 9;
    assert.equal(lines[1], `${n}|${(n * (n + 1)) / 2}|${qty}|0|364`);
    assert.match(lines[0], /^3\.\d+\.\d+\|1\|2\|xy\|NULL\|3\|3\.5$/);
    assert.ok(lines.includes("ok"), "PRAGMA integrity_check");
    assert.equal(o.stderr.length, 0);
  },
  "sqlite: constraint error": (o) => {
    assert.equal(text(o.stdout), "1|one\n");
    assert.equal(text(o.stderr), "error in statement 3: UNIQUE constraint failed: t.b\n");
  },
  "sqlite: syntax error": (o) => {
    assert.equal(text(o.stdout), "1\n");
    assert.match(text(o.stderr), /^error in statement 2: near "SELEC": syntax error\n$/);
  },
  "zlib: roundtrip of 16 KiB": (o) => {
    const lines = text(o.stdout).trimEnd().split("\n");
    // Header, 10 one-shot levels, 4 framings × 5 strategies × 3 levels × 2 buffer sizes, combine.
    assert.equal(lines.length, 1 + 10 + 120 + 1);
    assert.match(lines[0], /^zlib \S+, 16384 bytes, seed 7, crc32 [0-9a-f]{8}/);
    // The driver itself checks each inflate against the input (exit 4 on a mismatch).
    assert.equal(o.stderr.length, 0);
  },
  "zlib: damaged stream": (o) => {
    assert.match(text(o.stdout), /bad header: inflate -3 \(incorrect header check\)\n$/);
    assert.match(text(o.stderr), /^zlib: inflate failed: .+ \(-3\) after \d+ bytes\n$/);
  },
  "zlib: usage error": (o) => {
    assert.equal(o.stdout.length, 0);
    assert.match(text(o.stderr), /^usage: zlib /);
  },
};

for (const workload of WORKLOADS) {
  kvmTest(`real C code (${workload.name}): WasmSandbox and V8 (node:wasi) agree`, async () => {
    const bytes = fixtureBytes(workload.module);
    const v8 = runInV8(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>), workload.args);
    const sandbox = await runInSandbox(bytes, workload.args);
    // Text first, for a readable diff; then the bytes.
    assert.equal(text(sandbox.stdout), text(v8.stdout), "stdout");
    assert.equal(text(sandbox.stderr), text(v8.stderr), "stderr");
    assert.deepEqual(sandbox.stdout, v8.stdout);
    assert.deepEqual(sandbox.stderr, v8.stderr);
    assert.equal(sandbox.exitCode, v8.exitCode, "exit code");
    assert.equal(sandbox.exitCode, workload.exitCode, "the driver's expected exit code");
    const check = CHECKS[workload.name];
    assert.ok(check, `no checks for ${workload.name}`);
    check(sandbox);
  });
}
