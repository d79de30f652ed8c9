/**
 * Every `@example` in the JSDoc that can run, runs (issue 26, item 3): the examples are extracted
 * from the sources, their `@hl/sandbox` imports pointed at this checkout, the placeholder guest
 * paths (`path/to/testguest`, the clone's build path) at the built test guest, and each is
 * imported as a module in this process. A line `console.log(expr); // value...` also checks that
 * `expr` prints `value` (the comment's leading token). Examples that need what a test cannot give
 * them (a file the example assumes, a network, the setup's cargo build) are listed with the
 * reason; each test reports how many ran.
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { TESTGUEST } from "../_guests.ts";
import { teardownWait } from "../../src/ffi/vm.ts";
import * as hl from "../../mod.ts";

const ROOT = new URL("../../", import.meta.url);
/** The Wasm test fixtures an example may name (`deno task build` builds them from tests/wasm/). */
const FIXTURES = new Set(
  [...Deno.readDirSync(new URL("target/wasm-fixtures/", ROOT))]
    .filter((e) => e.name.endsWith(".wasm")).map((e) => e.name.slice(0, -5)),
);

/** One extracted example. */
export interface DocExample {
  /** The source file, relative to the repository root. */
  file: string;
  /** Line of the `@example` tag. */
  line: number;
  /** The code, with the JSDoc ` * ` prefixes removed. */
  code: string;
}

/** The `@example` code blocks (```ts fenced) of `files`. */
export function extractExamples(files: string[]): DocExample[] {
  const out: DocExample[] = [];
  const re =
    /@example[^\n]*\n((?:[ \t]*\*[^\n]*\n)*?)[ \t]*\*[ \t]*```ts\n([\s\S]*?)\n[ \t]*\*[ \t]*```/g;
  for (const file of files) {
    const text = Deno.readTextFileSync(new URL(file, ROOT));
    for (const m of text.matchAll(re)) {
      const code = m[2].split("\n").map((l) => l.replace(/^[ \t]*\* ?/, "")).join("\n");
      out.push({ file, line: text.slice(0, m.index).split("\n").length, code });
    }
  }
  return out;
}

function sourceFiles(): string[] {
  const files = ["mod.ts", "setup.ts", "cli.ts"];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(new URL(dir, ROOT))) {
      const path = `${dir}${e.name}`;
      if (e.isDirectory) walk(`${path}/`);
      else if (e.name.endsWith(".ts")) files.push(path);
    }
  };
  walk("src/");
  return files.sort();
}

/** Examples that cannot run in a test, by a pattern of their code, with the reason. */
const CANNOT_RUN: [RegExp, string][] = [
  [
    /Deno\.readFile(Sync)?\("(?!\/)[^"]*"\)/,
    "reads a file the example assumes (a module, a guest)",
  ],
  [/module: "(?!\/)[^"]*\.wasm"|guest: "(?!\/)[^"]*"/, "names a file it assumes"],
  [/from "@hl\/sandbox\/setup"|setup\(/, "runs the setup (a cargo build of minutes)"],
  [/from "@hl\/sandbox\/cli"|main\(\[/, "the CLI is tested in cli.test.ts"],
  [/jsr:|https?:\/\//, "fetches from the network"],
  [/Deno\.args|Deno\.exit/, "a whole program (arguments, exit)"],
];

function prepare(ex: DocExample): string {
  const mod = new URL("mod.ts", ROOT).href;
  const here = new URL(ex.file, ROOT);
  let code = ex.code
    .replaceAll(/from "@hl\/sandbox"/g, `from "${mod}"`)
    .replaceAll(/from "(\.\.?\/[^"]+)"/g, (_m, p: string) => `from "${new URL(p, here).href}"`)
    .replaceAll(/"path\/to\/testguest"/g, JSON.stringify(TESTGUEST))
    // Modules named after a built test fixture run on that fixture (tests/wasm/*.wat).
    .replaceAll(/"(\w+)\.wasm"/g, (m, name: string) => {
      const fixture = new URL(`target/wasm-fixtures/${name}.wasm`, ROOT).pathname;
      return FIXTURES.has(name) ? JSON.stringify(fixture) : m;
    })
    .replaceAll(
      /"guest\/target\/x86_64-unknown-linux-gnu\/release\/testguest"/g,
      JSON.stringify(TESTGUEST),
    );
  // `console.log(expr); // value` checks what expr prints.
  code = code.replace(
    /^(\s*)console\.log\((.*)\);\s*\/\/\s*(\S.*)$/gm,
    (_m, indent: string, expr: string, comment: string) =>
      `${indent}globalThis.__docExampleCheck(${JSON.stringify(comment)}, ${expr});`,
  );
  // `catch (err) {` records what was caught: it must be an instance of a class the block names.
  code = code.replace(
    /catch \((\w+)\) \{/g,
    (m, v: string) => `${m} globalThis.__docExampleCaught(${v});`,
  );
  return code;
}

/** Whether `comment` starts with what `value` prints (spaces ignored), then ends or goes on in words. */
/** How console.log shows one of several arguments. */
function shown(value: unknown): string {
  return typeof value === "string" ? value : Deno.inspect(value, { colors: false, depth: 8 });
}

function printsAs(value: unknown, comment: string): boolean {
  const squash = (s: string) => s.replaceAll(/\s+/g, "");
  const printed = [
    typeof value === "string" || typeof value === "bigint" ? String(value) : undefined,
    Deno.inspect(value, { colors: false, depth: 8 }),
  ].filter((s): s is string => s !== undefined).map(squash);
  const said = squash(comment);
  // `{ a: 1, b: 2, ... }`: the value prints with these first and more after them.
  const elided = said.indexOf("...");
  if (elided > 0) return printed.some((p) => p.startsWith(said.slice(0, elided)));
  return printed.some((p) =>
    said === p || (said.startsWith(p) && /^[:;,.(a-zA-Z]/.test(said.slice(p.length)))
  );
}

/** Errors of the host's setup, not of a guest: an example may guard against them and not see one. */
const HOST_ERRORS = new Set([
  "SandboxError",
  "HypervisorError",
  "ResourceLimitError",
  "LibraryNotFoundError",
  "PermissionError",
  "GuestNotFoundError",
  "GuestAbiError",
]);

interface CheckFailure {
  comment: string;
  printed: string;
}

const examples = extractExamples(sourceFiles());

kvmTest("doc examples: extraction finds the examples that use the test guest", () => {
  const usingGuest = examples.filter((e) => /testguest/.test(e.code));
  assert.ok(usingGuest.length >= 20, `found ${usingGuest.length}`);
});

kvmTest("doc examples: every example that can run, runs, and prints what it says", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "hl-doc-examples-" });
  const failures: string[] = [];
  let ran = 0;
  const skipped: string[] = [];
  const g = globalThis as unknown as {
    __docExampleCheck: (c: string, ...v: unknown[]) => void;
    __docExampleCaught: (e: unknown) => void;
  };
  let caught: unknown[] = [];
  g.__docExampleCaught = (e) => caught.push(e);
  let mismatches: CheckFailure[] = [];
  g.__docExampleCheck = (comment, ...values) => {
    // console.log(a, b) prints its arguments joined by spaces.
    const value = values.length === 1 ? values[0] : values.map(shown).join(" ");
    if (!printsAs(value, comment)) {
      mismatches.push({ comment, printed: Deno.inspect(value, { colors: false }) });
    }
  };
  const log = console.log;
  const error = console.error;
  try {
    for (const [i, ex] of examples.entries()) {
      if (!/from "@hl\/sandbox"|from "\.\.?\//.test(ex.code)) continue;
      const code = prepare(ex);
      // Each example starts with an empty default module cache (its comments count hits).
      await hl.WasmSandbox.clearCache();
      const skip = CANNOT_RUN.find(([re]) => re.test(code));
      if (skip) {
        skipped.push(`${ex.file}:${ex.line} (${skip[1]})`);
        continue;
      }
      const path = `${dir}/example_${i}.ts`;
      await Deno.writeTextFile(path, code);
      mismatches = [];
      caught = [];
      console.log = () => {};
      console.error = () => {};
      try {
        await import(new URL(`file://${path}`).href);
        ran++;
      } catch (e) {
        failures.push(
          `${ex.file}:${ex.line}: threw ${(e as Error)?.name}: ${(e as Error)?.message}`,
        );
      } finally {
        console.log = log;
        console.error = error;
      }
      // The classes the example tests its caught errors against (`err instanceof X`).
      const named = [...ex.code.matchAll(/\b\w+ instanceof (\w+)/g)].map((m) => m[1]);
      const classes = named.map((n) => (hl as Record<string, unknown>)[n])
        .filter((c): c is new (...a: never[]) => unknown => typeof c === "function");
      if (/catch \(\w+\) \{/.test(ex.code) && classes.length > 0) {
        // A try that guards against the host (no KVM, no build, no permission) may not throw here;
        // one that shows a guest's error must.
        if (caught.length === 0 && !named.every((n) => HOST_ERRORS.has(n))) {
          failures.push(`${ex.file}:${ex.line}: nothing was thrown`);
        }
        for (const e of caught) {
          if (!classes.some((c) => e instanceof c)) {
            failures.push(
              `${ex.file}:${ex.line}: caught ${(e as Error)?.name}: ${(e as Error)?.message}, ` +
                `not ${named.join(" or ")}`,
            );
          }
        }
      }
      for (const m of mismatches) {
        failures.push(`${ex.file}:${ex.line}: printed ${m.printed}, the comment says ${m.comment}`);
      }
    }
  } finally {
    console.log = log;
    console.error = error;
    await Deno.remove(dir, { recursive: true });
    teardownWait();
  }
  await t.step(
    `ran ${ran} examples; cannot run ${skipped.length}: ${skipped.join(", ")}`,
    () => {},
  );
  assert.ok(ran >= 20, `ran only ${ran}`);
  assert.deepEqual(failures, []);
});
