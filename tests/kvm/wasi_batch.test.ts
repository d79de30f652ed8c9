/**
 * WASI file calls cross in batches (issue 22; docs/wasm.md, "File calls cross in batches"):
 * writes, absolute seeks and closes the runtime guest answers itself wait for the next request to
 * the host. Semantics: `tests/wasm/wasi_batch.c` interleaves writes, seeks, reads, truncation and
 * closes on one file through two fds, calls a host import that reads the file on the host, and
 * leaves a file written at the end of the call; its output, what the host import saw and the
 * files afterwards must equal V8's through `node:wasi`, where every call is served at once.
 * Counts: VM exits per run of the bench's SQLite-with-a-file and gzip workloads (deterministic:
 * the same guest and module make the same crossings on every host).
 */
import assert from "node:assert/strict";
import { WASI } from "node:wasi";
import fs from "node:fs";
import { type WasmEngine, WasmSandbox } from "../../mod.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import {
  BENCH_WORKLOADS,
  makeDir,
  runCountingExits,
  takeDir,
} from "../wasm/codebases/workloads.ts";
import { engineTest, WASM_ENGINES } from "./_kvm.ts";

const decoder = new TextDecoder();

/** What a run of wasi_batch produced. */
interface BatchOutcome {
  stdout: string;
  exitCode: number;
  /** f.txt as the host import `env.peek` read it on the host. */
  peeks: string[];
  files: Record<string, Uint8Array>;
}

/** Reads f.txt from the host directory (NUL as '.', as the module prints it). */
function peekFile(dir: string): string {
  return decoder.decode(Deno.readFileSync(`${dir}/f.txt`)).replaceAll("\0", ".");
}

async function inSandbox(engine: WasmEngine): Promise<BatchOutcome & { exits: number }> {
  const dir = makeDir({});
  const peeks: string[] = [];
  let stdout = "";
  let run: { exitCode: number; exits: number };
  try {
    await using w = await WasmSandbox.create({
      module: fixture("wasi_batch"),
      engine,
      cache: false,
      wasi: {
        stdout: (b) => void (stdout += decoder.decode(b)),
        preopens: { "/data": { path: dir, writable: true } },
      },
      hostFunctions: {
        env: { peek: { params: [], result: "void", fn: () => void peeks.push(peekFile(dir)) } },
      },
    });
    const before = w.stats().exits;
    const { exitCode } = await w.runWasi();
    run = { exitCode, exits: w.stats().exits - before };
  } catch (e) {
    Deno.removeSync(dir, { recursive: true });
    throw e;
  }
  // g.txt was written at the end of the call and never closed.
  return { stdout, peeks, files: takeDir(dir), ...run };
}

function inV8(): BatchOutcome {
  const dir = makeDir({});
  const out = Deno.makeTempFileSync();
  const fd = fs.openSync(out, "w");
  const peeks: string[] = [];
  try {
    const wasi = new WASI({
      version: "preview1",
      args: ["wasi_batch"],
      env: {},
      stdout: fd,
      preopens: { "/data": dir },
      returnOnExit: true,
    });
    const module = new WebAssembly.Module(fixtureBytes("wasi_batch") as Uint8Array<ArrayBuffer>);
    const instance = new WebAssembly.Instance(module, {
      ...(wasi.getImportObject() as WebAssembly.Imports),
      env: { peek: () => void peeks.push(peekFile(dir)) },
    });
    const exitCode = wasi.start(instance);
    fs.closeSync(fd);
    return { stdout: decoder.decode(Deno.readFileSync(out)), exitCode, peeks, files: takeDir(dir) };
  } finally {
    Deno.removeSync(out);
  }
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);

  test("wasi batches: interleaved file calls on two fds give V8's bytes at every point the host sees", async () => {
    const v8 = inV8();
    const got = await inSandbox(engine);
    const files = got.files;
    assert.equal(got.exitCode, 0);
    assert.equal(got.stdout, v8.stdout);
    assert.deepEqual(got.peeks, v8.peeks);
    assert.deepEqual(files, v8.files);
    // Facts that do not come from either engine.
    assert.match(got.stdout, /^b sees a's writes: 11 \[hello world\]$/m);
    assert.match(got.stdout, /^offsets: a 4, b 5$/m);
    assert.deepEqual(got.peeks, ["heLLO wopwd.........Z"]);
    assert.match(got.stdout, /^write on a read-only fd: -1, errno EBADF$/m);
    assert.deepEqual(decoder.decode(files["g.txt"]), "\0\0\0\0end of call");
  });
}

/**
 * VM exits of one run of a bench workload (bench/wasm_real.bench.ts), in a sandbox made
 * beforehand: the run's own crossings (its call, WASI requests, memory the guest maps).
 */
async function runExits(name: string, engine: WasmEngine): Promise<number> {
  const w = BENCH_WORKLOADS.find((w) => w.name === name)!;
  const { exitCode, exits } = await runCountingExits(w, fixtureBytes(w.module), engine);
  assert.equal(exitCode, w.exitCode);
  return exits;
}

for (const engine of WASM_ENGINES) {
  engineTest(engine)(
    "wasi batches: VM exits per run of the SQLite-with-a-file and gzip workloads",
    async () => {
      // SQLite on a database file: 1,026 wasi_io requests, one exit each, before issue 22; 717-722
      // with absolute seeks deferred alone; 377-382 with writes, seeks and closes batched and
      // fd_fdstat_get / a directory's fd_sync answered in the guest; 361-366 with the output
      // riding in front of the next request (op 28) instead of crossing alone (15 a run).
      const sqlite = await runExits(
        "sqlite: database file in a writable preopened directory",
        engine,
      );
      assert.ok(sqlite <= 370, `SQLite with a database file: ${sqlite} exits`);
      // gzip of 44 KB of stdin: the call, one read-ahead of stdin (which says stdin ends there:
      // no read for its end, 4 -> 3 exits), the output; wasmtime also maps the memory its
      // linear memory grows into (4 exits).
      const gzip = await runExits("zlib: gzip of stdin", engine);
      assert.ok(gzip <= (engine === "wasmtime" ? 7 : 3), `gzip of stdin: ${gzip} exits`);
    },
  );
}
