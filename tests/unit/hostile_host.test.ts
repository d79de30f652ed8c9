// describeThrown / isInstance (src/call/describe.ts): total on every value a host function, an
// onLog callback or a WASI sink may throw or return, and PoolCore's hand-over of a member at the
// end of a run (no KVM needed).

import assert from "node:assert/strict";
import { describeThrown, isInstance } from "../../src/call/describe.ts";
import { PoolCore } from "../../src/pool_core.ts";

function revoked<T extends object>(target: T): T {
  const { proxy, revoke } = Proxy.revocable(target, {});
  revoke();
  return proxy;
}

Deno.test("describeThrown never throws, and says what it can", () => {
  const throwingMessage = Object.defineProperty(new Error("m"), "message", {
    get() {
      throw new Error("no");
    },
  });
  const cases: [unknown, RegExp][] = [
    [new TypeError("plain"), /^plain$/],
    ["text", /^text$/],
    [42, /^42$/],
    [undefined, /^undefined$/],
    [Symbol("s"), /^Symbol\(s\)$/],
    [Object.create(null), /^\[object Object\]$/],
    [{
      toString() {
        throw new Error("no");
      },
    }, /^\[object Object\]$/],
    [{
      [Symbol.toPrimitive]() {
        throw new Error("no");
      },
    }, /^\[object Object\]$/],
    [throwingMessage, /^\[object Error\]$/],
    [revoked({}), /cannot be described/],
    [revoked([]), /cannot be described/],
    [revoked(new Error("x")), /cannot be described/],
    [revoked(() => {}), /function that cannot be described/],
  ];
  for (const [value, want] of cases) assert.match(describeThrown(value), want);
});

Deno.test("isInstance is false, not a throw, for a revoked Proxy", () => {
  assert.equal(isInstance(revoked({}), Promise), false);
  assert.equal(isInstance(revoked(Promise.resolve()), Promise), false);
  assert.equal(isInstance(Promise.resolve(), Promise), true);
  assert.equal(isInstance(new RangeError("r"), Error), true);
});

/** A pool member: a handle on a shared "VM" that a revoke moves into a new handle. */
class Member {
  static made = 0;
  readonly id = ++Member.made;
  vm: { uses: number } | undefined;
  disposed = false;
  constructor(vm: { uses: number }) {
    this.vm = vm;
  }
  use(): number {
    if (!this.vm) throw new Error("revoked");
    return ++this.vm.uses;
  }
  dispose(): Promise<void> {
    this.disposed = true;
    this.vm = undefined;
    return Promise.resolve();
  }
}

Deno.test("PoolCore: every run gets a handle no earlier run had; kept ones are revoked", async () => {
  const restored: number[] = [];
  const core = new PoolCore([new Member({ uses: 0 })], { size: 1 }, {
    revoke: (m) => {
      if (!m.vm) return Promise.reject(new Error("disposed"));
      const next = new Member(m.vm);
      m.vm = undefined;
      return Promise.resolve(next);
    },
    restore: (m) => {
      restored.push(m.id);
      m.vm!.uses = 0;
      return Promise.resolve();
    },
    replace: () => Promise.resolve(new Member({ uses: 0 })),
    disposed: () => Promise.resolve(),
  });
  const seen: Member[] = [];
  for (let i = 0; i < 3; i++) {
    assert.equal(await core.run((m) => (seen.push(m), m.use())), 1);
  }
  assert.equal(new Set(seen).size, 3, "a new handle per run");
  for (const m of seen) assert.throws(() => m.use(), /revoked/);
  // Each restore is of the new handle, which the next run then gets; never of a borrower's.
  assert.deepEqual(restored.slice(0, 2), [seen[1].id, seen[2].id]);
  assert.ok(restored.every((id, i) => id !== seen[i].id));
  // A borrower that disposes its handle: the member is replaced, the pool keeps its size.
  await core.run((m) => m.dispose());
  assert.equal(core.size, 1);
  assert.equal(await core.run((m) => m.use()), 1);
  await core.dispose();
});
