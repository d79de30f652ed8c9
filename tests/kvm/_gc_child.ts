// Runs a child script of a memory-view test with V8's `--trace-gc` (plus `flags`), and returns the
// collections V8 printed (in order) and the child's result: its last stdout line starting with `{`,
// parsed. Counts collections, never times.
import assert from "node:assert/strict";

/** What a child run gave: V8's collection lines and the child's JSON result. */
export interface ChildGcs {
  readonly gcs: string[];
  readonly result: unknown;
}

/** Runs `child` (a file next to this one) with `--trace-gc,<flags>` and `args`; fails if it fails. */
export async function runGcChild(
  child: string,
  flags: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<ChildGcs> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--no-check",
      `--v8-flags=--trace-gc${flags ? `,${flags}` : ""}`,
      new URL(child, import.meta.url).pathname,
      ...args,
    ],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.success, true, new TextDecoder().decode(out.stderr));
  const lines = stdout.split("\n");
  const result = lines.findLast((l) => l.startsWith("{"));
  assert.ok(result !== undefined, stdout);
  return {
    gcs: lines.filter((l) => / ms: (Scavenge|Mark-Compact|Incremental)/.test(l)),
    result: JSON.parse(result),
  };
}

/**
 * The full collections, or ones for external memory pressure, between the child's two collections
 * of its own (reason "testing": a full one before what is counted, a scavenge after it).
 */
export function causedBetweenMarks(gcs: string[]): string[] {
  const [from, to] = [0, 1].map((k) => gcs.filter((l) => l.includes("testing"))[k]);
  assert.ok(from !== undefined && to !== undefined, gcs.join("\n"));
  return gcs.slice(gcs.indexOf(from) + 1, gcs.indexOf(to)).filter((l) =>
    l.includes("Mark-Compact") || l.includes("external memory pressure")
  );
}
