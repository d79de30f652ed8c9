/**
 * The wasmtime engine's own guarantees: W^X checked from inside the guest (a write to the mapped
 * code faults, a jump into a data page faults), code shared between VMs without a copy, and the
 * artifact cache (memory, disk; a tampered or incompatible artifact is a WasmArtifactError).
 */
import assert from "node:assert/strict";
import { GuestFaultError, WasmArtifactError, WasmSandbox } from "../../mod.ts";
import { findGuest } from "../../src/artifacts.ts";
import { createSandboxWithCode, sandboxCodeAddr } from "../../src/sandbox_internal.ts";
import {
  artifactCacheDir,
  artifactCacheStats,
  clearArtifactCache,
  codeImage,
  compileArtifact,
  encodeCacheFile,
  engineHash,
} from "../../src/wasm/compiler.ts";
import { digest } from "../../src/snapshot.ts";
import { Writer } from "../../src/wasm/codec.ts";
import { fixture, fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

// Every test here uses its own artifact cache directory.
const cacheDir = Deno.makeTempDirSync({ prefix: "hl-wasm-cache-" });
Deno.env.set("HL_WASM_CACHE_DIR", cacheDir);
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(cacheDir, { recursive: true });
  } catch {
    // Already gone.
  }
});

/** A bare wasmtime-runtime guest with `fib`'s artifact mapped and loaded. */
async function loadedGuest() {
  const image = await codeImage(fixtureBytes("fib"), false);
  const sb = await createSandboxWithCode({
    guest: findGuest("wasmtime-runtime"),
    heapSize: 64 << 20,
    stackSize: 4 << 20,
  }, image.code);
  image.code.release(); // The sandbox holds its own reference.
  const config = new Writer();
  config.u64(0n);
  config.u32(0);
  config.u64(BigInt(sandboxCodeAddr(sb)));
  config.u64(BigInt(image.code.size));
  config.u64(4n << 20n); // the guest stack
  await sb.call("load", new Uint8Array(0), config.finish());
  return sb;
}

kvmTest("wasmtime: writing a code page is a page fault (W^X, from inside the guest)", async () => {
  await using sb = await loadedGuest();
  const e = await sb.call("probe_wx", 0).catch((e) => e);
  assert.ok(e instanceof GuestFaultError, String(e));
  assert.equal(e.vector, 14);
  // Present (1), write (2), user (4).
  assert.equal(e.errorCode, 7n);
  assert.equal(e.address, BigInt(sandboxCodeAddr(sb)));
  assert.equal(sb.poisoned, true);
});

kvmTest("wasmtime: executing a data page is a page fault (W^X, NX heap)", async () => {
  await using sb = await loadedGuest();
  const e = await sb.call("probe_wx", 1).catch((e) => e);
  assert.ok(e instanceof GuestFaultError, String(e));
  assert.equal(e.vector, 14);
  // Present (1), user (4), instruction fetch (0x10).
  assert.equal(e.errorCode, 0x15n);
  assert.equal(e.address, e.rip);
});

kvmTest("wasmtime: fib runs; sandboxes of one module share one code image", async () => {
  await clearArtifactCache();
  const before = artifactCacheStats();
  await using a = await WasmSandbox.create({ module: fixture("fib"), engine: "wasmtime" });
  await using b = await WasmSandbox.create({
    module: fixture("fib"),
    engine: "wasmtime",
    cache: false,
  });
  assert.equal(await a.call("fib", 20), 6765);
  assert.equal(await b.call("fib", 25), 75025);
  const after = artifactCacheStats();
  // One compile or one disk load, then a memory hit.
  assert.equal(after.compiles + after.diskHits - before.compiles - before.diskHits, 1);
  assert.equal(after.memoryHits - before.memoryHits, 1);
});

kvmTest("wasmtime: artifacts are cached on disk and verified when loaded", async () => {
  const wasm = fixtureBytes("fib");
  await clearArtifactCache();
  (await codeImage(wasm, false)).code.release(); // compiled or loaded, now on disk
  await clearArtifactCache();
  const fromDisk = await codeImage(wasm, false);
  assert.equal(fromDisk.source, "disk");
  fromDisk.code.release();
  assert.equal(fromDisk.code.released, false, "the cache still holds it");
  await clearArtifactCache();
  assert.equal(fromDisk.code.released, true, "no holder is left");

  // Tampered: one byte of the artifact changed.
  const file = `${artifactCacheDir()}/${await digest(wasm)}-${engineHash(false)}.hlwa`;
  const bytes = await Deno.readFile(file);
  bytes[bytes.length - 100] ^= 0xff;
  await Deno.writeFile(file, bytes);
  await clearArtifactCache();
  await assert.rejects(codeImage(wasm, false), WasmArtifactError);
  // The refused file is gone: the next create compiles afresh.
  const again = await codeImage(wasm, false);
  assert.equal(again.source, "compiled");
  again.code.release();

  // Incompatible: an intact file, recorded for this module and engine, holding an artifact
  // built for another engine (fuel on): the artifact's own engine section gives it away.
  const moduleDigest = await digest(wasm);
  await Deno.writeFile(
    file,
    await encodeCacheFile(await compileArtifact(wasm, true), moduleDigest, engineHash(false)),
  );
  await clearArtifactCache();
  await assert.rejects(codeImage(wasm, false), WasmArtifactError);
  await clearArtifactCache();

  // A file, or a directory, that others could write is not read (they could plant an artifact):
  // such a cache is not used at all. The file below is intact and compatible.
  await Deno.writeFile(
    file,
    await encodeCacheFile(await compileArtifact(wasm, false), moduleDigest, engineHash(false)),
  );
  for (const [path, mode, restore] of [[file, 0o620, 0o600], [artifactCacheDir()!, 0o770, 0o700]]) {
    await Deno.chmod(path as string, mode as number);
    await clearArtifactCache();
    const image = await codeImage(wasm, false);
    assert.equal(image.source, "compiled", `${path} ${(mode as number).toString(8)}`);
    image.code.release();
    await Deno.chmod(path as string, restore as number);
  }
  await clearArtifactCache();
  const trusted = await codeImage(wasm, false);
  assert.equal(trusted.source, "disk");
  trusted.code.release();
  await clearArtifactCache();
});

kvmTest("wasmtime: an artifact the guest refuses is a WasmArtifactError", async () => {
  // A fuel artifact loaded by a guest engine configured without fuel: wasmtime's own check.
  const wasm = fixtureBytes("fib");
  const fuelImage = await codeImage(wasm, true);
  await using sb = await createSandboxWithCode({
    guest: findGuest("wasmtime-runtime"),
    heapSize: 64 << 20,
    stackSize: 4 << 20,
  }, fuelImage.code);
  fuelImage.code.release();
  const config = new Writer();
  config.u64(0n);
  config.u32(0);
  config.u64(BigInt(sandboxCodeAddr(sb)));
  config.u64(BigInt(fuelImage.code.size));
  config.u64(4n << 20n); // the guest stack
  const e = await sb.call("load", new Uint8Array(0), config.finish()).catch((e) => e);
  assert.equal(e?.code, 1007, String(e));
});

kvmTest(
  "wasmtime: a snapshot keeps its code image when the artifact cache lets it go",
  async () => {
    await clearArtifactCache();
    const w = await WasmSandbox.create({ module: fixtureBytes("fib"), engine: "wasmtime" });
    const snap = await w.snapshot();
    await w.dispose();
    await clearArtifactCache(); // the cache's reference is gone; the snapshot holds its own
    const before = artifactCacheStats();
    {
      await using copy = await WasmSandbox.create({ snapshot: snap });
      assert.equal(await copy.call("fib", 20), 6765);
    }
    assert.deepEqual(artifactCacheStats(), before, "no compile or load: the snapshot's own image");
    await snap.dispose();
  },
);
