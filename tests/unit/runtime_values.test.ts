/**
 * The value encoding of the language-runtime layer (`src/runtime/values.ts`, docs/js.md
 * "Values"): JSON with `Uint8Array` as `{"$bytes": base64}` and tag-like user objects escaped.
 * Every JSON value with bytes anywhere round-trips exactly (fast-check); plain JSON is written as
 * `JSON.stringify` writes it; a tag the driver could not have written is a ProtocolError, through
 * the reply decoder as well.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ArgumentError, ProtocolError } from "../../mod.ts";
import { mayHoldTags, readTags, writeValue } from "../../src/runtime/values.ts";
import { decodeReply } from "../../src/js/reply.ts";

const enc = new TextEncoder();
const roundTrip = (v: unknown) => readTags(JSON.parse(writeValue(v, "v")));

/** JSON values with bytes and tag-like objects (`$bytes`/`$escape` keys) mixed in. */
const withBytes = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    fc.oneof(fc.string(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean()),
    fc.constant(null),
    fc.uint8Array({ maxLength: 40 }),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(
      fc.oneof(fc.string(), fc.constantFrom("$bytes", "$escape", "__proto__")),
      tie("value"),
      { maxKeys: 3 },
    ),
  ),
})).value;

Deno.test("runtime values: bytes and tag-like objects round-trip exactly", () => {
  assert.deepEqual(roundTrip(new Uint8Array([0, 1, 255])), new Uint8Array([0, 1, 255]));
  assert.equal(writeValue(new Uint8Array([1, 2, 3]), "v"), '{"$bytes":"AQID"}');
  assert.equal(writeValue({ $bytes: "AQID" }, "v"), '{"$escape":{"$bytes":"AQID"}}');
  assert.deepEqual(roundTrip({ $bytes: "AQID" }), { $bytes: "AQID" });
  assert.deepEqual(roundTrip({ $escape: { $bytes: new Uint8Array([7]) } }), {
    $escape: { $bytes: new Uint8Array([7]) },
  });
  // An own "__proto__" key stays an own key (not the prototype) when its value is decoded.
  const p = roundTrip(JSON.parse('{"__proto__":{"x":1},"b":[]}')) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(p), Object.prototype);
  const q = roundTrip({ ["__proto__"]: new Uint8Array([1]) }) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(q), Object.prototype);
  assert.deepEqual(Object.getOwnPropertyDescriptor(q, "__proto__")?.value, new Uint8Array([1]));
  fc.assert(
    fc.property(withBytes, (v) => {
      // JSON normalises -0 to 0: compare with what JSON itself keeps.
      const expected = JSON.parse(
        JSON.stringify(v, (_k, x) => x instanceof Uint8Array ? { u8: [...x] } : x),
      );
      const got = JSON.parse(
        JSON.stringify(roundTrip(v), (_k, x) => x instanceof Uint8Array ? { u8: [...x] } : x),
      );
      assert.deepEqual(got, expected);
    }),
    { numRuns: 500 },
  );
});

Deno.test("runtime values: plain JSON is written as JSON.stringify writes it", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      fc.pre(!JSON.stringify(v).includes('"$'));
      assert.equal(writeValue(v, "v"), JSON.stringify(v));
      assert.equal(mayHoldTags(writeValue(v, "v")), false);
    }),
    { numRuns: 300 },
  );
  assert.throws(() => writeValue(1n, "an argument"), ArgumentError);
  assert.throws(() => writeValue(() => {}, "an argument"), ArgumentError);
});

Deno.test("runtime values: malformed tags from the driver are ProtocolErrors", () => {
  for (
    const text of [
      '{"$bytes":5}',
      '{"$bytes":"not base64!"}',
      '{"$bytes":null}',
      '{"$escape":5}',
      '{"$escape":[1]}',
      '{"$escape":null}',
      '[{"a":{"$bytes":"@@"}}]',
    ]
  ) {
    assert.throws(() => readTags(JSON.parse(text)), ProtocolError, text);
    const names = new Set(["f"]);
    assert.throws(
      () => decodeReply(enc.encode(`{"value":${text}}`), names),
      ProtocolError,
      `value ${text}`,
    );
    assert.throws(
      () => decodeReply(enc.encode(`{"pending":[{"id":1,"fn":"f","args":[${text}]}]}`), names),
      ProtocolError,
      `args ${text}`,
    );
  }
  // Nesting deeper than the host's stack: a ProtocolError, not a RangeError.
  const deep = "[".repeat(200_000) + '{"$bytes":"AA=="}' + "]".repeat(200_000);
  assert.throws(() => decodeReply(enc.encode(`{"value":${deep}}`), new Set()), ProtocolError);
  // Decoded through the reply: bytes in a value and in a host call's arguments.
  assert.deepEqual(decodeReply(enc.encode('{"value":{"$bytes":"AQI="}}'), new Set()), {
    kind: "value",
    value: new Uint8Array([1, 2]),
  });
  assert.deepEqual(
    decodeReply(
      enc.encode('{"pending":[{"id":1,"fn":"f","args":[{"$escape":{"$bytes":"x"}}]}]}'),
      new Set(["f"]),
    ),
    { kind: "pending", calls: [{ id: 1, fn: "f", args: [{ $bytes: "x" }] }] },
  );
});
