// The snapshot file's description checks (src/snapshot_file.ts), without a VM: a file with a
// well-formed description reads back with its signatures normalized, and every malformed
// signature (of a function or of a host function) is refused as corrupt; the dense-bitmap test
// agrees with a bit-by-bit reference on every edge (whole bytes, the partial byte, stray bits).
import assert from "node:assert/strict";
import { SnapshotFormatError } from "../../src/snapshot.ts";
import { bitmapDense, LAYOUT_KEYS, readSnapshotDescription } from "../../src/snapshot_file.ts";
import { snapshotFileWriter, versionFields } from "./_snapshot_files.ts";

/** A file of a header, a description (correctly signed unless `badSum`), zero pages. */
const file = snapshotFileWriter("hl-snapdesc-");

function description(): Record<string, unknown> {
  const layout: Record<string, number> = Object.fromEntries(LAYOUT_KEYS.map((k) => [k, 0]));
  layout.memorySize = 16 * 4096;
  return {
    ...versionFields(),
    kind: "sandbox",
    memory: { size: 16 * 4096, offset: 4096, bitmap: "//8AAAAAAAA=", crc: 0 },
    layout,
    vcpu: "",
    guestId: "test",
    functions: [{ name: "add", params: ["i32", "i32"], result: "i32" }],
    imports: null,
    hostSignatures: [["log", { params: ["string"], result: "void" }]],
  };
}

Deno.test("snapshot description: a well-formed one reads back, signatures normalized", async () => {
  const { description: d } = await readSnapshotDescription(await file(description()));
  assert.deepEqual(d.functions, [{ name: "add", params: ["i32", "i32"], result: "i32" }]);
  assert.deepEqual(d.hostSignatures, [["log", { params: ["string"], result: "void" }]]);
});

Deno.test("snapshot description: every malformed signature is refused as corrupt", async () => {
  const cases: [string, (d: Record<string, unknown>) => void][] = [
    ["function not an object", (d) => d.functions = [5]],
    ["function null", (d) => d.functions = [null]],
    ["name not a string", (d) => d.functions = [{ name: 1, params: [], result: "void" }]],
    ["name too long", (d) => d.functions = [{ name: "x".repeat(256), params: [], result: "i32" }]],
    ["params not an array", (d) => d.functions = [{ name: "f", params: "i32", result: "i32" }]],
    [
      "33 params",
      (d) => d.functions = [{ name: "f", params: Array(33).fill("i32"), result: "i32" }],
    ],
    ["unknown param type", (d) => d.functions = [{ name: "f", params: ["i33"], result: "i32" }]],
    ["unknown result type", (d) => d.functions = [{ name: "f", params: [], result: "x" }]],
    ["import malformed", (d) => d.imports = [{ name: "f", params: [], result: 3 }]],
    ["host entry not a pair", (d) => d.hostSignatures = [["log"]]],
    ["host name not a string", (d) => d.hostSignatures = [[1, { params: [], result: "void" }]]],
    ["host signature a number", (d) => d.hostSignatures = [["log", 5]]],
    ["host signature null", (d) => d.hostSignatures = [["log", null]]],
    ["host signature an array", (d) => d.hostSignatures = [["log", ["i32"]]]],
    ["host param unknown", (d) => d.hostSignatures = [["log", { params: [7], result: "void" }]]],
    ["host result missing", (d) => d.hostSignatures = [["log", { params: [] }]]],
  ];
  for (const [what, change] of cases) {
    const d = description();
    change(d);
    await assert.rejects(readSnapshotDescription(await file(d)), (e: unknown) => {
      assert.ok(e instanceof SnapshotFormatError, `${what}: ${e}`);
      assert.equal(e.reason, "corrupt", `${what}: ${e.message}`);
      return true;
    }, what);
  }
});

/** The bit-by-bit definition: the first `pages` bits set, no other. */
function denseReference(bitmap: Uint8Array, pages: number): boolean {
  for (let p = 0; p < bitmap.length * 8; p++) {
    if (((bitmap[p >> 3] & (1 << (p & 7))) !== 0) !== p < pages) return false;
  }
  return true;
}

Deno.test("snapshot bitmap: dense exactly when the bit-by-bit definition says so", () => {
  let dense = 0;
  for (const bytes of [0, 1, 8, 16, 24]) {
    for (let pages = 0; pages <= bytes * 8 + 9; pages++) {
      // The first `set` bits set, then each single bit flipped: every edge of the definition.
      for (const set of [pages - 1, pages, pages + 1]) {
        const base = new Uint8Array(bytes);
        for (let p = 0; p < Math.min(Math.max(set, 0), bytes * 8); p++) {
          base[p >> 3] |= 1 << (p & 7);
        }
        const variants = [base];
        for (let p = 0; p < bytes * 8; p++) {
          const v = base.slice();
          v[p >> 3] ^= 1 << (p & 7);
          variants.push(v);
        }
        for (const v of variants) {
          const want = denseReference(v, pages);
          if (want) dense++;
          assert.equal(bitmapDense(v, pages), want, `${bytes} bytes, ${pages} pages: ${v}`);
        }
      }
    }
  }
  assert.ok(dense > 0, "some cases are dense");
});

Deno.test("snapshot description: a SHA-256 mismatch is reported before what the checks find", async () => {
  const cases: [string, (d: Record<string, unknown>) => void][] = [
    ["well-formed", () => {}],
    ["another library version", (d) => d.library = "0.0.0"],
    ["another C ABI", (d) => d.cdylibAbi = 1],
    ["malformed signature", (d) => d.functions = [5]],
  ];
  for (const [what, change] of cases) {
    const d = description();
    change(d);
    await assert.rejects(readSnapshotDescription(await file(d, true)), (e: unknown) => {
      assert.ok(e instanceof SnapshotFormatError, `${what}: ${e}`);
      assert.equal(e.reason, "corrupt", `${what}: ${e.message}`);
      assert.match(e.message, /SHA-256 does not match/, what);
      return true;
    }, what);
  }
  // Signed correctly, the version check's own reason comes through.
  const d = description();
  d.library = "0.0.0";
  await assert.rejects(readSnapshotDescription(await file(d)), (e: unknown) => {
    assert.ok(e instanceof SnapshotFormatError);
    assert.equal(e.reason, "version", e.message);
    return true;
  });
});
