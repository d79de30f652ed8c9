/**
 * The QuickJS driver's replies are guest output: every malformed one (oversized, not UTF-8, not
 * JSON, wrong shape, unknown host function, repeated id) is a ProtocolError; well-formed ones
 * decode to a value, a JsError or host calls.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { JsError, ProtocolError } from "../../mod.ts";
import { decodeReply, MAX_PENDING_CALLS, MAX_REPLY_BYTES } from "../../src/js/reply.ts";

const enc = new TextEncoder();
const names = new Set(["kvGet"]);
const decode = (text: string) => decodeReply(enc.encode(text), names);

Deno.test("js reply: values, errors and pending calls decode", () => {
  assert.deepEqual(decode("{}"), { kind: "value", value: undefined });
  assert.deepEqual(decode('{"value":{"a":[1,"x",null]}}'), {
    kind: "value",
    value: { a: [1, "x", null] },
  });
  const err = decode('{"error":{"name":"TypeError","message":"m","stack":"  at f"}}');
  assert.equal(err.kind, "error");
  const e = (err as { error: JsError }).error;
  assert.ok(e instanceof JsError);
  assert.deepEqual([e.jsName, e.jsMessage, e.jsStack, e.nonError], [
    "TypeError",
    "m",
    "  at f",
    false,
  ]);
  const thrown = decode('{"error":{"name":"","message":"42","stack":"","nonError":true}}');
  assert.equal((thrown as { error: JsError }).error.nonError, true);
  assert.deepEqual(decode('{"pending":[{"id":1,"fn":"kvGet","args":["k"]}]}'), {
    kind: "pending",
    calls: [{ id: 1, fn: "kvGet", args: ["k"] }],
  });
});

Deno.test("js reply: malformed replies are ProtocolErrors", () => {
  const bad = [
    "",
    "not json",
    "[]",
    "null",
    "42",
    '"value"',
    '{"value":1,"error":{}}',
    '{"other":1}',
    '{"error":"boom"}',
    '{"error":{"name":1,"message":"m"}}',
    '{"error":{"name":"E"}}',
    '{"error":{"name":"E","message":"m","stack":5}}',
    '{"error":{"name":"E","message":"m","nonError":"yes"}}',
    '{"error":{"name":"E","message":"m","extra":1}}',
    '{"pending":[]}',
    '{"pending":{}}',
    '{"pending":[1]}',
    '{"pending":[{"id":1,"fn":"nope","args":[]}]}',
    '{"pending":[{"id":1,"fn":"__proto__","args":[]}]}',
    '{"pending":[{"id":-1,"fn":"kvGet","args":[]}]}',
    '{"pending":[{"id":1.5,"fn":"kvGet","args":[]}]}',
    '{"pending":[{"id":1,"fn":"kvGet","args":{}}]}',
    '{"pending":[{"id":1,"fn":"kvGet","args":[]},{"id":1,"fn":"kvGet","args":[]}]}',
    '{"pending":[{"id":1,"fn":"kvGet","args":[],"x":0}]}',
  ];
  for (const text of bad) assert.throws(() => decode(text), ProtocolError, text);
  assert.throws(() => decodeReply(new Uint8Array([0x7b, 0xff, 0x7d]), names), ProtocolError);
  const many = JSON.stringify({
    pending: Array.from(
      { length: MAX_PENDING_CALLS + 1 },
      (_, id) => ({ id, fn: "kvGet", args: [] }),
    ),
  });
  assert.throws(() => decode(many), ProtocolError);
  // Oversized: the length is checked before anything is decoded.
  const huge = new Uint8Array(MAX_REPLY_BYTES + 1).fill(0x20);
  assert.throws(() => decodeReply(huge, names), /bytes \(at most/);
});

Deno.test("js reply: arbitrary bytes decode or are a ProtocolError, never anything else", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 64 }),
        fc.json().map((j) => enc.encode(j)),
        fc.jsonValue().map((v) => enc.encode(JSON.stringify({ pending: v }))),
        fc.jsonValue().map((v) => enc.encode(JSON.stringify({ error: v }))),
      ),
      (bytes) => {
        try {
          const r = decodeReply(bytes, names);
          assert.ok(["value", "error", "pending"].includes(r.kind));
        } catch (e) {
          assert.ok(e instanceof ProtocolError, String(e));
        }
      },
    ),
    { seed: 20, numRuns: 2000 },
  );
});
