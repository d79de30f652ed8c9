/**
 * Exit floods (issue #10, findings 5 and 6): LOG exits with no `onLog` are counted and never
 * decoded; every call has an exit budget (`maxExitsPerCall`, default one million) past which it
 * fails with `ExitBudgetError` and poisons; timeouts hold throughout.
 */
import assert from "node:assert/strict";
import {
  ArgumentError,
  DEFAULT_MAX_EXITS_PER_CALL,
  ExitBudgetError,
  Sandbox,
  SandboxPoisonedError,
  TimeoutError,
} from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest } from "./_kvm.ts";

const nop = { params: [], result: "void" as const, fn: () => undefined };

kvmTest("200,000 LOG exits in one call: skipped undecoded without onLog, within the budget", () => {
  assert.equal(DEFAULT_MAX_EXITS_PER_CALL, 1_000_000);
  const sb = Sandbox.create({ guest: TESTGUEST });
  return sb.then(async (sb) => {
    const t0 = performance.now();
    assert.equal(sb.callSync("log_flood", 200_000), 200_000);
    const ms = performance.now() - t0;
    assert.equal(sb.stats().logsSkipped, 200_000);
    assert.equal(sb.poisoned, false);
    console.log(`200,000 skipped LOG exits: ${ms.toFixed(0)} ms`);
    await sb.dispose();
  });
});

kvmTest("100,000 host calls in one call: served within the default budget", async () => {
  let calls = 0;
  await using sb = await Sandbox.create({
    guest: TESTGUEST,
    hostFunctions: { nop: { ...nop, fn: () => void calls++ } },
  });
  const t0 = performance.now();
  assert.equal(sb.callSync("host_call_flood", "nop", 100_000), 100_000);
  console.log(`100,000 host calls: ${(performance.now() - t0).toFixed(0)} ms`);
  assert.equal(calls, 100_000);
});

kvmTest("past maxExitsPerCall a flood ends in ExitBudgetError and poisons", async (t) => {
  for (const sync of [false, true]) {
    await t.step(`LOG flood with onLog (${sync ? "callSync" : "call"})`, async () => {
      let logs = 0;
      await using sb = await Sandbox.create({
        guest: TESTGUEST,
        onLog: () => void logs++,
        maxExitsPerCall: 1_000,
      });
      const run = () => sync ? sb.callSync("log_flood", 200_000) : sb.call("log_flood", 200_000);
      await assert.rejects(
        async () => await run(),
        (e) => e instanceof ExitBudgetError && e.maxExits === 1_000,
      );
      // The LOG that breaks the budget has been read (and delivered) when the call fails.
      assert.equal(logs, 1_001);
      assert.equal(sb.poisoned, true);
      await assert.rejects(sb.call("add", 1, 2), SandboxPoisonedError);
    });
  }
  await t.step("host-call flood, a per-call budget", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: { nop } });
    assert.equal(
      await sb.callWithOptions({ maxExitsPerCall: 10 }, "host_call_flood", "nop", 10),
      10,
    );
    await assert.rejects(
      sb.callWithOptions({ maxExitsPerCall: 10 }, "host_call_flood", "nop", 11),
      ExitBudgetError,
    );
    assert.equal(sb.poisoned, true);
  });
  await t.step("the option is checked", async () => {
    await assert.rejects(
      Sandbox.create({ guest: TESTGUEST, maxExitsPerCall: 0 }),
      ArgumentError,
    );
  });
  await t.step("timeouts hold during a flood under any budget", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST, maxExitsPerCall: 2 ** 50 });
    // 4 billion LOG exits would take hours: a TimeoutError at all is the proof.
    assert.throws(
      () => sb.callSyncWithOptions({ timeoutMs: 100 }, "log_flood", 4_000_000_000),
      TimeoutError,
    );
  });
});
