// What a cold create asks of Deno before it reaches the VM (docs/js.md "Eager compilation", what
// is left): permission queries and environment reads for finding the artifacts, and the
// WebCrypto digests that name the files on disk. Each is a count that fails on the tree before.
import assert from "node:assert/strict";
import { findLibrary, LIBRARY_FILE, PACKAGE_VERSION } from "../../src/artifacts.ts";
import { locationEnv } from "../../src/host_io.ts";
import { knownModuleDigest, rememberModuleDigest } from "../../src/start_snapshots.ts";

/** Runs `f` with `Deno.permissions.querySync` counted: the env variables it asked about. */
function queried(f: () => void): string[] {
  const asked: string[] = [];
  const perms = Deno.permissions as { querySync: typeof Deno.permissions.querySync };
  const query = perms.querySync;
  perms.querySync = (desc) => {
    asked.push(desc.name === "env" ? `env:${desc.variable}` : desc.name);
    return query.call(Deno.permissions, desc);
  };
  try {
    f();
  } finally {
    perms.querySync = query;
  }
  return asked;
}

Deno.test("host io: a location variable granted to Deno is asked for once per read", () => {
  const asked = queried(() => locationEnv("HOME"));
  assert.deepEqual(asked, ["env:HOME"]);
});

const localLibrary = new URL(`../../target/release/${LIBRARY_FILE}`, import.meta.url).pathname;
const built = (() => {
  try {
    return Deno.statSync(localLibrary).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "artifacts: a clone's build is found without reading the setup cache's location",
  ignore: !built || Deno.env.get("HL_SANDBOX_LIB") !== undefined,
  fn: () => {
    let found = "";
    const asked = queried(() => found = findLibrary());
    assert.equal(found, localLibrary);
    assert.deepEqual(
      asked.filter((a) => a === "env:HOME" || a === "env:XDG_CACHE_HOME"),
      [],
      `asked: ${asked.join(", ")}`,
    );
  },
});

Deno.test("module digests on disk: the memo's name is the SHA-256 of the file's identity, hashed once per process", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-digest-name-" });
  const before = Deno.env.get("HL_WASM_CACHE_DIR");
  Deno.env.set("HL_WASM_CACHE_DIR", `${dir}/cache`);
  const subtle = crypto.subtle as { digest: SubtleCrypto["digest"] };
  const digest = subtle.digest;
  let digests = 0;
  try {
    const module = `${dir}/m.wasm`;
    Deno.writeFileSync(module, new Uint8Array([0, 97, 115, 109]));
    const memo = "cd".repeat(32);
    await rememberModuleDigest(module, memo);
    // The name existing caches hold: the SHA-256 of the identity, as it always was.
    const real = Deno.realPathSync(module);
    const i = Deno.statSync(real);
    const identity = JSON.stringify([
      PACKAGE_VERSION,
      real,
      i.dev,
      i.ino,
      i.size,
      i.mtime?.getTime(),
      i.ctime?.getTime(),
    ]);
    const hash = new Uint8Array(
      await crypto.subtle.digest("SHA-256", new TextEncoder().encode(identity)),
    );
    const name = [...hash].map((b) => b.toString(16).padStart(2, "0")).join("");
    assert.deepEqual(
      [...Deno.readDirSync(`${dir}/cache`)].map((e) => e.name).filter((n) => n.endsWith(".digest")),
      [`module-${name}.digest`],
    );
    // Named again: no new digest (the process remembers the name).
    subtle.digest = (...a) => {
      digests++;
      return digest.apply(crypto.subtle, a);
    };
    assert.equal(await knownModuleDigest(module), memo);
    assert.equal(await knownModuleDigest(module), memo);
    assert.equal(digests, 0);
  } finally {
    subtle.digest = digest;
    if (before === undefined) Deno.env.delete("HL_WASM_CACHE_DIR");
    else Deno.env.set("HL_WASM_CACHE_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
});
