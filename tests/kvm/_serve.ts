/**
 * Fixtures of the `hl serve` tests and the load script: the WAGI program and the bytes-convention
 * handler (tests/serve/*.c) built with clang into target/serve-fixtures/ (rebuilt when the source
 * is newer), and the JavaScript handler's path.
 *
 * @module
 */

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
