/**
 * Real, unmodified C code bases (SQLite and zlib from crates.io packages, built by
 * tools/build_c_codebases.sh with a small driver each) run as WASI commands in a WasmSandbox and
 * in V8 through `node:wasi`: stdout, stderr, the exit code and the preopened directory afterwards
 * must be identical byte for byte; so must each run through the CLI (`cli.ts run`, a subprocess
 * with pipes). Workloads use args, stdin and preopened directories.
 * Besides the comparison, each workload's own facts are checked (exit code, error message, row
 * counts derived from the workload's parameters), so two engines agreeing on a broken run fails.
 */
import assert from "node:assert/strict";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import {
  KV_DB,
  type Outcome,
  runInCli,
  runInSandbox,
  runInV8,
  TEXT,
  WORKLOADS,
} from "../wasm/codebases/workloads.ts";
import { kvmTest } from "./_kvm.ts";
import { Buffer } from "node:buffer";
import { DatabaseSync } from "node:sqlite";
import { gunzipSync } from "node:zlib";

const decoder = new TextDecoder();
const text = (b: Uint8Array) => decoder.decode(b);

/** Checks the output of `sqliteStatements(n)`: figures computed here from the generator. */
function checkOrders(o: Outcome, n: number): void {
  const lines = text(o.stdout).split("\n");
  // count(*), sum(id), sum(qty), min/max day over ids 1..n as the workload generates them.
  let qty = 0;
  for (let i = 1; i <= n; i++) qty += 1 + (i * 31) % 9;
  assert.equal(lines[1], `${n}|${(n * (n + 1)) / 2}|${qty}|0|364`);
  assert.match(lines[0], /^3\.\d+\.\d+\|1\|2\|xy\|NULL\|3\|3\.5$/);
  assert.ok(lines.includes("ok"), "PRAGMA integrity_check");
  assert.equal(o.stderr.length, 0);
}

/** Facts about each workload's output that do not come from either engine. */
const CHECKS: Record<string, (o: Outcome) => void> = {
  "sqlite: 2,000 orders": (o) => checkOrders(o, 2000),
  "sqlite: SQL from stdin": (o) => checkOrders(o, 500),
  "sqlite: database file in a writable preopened directory": (o) => {
    checkOrders(o, 500);
    // Deno's own SQLite reads the file the module wrote.
    assert.deepEqual(Object.keys(o.files!), ["shop.db"]); // no journal or lock left behind
    const path = Deno.makeTempFileSync();
    try {
      Deno.writeFileSync(path, o.files!["shop.db"]);
      const db = new DatabaseSync(path, { readOnly: true });
      const row = db.prepare(
        "SELECT (SELECT count(*) FROM customer) c, (SELECT count(*) FROM product) p",
      ).get();
      assert.deepEqual({ ...row }, { c: 50, p: 12 });
      assert.equal(db.prepare("PRAGMA integrity_check").get()?.integrity_check, "ok");
      db.close();
    } finally {
      Deno.removeSync(path);
    }
  },
  "sqlite: immutable database in a read-only preopened directory": (o) => {
    let sum = 0;
    for (let k = 1; k <= 1000; k++) sum += `value ${k} ${"x".repeat(k % 50)}`.length;
    const lines = text(o.stdout).split("\n");
    assert.equal(lines[0], `1000|${sum}|1|1000`);
    assert.equal(lines[1], `970|value 970 ${"x".repeat(970 % 50)}`);
    assert.equal(lines.length, 1 + 10 + 1);
    assert.equal(text(o.stderr), "error in statement 3: attempt to write a readonly database\n");
    assert.deepEqual(o.files, { "kv.db": KV_DB });
  },
  "zlib: gzip of stdin": (o) => {
    assert.deepEqual(gunzipSync(o.stdout), Buffer.from(TEXT));
    assert.ok(o.stdout.length < TEXT.length / 2, `compressed to ${o.stdout.length}`);
  },
  "zlib: gunzip of stdin": (o) => {
    assert.deepEqual(o.stdout, TEXT);
    assert.equal(o.stderr.length, 0);
  },
  "zlib: gunzip of a damaged stream": (o) => {
    assert.match(text(o.stderr), /^zlib: gunzip: <fd:0>: .+\n$/);
    assert.deepEqual(o.stdout, TEXT.subarray(0, o.stdout.length)); // what came before the damage
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

/** The sandbox's run of `workload` on `engine` against V8's: every output, byte for byte. */
async function sandboxAgreesWithV8(
  workload: (typeof WORKLOADS)[number],
  engine: "wasmi" | "wasmtime",
): Promise<WebAssembly.Module> {
  const bytes = fixtureBytes(workload.module);
  const module = new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>);
  const v8 = runInV8(module, workload);
  const sandbox = await runInSandbox(bytes, workload, engine);
  // Text first, for a readable diff; then the bytes.
  assert.equal(text(sandbox.stdout), text(v8.stdout), "stdout");
  assert.equal(text(sandbox.stderr), text(v8.stderr), "stderr");
  assert.deepEqual(sandbox.stdout, v8.stdout);
  assert.deepEqual(sandbox.stderr, v8.stderr);
  assert.equal(sandbox.exitCode, v8.exitCode, "exit code");
  // The preopened directory afterwards: the same names and the same bytes.
  assert.deepEqual(Object.keys(sandbox.files ?? {}), Object.keys(v8.files ?? {}), "files");
  assert.deepEqual(sandbox.files, v8.files, "file contents");
  assert.equal(sandbox.exitCode, workload.exitCode, "the driver's expected exit code");
  const check = CHECKS[workload.name];
  assert.ok(check, `no checks for ${workload.name}`);
  check(sandbox);
  return module;
}

for (const workload of WORKLOADS) {
  kvmTest(
    `[wasmtime] real C code (${workload.name}): WasmSandbox and V8 (node:wasi) agree`,
    async () => void await sandboxAgreesWithV8(workload, "wasmtime"),
  );
  kvmTest(
    `real C code (${workload.name}): WasmSandbox, the CLI and V8 (node:wasi) agree`,
    async () => {
      const module = await sandboxAgreesWithV8(workload, "wasmi");
      const check = CHECKS[workload.name];

      // The CLI (a `deno run cli.ts run` subprocess with pipes) against V8 given the same argv
      // (the CLI passes the module path as argv[0]).
      const path = fixture(workload.module);
      const cli = await runInCli(path, workload);
      const v8Cli = runInV8(module, { ...workload, args: [path, ...workload.args.slice(1)] });
      assert.equal(text(cli.stdout), text(v8Cli.stdout), "CLI stdout");
      assert.equal(text(cli.stderr), text(v8Cli.stderr), "CLI stderr");
      assert.deepEqual(cli.stdout, v8Cli.stdout);
      assert.deepEqual(cli.stderr, v8Cli.stderr);
      assert.equal(cli.exitCode, v8Cli.exitCode, "CLI exit code");
      assert.deepEqual(cli.files, v8Cli.files, "CLI: the preopened directory afterwards");
      check(cli);
    },
  );
}
