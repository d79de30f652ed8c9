/**
 * The `reuse` and `renew` runners of `hl serve` (src/serve/strategy.ts) with fake members, no
 * KVM: reuse keeps a member's state and replaces one whose request failed or that is poisoned;
 * renew makes and disposes one member per run; both hold at most `size` runs at once, and a wait
 * past the bound is a PoolExhaustedError; dispose is idempotent and disposes what is held.
 */
import assert from "node:assert/strict";
import { RenewRunner, ReuseRunner } from "../../src/serve/strategy.ts";
import { PoolExhaustedError } from "../../src/pool_core.ts";
import { SandboxError } from "../../src/errors.ts";

class Fake {
  static made = 0;
  static live = 0;
  readonly id = ++Fake.made;
  calls = 0;
  poisoned = false;
  disposed = false;
  constructor() {
    Fake.live++;
  }
  dispose(): Promise<void> {
    if (!this.disposed) Fake.live--;
    this.disposed = true;
    return Promise.resolve();
  }
}

const make = () => Promise.resolve(new Fake());

Deno.test("serve reuse: state kept; a failed or poisoned member is replaced", async () => {
  Fake.made = 0;
  Fake.live = 0;
  const r = new ReuseRunner([new Fake()], make, () => Promise.resolve());
  const seen: number[] = [];
  for (let i = 0; i < 3; i++) seen.push(await r.run((m) => Promise.resolve(++m.calls), 100));
  assert.deepEqual(seen, [1, 2, 3]);
  await assert.rejects(r.run(() => Promise.reject(new Error("trap")), 100), /trap/);
  assert.equal(r.replaced, 1);
  assert.equal(await r.run((m) => Promise.resolve(m.id), 100), 2, "a new member");
  await r.run((m) => {
    m.poisoned = true;
    return Promise.resolve();
  }, 100);
  assert.equal(r.replaced, 2);
  assert.equal(await r.run((m) => Promise.resolve(m.calls), 100), 0, "fresh state");
  assert.equal(Fake.live, 1);
  await r.dispose();
  await r.dispose();
  assert.equal(Fake.live, 0);
});

Deno.test("serve reuse: a replacement that fails is retried by the next run", async () => {
  let fail = true;
  const r = new ReuseRunner(
    [new Fake()],
    () => fail ? Promise.reject(new Error("no VM")) : make(),
    () => Promise.resolve(),
  );
  await assert.rejects(r.run(() => Promise.reject(new Error("x")), 100), /x/);
  await assert.rejects(r.run(() => Promise.resolve(1), 100), /no VM/);
  assert.equal(r.available, 1, "the slot is free again");
  fail = false;
  assert.equal(await r.run(() => Promise.resolve(7), 100), 7);
  await r.dispose();
});

Deno.test("serve renew: one member per run, at most size at once, bounded wait", async () => {
  Fake.made = 0;
  Fake.live = 0;
  let snapshotDisposed = 0;
  const r = new RenewRunner(2, make, () => {
    snapshotDisposed++;
    return Promise.resolve();
  });
  const ids = [
    await r.run((m) => Promise.resolve(m.id), 0),
    await r.run((m) => Promise.resolve(m.id), 0),
  ];
  assert.deepEqual(ids, [1, 2]);
  assert.equal(Fake.live, 0, "each disposed after its run");
  const gate = Promise.withResolvers<void>();
  const busy = [r.run(() => gate.promise, 0), r.run(() => gate.promise, 0)];
  await assert.rejects(r.run(() => Promise.resolve(), 0), PoolExhaustedError);
  await assert.rejects(r.run(() => Promise.resolve(), 20), PoolExhaustedError);
  const waiting = r.run((m) => Promise.resolve(m.id), 10_000);
  assert.equal(r.available, 0);
  gate.resolve();
  await Promise.all(busy);
  assert.equal(await waiting, 5, "a waiter gets the slot a run frees");
  assert.equal(r.available, 2);
  await r.dispose();
  await r.dispose();
  assert.equal(snapshotDisposed, 1);
  assert.equal(Fake.live, 0);
});

Deno.test("serve reuse and renew: once disposed, a waiting or later run is refused and makes nothing", async () => {
  const runners = [
    new ReuseRunner([new Fake()], make, () => Promise.resolve()),
    new RenewRunner(1, make, () => Promise.resolve()),
  ];
  for (const r of runners) {
    const gate = Promise.withResolvers<void>();
    const busy = r.run(() => gate.promise, 0);
    const waiting = r.run(() => Promise.resolve("ran"), 10_000);
    await new Promise((res) => setTimeout(res, 0));
    const made = Fake.made;
    await r.dispose();
    gate.resolve();
    await busy;
    await assert.rejects(waiting, SandboxError);
    await assert.rejects(r.run(() => Promise.resolve("ran"), 0), SandboxError);
    assert.equal(Fake.made, made, "no member made after dispose");
    assert.equal(Fake.live, 0);
  }
});
