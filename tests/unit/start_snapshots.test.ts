// The start snapshots on disk are bounded: past MAX_START_SNAPSHOTS the least recently used files
// go, and nothing else in the directory is touched (src/start_snapshots.ts).
import assert from "node:assert/strict";
import {
  evictOldest,
  knownModuleDigest,
  MAX_PY_START_SNAPSHOTS,
  MAX_START_SNAPSHOTS,
  rememberModuleDigest,
} from "../../src/start_snapshots.ts";

Deno.test("start snapshots on disk: the least recently used beyond the bound are removed", () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-start-evict-" });
  try {
    const n = MAX_START_SNAPSHOTS + 3;
    for (let i = 0; i < n; i++) {
      const path = `${dir}/start-${String(i).padStart(2, "0")}.hlsnap`;
      Deno.writeFileSync(path, new Uint8Array(1));
      const t = new Date(1_700_000_000_000 + i * 1000); // file i used at second i
      Deno.utimeSync(path, t, t);
    }
    Deno.writeFileSync(`${dir}/0-artifact.hlwa`, new Uint8Array(1));
    Deno.writeFileSync(`${dir}/start-odd.tmp`, new Uint8Array(1));
    evictOldest(dir);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    const kept = Array.from(
      { length: MAX_START_SNAPSHOTS },
      (_, i) => `start-${String(i + 3).padStart(2, "0")}.hlsnap`,
    );
    assert.deepEqual(left, ["0-artifact.hlwa", ...kept, "start-odd.tmp"].sort());
    evictOldest(dir); // at the bound: nothing more goes
    assert.equal([...Deno.readDirSync(dir)].length, MAX_START_SNAPSHOTS + 2);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("start snapshots on disk: an evicted start file takes its code-image memo along", () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-start-memo-" });
  try {
    const n = MAX_START_SNAPSHOTS + 3;
    const name = (i: number) => `start-${String(i).padStart(2, "0")}.hlsnap`;
    for (let i = 0; i < n; i++) {
      const path = `${dir}/${name(i)}`;
      Deno.writeFileSync(path, new Uint8Array(1));
      Deno.writeTextFileSync(`${path}.verified`, "v1 1 2 3 4 5\n");
      const t = new Date(1_700_000_000_000 + i * 1000); // file i used at second i
      Deno.utimeSync(path, t, t);
      // The memos were written in the other order: the oldest file's memo is the newest.
      const m = new Date(1_700_000_000_000 + (n - i) * 1000);
      Deno.utimeSync(`${path}.verified`, m, m);
    }
    evictOldest(dir);
    const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    const kept = Array.from({ length: MAX_START_SNAPSHOTS }, (_, i) => name(i + 3));
    assert.deepEqual(left, [...kept, ...kept.map((k) => `${k}.verified`)].sort());
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("start snapshots on disk: bounded in bytes too, the newest always kept", () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-start-bytes-" });
  try {
    for (let i = 0; i < 4; i++) {
      const path = `${dir}/start-${i}.hlsnap`;
      Deno.writeFileSync(path, new Uint8Array(100));
      const t = new Date(1_700_000_000_000 + i * 1000);
      Deno.utimeSync(path, t, t);
    }
    evictOldest(dir, 250); // room for two of the four
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "start-2.hlsnap",
      "start-3.hlsnap",
    ]);
    evictOldest(dir, 50); // not even one fits: the newest stays
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["start-3.hlsnap"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("start snapshots on disk: Python's (pystart-) have their own bounds, apart from the runtime layer's", () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-start-py-" });
  try {
    const write = (name: string, bytes: number, second: number) => {
      Deno.writeFileSync(`${dir}/${name}`, new Uint8Array(bytes));
      const t = new Date(1_700_000_000_000 + second * 1000);
      Deno.utimeSync(`${dir}/${name}`, t, t);
    };
    // One large Python state (older) and two small JavaScript ones (newer): a JavaScript budget
    // of 250 bytes keeps both of its own and leaves the Python file alone.
    write("pystart-big.hlsnap", 400, 0);
    write("start-a.hlsnap", 100, 1);
    write("start-b.hlsnap", 100, 2);
    evictOldest(dir, 250, 1000);
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name).sort(), [
      "pystart-big.hlsnap",
      "start-a.hlsnap",
      "start-b.hlsnap",
    ]);
    // Python's own bounds: bytes (the newest stays) and count.
    write("pystart-new.hlsnap", 400, 3);
    evictOldest(dir, 250, 500);
    assert.ok(!Deno.readDirSync(dir).some((e) => e.name === "pystart-big.hlsnap"));
    assert.ok([...Deno.readDirSync(dir)].some((e) => e.name === "pystart-new.hlsnap"));
    for (let i = 0; i < MAX_PY_START_SNAPSHOTS + 2; i++) write(`pystart-${i}.hlsnap`, 1, 10 + i);
    evictOldest(dir, 250, 1 << 30);
    const py = [...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("pystart-"));
    assert.equal(py.length, MAX_PY_START_SNAPSHOTS);
    assert.equal([...Deno.readDirSync(dir)].filter((e) => e.name.startsWith("start-")).length, 2);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("module digests on disk: found by the file's identity, lost when the file changes", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-digest-" });
  const before = Deno.env.get("HL_WASM_CACHE_DIR");
  Deno.env.set("HL_WASM_CACHE_DIR", `${dir}/cache`);
  try {
    const module = `${dir}/m.wasm`;
    Deno.writeFileSync(module, new Uint8Array([0, 97, 115, 109]));
    const digest = "ab".repeat(32);
    assert.equal(await knownModuleDigest(module), undefined);
    await rememberModuleDigest(module, digest);
    assert.equal(await knownModuleDigest(module), digest);
    assert.equal(await knownModuleDigest(new Uint8Array(4)), undefined, "bytes have no identity");
    // Rewritten with the same size: the mtime (ms) moves, so the memo no longer applies.
    await new Promise((r) => setTimeout(r, 20));
    Deno.writeFileSync(module, new Uint8Array([1, 97, 115, 109]));
    assert.equal(await knownModuleDigest(module), undefined);
    // A memo file that is not a digest is ignored.
    await rememberModuleDigest(module, digest);
    for (const e of Deno.readDirSync(`${dir}/cache`)) {
      if (e.name.endsWith(".digest")) {
        Deno.writeTextFileSync(`${dir}/cache/${e.name}`, "not a digest");
      }
    }
    assert.equal(await knownModuleDigest(module), undefined);
  } finally {
    if (before === undefined) Deno.env.delete("HL_WASM_CACHE_DIR");
    else Deno.env.set("HL_WASM_CACHE_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("module digests on disk: only a private memo of exactly 64 hex digits is read", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-digest-memo-" });
  const before = Deno.env.get("HL_WASM_CACHE_DIR");
  Deno.env.set("HL_WASM_CACHE_DIR", `${dir}/cache`);
  try {
    const module = `${dir}/m.wasm`;
    Deno.writeFileSync(module, new Uint8Array([0, 97, 115, 109]));
    const digest = "cd".repeat(32);
    await rememberModuleDigest(module, digest);
    const memo = [...Deno.readDirSync(`${dir}/cache`)].find((e) => e.name.endsWith(".digest"));
    assert.ok(memo);
    const path = `${dir}/cache/${memo.name}`;
    assert.equal(await knownModuleDigest(module), digest);
    const cases: [string, () => void][] = [
      ["64 bytes, not hex", () => Deno.writeTextFileSync(path, "zz".repeat(32))],
      ["upper-case hex", () => Deno.writeTextFileSync(path, "CD".repeat(32))],
      ["65 bytes", () => Deno.writeTextFileSync(path, `${digest}\n`)],
      ["63 bytes", () => Deno.writeTextFileSync(path, digest.slice(1))],
      ["64 bytes, not ASCII", () => Deno.writeFileSync(path, new Uint8Array(64).fill(0xe9))],
      ["writable by the group", () => {
        Deno.writeTextFileSync(path, digest);
        Deno.chmodSync(path, 0o620);
      }],
      ["writable by others", () => {
        Deno.writeTextFileSync(path, digest);
        Deno.chmodSync(path, 0o602);
      }],
    ];
    for (const [what, make] of cases) {
      Deno.removeSync(path);
      make();
      assert.equal(await knownModuleDigest(module), undefined, what);
    }
    // Private and exact again: read.
    Deno.removeSync(path);
    Deno.writeTextFileSync(path, digest, { mode: 0o600 });
    Deno.chmodSync(path, 0o600);
    assert.equal(await knownModuleDigest(module), digest);
  } finally {
    if (before === undefined) Deno.env.delete("HL_WASM_CACHE_DIR");
    else Deno.env.set("HL_WASM_CACHE_DIR", before);
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("module digests on disk: a memo that is not a regular file is a miss, not a hang", async () => {
  const dir = Deno.makeTempDirSync({ prefix: "hl-digest-fifo-" });
  try {
    const module = `${dir}/m.wasm`;
    Deno.writeFileSync(module, new Uint8Array([0, 97, 115, 109]));
    const env = { HL_WASM_CACHE_DIR: `${dir}/cache` };
    const lib = new URL("../../src/start_snapshots.ts", import.meta.url).href;
    const run = async (code: string) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", `import * as s from ${JSON.stringify(lib)}; ${code}`],
        env,
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(15_000),
      }).output();
      return { code: out.code, text: new TextDecoder().decode(out.stdout).trim() };
    };
    const m = JSON.stringify(module);
    assert.equal((await run(`await s.rememberModuleDigest(${m}, "ab".repeat(32));`)).code, 0);
    // The memo becomes a FIFO: a synchronous read of it would wait forever for a writer.
    for (const e of Deno.readDirSync(`${dir}/cache`)) {
      if (!e.name.endsWith(".digest")) continue;
      Deno.removeSync(`${dir}/cache/${e.name}`);
      const made = await new Deno.Command("mkfifo", {
        args: ["-m", "600", `${dir}/cache/${e.name}`],
      }).output();
      assert.equal(made.code, 0);
    }
    const r = await run(`console.log(String(await s.knownModuleDigest(${m})));`);
    assert.deepEqual(r, { code: 0, text: "undefined" });
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});
