/**
 * ABI numbers written on both sides are checked against their one definition: the Wasm runtime
 * guests' ERROR codes and trap kinds (guest/wasm-abi/src/lib.rs) against `src/wasm/codec.ts`, the
 * compiler library's constants (compiler/src/lib.rs) against `src/ffi/compiler.ts`, the `wasi_io`
 * ops (guest/wasi/src/host.rs) against `src/wasm/wasi.ts`, the networking host function's name
 * (guest/runtime/src/host.rs) against `src/net/net.ts`, the CPU grant bits
 * (rust-vmm/src/kvm/cpuid.rs) against `CPU_GRANT` and the compiler's feature flags
 * (guest/wasmtime-runtime/src/engine_config.rs), which share bits 1-6.
 */
import assert from "node:assert/strict";
import * as codec from "../../src/wasm/codec.ts";
import * as compiler from "../../src/ffi/compiler.ts";
import { Op as WasiIoOp } from "../../src/wasm/wasi.ts";
import { NET_HOST_FUNCTION } from "../../src/net/net.ts";
import { CPU_GRANT } from "../../src/ffi/vm.ts";

/** `pub const NAME: type = value;` of `text`, by name. */
function rustConsts(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/pub const ([A-Z_]+): [iu]32 = (-?\d+);/g)) {
    out.set(m[1], Number(m[2]));
  }
  return out;
}

/** The body of `pub mod name { ... }` in `text` (modules here hold no nested braces). */
function rustModule(text: string, name: string): string {
  const m = new RegExp(`pub mod ${name} \\{([^}]*)\\}`).exec(text);
  assert.ok(m, `pub mod ${name}`);
  return m[1];
}

Deno.test("Wasm runtime ERROR codes: codec.ts uses guest/wasm-abi's numbers", async () => {
  const rust = await Deno.readTextFile(
    new URL("../../guest/wasm-abi/src/lib.rs", import.meta.url),
  );
  const defined = rustConsts(rustModule(rust, "code"));
  assert.ok(defined.size >= 9, `codes found in lib.rs: ${[...defined.keys()]}`);
  const used = Object.entries(codec).filter(([k]) => k.startsWith("CODE_"));
  assert.ok(used.length >= 8);
  for (const [name, value] of used) {
    const key = name.slice("CODE_".length);
    assert.equal(value, defined.get(key), `${name} in codec.ts vs ${key} in guest/wasm-abi`);
  }
});

Deno.test("Wasm trap kinds: codec.ts names guest/wasm-abi's indices", async () => {
  const rust = await Deno.readTextFile(
    new URL("../../guest/wasm-abi/src/lib.rs", import.meta.url),
  );
  const traps = rustConsts(rustModule(rust, "trap"));
  assert.ok(traps.size >= 14, `traps found: ${[...traps.keys()]}`);
  assert.deepEqual(
    Object.fromEntries([...traps].map(([name, index]) => [index, name.toLowerCase()])),
    { ...codec.TRAPS },
  );
});

Deno.test("compiler library constants: ffi/compiler.ts uses compiler/src/lib.rs's numbers", async () => {
  const rust = rustConsts(
    await Deno.readTextFile(new URL("../../compiler/src/lib.rs", import.meta.url)),
  );
  for (
    const [ts, name] of [
      [compiler.COMPILER_ABI_VERSION, "ABI_VERSION"],
      [compiler.FLAG_FUEL, "FLAG_FUEL"],
      [compiler.FLAG_CPU_FEATURES, "FLAG_CPU_FEATURES"],
      [compiler.ERR_MODULE, "ERR_MODULE"],
      [compiler.ERR_ARTIFACT, "ERR_ARTIFACT"],
      [compiler.ERR_TIMEOUT, "ERR_TIMEOUT"],
      [compiler.ERR_CHILD, "ERR_CHILD"],
    ] as const
  ) {
    assert.equal(ts, rust.get(name), name);
  }
});

Deno.test("wasi_io ops: wasi.ts uses guest/wasi/src/host.rs's numbers", async () => {
  const rust = await Deno.readTextFile(new URL("../../guest/wasi/src/host.rs", import.meta.url));
  const m = /pub enum Op \{([^}]*)\}/.exec(rust);
  assert.ok(m, "pub enum Op in host.rs");
  const defined = Object.fromEntries(
    [...m[1].matchAll(/^\s*([A-Za-z]+) = (\d+),/gm)].map(([, name, value]) => [
      name.replace(/(?<=[a-z])(?=[A-Z])/g, "_").toUpperCase(),
      Number(value),
    ]),
  );
  assert.ok(Object.keys(defined).length >= 25, `ops found: ${Object.keys(defined)}`);
  assert.deepEqual({ ...WasiIoOp }, defined);
});

Deno.test("the networking host function's name: src/net/net.ts uses guest/runtime's HTTP_FETCH", async () => {
  const rust = await Deno.readTextFile(new URL("../../guest/runtime/src/host.rs", import.meta.url));
  const m = /pub const HTTP_FETCH: &str = "([^"]+)";/.exec(rust);
  assert.ok(m, "HTTP_FETCH in guest/runtime/src/host.rs");
  assert.equal(NET_HOST_FUNCTION, m[1]);
});

Deno.test("CPU grant bits: CPU_GRANT uses rust-vmm's numbers, and bits 1-6 are the compiler's flags", async () => {
  const cpuid = await Deno.readTextFile(
    new URL("../../rust-vmm/src/kvm/cpuid.rs", import.meta.url),
  );
  const grant: Record<string, number> = {};
  for (
    const [, name, shift] of cpuid.matchAll(
      /pub const (?:GRANT|FEATURE)_([A-Z0-9_]+): u64 = 1 << (\d+);/g,
    )
  ) {
    grant[name] = 1 << Number(shift);
  }
  assert.deepEqual(grant, { ...CPU_GRANT });
  const config = await Deno.readTextFile(
    new URL("../../guest/wasmtime-runtime/src/engine_config.rs", import.meta.url),
  );
  const flags: Record<string, number> = {};
  for (
    const [, shift, name] of config.matchAll(/\(1 << (\d+), "has_([a-z0-9]+)", "[a-z0-9.]+"\)/g)
  ) {
    flags[name.toUpperCase()] = 1 << Number(shift);
  }
  for (const [name, bit] of Object.entries(CPU_GRANT)) {
    if (name === "AVX_STATE") continue;
    assert.equal(flags[name], bit, `${name}: grant bit vs the compiler's flag`);
  }
});
