/**
 * The Python driver's fd 1 frames as the host reads them (src/py/protocol.ts), without a VM:
 * frames split anywhere, bytes around them kept as stray output, and hostile lengths refused
 * before anything of that size is buffered.
 */
import assert from "node:assert/strict";
import { ProtocolError } from "../../src/errors.ts";
import { FRAME_MARKER } from "../../src/py/driver.ts";
import { decodeReply, READER_START_BYTES, ReplyReader } from "../../src/py/protocol.ts";

const utf8 = new TextEncoder();

function frame(kind: "Y" | "F", text: string, length = utf8.encode(text).length): Uint8Array {
  const head = utf8.encode(`${kind}${length}\n`);
  const body = utf8.encode(text);
  const out = new Uint8Array(FRAME_MARKER.length + head.length + body.length);
  out.set(FRAME_MARKER);
  out.set(head, FRAME_MARKER.length);
  out.set(body, FRAME_MARKER.length + head.length);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) (out.set(p, at), at += p.length);
  return out;
}

Deno.test("py protocol: frames split at every byte, stray output around them", () => {
  const all = concat(utf8.encode("before "), frame("F", '{"url":"x"}'), frame("Y", '{"ok":1}'));
  for (let cut = 0; cut <= all.length; cut++) {
    const r = new ReplyReader(1024);
    const frames = [...r.push(all.subarray(0, cut)), ...r.push(all.subarray(cut))];
    assert.deepEqual(frames, [
      { kind: "fetch", text: '{"url":"x"}' },
      { kind: "reply", text: '{"ok":1}' },
    ], `cut at ${cut}`);
    assert.equal(r.stray, "before ");
  }
});

Deno.test("py protocol: hostile frames and lengths are ProtocolErrors", () => {
  const bad = (bytes: Uint8Array) =>
    assert.throws(() => new ReplyReader(1024).push(bytes), ProtocolError);
  bad(frame("Y", "{}", 1025)); // over maxOutputBytes: refused before waiting for the bytes
  bad(frame("Y", "{}", Number.MAX_SAFE_INTEGER));
  bad(concat(FRAME_MARKER, utf8.encode("Z2\n{}"))); // unknown kind
  bad(concat(FRAME_MARKER, utf8.encode("Y-2\n{}"))); // not a length
  bad(concat(FRAME_MARKER, utf8.encode("Y" + "9".repeat(30)))); // no length line
  bad(new Uint8Array(1025).fill(0x41)); // stray output over maxOutputBytes
});

Deno.test("py protocol: a reply of the wrong shape is a ProtocolError", () => {
  for (const text of ["", "[]", "null", '{"ok":true}', '{"ok":false,"stdout":"","stderr":""}']) {
    assert.throws(() => decodeReply(text), ProtocolError, text);
  }
  assert.deepEqual(decodeReply('{"ok":true,"stdout":"a","stderr":""}'), {
    ok: true,
    stdout: "a",
    stderr: "",
  });
});

Deno.test("py protocol: a reader starts small and grows to the frame it must hold", () => {
  // One reader per request: its first buffer is allocated on every request's path.
  const r = new ReplyReader(1 << 20);
  assert.ok(r.capacity <= READER_START_BYTES && READER_START_BYTES <= 4096, `${r.capacity}`);
  const text = JSON.stringify({ ok: true, stdout: "x".repeat(100_000), stderr: "" });
  const all = frame("Y", text);
  const frames = [...r.push(all.subarray(0, 70_000)), ...r.push(all.subarray(70_000))];
  assert.deepEqual(frames, [{ kind: "reply", text }]);
  assert.ok(r.capacity >= all.length, `${r.capacity}`);
});
