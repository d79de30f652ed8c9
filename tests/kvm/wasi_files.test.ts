/**
 * WASI stdin and preopened directories, through a real C program built against wasi-libc
 * (tests/wasm/wasi_files.c): stdin sources, file calls on read-only and writable preopens, every
 * escape out of a preopened directory, fd limits, and what restore, snapshots, the module cache
 * and the pool do with stdin and open files.
 */
import assert from "node:assert/strict";
import {
  ArgumentError,
  type WasiOptions,
  WasmSandbox,
  type WasmSandboxOptions,
  WasmSandboxPool,
  type WasmSandboxPoolOptions,
  type WasmSnapshotSandboxOptions,
} from "../../mod.ts";
import { ProtocolError } from "../../src/errors.ts";
import { WasiRuntime } from "../../src/wasm/wasi.ts";
import { fixture } from "../wasm/fixtures.ts";
import { engineTest, openFdCount, WASM_ENGINES } from "./_kvm.ts";

const decoder = new TextDecoder();

interface Run {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * A scratch tree: root/ (the preopen) with file.txt, sub/inner.txt, and symlinks that point
 * inside and outside; outside.txt and outdir/ beside it, which no module may reach.
 */
function tree(): { base: string; root: string; cleanup: () => void } {
  const base = Deno.makeTempDirSync({ prefix: "hl-wasi-" });
  const root = `${base}/root`;
  Deno.mkdirSync(`${root}/sub`, { recursive: true });
  Deno.mkdirSync(`${base}/outdir`);
  Deno.writeTextFileSync(`${root}/file.txt`, "hello file\n");
  Deno.writeTextFileSync(`${root}/sub/inner.txt`, "inner\n");
  Deno.writeTextFileSync(`${base}/outside.txt`, "secret\n");
  Deno.writeTextFileSync(`${base}/outdir/secret.txt`, "secret dir\n");
  Deno.symlinkSync("file.txt", `${root}/good`);
  Deno.symlinkSync("sub", `${root}/gooddir`);
  Deno.symlinkSync("../outside.txt", `${root}/escape`);
  Deno.symlinkSync("../outdir", `${root}/escapedir`);
  Deno.symlinkSync(`${base}/outside.txt`, `${root}/absolute`);
  Deno.symlinkSync("../../outside.txt", `${root}/sub/deep`);
  Deno.symlinkSync("loop2", `${root}/loop1`);
  Deno.symlinkSync("loop1", `${root}/loop2`);
  return { base, root, cleanup: () => Deno.removeSync(base, { recursive: true }) };
}

const ENOTCAPABLE = 76;

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  const create = ((o: WasmSandboxOptions | WasmSnapshotSandboxOptions) =>
    WasmSandbox.create("snapshot" in o ? o : { engine, ...o })) as typeof WasmSandbox.create;
  const createPool = ((o: WasmSandboxPoolOptions) =>
    WasmSandboxPool.create({ engine, ...o })) as typeof WasmSandboxPool.create;
  /** Runs wasi_files with `args` and WASI `options`; collects its output. */
  const run = async (
    args: string[],
    options: WasiOptions = {},
    sizes: { inputSize?: number; outputSize?: number } = {},
  ): Promise<Run> => {
    let stdout = "";
    let stderr = "";
    await using w = await create({
      module: fixture("wasi_files"),
      ...sizes,
      wasi: {
        args: ["wasi_files", ...args],
        stdout: (b) =>
          stdout += decoder.decode(b),
        stderr: (b) =>
          stderr += decoder.decode(b),
        ...options,
      },
    });
    const { exitCode } = await w.runWasi();
    return { exitCode, stdout, stderr };
  };
  test("wasi stdin: bytes, string, stream in small pulls, default empty", async () => {
    const text = "line one\nline two\n";
    for (const stdin of [text, new TextEncoder().encode(text)]) {
      const r = await run(["stdin"], { stdin });
      assert.equal(r.stdout, text);
      assert.equal(r.stderr, `stdin bytes=${text.length}\n`);
    }
    // A stream of uneven chunks read 3 bytes at a time: pulled as the program asks.
    const chunks = ["ab", "cdefg", "", "h", "ijklmnopqrstuvwxyz"];
    let pulled = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        if (pulled === chunks.length) c.close();
        else c.enqueue(new TextEncoder().encode(chunks[pulled++]));
      },
    });
    const s = await run(["stdin", "3"], { stdin: stream });
    assert.equal(s.stdout, "abcdefghijklmnopqrstuvwxyz");
    assert.equal(s.stderr, "stdin bytes=26\n");
    assert.equal((await run(["stdin"])).stderr, "stdin bytes=0\n");
    // Larger than one transfer (1 MiB): several pulls, every byte in order.
    const big = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0x7f);
    const b = await run(["stdin"], { stdin: big });
    assert.equal(b.stderr, `stdin bytes=${big.length}\n`);
    assert.equal(b.stdout, decoder.decode(big));
    // Small VM buffers: transfers shrink to fit them (partial reads and writes), nothing fails.
    const small = await run(["stdin"], { stdin: big }, {
      inputSize: 96 << 10,
      outputSize: 64 << 10,
    });
    assert.equal(small.stderr, `stdin bytes=${big.length}\n`);
    assert.equal(small.stdout, decoder.decode(big));
    await assert.rejects(
      () => create({ module: fixture("wasi_files"), wasi: { stdin: 42 as never } }),
      ArgumentError,
    );
  });

  test("wasi files: read-only preopen: read, list, stat; every change is EROFS", async () => {
    const t = tree();
    try {
      const ro = { preopens: { "/data": t.root } };
      assert.deepEqual(await run(["cat", "/data/file.txt"], ro), {
        exitCode: 0,
        stdout: "hello file\n",
        stderr: "",
      });
      assert.equal((await run(["cat", "/data/good"], ro)).stdout, "hello file\n");
      assert.equal((await run(["cat", "/data/gooddir/inner.txt"], ro)).stdout, "inner\n");
      assert.equal((await run(["cat", "/data/sub/../file.txt"], ro)).stdout, "hello file\n");
      assert.equal(
        (await run(["ls", "/data"], ro)).stdout,
        [
          "d sub",
          "f file.txt",
          "l absolute",
          "l escape",
          "l escapedir",
          "l good",
          "l gooddir",
          "l loop1",
          "l loop2",
        ].join("\n") + "\n",
      );
      assert.equal(
        (await run(["stat", "/data/file.txt"], ro)).stdout,
        "size=11 dir=0 reg=1 lnk=0\n",
      );
      assert.equal(
        (await run(["lstat", "/data/escape"], ro)).stdout,
        "size=14 dir=0 reg=0 lnk=1\n",
      );
      assert.equal((await run(["readlink", "/data/escape"], ro)).stdout, "link=../outside.txt\n");
      assert.equal((await run(["cat", "/data/missing"], ro)).stdout, "fopen: errno=44\n");
      const EROFS = "errno=69";
      assert.match((await run(["write", "/data/file.txt", "x"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["write", "/data/new.txt", "x"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["append", "/data/file.txt", "x"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["mkdir", "/data/d"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["unlink", "/data/file.txt"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["rmdir", "/data/sub"], ro)).stdout, new RegExp(EROFS));
      assert.match(
        (await run(["rename", "/data/file.txt", "/data/f2"], ro)).stdout,
        new RegExp(EROFS),
      );
      assert.match((await run(["seek", "/data/s.bin"], ro)).stdout, new RegExp(EROFS));
      assert.match((await run(["rawopen-write", "file.txt"], ro)).stdout, new RegExp(EROFS));
      assert.equal(Deno.readTextFileSync(`${t.root}/file.txt`), "hello file\n");
      assert.deepEqual(
        [...Deno.readDirSync(t.root)].map((e) => e.name).sort(),
        ["absolute", "escape", "escapedir", "file.txt", "good", "gooddir", "loop1", "loop2", "sub"],
      );
    } finally {
      t.cleanup();
    }
  });

  test(
    "wasi files: writable preopen: create, append, seek, pread/pwrite, mkdir, rename, remove",
    async () => {
      const t = tree();
      try {
        const rw = { preopens: { "/data": { path: t.root, writable: true } } };
        assert.equal((await run(["write", "/data/new.txt", "hi"], rw)).stdout, "wrote 2\n");
        assert.equal((await run(["append", "/data/new.txt", " there"], rw)).stdout, "wrote 6\n");
        assert.equal(Deno.readTextFileSync(`${t.root}/new.txt`), "hi there");
        assert.equal(
          (await run(["seek", "/data/s.bin"], rw)).stdout,
          "tell=11\nread=world\npread=hello World tell=11\nend=9\nsize=5\n",
        );
        assert.equal(Deno.readTextFileSync(`${t.root}/s.bin`), "hello");
        assert.equal((await run(["mkdir", "/data/d"], rw)).stdout, "mkdir: ok\n");
        assert.equal((await run(["mkdir", "/data/d"], rw)).stdout, "mkdir: errno=20\n");
        assert.equal(
          (await run(["rename", "/data/new.txt", "/data/d/moved.txt"], rw)).stdout,
          "rename: ok\n",
        );
        assert.equal(Deno.readTextFileSync(`${t.root}/d/moved.txt`), "hi there");
        assert.equal((await run(["rmdir", "/data/d"], rw)).stdout, "rmdir: errno=55\n");
        assert.equal((await run(["unlink", "/data/d"], rw)).stdout, "unlink: errno=31\n");
        assert.equal((await run(["unlink", "/data/d/moved.txt"], rw)).stdout, "unlink: ok\n");
        assert.equal((await run(["rmdir", "/data/d"], rw)).stdout, "rmdir: ok\n");
        // Unlinking a symlink that points outside removes the link, never its target.
        assert.equal((await run(["unlink", "/data/escape"], rw)).stdout, "unlink: ok\n");
        assert.equal(Deno.readTextFileSync(`${t.base}/outside.txt`), "secret\n");
      } finally {
        t.cleanup();
      }
    },
  );

  test("wasi files: every escape out of a preopened directory is refused", async () => {
    const t = tree();
    try {
      for (const writable of [false, true]) {
        const o = { preopens: { "/data": { path: t.root, writable } } };
        const errno = async (...args: string[]) => {
          const r = await run(args, o);
          return Number(/errno=(\d+)/.exec(r.stdout)?.[1] ?? `-1 (${r.stdout})`);
        };
        // `..` out of the directory, directly and after descending.
        assert.equal(await errno("rawopen", "../outside.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawopen", "sub/../../outside.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawopen", "sub/../sub/../../root/file.txt"), ENOTCAPABLE);
        // Absolute paths, raw and through libc (which finds no preopen for them).
        assert.equal(await errno("rawopen", "/etc/passwd"), ENOTCAPABLE);
        assert.equal(await errno("rawopen", `${t.base}/outside.txt`), ENOTCAPABLE);
        assert.equal(await errno("cat", "/etc/passwd"), ENOTCAPABLE);
        // Symlinks inside that point outside: relative, absolute, a directory, from a subdir.
        assert.equal(await errno("rawopen-follow", "escape"), ENOTCAPABLE);
        assert.equal(await errno("rawopen-follow", "absolute"), ENOTCAPABLE);
        assert.equal(await errno("rawopen-follow", "escapedir/secret.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawopen-follow", "sub/deep"), ENOTCAPABLE);
        assert.equal(await errno("cat", "/data/escape"), ENOTCAPABLE);
        assert.equal(await errno("ls", "/data/escapedir"), ENOTCAPABLE);
        assert.equal(await errno("stat", "/data/escapedir/secret.txt"), ENOTCAPABLE);
        // Not following the last symlink: O_NOFOLLOW semantics (ELOOP), never the target.
        assert.equal(await errno("rawopen", "escape", "0"), 32);
        // A symlink loop.
        assert.equal(await errno("rawopen-follow", "loop1"), 32);
        // Too long: the whole path (guest and host bound it) and one component.
        assert.equal(await errno("rawopen-long", "5000"), 37);
        assert.equal(await errno("rawopen-follow", "y".repeat(300)), 37);
        // A NUL byte: refused, not cut short to "file.txt".
        assert.equal(await errno("rawopen-nul"), 28);
        // Rename, mkdir and unlink that would reach outside.
        assert.equal(await errno("rawrename", "file.txt", "../stolen.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawrename", "../outside.txt", "stolen.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawrename", "file.txt", "escapedir/stolen.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawmkdir", "../made"), ENOTCAPABLE);
        assert.equal(await errno("rawunlink", "../outside.txt"), ENOTCAPABLE);
        assert.equal(await errno("rawunlink", "escapedir/secret.txt"), ENOTCAPABLE);
        // An fd the module never opened.
        assert.equal(await errno("rawread-badfd", "77"), 8);
      }
      // Nothing outside changed.
      assert.equal(Deno.readTextFileSync(`${t.base}/outside.txt`), "secret\n");
      assert.equal(Deno.readTextFileSync(`${t.base}/outdir/secret.txt`), "secret dir\n");
      assert.deepEqual([...Deno.readDirSync(t.base)].map((e) => e.name).sort(), [
        "outdir",
        "outside.txt",
        "root",
      ]);
      assert.equal(Deno.readTextFileSync(`${t.root}/file.txt`), "hello file\n");
    } finally {
      t.cleanup();
    }
  });

  test("wasi files: too many open files is EMFILE; dispose closes them all", async () => {
    const t = tree();
    try {
      const before = openFdCount();
      const r = await run(["openfds", "/data/file.txt"], { preopens: { "/data": t.root } });
      // 128 fds per sandbox, the preopen being one of them.
      assert.equal(r.stdout, "opened=127 errno=33\n");
      assert.equal(openFdCount(), before);
    } finally {
      t.cleanup();
    }
  });

  test("wasi files: bad preopen options are ArgumentErrors before any VM starts", async () => {
    const module = fixture("wasi_files");
    for (
      const preopens of [
        { "/data": "/nonexistent/dir" },
        { "/data": { path: "/tmp", writable: "yes" } },
        { "": "/tmp" },
        { "/data": 42 },
        "oops",
      ]
    ) {
      await assert.rejects(
        () => create({ module, wasi: { preopens: preopens as never } }),
        ArgumentError,
        JSON.stringify(preopens),
      );
    }
  });

  test(
    "wasi state and snapshots: restore closes files and rewinds stdin; preopens are the snapshot's",
    async () => {
      const t = tree();
      try {
        let stdout = "";
        const sink = (b: Uint8Array) => stdout += decoder.decode(b);
        const seed = new Uint8Array(32).fill(9);
        // The pool restores after every run: each run reads the whole stdin again and can open as
        // many files as the first (the previous run's are closed).
        await using pool = await createPool({
          module: fixture("wasi_files"),
          size: 2,
          wasi: {
            args: ["wasi_files", "stdin"],
            stdin: "pooled input\n",
            randomSeed: seed,
            preopens: { "/data": t.root },
            stdout: sink,
            stderr: () => {},
          },
        });
        for (let i = 0; i < 4; i++) {
          assert.deepEqual(await pool.run((w) => w.runWasi()), { exitCode: 0 });
        }
        assert.equal(stdout, "pooled input\n".repeat(4));
        await assert.rejects(
          () =>
            createPool({
              module: fixture("wasi_files"),
              size: 1,
              wasi: { stdin: new ReadableStream() },
            }),
          ArgumentError,
        );

        // A snapshot taken after instantiation carries the preopens; a sandbox from it gets its
        // own stdin, and cannot be given other preopens.
        await using w = await create({
          module: fixture("wasi_files"),
          cache: false,
          wasi: {
            args: ["wasi_files", "openfds", "/data/file.txt"],
            preopens: { "/data": t.root },
            stdout: sink,
          },
        });
        await using snap = await w.snapshot();
        stdout = "";
        await w.runWasi();
        assert.equal(stdout, "opened=127 errno=33\n");
        await w.restore(snap);
        stdout = "";
        await w.runWasi();
        assert.equal(stdout, "opened=127 errno=33\n"); // the first run's 127 files were closed
        await using copy = await create({
          snapshot: snap,
          wasi: { stdout: sink, stdin: "unused" },
        });
        stdout = "";
        await copy.runWasi();
        assert.equal(stdout, "opened=127 errno=33\n");
        await assert.rejects(
          () => create({ snapshot: snap, wasi: { preopens: {} } as never }),
          ArgumentError,
        );

        // The module cache keys on the preopens: another directory is another entry.
        const before = WasmSandbox.cacheStats();
        const other = Deno.makeTempDirSync();
        for (const dir of [t.root, other, t.root]) {
          await (await create({
            module: fixture("wasi_files"),
            wasi: { randomSeed: seed, preopens: { "/data": dir }, stdout: () => {} },
          })).dispose();
        }
        Deno.removeSync(other);
        const after = WasmSandbox.cacheStats();
        assert.equal(after.misses - before.misses, 2);
        assert.equal(after.hits - before.hits, 1);
      } finally {
        t.cleanup();
      }
    },
  );
}

for (const engine of WASM_ENGINES) {
  engineTest(engine)(
    "wasi_io: a malformed request from the runtime guest fails the call with a ProtocolError and poisons",
    async () => {
      const t = tree();
      // The runtime guest is hostile input too: its requests are cut short here, on their way
      // in, as a runtime that breaks the protocol would send them.
      const original = WasiRuntime.prototype.io;
      WasiRuntime.prototype.io = function (op: number, bytes: Uint8Array) {
        return original.call(this, op, bytes.subarray(0, 2));
      };
      try {
        await using w = await WasmSandbox.create({
          engine,
          module: fixture("wasi_files"),
          wasi: {
            args: ["wasi_files", "cat", "/data/file.txt"],
            preopens: { "/data": t.root },
            stdout: () => {},
            stderr: () => {},
          },
        });
        const e = await w.runWasi().then(() => undefined, (e) => e);
        assert.ok(e instanceof ProtocolError, String(e));
        assert.match(e.message, /wasi_io/);
        assert.equal(w.poisoned, true);
      } finally {
        WasiRuntime.prototype.io = original;
        t.cleanup();
      }
    },
  );
}
