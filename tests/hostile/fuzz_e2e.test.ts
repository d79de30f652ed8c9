/**
 * End-to-end fuzzing (issue #10): the test guest's seeded `fuzz` writes LOG and HOST_CALL frames,
 * some mutated, some on the wrong port (guest/README.md). Whatever it does, the host answers with
 * a result or a typed `SandboxError` (then the sandbox is poisoned and replaced); it never
 * crashes, hangs, leaks or throws anything untyped.
 *
 * Iterations (guest steps): `HL_E2E_FUZZ_ITERS` (default 3,000, the CI run); `deno task
 * fuzz-e2e` runs 100,000. Seed: `HL_E2E_FUZZ_SEED` (default 1).
 */
import assert from "node:assert/strict";
import { Sandbox, SandboxError } from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { StartSnapshotCache } from "../../src/start_cache.ts";
import { TESTGUEST } from "../_guests.ts";
import { guestMappingCount, kvmTest, openFdCount } from "../kvm/_kvm.ts";

const ITERS = Number(Deno.env.get("HL_E2E_FUZZ_ITERS") ?? 3_000);
const SEED = BigInt(Deno.env.get("HL_E2E_FUZZ_SEED") ?? 1);

kvmTest(`end-to-end fuzz: ${ITERS} guest steps, seed ${SEED}`, async () => {
  // The per-image start snapshots and their recycled VMs are a process-wide cache
  // (src/start_cache.ts, src/recycle.ts): emptied on both sides of the count.
  await StartSnapshotCache.default.clear();
  const vms = globalStats().liveVms;
  const fds = openFdCount();
  const mappings = guestMappingCount();
  let steps = 0;
  let sandboxes = 0;
  const errors = new Map<string, number>();
  let seed = SEED * 0x9e37_79b9n;
  const t0 = performance.now();
  let sb: Sandbox | undefined;
  let exits = 0;
  while (steps < ITERS) {
    if (!sb) {
      sb = await Sandbox.create({
        guest: TESTGUEST,
        onLog: () => void exits++,
        hostFunctions: { h: { params: ["i32"], result: "i32", fn: (x: number) => (exits++, x) } },
        timeoutMs: 10_000,
      });
      sandboxes++;
    }
    seed = (seed * 6364136223846793005n + 1442695040888963407n) & ((1n << 64n) - 1n);
    exits = 0;
    const n = Math.min(200, ITERS - steps);
    try {
      assert.equal(await sb.call("fuzz", seed, n), n);
      steps += n;
    } catch (e) {
      if (!(e instanceof SandboxError)) throw new Error(`untyped error ${e}`, { cause: e });
      assert.ok(sb.poisoned, `${e.name} did not poison`);
      errors.set(e.name, (errors.get(e.name) ?? 0) + 1);
      steps += exits + 1;
      await sb.dispose();
      sb = undefined;
    }
  }
  await sb?.dispose();
  const ms = performance.now() - t0;
  console.log(
    `${steps} steps, ${sandboxes} sandboxes, ${ms.toFixed(0)} ms; errors: ${
      JSON.stringify(Object.fromEntries(errors))
    }`,
  );
  await StartSnapshotCache.default.clear();
  assert.equal(globalStats().liveVms, vms);
  assert.ok(openFdCount() <= fds + 2);
  assert.equal(guestMappingCount(), mappings);
});
