/**
 * Differential test (issue 20): 1,000 generated programs (arithmetic, strings, arrays, JSON,
 * regular expressions, exceptions) evaluated by QuickJS in a JsSandbox and by Deno's own V8; the
 * JSON results must be equal. A thrown exception is compared by its name (the engines word their
 * messages differently). One sandbox, restored to its snapshot between programs; fixed seed,
 * bounded sizes (CI). Functions whose results may differ in the last bit between two correct
 * engines (Math.sin, Math.exp, a non-integer `**`, ...) are left out on purpose.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { JsSandbox, WasmSandbox } from "../../mod.ts";
import { QUICKJS_BUILT as BUILT } from "./_js.ts";
import { kvmTest } from "./_kvm.ts";

const RUNS = Number(Deno.env.get("HL_JS_DIFF_RUNS") ?? 1000);

const lit = (v: unknown) => `(${Object.is(v, -0) ? "-0" : JSON.stringify(v)})`;
const numLit = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }).map(lit),
  fc.double({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 }).map(lit),
  fc.constantFrom("NaN", "Infinity", "(-Infinity)", "(-0)", "0.1", "(2 ** 53)", "1e21"),
);
const strLit = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.fullUnicodeString({ maxLength: 4 }),
  fc.constantFrom("hello world", "a,b,,c", "AbC", "  pad ", "aeiou-xyz", "3.14"),
).map((s) => JSON.stringify(s));
const small = fc.integer({ min: -3, max: 10 });

const { num, str, arr } = fc.letrec((tie) => ({
  num: fc.oneof(
    { maxDepth: 3, depthIdentifier: "e" },
    numLit,
    fc.tuple(
      tie("num"),
      fc.constantFrom("+", "-", "*", "/", "%", "&", "|", "^", "<<", ">>", ">>>", "<", "===", "=="),
      tie("num"),
    ).map(([a, op, b]) => `(${a} ${op} ${b})`),
    fc.tuple(fc.integer({ min: -5, max: 5 }), fc.integer({ min: 0, max: 12 })).map(([a, b]) =>
      `((${a}) ** ${b})`
    ),
    fc.tuple(fc.constantFrom("floor", "ceil", "abs", "sqrt", "round", "trunc", "sign"), tie("num"))
      .map(([f, a]) => `Math.${f}(${a})`),
    fc.tuple(fc.constantFrom("min", "max"), tie("num"), tie("num")).map(([f, a, b]) =>
      `Math.${f}(${a}, ${b})`
    ),
    tie("str").map((s) => `${s}.length`),
    fc.tuple(tie("str"), tie("str")).map(([s, t]) => `${s}.indexOf(${t})`),
    tie("str").map((s) => `Number(${s})`),
    tie("str").map((s) => `parseInt(${s}, 10)`),
    tie("arr").map((a) => `${a}.length`),
    tie("arr").map((a) => `${a}.reduce((x, y) => x + y, 0)`),
  ),
  str: fc.oneof(
    { maxDepth: 3, depthIdentifier: "e" },
    strLit,
    fc.tuple(tie("str"), tie("str")).map(([a, b]) => `(${a} + ${b})`),
    fc.tuple(tie("str"), small, small).map(([s, a, b]) => `${s}.slice(${a}, ${b})`),
    tie("str").map((s) => `${s}.toUpperCase()`),
    tie("str").map((s) => `${s}.trim()`),
    fc.tuple(tie("str"), fc.integer({ min: 0, max: 3 })).map(([s, n]) => `${s}.repeat(${n})`),
    fc.tuple(tie("str"), fc.integer({ min: 0, max: 12 })).map(([s, n]) =>
      `${s}.padStart(${n}, "*")`
    ),
    fc.tuple(tie("str"), fc.constantFrom(",", "", " ", "a")).map(([s, sep]) =>
      `${s}.split(${JSON.stringify(sep)}).join("|")`
    ),
    tie("num").map((n) => `String(${n})`),
    fc.tuple(tie("num"), fc.integer({ min: 0, max: 5 })).map(([n, d]) => `(${n}).toFixed(${d})`),
    tie("arr").map((a) => `${a}.join("-")`),
    tie("arr").map((a) => `JSON.stringify(${a})`),
    fc.tuple(
      tie("str"),
      fc.constantFrom("/[aeiou]/g", "/\\s+/g", "/(\\w)(\\w)/g", "/^a|c$/gi", "/\\d+/g", "/./gu"),
      fc.constantFrom('"_"', '"$2$1"', '"[$&]"', "(m) => m.length"),
    ).map(([s, re, by]) => `${s}.replace(${re}, ${by})`),
    fc.tuple(tie("str"), fc.constantFrom("/\\w+/g", "/[a-c]/gi", "/(.)\\1/g", "/\\p{L}/gu")).map((
      [s, re],
    ) => `JSON.stringify(${s}.match(${re}))`),
    fc.tuple(tie("str"), fc.constantFrom("/^\\w*$/", "/b/i", "/\\d/", "/^$/")).map(([s, re]) =>
      `String(${re}.test(${s}))`
    ),
  ),
  arr: fc.oneof(
    { maxDepth: 2, depthIdentifier: "e" },
    fc.array(tie("num"), { maxLength: 5 }).map((xs) => `[${xs.join(", ")}]`),
    fc.array(strLit, { maxLength: 4 }).map((xs) => `[${xs.join(", ")}]`),
    tie("arr").map((a) => `${a}.map((x) => x * 2)`),
    tie("arr").map((a) => `${a}.filter((x) => x > 0)`),
    tie("arr").map((a) => `${a}.slice().reverse()`),
    tie("arr").map((a) => `${a}.slice().sort()`),
    tie("arr").map((a) => `${a}.slice().sort((x, y) => x - y)`),
    fc.tuple(tie("arr"), tie("arr")).map(([a, b]) => `${a}.concat(${b})`),
    fc.integer({ min: 0, max: 8 }).map((n) => `Array.from({ length: ${n} }, (_, i) => i * i)`),
    tie("str").map((s) => `[...${s}]`),
    tie("arr").map((a) => `Object.entries(Object.assign({}, ${a})).flat()`),
  ),
}));

const json = fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v));
const thrower = fc.constantFrom(
  "null.x",
  "undefined()",
  'JSON.parse("{bad")',
  "new Array(-1)",
  '"x".repeat(-1)',
  'decodeURIComponent("%")',
  "1n + 1",
  "(() => { throw new RangeError('r'); })()",
  "Symbol() + ''",
  "new (class A { #p = 1; static f(o) { return o.#p; } }).constructor.f({})",
);
const expr = fc.oneof(
  num,
  str,
  arr,
  json.map((j) => `JSON.parse(${JSON.stringify(j)})`),
  json.map((j) => `JSON.stringify(JSON.parse(${JSON.stringify(j)}), null, 2)`),
  thrower,
  fc.tuple(num, thrower).map(([n, t]) => `(${n} > 0 ? ${t} : ${n})`),
);
const program = expr.map((e) =>
  `(() => { try { return { v: ${e} }; } catch (e) { return { e: e.name }; } })()`
);

function v8(code: string): unknown {
  const value = (0, eval)(code);
  const text = JSON.stringify(value);
  return text === undefined ? undefined : JSON.parse(text);
}

if (BUILT) {
  kvmTest(`js diff: ${RUNS} generated programs give the same JSON in QuickJS and V8`, async () => {
    await using js = await JsSandbox.create({ timeoutMs: 5000 });
    await using snap = await js.snapshot();
    let n = 0;
    await fc.assert(
      fc.asyncProperty(program, async (code) => {
        n++;
        const expected = v8(code);
        const got = await js.eval(code);
        await js.restore(snap);
        assert.deepEqual(got, expected, code);
      }),
      { seed: 2020, numRuns: RUNS, endOnFailure: true },
    );
    assert.equal(n, RUNS);
  });
} else {
  Deno.test({ name: "js diff (quickjs.wasm not built)", ignore: true, fn() {} });
}

// Leaves no cached snapshot or idle VM behind for the test files that count live VMs.
Deno.test("js: the snapshot and module caches are released", async () => {
  await JsSandbox.clearCache();
  await WasmSandbox.clearCache();
});
