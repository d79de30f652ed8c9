import assert from "node:assert/strict";
import { HypervisorError } from "../../src/errors.ts";
import {
  abiMismatch,
  CDYLIB_ABI_VERSION,
  DIRECT,
  OP_WORDS,
  OPS,
  routed,
  symbols,
} from "../../src/ffi/lib.ts";

// The FFI table and its dispatch entry (C ABI 10, `hl_op`) without a library: the op codes agree
// with the cdylib's source, each routed signature fits the argument block, and the packing puts
// each argument where `hl_op` reads it.

const libRs = await Deno.readTextFile(new URL("../../rust-vmm/src/lib.rs", import.meta.url));

Deno.test("the op codes and the ABI version are the cdylib's", () => {
  const rust = new Map<string, number>();
  const block = /pub mod op \{([\s\S]*?)\n\}/.exec(libRs)?.[1] ?? "";
  for (const m of block.matchAll(/pub const (\w+): u32 = (\d+);/g)) {
    rust.set(`hl_${m[1].toLowerCase()}`, Number(m[2]));
  }
  assert.ok(rust.size > 0, "no op codes found in rust-vmm/src/lib.rs");
  assert.deepEqual(Object.fromEntries(rust), { ...OPS });
  assert.equal(
    Number(/pub const CDYLIB_ABI_VERSION: u32 = (\d+);/.exec(libRs)?.[1]),
    CDYLIB_ABI_VERSION,
  );
  assert.equal(Number(/pub const OP_WORDS: usize = (\d+);/.exec(libRs)?.[1]), OP_WORDS);
});

Deno.test("every routed entry point is a synchronous symbol whose arguments fit the block", () => {
  const table: Record<string, Deno.ForeignFunction> = symbols;
  const codes = new Set<number>();
  for (const [name, op] of Object.entries(OPS)) {
    const def = table[name];
    assert.ok(def, `${name} is not in the table`);
    assert.ok(!codes.has(op), `op ${op} twice`);
    codes.add(op);
    assert.notEqual(def.nonblocking, true, `${name} is nonblocking: hl_op is synchronous`);
    const room = def.result === "pointer" ? OP_WORDS - 1 : OP_WORDS;
    assert.ok(def.parameters.length <= room, `${name}: ${def.parameters.length} arguments`);
    assert.ok(["i32", "pointer"].includes(def.result as string), `${name}: ${def.result}`);
  }
  for (const name of DIRECT) assert.ok(name in OPS, `${name}`);
  // The per-exit calls keep their own symbols.
  for (const name of ["hl_vcpu_start", "hl_vcpu_poll", "hl_vcpu_wait", "hl_vm_restore"]) {
    assert.ok(!(name in OPS), name);
  }
});

Deno.test("routed calls put each argument in its word and read a pointer result back", () => {
  let seen: { op: number; words: bigint[] } | undefined;
  let result = 0;
  let pointerWord = 0n;
  const dispatch = (op: number, args: BigUint64Array) => {
    seen = { op, words: [...args] };
    args[OP_WORDS - 1] = pointerWord;
    return result;
  };
  const buffer = new Uint8Array(64);
  const out = new Uint32Array(1);
  const load = routed(dispatch, OPS.hl_snapshot_load_pages, symbols.hl_snapshot_load_pages);
  result = -2;
  const status = load(buffer.subarray(8), 5, 2n ** 40n + 3n, 4096n, null, 0n, 0xffff_ffff, out);
  assert.equal(status, -2);
  assert.equal(seen!.op, 24);
  const address = (x: BufferSource) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(x)));
  assert.deepEqual(seen!.words, [
    address(buffer) + 8n,
    5n,
    2n ** 40n + 3n,
    4096n,
    0n,
    0n,
    0xffff_ffffn,
    address(out),
  ]);
  // Numbers past 32 bits keep their value (two halves), they are not cut.
  const map = routed(dispatch, OPS.hl_vm_map_memory, symbols.hl_vm_map_memory);
  result = 0;
  map(3, 2 ** 33 + 1, 2 ** 52, 1, out);
  assert.deepEqual(seen!.words.slice(0, 4), [3n, 2n ** 33n + 1n, 2n ** 52n, 1n]);
  assert.throws(() => map(-1, 0, 0, 0, out), TypeError);
  assert.throws(() => map(1.5, 0, 0, 0, out), TypeError);
  // A pointer result: the last word, 0 is null, and so is any failure.
  const ptr = routed(dispatch, OPS.hl_vm_memory_ptr, symbols.hl_vm_memory_ptr);
  pointerWord = 0x7000_0000_1000n;
  assert.equal(BigInt(Deno.UnsafePointer.value(ptr(1, 0) as Deno.PointerObject)), pointerWord);
  pointerWord = 0n;
  assert.equal(ptr(1, 0), null);
  pointerWord = 0x1000n;
  result = -9;
  assert.equal(ptr(1, 0), null);
  // A signature that does not fit is refused when the table is built, not at a call.
  assert.throws(
    () => routed(dispatch, 99, { parameters: Array(8).fill("u32"), result: "pointer" }),
    RangeError,
  );
});

Deno.test("the handshake refuses another ABI version, or this one without hl_op", () => {
  assert.equal(abiMismatch("/lib.so", CDYLIB_ABI_VERSION, true), undefined);
  for (const [version, hasOp] of [[CDYLIB_ABI_VERSION - 1, false], [CDYLIB_ABI_VERSION, false]]) {
    const e = abiMismatch("/lib.so", version as number, hasOp as boolean);
    assert.ok(e instanceof HypervisorError);
    assert.equal(e.code, "API_VERSION");
    assert.match(e.message, new RegExp(`version ${version}.*needs ${CDYLIB_ABI_VERSION}`));
    assert.match(e.message, /rebuild/);
  }
});
