/**
 * Linear memory grows in place in the wasmtime guest (issue 22 item 1, first part): a memory
 * reserves its reachable size (declared maximum, capped by the store's memory limit) when it is
 * created, so `memory.grow` zeroes the new pages and copies nothing. Counted in bytes copied
 * (the guest function `memory_copied`), not timed.
 */
import assert from "node:assert/strict";
import "../../src/sandbox.ts"; // registers the Sandbox operations createSandboxWithCode uses
import { findGuest } from "../../src/artifacts.ts";
import { createSandboxWithCode, sandboxCodeAddr } from "../../src/sandbox_internal.ts";
import { codeImage } from "../../src/wasm/compiler.ts";
import { Writer } from "../../src/wasm/codec.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

const MIB = 1 << 20;

/**
 * A bare wasmtime-runtime guest with grow.wasm instantiated under a store limit of `limit`, with
 * a guard-page reservation of `reservation` bytes (docs/abi.md, "Wasm guard pages").
 */
async function grower(limit: bigint, reservation: number) {
  const image = await codeImage(fixtureBytes("grow"), false);
  const sb = await createSandboxWithCode(
    {
      guest: findGuest("wasmtime-runtime"),
      heapSize: 256 * MIB,
      stackSize: 4 * MIB,
    },
    image.code,
    reservation,
  );
  image.code.release();
  const load = new Writer();
  load.u64(0n);
  load.u32(0);
  load.u64(BigInt(sandboxCodeAddr(sb)));
  load.u64(BigInt(image.code.size));
  load.u64(4n * BigInt(MIB));
  await sb.call("load", new Uint8Array(0), load.finish());
  const inst = new Writer();
  inst.u64(limit); // max memory bytes (0: none)
  inst.u64(0n); // max table elements
  inst.u8(0); // no WASI
  await sb.call("instantiate", inst.finish());
  const i32s = (...v: number[]) => new Uint8Array(new Int32Array(v).buffer);
  const invoke = async (name: string, ...args: number[]) => {
    const out = await sb.call("invoke", name, i32s(...args)) as Uint8Array;
    return out.length >= 4 ? new DataView(out.buffer, out.byteOffset).getInt32(0, true) : undefined;
  };
  return { sb, invoke, copied: async () => await sb.call("memory_copied") as bigint };
}

kvmTest("wasmtime: memory.grow to 64 MiB inside the store limit copies 0 bytes", async () => {
  const { sb, invoke, copied } = await grower(128n * BigInt(MIB), 128 * MIB);
  await using _ = sb;
  await invoke("poke", 100, 42);
  assert.equal(await invoke("grow", 1023), 1); // 64 KiB → 64 MiB
  assert.equal(await invoke("peek", 100), 42);
  await invoke("poke", 64 * MIB - 4, 7);
  assert.equal(await invoke("peek", 64 * MIB - 4), 7);
  assert.equal(await invoke("peek", 32 * MIB), 0); // grown pages are zero
  assert.equal(await copied(), 0n);
  // Past the store limit the grow fails (-1), as before.
  assert.equal(await invoke("grow", 1025), -1);
});

kvmTest(
  "wasmtime: a memory whose reserve does not fit the heap moves on grow, counted",
  async () => {
    // No store limit and no declared maximum: a reserve of the whole 1 GiB reservation does not fit
    // a 256 MiB heap, so the memory starts at its minimum and the first grow moves it to a larger
    // block (what every grow did before), still at the reservation's address.
    const { sb, invoke, copied } = await grower(0n, 1024 * MIB);
    await using _ = sb;
    await invoke("poke", 100, 42);
    assert.equal(await invoke("grow", 15), 1);
    assert.equal(await invoke("peek", 100), 42);
    assert.equal(await copied(), 65536n);
  },
);
