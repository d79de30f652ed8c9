// Bounds of linear memory, exactly (issue 22 item 1): wasmtime checks loads and stores with guard
// pages (docs/abi.md, "Wasm guard pages"), wasmi in code; on both an access traps as
// memory_out_of_bounds from the first byte past the memory's size, before and after a grow and
// after a restore to a smaller memory, and the sandbox stays usable.
import assert from "node:assert/strict";
import { WasmSandbox, WasmTrapError } from "../../mod.ts";
import { MicroVm } from "../../src/ffi/vm.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { engineTest, WASM_ENGINES } from "./_kvm.ts";

const PAGE = 65536;

async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    return await p;
  } catch (e) {
    if (e instanceof WasmTrapError) return e.trap;
    throw e;
  }
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);

  test("wasm bounds: the last byte is in, the next one traps, before and after a grow", async () => {
    await using w = await WasmSandbox.create({ module: fixtureBytes("bounds"), engine });
    const oob = "memory_out_of_bounds";
    await w.call("store8", PAGE - 1, 0x5a);
    assert.equal(await w.call("load8", PAGE - 1), 0x5a, "last byte");
    assert.equal(await outcome(w.call("load8", PAGE)), oob, "first byte past the end");
    assert.equal(await outcome(w.call("store8", PAGE, 1)), oob, "store to it");
    assert.equal(await outcome(w.call("load32", PAGE - 3)), oob, "a load straddling the end");
    assert.equal(await outcome(w.call("load8", 2 * PAGE)), oob, "past the next page");
    assert.equal(await outcome(w.call("load8", -1)), oob, "index 0xffffffff");
    assert.equal(await outcome(w.call("load8_guard", -1)), oob, "inside the guard");
    assert.equal(await outcome(w.call("load8_guard_end", -1)), oob, "the guard's last byte");
    assert.equal(await outcome(w.call("store8_beyond", -1)), oob, "beyond the guard");
    assert.equal(w.poisoned, false);

    assert.equal(await w.call("grow", 1), 1);
    assert.equal(await w.call("load8", PAGE), 0, "grown page, zero");
    await w.call("store8", 2 * PAGE - 1, 7);
    assert.equal(await w.call("load8", 2 * PAGE - 1), 7, "last byte after the grow");
    assert.equal(await w.call("load8", PAGE - 1), 0x5a, "kept across the grow");
    assert.equal(await outcome(w.call("load8", 2 * PAGE)), oob, "first byte past the new end");
    assert.equal(await w.memorySize(), 2 * PAGE);
  });

  test("wasm bounds: after a restore to a smaller memory the grown pages trap again", async () => {
    await using w = await WasmSandbox.create({ module: fixtureBytes("bounds"), engine });
    await using snap = await w.snapshot();
    for (let round = 0; round < 2; round++) {
      assert.equal(await w.call("grow", 3), 1);
      await w.call("store8", 3 * PAGE, 9);
      assert.equal(await w.call("load8", 3 * PAGE), 9);
      await w.restore(snap);
      assert.equal(await w.memorySize(), PAGE);
      for (const at of [PAGE, 3 * PAGE, 4 * PAGE - 1]) {
        assert.equal(await outcome(w.call("load8", at)), "memory_out_of_bounds", `${at}`);
      }
      assert.equal(await w.call("load8", PAGE - 1), 0);
    }
  });

  test("wasm bounds: a restore that fails part-way still leaves the grown pages trapping", async () => {
    await using w = await WasmSandbox.create({ module: fixtureBytes("bounds"), engine });
    await using snap = await w.snapshot();
    assert.equal(await w.call("grow", 3), 1);
    await w.call("store8", 3 * PAGE, 9);
    // The VM's restore does its work and then fails (as one failing late would): the sandbox is
    // poisoned, and the page tables already say one page, so the next restore cannot see what the
    // reservation mapped before the failure.
    const real = MicroVm.prototype.restore;
    MicroVm.prototype.restore = function (this: MicroVm, ...args: Parameters<typeof real>) {
      MicroVm.prototype.restore = real;
      real.apply(this, args);
      throw new Error("injected: restore failed part-way");
    };
    try {
      await assert.rejects(w.restore(snap), /injected/);
    } finally {
      MicroVm.prototype.restore = real;
    }
    assert.equal(w.poisoned, true);
    await w.restore(snap);
    assert.equal(w.poisoned, false);
    assert.equal(await w.memorySize(), PAGE);
    for (const at of [PAGE, 3 * PAGE, 4 * PAGE - 1]) {
      assert.equal(await outcome(w.call("load8", at)), "memory_out_of_bounds", `${at}`);
    }
  });
}
