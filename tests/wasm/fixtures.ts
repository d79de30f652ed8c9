/**
 * Paths of the WebAssembly test modules built from tests/wasm/*.wat and *.c, and of the real C
 * code bases (tests/wasm/codebases/), by tools/build_wasm_fixtures.sh into target/wasm-fixtures/. `fixture()` runs the build script
 * once when a module is missing or older than its source.
 */

const root = new URL("../../", import.meta.url);
const outDir = new URL("target/wasm-fixtures/", root);
let built = false;

function mtime(url: URL): number | undefined {
  try {
    return Deno.statSync(url).mtime?.getTime();
  } catch {
    return undefined;
  }
}

function stale(name: string): boolean {
  const out = mtime(new URL(`${name}.wasm`, outDir));
  if (out === undefined) return true;
  for (const path of [`${name}.wat`, `${name}.c`, `codebases/${name}_main.c`]) {
    const src = mtime(new URL(`tests/wasm/${path}`, root));
    if (src !== undefined && src > out) return true;
  }
  return false;
}

/** The path of test module `name` (without `.wasm`), building the fixtures if needed. */
export function fixture(name: string): string {
  if (!built && stale(name)) {
    const result = new Deno.Command("bash", {
      args: [new URL("tools/build_wasm_fixtures.sh", root).pathname],
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    if (!result.success) {
      throw new Error(
        `tools/build_wasm_fixtures.sh failed:\n${new TextDecoder().decode(result.stderr)}`,
      );
    }
    built = true;
  }
  return new URL(`${name}.wasm`, outDir).pathname;
}

/** The bytes of test module `name`. */
export function fixtureBytes(name: string): Uint8Array {
  return Deno.readFileSync(fixture(name));
}
