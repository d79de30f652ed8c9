/**
 * PySandbox against the host's own CPython (issue 21): 240 generated programs (integer and float
 * arithmetic, strings, dicts, exceptions, `json`) print the same in the guest (CPython 3.12 on
 * WASI) as in `python3` on the host. Programs print values and exception type names only (not
 * messages, whose wording changes between CPython versions). Skipped when python-3.12.wasm is
 * not fetched or there is no `python3`.
 */
import assert from "node:assert/strict";
import { PyError, PySandbox } from "../../mod.ts";
import { moduleTest, PYTHON_BUILT } from "./_py.ts";

const HOST_PYTHON = (() => {
  try {
    const out = new Deno.Command("python3", { args: ["--version"], stdout: "piped" }).outputSync();
    return out.success;
  } catch {
    return false;
  }
})();

/** A small deterministic generator (mulberry32), so a failure names a reproducible program. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function programs(count: number, seed: number): string[] {
  const r = rng(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const word = () => Array.from({ length: int(0, 8) }, () => pick([..."abcXYZ _-é€1"])).join("");
  const big = () => pick([String(int(-1000, 1000)), `${int(1, 9)}**${int(10, 80)}`, "-7", "0"]);
  const kinds = [
    // integers: big numbers, floor division and modulo signs, bit operations, pow with modulus
    () => {
      const [a, b] = [big(), big()];
      const op = pick(["+", "-", "*", "//", "%", "**2 +", "&", "|", "^", "<<3 +", ">>2 -"]);
      return `a = ${a}\nb = ${b}\nprint(a ${op} b)\nprint(pow(abs(a) + 1, ${int(2, 40)}, ${
        int(2, 99)
      }), divmod(a, ${int(1, 17)}), a.bit_length())`;
    },
    // floats: repr round-trip, rounding, formatting
    () => {
      const x = (r() - 0.5) * 10 ** int(-5, 20);
      const y = (r() - 0.5) * 1000;
      return `x = float("${x}")\ny = ${y}\nprint(repr(x * y), repr(x / (y or 1)), round(x, ${
        int(0, 6)
      }), f"{y:.3e}", f"{x:,.2f}")\nprint(float.hex(y), (x * 3).is_integer(), int(y))`;
    },
    // strings: slicing, methods, formatting, unicode
    () => {
      const s = JSON.stringify(word() + word());
      return `s = ${s}\nprint(s[${int(-5, 5)}:${int(-5, 9)}:${
        pick([1, 2, -1])
      }], s.upper(), s.split(), s.replace("a", "<>"), len(s.encode()), s.title(), s.center(${
        int(0, 20)
      }, "*"))\nprint(sorted(set(s)), s.find("X"), s.count("a"), repr(s), ascii(s))`;
    },
    // dicts: insertion order, updates, comprehensions, sorting, merging
    () => {
      const n = int(0, 8);
      return `d = {}\nfor i in range(${n}):\n    d[str(i * ${int(1, 7)} % ${
        int(1, 5)
      })] = i\nd.update({"z": ${
        int(0, 9)
      }})\nd.pop("0", None)\nprint(d, list(d.items())[:3], sorted(d, reverse=True))\nprint({k: v for k, v in d.items() if v % 2} | {"m": 1}, max(d.values(), default=None))`;
    },
    // exceptions: raised, caught, chained, finally; an uncaught one at the end some of the time
    () => {
      const err = pick([
        "1 / 0",
        "[][1]",
        "{}['k']",
        "int('x')",
        "None + 1",
        "undefined_name",
        "'a' < 1",
        "raise ValueError('v')",
        "import no_such_module",
        "assert False",
        "[1].index(2)",
      ]);
      const tail = r() < 0.3 ? `\n${err}` : "";
      return `out = []\ntry:\n    ${err}\nexcept Exception as e:\n    out.append(type(e).__name__)\nelse:\n    out.append("none")\nfinally:\n    out.append("finally")\ntry:\n    try:\n        ${err}\n    except Exception as e:\n        raise RuntimeError("wrapped") from e\nexcept RuntimeError as e:\n    out.append(type(e.__cause__).__name__)\nprint(out)${tail}`;
    },
    // json: dumps/loads round trips, separators, sort_keys, floats and unicode
    () => {
      const obj = JSON.stringify({
        a: int(-100, 100),
        b: [r(), word(), null, true],
        c: { [word()]: int(0, 5) },
      });
      return `import json\no = json.loads(${
        JSON.stringify(obj)
      })\nprint(json.dumps(o, sort_keys=True), json.dumps(o, separators=(",", ":"), ensure_ascii=False))\nprint(json.loads(json.dumps(o)) == o, json.dumps([1.5, 1e300, -0.0, "\\u20ac"]), sorted(o))`;
    },
  ];
  return Array.from({ length: count }, () => pick(kinds)());
}

/** Runs each program in a fresh namespace of the host's python3: stdout, or `EXC <type>` last. */
const HOST_HARNESS = `
import contextlib, io, json, sys
out = []
for code in json.load(sys.stdin):
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<run>", "exec"), {"__name__": "__main__"})
        out.append(buf.getvalue())
    except BaseException as e:
        out.append(buf.getvalue() + "EXC " + type(e).__name__)
print(json.dumps(out))
`;

async function onHost(codes: string[]): Promise<string[]> {
  const child = new Deno.Command("python3", {
    args: ["-I", "-c", HOST_HARNESS],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(codes)));
  await w.close();
  const out = await child.output();
  assert.ok(out.success, "the host's python3 ran the harness");
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

moduleTest(
  PYTHON_BUILT && HOST_PYTHON,
  "python-3.12.wasm not fetched, or no python3",
  "py diff: 240 generated programs print the same as the host's python3",
  async () => {
    const codes = programs(240, 21);
    const expected = await onHost(codes);
    await using py = await PySandbox.create();
    let uncaught = 0;
    for (let i = 0; i < codes.length; i++) {
      let got: string;
      try {
        got = (await py.run(codes[i])).stdout;
      } catch (e) {
        if (!(e instanceof PyError)) throw e;
        got = e.stdout + "EXC " + e.type;
        uncaught++;
      }
      assert.equal(got, expected[i], `program ${i}:\n${codes[i]}`);
    }
    assert.ok(uncaught > 5, `some programs end in an uncaught exception (${uncaught})`);
  },
);
