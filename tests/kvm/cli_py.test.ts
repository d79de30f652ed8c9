/**
 * `hl py` (issue 21): output, sys.argv, the sys.exit code, an uncaught exception (its traceback,
 * exit 1), a timeout (exit 124), a read-only --dir. Skipped when python-3.12.wasm is not fetched.
 */
import assert from "node:assert/strict";
import { runDeno } from "./_kvm.ts";
import { moduleTest, PYTHON_BUILT } from "./_py.ts";

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
/** Runs `hl`; the note a slow first create prints (the compile) is left out of stderr. */
async function hl(args: string[]) {
  const r = await runDeno(["run", "-A", "--quiet", CLI, ...args]);
  return { ...r, err: r.err.replace(/^hl py: (preparing |compiling ).*\n/gm, "") };
}

moduleTest(
  PYTHON_BUILT,
  "python-3.12.wasm not fetched",
  "cli py: output, argv, exit codes, tracebacks, timeout, --dir",
  async () => {
    const dir = await Deno.makeTempDir();
    try {
      const script = `${dir}/s.py`;
      await Deno.writeTextFile(
        script,
        `import sys\nprint("args", sys.argv[1:])\nprint("err", file=sys.stderr)\n` +
          `if len(sys.argv) > 2: sys.exit(int(sys.argv[2]))\n` +
          `if len(sys.argv) > 1 and sys.argv[1] == "raise": {}["k"]\n` +
          `if len(sys.argv) > 1 and sys.argv[1] == "spin":\n    while True: pass\n` +
          `if len(sys.argv) > 1 and sys.argv[1] == "read": print(open("/data/s.py").read(6))\n`,
      );
      assert.deepEqual(await hl(["py", script]), { code: 0, out: "args []\n", err: "err\n" });
      assert.equal((await hl(["py", script, "x", "7"])).code, 7);
      const raised = await hl(["py", script, "raise"]);
      assert.equal(raised.code, 1);
      assert.match(raised.err, /Traceback[\s\S]*KeyError: 'k'\n$/);
      const spun = await hl(["py", "--timeout", "300", script, "spin"]);
      assert.equal(spun.code, 124);
      assert.match(spun.err, /^hl py: .*timed out/);
      assert.equal((await hl(["py", script, "read"])).code, 1, "no host files without --dir");
      const read = await hl(["py", "--dir", dir, script, "read"]);
      assert.deepEqual([read.code, read.out], [0, "args ['read']\nimport\n"]);
      assert.equal((await hl(["py", `${dir}/missing.py`])).code, 1);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
