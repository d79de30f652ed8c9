/**
 * `hl inspect --ts` and `Sandbox.typed()` on the built test guest (issue 26 item 5): the interface
 * written from its function table type-checks in a consumer's file that uses it (a wrong call
 * there is a type error), and the typed calls reach the guest.
 */
import assert from "node:assert/strict";
import { Sandbox } from "../../mod.ts";
import { TESTGUEST } from "../_guests.ts";
import { kvmTest, runDeno } from "./_kvm.ts";

const ROOT = new URL("../../", import.meta.url);

async function deno(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  const r = await runDeno(args, cwd);
  return { code: r.code, out: r.out + r.err };
}

kvmTest("hl inspect --ts writes an interface that types sb.typed<T>() calls", async () => {
  const tmp = Deno.makeTempDirSync({ prefix: "hl-typed-" });
  try {
    const cli = new URL("cli.ts", ROOT).pathname;
    const gen = await deno(
      ["run", "-A", "--quiet", cli, "inspect", "--ts", "--name", "TestGuest", TESTGUEST],
      tmp,
    );
    assert.equal(gen.code, 0, gen.out);
    assert.match(gen.out, /export interface TestGuest \{/);
    assert.match(gen.out, /^ {2}add\(a0: number, a1: number\): number;$/m);
    assert.match(gen.out, /^ {2}echo\(a0: string\): string;$/m);
    Deno.writeTextFileSync(`${tmp}/testguest.ts`, gen.out);
    Deno.writeTextFileSync(
      `${tmp}/use.ts`,
      `import { Sandbox } from ${JSON.stringify(new URL("mod.ts", ROOT).href)};
import type { TestGuest } from "./testguest.ts";
await using sb = await Sandbox.create({ guest: ${JSON.stringify(TESTGUEST)} });
const g = sb.typed<TestGuest>();
const sum: number = await g.add(2, 3);
const text: string = await g.echo("hi");
export function wrong() {
  // @ts-expect-error add takes numbers
  g.add("2", 3);
  // @ts-expect-error the test guest has no such function
  g.nope();
}
console.log(sum, text);
`,
    );
    const check = await deno(["check", "--quiet", "use.ts"], tmp);
    assert.equal(check.code, 0, check.out);
    const run = await deno(["run", "--allow-ffi", "--quiet", "use.ts"], tmp);
    assert.equal(run.code, 0, run.out);
    assert.equal(run.out.trim(), "5 hi");
    // --ts on a Wasm module or with --json is a usage error.
    const both = await deno(
      ["run", "-A", "--quiet", cli, "inspect", "--ts", "--json", TESTGUEST],
      tmp,
    );
    assert.equal(both.code, 2, both.out);
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});

kvmTest(
  "Sandbox.typed(): the table's functions as methods; call's checks still apply",
  async () => {
    await using sb = await Sandbox.create({ guest: TESTGUEST });
    const g = sb.typed<{ add(a0: number, a1: number): number; echo(a0: string): string }>();
    assert.equal(await g.add(20, 22), 42);
    assert.equal(await g.echo("x"), "x");
    assert.ok(Object.isFrozen(g));
    assert.equal((g as Record<string, unknown>)["nope"], undefined);
    assert.equal((g as Record<string, unknown>)["then"], undefined); // not a thenable
    await assert.rejects(
      () => (g.add as (...a: unknown[]) => Promise<number>)("x", 1),
      /argument 0/,
    );
  },
);
