// Snapshot files (issue 24 item 3, docs/snapshot-format.md): save/load round trips for the three
// kinds give the same results as the in-memory snapshot; tampered, truncated and other-version
// files are refused with a typed error; nothing leaks (fds, mappings, snapshot handles).
import assert from "node:assert/strict";
import {
  JsSandbox,
  JsSnapshot,
  Sandbox,
  SandboxError,
  Snapshot,
  SnapshotFormatError,
  SnapshotMismatchError,
  teardownWait,
  type WasmEngine,
  WasmSandbox,
  WasmSnapshot,
} from "../../mod.ts";
import { globalStats } from "../../src/ffi/vm.ts";
import { readSnapshotDescription } from "../../src/snapshot_file.ts";
import { TESTGUEST } from "../_guests.ts";
import { fixture } from "../wasm/fixtures.ts";
import { flipByte } from "../unit/_snapshot_files.ts";
import { QUICKJS_BUILT, QUICKJS_MODULE } from "./_js.ts";
import { engineTest, guestMappingCount, kvmTest, openFdCount, WASM_ENGINES } from "./_kvm.ts";

const dir = Deno.makeTempDirSync({ prefix: "hl-snapfile-" });
addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));

/** Saves a testguest snapshot with counter at 1 and returns its path. */
async function savedCounter(name: string): Promise<string> {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(Number(await sb.call("counter")), 1);
  await using snap = await sb.snapshot();
  const path = `${dir}/${name}`;
  await snap.save(path);
  return path;
}

async function refused(
  path: string,
  reason: string,
  load: (path: string) => Promise<unknown> = Snapshot.load,
): Promise<void> {
  await assert.rejects(load(path), (e: unknown) => {
    assert.ok(e instanceof SnapshotFormatError, String(e));
    assert.ok(e instanceof SnapshotMismatchError);
    assert.equal(e.reason, reason, e.message);
    return true;
  });
}

kvmTest("Snapshot file: a Sandbox loaded from it continues where the snapshot was", async () => {
  await using sb = await Sandbox.create({ guest: TESTGUEST });
  assert.equal(Number(await sb.call("counter")), 1);
  await using snap = await sb.snapshot();
  const path = `${dir}/native`;
  await snap.save(path);
  await using loaded = await Snapshot.load(path);
  assert.equal(loaded.memorySize, snap.memorySize);
  assert.equal(loaded.dataPages, snap.dataPages);
  assert.deepEqual(loaded.functions, snap.functions);
  await using a = await Sandbox.create({ snapshot: snap });
  await using b = await Sandbox.create({ snapshot: loaded });
  for (let i = 0; i < 3; i++) assert.equal(await b.call("counter"), await a.call("counter"));
  assert.equal(await b.call("add", 2, 3), 5);
  await b.restore(loaded);
  assert.equal(Number(await b.call("counter")), 2);
  // A file of the native kind is not a WasmSnapshot.
  await refused(path, "format", (p) => WasmSnapshot.load(p));
});

kvmTest(
  "Snapshot file: truncated, changed, foreign and other-version files are refused",
  async () => {
    const path = await savedCounter("good");
    const good = await Deno.readFile(path);
    const write = (name: string, bytes: Uint8Array) => {
      Deno.writeFileSync(`${dir}/${name}`, bytes);
      return `${dir}/${name}`;
    };
    await refused(write("empty", new Uint8Array(0)), "format");
    await refused(
      write("text", new TextEncoder().encode("not a snapshot at all, clearly")),
      "format",
    );
    await refused(`${dir}/missing`, "io");
    await refused(dir, "io"); // a directory opens, but cannot be read
    // Truncated anywhere: in the header, the description, the pages.
    for (const n of [20, 100, good.length - 4096, good.length - 1]) {
      await refused(write(`short${n}`, good.subarray(0, n)), "corrupt");
    }
    // One byte changed in the description, and in the last page.
    const desc = good.slice();
    desc[60] ^= 1;
    await refused(write("desc", desc), "corrupt");
    const page = good.slice();
    page[good.length - 10] ^= 0x40;
    await refused(write("page", page), "corrupt");
    // Another format version.
    const fmt = good.slice();
    new DataView(fmt.buffer).setUint32(8, 99, true);
    await refused(write("fmt", fmt), "version");
    // A description re-signed with another library version, C ABI, or CPU (a valid SHA-256, so
    // only the version or CPU check can refuse it).
    const len = new DataView(good.buffer).getUint32(12, true);
    const d = JSON.parse(new TextDecoder().decode(good.subarray(48, 48 + len)));
    const resign = async (name: string, change: (d: Record<string, unknown>) => void) => {
      const copy = structuredClone(d);
      change(copy);
      const json = new TextEncoder().encode(JSON.stringify(copy));
      // The description may grow into the padding before the first page.
      if (48 + json.length > d.memory.offset) throw new Error("the test's description is too long");
      const out = good.slice();
      out.fill(0, 48, d.memory.offset);
      out.set(json, 48);
      new DataView(out.buffer).setUint32(12, json.length, true);
      out.set(new Uint8Array(await crypto.subtle.digest("SHA-256", json)), 16);
      return write(name, out);
    };
    await refused(await resign("lib", (x) => x.library = "0.0.0"), "version");
    await refused(await resign("abi", (x) => x.cdylibAbi = 1), "version");
    await refused(await resign("guestabi", (x) => x.guestAbi = 1), "version");
    await refused(await resign("cpu", (x) => x.cpu = "0000000000000000"), "cpu");
    await refused(
      await resign("layout", (x) => (x.layout as Record<string, number>).inputAddr = 2 ** 40),
      "corrupt",
    );
    await refused(
      await resign("offset", (x) => (x.memory as Record<string, number>).offset = 2 ** 40),
      "corrupt",
    );
    await refused(
      await resign("bitmap", (x) => (x.memory as Record<string, string>).bitmap = "AAAA"),
      "corrupt",
    );
    await refused(await resign("sig", (x) => x.functions = [{ name: 1 }]), "corrupt");
    // The good file still loads after all that.
    await (await Snapshot.load(path)).dispose();
  },
);

kvmTest("Snapshot file: written without Deno.writeFile, private to this user", async () => {
  // Deno.writeFile loads Deno's streams code on its first use in a process (~4 ms of a cold
  // create that writes its start snapshot: docs/js.md "Eager compilation"); the file is made
  // with a plain open instead, with the same mode.
  const writeFile = Deno.writeFile;
  Deno.writeFile = () => Promise.reject(new Error("Deno.writeFile was used"));
  let path: string;
  try {
    path = await savedCounter("no-write-file.hlsnap");
  } finally {
    Deno.writeFile = writeFile;
  }
  assert.equal((Deno.statSync(path).mode ?? 0) & 0o777, 0o600);
  await using snap = await Snapshot.load(path);
  await using sb = await Sandbox.create({ snapshot: snap });
  assert.equal(Number(await sb.call("counter")), 2);
});

kvmTest("Snapshot file: save and load leak no fds, mappings or snapshot handles", async () => {
  const path = await savedCounter("leak");
  const bad = `${dir}/leak-bad`;
  const bytes = await Deno.readFile(path);
  bytes[bytes.length - 1] ^= 1;
  await Deno.writeFile(bad, bytes);
  // Warm up (lazy library state, worker threads), then count.
  await (await Snapshot.load(path)).dispose();
  teardownWait();
  const fds = openFdCount();
  const maps = guestMappingCount();
  const handles = globalStats().liveSnapshots;
  for (let i = 0; i < 5; i++) {
    await using snap = await Snapshot.load(path);
    await using sb = await Sandbox.create({ snapshot: snap });
    assert.equal(Number(await sb.call("counter")), 2);
    await snap.save(`${dir}/leak-again`);
    await assert.rejects(Snapshot.load(bad), SnapshotFormatError);
  }
  teardownWait();
  assert.equal(openFdCount(), fds);
  assert.equal(guestMappingCount(), maps);
  assert.equal(globalStats().liveSnapshots, handles);
});

/** Host functions of state.wasm. */
const host = {
  env: { seen: { params: ["i32"], result: "void", fn: (_x: number) => undefined } },
} as const;

/** A sandbox of the `state` fixture on `engine`, outside the module cache. */
function stateSandbox(engine: WasmEngine): Promise<WasmSandbox> {
  return WasmSandbox.create({
    engine,
    module: fixture("state"),
    hostFunctions: host,
    cache: false,
  });
}

for (const engine of WASM_ENGINES) {
  engineTest(engine)(
    "WasmSnapshot file: a loaded snapshot gives the in-memory one's results",
    async () => {
      await using w = await stateSandbox(engine);
      assert.equal(await w.call("bump"), 1);
      await w.call("store", 64, 1234);
      await using snap = await w.snapshot();
      const path = `${dir}/wasm-${engine}`;
      await snap.save(path);
      await using loaded = await WasmSnapshot.load(path);
      assert.deepEqual(loaded.exports, snap.exports);
      await using a = await WasmSandbox.create({ snapshot: snap, hostFunctions: host });
      await using b = await WasmSandbox.create({ snapshot: loaded, hostFunctions: host });
      assert.equal(await b.call("load", 64), 1234);
      for (let i = 0; i < 3; i++) assert.equal(await b.call("bump"), await a.call("bump"));
      await refused(path, "format", (p) => JsSnapshot.load(p));
    },
  );
}

engineTest("wasmtime")(
  "WasmSnapshot file: the code image mapped from the file leaks no fd or mapping",
  async () => {
    await using w = await stateSandbox("wasmtime");
    await using snap = await w.snapshot();
    const path = `${dir}/wasm-leak`;
    await snap.save(path);
    const fileMaps = () =>
      Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.endsWith(path)).length;
    await (await WasmSnapshot.load(path)).dispose();
    const fds = openFdCount();
    const maps = guestMappingCount();
    const handles = globalStats().liveSnapshots;
    for (let i = 0; i < 3; i++) {
      await using loaded = await WasmSnapshot.load(path);
      await using copy = await WasmSandbox.create({ snapshot: loaded, hostFunctions: host });
      assert.equal(await copy.call("bump"), 1);
      assert.ok(fileMaps() > 0, "the code image is mapped from the file");
    }
    teardownWait();
    assert.equal(openFdCount(), fds);
    assert.equal(guestMappingCount(), maps);
    assert.equal(globalStats().liveSnapshots, handles);
    assert.equal(fileMaps(), 0);
  },
);

engineTest("wasmtime")(
  "WasmSnapshot file: a code image file truncated under a live sandbox is an error, not a crash",
  async () => {
    await using w = await stateSandbox("wasmtime");
    await using snap = await w.snapshot();
    const path = `${dir}/wasm-truncated`;
    await snap.save(path);
    await using loaded = await WasmSnapshot.load(path);
    await using copy = await WasmSandbox.create({ snapshot: loaded, hostFunctions: host });
    assert.equal(await copy.call("bump"), 1);
    const { description } = await readSnapshotDescription(path);
    Deno.truncateSync(path, description.code!.offset); // the mapped code pages are gone
    await assert.rejects(copy.call("bump"), SandboxError);
    // The process goes on; a new file loads as before.
    await snap.save(path);
    await using again = await WasmSnapshot.load(path);
    await using fresh = await WasmSandbox.create({ snapshot: again, hostFunctions: host });
    assert.equal(await fresh.call("bump"), 1);
  },
);

const jsTest = QUICKJS_BUILT
  ? kvmTest
  : (name: string, _fn: unknown) => Deno.test.ignore(name, () => {});
jsTest("JsSnapshot file: a loaded snapshot gives the in-memory one's results", async () => {
  await using js = await JsSandbox.create({
    module: QUICKJS_MODULE,
    source: "var n = 41; var log = []; function next(x) { log.push(x); return [++n, log.length]; }",
    cache: false,
  });
  assert.deepEqual(await js.call("next", "a"), [42, 1]);
  await using snap = await js.snapshot();
  const path = `${dir}/js`;
  await snap.save(path);
  await using loaded = await JsSnapshot.load(path);
  await using a = await JsSandbox.create({ snapshot: snap });
  await using b = await JsSandbox.create({ snapshot: loaded });
  for (const x of ["b", "c"]) assert.deepEqual(await b.call("next", x), await a.call("next", x));
  assert.equal(await b.eval("log.join('')"), "abc");
  await refused(path, "format");
});

/** Runs bench/_js_cold_child.ts in a new process with the cache in `cacheDir`; its counters. */
async function coldChild(cacheDir: string): Promise<Record<string, number>> {
  const child = new URL("../../bench/_js_cold_child.ts", import.meta.url).pathname;
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", child, "js"],
    env: { NO_COLOR: "1", HL_WASM_CACHE_DIR: cacheDir, HL_START_SNAPSHOTS: "" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(o.stdout);
  assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
  return JSON.parse(text.trim().split("\n").pop()!);
}

jsTest("JsSandbox cold create: a new process starts from the start snapshot on disk", async () => {
  const cacheDir = `${dir}/cold-cache`;
  // The first process initialises QuickJS and writes the start snapshot beside the artifact.
  const first = await coldChild(cacheDir);
  assert.deepEqual([first.diskHits, first.diskWrites], [0, 1]);
  const files = [...Deno.readDirSync(cacheDir)].map((e) => e.name);
  const start = files.find((n) => n.startsWith("start-") && n.endsWith(".hlsnap"));
  assert.ok(start, files.join(", "));
  assert.equal((Deno.statSync(`${cacheDir}/${start}`).mode ?? 0) & 0o077, 0);
  // The next process maps it instead (and writes nothing).
  const second = await coldChild(cacheDir);
  assert.deepEqual([second.diskHits, second.diskMisses, second.diskWrites], [1, 0, 0]);
  // A corrupt file is refused, removed, and replaced by a fresh one; the answer is still right
  // (the child checks it).
  const bytes = Deno.readFileSync(`${cacheDir}/${start}`);
  bytes[bytes.length - 100] ^= 0xff;
  Deno.writeFileSync(`${cacheDir}/${start}`, bytes);
  const third = await coldChild(cacheDir);
  assert.deepEqual([third.diskHits, third.diskRefused, third.diskWrites], [0, 1, 1]);
  assert.deepEqual((await coldChild(cacheDir)).diskHits, 1);
});

/** A fresh process's hit of the start file: code-image bytes it read, checks it skipped. */
async function coldReads(cacheDir: string): Promise<[number, number, number]> {
  const r = await coldChild(cacheDir);
  return [r.diskHits, r.codeImageBytesRead, r.codeImageChecksSkipped];
}

jsTest(
  "JsSandbox cold create: the start file's code image is read for its CRC-32 once",
  async () => {
    const cacheDir = `${dir}/memo-cache`;
    assert.equal((await coldChild(cacheDir)).diskWrites, 1);
    const start = [...Deno.readDirSync(cacheDir)].map((e) => e.name)
      .find((n) => n.startsWith("start-") && n.endsWith(".hlsnap"));
    assert.ok(start);
    const file = `${cacheDir}/${start}`;
    const code = (await readSnapshotDescription(file)).description.code!;
    assert.ok(code.size > 0);
    // The first fresh load reads and checks the whole code image and leaves the memo; the next
    // fresh process maps it unread.
    assert.deepEqual(await coldReads(cacheDir), [1, code.size, 0]);
    assert.equal((Deno.statSync(`${file}.verified`).mode ?? 0) & 0o022, 0);
    assert.deepEqual(await coldReads(cacheDir), [1, 0, 1]);
    assert.deepEqual(await coldReads(cacheDir), [1, 0, 1], "a hit keeps the file's ctime");
    // Touched (its ctime moves): read and checked again, then remembered again.
    Deno.utimeSync(file, new Date(), new Date());
    assert.deepEqual(await coldReads(cacheDir), [1, code.size, 0]);
    assert.deepEqual(await coldReads(cacheDir), [1, 0, 1]);
    // A code-image byte changed in place after it was remembered: read again, refused, rebuilt.
    flipByte(file, code.offset + code.size - 5000);
    const refused = await coldChild(cacheDir);
    assert.deepEqual([refused.diskRefused, refused.diskWrites], [1, 1]);
    assert.deepEqual(await coldReads(cacheDir), [1, code.size, 0]);
  },
);
