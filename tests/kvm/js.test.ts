/**
 * JsSandbox and JsSandboxPool (issue 20): the API, errors, async and host functions, limits,
 * snapshots, pools and handle revocation, and hostile driver replies (a hand-made module that
 * speaks the driver ABI with garbage). Skipped when quickjs.wasm is not built.
 */
import assert from "node:assert/strict";
import {
  ArgumentError,
  CancelledError,
  JsError,
  JsSandbox,
  JsSandboxPool,
  ProtocolError,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxPoisonedError,
  SnapshotMismatchError,
  TimeoutError,
  WasmSandbox,
} from "../../mod.ts";
import { QUICKJS_BUILT as BUILT, QUICKJS_MODULE } from "./_js.ts";
import { kvmTest } from "./_kvm.ts";
import { startServer } from "../_net_servers.ts";

function jsTest(name: string, fn: () => Promise<void>): void {
  if (BUILT) kvmTest(`js: ${name}`, fn);
  else Deno.test({ name: `js: ${name} (quickjs.wasm not built)`, ignore: true, fn() {} });
}

async function jsError(p: Promise<unknown>): Promise<JsError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof JsError, `expected a JsError, got ${e}`);
    return e;
  }
  assert.fail("no JsError");
}

jsTest("eval, calls by dotted path, async results, JS exceptions", async () => {
  await using js = await JsSandbox.create({
    source: `
      function add(a, b) { return { sum: a.x + b, list: [a, b] }; }
      var lib = { factor: 2, twice(n) { return this.factor * n; } };
      async function later(n) { await null; return n + 1; }
      function fails() { throw new TypeError("bad input"); }
      function nothing() {}
    `,
    timeoutMs: 5000,
  });
  assert.equal(await js.eval("1 + 2"), 3);
  assert.deepEqual(await js.call("add", { x: 40 }, 2), { sum: 42, list: [{ x: 40 }, 2] });
  assert.equal(await js.call("lib.twice", 21), 42);
  assert.equal(await js.call("later", 41), 42);
  assert.equal(await js.eval("Promise.resolve('settled')"), "settled");
  assert.equal(await js.call("nothing"), undefined);
  const e = await jsError(js.call("fails"));
  assert.equal(e.jsName, "TypeError");
  assert.equal(e.jsMessage, "bad input");
  assert.match(e.jsStack, /at fails/);
  assert.equal(e.message, "TypeError: bad input");
  const thrown = await jsError(js.eval("throw 42"));
  assert.equal(thrown.nonError, true);
  assert.equal(thrown.jsMessage, "42");
  assert.equal(
    (await jsError(js.eval("Promise.reject(new RangeError('no'))"))).jsName,
    "RangeError",
  );
  assert.equal((await jsError(js.call("nope"))).jsName, "TypeError");
  assert.equal((await jsError(js.eval("1n"))).jsName, "TypeError"); // a BigInt is not JSON
  // A JS exception does not poison: the next call works.
  assert.equal(js.poisoned, false);
  assert.equal(await js.eval("var later2 = 7; later2"), 7);
  assert.equal(await js.call("later", 1), 2);
  // An exception in the source fails the create (hoisted declarations notwithstanding).
  const bad = await jsError(JsSandbox.create({ source: "function ok() {}\nnull.x;" }));
  assert.equal(bad.jsName, "TypeError");
  // Arguments JSON cannot write are refused before the call.
  await assert.rejects(js.call("add", 1n, 2), /not JSON/);
});

jsTest("console output: onLog lines, or the stdout/stderr sinks", async () => {
  const lines: string[] = [];
  await using js = await JsSandbox.create({
    onLog: (level, line) => lines.push(`${level}:${line}`),
  });
  await js.eval(
    "console.log('hello', 42, { a: [1] }); console.error('oops'); console.log('a\\nb')",
  );
  assert.deepEqual(lines, ['log:hello 42 {"a":[1]}', "error:oops", "log:a", "log:b"]);
  const out: string[] = [];
  const err: string[] = [];
  const dec = new TextDecoder();
  await using js2 = await JsSandbox.create({
    stdout: (b) => out.push(dec.decode(b)),
    stderr: (b) => err.push(dec.decode(b)),
  });
  await js2.eval("console.info('x'); console.warn('y')");
  // (stderr is unbuffered in wasi-libc: the text and its newline may come as two writes)
  assert.deepEqual([out.join(""), err.join("")], ["x\n", "y\n"]);
});

jsTest("host functions: async in JS, JSON both ways, throws are JS exceptions", async () => {
  const calls: unknown[] = [];
  await using js = await JsSandbox.create({
    source: `
      async function handler(k) { const r = await host.kvGet(k); return r.v + ":" + r.key; }
      async function both() { return Promise.all([host.kvGet("a"), host.kvGet("b")]); }
      async function caught() { try { await host.fail(); } catch (e) { return e.name + "/" + e.message; } }
      async function uncaught() { await host.fail(); }
      async function notJson() { try { await host.big(); } catch (e) { return e.name; } }
      async function spinAfter() { await host.kvGet("s"); while (1) {} }
      async function reenter() { return host.reenter(); }
    `,
    hostFunctions: {
      kvGet: async (key: string) => {
        calls.push(key);
        await new Promise((r) => setTimeout(r, 1));
        return { key, v: "value" };
      },
      fail: () => {
        throw new RangeError("host says no");
      },
      big: () => 1n,
      reenter: async () => {
        try {
          await js.eval("1");
          return "no error";
        } catch (e) {
          return e instanceof ReentrantCallError ? "ReentrantCallError" : String(e);
        }
      },
    },
    timeoutMs: 2000,
  });
  assert.equal(await js.call("handler", "k1"), "value:k1");
  assert.deepEqual(await js.call("both"), [{ key: "a", v: "value" }, { key: "b", v: "value" }]);
  assert.deepEqual(calls, ["k1", "a", "b"]);
  assert.equal(await js.call("caught"), "RangeError/host says no");
  const e = await jsError(js.call("uncaught"));
  assert.deepEqual([e.jsName, e.jsMessage], ["RangeError", "host says no"]);
  assert.equal(await js.call("notJson"), "TypeError");
  assert.equal(await js.call("reenter"), "ReentrantCallError");
  // Calls made at once run one after the other (each waits on host functions).
  const many = await Promise.all([1, 2, 3].map((i) => js.call("handler", `p${i}`)));
  assert.deepEqual(many, ["value:p1", "value:p2", "value:p3"]);
  // while (1) after a host call (in qjs_resume) is still stopped by the timeout.
  // The error names the call's limit, not the part of it left for the round that ran out.
  await assert.rejects(
    js.call("spinAfter"),
    (e) => e instanceof TimeoutError && e.timeoutMs === 2000,
  );
  assert.equal(js.poisoned, true);
  await assert.rejects(js.eval("1"), SandboxPoisonedError);
});

jsTest("a host function throwing what String() cannot read stays in step", async () => {
  // A thrown value with no primitive form (String() throws for it) once rejected the call on the
  // host while the driver waited for its resume: the sandbox stayed usable but out of step.
  await using js = await JsSandbox.create({
    source: `
      async function odd() { try { await host.odd(); } catch (e) { return e.name + "/" + e.message; } }
      function after() { return 7; }
    `,
    hostFunctions: {
      odd: () => {
        throw Object.create(null);
      },
    },
    timeoutMs: 2000,
  });
  const seen = await js.call("odd");
  assert.equal(typeof seen, "string");
  assert.match(seen as string, /^Error\//);
  assert.equal(js.poisoned, false);
  assert.equal(await js.call("after"), 7);
});

jsTest("net: a call's request budget starts when the call runs, not when it is made", async () => {
  // A call made while another runs (here from a host function: a ReentrantCallError) once reset
  // the per-call budget of the call in progress.
  const server = startServer();
  try {
    await using js = await JsSandbox.create({
      source: `
        async function three(url) {
          for (let i = 0; i < 2; i++) await fetch(url);
          await host.meanwhile();
          try { await fetch(url); return "past the budget"; } catch (e) { return e.rule; }
        }
        function noop() {}
      `,
      hostFunctions: {
        meanwhile: async () => {
          await js.call("noop").catch(() => {});
        },
      },
      net: { allow: [`${server.origin}/v1/`], limits: { maxRequestsPerCall: 2 } },
      cache: false,
    });
    assert.equal(await js.call("three", `${server.origin}/v1/x`), "limit:requests");
    assert.equal(server.seen.length, 2);
  } finally {
    await server.close();
  }
});

jsTest(
  "creates of one source made at once: one fills the cache, the others wait for it",
  async () => {
    // Each once missed and filled the cache itself (four cold starts); every fill replaced the
    // entry, leaving the earlier fills' snapshots to nobody (never released by clearCache).
    const source = `var made = ${JSON.stringify(crypto.randomUUID())};`;
    const module = await Deno.readFile(QUICKJS_MODULE);
    const all = await Promise.all([1, 2, 3, 4].map(() => JsSandbox.create({ source, module })));
    try {
      assert.deepEqual(all.map((j) => j.fromCache).sort(), [false, true, true, true]);
    } finally {
      for (const j of all) await j.dispose();
    }
  },
);

jsTest(
  "an argument too large for the input area is an ArgumentError that leaves it usable",
  async () => {
    // Nothing reached the driver, yet the sandbox was poisoned until a restore.
    await using js = await JsSandbox.create({ source: "function len(b) { return b.length; }" });
    await assert.rejects(js.call("len", new Uint8Array(64 << 20)), ArgumentError);
    assert.equal(js.poisoned, false);
    assert.equal(await js.call("len", new Uint8Array(1000)), 1000);
  },
);

jsTest("limits: runaway script, memory bomb, 10,000-deep recursion", async () => {
  await using js = await JsSandbox.create({
    source: "function r(n) { return n ? r(n - 1) + 1 : 0; }",
    maxMemoryBytes: 16 << 20,
    timeoutMs: 5000,
  });
  await using snap = await js.snapshot();
  assert.equal(await js.call("r", 100), 100);
  const deep = await jsError(js.call("r", 10_000));
  assert.equal(deep.jsName, "RangeError");
  const bomb = await jsError(
    js.eval("(() => { const a = []; for (;;) a.push('x'.repeat(4096) + a.length); })()"),
  );
  assert.deepEqual([bomb.jsName, bomb.jsMessage], ["InternalError", "out of memory"]);
  assert.equal(await js.call("r", 100), 100); // still usable
  // Where the limit leaves no room for QuickJS's own error object, QuickJS throws null; the
  // driver reports it as the out-of-memory error (docs/js.md "Limits"). These limits gave null
  // before, with small objects filling the heap.
  for (const maxMemoryBytes of [8 << 20, 32 << 20]) {
    await using small = await JsSandbox.create({ maxMemoryBytes, cache: false });
    const e = await jsError(
      small.eval("(() => { const a = []; for (;;) a.push({ a: a.length }); })()"),
    );
    assert.deepEqual([e.jsName, e.jsMessage, e.nonError], [
      "InternalError",
      "out of memory",
      false,
    ]);
    assert.equal(await small.eval("1 + 1"), 2);
  }
  // A script's own `throw null` stays what it is.
  const thrownNull = await jsError(js.eval("throw null"));
  assert.deepEqual([thrownNull.jsName, thrownNull.nonError], ["", true]);
  await using spin = await JsSandbox.create({ timeoutMs: 200 });
  await assert.rejects(
    spin.eval("while (1) {}"),
    (e) => e instanceof TimeoutError && e.message === "call timed out after 200 ms",
  );
  assert.equal(spin.poisoned, true);
  await assert.rejects(spin.eval("1"), SandboxPoisonedError);
  // interrupt(): CancelledError, poisoned; a restore makes it usable again.
  const running = js.eval("for (;;) {}");
  setTimeout(() => js.interrupt(), 100);
  await assert.rejects(running, CancelledError);
  assert.equal(js.poisoned, true);
  await js.restore(snap);
  assert.equal(js.poisoned, false);
  assert.equal(await js.call("r", 3), 3);
});

jsTest("snapshot, restore, create from a snapshot, the create cache", async () => {
  const source =
    "var count = 0; function bump() { return ++count; } function rnd() { return Math.random(); }";
  await using js = await JsSandbox.create({ source });
  await using snap = await js.snapshot();
  assert.equal(await js.call("bump"), 1);
  assert.equal(await js.call("bump"), 2);
  await js.restore(snap);
  assert.equal(await js.call("bump"), 1);
  await using copy = await JsSandbox.create({ snapshot: snap });
  assert.equal(await copy.call("bump"), 1);
  // Each copy draws its own random stream.
  assert.notEqual(await copy.call("rnd"), await js.call("rnd"));
  // A copy's seed travels with its first request; a snapshot taken before one still holds it, and
  // a restore brings back the snapshot's own state, random numbers included.
  await using c1 = await JsSandbox.create({ snapshot: snap });
  await using c2 = await JsSandbox.create({ snapshot: snap });
  await using s1 = await c1.snapshot();
  await using s2 = await c2.snapshot();
  const r1 = await c1.call("rnd");
  const r2 = await c2.call("rnd");
  assert.notEqual(r1, r2);
  await c1.restore(s1);
  await c2.restore(s2);
  assert.deepEqual([await c1.call("rnd"), await c2.call("rnd")], [r1, r2]);
  await assert.rejects(
    JsSandbox.create({ snapshot: snap, hostFunctions: { extra: () => 1 } }),
    SnapshotMismatchError,
  );
  await using other = await JsSandbox.create({ source: "var x = 1;" });
  await assert.rejects(other.restore(snap), SnapshotMismatchError);
  // The same source again starts from the cached snapshot, at its state after the source ran.
  await using again = await JsSandbox.create({ source });
  assert.equal(again.fromCache, true);
  assert.equal(await again.call("bump"), 1);
  // A source that calls host functions is not cached (its state depends on the answers).
  const withHost = {
    source: "var got; host.v().then((x) => got = x);",
    hostFunctions: { v: () => 5 },
  };
  await using h1 = await JsSandbox.create(withHost);
  assert.equal(await h1.eval("got"), 5);
  await using h2 = await JsSandbox.create(withHost);
  assert.equal(h2.fromCache, false);
  await using fresh = await JsSandbox.create({ source, cache: false });
  assert.equal(fresh.fromCache, false);
});

jsTest(
  "JsSandboxPool: each run from the snapshot, re-seeded, its handle revoked after",
  async () => {
    await using pool = await JsSandboxPool.create({
      source: "var seen = 0; function handler(x) { seen++; return { x, seen, r: Math.random() }; }",
      size: 2,
      timeoutMs: 1000,
    });
    const a = await pool.run((js) => js.call("handler", 1)) as { seen: number; r: number };
    const b = await pool.run((js) => js.call("handler", 2)) as { seen: number; r: number };
    assert.equal(a.seen, 1);
    assert.equal(b.seen, 1);
    assert.notEqual(a.r, b.r);
    const all = await Promise.all([1, 2, 3, 4].map((x) => pool.run((js) => js.call("handler", x))));
    assert.deepEqual(all.map((r) => (r as { seen: number }).seen), [1, 1, 1, 1]);
    let kept: JsSandbox | undefined;
    await pool.run((js) => {
      kept = js;
    });
    await assert.rejects(kept!.call("handler", 1), SandboxDisposedError);
    assert.equal(kept!.disposed, true);
    // A run that poisons its sandbox (a timeout): the next borrower gets a restored one.
    await pool.run(async (js) => {
      await assert.rejects(js.eval("for (;;) {}"), TimeoutError);
    });
    assert.equal((await pool.run((js) => js.call("handler", 9)) as { seen: number }).seen, 1);
  },
);

jsTest(
  "a run's work still in progress when it ends is stopped and the handle revoked",
  async () => {
    await using pool = await JsSandboxPool.create({ size: 1, timeoutMs: 10_000 });
    let running: Promise<unknown> | undefined;
    await pool.run((js) => {
      running = js.eval("for (;;) {}");
    });
    await assert.rejects(running!, SandboxDisposedError);
    assert.equal(await pool.run((js) => js.eval("6 * 7")), 42);
  },
);

// ---- hostile driver replies: a hand-assembled module that speaks the driver ABI with garbage ----

function leb(n: bigint, signed: boolean): number[] {
  const out: number[] = [];
  for (;;) {
    const byte = Number(n & 0x7fn);
    n >>= 7n;
    const done = signed
      ? (n === 0n && (byte & 0x40) === 0) || (n === -1n && (byte & 0x40) !== 0)
      : n === 0n;
    out.push(done ? byte : byte | 0x80);
    if (done) return out;
  }
}
const u = (n: number) => leb(BigInt(n), false);
const str = (s: string) => [...u(s.length), ...new TextEncoder().encode(s)];
const section = (id: number, body: number[]) => [id, ...u(body.length), ...body];
const vec = (items: number[][]) => [...u(items.length), ...items.flat()];

/** A module whose `qjs_init` replies `init` and whose eval/call/resume reply `reply`. */
function hostileDriver(init: Uint8Array, reply: Uint8Array): Uint8Array {
  const I32 = 0x7f, I64 = 0x7e;
  const types = [[0x60, 0, 0], [0x60, 1, I32, 1, I32], [0x60, 2, I32, I32, 0], [
    0x60,
    2,
    I32,
    I32,
    1,
    I64,
  ]];
  const funcs = [0, 1, 2, 3, 3, 2];
  const exp = (name: string, kind: number, idx: number) => [...str(name), kind, ...u(idx)];
  const exports = [
    exp("memory", 2, 0),
    exp("_initialize", 0, 0),
    exp("alloc", 0, 1),
    exp("dealloc", 0, 2),
    exp("qjs_init", 0, 3),
    exp("qjs_eval", 0, 4),
    exp("qjs_call", 0, 4),
    exp("qjs_resume", 0, 4),
    exp("qjs_seed", 0, 5),
  ];
  const ret = (
    ptr: number,
    len: number,
  ) => [0x42, ...leb((BigInt(ptr) << 32n) | BigInt(len), true)];
  const body = (code: number[]) => {
    const b = [0, ...code, 0x0b];
    return [...u(b.length), ...b];
  };
  const code = [
    body([]),
    body([0x41, ...leb(4096n, true)]),
    body([]),
    body(ret(64, init.length)),
    body(ret(1024, reply.length)),
    body([]),
  ];
  const seg = (
    at: number,
    bytes: Uint8Array,
  ) => [0, 0x41, ...leb(BigInt(at), true), 0x0b, ...u(bytes.length), ...bytes];
  return new Uint8Array([
    0x00,
    0x61,
    0x73,
    0x6d,
    1,
    0,
    0,
    0,
    ...section(1, vec(types)),
    ...section(3, vec(funcs.map((f) => u(f)))),
    ...section(5, vec([[0, 1]])),
    ...section(7, vec(exports)),
    ...section(10, [...u(code.length), ...code.flat()]),
    ...section(11, vec([seg(64, init), seg(1024, reply)])),
  ]);
}

jsTest("malformed driver replies are ProtocolErrors that poison the sandbox", async () => {
  const enc = new TextEncoder();
  const replies = [
    enc.encode("not json"),
    enc.encode('{"value":1,"extra":2}'),
    enc.encode('{"pending":[{"id":1,"fn":"evil","args":[]}]}'),
    enc.encode('{"error":{"name":7}}'),
    new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
    // Tags the driver's encoder never writes (docs/js.md "Values").
    enc.encode('{"value":{"$bytes":"@@"}}'),
    enc.encode('{"value":[{"$escape":1}]}'),
  ];
  for (const reply of replies) {
    await using js = await JsSandbox.create({
      module: hostileDriver(enc.encode("{}"), reply),
      engine: "wasmi",
      cache: false,
    });
    await assert.rejects(js.eval("1"), ProtocolError);
    assert.equal(js.poisoned, true);
    await assert.rejects(js.call("f"), SandboxPoisonedError);
  }
  // A malformed init reply fails the create.
  await assert.rejects(
    JsSandbox.create({
      module: hostileDriver(enc.encode("[]"), enc.encode("{}")),
      engine: "wasmi",
      cache: false,
    }),
    ProtocolError,
  );
});

jsTest(
  "Uint8Array both ways: arguments, results, eval, host functions; tag-like objects kept",
  async () => {
    const seen: unknown[] = [];
    await using js = await JsSandbox.create({
      source: `
      function info(b) { return [b instanceof Uint8Array, b.length, b[0], b[b.length - 1]]; }
      function make(n) { const u = new Uint8Array(n); for (let i = 0; i < n; i++) u[i] = i & 255; return u; }
      function view() { return new Uint8Array([9, 8, 7, 6]).subarray(1, 3); }
      function id(x) { return x; }
      function plain(o) { return [o instanceof Uint8Array, typeof o.$bytes, Object.keys(o)]; }
      function tagLike() { return [{ $bytes: "AQI=" }, { $escape: 1 }, { $bytes: new Uint8Array([5]) }]; }
      async function viaHost(b) { const r = await host.reverse(b, { nested: [b] }); return [r instanceof Uint8Array, r]; }
      function others() { return [new Uint16Array([1]), new Uint8Array(new ArrayBuffer(2))]; }
    `,
      hostFunctions: {
        reverse: (b: Uint8Array, o: { nested: Uint8Array[] }) => {
          seen.push(b, o.nested[0]);
          return b.slice().reverse();
        },
      },
    });
    assert.deepEqual(await js.call("info", new Uint8Array([3, 1, 4])), [true, 3, 3, 4]);
    assert.deepEqual(await js.call("info", new Uint8Array(0)), [true, 0, null, null]);
    // A view sends only its bytes.
    assert.deepEqual(
      await js.call("info", new Uint8Array([0, 1, 2, 3]).subarray(1, 3)),
      [true, 2, 1, 2],
    );
    assert.deepEqual(await js.call("make", 3), new Uint8Array([0, 1, 2]));
    assert.deepEqual(await js.call("view"), new Uint8Array([8, 7]));
    const big = crypto.getRandomValues(new Uint8Array(65536));
    assert.deepEqual(await js.call("id", { a: [big, 1], b: "x" }), { a: [big, 1], b: "x" });
    assert.deepEqual(await js.eval("new Uint8Array([1, 2])"), new Uint8Array([1, 2]));
    assert.deepEqual(await js.eval("Promise.resolve(new Uint8Array([3]))"), new Uint8Array([3]));
    // User objects that look like tags stay objects, both ways.
    assert.deepEqual(await js.call("plain", { $bytes: "AQI=" }), [false, "string", ["$bytes"]]);
    assert.deepEqual(await js.call("id", { $escape: { $bytes: 1 } }), { $escape: { $bytes: 1 } });
    assert.deepEqual(await js.call("tagLike"), [
      { $bytes: "AQI=" },
      { $escape: 1 },
      { $bytes: new Uint8Array([5]) },
    ]);
    // Host functions get and return bytes.
    assert.deepEqual(await js.call("viaHost", new Uint8Array([1, 2, 3])), [
      true,
      new Uint8Array([3, 2, 1]),
    ]);
    assert.deepEqual(seen, [new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3])]);
    // Only Uint8Array is carried; other typed arrays are JSON's objects of indices.
    assert.deepEqual(await js.call("others"), [{ "0": 1 }, new Uint8Array(2)]);
    // Inside the script, JSON is the standard one; a result whose first writing saw no bytes and
    // no "$" key is sent as written, one with either is written again with the tags.
    assert.equal(await js.eval("JSON.stringify(new Uint8Array([1, 2]))"), '{"0":1,"1":2}');
    assert.deepEqual(await js.eval("Object.keys(Uint8Array.prototype)"), []);
    assert.deepEqual(await js.eval("({ price: '$5', n: [1, 2] })"), { price: "$5", n: [1, 2] });
    assert.deepEqual(
      await js.eval("({ toJSON() { return { b: new Uint8Array([4]) }; } })"),
      { b: new Uint8Array([4]) },
    );
  },
);

jsTest("the wasmi engine runs the same API", async () => {
  await using js = await JsSandbox.create({
    engine: "wasmi",
    source: "async function f(x) { return (await host.twice(x)) + 1; }",
    hostFunctions: { twice: (x: number) => 2 * x },
  });
  assert.equal(await js.call("f", 20), 41);
});

// Leaves no cached snapshot or idle VM behind for the test files that count live VMs.
Deno.test("js: the snapshot and module caches are released", async () => {
  await JsSandbox.clearCache();
  await WasmSandbox.clearCache();
});
