/**
 * Differential test: the same module (tests/wasm/arith.wat) runs in Deno's own WebAssembly (V8)
 * and in a WasmSandbox (wasmi in a micro-VM). Over property-generated inputs both must return
 * the same values and trap on the same inputs (with a compatible trap kind).
 *
 * NaN results of float arithmetic are compared only as "both NaN": the spec lets engines choose
 * the sign and payload of such NaNs. Operations that are deterministic on NaNs (neg, abs,
 * copysign, reinterpretations, passing values through) are compared bit for bit.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { WasmSandbox, WasmTrapError } from "../../mod.ts";
import { fixtureBytes } from "../wasm/fixtures.ts";
import { kvmTest } from "./_kvm.ts";

/** Runs per operation (override with HL_WASM_DIFF_RUNS). */
const RUNS = Number(Deno.env.get("HL_WASM_DIFF_RUNS") ?? 100);

type Outcome = { value: unknown } | { trap: string[] };

/** V8's trap messages → the sandbox trap kinds they are compatible with. */
function v8TrapKinds(message: string): string[] {
  if (/divide by zero|remainder by zero/.test(message)) return ["integer_divide_by_zero"];
  if (/divide result unrepresentable/.test(message)) return ["integer_overflow"];
  if (/float unrepresentable/.test(message)) {
    return ["integer_overflow", "invalid_conversion_to_integer"];
  }
  if (/memory access out of bounds/.test(message)) return ["memory_out_of_bounds"];
  return [`v8: ${message}`];
}

const F64_EXP = 0x7ff0000000000000n;
const F64_MANT = 0x000fffffffffffffn;
const F32_EXP = 0x7f800000;
const F32_MANT = 0x007fffff;

function isNaN64(bits: bigint): boolean {
  const u = BigInt.asUintN(64, bits);
  return (u & F64_EXP) === F64_EXP && (u & F64_MANT) !== 0n;
}

function isNaN32(bits: number): boolean {
  const u = bits >>> 0;
  return (u & F32_EXP) === F32_EXP && (u & F32_MANT) !== 0;
}

/** How results compare: exactly, or NaN-lenient for f64/f32 bit patterns. */
type Compare = "exact" | "nan64" | "nan32";

function sameValue(a: unknown, b: unknown, compare: Compare): boolean {
  if (compare === "nan64" && typeof a === "bigint" && typeof b === "bigint") {
    if (isNaN64(a) || isNaN64(b)) return isNaN64(a) && isNaN64(b);
  }
  if (compare === "nan32" && typeof a === "number" && typeof b === "number") {
    if (isNaN32(a) || isNaN32(b)) return isNaN32(a) && isNaN32(b);
  }
  return Object.is(a, b);
}

// Generators biased towards edge cases.
const i32 = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  fc.constantFrom(0, 1, -1, 2, -(2 ** 31), 2 ** 31 - 1, 31, 32, 33),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }), // unsigned spelling, wrapped like ToInt32
);
const i64 = fc.oneof(
  fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }),
  fc.constantFrom(0n, 1n, -1n, 2n, -(1n << 63n), (1n << 63n) - 1n, 63n, 64n),
  fc.bigInt({ min: -1000n, max: 1000n }),
);
const specialF64 = [
  0x7ff8000000000000n, // canonical quiet NaN
  0xfff8000000000000n, // negative quiet NaN
  0x7ff0000000000001n, // signalling NaN
  0x7ff4000000000000n, // NaN with payload
  0x7ff0000000000000n, // +inf
  0xfff0000000000000n, // -inf
  0x0000000000000000n, // +0
  0x8000000000000000n, // -0
  0x0000000000000001n, // smallest subnormal
  0x41e0000000000000n, // 2^31
  0xc1e0000000000000n, // -2^31
  0x43f0000000000000n, // 2^64
  0x3fe0000000000000n, // 0.5
  0x3ff8000000000000n, // 1.5
  0x4004000000000000n, // 2.5
];
function f64Bits(x: number): bigint {
  const v = new DataView(new ArrayBuffer(8));
  v.setFloat64(0, x);
  return v.getBigInt64(0);
}
const f64 = fc.oneof(
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((b) => BigInt.asIntN(64, b)),
  fc.constantFrom(...specialF64).map((b) => BigInt.asIntN(64, b)),
  fc.double().map(f64Bits),
  fc.integer({ min: -(2 ** 40), max: 2 ** 40 }).map(f64Bits),
);
const specialF32 = [
  0x7fc00000,
  0xffc00000,
  0x7f800001,
  0x7fa00000,
  0x7f800000,
  0xff800000,
  0,
  0x80000000,
  1,
  0x4f000000,
  0xcf000000,
  0x3f000000,
  0x3fc00000,
].map((x) => x | 0);
const f32 = fc.oneof(
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  fc.constantFrom(...specialF32),
  fc.float({ noDefaultInfinity: false }).map((x) => {
    const v = new DataView(new ArrayBuffer(4));
    v.setFloat32(0, x);
    return v.getInt32(0);
  }),
);
const address = fc.oneof(
  fc.integer({ min: 0, max: 8 * 65536 + 16 }),
  fc.integer({ min: 65536 - 16, max: 65536 + 16 }),
  i32,
);

interface Op {
  name: string;
  args: fc.Arbitrary<unknown[]>;
  compare?: Compare;
}

const ops: Op[] = [
  ...[
    "i32_add",
    "i32_sub",
    "i32_mul",
    "i32_div_s",
    "i32_div_u",
    "i32_rem_s",
    "i32_rem_u",
    "i32_shl",
    "i32_shr_s",
    "i32_shr_u",
    "i32_rotr",
  ].map((name) => ({ name, args: fc.tuple(i32, i32) })),
  ...["i32_clz", "i32_ctz", "i32_popcnt", "i32_extend8_s", "i64_extend_i32_s", "i64_extend_i32_u"]
    .map((name) => ({ name, args: fc.tuple(i32) })),
  ...[
    "i64_add",
    "i64_mul",
    "i64_div_s",
    "i64_div_u",
    "i64_rem_s",
    "i64_rem_u",
    "i64_rotl",
    "i64_shr_s",
  ]
    .map((name) => ({ name, args: fc.tuple(i64, i64) })),
  ...["i64_clz", "i32_wrap_i64"].map((name) => ({ name, args: fc.tuple(i64) })),
  ...["f64_add", "f64_mul", "f64_div", "f64_min"].map((name) => ({
    name,
    args: fc.tuple(f64, f64),
    compare: "nan64" as const,
  })),
  ...["f64_sqrt", "f64_nearest", "f64_convert_i64_u"].map((name) => ({
    name,
    args: fc.tuple(name === "f64_convert_i64_u" ? i64 : f64),
    compare: "nan64" as const,
  })),
  ...["f32_add", "f32_max"].map((name) => ({
    name,
    args: fc.tuple(f32, f32),
    compare: "nan32" as const,
  })),
  { name: "f32_floor", args: fc.tuple(f32), compare: "nan32" },
  { name: "f32_demote", args: fc.tuple(f64), compare: "nan32" },
  { name: "f64_neg", args: fc.tuple(f64) },
  { name: "f32_abs", args: fc.tuple(f32) },
  { name: "f64_copysign", args: fc.tuple(f64, f64) },
  { name: "i32_trunc_f64_s", args: fc.tuple(f64) },
  { name: "i64_trunc_f64_u", args: fc.tuple(f64) },
  { name: "i32_trunc_sat_f32_s", args: fc.tuple(f32) },
  { name: "f64_passthrough", args: fc.tuple(fc.double()) },
  { name: "f32_passthrough", args: fc.tuple(fc.double()) },
  { name: "load_i32", args: fc.tuple(address) },
  { name: "load8_s", args: fc.tuple(address) },
  { name: "load_i64_off", args: fc.tuple(address) },
  { name: "store_load", args: fc.tuple(address, i64) },
  { name: "grow", args: fc.tuple(fc.integer({ min: 0, max: 3 })) },
  { name: "size", args: fc.constant([]) },
];

kvmTest("wasm differential: V8 and the sandbox agree on values and traps", async () => {
  const bytes = fixtureBytes("arith");
  const v8 = new WebAssembly.Instance(new WebAssembly.Module(bytes as Uint8Array<ArrayBuffer>))
    .exports as Record<
      string,
      (...args: unknown[]) => unknown
    >;
  await using w = await WasmSandbox.create({ module: bytes });
  let cases = 0;
  let traps = 0;

  const inV8 = (name: string, args: unknown[]): Outcome => {
    try {
      return { value: v8[name](...args) };
    } catch (e) {
      if (e instanceof WebAssembly.RuntimeError) return { trap: v8TrapKinds(e.message) };
      throw e;
    }
  };
  const inSandbox = async (name: string, args: unknown[]): Promise<Outcome> => {
    try {
      return { value: await w.call(name, ...args) };
    } catch (e) {
      if (e instanceof WasmTrapError) return { trap: [e.trap] };
      throw e;
    }
  };

  for (const op of ops) {
    await fc.assert(
      fc.asyncProperty(op.args, async (args) => {
        cases++;
        const expected = inV8(op.name, args);
        const actual = await inSandbox(op.name, args);
        const show = (o: Outcome) =>
          JSON.stringify(o, (_k, v) => typeof v === "bigint" ? `${v}n` : v);
        const where = `${op.name}(${args.map(String).join(", ")}): V8 ${show(expected)}, ` +
          `sandbox ${show(actual)}`;
        if ("trap" in expected) {
          traps++;
          assert.ok("trap" in actual, where);
          assert.ok(expected.trap.includes(actual.trap[0]), where);
        } else {
          assert.ok("value" in actual, where);
          assert.ok(sameValue(expected.value, actual.value, op.compare ?? "exact"), where);
        }
      }),
      { numRuns: RUNS },
    );
  }
  console.log(
    `wasm differential: ${cases} cases over ${ops.length} operations (${traps} trapping)`,
  );
  assert.ok(cases >= ops.length * RUNS);
});
