/**
 * The runtime layer's console output (src/runtime/output.ts): lines to `onLog`, and a bound on
 * what it holds of a line the guest never ends (guest output is hostile).
 */
import assert from "node:assert/strict";
import { MAX_LINE_LENGTH, Output } from "../../src/runtime/output.ts";

Deno.test("output: lines reach onLog, the last one at flush", () => {
  const seen: [string, string][] = [];
  const out = new Output({ onLog: (level, line) => seen.push([level, line]) });
  const enc = new TextEncoder();
  out.write("log", enc.encode("a\nb"));
  out.write("error", enc.encode("e\n"));
  out.write("log", enc.encode("c\nd"));
  out.flush();
  assert.deepEqual(seen, [["log", "a"], ["error", "e"], ["log", "bc"], ["log", "d"]]);
});

Deno.test("output: a line the guest never ends is handed on in bounded pieces", () => {
  const seen: string[] = [];
  const out = new Output({ onLog: (_level, line) => seen.push(line) });
  const chunk = new Uint8Array(64 * 1024).fill(0x61); // "a", no newline
  const chunks = Math.ceil((4 * MAX_LINE_LENGTH) / chunk.length);
  for (let i = 0; i < chunks; i++) out.write("log", chunk);
  // Nothing held grows past the bound: pieces of at most MAX_LINE_LENGTH were handed on.
  assert.ok(seen.length >= 3, `${seen.length} pieces`);
  for (const line of seen) assert.ok(line.length <= MAX_LINE_LENGTH, `${line.length}`);
  out.flush();
  assert.equal(seen.reduce((n, l) => n + l.length, 0), chunks * chunk.length);
});
