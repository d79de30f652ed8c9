/**
 * Fixtures of the `hl serve` tests and the load script: the WAGI program and the bytes-convention
 * handler (tests/serve/*.c) built with clang into target/serve-fixtures/ (rebuilt when the source
 * is newer), and the JavaScript handler's path.
 *
 * @module
 */

import assert from "node:assert/strict";

const ROOT = new URL("../../", import.meta.url).pathname;
const OUT = `${ROOT}target/serve-fixtures`;

function mtime(p: string): number {
  try {
    return Deno.statSync(p).mtime?.getTime() ?? 0;
  } catch {
    return -1;
  }
}

function build(src: string, out: string, flags: string[]): string {
  if (mtime(out) >= mtime(src)) return out;
  Deno.mkdirSync(OUT, { recursive: true });
  const r = new Deno.Command("clang", { args: [...flags, src, "-o", out], stderr: "piped" })
    .outputSync();
  if (!r.success) {
    throw new Error(`clang ${src}: ${new TextDecoder().decode(r.stderr)}`);
  }
  return out;
}

/** Paths of the fixtures (built on first use). */
export function serveFixtures(): { wagi: string; wasm: string; js: string } {
  return {
    wagi: build(`${ROOT}tests/serve/wagi.c`, `${OUT}/wagi.wasm`, [
      "--target=wasm32-wasi",
      "--sysroot=/usr",
      "-O2",
      "-Wl,--strip-debug",
      "-nodefaultlibs",
      "-lc",
    ]),
    wasm: build(`${ROOT}tests/serve/handler.c`, `${OUT}/handler.wasm`, [
      "--target=wasm32",
      "-nostdlib",
      "-O2",
      "-Wl,--no-entry",
      "-Wl,--strip-debug",
    ]),
    js: `${ROOT}tests/serve/handler.js`,
  };
}

/** Parses Prometheus text format 0.0.4; throws on a line that is not a comment or a sample. */
export function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const types = new Set<string>();
  const sample =
    /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"(?:,|(?=\})))*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/;
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/
      .exec(line);
    if (type) {
      assert.ok(!types.has(type[1]), `TYPE twice for ${type[1]}`);
      types.add(type[1]);
      continue;
    }
    if (/^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$/.test(line)) continue;
    const m = sample.exec(line);
    assert.ok(m, `not a Prometheus line: ${JSON.stringify(line)}`);
    assert.ok(!samples.has(m[1] + (m[2] ?? "")), `sample twice: ${line}`);
    samples.set(m[1] + (m[2] ?? ""), Number(m[3]));
  }
  return samples;
}
