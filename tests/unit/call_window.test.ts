// call/window.ts: frames through a small view of a buffer, widened for a frame that does not fit
// it; the bounds are the real buffer's, and a guest-written length is hostile.
import assert from "node:assert/strict";
import { WindowedDecoder, WindowedEncoder } from "../../src/call/window.ts";
import { ArgumentError, ProtocolError } from "../../src/errors.ts";
import { type Frame, FrameEncoder } from "../../src/wire.ts";

const FULL = 4096;
const SMALL = 256;

/** A buffer of FULL bytes, its small view, and a widen that counts the views it made. */
function setup() {
  const buffer = new Uint8Array(FULL);
  const made: Uint8Array[] = [];
  let released = 0;
  const widen = {
    view: () => {
      const v = buffer.subarray(0);
      made.push(v);
      return v;
    },
    release: (v: Uint8Array) => {
      assert.ok(made.includes(v));
      released++;
    },
  };
  return { buffer, small: buffer.subarray(0, SMALL), widen, made, released: () => released };
}

const bytes = (n: number): Frame => ({
  kind: "RETURN",
  value: { type: "bytes", value: new Uint8Array(n).fill(9) },
});

Deno.test("WindowedEncoder: a frame that fits the small view makes no other view", () => {
  const s = setup();
  const enc = new WindowedEncoder(s.small, FULL, s.widen, "inputSize");
  assert.equal(enc.encode(bytes(100)), 113);
  assert.equal(s.made.length, 0);
});

Deno.test("WindowedEncoder: a larger frame goes through a whole view, released after", () => {
  const s = setup();
  const enc = new WindowedEncoder(s.small, FULL, s.widen, "inputSize");
  assert.equal(enc.encode(bytes(FULL - 13)), FULL);
  assert.equal(s.made.length, 1);
  assert.equal(s.released(), 1);
  assert.equal(s.buffer[FULL - 1], 9);
  // Past the real buffer: the error names its size, and the view is released too.
  assert.throws(
    () => enc.encode(bytes(FULL - 12)),
    (e) => e instanceof ArgumentError && e.message.includes(`buffer is ${FULL} bytes`),
  );
  assert.equal(s.released(), 2);
});

Deno.test("WindowedDecoder: small, large and hostile frames", () => {
  const s = setup();
  const dec = new WindowedDecoder(s.small, FULL, s.widen);
  const write = (frame: Frame) => new FrameEncoder(s.buffer).encode(frame);
  write(bytes(100));
  assert.deepEqual(dec.decode(), bytes(100));
  assert.equal(s.made.length, 0);
  write(bytes(FULL - 13));
  assert.deepEqual(dec.decode(), bytes(FULL - 13));
  assert.equal(s.made.length, 1);
  assert.equal(s.released(), 1);
  // A header whose length runs past the real buffer (the guest's, hostile): a ProtocolError that
  // names the real size, never a read past it.
  const view = new DataView(s.buffer.buffer);
  for (const len of [FULL - 7, 0xffff_ffff]) {
    view.setUint32(4, len, true);
    assert.throws(
      () => dec.decode(),
      (e) => e instanceof ProtocolError && e.message.includes(`(${FULL - 8} bytes after`),
    );
  }
  assert.equal(s.released(), 3);
});
