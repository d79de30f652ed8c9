/**
 * Wasm artifacts compiled for the CPU features the VM grants (issue 22; docs/wasm.md "CPU
 * features"): the same results as the SSE4.2 baseline and V8, a cache key per feature set, the
 * baseline still loading where more is granted, and an artifact needing what the VM never grants
 * refused with a typed error. What holds on every host: where the VM grants nothing beyond SSE,
 * the "native" set is the baseline and the tests check the baseline path.
 */
import assert from "node:assert/strict";
import { CPU_GRANT, hypervisorInfo, WasmArtifactError, WasmSandbox } from "../../mod.ts";
import {
  clearArtifactCache,
  codeImage,
  cpuFeatureFlags,
  engineHash,
  setCpuFeaturesForTests,
} from "../../src/wasm/compiler.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

/** AVX-512F's compiler flag: the VM's XCR0 never holds AVX-512 state, so no VM grants it. */
const AVX512F = 1 << 7;

/** Calls covering what the feature sets compile differently (shifts, bit counts, floats). */
const CALLS: [string, (number | bigint)[]][] = [
  ["i32_shl", [0x1234_5678, 37]],
  ["i32_shr_s", [-0x1234_5678, 5]],
  ["i32_shr_u", [-1, 31]],
  ["i32_rotr", [0x1234_5678, 12]],
  ["i32_clz", [0x0000_f000]],
  ["i32_clz", [0]],
  ["i32_ctz", [0x0000_f000]],
  ["i32_ctz", [0]],
  ["i32_popcnt", [0x7fff_00ff]],
  ["i64_clz", [1n]],
  ["i64_rotl", [0x0123_4567_89ab_cdefn, 68n]],
  ["i64_shr_s", [-0x0123_4567_89ab_cdefn, 63n]],
  ["i64_mul", [0x0123_4567_89ab_cdefn, -7n]],
  ["f64_add", [0x3ff8_0000_0000_0000n, 0x4002_0000_0000_0000n]],
  ["f64_mul", [0x4009_21fb_5444_2d18n, 0xc005_bf0a_8b14_5769n]],
  ["f64_div", [0x3ff0_0000_0000_0000n, 0x4008_0000_0000_0000n]],
  ["f64_min", [0x8000_0000_0000_0000n, 0n]],
  ["f64_sqrt", [0x4000_0000_0000_0000n]],
  ["f64_nearest", [0x4004_0000_0000_0000n]],
  ["f32_add", [0x3fc0_0000, 0x4010_0000]],
  ["f32_max", [0x8000_0000, 0]],
  ["f32_floor", [0xbfc0_0000 | 0]],
  ["f32_demote", [0x4009_21fb_5444_2d18n]],
];

/** Every call's result in a sandbox whose artifact is compiled for `flags`. */
async function resultsWith(flags: number): Promise<unknown[]> {
  setCpuFeaturesForTests(flags);
  try {
    await using w = await WasmSandbox.create({
      module: fixtureBytes("arith"),
      engine: "wasmtime",
      cache: false,
    });
    const out: unknown[] = [];
    for (const [name, args] of CALLS) out.push(await w.call(name, ...args));
    return out;
  } finally {
    setCpuFeaturesForTests(undefined);
  }
}

kvmTest("cpu features: the granted set is what the VM reports, AVX only with its state", () => {
  const granted = hypervisorInfo().grantedFeatures;
  const flags = cpuFeatureFlags();
  // The compile set is the grant less bit 0 (the state itself), or nothing with the A/B switch.
  if (Deno.env.get("HL_WASM_CPU_FEATURES") === "baseline") assert.equal(flags, 0);
  else assert.equal(flags, granted & ~CPU_GRANT.AVX_STATE);
  if ((granted & CPU_GRANT.AVX_STATE) === 0) {
    assert.equal(granted & (CPU_GRANT.AVX | CPU_GRANT.AVX2 | CPU_GRANT.FMA), 0);
  }
});

// The baseline artifact runs in a VM set up with whatever the host grants (the AVX state
// included): a baseline-only artifact still loads there.
kvmTest("cpu features: native code and the baseline give V8's results", async () => {
  const native = cpuFeatureFlags();
  const baseline = await resultsWith(0);
  const compiled = await resultsWith(native);
  const v8 = new WebAssembly.Instance(
    new WebAssembly.Module(fixtureBytes("arith") as Uint8Array<ArrayBuffer>),
  ).exports as Record<string, (...a: unknown[]) => unknown>;
  const expected = CALLS.map(([name, args]) => v8[name](...args));
  assert.deepEqual(baseline, expected);
  assert.deepEqual(compiled, expected);
});

kvmTest("cpu features: each feature set is its own cache entry", async () => {
  const native = cpuFeatureFlags();
  const wasm = fixtureBytes("fib");
  const hashes = new Set<string>();
  for (const flags of [0, native, AVX512F]) {
    setCpuFeaturesForTests(flags);
    hashes.add(engineHash(false));
  }
  setCpuFeaturesForTests(undefined);
  // Where the VM grants nothing, "native" is the baseline: the same key.
  assert.equal(hashes.size, native === 0 ? 2 : 3);

  await clearArtifactCache();
  try {
    const sources: string[] = [];
    for (const flags of [0, native, 0, native]) {
      setCpuFeaturesForTests(flags);
      const image = await codeImage(wasm, false);
      sources.push(image.source);
      image.code.release();
    }
    // The first of each set comes from the compiler or the disk, the second from memory.
    assert.deepEqual(
      sources.map((s) => s === "memory"),
      native === 0 ? [false, true, true, true] : [false, false, true, true],
    );
  } finally {
    setCpuFeaturesForTests(undefined);
    await clearArtifactCache();
  }
});

kvmTest("cpu features: an artifact needing a feature the VM never grants is refused", async () => {
  setCpuFeaturesForTests(AVX512F);
  try {
    const e = await WasmSandbox.create({ module: fixtureBytes("fib"), engine: "wasmtime" })
      .catch((e) => e);
    assert.ok(e instanceof WasmArtifactError, String(e));
    assert.match(e.message, /has_avx512f/);
  } finally {
    setCpuFeaturesForTests(undefined);
    await clearArtifactCache();
  }
});
