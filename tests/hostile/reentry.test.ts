/**
 * Hostile host-side code (issue 18 items 2, 3 and 6): host functions that re-enter their own
 * sandbox (snapshot, restore, call), sandbox handles kept past a pool's run, and host functions or
 * `onLog` callbacks that throw or return values whose formatting throws (an object whose
 * `toString` throws, a revoked Proxy). Each asserts a typed outcome; "at once" is an ordering
 * (settled before a macrotask queued after it), never a time.
 */

import assert from "node:assert/strict";
import {
  GuestError,
  ReentrantCallError,
  Sandbox,
  SandboxDisposedError,
  SandboxError,
  SandboxPool,
  WasmSandbox,
  WasmSandboxPool,
  WasmTrapError,
} from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { fixture } from "../wasm/fixtures.ts";
import { engineTest, kvmTest, WASM_ENGINES } from "../kvm/_kvm.ts";

/** How `p` settled, if it did before a macrotask queued now runs; `"pending"` otherwise. */
async function settledAtOnce(p: Promise<unknown>): Promise<unknown> {
  const outcome = p.then((v) => ({ value: v }), (e: unknown) => ({ error: e }));
  return await Promise.race([
    outcome,
    new Promise((resolve) => setTimeout(() => resolve("pending"), 0)),
  ]);
}

/** What `p` rejected with, or `undefined` when it fulfilled. */
function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => undefined, (e: unknown) => e);
}

function assertRefusedAtOnce(outcome: unknown, what: string): void {
  assert.notEqual(outcome, "pending", `${what} did not settle at once`);
  const error = (outcome as { error?: unknown }).error;
  assert.ok(error instanceof ReentrantCallError, `${what}: ${String(error)}`);
}

/** The handle operations {@linkcode assertRevoked} checks, over a snapshot type `S`. */
interface Handle<S extends { dispose(): Promise<void> }> {
  readonly disposed: boolean;
  snapshot(): Promise<S>;
  restore(snapshot: S): Promise<void>;
  stats(): unknown;
  interrupt(): void;
  dispose(): Promise<void>;
}

/**
 * `old`, a pool handle revoked at the end of its run, refuses snapshot/restore/stats, and its
 * interrupt and dispose are no-ops that leave `current` (the run holding the VM now) alive.
 */
async function assertRevoked<S extends { dispose(): Promise<void> }>(
  old: Handle<S>,
  current: Handle<S>,
): Promise<void> {
  await assert.rejects(old.snapshot(), SandboxDisposedError);
  const snap = await current.snapshot();
  try {
    await assert.rejects(old.restore(snap), SandboxDisposedError);
  } finally {
    await snap.dispose();
  }
  assert.throws(() => old.stats(), SandboxDisposedError);
  old.interrupt(); // a no-op
  await old.dispose(); // a no-op: the VM is the current run's
  assert.equal(current.disposed, false);
}

/** Values whose formatting throws. */
function hostileValues(): { name: string; value: unknown }[] {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const { proxy: errorProxy, revoke: revokeError } = Proxy.revocable(new Error("x"), {});
  revokeError();
  return [
    {
      name: "an object whose toString throws",
      value: {
        toString() {
          throw new Error("toString says no");
        },
      },
    },
    {
      name: "an Error whose message getter throws",
      value: Object.defineProperty(new Error("m"), "message", {
        get() {
          throw new Error("message says no");
        },
      }),
    },
    { name: "a revoked Proxy", value: proxy },
    { name: "a revoked Proxy of an Error", value: errorProxy },
  ];
}

// ---- item 2: a host function that awaits snapshot()/restore()/call() of its own sandbox ----

kvmTest(
  "re-entry: a host function's snapshot()/restore() of its own sandbox fails at once",
  async () => {
    const outcomes: Record<string, unknown> = {};
    let sb: Sandbox | undefined;
    let snap: Awaited<ReturnType<Sandbox["snapshot"]>> | undefined;
    sb = await Sandbox.create({
      guest: TESTGUEST,
      hostFunctions: {
        reenter: {
          params: ["i32"],
          result: "i32",
          fn: async (x: number) => {
            outcomes.snapshot = await settledAtOnce(sb!.snapshot());
            outcomes.restore = await settledAtOnce(sb!.restore(snap!));
            return x + 1;
          },
        },
        reenterSync: {
          params: ["i32"],
          result: "i32",
          fn: (x: number) => {
            // The synchronous path: the promises must reject, not queue behind the blocked call.
            const s = sb!.snapshot();
            const r = sb!.restore(snap!);
            outcomes.syncSnapshot = settledAtOnce(s);
            outcomes.syncRestore = settledAtOnce(r);
            return x + 2;
          },
        },
      },
    });
    try {
      snap = await sb.snapshot();
      assert.equal(await sb.call("counter"), 1n);
      assert.equal(await sb.call("call_host", "reenter", 40), 41);
      assertRefusedAtOnce(outcomes.snapshot, "snapshot() from a host function");
      assertRefusedAtOnce(outcomes.restore, "restore() from a host function");
      assert.equal(sb.callSync("call_host", "reenterSync", 40), 42);
      assertRefusedAtOnce(await outcomes.syncSnapshot, "snapshot() from a sync host function");
      assertRefusedAtOnce(await outcomes.syncRestore, "restore() from a sync host function");
      // Nothing was snapshotted or restored, and the sandbox is usable.
      assert.equal(sb.poisoned, false);
      assert.equal(await sb.call("counter"), 2n);
      await sb.restore(snap);
      assert.equal(await sb.call("counter"), 1n);
    } finally {
      await snap?.dispose();
      await sb.dispose();
      sb = undefined;
    }
  },
);

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  test("re-entry: a Wasm import's call()/snapshot()/restore() of its own sandbox fails at once", async () => {
    const outcomes: Record<string, unknown> = {};
    let w: WasmSandbox | undefined;
    let snap: Awaited<ReturnType<WasmSandbox["snapshot"]>> | undefined;
    let reenter = false;
    w = await WasmSandbox.create({
      module: fixture("state"),
      engine,
      cache: false,
      hostFunctions: {
        env: {
          seen: {
            params: ["i32"],
            result: "void",
            fn: async () => {
              if (!reenter) return;
              outcomes.call = await settledAtOnce(w!.call("count"));
              outcomes.snapshot = await settledAtOnce(w!.snapshot());
              outcomes.restore = await settledAtOnce(w!.restore(snap!));
            },
          },
        },
      },
    });
    try {
      snap = await w.snapshot();
      reenter = true;
      assert.equal(await w.call("bump"), 1);
      for (const what of ["call", "snapshot", "restore"]) {
        assertRefusedAtOnce(outcomes[what], `${what}() from a Wasm import`);
      }
      reenter = false;
      assert.equal(w.poisoned, false);
      assert.equal(await w.call("bump"), 2);
      await w.restore(snap);
      assert.equal(await w.call("count"), 0);
    } finally {
      await snap?.dispose();
      await w.dispose();
      w = undefined;
    }
  });
}

// ---- item 3: a handle kept after a pool's run reaches nothing ----

kvmTest("pool handles: a SandboxPool handle kept past its run is revoked", async () => {
  await using pool = await SandboxPool.create({ guest: TESTGUEST, size: 1 });
  let kept: Sandbox | undefined;
  assert.equal(
    await pool.run(async (sb) => {
      kept = sb;
      return await sb.call("counter");
    }),
    1n,
  );
  const old = kept!;
  assert.equal(old.disposed, true);
  // Run 2 gets the same VM (size 1); the kept handle of run 1 reaches none of it.
  await pool.run(async (sb) => {
    assert.notEqual(sb, old, "every run gets its own handle");
    assert.equal(await sb.call("counter"), 1n);
    assert.equal(await sb.call("counter"), 2n);
    await assert.rejects(old.call("counter"), SandboxDisposedError);
    await assert.rejects(old.callWithOptions({}, "counter"), SandboxDisposedError);
    assert.throws(() => old.callSync("counter"), SandboxDisposedError);
    await assertRevoked(old, sb);
    assert.equal(await sb.call("counter"), 3n, "run 2's state is untouched");
  });
  assert.equal(pool.size, 1);
  assert.equal(await pool.run((sb) => sb.call("counter")), 1n);
});

kvmTest(
  "pool handles: a call of a SandboxPool handle still running when its run ends is stopped",
  async () => {
    await using pool = await SandboxPool.create({
      guest: TESTGUEST,
      size: 1,
      hostFunctions: {
        never: { params: ["i32"], result: "i32", fn: () => new Promise<number>(() => {}) },
      },
    });
    let spinning: Promise<unknown> | undefined;
    let waiting: Promise<unknown> | undefined;
    let queued: Promise<unknown> | undefined;
    // Not timed: without the revocation, these would end only by their (long) timeouts.
    await pool.run((sb) => {
      spinning = sb.callWithOptions({ timeoutMs: 120_000 }, "spin");
      queued = sb.call("counter");
    });
    await assert.rejects(spinning!, SandboxDisposedError);
    await assert.rejects(queued!, SandboxDisposedError);
    await pool.run((sb) => {
      waiting = sb.callWithOptions({ timeoutMs: 120_000 }, "call_host", "never", 1);
    });
    await assert.rejects(waiting!, SandboxDisposedError);
    // The VM was restored: the next borrower starts afresh.
    assert.equal(await pool.run((sb) => sb.call("counter")), 1n);
    assert.equal(pool.size, 1);
  },
);

kvmTest("pool handles: a borrower that disposes its handle gets the VM replaced", async () => {
  await using pool = await SandboxPool.create({ guest: TESTGUEST, size: 1 });
  await pool.run((sb) => sb.dispose());
  assert.equal(pool.size, 1);
  assert.equal(await pool.run((sb) => sb.call("counter")), 1n);
});

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  test("pool handles: a WasmSandboxPool handle kept past its run is revoked", async () => {
    await using pool = await WasmSandboxPool.create({
      module: fixture("state"),
      engine,
      size: 1,
      hostFunctions: { env: { seen: { params: ["i32"], result: "void", fn: () => {} } } },
    });
    let kept: WasmSandbox | undefined;
    assert.equal(
      await pool.run(async (w) => {
        kept = w;
        return await w.call("bump");
      }),
      1,
    );
    const old = kept!;
    assert.equal(old.disposed, true);
    await pool.run(async (w) => {
      assert.notEqual(w, old, "every run gets its own handle");
      assert.equal(await w.call("bump"), 1);
      await w.call("store", 0, 7);
      await assert.rejects(old.call("bump"), SandboxDisposedError);
      await assert.rejects(old.writeBytes(0, new Uint8Array([9, 9, 9, 9])), SandboxDisposedError);
      await assert.rejects(old.readBytes(0, 4), SandboxDisposedError);
      await assert.rejects(old.memorySize(), SandboxDisposedError);
      await assertRevoked(old, w);
      assert.equal(await w.call("load", 0), 7, "run 2's memory is untouched");
      assert.equal(await w.call("count"), 1, "run 2's globals are untouched");
    });
    assert.equal(await pool.run((w) => w.call("bump")), 1);
    assert.equal(pool.size, 1);
  });

  test("pool handles: work of a WasmSandboxPool handle still running when its run ends is stopped", async () => {
    let hang = false;
    await using pool = await WasmSandboxPool.create({
      module: fixture("state"),
      engine,
      size: 1,
      hostFunctions: {
        env: {
          seen: {
            params: ["i32"],
            result: "void",
            fn: () => hang ? new Promise<undefined>(() => {}) : undefined,
          },
        },
      },
    });
    let waiting: Promise<unknown> | undefined;
    let queued: Promise<unknown> | undefined;
    hang = true;
    await pool.run((w) => {
      // `seen` never settles.
      waiting = w.callWithOptions({ timeoutMs: 120_000 }, "bump");
      queued = w.writeBytes(0, new Uint8Array([1, 2, 3, 4]));
    });
    hang = false;
    await assert.rejects(waiting!, SandboxDisposedError);
    await assert.rejects(queued!, SandboxDisposedError);
    assert.equal(await pool.run((w) => w.call("bump")), 1);
    assert.equal(await pool.run((w) => w.call("load", 0)), 0);
    assert.equal(pool.size, 1);
  });
}

// ---- item 6: what a host function or onLog throws or returns is formatted defensively ----

kvmTest(
  "formatting: host functions and onLog that throw or return unformattable values",
  async () => {
    for (const { name, value } of hostileValues()) {
      let sb: Sandbox | undefined;
      try {
        sb = await Sandbox.create({
          guest: TESTGUEST,
          hostFunctions: {
            throws: {
              params: ["i32"],
              result: "i32",
              fn: () => {
                throw value;
              },
            },
            rejects: { params: ["i32"], result: "i32", fn: () => Promise.reject(value) },
            returns: { params: ["i32"], result: "i32", fn: () => value as number },
            resolves: {
              params: ["i32"],
              result: "i32",
              fn: () => Promise.resolve(value as number),
            },
          },
        });
        // The host function's failure reaches the guest as an error it passes on: GuestError,
        // the sandbox stays usable.
        for (const fn of ["throws", "rejects", "returns", "resolves"]) {
          const e = await failure(sb.call("call_host", fn, 1));
          assert.ok(e instanceof GuestError, `${name}, ${fn}: ${String(e)}`);
          assert.equal(e.code, 3, `${name}, ${fn}`);
        }
        for (const fn of ["throws", "returns"]) {
          assert.throws(() => sb!.callSync("call_host", fn, 1), GuestError, `${name}, sync ${fn}`);
        }
        assert.equal(sb.poisoned, false);
        assert.equal(await sb.call("add", 1, 2), 3);
      } finally {
        await sb?.dispose();
      }
      // onLog: the call fails with a SandboxError whose cause is the value itself.
      for (const sync of [false, true]) {
        const logger = await Sandbox.create({
          guest: TESTGUEST,
          onLog: () => {
            throw value;
          },
        });
        try {
          let e: unknown;
          if (sync) {
            try {
              logger.callSync("log", "hello");
            } catch (err) {
              e = err;
            }
          } else {
            e = await failure(logger.call("log", "hello"));
          }
          assert.ok(e instanceof SandboxError, `onLog ${name} (sync ${sync}): ${String(e)}`);
          assert.equal(e.cause, value, `onLog ${name}: the cause is the value itself`);
          assert.match(e.message, /onLog callback threw/);
        } finally {
          await logger.dispose();
        }
      }
    }
  },
);

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  test("formatting: Wasm imports that throw or return unformattable values", async () => {
    for (const { name, value } of hostileValues()) {
      let mode: "throw" | "reject" | "return" = "throw";
      await using w = await WasmSandbox.create({
        module: fixture("values"),
        engine,
        hostFunctions: {
          env: {
            log: { params: ["i32"], result: "void", fn: () => {} },
            add64: {
              params: ["i64", "i64"],
              result: "i64",
              fn: () => {
                if (mode === "throw") throw value;
                if (mode === "reject") return Promise.reject(value);
                return value as bigint;
              },
            },
            pair: { params: ["f64"], result: ["i32", "f32"], fn: () => value as [number, number] },
            fail: { params: [], result: "void", fn: () => Promise.reject(value) },
          },
        },
      });
      for (mode of ["throw", "reject"] as const) {
        const e = await failure(w.call("add64", 1n, 2n));
        assert.ok(e instanceof WasmTrapError, `${name}, ${mode}: ${String(e)}`);
        assert.equal(e.trap, "host");
        assert.equal(e.cause, value, `${name}, ${mode}: the cause is the value itself`);
      }
      mode = "return";
      for (const fn of ["add64", "pair"]) {
        const args = fn === "add64" ? [1n, 2n] : [1.5];
        const e = await failure(w.call(fn, ...args));
        assert.ok(e instanceof WasmTrapError, `${name}, returned to ${fn}: ${String(e)}`);
        assert.equal(e.trap, "host");
      }
      const e = await failure(w.call("fail"));
      assert.ok(e instanceof WasmTrapError && e.cause === value, `${name}, fail: ${String(e)}`);
      assert.equal(w.poisoned, false);
      assert.equal(await w.call("id_i32", 5), 5);
    }
  });

  test("formatting: a WASI output callback that throws an unformattable value", async () => {
    for (const { name, value } of hostileValues()) {
      await using w = await WasmSandbox.create({
        module: fixture("wasi_hello"),
        engine,
        wasi: {
          stdout: () => {
            throw value;
          },
          stderr: () => {},
        },
      });
      // The module sees a failed write (EIO); whatever it makes of that, the outcome is typed.
      const e = await failure(w.runWasi());
      assert.ok(e === undefined || e instanceof SandboxError, `${name}: ${String(e)}`);
      assert.equal(w.poisoned, false, name);
    }
  });
}
