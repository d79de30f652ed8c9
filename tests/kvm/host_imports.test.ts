/**
 * A native guest's declared host imports (issue 26): `hl_guest::host_functions!` sends them with
 * the function table, and `Sandbox.create` checks them against `hostFunctions` — a missing one or
 * one of other types is a `GuestLinkError` at create, before any call; a guest that declares none
 * is not checked (as before); `hl inspect` lists them ("not declared" for the test guest); a
 * malformed imports part is a `ProtocolError` that poisons. The declaring guest is `importguest`
 * (guest/testguest/src/importguest.rs): now_ms() -> u64, scale(i32, f64) -> f64,
 * note(string, bytes) -> void, "math.double"(i32) -> i32.
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { TESTGUEST } from "../_guests.ts";
import {
  GuestError,
  GuestLinkError,
  type HostFunction,
  ProtocolError,
  Sandbox,
  SandboxError,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";

const ROOT = new URL("../../", import.meta.url);
/** The repository's deno.json: the generated files are checked against the library's own
 * dependency map (the consumer-without-config case is typed_guest.test.ts's). */
const CONFIG = new URL("deno.json", ROOT).pathname;
const IMPORTGUEST =
  new URL("guest/target/x86_64-unknown-linux-gnu/release/importguest", ROOT).pathname;

const DECLARED = [
  { name: "now_ms", params: [], result: "u64" },
  { name: "scale", params: ["i32", "f64"], result: "f64" },
  { name: "note", params: ["string", "bytes"], result: "void" },
  { name: "math.double", params: ["i32"], result: "i32" },
];

/** Host functions for the import guest, counting their calls. */
function hostFunctions(calls: string[]): Record<string, HostFunction> {
  return {
    now_ms: { params: [], result: "u64", fn: () => (calls.push("now_ms"), 1234n) },
    scale: { params: ["i32", "f64"], result: "f64", fn: (x: number, f: number) => x * f },
    note: {
      params: ["string", "bytes"],
      result: "void",
      fn: (text: string, data: Uint8Array) => {
        calls.push(`note ${text} ${[...data].join(",")}`);
      },
    },
    "math.double": { params: ["i32"], result: "i32", fn: (x: number) => 2 * x },
  };
}

async function hl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", new URL("cli.ts", ROOT).pathname, ...args],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}

kvmTest(
  "host imports: a guest that declares them runs when hostFunctions provide them",
  async () => {
    const calls: string[] = [];
    await using sb = await Sandbox.create({
      guest: IMPORTGUEST,
      hostFunctions: hostFunctions(calls),
    });
    assert.deepEqual(sb.imports, DECLARED);
    assert.deepEqual(sb.functions.map((f) => f.name), [
      "stamp",
      "scaled",
      "noted",
      "doubled",
      "add",
    ]);
    // The typed wrappers call the host by the declared names and types.
    assert.equal(await sb.call("stamp"), 1234n);
    assert.equal(await sb.call("scaled", 3, 1.5), 4.5);
    assert.equal(await sb.call("noted", "ab"), 2);
    assert.equal(await sb.call("doubled", 21), 42);
    assert.deepEqual(calls, ["now_ms", "note ab 98,97"]);
    // Extra host functions (called by name at run time) are allowed.
    await using extra = await Sandbox.create({
      guest: IMPORTGUEST,
      hostFunctions: { ...hostFunctions([]), other: { params: [], result: "void", fn: () => {} } },
    });
    assert.equal(await extra.call("add", 2, 3), 5);
  },
);

kvmTest("host imports: a missing one is a GuestLinkError at create, not at the call", async () => {
  const before = globalStats().liveVms;
  for (const missing of ["now_ms", "math.double"]) {
    const calls: string[] = [];
    const host = hostFunctions(calls);
    delete host[missing];
    const err = await Sandbox.create({ guest: IMPORTGUEST, hostFunctions: host }).then(
      () => assert.fail("create succeeded"),
      (e) => e,
    );
    assert.ok(err instanceof GuestLinkError && err instanceof SandboxError, String(err));
    assert.equal(err.importName, missing);
    assert.match(err.message, new RegExp(`"${missing}" .*hostFunctions does not provide`));
    assert.deepEqual(calls, [], "no host function ran");
  }
  // Every missing one is named; the first is importName.
  const err = await Sandbox.create({ guest: IMPORTGUEST }).catch((e) => e);
  assert.ok(err instanceof GuestLinkError);
  assert.equal(err.importName, "now_ms");
  for (const d of DECLARED) assert.ok(err.message.includes(`"${d.name}"`), err.message);
  assert.equal(globalStats().liveVms, before, "the VMs of failed creates are destroyed");
});

kvmTest("host imports: a provided one of other types is a GuestLinkError at create", async () => {
  const cases: [string, HostFunction, RegExp][] = [
    ["now_ms", { params: [], result: "i64", fn: () => 1n }, /as \(\) -> u64, but .* \(\) -> i64/],
    ["scale", { params: ["i32", "f32"], result: "f64", fn: () => 0 }, /\(i32, f32\) -> f64/],
    ["note", { params: ["string"], result: "void", fn: () => {} }, /\(string\) -> void/],
    ["math.double", { params: ["i32"], result: "void", fn: () => {} }, /\(i32\) -> void/],
  ];
  for (const [name, def, message] of cases) {
    const host = { ...hostFunctions([]), [name]: def };
    const err = await Sandbox.create({ guest: IMPORTGUEST, hostFunctions: host }).catch((e) => e);
    assert.ok(err instanceof GuestLinkError, `${name}: ${err}`);
    assert.equal(err.importName, name);
    assert.match(err.message, message);
  }
});

kvmTest("host imports: a guest that declares none is not checked (as before)", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(sb.imports, undefined);
  assert.equal(await sb.call("add", 2, 3), 5);
  // Its host calls by a name given at run time fail at the call, as they always did.
  await assert.rejects(
    sb.call("call_host", "nope", 1),
    (e) => e instanceof GuestError && e.code === 3 && /nope/.test(e.message),
  );
  assert.equal(sb.poisoned, false);
});

kvmTest("host imports: a snapshot's sandboxes keep the declaration", async () => {
  await using sb = await Sandbox.create({ guest: IMPORTGUEST, hostFunctions: hostFunctions([]) });
  await using snap = await sb.snapshot();
  await using copy = await Sandbox.create({ snapshot: snap, hostFunctions: hostFunctions([]) });
  assert.deepEqual(copy.imports, DECLARED);
  assert.equal(await copy.call("doubled", 5), 10);
});

kvmTest("host imports: a malformed imports part is a ProtocolError and poisons", async () => {
  // The test guest writes a FUNCTION_TABLE by hand: one function, then an imports count that
  // cannot fit. The host decodes it (and refuses it) before looking at its kind.
  const bytes = [
    ...[7, 0, 0, 0, 16, 0, 0, 0], // FUNCTION_TABLE, payload 16 bytes
    ...[1, 0, 0, 0, 1, 0, 0, 0, 0x66, 0, 0], // one function "f" () -> void
    ...[0xff, 0xff, 0xff, 0xff, 0], // imports count 2^32-1, then one byte
  ];
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  await assert.rejects(
    sb.call("raw_frame", 0x7f00, new Uint8Array(bytes)),
    (e) => e instanceof ProtocolError && /host import/.test(e.detail),
  );
  assert.equal(sb.poisoned, true);
});

kvmTest("hl inspect lists a guest's declared imports, or says 'not declared'", async () => {
  const text = await hl(["inspect", IMPORTGUEST]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(
    text.stdout,
    /imports \(host functions\):\n {2}now_ms: \(\) -> u64\n {2}scale: \(i32, f64\) -> f64\n {2}note: \(string, bytes\) -> void\n {2}math\.double: \(i32\) -> i32/,
  );
  const json = JSON.parse((await hl(["inspect", "--json", IMPORTGUEST])).stdout);
  assert.deepEqual(json.imports, DECLARED);
  const old = await hl(["inspect", TESTGUEST]);
  assert.match(old.stdout, /imports \(host functions\):\n {2}not declared/);
  assert.equal(JSON.parse((await hl(["inspect", "--json", TESTGUEST])).stdout).imports, null);

  // --ts: the interface, and a hostFunctions type a consumer's table is checked against.
  const tmp = Deno.makeTempDirSync({ prefix: "hl-imports-" });
  try {
    const ts = await hl(["inspect", "--ts", "--name", "Imp", IMPORTGUEST]);
    assert.equal(ts.code, 0, ts.stderr);
    assert.match(ts.stdout, /export type ImpHostFunctions = \{/);
    Deno.writeTextFileSync(`${tmp}/imp.ts`, ts.stdout);
    Deno.writeTextFileSync(
      `${tmp}/use.ts`,
      `import { Sandbox } from ${JSON.stringify(new URL("mod.ts", ROOT).href)};
import type { Imp, ImpHostFunctions } from "./imp.ts";
const host: ImpHostFunctions = {
  now_ms: { params: [], result: "u64", fn: () => 7n },
  scale: { params: ["i32", "f64"], result: "f64", fn: (x, f) => x * f },
  note: { params: ["string", "bytes"], result: "void", fn: () => {} },
  "math.double": { params: ["i32"], result: "i32", fn: (x) => 2 * x },
};
export const wrong: ImpHostFunctions = {
  ...host,
  // @ts-expect-error now_ms returns a bigint (u64)
  now_ms: { params: [], result: "u64", fn: () => 7 },
};
await using sb = await Sandbox.create({ guest: ${
        JSON.stringify(IMPORTGUEST)
      }, hostFunctions: host });
console.log(await sb.typed<Imp>().stamp());
`,
    );
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--quiet", "--no-lock", "--config", CONFIG, "use.ts"],
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(check.code, 0, new TextDecoder().decode(check.stderr));
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-ffi", "--quiet", "--no-lock", "--config", CONFIG, "use.ts"],
      cwd: tmp,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      new TextDecoder().decode(run.stdout).trim(),
      "7n",
      new TextDecoder().decode(run.stderr),
    );
  } finally {
    Deno.removeSync(tmp, { recursive: true });
  }
});
