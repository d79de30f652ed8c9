/**
 * The artifact cache file's digest check (src/wasm/compiler.ts): an artifact over 64 MiB (the
 * `full` Python runtime's is 423 MB) is hashed with `node:crypto` instead of WebCrypto; both must
 * give the same SHA-256, so a file written by either is accepted by the other, and a changed or
 * truncated large file is still refused.
 */
import assert from "node:assert/strict";
import { decodeCacheFile, encodeCacheFile } from "../../src/wasm/compiler.ts";
import { WasmArtifactError } from "../../src/wasm/types.ts";

const MODULE = "ab".repeat(32);
const ENGINE = "0123456789abcdef";

function artifactOf(size: number): Uint8Array {
  const a = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) a[i] = i & 0xff;
  return a;
}

for (const size of [1 << 20, (64 << 20) + 4096]) {
  Deno.test(`artifact cache file of ${size} bytes: intact accepted, changed or cut refused`, async () => {
    const artifact = artifactOf(size);
    const file = await encodeCacheFile(artifact, MODULE, ENGINE);
    const back = await decodeCacheFile(file, MODULE, ENGINE);
    assert.equal(back.length, size);
    assert.ok(back.every((b, i) => b === artifact[i]));
    const changed = file.slice();
    changed[changed.length - 1000] ^= 1;
    await assert.rejects(decodeCacheFile(changed, MODULE, ENGINE), WasmArtifactError);
    await assert.rejects(
      decodeCacheFile(file.subarray(0, file.length - 1), MODULE, ENGINE),
      WasmArtifactError,
    );
  });
}
