#!/usr/bin/env bash
# Tests the package as a JSR consumer gets it: takes the file list from `deno publish --dry-run`,
# copies exactly those files to a temporary directory outside the repository, runs the setup
# entry point from that copy (with a temporary XDG_CACHE_HOME, so the builds are cold), then runs
# a consumer program that imports only from the copy (file URL) and creates a Sandbox (the
# built-in test guest) and a WasmSandbox (an inline module). Ends with "N passed, N failed".
#
# Usage: bash tools/consumer_test.sh   (HL_KEEP=1 keeps the temporary directory)
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export NO_COLOR=1
tmp=$(mktemp -d /tmp/hl-consumer.XXXXXX)
[ "${HL_KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "consumer test: $*"
  echo "0 passed, 1 failed"
  exit 1
}

# 1. The published file list: the "   file:///<repo>/<path> (<size>)" lines of the dry run.
deno publish --dry-run --allow-dirty >"$tmp/publish.log" 2>&1 || {
  cat "$tmp/publish.log"
  fail "deno publish --dry-run failed"
}
grep -q '^Success Dry run complete' "$tmp/publish.log" || fail "no success line from the dry run"
sed -n "s#^ *file://$repo/\\(.*\\) ([0-9.]*[KMG]\\{0,1\\}B)\$#\\1#p" "$tmp/publish.log" >"$tmp/files"
n=$(wc -l <"$tmp/files")
[ "$n" -gt 0 ] || fail "no files parsed from the dry run's output"
grep -q '^setup.ts$' "$tmp/files" || fail "setup.ts is not published"
grep -q '^cli.ts$' "$tmp/files" || fail "cli.ts is not published"
grep -q '^rust-vmm/Cargo.toml$' "$tmp/files" || fail "rust-vmm/ is not published"
# The one built file the package ships: JsSandbox's reproducible engine (docs/js.md).
grep -q '^target/runtimes/quickjs.wasm$' "$tmp/files" || fail "quickjs.wasm is not published"
if grep -v '^target/runtimes/quickjs.wasm$' "$tmp/files" | grep -q 'target/'; then
  fail "a target/ directory is published"
fi
echo "consumer test: $n published files"

# 2. Exactly those files, outside the repository.
pkg=$tmp/pkg
while read -r f; do
  mkdir -p "$pkg/$(dirname "$f")" && cp "$f" "$pkg/$f" || fail "cannot copy $f"
done <"$tmp/files"
[ "$(find "$pkg" -type f | wc -l)" -eq "$n" ] || fail "the copy does not have exactly $n files"

# Before setup, the library says which command fixes a missing artifact.
export XDG_CACHE_HOME=$tmp/cache
msg=$(cd "$tmp" && env -u HL_SANDBOX_LIB -u HL_WASM_RUNTIME deno eval \
  "import { guests } from 'file://$pkg/mod.ts'; try { guests.testguest } catch (e) { console.log(e.message) }")
case "$msg" in
*"To fix: run \`deno run -A $pkg/setup.ts\`"*) echo "consumer test: before setup: $msg" ;;
*) fail "the not-found message does not name the setup command: $msg" ;;
esac

# 3. The setup entry point, run from the copy into a fresh cache.
t0=$(date +%s)
(cd "$tmp" && deno run -A "$pkg/setup.ts") || fail "the setup entry point failed"
echo "consumer test: setup took $(($(date +%s) - t0))s"

# 4. A consumer program that imports only from the copy, by file URL.
cat >"$tmp/consumer.ts" <<TS
import assert from "node:assert/strict";
import { guests, Sandbox, WasmSandbox } from "file://$pkg/mod.ts";
import { findCompileChild, findCompiler, findGuest } from "file://$pkg/src/artifacts.ts";

for (
  const p of [
    guests.testguest,
    guests.wasmRuntime,
    findGuest("wasmtime-runtime"),
    findCompiler(),
    findCompileChild(),
  ]
) {
  assert.ok(p.startsWith("$XDG_CACHE_HOME/hl-sandbox/"), \`\${p} is not in the setup cache\`);
}
await using sb = await Sandbox.create({ guest: guests.testguest });
const sum = await sb.call("add", 2, 3);
assert.equal(sum, 5);
console.log(\`consumer: Sandbox add(2, 3) = \${sum}\`);

// (module (func (export "answer") (result i32) i32.const 42))
const answer = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f,
  0x03, 0x02, 0x01, 0x00, 0x07, 0x0a, 0x01, 0x06, 0x61, 0x6e, 0x73, 0x77, 0x65, 0x72, 0x00,
  0x00, 0x0a, 0x06, 0x01, 0x04, 0x00, 0x41, 0x2a, 0x0b,
]);
// The default engine (wasmtime): compiled in the hl-wasm-compile child process, which the
// library starts itself (this program has no --allow-run).
await using w = await WasmSandbox.create({ module: answer });
const a = await w.call("answer");
assert.equal(a, 42);
console.log(\`consumer: WasmSandbox answer() = \${a}\`);
Deno.writeFileSync("$tmp/answer.wasm", answer);

// JsSandbox: the shipped quickjs.wasm, which setup also copied into the cache.
const { JsSandbox } = await import("file://$pkg/mod.ts");
const { cacheDir, cachedArtifact } = await import("file://$pkg/src/artifacts.ts");
assert.ok(Deno.statSync(cachedArtifact(cacheDir()!, "quickjs")).isFile, "setup did not copy quickjs.wasm");
await using js = await JsSandbox.create({ source: "function add(a, b) { return a + b; }" });
const js5 = await js.call("add", 2, 3);
assert.equal(js5, 5);
console.log(\`consumer: JsSandbox add(2, 3) = \${js5}\`);
TS
(cd "$tmp" && env -u HL_SANDBOX_LIB -u HL_WASM_RUNTIME bash "$repo/tools/vm/run.sh" \
  deno run --allow-ffi --allow-read --allow-write --allow-env "$tmp/consumer.ts") ||
  fail "the consumer program failed"

# 4b. A consumer's own test file under `deno test --allow-ffi` (enough: the library reads its
#     files through libc and finds the cache through getenv), and without --allow-ffi (a
#     PermissionError naming the flag, never "not built").
cat >"$tmp/consumer.test.ts" <<TS
import { guests, PermissionError, Sandbox } from "file://$pkg/mod.ts";
Deno.test("consumer: add", async () => {
  try {
    await using sb = await Sandbox.create({ guest: guests.testguest });
    if ((await sb.call("add", 2, 3)) !== 5) throw new Error("wrong sum");
  } catch (e) {
    if (e instanceof PermissionError) console.log("PERMISSION " + e.flag);
    throw e;
  }
});
TS
(cd "$tmp" && env -u HL_SANDBOX_LIB -u HL_WASM_RUNTIME bash "$repo/tools/vm/run.sh" \
  deno test --no-prompt --allow-ffi "$tmp/consumer.test.ts") ||
  fail "the consumer's test failed under deno test --allow-ffi"
out=$(cd "$tmp" && env -u HL_SANDBOX_LIB -u HL_WASM_RUNTIME \
  deno test --no-prompt --allow-read --allow-env "$tmp/consumer.test.ts" 2>&1) &&
  fail "the consumer's test passed without --allow-ffi"
case "$out" in
*"PERMISSION --allow-ffi"*) echo "consumer: deno test without --allow-ffi names the flag" ;;
*) fail "without --allow-ffi the consumer's test did not name the flag: $out" ;;
esac

# 5. The command line from the copy (what deno run -A jsr:@hl/sandbox/cli runs).
out=$(cd "$tmp" && env -u HL_SANDBOX_LIB -u HL_WASM_RUNTIME bash "$repo/tools/vm/run.sh" \
  deno run -A "$pkg/cli.ts" call "$tmp/answer.wasm" answer) || fail "the published CLI failed"
case "$out" in
*42) echo "consumer: cli call answer.wasm answer = 42" ;;
*) fail "the published CLI printed: $out" ;;
esac
echo "1 passed, 0 failed"
