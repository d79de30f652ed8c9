// Hostile-input tests: whatever the guest writes, decoding returns a frame or throws
// ProtocolError — never another exception, never a hang.
import assert from "node:assert/strict";
import fc from "fast-check";
import { ProtocolError } from "../../src/errors.ts";
import { decodeFrame, encodeFrame, type Frame, frameSize } from "../../src/wire.ts";
import vectors from "../vectors/wire.json" with { type: "json" };
import { fromHex } from "../../tools/gen_vectors.ts";

/** Decodes `bytes`; fails the test on anything but success or a ProtocolError. */
function decodeOrProtocolError(bytes: Uint8Array): Frame | ProtocolError {
  try {
    return decodeFrame(bytes);
  } catch (err) {
    if (err instanceof ProtocolError) return err;
    throw new Error(`decode threw ${String(err)} instead of ProtocolError`, { cause: err });
  }
}

/**
 * Runs per property: the CI count, or `HL_WIRE_FUZZ_RUNS` (per property) for the long run
 * (`deno task fuzz-wire` sets 200,000: 1.2 million cases over the six properties).
 */
function runs(ci: number): number {
  const n = Number(Deno.env.get("HL_WIRE_FUZZ_RUNS"));
  return Number.isSafeInteger(n) && n > 0 ? n : ci;
}

const validFrames: Uint8Array[] = vectors.frames.map((f) => fromHex(f.hex));
const arbitraryValidFrame = fc.constantFrom(...validFrames);

/**
 * Whether `result` is the one prefix of a valid frame that is itself valid: a `FUNCTION_TABLE`
 * cut (or followed by junk) exactly where its optional imports part starts or ends, which is
 * the same table without the part, or with the junk as a whole imports part. `bytes` must then
 * be its exact encoding: nothing else is accepted.
 */
function isTableBoundary(result: Frame | ProtocolError, bytes: Uint8Array): boolean {
  if (result instanceof ProtocolError || result.kind !== "FUNCTION_TABLE") return false;
  const again = new Uint8Array(frameSize(result));
  encodeFrame(result, again);
  return again.length === bytes.length && again.every((b, i) => b === bytes[i]);
}

function withPayloadLen(bytes: Uint8Array, payloadLen: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(4, payloadLen, true);
  return copy;
}

Deno.test("hostile frames", async (t) => {
  await t.step("random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        decodeOrProtocolError(bytes);
      }),
      { numRuns: runs(5000) },
    );
  });

  await t.step("random payloads under a valid header", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 12 }),
        fc.uint8Array({ maxLength: 200 }),
        fc.integer({ min: 0, max: 16 }),
        (kind, payload, slack) => {
          const bytes = new Uint8Array(8 + payload.length + slack);
          const view = new DataView(bytes.buffer);
          view.setUint32(0, kind, true);
          view.setUint32(4, payload.length, true);
          bytes.set(payload, 8);
          decodeOrProtocolError(bytes);
        },
      ),
      { numRuns: runs(5000) },
    );
  });

  await t.step("every truncation of every valid frame is rejected", () => {
    for (const frame of validFrames) {
      for (let n = 0; n < frame.length; n++) {
        // The buffer ends early: payload_len now runs past it.
        assert.ok(decodeOrProtocolError(frame.subarray(0, n)) instanceof ProtocolError);
        // The payload ends early, and payload_len says so.
        if (n >= 8) {
          const cut = withPayloadLen(frame.subarray(0, n), n - 8);
          const result = decodeOrProtocolError(cut);
          // The one exception: a FUNCTION_TABLE cut where its imports part starts.
          if (isTableBoundary(result, cut)) {
            const whole = decodeFrame(frame) as Extract<Frame, { kind: "FUNCTION_TABLE" }>;
            assert.ok(whole.imports !== undefined, `cut at ${n}`);
            assert.deepEqual(result, { kind: "FUNCTION_TABLE", functions: whole.functions });
            continue;
          }
          assert.ok(result instanceof ProtocolError, `cut at ${n}`);
        }
      }
    }
  });

  await t.step("valid frames followed by junk inside payload_len are rejected", () => {
    fc.assert(
      fc.property(
        arbitraryValidFrame,
        fc.uint8Array({ minLength: 1, maxLength: 16 }),
        (frame, junk) => {
          const bytes = new Uint8Array(frame.length + junk.length);
          bytes.set(frame);
          bytes.set(junk, frame.length);
          const padded = withPayloadLen(bytes, bytes.length - 8);
          const result = decodeOrProtocolError(padded);
          // Junk that happens to be a whole imports part after a table without one is one.
          assert.ok(result instanceof ProtocolError || isTableBoundary(result, padded));
        },
      ),
      { numRuns: runs(2000) },
    );
  });

  await t.step("corrupted bytes, lengths, tags and kinds", () => {
    fc.assert(
      fc.property(
        arbitraryValidFrame,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        (frame, flips) => {
          const bytes = frame.slice();
          for (const [at, value] of flips) bytes[at % bytes.length] = value;
          decodeOrProtocolError(bytes);
        },
      ),
      { numRuns: runs(5000) },
    );
    // A corrupted u32 anywhere: the lengths, counts, codes and kinds.
    fc.assert(
      fc.property(
        arbitraryValidFrame,
        fc.nat(),
        fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0xfffffffe, 0xffffffff), fc.nat()),
        (frame, at, value) => {
          if (frame.length < 4) return;
          const bytes = frame.slice();
          new DataView(bytes.buffer).setUint32(at % (bytes.length - 3), value >>> 0, true);
          decodeOrProtocolError(bytes);
        },
      ),
      { numRuns: runs(5000) },
    );
  });

  await t.step("huge lengths in a large buffer are rejected fast", () => {
    const buffer = new Uint8Array(4 * 1024 * 1024);
    const view = new DataView(buffer.buffer);
    const cases: [number, number[]][] = [
      [1, [0, 0xffffffff]], // CALL: empty name (rejected), huge argc
      [2, []], // RETURN with a huge string below
      [7, [0xffffffff]], // FUNCTION_TABLE: huge count
      [8, [0xfffffff0]], // PANIC: huge message length
    ];
    // Each is refused by the length check itself (a walk of 4 GiB would not finish).
    for (const [kind, words] of cases) {
      buffer.fill(0);
      view.setUint32(0, kind, true);
      view.setUint32(4, buffer.length - 8, true);
      words.forEach((w, i) => view.setUint32(8 + 4 * i, w, true));
      if (kind === 2) {
        buffer[8] = 8;
        view.setUint32(9, 0xffffffff, true);
      }
      assert.ok(decodeOrProtocolError(buffer) instanceof ProtocolError);
    }
  });

  await t.step("a buffer full of void arguments is refused by the argument cap", () => {
    // The most values 1 MiB can hold: every argument is a 1-byte void. The argc cap (32) refuses
    // it before a single value is decoded (issue #10: this used to allocate ~1M objects).
    const buffer = new Uint8Array(1024 * 1024);
    const view = new DataView(buffer.buffer);
    view.setUint32(0, 1, true);
    view.setUint32(4, buffer.length - 8, true);
    view.setUint32(8, 1, true);
    buffer[12] = 0x66;
    view.setUint32(13, buffer.length - 17, true);
    assert.throws(() => decodeFrame(buffer), /more than 32 arguments/);
  });

  await t.step("what encodes decodes back (random frames)", () => {
    const value = fc.oneof(
      fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map((value) => ({
        type: "i32" as const,
        value,
      })),
      fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((value) => ({ type: "u64" as const, value })),
      fc.double({ noNaN: true }).map((value) => ({ type: "f64" as const, value })),
      fc.boolean().map((value) => ({ type: "bool" as const, value })),
      fc.string({ unit: "grapheme", maxLength: 40 }).map((value) => ({
        type: "string" as const,
        value,
      })),
      fc.uint8Array({ maxLength: 40 }).map((value) => ({ type: "bytes" as const, value })),
    );
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }),
        fc.array(value, { maxLength: 32 }),
        (name, args) => {
          const frame: Frame = { kind: "HOST_CALL", name, args };
          const buffer = new Uint8Array(frameSize(frame));
          encodeFrame(frame, buffer);
          assert.deepStrictEqual(decodeFrame(buffer), frame);
        },
      ),
      { numRuns: runs(1000) },
    );
  });
});
