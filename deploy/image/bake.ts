/**
 * Image build hook (run by `deploy/image/build.sh` on the build machine, not in the image):
 * writes what a replica would otherwise compute at start into the image's staging tree, so it
 * starts warm.
 *
 * 1. Compiled Wasm artifacts: each runtime module in `target/runtimes/` (QuickJS by default)
 *    compiled by Cranelift for both fuel settings, in the library's own artifact-cache format,
 *    under `<stage>/var/cache/hl/wasmtime/` (the image's `HL_WASM_CACHE_DIR`). The cache key
 *    contains the engine hash, which includes the CPU features the compiler detected on the
 *    build machine: on a node whose CPU differs the key does not match, so the replica compiles
 *    in memory (the cache is read-only there) — slower to warm up, never wrong.
 * 2. Snapshots on disk are baked by `build.sh` afterwards, in the built image itself
 *    (`hl serve --bake` with /dev/kvm: docs/deploy.md, "Baked artifacts and snapshots"), so that
 *    they are taken with exactly the files the image carries.
 *
 * Usage: deno run -A deploy/image/bake.ts <stage-dir> [runtime.wasm ...]
 *
 * @module
 */

import { compileArtifact, encodeCacheFile, engineHash } from "../../src/wasm/compiler.ts";
import { digest } from "../../src/snapshot.ts";

const [stage, ...modules] = Deno.args;
if (stage === undefined) {
  console.error("usage: deno run -A deploy/image/bake.ts <stage-dir> [runtime.wasm ...]");
  Deno.exit(2);
}
const runtimes = modules.length > 0 ? modules : ["target/runtimes/quickjs.wasm"];

const cache = `${stage}/var/cache/hl/wasmtime`;
await Deno.mkdir(cache, { recursive: true, mode: 0o700 });
for (const path of runtimes) {
  const wasm = await Deno.readFile(path);
  const moduleHash = await digest(wasm);
  for (const fuel of [false, true]) {
    const started = performance.now();
    const artifact = await compileArtifact(wasm, fuel, 300_000);
    const file = `${cache}/${moduleHash}-${engineHash(fuel)}.hlwa`;
    await Deno.writeFile(file, await encodeCacheFile(artifact, moduleHash, engineHash(fuel)), {
      mode: 0o600,
    });
    const ms = Math.round(performance.now() - started);
    console.log(`bake: ${path} (fuel ${fuel}) -> ${file} (${artifact.length} bytes, ${ms} ms)`);
  }
}
