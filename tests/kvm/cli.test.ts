/**
 * The `hl` command line (cli.ts), spawned as a real process with `deno run`: help on every
 * command, exit codes, stdin piping, --env, --dir/--dir-rw confinement, --stats, --timeout,
 * --fuel, typed arguments of `call` (Wasm and native), `inspect`, and that every error is one
 * line on stderr with no stack trace.
 */
import assert from "node:assert/strict";
import { fixture } from "../wasm/fixtures.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function hl(args: string[], stdin?: string): Promise<Result> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", CLI, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** An error: the exit code, and stderr exactly one line starting with `prefix`, no stack. */
function assertErrorLine(r: Result, code: number, pattern: RegExp): void {
  assert.equal(r.code, code, JSON.stringify(r));
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, `one line on stderr: ${JSON.stringify(r.stderr)}`);
  assert.match(lines[0], pattern);
  assert.doesNotMatch(r.stderr, /^\s+at /m);
}

kvmTest("cli: --help on every command, exit 0; no command is a usage error", async () => {
  for (const args of [["--help"], ["run", "--help"], ["call", "-h"], ["inspect", "--help"]]) {
    const r = await hl(args);
    assert.equal(r.code, 0, args.join(" "));
    assert.match(r.stdout, /^Usage: hl/);
    assert.equal(r.stderr, "");
  }
  assert.match((await hl(["run", "--help"])).stdout, /--dir-rw HOST\[::GUEST\]/);
  const none = await hl([]);
  assert.equal(none.code, 2);
  assert.match(none.stdout, /^Usage: hl <command>/);
});

kvmTest("cli run: exit code, argv, --env, stdio are the process's own", async () => {
  const hello = await hl(["run", "--env", "GREETING=hi there", fixture("wasi_hello"), "--", "a"]);
  assert.equal(hello.code, 7); // the program's exit(7)
  assert.match(hello.stdout, /^hello from wasi, argc=2\n/);
  assert.match(hello.stdout, /\nargv\[1\]=a\n/);
  assert.match(hello.stdout, /\nGREETING=hi there\n/);
  assert.equal(hello.stderr, "to stderr\n");
  // Arguments after the module that look like options belong to the program.
  const dash = await hl(["run", fixture("wasi_hello"), "--env", "-x"]);
  assert.match(dash.stdout, /argv\[1\]=--env\nargv\[2\]=-x\n/);
  assert.match(dash.stdout, /GREETING=\(unset\)/);
  // stdin piped through, read on demand, and exit 0.
  const input = "first line\nsecond line\n".repeat(1000);
  const cat = await hl(["run", fixture("wasi_files"), "stdin", "7"], input);
  assert.equal(cat.code, 0);
  assert.equal(cat.stdout, input);
  assert.equal(cat.stderr, `stdin bytes=${input.length}\n`);
});

kvmTest("cli run: --dir is read-only and confined, --dir-rw writes", async () => {
  const base = Deno.makeTempDirSync({ prefix: "hl-cli-" });
  try {
    Deno.mkdirSync(`${base}/data`);
    Deno.writeTextFileSync(`${base}/data/in.txt`, "input\n");
    Deno.writeTextFileSync(`${base}/secret.txt`, "secret\n");
    Deno.symlinkSync("../secret.txt", `${base}/data/link`);
    const files = fixture("wasi_files");
    const dir = `${base}/data::/data`;
    const cat = await hl(["run", "--dir", dir, files, "cat", "/data/in.txt"]);
    assert.deepEqual(cat, { code: 0, stdout: "input\n", stderr: "" });
    const escape = await hl(["run", "--dir", dir, files, "cat", "/data/link"]);
    assert.deepEqual(escape, { code: 1, stdout: "fopen: errno=76\n", stderr: "" });
    const up = await hl(["run", "--dir", dir, files, "cat", "/data/../secret.txt"]);
    assert.equal(up.stdout, "fopen: errno=76\n");
    const ro = await hl(["run", "--dir", dir, files, "write", "/data/out.txt", "x"]);
    assert.deepEqual(ro, { code: 1, stdout: "fopen: errno=69\n", stderr: "" });
    const rw = await hl(["run", "--dir-rw", dir, files, "write", "/data/out.txt", "written"]);
    assert.deepEqual(rw, { code: 0, stdout: "wrote 7\n", stderr: "" });
    assert.equal(Deno.readTextFileSync(`${base}/data/out.txt`), "written");
    // Without ::GUEST the guest name is the host path as written.
    const same = await hl(["run", "--dir", `${base}/data`, files, "cat", `${base}/data/in.txt`]);
    assert.equal(same.stdout, "input\n");
    assertErrorLine(
      await hl(["run", "--dir", "/nonexistent/dir::/d", files]),
      2,
      /^hl run: --dir \/nonexistent\/dir::\/d: \/nonexistent\/dir cannot be opened/,
    );
    assertErrorLine(await hl(["run", "--dir", "::/d", files]), 2, /takes HOST\[::GUEST\]/);
  } finally {
    Deno.removeSync(base, { recursive: true });
  }
});

kvmTest("cli run: --stats, --timeout (124), --fuel (134), errors as one line", async () => {
  const stats = await hl(["run", "--stats", fixture("wasi_hello")]);
  assert.equal(stats.code, 7);
  assert.match(
    stats.stderr,
    /^to stderr\nhl stats: create_ms=\d+\.\d+ run_ms=\d+\.\d+ exits=\d+ ioctls=\d+ runs=\d+ logs_skipped=\d+ wasm_memory_bytes=\d+ peak_rss_bytes=\d+\n$/,
  );
  // A run that traps still reports its figures, then the one error line. (wasmi: its 1000 units
  // last through instantiation; wasmtime counts differently and spends them before the run.)
  const trapped = await hl([
    "run",
    "--stats",
    "--engine",
    "wasmi",
    "--fuel",
    "1000",
    fixture("wasi_hello"),
  ]);
  assert.equal(trapped.code, 134);
  assert.match(
    trapped.stderr,
    /^hl stats: create_ms=[\d.]+ run_ms=[\d.]+ exits=\d+ .*\nhl run: wasm trap \(out_of_fuel\): [^\n]*\n$/,
  );
  assertErrorLine(
    await hl(["run", fixture("values")]),
    1,
    /^hl run: the module imports env\.log, a host function hl run cannot provide$/,
  );
  assertErrorLine(
    await hl(["call", "--timeout", "200", fixture("traps"), "spin"]),
    124,
    /^hl call: .*timed out/i,
  );
  assertErrorLine(
    await hl(["call", "--fuel", "1000", fixture("fib"), "fib", "30"]),
    134,
    /^hl call: wasm trap \(out_of_fuel\)/,
  );
  assertErrorLine(await hl(["run", "missing.wasm"]), 1, /^hl run: cannot read missing\.wasm: /);
  assertErrorLine(await hl(["run", CLI]), 2, /is not a WebAssembly module/);
  assertErrorLine(await hl(["run", "--bogus", "x.wasm"]), 2, /^hl run: Unknown option '--bogus'/);
  assertErrorLine(await hl(["run", "--timeout", "soon", "x.wasm"]), 2, /--timeout must be/);
  assertErrorLine(await hl(["run", "--env", "NOEQUALS", "x.wasm"]), 2, /--env takes K=V/);
  assertErrorLine(await hl(["run"]), 2, /missing operand/);
  assertErrorLine(await hl(["frob"]), 2, /^hl: unknown command "frob"/);
  assertErrorLine(
    await hl(["run", fixture("traps")]),
    1,
    /^hl run: the module exports no function "_start"/,
  );
});

kvmTest("cli call: typed arguments from the Wasm signature, JSON results", async () => {
  const call = async (...args: string[]) => {
    const r = await hl(["call", ...args]);
    assert.equal(r.code, 0, JSON.stringify(r));
    return r.stdout.trim();
  };
  assert.equal(await call(fixture("fib"), "fib", "20"), "6765");
  assert.equal(
    await call(fixture("arith"), "i64_add", "9223372036854775807", "1"),
    "-9223372036854775808",
  );
  assert.equal(await call(fixture("arith"), "i32_add", "0x7fffffff", "1"), "-2147483648");
  assert.equal(await call(fixture("arith"), "f64_passthrough", "-1.5e3"), "-1500");
  assert.equal(await call(fixture("arith"), "f64_passthrough", "nan"), '"NaN"');
  assert.equal(await call(fixture("arith"), "f64_passthrough", "-inf"), '"-Infinity"');
  assert.equal(await call(fixture("arith"), "f32_passthrough", "0.1"), "0.10000000149011612");
  assert.equal(await call(fixture("arith"), "i32_add", "-5", "2"), "-3"); // negative arguments
  assert.equal(await call(fixture("traps"), "started"), "42"); // its start function ran
  assertErrorLine(
    await hl(["call", fixture("fib"), "fib", "x"]),
    2,
    /fib argument 0: "x" is not an i32/,
  );
  assertErrorLine(await hl(["call", fixture("fib"), "fib"]), 2, /fib takes 1 argument/);
  assertErrorLine(await hl(["call", fixture("fib"), "nope"]), 2, /no function "nope" \(it has: /);
  assertErrorLine(
    await hl(["call", fixture("values"), "id_i32", "1"]),
    1,
    /imports env\.log, a host function hl call cannot provide/,
  );
  assertErrorLine(
    await hl(["call", fixture("traps"), "div_zero", "1"]),
    134,
    /^hl call: wasm trap \(integer_divide_by_zero\)/,
  );
});

kvmTest("cli call: a native guest's function table types the arguments", async () => {
  const call = async (...args: string[]) => {
    const r = await hl(["call", TESTGUEST, ...args]);
    assert.equal(r.code, 0, JSON.stringify(r));
    return r.stdout.trim();
  };
  assert.equal(await call("add", "2", "-5"), "-3");
  assert.equal(await call("echo", "héllo wörld"), '"héllo wörld"');
  assert.equal(await call("echo_bytes", "hex:00ff10"), "[0,255,16]");
  assert.equal(await call("echo_bytes", "ab"), "[97,98]");
  assertErrorLine(await hl(["call", TESTGUEST, "add", "1", "2.5"]), 2, /"2\.5" is not an i32/);
  assertErrorLine(await hl(["call", TESTGUEST, "echo_bytes", "hex:0"]), 2, /hex:/);
  assertErrorLine(await hl(["call", "--fuel", "5", TESTGUEST, "add", "1", "2"]), 2, /--fuel/);
});

kvmTest("cli inspect: imports, exports and signatures; --json; native guests", async () => {
  const text = await hl(["inspect", fixture("values")]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^.*values\.wasm: WebAssembly module, \d+ bytes\nimports:\n/);
  assert.match(text.stdout, /\n {2}env\.pair: func \(f64\) -> \(i32, f32\)\n/);
  assert.match(text.stdout, /\n {2}swap: func \(i32, i64, f64\) -> \(f64, i64, i32\)\n/);
  assert.match(text.stdout, /\n {2}takes_ref: func \(funcref\) -> \(\)\n/);
  const json = JSON.parse((await hl(["inspect", "--json", fixture("fib")])).stdout);
  assert.equal(json.kind, "wasm");
  assert.deepEqual(json.imports, []);
  assert.deepEqual(
    json.exports.find((e: { name: string }) => e.name === "fib"),
    { module: "", name: "fib", kind: "function", type: { params: ["i32"], results: ["i32"] } },
  );
  const native = await hl(["inspect", TESTGUEST]);
  assert.equal(native.code, 0);
  assert.match(native.stdout, /native guest \(ELF\)/);
  assert.match(native.stdout, /\n {2}add: \(i32, i32\) -> i32\n/);
  assertErrorLine(await hl(["inspect", CLI]), 2, /neither a WebAssembly module nor an ELF guest/);
  const broken = Deno.makeTempFileSync({ suffix: ".wasm" });
  Deno.writeFileSync(broken, new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 99]));
  assertErrorLine(await hl(["inspect", broken]), 1, /^hl inspect: invalid module: /);
  Deno.removeSync(broken);
});

kvmTest(
  "cli --engine: wasmtime runs and calls like wasmi; a bad or misplaced engine is a usage error",
  async () => {
    for (const engine of ["wasmi", "wasmtime"]) {
      const called = await hl(["call", "--engine", engine, fixture("fib"), "fib", "20"]);
      assert.equal(called.code, 0, JSON.stringify(called));
      assert.equal(called.stdout.trim(), "6765");
    }
    const runs = await Promise.all(
      ["wasmi", "wasmtime"].map((e) => hl(["run", "--engine", e, fixture("wasi_hello"), "a b"])),
    );
    assert.equal(runs[0].code, 7);
    assert.equal(runs[1].code, 7);
    // The same output but for the random bytes (a fresh seed per run).
    const steady = (out: string) => out.replace(/^random=[0-9a-f]+$/m, "random=*");
    assert.equal(steady(runs[1].stdout), steady(runs[0].stdout));
    assert.equal(runs[1].stderr, runs[0].stderr);
    assert.match(runs[1].stdout, /argv\[1\]=a b/);
    assertErrorLine(await hl(["run", "--engine", "v8", fixture("fib")]), 2, /--engine must be/);
    assertErrorLine(
      await hl(["call", "--engine", "wasmtime", TESTGUEST, "add", "1", "2"]),
      2,
      /--engine applies to Wasm modules only/,
    );
  },
);
