/**
 * CLI messages in the user's terms (issue 26 item 4): arguments are numbered from 0 in the CLI as
 * in the library, a bad `--dir` is named as the option the user typed (not the library's
 * `wasi.preopens[...]`), and `deno task cli` resolves paths against the caller's directory.
 */
import assert from "node:assert/strict";
import { ArgumentError, Sandbox } from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { fixture } from "../wasm/fixtures.ts";
import { kvmTest, runDeno } from "./_kvm.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const CLI = `${ROOT}cli.ts`;
const decoder = new TextDecoder();

function hl(args: string[], cwd?: string): Promise<{ code: number; out: string; err: string }> {
  return runDeno(["run", "-A", "--quiet", CLI, ...args], cwd);
}

kvmTest("cli and library number arguments the same way (from 0)", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  await assert.rejects(
    () => sb.call("add", 1, "x"),
    (e) => e instanceof ArgumentError && /argument 1 /.test(e.message),
  );
  const r = await hl(["call", TESTGUEST, "add", "1", "x"]);
  assert.equal(r.code, 2, r.err);
  assert.match(r.err, /^hl call: add argument 1: "x" is not an i32/);
});

kvmTest("cli: a bad --dir is reported as the --dir the user gave", async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "hl-cli-dir-" });
  try {
    const file = `${tmp}/file.txt`;
    Deno.writeTextFileSync(file, "x");
    const cases: [string[], RegExp][] = [
      [["--dir", `${tmp}/missing::/data`], /--dir \S+\/missing::\/data: .*cannot be opened/],
      [["--dir-rw", `${file}::/data`], /--dir-rw \S+\/file\.txt::\/data: .* is not a directory/],
    ];
    for (const [flags, want] of cases) {
      const r = await hl(["run", ...flags, fixture("wasi_hello")]);
      assert.equal(r.code, 2, r.err);
      assert.match(r.err, want);
      assert.doesNotMatch(r.err, /wasi\.preopens/);
    }
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

kvmTest("deno task cli resolves paths against the caller's directory", async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "hl-cli-cwd-" });
  try {
    Deno.copyFileSync(fixture("fib"), `${tmp}/mine.wasm`);
    const o = await new Deno.Command(Deno.execPath(), {
      args: [
        "task",
        "--quiet",
        "--config",
        `${ROOT}deno.json`,
        "cli",
        "call",
        "mine.wasm",
        "fib",
        "10",
      ],
      cwd: tmp,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      // As from a user's shell: `deno task` keeps an INIT_CWD it inherits, and this test may
      // itself run under `deno task test`, whose INIT_CWD is the clone.
      clearEnv: true,
      env: { ...withoutInitCwd(Deno.env.toObject()), NO_COLOR: "1" },
    }).output();
    assert.equal(o.code, 0, decoder.decode(o.stderr));
    assert.equal(decoder.decode(o.stdout).trim(), "55");
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

/** The environment without INIT_CWD. */
function withoutInitCwd(env: Record<string, string>): Record<string, string> {
  const { INIT_CWD: _, ...rest } = env;
  return rest;
}
