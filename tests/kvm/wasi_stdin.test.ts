/**
 * Stdin crosses in blocks (issue 26 item 6): the guest's WASI layer reads ahead (64 KiB when the
 * module asks for less) and gives back, at the end of each call, what the module did not read.
 * Counted in VM exits, not timed; the semantics kept: every byte in order, end of input, reads
 * of 0 bytes, an interactive stream answered with what it has, and restore's rewind.
 */
import assert from "node:assert/strict";
import { WasmSandbox, type WasmSandboxOptions } from "../../mod.ts";
import { fixture } from "../wasm/fixtures.ts";
import { engineTest, WASM_ENGINES } from "./_kvm.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** The `count` command's checksum of `bytes` (unsigned long is 32 bits on wasm32). */
function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (Math.imul(sum, 31) + b) >>> 0;
  return sum;
}

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);
  const create = (o: WasmSandboxOptions) => WasmSandbox.create({ engine, cache: false, ...o });

  /** Runs `wasi_files count` on `stdin`: its output and the VM exits of the run. */
  const count = async (stdin: Uint8Array) => {
    let stdout = "";
    await using w = await create({
      module: fixture("wasi_files"),
      wasi: { args: ["wasi_files", "count"], stdin, stdout: (b) => stdout += decoder.decode(b) },
    });
    const before = w.stats().exits;
    const { exitCode } = await w.runWasi();
    return { exitCode, stdout, exits: w.stats().exits - before };
  };

  test("wasi stdin: 426 KB read 1 KiB at a time by libc crosses in a few exits", async () => {
    const big = new Uint8Array(426 * 1000).map((_, i) => (i * 13 + (i >> 9)) & 0xff);
    const empty = await count(new Uint8Array(0));
    assert.deepEqual([empty.exitCode, empty.stdout], [0, "count bytes=0 sum=0\n"]);
    const full = await count(big);
    assert.equal(full.exitCode, 0);
    assert.equal(full.stdout, `count bytes=${big.length} sum=${checksum(big)}\n`);
    // libc asks for 1 KiB per read (417 reads); 64 KiB blocks make 7 reads.
    const extra = full.exits - empty.exits;
    assert.ok(extra <= 20, `426 KB of stdin took ${extra} more exits than none`);
  });

  test("wasi stdin: an interactive stream is answered with what it has, not a full block", async () => {
    // The second line is enqueued only after the program has echoed the first: a host or guest
    // that waited to fill a 64 KiB block would never see it (the call's timeout ends the test).
    let stdout = "";
    let echoed!: () => void;
    const firstEchoed = new Promise<void>((resolve) => echoed = resolve);
    let step = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(c) {
        if (step === 0) c.enqueue(encoder.encode("ping\n"));
        else if (step === 1) {
          await firstEchoed;
          c.enqueue(encoder.encode("pong\n"));
        } else c.close();
        step++;
      },
    });
    await using w = await create({
      module: fixture("wasi_files"),
      wasi: {
        args: ["wasi_files", "stdin"],
        stdin: stream,
        stdout: (b) => {
          stdout += decoder.decode(b);
          if (stdout.includes("ping\n")) echoed();
        },
        stderr: () => {},
      },
      timeoutMs: 20_000,
    });
    assert.deepEqual(await w.runWasi(), { exitCode: 0 });
    assert.equal(stdout, "ping\npong\n");
  });

  test("wasi stdin: read-ahead does not outlive a call: later calls, snapshots and restore see every byte once", async () => {
    for (const stdin of ["abcdef", encoder.encode("abcdef")]) {
      await using w = await create({ module: fixture("wasi_read"), wasi: { stdin } });
      const next = () => w.call("read_byte") as Promise<number>;
      const at = (s: string) => s.charCodeAt(0);
      // The first call reads ahead the whole input and gives back all but "a" when it ends.
      const before = w.stats().exits;
      assert.equal(await next(), at("a"));
      const firstCallExits = w.stats().exits - before;
      await using snap = await w.snapshot();
      assert.equal(await next(), at("b"));
      assert.equal(await next(), at("c"));
      // Restore rewinds bytes and strings to the start; the snapshot holds no read-ahead.
      await w.restore(snap);
      assert.equal(await next(), at("a"));
      for (const c of "bcdef") assert.equal(await next(), at(c));
      assert.equal(await next(), -1);
      assert.equal(await next(), -1);
      // One exit to read, one to give back, plus the call itself.
      assert.ok(firstCallExits >= 2, `${firstCallExits}`);
    }
    // A stream: given-back bytes come before the stream's next chunk, in order.
    const chunks = ["xy", "z"];
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        const next = chunks.shift();
        if (next === undefined) c.close();
        else c.enqueue(encoder.encode(next));
      },
    });
    await using s = await create({ module: fixture("wasi_read"), wasi: { stdin: stream } });
    const got: number[] = [];
    for (let i = 0; i < 5; i++) got.push(await s.call("read_byte") as number);
    assert.deepEqual(got, [..."xyz"].map((c) => c.charCodeAt(0)).concat([-1, -1]));
  });
}
