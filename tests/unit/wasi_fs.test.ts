/**
 * The host's WASI file layer without a VM: `WasiFiles` and `resolvePath` called directly with
 * the inputs a hostile guest could send, a property test that no resolution ever lands outside
 * the preopen, and `WasiRuntime.io`'s handling of malformed `wasi_io` requests.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ProtocolError } from "../../src/errors.ts";
import { WasiFiles } from "../../src/wasm/wasi_fs.ts";
import {
  checkPreopens,
  Errno,
  errnoOf as hostErrno,
  fail,
  MAX_OPEN,
  resolvePath,
  WasiErrno,
} from "../../src/wasm/wasi_path.ts";
import { WasiRuntime } from "../../src/wasm/wasi.ts";

const utf8 = new TextEncoder();
const RIGHT_READ = 1n << 1n;
const RIGHT_WRITE = 1n << 6n;

function scratch() {
  const base = Deno.realPathSync(Deno.makeTempDirSync({ prefix: "hl-wasi-unit-" }));
  const root = `${base}/root`;
  Deno.mkdirSync(`${root}/a/b`, { recursive: true });
  Deno.mkdirSync(`${base}/out`);
  Deno.writeTextFileSync(`${root}/f`, "inside");
  Deno.writeTextFileSync(`${root}/a/g`, "deeper");
  Deno.writeTextFileSync(`${base}/out/secret`, "secret");
  Deno.symlinkSync("../out", `${root}/up`);
  Deno.symlinkSync("a/b", `${root}/ab`);
  Deno.symlinkSync("..", `${root}/a/parent`);
  Deno.symlinkSync("../..", `${root}/a/grand`);
  Deno.symlinkSync("/", `${root}/slash`);
  Deno.symlinkSync("self", `${root}/self`);
  Deno.symlinkSync("nowhere", `${root}/a/dangling`);
  return { base, root, cleanup: () => Deno.removeSync(base, { recursive: true }) };
}

/** The bytes of `parts` back to back (a batch of wasi_io records). */
function join(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

/** The errno a wasi_io reply starts with. */
function errno(reply: Uint8Array): number {
  return new DataView(reply.buffer).getUint32(0, true);
}

function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof WasiErrno) return e.errno;
    throw e;
  }
  return 0;
}

Deno.test("wasi files (host): resolution stays below the directory fd", () => {
  const t = scratch();
  try {
    const dir = { root: { host: t.root, writable: false }, rel: [] as string[] };
    const r = (p: string, follow = true) => resolvePath(dir, utf8.encode(p), follow);
    assert.equal(r("f").host, `${t.root}/f`);
    assert.equal(r("a/b/../g").host, `${t.root}/a/g`);
    assert.equal(r("ab/../g").host, `${t.root}/a/g`); // the link's `..` is a/b's parent
    assert.equal(r("a/parent/f").host, `${t.root}/f`);
    assert.equal(r(".").host, t.root);
    assert.equal(r("a//b/./").host, `${t.root}/a/b`);
    for (
      const p of ["..", "../root/f", "a/../..", "up/secret", "a/grand/out/secret", "slash/etc"]
    ) {
      assert.equal(errnoOf(() => r(p)), Errno.NOTCAPABLE, p);
    }
    assert.equal(errnoOf(() => r("/etc/passwd")), Errno.NOTCAPABLE);
    assert.equal(errnoOf(() => r("self")), Errno.LOOP);
    assert.equal(errnoOf(() => r("a/dangling/x")), Errno.NOENT);
    assert.equal(errnoOf(() => r("f/x")), Errno.NOTDIR);
    assert.equal(errnoOf(() => r("f/")), Errno.NOTDIR);
    assert.equal(errnoOf(() => r("missing/x")), Errno.NOENT);
    assert.equal(errnoOf(() => r("")), Errno.NOENT);
    assert.equal(errnoOf(() => r("a\0b")), Errno.INVAL);
    assert.equal(errnoOf(() => r("x".repeat(256))), Errno.NAMETOOLONG);
    assert.equal(errnoOf(() => r("a/".repeat(2049))), Errno.NAMETOOLONG);
    assert.equal(
      errnoOf(() => resolvePath(dir, new Uint8Array([0x66, 0xff]), true)),
      Errno.ILSEQ,
    );
    // Not following the last link: the link itself, whatever it points at.
    assert.equal(r("up", false).host, `${t.root}/up`);
    assert.equal(r("slash", false).info?.isSymlink, true);
    // Below a subdirectory fd, `..` may not climb above it even inside the preopen.
    const sub = { root: dir.root, rel: ["a"] };
    assert.equal(resolvePath(sub, utf8.encode("g"), true).host, `${t.root}/a/g`);
    assert.equal(errnoOf(() => resolvePath(sub, utf8.encode("../f"), true)), Errno.NOTCAPABLE);
    assert.equal(errnoOf(() => resolvePath(sub, utf8.encode("parent/f"), true)), Errno.NOTCAPABLE);
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi files (host): no path of links and dots resolves outside (property)", () => {
  const t = scratch();
  try {
    const dir = { root: { host: t.root, writable: false }, rel: [] as string[] };
    const part = fc.constantFrom(
      "..",
      ".",
      "",
      "a",
      "b",
      "f",
      "g",
      "up",
      "ab",
      "parent",
      "grand",
      "slash",
      "self",
      "out",
      "secret",
      "root",
      "dangling",
    );
    fc.assert(
      fc.property(
        fc.array(part, { maxLength: 8 }),
        fc.boolean(),
        fc.boolean(),
        (parts, abs, follow) => {
          const path = (abs ? "/" : "") + parts.join("/");
          let resolved;
          try {
            resolved = resolvePath(dir, utf8.encode(path), follow);
          } catch (e) {
            if (e instanceof WasiErrno) return;
            throw e;
          }
          // Lexically inside, and (when it exists and is followed) really inside.
          assert.ok(resolved.host === t.root || resolved.host.startsWith(`${t.root}/`), path);
          if (resolved.info && !resolved.info.isSymlink) {
            const real = Deno.realPathSync(resolved.host);
            assert.ok(real === t.root || real.startsWith(`${t.root}/`), `${path} -> ${real}`);
          }
        },
      ),
      { numRuns: 3000 },
    );
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi files (host): open, read-only roots, fd limits, bad fds", () => {
  const t = scratch();
  try {
    const files = new WasiFiles(
      checkPreopens({ "/ro": t.root, "/rw": { path: `${t.base}/out`, writable: true } }),
    );
    const open = (dir: number, p: string, rights = RIGHT_READ, oflags = 0) =>
      files.open(dir, 1, utf8.encode(p), oflags, rights, 0);
    const fd = open(3, "f");
    assert.equal(new TextDecoder().decode(files.read(fd, 100)), "inside");
    assert.equal(files.read(fd, 100).length, 0); // end of file
    assert.equal(files.seek(fd, 2n, 0), 2n);
    assert.equal(new TextDecoder().decode(files.read(fd, 2)), "si");
    assert.equal(new TextDecoder().decode(files.read(fd, 3, 0n)), "ins"); // pread
    assert.equal(files.seek(fd, 0n, 1), 4n); // pread left the position alone
    assert.equal(errnoOf(() => files.write(fd, utf8.encode("x"))), Errno.BADF); // read-only fd
    assert.equal(errnoOf(() => open(3, "f", RIGHT_WRITE)), Errno.ROFS);
    assert.equal(errnoOf(() => open(3, "new", RIGHT_READ, 1)), Errno.ROFS); // O_CREAT
    assert.equal(errnoOf(() => files.mkdir(3, utf8.encode("d"))), Errno.ROFS);
    assert.equal(errnoOf(() => files.unlink(3, utf8.encode("f"))), Errno.ROFS);
    assert.equal(
      errnoOf(() => files.rename(4, utf8.encode("secret"), 3, utf8.encode("s"))),
      Errno.ROFS,
    );
    const w = open(4, "made", RIGHT_READ | RIGHT_WRITE, 1);
    assert.equal(files.write(w, utf8.encode("abc")), 3);
    assert.equal(Deno.readTextFileSync(`${t.base}/out/made`), "abc");
    assert.equal(errnoOf(() => open(4, "made", RIGHT_READ, 1 | 4)), Errno.EXIST); // O_EXCL
    assert.equal(errnoOf(() => open(3, "a", RIGHT_WRITE)), Errno.ISDIR);
    assert.equal(errnoOf(() => open(3, "f", RIGHT_READ, 2)), Errno.NOTDIR); // O_DIRECTORY
    assert.equal(errnoOf(() => files.read(3, 10)), Errno.ISDIR);
    assert.equal(errnoOf(() => files.read(99, 10)), Errno.BADF);
    assert.equal(errnoOf(() => files.closeFd(99)), Errno.BADF);
    assert.equal(errnoOf(() => open(fd, "x")), Errno.NOTDIR); // a file is no directory fd
    // Renames never cross preopens, and never out of one.
    assert.equal(
      errnoOf(() => files.rename(4, utf8.encode("made"), 4, utf8.encode("../x"))),
      Errno.NOTCAPABLE,
    );
    // The fd table is bounded: 2 preopens + 2 open now; then EMFILE, and nothing leaks.
    const opened: number[] = [];
    let errno = 0;
    while (errno === 0 && opened.length < 1000) {
      errno = errnoOf(() => opened.push(open(3, "f")));
    }
    assert.equal(errno, Errno.MFILE);
    assert.equal(files.openCount, MAX_OPEN);
    files.reset(); // restore: only the preopens remain
    assert.equal(files.openCount, 2);
    assert.equal(errnoOf(() => files.read(fd, 1)), Errno.BADF);
    files.close();
    assert.equal(files.openCount, 0);
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi_io: malformed requests are ProtocolErrors; sizes are capped", async () => {
  const t = scratch();
  try {
    const rt = new WasiRuntime(
      { preopens: { "/d": t.root } as never, stdin: "x".repeat(3 << 20) },
      "m.wasm",
      checkPreopens({ "/d": t.root }),
    );
    const req = (...parts: (number | bigint | Uint8Array)[]) => {
      const out: number[] = [];
      for (const p of parts) {
        if (p instanceof Uint8Array) {
          out.push(...new Uint8Array(new Uint32Array([p.length]).buffer), ...p);
        } else if (typeof p === "bigint") {
          out.push(...new Uint8Array(new BigUint64Array([p]).buffer));
        } else out.push(...new Uint8Array(new Uint32Array([p]).buffer));
      }
      return new Uint8Array(out);
    };
    assert.throws(() => rt.io(1, new Uint8Array(3)), ProtocolError); // truncated
    assert.throws(() => rt.io(1, req(0, 10, 7)), ProtocolError); // trailing bytes
    assert.throws(() => rt.io(99, req(0)), ProtocolError); // unknown op
    assert.throws(() => rt.io(15, req(3, 1, 0xffffffff)), ProtocolError); // blob beyond the end
    // A read of 4 GiB gets at most 1 MiB.
    const big = await rt.io(1, req(0, 0xffffffff));
    assert.equal(errno(big), 0);
    assert.equal(big.length - 4, 1 << 20);
    // File errors are errnos, not exceptions.
    assert.equal(errno(await rt.io(1, req(42, 10))), Errno.BADF);
    assert.equal(
      errno(await rt.io(15, req(3, 1, utf8.encode("../x"), 0, 2n, 0n, 0))),
      Errno.NOTCAPABLE,
    );
    const opened = await rt.io(15, req(3, 1, utf8.encode("f"), 0, 2n, 0n, 0));
    assert.equal(errno(opened), 0);
    assert.equal(rt.openFiles, 2);
    rt.close();
    assert.equal(rt.openFiles, 0);
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi_io output (op 24): records reach the sinks in order; malformed ones deliver nothing", () => {
  const seen: string[] = [];
  const dec = new TextDecoder();
  let broken = false;
  const rt = new WasiRuntime(
    {
      stdout: (b) => seen.push(`out:${dec.decode(b)}`),
      stderr: (b) => {
        if (broken) throw new Error("quota");
        seen.push(`err:${dec.decode(b)}`);
      },
    },
    "m.wasm",
    [],
  );
  const record = (fd: number, text: string, len?: number) => {
    const data = utf8.encode(text);
    const out = new Uint8Array(8 + data.length);
    const v = new DataView(out.buffer);
    v.setUint32(0, fd, true);
    v.setUint32(4, len ?? data.length, true);
    out.set(data, 8);
    return out;
  };
  assert.equal(
    errno(rt.io(24, join(record(1, "a"), record(2, "b"), record(1, "c"))) as Uint8Array),
    0,
  );
  assert.deepEqual(seen, ["out:a", "err:b", "out:c"]);
  assert.equal(errno(rt.io(24, new Uint8Array(0)) as Uint8Array), 0); // nothing: fine
  seen.length = 0;
  // Checked whole before any byte is delivered: fd 3, a length past the end, a cut header.
  assert.throws(() => rt.io(24, join(record(1, "x"), record(3, "y"))), ProtocolError);
  assert.throws(() => rt.io(24, join(record(1, "x"), record(2, "y", 0xffffffff))), ProtocolError);
  assert.throws(() => rt.io(24, join(record(1, "x"), new Uint8Array(5))), ProtocolError);
  assert.deepEqual(seen, []);
  // A sink that throws is EIO for the guest, not an exception; the records before it arrived.
  broken = true;
  assert.equal(errno(rt.io(24, join(record(1, "p"), record(2, "q"))) as Uint8Array), 29);
  assert.deepEqual(seen, ["out:p"]);
  rt.close();
});

Deno.test("wasi_io output-then (op 28): the output reaches the sinks, then the request runs, refused or not", () => {
  const t = scratch();
  try {
    const seen: string[] = [];
    const dec = new TextDecoder();
    let broken = false;
    const rt = new WasiRuntime(
      {
        stdout: (b) => {
          if (broken) throw new Error("quota");
          // What the host sees when the output arrives: the request has not run yet.
          seen.push(`out:${dec.decode(b)} (dir ${existsDir(`${t.root}/made`)})`);
        },
      },
      "m.wasm",
      checkPreopens({ "/d": { path: t.root, writable: true } }),
    );
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const blob = (b: Uint8Array) => join(u32(b.length), b);
    const output = (text: string) => join(u32(1), blob(utf8.encode(text)));
    const mkdir = (name: string) => join(u32(18), u32(3), blob(utf8.encode(name)));
    const got = rt.io(28, join(blob(output("a")), mkdir("made"))) as Uint8Array;
    // errno 0, refused 0, then the mkdir's reply (errno 0, no payload).
    assert.deepEqual([...got], [0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(seen, ["out:a (dir false)"]);
    assert.ok(existsDir(`${t.root}/made`));
    // The request's errno is in its own reply; the output was delivered all the same.
    const again = rt.io(28, join(blob(output("b")), mkdir("made"))) as Uint8Array;
    assert.deepEqual([errno(again), again[4], errno(again.slice(5))], [0, 0, Errno.EXIST]);
    assert.deepEqual(seen, ["out:a (dir false)", "out:b (dir true)"]);
    // A sink that throws: refused 1, and the request still runs.
    broken = true;
    const refused = rt.io(28, join(blob(output("c")), mkdir("other"))) as Uint8Array;
    assert.deepEqual([errno(refused), refused[4], errno(refused.slice(5))], [0, 1, 0]);
    assert.ok(existsDir(`${t.root}/other`));
    broken = false;
    // Carried in a batch, behind deferred requests: served in order (here none deferred).
    const batched = rt.io(
      26,
      join(u32(0), u32(28), blob(output("d")), mkdir("third")),
    ) as Uint8Array;
    assert.deepEqual([...batched.subarray(0, 9)], [0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.ok(existsDir(`${t.root}/third`));
    // Malformed: a wrapper or op 0 carried, bad output records, a cut blob. Nothing is
    // delivered and the request does not run.
    seen.length = 0;
    for (const inner of [0, 24, 25, 26, 28]) {
      assert.throws(
        () => rt.io(28, join(blob(output("x")), u32(inner), u32(3), blob(utf8.encode("no")))),
        ProtocolError,
      );
    }
    assert.throws(
      () => rt.io(28, join(blob(join(u32(3), blob(utf8.encode("x")))), mkdir("bad"))),
      ProtocolError,
    );
    assert.throws(() => rt.io(28, join(u32(100), output("x"))), ProtocolError);
    assert.deepEqual(seen, []);
    assert.ok(!existsDir(`${t.root}/no`) && !existsDir(`${t.root}/bad`));
    rt.close();
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi_io set-times (ops 10, 17): given, now, or kept as they were", () => {
  const t = scratch();
  try {
    const rt = new WasiRuntime(
      {},
      "m.wasm",
      checkPreopens({ "/d": { path: t.root, writable: true } }),
    );
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const u64 = (v: bigint) => new Uint8Array(new BigUint64Array([v]).buffer);
    const path = utf8.encode("f");
    const at = (ms: number) => BigInt(ms) * 1_000_000n;
    const pathSetTimes = (atim: bigint, mtim: bigint, fst: number) =>
      errno(
        rt.io(
          17,
          join(u32(3), u32(0), u32(path.length), path, u64(atim), u64(mtim), u32(fst)),
        ) as Uint8Array,
      );
    const times = () => {
      const info = Deno.lstatSync(`${t.root}/f`);
      return [info.atime!.getTime(), info.mtime!.getTime()];
    };
    const A = Date.UTC(2001, 0, 1);
    const M = Date.UTC(2002, 0, 1);
    // Both given (ATIM | MTIM).
    assert.equal(pathSetTimes(at(A), at(M), 1 | 4), 0);
    assert.deepEqual(times(), [A, M]);
    // Only mtime given: atime kept.
    assert.equal(pathSetTimes(0n, at(M + 5000), 4), 0);
    assert.deepEqual(times(), [A, M + 5000]);
    // Only atime now: mtime kept.
    const before = Date.now();
    assert.equal(pathSetTimes(0n, 0n, 2), 0);
    assert.ok(times()[0] >= before - 1000);
    assert.equal(times()[1], M + 5000);
    // Both now (ATIM_NOW | MTIM_NOW: `utimes(path, NULL)`).
    assert.equal(pathSetTimes(0n, 0n, 2 | 8), 0);
    assert.ok(times().every((ms) => ms >= before - 1000));
    // A time both given and "now", or unknown bits: EINVAL; a missing path: ENOENT.
    assert.equal(pathSetTimes(0n, 0n, 1 | 2), Errno.INVAL);
    assert.equal(pathSetTimes(0n, 0n, 16), Errno.INVAL);
    Deno.removeSync(`${t.root}/f`);
    assert.equal(pathSetTimes(0n, 0n, 2 | 8), Errno.NOENT);
    rt.close();
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi errno of a host error: by its code, own codes only; thrown errnos are reused", () => {
  assert.equal(hostErrno(Object.assign(new Error("x"), { code: "ENOENT" })), Errno.NOENT);
  assert.equal(hostErrno(Object.assign(new Error("x"), { code: "EWHATEVER" })), Errno.IO);
  // An inherited property name is not a code (it mapped to a function, then errno 0: success).
  assert.equal(hostErrno(Object.assign(new Error("x"), { code: "toString" })), Errno.IO);
  assert.equal(hostErrno(Object.assign(new Error("x"), { code: "constructor" })), Errno.IO);
  const first = errnoOf(() => fail(Errno.NOENT));
  assert.equal(first, Errno.NOENT);
  let a: unknown, b: unknown;
  try {
    fail(Errno.EXIST);
  } catch (e) {
    a = e;
  }
  try {
    fail(Errno.EXIST);
  } catch (e) {
    b = e;
  }
  assert.ok(a instanceof WasiErrno && a === b && a.errno === Errno.EXIST);
});

/** Whether a directory is at `path`. */
function existsDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

Deno.test("wasi_io seek-then (op 25): seeks, then serves the request; its errors are errnos", () => {
  const t = scratch();
  try {
    Deno.writeFileSync(`${t.root}/f`, utf8.encode("0123456789"));
    const rt = new WasiRuntime(
      { preopens: { "/d": { path: t.root, writable: true } } as never },
      "m.wasm",
      checkPreopens({ "/d": { path: t.root, writable: true } }),
    );
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const u64 = (v: bigint) => new Uint8Array(new BigUint64Array([v]).buffer);
    const path = utf8.encode("f");
    const opened = rt.io(
      15,
      join(u32(3), u32(1), u32(path.length), path, u32(0), u64(2n), u64(0n), u32(0)),
    ) as Uint8Array;
    assert.equal(errno(opened), 0);
    const fd = new DataView(opened.buffer).getUint32(4, true);
    // Seek to 6, then read 3 bytes: "678".
    const read = rt.io(25, join(u32(fd), u64(6n), u32(1), u32(fd), u32(3))) as Uint8Array;
    assert.equal(errno(read), 0);
    assert.equal(new TextDecoder().decode(read.subarray(4)), "678");
    // A seek that fails (a negative offset; an fd that is not open) answers its errno, and the
    // request after it does not run.
    assert.equal(
      errno(
        rt.io(
          25,
          join(u32(fd), u64(-1n & 0xffffffffffffffffn), u32(1), u32(fd), u32(3)),
        ) as Uint8Array,
      ),
      Errno.INVAL,
    );
    assert.equal(
      errno(rt.io(25, join(u32(42), u64(0n), u32(13), u32(fd))) as Uint8Array),
      Errno.BADF,
    );
    assert.equal(rt.openFiles, 2); // the close after the failed seek did not run
    // Malformed: nested, cut short.
    assert.throws(
      () => rt.io(25, join(u32(fd), u64(0n), u32(25), u32(fd), u64(0n), u32(1))),
      ProtocolError,
    );
    assert.throws(() => rt.io(25, join(u32(fd), u64(0n))), ProtocolError);
    rt.close();
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi_io batch (op 26): deferred writes, seeks and closes run in order before the last request; the first failure stops it", () => {
  const t = scratch();
  try {
    const rt = new WasiRuntime(
      { preopens: { "/d": { path: t.root, writable: true } } as never },
      "m.wasm",
      checkPreopens({ "/d": { path: t.root, writable: true } }),
    );
    const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
    const u64 = (v: bigint) => new Uint8Array(new BigUint64Array([v]).buffer);
    const blob = (b: Uint8Array) => join(u32(b.length), b);
    const record = (op: number, req: Uint8Array) => join(u32(op), blob(req));
    const path = utf8.encode("new");
    // O_CREAT, FD_READ | FD_WRITE: the reply carries the new fd's fdstat (a regular file, 4).
    const opened = rt.io(
      15,
      join(u32(3), u32(1), u32(path.length), path, u32(1), u64(0x42n), u64(0n), u32(0)),
    ) as Uint8Array;
    const view = new DataView(opened.buffer);
    assert.equal(errno(opened), 0);
    assert.equal(opened.length, 4 + 4 + 24);
    const fd = view.getUint32(4, true);
    assert.equal(opened[8], 4);
    // write "hello", seek to 1, write "EL", then read 5 at 0: "hELlo".
    const batch = join(
      u32(3),
      record(3, join(u32(fd), blob(utf8.encode("hello")))),
      record(5, join(u32(fd), u64(1n), new Uint8Array([0]))),
      record(3, join(u32(fd), blob(utf8.encode("EL")))),
      u32(2),
      u32(fd),
      u32(5),
      u64(0n),
    );
    const got = rt.io(26, batch) as Uint8Array;
    assert.equal(errno(got), 0);
    const g = new DataView(got.buffer);
    assert.equal(g.getUint32(4, true), 3); // all three served
    assert.equal(g.getUint32(8, true), 0); // the read's errno
    assert.equal(new TextDecoder().decode(got.subarray(12)), "hELlo");
    // A deferred request that fails: served = its index, then its errno; nothing after it runs.
    const failed = rt.io(
      26,
      join(u32(2), record(13, u32(fd)), record(3, join(u32(fd), blob(utf8.encode("x")))), u32(0)),
    ) as Uint8Array;
    const f = new DataView(failed.buffer);
    assert.deepEqual([errno(failed), f.getUint32(4, true), f.getUint32(8, true)], [
      0,
      1,
      Errno.BADF,
    ]);
    assert.equal(failed.length, 12);
    assert.equal(Deno.readTextFileSync(`${t.root}/new`), "hELlo");
    // Op 0 last: nothing more; an empty batch is allowed.
    assert.deepEqual([...(rt.io(26, join(u32(0), u32(0))) as Uint8Array)], [
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
      0,
    ]);
    // Malformed: an op that may not wait (a read), nested, cut short, bytes after op 0.
    assert.throws(
      () => rt.io(26, join(u32(1), record(1, join(u32(fd), u32(1))), u32(0))),
      ProtocolError,
    );
    assert.throws(() => rt.io(26, join(u32(0), u32(26), u32(0), u32(0))), ProtocolError);
    assert.throws(() => rt.io(26, join(u32(1), u32(3), u32(100))), ProtocolError);
    assert.throws(() => rt.io(26, join(u32(0), u32(0), u32(1))), ProtocolError);
    rt.close();
  } finally {
    t.cleanup();
  }
});

Deno.test("wasi_io read-stdin (op 27): the bytes after a flag that says whether stdin has ended", async () => {
  const u32 = (v: number) => new Uint8Array(new Uint32Array([v]).buffer);
  const text = (r: Uint8Array) => [errno(r), r[4], new TextDecoder().decode(r.subarray(5))];
  const bytes = new WasiRuntime({ stdin: "abc" }, "m.wasm", checkPreopens({}));
  assert.deepEqual(text(bytes.io(27, u32(2)) as Uint8Array), [0, 0, "ab"]);
  assert.deepEqual(text(bytes.io(27, u32(5)) as Uint8Array), [0, 1, "c"]);
  assert.deepEqual(text(bytes.io(27, u32(5)) as Uint8Array), [0, 1, ""]);
  bytes.close();
  // Bytes given back at the end of a call (op 23) come again, the flag with the last of them.
  const back = new WasiRuntime({ stdin: "abc" }, "m.wasm", checkPreopens({}));
  assert.deepEqual(text(back.io(27, u32(5)) as Uint8Array), [0, 1, "abc"]);
  back.io(23, join(u32(0), u32(2)));
  assert.deepEqual(text(back.io(27, u32(1)) as Uint8Array), [0, 0, "b"]);
  assert.deepEqual(text(back.io(27, u32(5)) as Uint8Array), [0, 1, "c"]);
  back.close();
  // A stream's last chunk is not known to be the last: its end comes with the next read.
  const stream = new WasiRuntime(
    { stdin: ReadableStream.from([utf8.encode("xy")]) },
    "m.wasm",
    checkPreopens({}),
  );
  assert.deepEqual(text(await stream.io(27, u32(8))), [0, 0, "xy"]);
  assert.deepEqual(text(await stream.io(27, u32(8))), [0, 1, ""]);
  stream.close();
  assert.throws(() => stream.io(27, join(u32(1), u32(2))), ProtocolError);
});
