/**
 * A user's own guest, outside the repository (issue 26, item 2): `tools/guest_quickstart.sh`
 * follows the README's steps from an empty temporary directory (`hl new-guest`, `cargo build
 * --release`, `hl call`), then the library calls the built guest: its table, a result, a guest
 * error. The cargo target directory is inside the temporary directory (the first build takes
 * about a minute; later ones reuse cargo's registry cache).
 */
import assert from "node:assert/strict";
import { kvmTest } from "./_kvm.ts";
import { GuestError, Sandbox } from "../../mod.ts";
import { CARGO_CONFIG } from "../../src/cli/new_guest.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

kvmTest("new-guest: the README's steps build and call a guest outside the repository", async () => {
  const dir = await Deno.makeTempDir({ prefix: "hl-new-guest-" });
  try {
    assert.ok(!dir.startsWith(ROOT), "outside the repository");
    const env = { ...Deno.env.toObject(), HL_CLI: `${ROOT}cli.ts`, HL_SKIP_SETUP: "1" };
    delete (env as Record<string, string>).CARGO_TARGET_DIR;
    const out = await new Deno.Command("bash", {
      args: [`${ROOT}tools/guest_quickstart.sh`, dir],
      env: { ...env, NO_COLOR: "1" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    assert.equal(out.code, 0, stdout + new TextDecoder().decode(out.stderr));
    assert.deepEqual(stdout.trim().split("\n").slice(-2), ["5", '"hello, world"']);

    const guest = `${dir}/my-guest/target/x86_64-unknown-linux-gnu/release/my-guest`;
    await using sb = await Sandbox.create({ guest });
    assert.deepEqual(sb.functions.map((f) => f.name).sort(), ["add", "greet"]);
    assert.equal(await sb.call("add", 40, 2), 42);
    await using sb2 = await Sandbox.create({ guest });
    await assert.rejects(sb2.call("greet", ""), (e) => e instanceof GuestError && e.code === 1000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

kvmTest("new-guest: the template's link flags are the repository guests' own", async () => {
  const repo = await Deno.readTextFile(`${ROOT}guest/.cargo/config.toml`);
  const flags = (text: string) =>
    [...text.matchAll(/"(-C|link-arg=[^"]*|relocation-model=[^"]*)"/g)].map((m) => m[1]);
  assert.deepEqual(flags(CARGO_CONFIG), flags(repo));
});
