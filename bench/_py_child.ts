/**
 * A child process's first `PySandbox.create`, timed in the child: shared by bench/py.bench.ts and
 * bench/py_full.bench.ts for their cold-create rows (issue 21: ≤ 1 s).
 */

/**
 * A child's first create with `env` and `options` (JSON: runtime, setup, maxOutputBytes, ...): its
 * time in ms and whether it started from the runtime base state.
 */
export async function childCreate(
  env: Record<string, string>,
  options: Record<string, unknown>,
): Promise<{ ms: number; base: boolean }> {
  const code = `import { PySandbox } from ${
    JSON.stringify(new URL("../src/py/sandbox.ts", import.meta.url).href)
  };
import { startSnapshotStats } from ${
    JSON.stringify(new URL("../src/start_snapshots.ts", import.meta.url).href)
  };
const t = performance.now();
const py = await PySandbox.create(${JSON.stringify(options)});
const ms = performance.now() - t;
console.log(JSON.stringify({ ms, base: startSnapshotStats().pyBaseHits === 1 }));
await py.dispose();`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", code],
    env,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

/**
 * The row for options never seen on this machine, in children: a new `setup`, and `setup: "pass"`
 * with a new `maxOutputBytes` (which does not change the start) — both from the runtime base state
 * once one was written (setup.ts, or any earlier create).
 */
export async function newOptionsRow(base: Record<string, unknown>): Promise<string> {
  const one = async (options: Record<string, unknown>) => {
    const r = await childCreate({}, { ...base, ...options });
    return `${r.ms.toFixed(2)} ms (${r.base ? "from the runtime base state" : "artifact path"})`;
  };
  const setup = await one({ setup: `x = 1  # ${crypto.randomUUID()}` });
  const options = await one({
    setup: "pass",
    maxOutputBytes: (64 << 20) + 1024 * Math.floor(Math.random() * 1e6),
  });
  return `cold create in a child, new setup: ${setup}; new options, setup "pass": ${options} (goal ≤ 1 s)`;
}
