/**
 * `hl js` and `hl call <script.js>` (issue 20): console output, scriptArgs, exitCode, JSON
 * arguments and result, an uncaught exception (exit 1, one line), a timeout (exit 124).
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const BUILT = (() => {
  try {
    return Deno.statSync(new URL("../../target/runtimes/quickjs.wasm", import.meta.url)).isFile;
  } catch {
    return false;
  }
})();

async function hl(args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", CLI, ...args],
    stdin: "null",
    env: { NO_COLOR: "1" },
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function test(name: string, fn: () => Promise<void>) {
  if (BUILT) kvmTest(name, fn);
  else Deno.test({ name: `${name} (quickjs.wasm not built)`, ignore: true, fn() {} });
}

test("cli js: output, scriptArgs, exitCode; hl call on a script", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/s.js`;
    await Deno.writeTextFile(
      script,
      `console.log("args", scriptArgs); console.error("err");
       function add(a, b) { return { sum: a.x + b }; }
       var lib = { greet: (n) => "hi " + n };
       if (typeof scriptArgs !== "undefined") exitCode = scriptArgs.length;`,
    );
    const r = await hl(["js", script, "a", "b"]);
    assert.deepEqual(r, { code: 2, stdout: 'args ["a","b"]\n', stderr: "err\n" });
    await Deno.writeTextFile(
      `${dir}/c.js`,
      `function add(a, b) { return { sum: a.x + b }; }
       var lib = { greet: (n) => "hi " + n };`,
    );
    const c = await hl(["call", `${dir}/c.js`, "add", '{"x":1}', "2"]);
    assert.deepEqual(c, { code: 0, stdout: '{"sum":3}\n', stderr: "" });
    assert.equal((await hl(["call", `${dir}/c.js`, "lib.greet", "bob"])).stdout, '"hi bob"\n');
    await Deno.writeTextFile(`${dir}/bad.js`, "null.x");
    const bad = await hl(["js", `${dir}/bad.js`]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^hl js: TypeError: .*null/);
    assert.equal(bad.stderr.trim().split("\n").length, 1);
    await Deno.writeTextFile(`${dir}/spin.js`, "while (1) {}");
    assert.equal((await hl(["js", "--timeout", "200", `${dir}/spin.js`])).code, 124);
    const help = await hl(["js", "--help"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: hl js/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
