/**
 * Python start snapshots on disk (src/start_snapshots.ts, `PySandbox`; docs/python.md, "Cold
 * create"): a create whose options were seen before (here or in another process) starts from the
 * state after the interpreter's start and `setup`, read from the artifact cache directory; a
 * truncated, changed or foreign file is refused (counted, removed) and rebuilt, never used; and
 * copies started from one file, in one process or in two, still draw their own `random` and
 * `os.urandom` streams.
 */
import assert from "node:assert/strict";
import { preparePyRuntime, PyError, PySandbox } from "../../src/py/sandbox.ts";
import { SandboxError } from "../../src/errors.ts";
import { startSnapshotStats } from "../../src/start_snapshots.ts";
import { readSnapshotDescription } from "../../src/snapshot_file.ts";
import { artifactCacheDir } from "../../src/wasm/compiler.ts";
import { findCompiler } from "../../src/artifacts.ts";
import { moduleTest, PYTHON_BUILT, PYTHON_FULL_BUILT } from "./_py.ts";
import { flipByte } from "../unit/_snapshot_files.ts";

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

/** A child process: one create of `setup` and one run of `code`; its stdout and the hit counts. */
async function inChild(
  setup: string,
  code: string,
): Promise<{ out: string; hits: number; baseHits: number }> {
  const script = `
    import { PySandbox } from ${
    JSON.stringify(new URL("../../src/py/sandbox.ts", import.meta.url).href)
  };
    import { startSnapshotStats } from ${
    JSON.stringify(new URL("../../src/start_snapshots.ts", import.meta.url).href)
  };
    await using py = await PySandbox.create({ setup: ${JSON.stringify(setup)} });
    const r = await py.run(${JSON.stringify(code)});
    const stats = startSnapshotStats();
    console.log(JSON.stringify({ out: r.stdout, hits: stats.diskHits, baseHits: stats.pyBaseHits }));
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

/**
 * The runtime base state file of `runtime` with the default options that a create of this
 * process used last (key field `kind`; this checkout's compiler; a hit refreshes the mtime).
 */
async function baseFile(runtime: string): Promise<string | undefined> {
  const found: { f: string; mtime: number }[] = [];
  for (const f of startFiles()) {
    const { description } = await readSnapshotDescription(f).catch(() => ({ description: null }));
    const key = (description?.extra as { py?: { key?: string } } | undefined)?.py?.key;
    if (typeof key !== "string") continue;
    const k = JSON.parse(key);
    if (
      k.kind === "base" && k.runtime === runtime && k.lib === "" &&
      k.maxMemoryBytes === 256 << 20 && String(k.compiler).startsWith(`${findCompiler()}:`)
    ) {
      found.push({ f, mtime: Deno.statSync(f).mtime?.getTime() ?? 0 });
    }
  }
  return found.sort((a, b) => b.mtime - a.mtime)[0]?.f;
}

/**
 * Makes sure the `cpython` base state of the default options is on disk: a create without a
 * `setup` starts from it, or writes it (dispose waits for the write).
 */
async function ensureBase(): Promise<void> {
  await using _py = await PySandbox.create();
}

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a new setup, new options that keep the start, and net start from the runtime base state",
  async () => {
    await ensureBase();
    // A setup never seen: from the base state (no artifact, no interpreter start), then its own
    // start file is written.
    const setup = uniqueSetup();
    const before = startSnapshotStats();
    const file = await written(setup);
    const after = startSnapshotStats();
    assert.equal(after.pyBaseHits, before.pyBaseHits + 1, "started from the base state");
    assert.equal(after.diskHits, before.diskHits, "no start file of this setup existed");
    assert.equal(after.pyBaseWrites, before.pyBaseWrites, "the base state was there already");
    await assertHit(setup);
    // Options never seen that do not change the start (maxOutputBytes is the host's): the base.
    {
      const stats = startSnapshotStats();
      await using py = await PySandbox.create({ setup, maxOutputBytes: 64 * 1024 * 1024 + 4096 });
      assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits + 1);
      assert.equal((await py.run("json.dumps([token[:0]])")).value, '[""]');
    }
    // `net` (the setup may fetch: no start file of its own), from the base all the same.
    {
      const stats = startSnapshotStats();
      const py = await PySandbox.create({ setup: uniqueSetup(), net: { allow: [] } });
      assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits + 1);
      const r = await py.run(
        "import hl\ntry:\n    hl.fetch('https://example.com/')\n" +
          "except hl.NetworkPolicyError:\n    print('refused')",
      );
      assert.equal(r.stdout, "refused\n");
      await py.dispose();
      assert.equal(startSnapshotStats().diskWrites, stats.diskWrites, "no start file with net");
    }
    // Another memory limit changes the start: a limit never seen is a new base state, written
    // once and then used.
    {
      const maxMemoryBytes = (160 + Math.floor(Math.random() * 64)) << 20;
      const stats = startSnapshotStats();
      const py = await PySandbox.create({ setup: uniqueSetup(), maxMemoryBytes });
      assert.equal((await py.run("1 + 1")).value, 2);
      await py.dispose();
      const now = startSnapshotStats();
      assert.equal(now.pyBaseHits, stats.pyBaseHits, "not the default limit's base state");
      assert.equal(now.pyBaseWrites, stats.pyBaseWrites + 1, "its own, written");
      await using again = await PySandbox.create({ setup: uniqueSetup(), maxMemoryBytes });
      assert.equal(startSnapshotStats().pyBaseHits, now.pyBaseHits + 1);
      assert.equal((await again.run("1 + 1")).value, 2);
    }
    // A user preopen: the cold path (preopens are fixed in a state), and the right answer.
    {
      const dir = await Deno.makeTempDir();
      await Deno.writeTextFile(`${dir}/x.txt`, "from the host");
      const stats = startSnapshotStats();
      await using py = await PySandbox.create({
        setup: "data = open('/data/x.txt').read()",
        preopens: { "/data": dir },
      });
      assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits);
      assert.equal((await py.run("data")).value, "from the host");
      await Deno.remove(dir, { recursive: true });
    }
    // A new process's new setup: from the base state another process wrote.
    const child = await inChild(uniqueSetup(), "print(token[:0] + 'ok')");
    assert.deepEqual([child.out, child.hits, child.baseHits], ["ok\n", 0, 1]);
    await Deno.remove(file);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a damaged base state file is refused, removed and written again",
  async () => {
    await ensureBase();
    const file = await baseFile("cpython");
    assert.ok(file, "the cpython base state is on disk");
    const f = await Deno.open(file, { read: true, write: true });
    try {
      const b = new Uint8Array(1);
      await f.seek(64 * 1024 + 7, Deno.SeekMode.Start);
      await f.read(b);
      b[0] ^= 0x5a;
      await f.seek(64 * 1024 + 7, Deno.SeekMode.Start);
      await f.write(b);
    } finally {
      f.close();
    }
    const stats = startSnapshotStats();
    const setup = uniqueSetup();
    const py = await PySandbox.create({ setup });
    const token = setup.match(/token = "([^"]+)"/)![1];
    assert.equal((await py.run("token")).value, token);
    await py.dispose();
    const after = startSnapshotStats();
    assert.equal(after.diskRefused, stats.diskRefused + 1, "the damaged base is refused");
    assert.equal(after.pyBaseHits, stats.pyBaseHits, "and not used");
    assert.equal(after.pyBaseWrites, stats.pyBaseWrites + 1, "and written again");
    const stats2 = startSnapshotStats();
    await using again = await PySandbox.create({ setup: uniqueSetup() });
    assert.equal(startSnapshotStats().pyBaseHits, stats2.pyBaseHits + 1, "then used");
    assert.equal((await again.run("1 + 1")).value, 2);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: preparePyRuntime (the setup entry point's step) leaves the base state; a runtime not fetched is false",
  async () => {
    assert.equal(await preparePyRuntime("cpython"), true);
    const stats = startSnapshotStats();
    await using py = await PySandbox.create({ setup: uniqueSetup() });
    assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits + 1, "a new setup uses it");
    assert.equal((await py.run("1 + 1")).value, 2);
    const saved = Deno.env.get("HL_PYTHON_FULL_WASM");
    Deno.env.set("HL_PYTHON_FULL_WASM", `/nonexistent/${crypto.randomUUID()}.wasm`);
    try {
      assert.equal(await preparePyRuntime("full"), false);
    } finally {
      if (saved === undefined) Deno.env.delete("HL_PYTHON_FULL_WASM");
      else Deno.env.set("HL_PYTHON_FULL_WASM", saved);
    }
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a setup that raises on the artifact path still leaves the base state",
  async () => {
    // A memory limit never seen: no base state for it, so the artifact path makes one.
    const maxMemoryBytes = (96 + Math.floor(Math.random() * 64)) << 20;
    const stats = startSnapshotStats();
    await assert.rejects(
      PySandbox.create({ setup: "raise ValueError('typo')", maxMemoryBytes }),
      (e) => e instanceof PyError && e.type === "ValueError",
    );
    const after = startSnapshotStats();
    assert.equal(after.pyBaseWrites, stats.pyBaseWrites + 1, "the base state is written");
    await using py = await PySandbox.create({ setup: "y = 41", maxMemoryBytes });
    assert.equal(startSnapshotStats().pyBaseHits, after.pyBaseHits + 1, "and the next try uses it");
    assert.equal((await py.run("y + 1")).value, 42);
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: creates of new setups from one base state draw their own random streams, here and in other processes",
  async () => {
    await ensureBase();
    const code = "import random, os, posix\n" +
      "print(random.getrandbits(64), os.urandom(8).hex(), posix.urandom(8).hex(), " +
      "random.Random().getrandbits(64))";
    const outs: string[] = [];
    const stats = startSnapshotStats();
    for (let i = 0; i < 2; i++) {
      await using py = await PySandbox.create({ setup: uniqueSetup() });
      outs.push((await py.run(code)).stdout);
    }
    assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits + 2);
    for (let i = 0; i < 2; i++) {
      const child = await inChild(uniqueSetup(), code);
      assert.equal(child.baseHits, 1, "the child started from the base state");
      outs.push(child.out);
    }
    const names = ["random", "os.urandom", "posix.urandom", "Random()"];
    names.forEach((name, i) => {
      const column = outs.map((o) => o.trim().split(" ")[i]);
      assert.equal(new Set(column).size, outs.length, `${name} repeats: ${outs.join("")}`);
    });
  },
);

moduleTest(
  PYTHON_FULL_BUILT,
  MISSING_FULL,
  "py start snapshot (full): a new setup starts from the runtime base state",
  async () => {
    {
      // A create without a setup starts from the base state, or writes it.
      await using _py = await PySandbox.create({ runtime: "full" });
    }
    const stats = startSnapshotStats();
    const token = crypto.randomUUID();
    const py = await PySandbox.create({
      runtime: "full",
      setup: `import numpy as np\ntoken = "${token}"`,
    });
    assert.equal(startSnapshotStats().pyBaseHits, stats.pyBaseHits + 1, "from the base state");
    assert.equal((await py.run("int(np.arange(10).sum())")).value, 45);
    assert.equal((await py.run("token")).value, token);
    await py.dispose();
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

/** A hit of `setup`, and how many code-image bytes it read and whether it skipped the read. */
async function hitReads(setup: string): Promise<{ read: number; skipped: number }> {
  const stats = startSnapshotStats();
  await assertHit(setup);
  const after = startSnapshotStats();
  return {
    read: after.codeImageBytesRead - stats.codeImageBytesRead,
    skipped: after.codeImageChecksSkipped - stats.codeImageChecksSkipped,
  };
}

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: the code image's CRC-32 is read once per file; a changed file is checked again",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    const memo = file.replace(/\.hlsnap$/, ".hlsnap.verified");
    const { description } = await readSnapshotDescription(file);
    const code = description.code!;
    // The first load reads and checks the whole code image and remembers it; the next does not.
    assert.deepEqual(await hitReads(setup), { read: code.size, skipped: 0 });
    assert.ok(Deno.statSync(memo).isFile, "remembered beside the file");
    assert.deepEqual(await hitReads(setup), { read: 0, skipped: 1 });
    // Touched (its ctime moves): read and checked again, then remembered again.
    Deno.utimeSync(file, new Date(), new Date());
    assert.deepEqual(await hitReads(setup), { read: code.size, skipped: 0 });
    assert.deepEqual(await hitReads(setup), { read: 0, skipped: 1 });
    // Rewritten (another inode): read again.
    Deno.copyFileSync(file, `${file}.copy`);
    Deno.renameSync(`${file}.copy`, file);
    assert.deepEqual(await hitReads(setup), { read: code.size, skipped: 0 });
    // A code-image byte changed in place after it was remembered: the ctime moved, so it is read
    // and the corruption refused (the file removed, rebuilt, and remembered anew).
    flipByte(file, code.offset + code.size - 5000);
    await assertRefusedAndRebuilt(setup, file);
    // A memo that names another file's identity is ignored, and a corrupt image refused.
    const rebuilt = await readSnapshotDescription(file);
    Deno.writeTextFileSync(memo, "v1 1 2 3 4 5\n", { mode: 0o600 });
    flipByte(file, rebuilt.description.code!.offset + 4096);
    await assertRefusedAndRebuilt(setup, file);
    await Deno.remove(file);
    await Deno.remove(memo).catch(() => {});
  },
);

moduleTest(
  PYTHON_BUILT,
  MISSING,
  "py start snapshot: a remembered code image truncated under a live sandbox is an error, not a crash",
  async () => {
    const setup = uniqueSetup();
    const file = await written(setup);
    await hitReads(setup); // checked and remembered
    const stats = startSnapshotStats();
    await using py = await PySandbox.create({ setup });
    assert.equal(startSnapshotStats().codeImageChecksSkipped, stats.codeImageChecksSkipped + 1);
    const { description } = await readSnapshotDescription(file);
    Deno.truncateSync(file, description.code!.offset); // the mapped code pages are gone
    await assert.rejects(py.run("sum(range(1000))"), SandboxError);
    await Deno.remove(file);
    await Deno.remove(file.replace(/\.hlsnap$/, ".hlsnap.verified")).catch(() => {});
  },
);
