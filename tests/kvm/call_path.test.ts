// The call path's correctness: stops that always land, errors that always poison, timeouts on
// the synchronous path, re-entrant calls, dispose during a call. Orderings, never times.
import assert from "node:assert/strict";
import {
  CancelledError,
  GuestError,
  ReentrantCallError,
  Sandbox,
  SandboxDisposedError,
  SandboxError,
  SandboxPoisonedError,
  TimeoutError,
  WasmSandbox,
} from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

/** Blocks this thread for `ms` (a slow, synchronous callback). */
function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) { /* spin */ }
}

kvmTest("call path: a timeout is never lost (1,000 LOG-then-spin calls, slow onLog)", async () => {
  // The timer comes due while onLog blocks the event loop; the stop must still land whether it
  // arrives before the guest is resumed or while it spins.
  let timeouts = 0;
  for (let i = 0; i < 1000; i++) {
    const sb = await Sandbox.create({
      guest: TESTGUEST,
      heapSize: 1 << 20,
      onLog: () => busyWait(i % 3 === 0 ? 0 : 11),
    });
    try {
      await assert.rejects(
        sb.callWithOptions({ timeoutMs: 10 }, "log_then_spin", "tick"),
        TimeoutError,
      );
      timeouts++;
    } finally {
      await sb.dispose();
    }
  }
  assert.equal(timeouts, 1000);
});

kvmTest("call path: every error that escapes a call poisons the sandbox", async (t) => {
  await t.step("an onLog that throws", async () => {
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      onLog: () => {
        throw new Error("log sink broke");
      },
    });
    await assert.rejects(
      sb.call("log", "hello"),
      (e) => e instanceof SandboxError && /onLog callback threw: log sink broke/.test(e.message),
    );
    assert.equal(sb.poisoned, true);
    await assert.rejects(sb.call("add", 1, 2), SandboxPoisonedError);
  });

  await t.step("a host error too long for the input buffer is truncated, not stale", async () => {
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      inputSize: 4096,
      hostFunctions: {
        boom: {
          params: ["i32"],
          result: "i32",
          fn: () => {
            throw new Error("é".repeat(10_000));
          },
        },
      },
    });
    await assert.rejects(
      sb.call("call_host", "boom", 1),
      (e) => e instanceof GuestError && e.code === 3 && e.message.length < 4096,
    );
    // The guest got a well-formed HOST_ERROR and answered: not poisoned, and the next call gets
    // its own answer, not the previous one's.
    assert.equal(sb.poisoned, false);
    assert.equal(await sb.call("add", 20, 22), 42);
  });

  await t.step(
    "host-function names: 255 bytes get an answer, longer never leave the guest",
    async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST, inputSize: 4096 });
      await assert.rejects(
        sb.call("call_host", "n".repeat(255), 1),
        (e) => e instanceof GuestError && /no host function named/.test(e.message),
      );
      // Names are 1-255 bytes (issue #10): the guest's own codec refuses to write a longer one,
      // so the host is never asked; the sandbox stays usable.
      await assert.rejects(
        sb.call("call_host", "n".repeat(3000), 1),
        (e) => e instanceof GuestError && /function name not 1..=255 bytes/.test(e.message),
      );
      assert.equal(sb.poisoned, false);
      assert.equal(await sb.call("add", 1, 2), 3);
    },
  );
});

kvmTest("call path: callSync honours timeouts through a native deadline", async (t) => {
  await t.step("per call", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    assert.throws(() => sb.callSyncWithOptions({ timeoutMs: 20 }, "spin"), TimeoutError);
    assert.equal(sb.poisoned, true);
    assert.throws(() => sb.callSync("add", 1, 2), SandboxPoisonedError);
  });
  await t.step("the sandbox's default", async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST, timeoutMs: 20 });
    assert.equal(sb.callSync("add", 1, 2), 3);
    assert.throws(() => sb.callSync("spin"), TimeoutError);
  });
  await t.step("across host calls", async () => {
    await using sb = await Sandbox.create({
      guest: TESTGUEST,
      hostFunctions: {
        slow: {
          params: ["i32"],
          result: "i32",
          fn: (x: number) => (busyWait(15), x),
        },
      },
    });
    // Each host call takes 15 ms; the guest makes two: the deadline passes between them.
    assert.throws(
      () => sb.callSyncWithOptions({ timeoutMs: 20 }, "call_host_twice", "slow", 1),
      TimeoutError,
    );
  });
});

kvmTest("call path: a host function calling back into its own sandbox fails at once", async () => {
  const seen: unknown[] = [];
  let sb: Sandbox | undefined;
  sb = await Sandbox.create({
    guest: TESTGUEST,
    hostFunctions: {
      reenter: {
        params: ["i32"],
        result: "i32",
        fn: async (x: number) => {
          await Promise.resolve();
          try {
            await sb!.call("add", x, x);
          } catch (e) {
            seen.push(e);
          }
          return 2 * x;
        },
      },
      reenterSync: {
        params: ["i32"],
        result: "i32",
        fn: (x: number) => {
          try {
            sb!.callSync("add", x, x);
          } catch (e) {
            seen.push(e);
          }
          return 3 * x;
        },
      },
    },
  });
  try {
    assert.equal(await sb.call("call_host", "reenter", 21), 42);
    assert.equal(sb.callSync("call_host", "reenterSync", 2), 6);
    assert.equal(seen.length, 2);
    assert.ok(seen.every((e) => e instanceof ReentrantCallError), String(seen));
    // Other callers still queue normally.
    const [a, b] = await Promise.all([sb.call("add", 1, 1), sb.call("add", 2, 2)]);
    assert.deepEqual([a, b], [2, 4]);
    assert.equal(sb.poisoned, false);
  } finally {
    await sb.dispose();
    sb = undefined;
  }
});

kvmTest("call path: dispose during a call is always SandboxDisposedError", async () => {
  for (let i = 0; i < 40; i++) {
    const sb = await Sandbox.create({ guest: TESTGUEST, heapSize: 1 << 20 });
    const running = sb.call(i % 2 === 0 ? "spin" : "noop");
    // Dispose at different points: before the run is posted, during it, after it.
    if (i % 4 >= 2) await new Promise((r) => setTimeout(r, i % 8));
    await sb.dispose();
    try {
      await running;
      assert.equal(i % 2, 1, "only a noop may finish before the dispose");
    } catch (e) {
      assert.ok(e instanceof SandboxDisposedError, `run ${i}: ${e}`);
    }
  }
});

kvmTest("call path: WasmSandbox.interrupt() stops a spinning module", async () => {
  await using w = await WasmSandbox.create({ module: fixtureBytes("traps"), engine: "wasmi" });
  const running = w.call("spin");
  const rejected = assert.rejects(running, CancelledError);
  await new Promise((r) => setTimeout(r, 20));
  w.interrupt();
  await rejected;
  assert.equal(w.poisoned, true);
  w.interrupt(); // idle: a no-op
});
