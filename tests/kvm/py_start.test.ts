/**
 * Python start snapshots on disk (src/start_snapshots.ts, `PySandbox`; docs/python.md, "Cold
 * create"): a create whose options were seen before (here or in another process) starts from the
 * state after the interpreter's start and `setup`, read from the artifact cache directory; a
 * truncated, changed or foreign file is refused (counted, removed) and rebuilt, never used; and
 * copies started from one file, in one process or in two, still draw their own `random` and
 * `os.urandom` streams.
 */
import assert from "node:assert/strict";
import { PySandbox } from "../../src/py/sandbox.ts";
import { startSnapshotStats } from "../../src/start_snapshots.ts";
import { readSnapshotDescription } from "../../src/snapshot_file.ts";
import { artifactCacheDir } from "../../src/wasm/compiler.ts";
import { moduleTest, PYTHON_BUILT, PYTHON_FULL_BUILT } from "./_py.ts";

const MISSING = "needs target/runtimes/python-3.12.wasm: bash tools/fetch_python.sh";
const MISSING_FULL = "needs the full runtime: bash tools/fetch_python.sh --full";

/** The `pystart-*` files of the cache directory. */
function startFiles(): Set<string> {
  const dir = artifactCacheDir()!;
  const out = new Set<string>();
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && e.name.startsWith("pystart-") && e.name.endsWith(".hlsnap")) {
        out.add(`${dir}/${e.name}`);
      }
    }
  } catch {
    // No directory yet.
  }
  return out;
}

/** Creates with `setup` (a miss: it must write the file) and returns the new file's path. */
async function written(setup: string): Promise<string> {
  const before = startFiles();
  const stats = startSnapshotStats();
  const py = await PySandbox.create({ setup });
  await py.dispose(); // waits for the write
  assert.equal(startSnapshotStats().diskWrites, stats.diskWrites + 1);
  // Another process sharing the cache directory may add files meanwhile: ours holds this setup.
  const added: string[] = [];
  for (const f of startFiles()) {
    if (before.has(f)) continue;
    const { description } = await readSnapshotDescription(f).catch(() => ({ description: null }));
    const key = (description?.extra as { py?: { key?: string } } | undefined)?.py?.key;
    if (typeof key === "string" && JSON.parse(key).setup === setup) added.push(f);
  }
  assert.equal(added.length, 1, "one new start snapshot file for this setup");
  return added[0];
}

/** A setup of its own, so this test's file is no other test's. */
function uniqueSetup(): string {
  return `token = "${crypto.randomUUID()}"\nimport json`;
}

/** A create with `setup` served from disk: its counters moved by one hit, and it works. */
async function assertHit(setup: string): Promise<void> {
  const stats = startSnapshotStats();
  await using py = await PySandbox.create({ setup });
  assert.equal(startSnapshotStats().diskHits, stats.diskHits + 1, "served from the file");
  const token = setup.match(/token = "([^"]+)"/)![1];
  assert.equal((await py.run("token")).value, token);
  assert.equal((await py.run("print(json.dumps([1 + 1]))")).stdout, "[2]\n");
}

/** The same create after `damage` of its file: refused, removed, served cold, and written again. */
async function assertRefusedAndRebuilt(setup: string, file: string): Promise<void> {
  const stats = startSnapshotStats();
  const py = await PySandbox.create({ setup });
  const after = startSnapshotStats();
  assert.equal(after.diskRefused, stats.diskRefused + 1, "the damaged file is refused");
  assert.equal(after.diskHits, stats.diskHits, "and not used");
  const token = setup.match(/token = "([^"]+)"/)![1];
  assert.equal((await py.run("token")).value, token);
  await py.dispose();
  assert.equal(startSnapshotStats().diskWrites, after.diskWrites + 1, "written again");
  assert.ok(Deno.statSync(file).isFile);
  await assertHit(setup);
}

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a second create of the same options starts from the file",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    await assertHit(setup);
    // Other options are another key: a miss that writes its own file.
    const other = `${setup}\n`;
    const stats = startSnapshotStats();
    const otherFile = await written(other);
    assert.equal(startSnapshotStats().diskHits, stats.diskHits);
    assert.notEqual(otherFile, file);
    await Deno.remove(file);
    await Deno.remove(otherFile);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a truncated file is refused and rebuilt",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    const size = Deno.statSync(file).size;
    for (const cut of [size - 4096, Math.floor(size / 2), 100]) {
      await Deno.truncate(file, cut);
      await assertRefusedAndRebuilt(setup, file);
    }
    await Deno.remove(file);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a changed page or description is refused and rebuilt",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    const size = Deno.statSync(file).size;
    // A byte in the description (its SHA-256), one in the first data page, one near the end (the
    // code image's pages; their CRC-32s).
    for (const at of [200, 64 * 1024 + 7, size - 5000]) {
      const f = await Deno.open(file, { read: true, write: true });
      try {
        const b = new Uint8Array(1);
        await f.seek(at, Deno.SeekMode.Start);
        await f.read(b);
        b[0] ^= 0x5a;
        await f.seek(at, Deno.SeekMode.Start);
        await f.write(b);
      } finally {
        f.close();
      }
      await assertRefusedAndRebuilt(setup, file);
    }
    await Deno.remove(file);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: another key's file under this key's name is refused and rebuilt",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    const foreignSetup = uniqueSetup();
    const foreign = await written(foreignSetup);
    await Deno.copyFile(foreign, file);
    await assertRefusedAndRebuilt(setup, file);
    await Deno.remove(file);
    await Deno.remove(foreign);
  },
);

/** A child process: one create of `setup` and one run of `code`; its stdout and the hit count. */
async function inChild(setup: string, code: string): Promise<{ out: string; hits: number }> {
  const script = `
    import { PySandbox } from ${
    JSON.stringify(new URL("../../src/py/sandbox.ts", import.meta.url).href)
  };
    import { startSnapshotStats } from ${
    JSON.stringify(new URL("../../src/start_snapshots.ts", import.meta.url).href)
  };
    await using py = await PySandbox.create({ setup: ${JSON.stringify(setup)} });
    const r = await py.run(${JSON.stringify(code)});
    console.log(JSON.stringify({ out: r.stdout, hits: startSnapshotStats().diskHits }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--no-check", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return JSON.parse(lines[lines.length - 1]);
}

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: copies from one file draw their own random, os.urandom, posix.urandom and Random(), here and in other processes",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    // random and os.urandom are keyed per request; posix.urandom (os.urandom's C function) and a
    // Random() made without a seed would read the C-level WASI stream, which is in the snapshot.
    const code = "import random, os, posix\n" +
      "print(random.getrandbits(64), os.urandom(8).hex(), posix.urandom(8).hex(), " +
      "random.Random().getrandbits(64))";
    const outs: string[] = [];
    for (let i = 0; i < 2; i++) {
      await using py = await PySandbox.create({ setup });
      outs.push((await py.run(code)).stdout);
      outs.push((await py.run(code)).stdout); // a second request of the same copy
    }
    for (let i = 0; i < 2; i++) {
      const child = await inChild(setup, code);
      assert.equal(child.hits, 1, "the child started from the file");
      outs.push(child.out);
    }
    const names = ["random", "os.urandom", "posix.urandom", "Random()"];
    names.forEach((name, i) => {
      const column = outs.map((o) => o.trim().split(" ")[i]);
      assert.equal(new Set(column).size, outs.length, `${name} repeats: ${outs.join("")}`);
    });
    await Deno.remove(file);
  },
);

moduleTest(
  PYTHON_FULL_BUILT,
  MISSING_FULL,
  "py start snapshot (full): a hit gets the runtime's stdlib preopen again",
  async () => {
    const setup = "import numpy as np";
    {
      // The first create of these options here may write the file (or find it).
      await using py = await PySandbox.create({ runtime: "full", setup });
      assert.equal((await py.run("int(np.arange(10).sum())")).value, 45);
    }
    const stats = startSnapshotStats();
    await using py = await PySandbox.create({ runtime: "full", setup });
    assert.equal(startSnapshotStats().diskHits, stats.diskHits + 1, "served from the file");
    // `fractions` is not imported by the setup: it is read from the stdlib zip now.
    const r = await py.run("import fractions\nprint(fractions.Fraction(1, 3) * 3)");
    assert.equal(r.stdout, "1\n");
  },
);
