/**
 * Counts per operation for the benchmarks: ioctls and VM exits do not drift with machine speed,
 * so they mean something under the nested emulator where the timings do not.
 */
import type { SandboxStats } from "../src/sandbox.ts";

/** Runs `op` `n` times and prints the ioctls and VM exits it cost per run. */
export async function printCountsPerOp(
  label: string,
  sandbox: { stats(): SandboxStats },
  op: () => Promise<unknown>,
  n = 20,
): Promise<void> {
  const before = sandbox.stats();
  for (let i = 0; i < n; i++) await op();
  const after = sandbox.stats();
  const ioctls = (after.ioctls - before.ioctls) / n;
  const exits = (after.exits - before.exits) / n;
  console.log(`  ${label}: ${ioctls} ioctls, ${exits} VM exits per operation`);
}
