import assert from "node:assert/strict";
import {
  CDYLIB_ABI_VERSION,
  lastError,
  OP_WORDS,
  openLibrary,
  OPS,
  symbols,
} from "../../src/ffi/lib.ts";
import { findLibrary } from "../../src/artifacts.ts";
import { globalStats, MicroVm, snapshotFromBytes } from "../../src/ffi/vm.ts";
import { kvmTest } from "./_kvm.ts";
import { QUICKJS_BUILT } from "./_js.ts";

// The built cdylib behind the FFI table (C ABI 10): the handshake, the calls that go through
// `hl_op` reaching the same entry points as their own symbols, and `hl_op`'s refusals.

Deno.test("the built library passes the handshake and has hl_op", () => {
  const lib = openLibrary();
  assert.equal(lib.hl_abi_version(), CDYLIB_ABI_VERSION);
  assert.equal(typeof lib.hl_op, "function");
});

Deno.test("a call through hl_op is the same entry point as its own symbol", () => {
  const lib = openLibrary();
  const own = Deno.dlopen(findLibrary(), {
    hl_global_stats: symbols.hl_global_stats,
    hl_snapshot_info: symbols.hl_snapshot_info,
  });
  try {
    const snap = snapshotFromBytes(new Uint8Array(3 * 4096).fill(1)); // routed: from_bytes, info
    assert.equal(snap.size, 3 * 4096);
    assert.equal(snap.dataPages, 3);
    const viaOp = new BigUint64Array(2);
    const direct = new BigUint64Array(2);
    assert.equal(lib.hl_snapshot_info(snap.handle, viaOp), 0);
    assert.equal(own.symbols.hl_snapshot_info(snap.handle, direct), 0);
    assert.deepEqual([...viaOp], [...direct]);
    const a = new BigUint64Array(4);
    const b = new BigUint64Array(4);
    assert.equal(lib.hl_global_stats(a), 0);
    assert.equal(own.symbols.hl_global_stats(b), 0);
    assert.equal(a[2], b[2]); // live snapshots: this one among them
    assert.ok(a[2] >= 1n);
    const handle = snap.handle;
    snap.release(); // routed: release
    assert.equal(lib.hl_snapshot_release(handle), -1, "released once already");
    assert.equal(globalStats().liveSnapshots, Number(b[2]) - 1);
  } finally {
    own.close();
  }
});

Deno.test("hl_op refuses an unknown op and an argument past 32 bits, with a message", () => {
  const lib = openLibrary();
  const block = new BigUint64Array(OP_WORDS);
  assert.equal(lib.hl_op(0, block), -2);
  assert.match(lastError(lib, 0), /unknown op 0/);
  assert.equal(lib.hl_op(Math.max(...Object.values(OPS)) + 1, block), -2);
  block[0] = 1n << 32n;
  assert.equal(lib.hl_op(OPS.hl_vm_destroy, block), -2);
  assert.match(lastError(lib, 0), /32 bits/);
  assert.equal(lib.hl_op(OPS.hl_vm_destroy, null), -2);
  // A handle that does not exist stays that entry point's own error.
  assert.equal(lib.hl_vm_destroy(0xdead), -1);
});

kvmTest("a VM made, mapped and destroyed through hl_op", () => {
  const vm = MicroVm.create(); // routed: vm_create, map_memory, memory_ptr
  const memory = vm.mapMemory(0, 1 << 16);
  memory[100] = 42;
  assert.equal(memory[100], 42);
  const lib = openLibrary();
  assert.equal(lib.hl_vm_memory_ptr(vm.handle, 9), null, "no slot 9: a null pointer");
  const h = vm.handle;
  vm.destroy();
  assert.equal(lib.hl_vm_destroy(h), -1);
});

/** Runs bench/_js_cold_child.ts (create + first call in a new process) with its cache in `dir`. */
async function coldChild(dir: string): Promise<Record<string, number>> {
  const child = new URL("../../bench/_js_cold_child.ts", import.meta.url).pathname;
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", child, "js"],
    env: { NO_COLOR: "1", HL_WASM_CACHE_DIR: dir, HL_START_SNAPSHOTS: "" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
  return JSON.parse(new TextDecoder().decode(o.stdout).trim().split("\n").pop()!);
}

(QUICKJS_BUILT ? kvmTest : Deno.test.ignore)(
  "a new process's first JsSandbox create + call binds the VM library once, 6 symbols",
  async () => {
    const dir = await Deno.makeTempDir({ prefix: "hl-ffi-binds-" });
    try {
      await coldChild(dir); // fills the artifact and start-snapshot caches
      const cached = await coldChild(dir);
      assert.equal(cached.diskHits, 1);
      // The version, hl_op and the per-call symbols in one Deno.dlopen (it was 16 and 16).
      assert.deepEqual([cached.dlopens, cached.symbols], [1, 6]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
);
