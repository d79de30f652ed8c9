// A live sandbox views only what the host reads and writes of its memory: the low region (PEB,
// stubs, page tables) and the first 64 KiB of each I/O buffer (`call/window.ts`), not the 4 MiB
// buffers whole. V8 counts a view's length as external memory and runs full collections as that
// grows: with views of the whole buffers, 300 live sandboxes from a snapshot ran 68 mark-compacts
// here (V8's old space fixed at 1 GiB, so the limit is the same on every host), against 1 with the
// small views (issue 19, docs/design.md "Scale"). Counts V8's collections in a child process
// (`--trace-gc`), never times. Frames larger than the small views, both ways and at the buffers'
// full sizes, still work and are still bounded by the real buffer sizes.
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { runGcChild } from "./_gc_child.ts";
import { TESTGUEST } from "../_guests.ts";
import { ArgumentError, Sandbox } from "../../mod.ts";
import { frameSize } from "../../src/wire.ts";

const LIVE = 300;
const LOOP = 300;

kvmTest(
  "memory views: live sandboxes do not each cost the collector their I/O buffers",
  async () => {
    const { gcs, result } = await runGcChild(
      "./_scale_view_child.ts",
      "--max-old-space-size=1024",
      [String(LIVE), String(LOOP)],
    );
    assert.deepEqual(result, { sum: (LOOP * (LOOP + 1)) / 2 });
    const full = gcs.filter((l) => / ms: (Incremental )?Mark-Compact/.test(l));
    // Views of the whole buffers (9.25 MiB per sandbox): 68 here; small views: 1.
    assert.ok(full.length <= 10, `${full.length} full collections:\n${full.join("\n")}`);
  },
);

/** Bytes `n` long, each its index's low byte plus `seed`. */
function pattern(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i + seed) & 0xff;
  return b;
}

const INPUT = 512 << 10;
const OUTPUT = 256 << 10;

for (const from of ["cold", "snapshot"] as const) {
  kvmTest(`memory views (${from}): frames larger than the small views, both ways`, async () => {
    const hostFunctions = {
      grow: {
        params: ["bytes"],
        result: "bytes",
        fn: (b: Uint8Array) => pattern(b.length + 20_000, 7),
      },
    } as const;
    const options = { guest: TESTGUEST, inputSize: INPUT, outputSize: OUTPUT, hostFunctions };
    await using cold = await Sandbox.create(options);
    await using snap = from === "snapshot" ? await cold.snapshot() : undefined;
    await using copy = snap ? await Sandbox.create({ snapshot: snap, hostFunctions }) : undefined;
    const sb = copy ?? cold;
    // Small frames both ways.
    assert.deepEqual(await sb.call("echo_bytes", pattern(100)), pattern(100));
    // Input and output over 64 KiB.
    const big = pattern(200_000, 3);
    assert.deepEqual(await sb.call("echo_bytes", big), big);
    assert.deepEqual(sb.callSync("echo_bytes", big), big);
    // A HOST_CALL over 64 KiB (the output buffer) and its HOST_RETURN over 64 KiB (the input).
    assert.deepEqual(await sb.call("call_host_value_bytes", "grow", big), pattern(220_000, 7));
    // The output buffer at its full size: RETURN of exactly OUTPUT bytes.
    const outLen = OUTPUT - frameSize({ kind: "RETURN", value: { type: "bytes", value: big } }) +
      big.length;
    assert.deepEqual(await sb.call("echo_bytes", pattern(outLen, 5)), pattern(outLen, 5));
    // The input buffer at its full size: CALL of exactly INPUT bytes; one byte more is refused.
    const call = (n: number) =>
      frameSize({ kind: "CALL", name: "sum_bytes", args: [{ type: "bytes", value: pattern(n) }] });
    const inLen = INPUT - call(0);
    assert.equal(call(inLen), INPUT);
    const full = pattern(inLen, 1);
    assert.equal(await sb.call("sum_bytes", full), BigInt(full.reduce((a, b) => a + b, 0)));
    assert.throws(
      () => sb.callSync("sum_bytes", pattern(inLen + 1)),
      (e) => e instanceof ArgumentError && e.message.includes(`${INPUT} bytes`),
    );
    // Still usable after the refusal, with a small frame.
    assert.deepEqual(await sb.call("echo_bytes", pattern(10)), pattern(10));
  });
}
