/**
 * The language-runtime layer (`src/runtime/language.ts`, docs/design.md "Runtime layer"): a second
 * kind made of nothing but a `LanguageKind` object and thin classes (as a Python kind would be),
 * here over the QuickJS module with its own label, error class, cache and snapshot class. What the
 * layer owns must work for it unchanged: create (cold, cached, from a snapshot), calls with host
 * functions, the kind's own error class, poisoning by a malformed reply, snapshot/restore, the
 * pool's hand-over and re-seed, and its cache kept apart from `JsSandbox`'s. Skipped when
 * quickjs.wasm is not built.
 */
import assert from "node:assert/strict";
import {
  JsSandbox,
  Pool,
  ReentrantCallError,
  SandboxDisposedError,
  SandboxError,
  SnapshotMismatchError,
  WasmSandbox,
} from "../../mod.ts";
import { SnapshotCache } from "../../src/runtime/cache.ts";
import {
  createRuntime,
  handOverRuntime,
  type LanguageKind,
  type LanguageOptions,
  type LanguageSnapshotOptions,
  type RuntimeSandbox,
  startLanguagePool,
} from "../../src/runtime/language.ts";
import { SnapshotStates } from "../../src/runtime/snapshot.ts";
import type { PoolCore, PoolSizing } from "../../src/pool_core.ts";
import { QUICKJS_BUILT, QUICKJS_MODULE } from "./_js.ts";
import { kvmTest } from "./_kvm.ts";

class DemoError extends SandboxError {
  constructor(readonly guestName: string, message: string, readonly stack2: string) {
    super(`demo ${guestName}: ${message}`);
    this.name = "DemoError";
  }
}

class DemoSnapshot {
  private constructor(state: never) {
    demoSnapshots.set(this, state);
  }
  dispose(): Promise<void> {
    return demoSnapshots.of(this).wasm.dispose();
  }
}
const demoSnapshots = new SnapshotStates(DemoSnapshot, "a DemoSnapshot");

class DemoSandbox {
  readonly #core: RuntimeSandbox<DemoError>;
  private constructor(core: RuntimeSandbox<DemoError>) {
    this.#core = core;
  }
  static create(options: LanguageOptions | LanguageSnapshotOptions<DemoSnapshot>) {
    return createRuntime(demoKind, { module: QUICKJS_MODULE, ...options });
  }
  call(path: string, ...args: unknown[]) {
    return this.#core.call(path, args);
  }
  eval(code: string) {
    return this.#core.eval(code);
  }
  async snapshot() {
    return demoSnapshots.wrap(await this.#core.snapshot());
  }
  restore(snap: DemoSnapshot) {
    return this.#core.restore(demoSnapshots.of(snap, true));
  }
  get fromCache() {
    return this.#core.fromCache;
  }
  get stats() {
    return this.#core.wasm.stats();
  }
  get poisoned() {
    return this.#core.poisoned;
  }
  get disposed() {
    return this.#core.disposed;
  }
  dispose() {
    return this.#core.dispose();
  }
}

class DemoPool extends Pool<DemoSandbox> {
  private constructor(core: PoolCore<DemoSandbox>) {
    super(core);
  }
  static async create(options: LanguageOptions & PoolSizing & { snapshot?: DemoSnapshot }) {
    return new DemoPool(await startLanguagePool(demoKind, { module: QUICKJS_MODULE, ...options }));
  }
}

const demoCache = new SnapshotCache(4);
const demoKind: LanguageKind<DemoSandbox, DemoSnapshot, DemoError> = {
  label: "DemoSandbox",
  telemetry: "js",
  module: "quickjs",
  moduleLabel: "demo module",
  exports: {
    init: "qjs_init",
    eval: "qjs_eval",
    call: "qjs_call",
    resume: "qjs_resume",
    seed: "qjs_seed",
  },
  defaultMaxMemory: 8 << 20,
  memoryHeadroom: 16 << 20,
  error: (name, message, stack) => new DemoError(name, message, stack),
  cache: demoCache,
  snapshots: demoSnapshots,
  wrap: (core) =>
    new (DemoSandbox as unknown as new (c: RuntimeSandbox<DemoError>) => DemoSandbox)(core),
};

function layerTest(name: string, fn: () => Promise<void>): void {
  if (QUICKJS_BUILT) kvmTest(`runtime layer: ${name}`, fn);
  else {Deno.test({
      name: `runtime layer: ${name} (quickjs.wasm not built)`,
      ignore: true,
      fn() {},
    });}
}

layerTest("a kind made only of a LanguageKind and thin classes", async () => {
  const source = "var n = 0; async function f(x) { n++; return { x, n, v: await host.v(x) }; }" +
    "function bad() { throw new TypeError('no'); }";
  const hostFunctions = { v: (x: number) => x * 2 };
  const demo = await DemoSandbox.create({ source, hostFunctions });
  try {
    assert.equal(demo.fromCache, false);
    assert.deepEqual(await demo.call("f", 21), { x: 21, n: 1, v: 42 });
    // The kind's error class, from the kind's factory.
    const err = await demo.call("bad").catch((e) => e);
    assert.ok(err instanceof DemoError, String(err));
    assert.equal(err.guestName, "TypeError");
    // Snapshot and restore through the kind's snapshot class.
    const snap = await demo.snapshot();
    assert.deepEqual(await demo.call("f", 1), { x: 1, n: 2, v: 2 });
    await demo.restore(snap);
    assert.deepEqual(await demo.call("f", 1), { x: 1, n: 2, v: 2 });
    assert.throws(() => demo.restore({} as DemoSnapshot), SnapshotMismatchError);
    // From the kind's snapshot, and from the kind's own cache (not JsSandbox's).
    const copy = await DemoSandbox.create({ snapshot: snap, hostFunctions });
    assert.deepEqual(await copy.call("f", 5), { x: 5, n: 2, v: 10 });
    await copy.dispose();
    const hit = await DemoSandbox.create({ source, hostFunctions });
    assert.equal(hit.fromCache, true);
    assert.deepEqual(await hit.call("f", 3), { x: 3, n: 1, v: 6 });
    await hit.dispose();
    await snap.dispose();
    // A JsSnapshot is not the kind's snapshot.
    await using js = await JsSandbox.create({ source: "var q = 1;", cache: false });
    await using jsSnap = await js.snapshot();
    await assert.rejects(
      async () => await DemoSandbox.create({ snapshot: jsSnap as unknown as DemoSnapshot }),
      SnapshotMismatchError,
    );
  } finally {
    await demo.dispose();
    await demoCache.clear();
  }
});

layerTest("the reentrant-call error names the kind", async () => {
  let demo: DemoSandbox | undefined;
  let seen: unknown;
  demo = await DemoSandbox.create({
    source: "async function f() { return await host.back(); }",
    hostFunctions: {
      back: async () => {
        seen = await demo!.eval("1").catch((e) => e);
        return 0;
      },
    },
    cache: false,
  });
  try {
    assert.equal(await demo.call("f"), 0);
    assert.ok(seen instanceof ReentrantCallError);
    assert.match(seen.message, /DemoSandbox/);
  } finally {
    await demo.dispose();
    demo = undefined;
  }
});

layerTest("the kind's pool: hand-over revokes, restore and re-seed per run", async () => {
  await using pool = await DemoPool.create({
    source: "var seen = 0; function f() { seen++; return [seen, Math.random()]; }",
    size: 1,
  });
  let kept: DemoSandbox | undefined;
  const [a, ra] = await pool.run((d) => {
    kept = d;
    return d.call("f");
  }) as [number, number];
  const [b, rb] = await pool.run((d) => d.call("f")) as [number, number];
  assert.equal(a, 1);
  assert.equal(b, 1); // restored to the snapshot
  assert.notEqual(ra, rb); // re-seeded
  assert.equal(kept!.disposed, true);
  await assert.rejects(kept!.call("f"), SandboxDisposedError);
  // The fresh seed travels with the run's call: one VM entry per run (the counters are the VM's).
  const entries = [];
  for (let i = 0; i < 3; i++) {
    entries.push(
      await pool.run(async (d) => {
        const before = d.stats.runs;
        await d.call("f");
        return before;
      }),
    );
  }
  assert.deepEqual([entries[1] - entries[0], entries[2] - entries[1]], [1, 1]);
  assert.throws(() => handOverRuntime(demoKind, {} as DemoSandbox), /not a sandbox/);
});

layerTest("the kind's cache and the module cache are released", async () => {
  await demoCache.clear();
  await WasmSandbox.clearCache();
});
