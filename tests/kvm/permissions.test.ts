/**
 * A consumer's own test file, outside the repository, run with `deno test` under the permission
 * sets a user would try: `--allow-ffi` alone is enough for `Sandbox` (built-in test guest, and a
 * guest given as a path) and `WasmSandbox`; without `--allow-ffi`, every test fails with a
 * `PermissionError` naming `--allow-ffi` (never "not built"); `HL_*` variables are not consulted
 * unless `--allow-env` grants them (issue 26, item 1).
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";

const MOD = new URL("../../mod.ts", import.meta.url).href;
const GUEST_PATH =
  new URL("../../guest/target/x86_64-unknown-linux-gnu/release/testguest", import.meta.url)
    .pathname;

/** A module exporting `add(i32, i32) -> i32`. */
const ADD_WASM = [
  0,
  97,
  115,
  109,
  1,
  0,
  0,
  0,
  1,
  7,
  1,
  96,
  2,
  127,
  127,
  1,
  127,
  3,
  2,
  1,
  0,
  7,
  7,
  1,
  3,
  97,
  100,
  100,
  0,
  0,
  10,
  9,
  1,
  7,
  0,
  32,
  0,
  32,
  1,
  106,
  11,
];

const CONSUMER_TEST = `
import { guests, PermissionError, Sandbox, WasmSandbox } from "${MOD}";
const report = (name: string, e: unknown) => {
  const flag = e instanceof PermissionError ? e.flag : "";
  console.log("RESULT " + name + " " + (e === undefined ? "ok" : (e as Error).name + " " + flag));
  console.log("MESSAGE " + name + " " + (e instanceof Error ? e.message : ""));
};
Deno.test("builtin guest", async () => {
  try {
    await using sb = await Sandbox.create({ guest: guests.testguest });
    if ((await sb.call("add", 2, 3)) !== 5) throw new Error("wrong sum");
    report("builtin", undefined);
  } catch (e) { report("builtin", e); throw e; }
});
Deno.test("guest path", async () => {
  try {
    await using sb = await Sandbox.create({ guest: ${JSON.stringify(GUEST_PATH)} });
    if ((await sb.call("add", 4, 5)) !== 9) throw new Error("wrong sum");
    report("path", undefined);
  } catch (e) { report("path", e); throw e; }
});
Deno.test("wasm", async () => {
  try {
    await using sb = await WasmSandbox.create({ module: new Uint8Array(${
  JSON.stringify(ADD_WASM)
}) });
    if ((await sb.call("add", 2, 3)) !== 5) throw new Error("wrong sum");
    report("wasm", undefined);
  } catch (e) { report("wasm", e); throw e; }
});
`;

interface Outcome {
  code: number;
  results: Map<string, string>;
  messages: Map<string, string>;
  out: string;
}

async function consumerTest(
  dir: string,
  flags: string[],
  env: Record<string, string> = {},
): Promise<Outcome> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--no-check", "--no-prompt", ...flags, `${dir}/consumer.test.ts`],
    cwd: dir,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const results = new Map<string, string>();
  const messages = new Map<string, string>();
  for (const m of text.matchAll(/^RESULT (\S+) (.*)$/gm)) results.set(m[1], m[2].trim());
  for (const m of text.matchAll(/^MESSAGE (\S+) (.*)$/gm)) messages.set(m[1], m[2].trim());
  return { code: out.code, results, messages, out: text };
}

async function withConsumer(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "hl-consumer-" });
  try {
    await Deno.writeTextFile(`${dir}/consumer.test.ts`, CONSUMER_TEST);
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

kvmTest("permissions: a consumer's deno test passes with --allow-ffi alone", async () => {
  await withConsumer(async (dir) => {
    for (const flags of [["--allow-ffi"], ["--allow-ffi", "--allow-read"]]) {
      const r = await consumerTest(dir, flags);
      assert.equal(r.code, 0, `${flags.join(" ")}:\n${r.out}`);
      for (const name of ["builtin", "path", "wasm"]) {
        assert.equal(r.results.get(name), "ok", `${flags.join(" ")} ${name}:\n${r.out}`);
      }
    }
  });
});

kvmTest("permissions: without --allow-ffi every test fails naming the flag", async () => {
  await withConsumer(async (dir) => {
    for (const flags of [[], ["--allow-read"], ["--allow-read", "--allow-env"], ["--allow-env"]]) {
      const r = await consumerTest(dir, flags);
      assert.notEqual(r.code, 0, flags.join(" "));
      for (const name of ["builtin", "path", "wasm"]) {
        const label = `[${flags.join(" ")}] ${name}:\n${r.out}`;
        assert.equal(r.results.get(name), "PermissionError --allow-ffi", label);
        assert.match(r.messages.get(name) ?? "", /--allow-ffi/, label);
        assert.doesNotMatch(r.messages.get(name) ?? "", /not built/, label);
      }
    }
  });
});

kvmTest("permissions: HL_* variables apply only where --allow-env grants them", async () => {
  await withConsumer(async (dir) => {
    const env = { HL_SANDBOX_LIB: `${dir}/no-such-library.so` };
    // Not granted: the variable does not steer the library, which is found as usual.
    const free = await consumerTest(dir, ["--allow-ffi"], env);
    assert.equal(free.results.get("builtin"), "ok", free.out);
    // Granted: it names the only library tried, which does not exist.
    const bound = await consumerTest(dir, ["--allow-ffi", "--allow-env=HL_SANDBOX_LIB"], env);
    assert.equal(bound.results.get("builtin"), "LibraryNotFoundError", bound.out);
    assert.match(bound.messages.get("builtin") ?? "", /no-such-library\.so/);
  });
});
