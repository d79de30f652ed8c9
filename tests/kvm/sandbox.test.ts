import assert from "node:assert/strict";
import {
  ArgumentError,
  CancelledError,
  GuestError,
  GuestFaultError,
  GuestPanicError,
  Sandbox,
  SandboxDisposedError,
  SandboxPoisonedError,
  StackOverflowError,
  TimeoutError,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { ErrorCode, LogLevel } from "../../src/abi.ts";
import { renderEchoAll, TESTGUEST } from "../_guests.ts";
import { guestMappingCount, kvmTest, openFdCount } from "./_kvm.ts";

const I32_MIN = -(2 ** 31);
const I32_MAX = 2 ** 31 - 1;
const U32_MAX = 2 ** 32 - 1;
const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;
const MiB = 1024 * 1024;

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

function f32Bits(x: number): number {
  const v = new DataView(new ArrayBuffer(4));
  v.setFloat32(0, x, true);
  return v.getUint32(0, true);
}

/** Echo host functions for every value type. */
const echoHost = {
  host_i32: { params: ["i32"], result: "i32", fn: (x: number) => x },
  host_u32: { params: ["u32"], result: "u32", fn: (x: number) => x },
  host_i64: { params: ["i64"], result: "i64", fn: (x: bigint) => x },
  host_u64: { params: ["u64"], result: "u64", fn: (x: bigint) => x },
  host_f32: { params: ["f32"], result: "f32", fn: (x: number) => x },
  host_f64: { params: ["f64"], result: "f64", fn: (x: number) => x },
  host_bool: { params: ["bool"], result: "bool", fn: (x: boolean) => !x },
  host_string: { params: ["string"], result: "string", fn: (s: string) => `<${s}>` },
  host_bytes: { params: ["bytes"], result: "bytes", fn: (b: Uint8Array) => b.toReversed() },
  host_void: { params: [], result: "void", fn: () => void voidCalls++ },
  host_throws: {
    params: ["i32"],
    result: "i32",
    fn: () => {
      throw new Error("the host said no");
    },
  },
  host_async: {
    params: ["i32"],
    result: "i32",
    fn: async (x: number) => {
      await new Promise((r) => setTimeout(r, 5));
      return x + 1000;
    },
  },
  host_rejects: {
    params: ["i32"],
    result: "i32",
    fn: () => Promise.reject(new Error("async no")),
  },
  host_bad_result: { params: ["i32"], result: "i32", fn: () => "not a number" },
} as const;
let voidCalls = 0;

kvmTest("Sandbox: every value type round-trips at its limits", async (t) => {
  await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: echoHost });
  assert.ok(sb.functions.some((f) => f.name === "echo_all"));

  await t.step("i32 add at the limits (wrapping)", async () => {
    for (
      const [a, b, sum] of [[0, 0, 0], [-1, 1, 0], [I32_MAX, 1, I32_MIN], [I32_MIN, -1, I32_MAX]]
    ) {
      assert.equal(await sb.call("add", a, b), sum);
    }
  });

  await t.step("strings: empty, non-ASCII, astral, 1 MiB", async () => {
    for (const s of ["", "héllo wörld", "日本語 🎉 \u{10FFFF}", "\0nul\0", "x".repeat(MiB)]) {
      assert.equal(await sb.call("echo", s), s);
    }
  });

  await t.step("bytes: empty, small, 1 MiB random", async () => {
    for (const b of [new Uint8Array(0), new Uint8Array([0, 255, 1]), randomBytes(MiB)]) {
      assert.deepEqual(await sb.call("echo_bytes", b), b);
    }
    assert.equal(await sb.call("sum_bytes", new Uint8Array(MiB).fill(255)), 255n * BigInt(MiB));
  });

  await t.step("echo_all renders every type exactly", async () => {
    const cases: [number, number, bigint, bigint, number, number, boolean, string, Uint8Array][] = [
      [0, 0, 0n, 0n, 0, 0, false, "", new Uint8Array()],
      [-1, U32_MAX, -1n, U64_MAX, -0, -0, true, "ünï", new Uint8Array([1, 2, 3])],
      [I32_MIN, 1, I64_MIN, 1n, NaN, NaN, false, 'a"b', randomBytes(40)],
      [I32_MAX, 7, I64_MAX, 2n ** 63n, Infinity, -Infinity, true, "🎉", new Uint8Array(1)],
      [5, 6, 7n, 8n, 3.4028234663852886e38, Number.MIN_VALUE, false, "z", new Uint8Array()],
    ];
    for (const args of cases) {
      assert.equal(await sb.call("echo_all", ...args), renderEchoAll(...args));
    }
  });

  await t.step("host functions of every type", async () => {
    const roundTrip = async (fn: string, host: string, value: unknown, expected = value) =>
      assert.deepEqual(await sb.call(fn, host, value), expected);
    for (const x of [0, -1, I32_MIN, I32_MAX]) {
      assert.equal(await sb.call("call_host", "host_i32", x), x);
    }
    for (const x of [0, 1, U32_MAX]) await roundTrip("call_host_value_u32", "host_u32", x);
    for (const x of [0n, -1n, I64_MIN, I64_MAX]) {
      await roundTrip("call_host_value_i64", "host_i64", x);
    }
    for (const x of [0n, U64_MAX]) await roundTrip("call_host_value_u64", "host_u64", x);
    for (const x of [0, -0, 1.5, Infinity, -Infinity]) {
      await roundTrip("call_host_value_f32", "host_f32", x);
      await roundTrip("call_host_value_f64", "host_f64", x);
    }
    assert.ok(Number.isNaN(await sb.call("call_host_value_f64", "host_f64", NaN)));
    const nan32 = await sb.call("call_host_value_f32", "host_f32", NaN) as number;
    assert.equal(f32Bits(nan32), f32Bits(NaN));
    await roundTrip("call_host_value_bool", "host_bool", true, false);
    await roundTrip("call_host_value_string", "host_string", "ü🎉", "<ü🎉>");
    await roundTrip("call_host_value_string", "host_string", "", "<>");
    const big = randomBytes(MiB);
    await roundTrip("call_host_value_bytes", "host_bytes", big, big.toReversed());
    const before = voidCalls;
    assert.equal(await sb.call("call_host_void", "host_void"), undefined);
    assert.equal(voidCalls, before + 1);
    assert.equal(await sb.call("call_host_twice", "host_i32", 21), 42);
  });

  await t.step("a host function that throws returns an error to the guest", async () => {
    await assert.rejects(
      sb.call("call_host", "host_throws", 1),
      (e) =>
        e instanceof GuestError && e.code === ErrorCode.HOST_CALL_FAILED &&
        /the host said no/.test(e.message),
    );
    await assert.rejects(
      sb.call("call_host", "host_rejects", 1),
      (e) => e instanceof GuestError && /async no/.test(e.message),
    );
    await assert.rejects(
      sb.call("call_host", "no_such_host_function", 1),
      (e) => e instanceof GuestError && /no host function named/.test(e.message),
    );
    await assert.rejects(
      sb.call("call_host", "host_bad_result", 1),
      (e) => e instanceof GuestError && /bad value/.test(e.message),
    );
    await assert.rejects(
      sb.call("call_host", "host_string", 1),
      (e) => e instanceof GuestError && /takes \(string\)/.test(e.message),
    );
    // The guest surfaced the error as its own ERROR frame: the sandbox is still healthy.
    assert.equal(sb.poisoned, false);
    assert.equal(await sb.call("add", 1, 2), 3);
  });

  await t.step("an async host function is awaited", async () => {
    assert.equal(await sb.call("call_host", "host_async", 1), 1001);
  });

  await t.step("a guest error is typed and does not poison", async () => {
    await assert.rejects(
      sb.call("fail", 1234, "custom failure"),
      (e) => e instanceof GuestError && e.code === 1234 && /custom failure/.test(e.message),
    );
    assert.equal(sb.poisoned, false);
  });

  await t.step("state persists between calls", async () => {
    const first = await sb.call("counter") as bigint;
    assert.equal(await sb.call("counter"), first + 1n);
  });

  await t.step("bad arguments are rejected before the VM is entered", async () => {
    const runs = sb.stats().runs;
    const bad = (p: Promise<unknown>, text: RegExp) =>
      assert.rejects(p, (e) => e instanceof ArgumentError && text.test(e.message));
    await bad(sb.call("nope"), /no function "nope"/);
    await bad(sb.call("add", 1), /takes 2 arguments/);
    await bad(sb.call("add", 1, 2, 3), /takes 2 arguments/);
    await bad(sb.call("add", "1", 2), /argument 0 must be an i32/);
    await bad(sb.call("add", 2 ** 31, 2), /argument 0 must be an i32/);
    await bad(sb.call("add", 1.5, 2), /argument 0/);
    await bad(sb.call("call_host_value_i64", "h", 5), /bigint/);
    await bad(sb.call("call_host_value_u64", "h", -1n), /u64/);
    await bad(sb.call("echo", "\uD800"), /well-formed/);
    await bad(sb.call("echo_bytes", [1, 2]), /Uint8Array/);
    await bad(sb.call("echo", "x".repeat(5 * MiB)), /inputSize/);
    assert.equal(sb.stats().runs, runs);
  });

  await t.step("logs reach the onLog callback", async () => {
    const logs: [number, string][] = [];
    await using logged = await Sandbox.create({
      guest: TESTGUEST,
      onLog: (level, message) => logs.push([level, message]),
    });
    await logged.call("log", "hello from the guest");
    assert.deepEqual(logs, [[LogLevel.INFO, "hello from the guest"]]);
  });

  await t.step("the synchronous fast path gives the same answers", () => {
    assert.equal(sb.callSync("add", 40, 2), 42);
    assert.equal(sb.callSync("echo", "sync"), "sync");
    assert.equal(sb.callSync("call_host", "host_i32", 7), 7);
    assert.throws(
      () => sb.callSync("call_host", "host_async", 1),
      (e) => e instanceof GuestError && /synchronous path/.test(e.message),
    );
  });
});

/** Runs `fn` against a fresh sandbox and checks the failure, the poisoning and the host's health. */
async function expectFailure(
  call: (sb: Sandbox) => Promise<unknown>,
  check: (e: unknown) => boolean,
): Promise<void> {
  const sb = await Sandbox.create({ guest: TESTGUEST, stackSize: 256 * 1024, heapSize: 4 * MiB });
  try {
    await assert.rejects(call(sb), check);
    assert.equal(sb.poisoned, true);
    await assert.rejects(sb.call("add", 1, 2), SandboxPoisonedError);
  } finally {
    await sb.dispose();
  }
}

kvmTest("Sandbox: guest failures are typed errors and poison only that sandbox", async (t) => {
  await t.step("panic carries its message", () =>
    expectFailure(
      (sb) => sb.call("panic", "it broke: ü"),
      (e) => e instanceof GuestPanicError && /it broke: ü/.test(e.guestMessage),
    ));
  await t.step("null write is a page fault at address 0", () =>
    expectFailure(
      (sb) => sb.call("write_addr", 0n),
      (e) => e instanceof GuestFaultError && e.vector === 14 && e.address === 0n,
    ));
  await t.step("a write above guest memory is a page fault", () =>
    expectFailure(
      (sb) => sb.call("write_addr", 0x3000_0000n),
      (e) => e instanceof GuestFaultError && e.vector === 14 && e.address === 0x3000_0000n,
    ));
  await t.step(
    "a write to the read-only part of the image is a page fault",
    () =>
      expectFailure(
        async (sb) => {
          const entry = await sb.call("read_addr", 0x1000n + 0x58n) as bigint; // PEB image_base
          await sb.call("write_addr", entry + 0x1000n); // first code page after the headers
        },
        (e) => e instanceof GuestFaultError && e.vector === 14,
      ),
  );
  await t.step("stack overflow is recognised", () =>
    expectFailure(
      (sb) => sb.call("stack_overflow"),
      (e) => e instanceof StackOverflowError && e instanceof GuestFaultError && e.stackOverflow,
    ));
  await t.step("heap exhaustion panics about allocation", () =>
    expectFailure(
      (sb) => sb.call("exhaust_heap"),
      (e) => e instanceof GuestPanicError && /alloc/i.test(e.guestMessage),
    ));
  await t.step("ud2 is an invalid-opcode fault with its RIP", () =>
    expectFailure(
      (sb) => sb.call("ud2"),
      (e) => e instanceof GuestFaultError && e.vector === 6 && (e.rip ?? 0n) > 0n,
    ));
  await t.step("division by zero is #DE", () =>
    expectFailure(
      (sb) => sb.call("divide", 1, 0),
      (e) => e instanceof GuestFaultError && e.vector === 0,
    ));
  // The host process is healthy: a new sandbox works.
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(await sb.call("divide", 84, 2), 42);
});

kvmTest(
  "Sandbox: a spinning guest is stopped by timeout, AbortSignal and interrupt()",
  async (t) => {
    const withTicks = async (f: () => Promise<void>) => {
      let ticks = 0;
      const timer = setInterval(() => ticks++, 10);
      try {
        await f();
      } finally {
        clearInterval(timer);
      }
      // The 10 ms interval is armed before each step's stop (a 200-300 ms timeout, abort or
      // interrupt) can fire, so it ticks first unless the event loop is blocked: an ordering,
      // not a speed.
      assert.ok(ticks >= 1, "the event loop kept running during the call");
    };
    await t.step("timeout", async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      await withTicks(() =>
        assert.rejects(sb.callWithOptions({ timeoutMs: 300 }, "spin"), TimeoutError)
      );
      await assert.rejects(sb.call("add", 1, 1), SandboxPoisonedError);
    });
    await t.step("default timeout from the options", async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST, timeoutMs: 200 });
      await assert.rejects(sb.call("spin"), TimeoutError);
    });
    await t.step("AbortSignal", async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      const controller = new AbortController();
      setTimeout(() => controller.abort(new Error("user gave up")), 300);
      await withTicks(() =>
        assert.rejects(sb.callWithOptions({ signal: controller.signal }, "spin"), CancelledError)
      );
      const aborted = AbortSignal.abort();
      await using other = await Sandbox.create({ guest: TESTGUEST });
      await assert.rejects(other.callWithOptions({ signal: aborted }, "add", 1, 2), CancelledError);
    });
    await t.step("interrupt()", async () => {
      await using sb = await Sandbox.create({ guest: TESTGUEST });
      sb.interrupt(); // idle: no effect
      assert.equal(await sb.call("add", 1, 2), 3);
      const spinning = sb.call("spin");
      setTimeout(() => sb.interrupt(), 300);
      await withTicks(() => assert.rejects(spinning, CancelledError));
    });
    await t.step(
      "a host function that never settles: timeout and dispose still end the call",
      async () => {
        const hang = {
          hang: { params: ["i32"], result: "i32", fn: () => new Promise<number>(() => {}) },
        } as const;
        await using sb = await Sandbox.create({ guest: TESTGUEST, hostFunctions: hang });
        await assert.rejects(
          sb.callWithOptions({ timeoutMs: 200 }, "call_host", "hang", 1),
          TimeoutError,
        );
        const other = await Sandbox.create({ guest: TESTGUEST, hostFunctions: hang });
        const waiting = other.call("call_host", "hang", 1);
        await new Promise((r) => setTimeout(r, 100));
        await other.dispose();
        await assert.rejects(waiting, SandboxDisposedError);
      },
    );
    await t.step("dispose during a call", async () => {
      const sb = await Sandbox.create({ guest: TESTGUEST });
      const spinning = sb.call("spin");
      await new Promise((r) => setTimeout(r, 200));
      await sb.dispose();
      await assert.rejects(
        spinning,
        (e) => e instanceof CancelledError || e instanceof SandboxDisposedError,
      );
      await assert.rejects(sb.call("add", 1, 2), SandboxDisposedError);
      await sb.dispose(); // idempotent
    });
  },
);

kvmTest("Sandbox: 100 sandboxes alive at once", async () => {
  const boxes: Sandbox[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      boxes.push(
        await Sandbox.create({
          guest: TESTGUEST,
          heapSize: MiB,
          inputSize: 64 * 1024,
          outputSize: 64 * 1024,
        }),
      );
    }
    const sums = await Promise.all(boxes.map((sb, i) => sb.call("add", i, 1)));
    assert.deepEqual(sums, boxes.map((_, i) => i + 1));
    assert.ok(globalStats().liveVms >= 100);
  } finally {
    await Promise.all(boxes.map((sb) => sb.dispose()));
  }
});

kvmTest("Sandbox: 1,000 create/dispose cycles keep the fd count flat", async () => {
  const guest = await Deno.readFile(TESTGUEST);
  const options = { guest, heapSize: MiB, inputSize: 64 * 1024, outputSize: 64 * 1024 };
  await (await Sandbox.create(options)).dispose(); // warm-up
  const fds = openFdCount();
  const maps = guestMappingCount();
  const live = globalStats().liveVms;
  for (let i = 0; i < 1000; i++) {
    const sb = await Sandbox.create(options);
    if (i % 100 === 0) assert.equal(await sb.call("add", i, 0), i);
    await sb.dispose();
  }
  assert.equal(openFdCount(), fds);
  assert.equal(guestMappingCount(), maps);
  assert.equal(globalStats().liveVms, live);
});

kvmTest("Sandbox: a sandbox dropped without dispose is freed by the finalizer", async () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  assert.ok(gc, "run with --v8-flags=--expose-gc (tools/test.sh does)");
  const live = globalStats().liveVms;
  await (async () => {
    const sb = await Sandbox.create({ guest: TESTGUEST });
    assert.equal(await sb.call("add", 1, 1), 2);
  })();
  assert.equal(globalStats().liveVms, live + 1);
  for (let i = 0; i < 20 && globalStats().liveVms > live; i++) {
    gc();
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.equal(globalStats().liveVms, live);
});
