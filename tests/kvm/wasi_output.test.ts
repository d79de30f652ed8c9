/**
 * WASI stdout/stderr are buffered in the guest (issue 22 item 3): output crosses when the buffer
 * fills, before any other crossing (a host import here; in front of a stdin read, in the same
 * crossing: op 28) and at the end of the call, trapped or not. Counted in VM exits, not timed; the semantics kept: the same bytes in the same order
 * across both streams, output written before a host call reaches the sinks before it runs.
 */
import assert from "node:assert/strict";
import { WasmSandbox, WasmTrapError } from "../../mod.ts";
import { fixture } from "../wasm/fixtures.ts";
import { engineTest, WASM_ENGINES } from "./_kvm.ts";

const decoder = new TextDecoder();

for (const engine of WASM_ENGINES) {
  const test = engineTest(engine);

  /**
   * A wasi_lines sandbox whose sinks and host import append to `events` (adjacent chunks of one
   * stream joined: how they are split is not part of the contract); with `refuseAfterNote` the
   * sinks throw once the host import has run.
   */
  const open = (events: string[], refuseAfterNote = false) => {
    let refuse = false;
    const sink = (name: string) => (b: Uint8Array) => {
      if (refuse) throw new Error("sink quota");
      const last = events.length - 1;
      if (events[last]?.startsWith(`${name}:`)) events[last] += decoder.decode(b);
      else events.push(`${name}:${decoder.decode(b)}`);
    };
    return WasmSandbox.create({
      module: fixture("wasi_lines"),
      engine,
      cache: false,
      wasi: { stdout: sink("out"), stderr: sink("err") },
      hostFunctions: {
        env: {
          note: {
            params: [],
            result: "void",
            fn: () => {
              events.push("note");
              refuse = refuseAfterNote; // the sinks refuse from now on
            },
          },
        },
      },
    });
  };

  test("wasi output: 10,000 lines cross in at most 10 exits, every byte in order", async () => {
    const events: string[] = [];
    await using w = await open(events);
    const before = w.stats().exits;
    await w.call("lines", 10_000);
    const exits = w.stats().exits - before;
    let expected = "";
    for (let i = 0; i < 10_000; i++) expected += `line ${String(i).padStart(5, "0")}\n`;
    assert.deepEqual(events, [`out:${expected}`]);
    // One write per line crossed once each before (10,001 exits).
    assert.ok(exits <= 10, `10,000 lines took ${exits} exits`);
  });

  test("wasi output: both streams keep their order around a host call and a trap", async () => {
    const events: string[] = [];
    await using w = await open(events);
    await w.call("mixed", 0);
    assert.deepEqual(events, ["out:o1o2", "err:e1", "note", "out:o3", "err:e2"]);
    // Output written before a trap still arrives (flushed at the end of the call).
    events.length = 0;
    await assert.rejects(w.call("mixed", 1), WasmTrapError);
    assert.deepEqual(events, ["out:o1o2", "err:e1", "note", "out:o3", "err:e2"]);
  });

  test("wasi output: output riding in front of a stdin read reaches the sink first; refused, the read is still served", async () => {
    // `wasi_files stdin` echoes each line it reads; each line's echo waits in the guest and rides
    // in front of the next read (op 28). The stream gives one line per pull and records when.
    const encoder = new TextEncoder();
    const events: string[] = [];
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(c) {
        events.push(`pull ${++pulls}`);
        if (pulls <= 3) c.enqueue(encoder.encode(`${"abc"[pulls - 1]}\n`));
        else c.close();
      },
    }, { highWaterMark: 0 }); // pulled only when the host reads, not ahead
    let stderr = "";
    await using w = await WasmSandbox.create({
      module: fixture("wasi_files"),
      engine,
      cache: false,
      wasi: {
        args: ["wasi_files", "stdin"],
        stdin: stream,
        stdout: (b) => {
          events.push(`out ${JSON.stringify(decoder.decode(b))}`);
          if (events.filter((e) => e.startsWith("out")).length === 1) throw new Error("quota");
        },
        stderr: (b) => void (stderr += decoder.decode(b)),
      },
    });
    const before = w.stats().exits;
    assert.deepEqual(await w.runWasi(), { exitCode: 0 });
    const exits = w.stats().exits - before;
    // "a" echoed, refused, then the read it rode with served all the same; "b"'s echo is the
    // module's next write: EIO, dropped by libc; "c" is delivered. Every line was read.
    assert.deepEqual(events, [
      "pull 1",
      'out "a\\n"',
      "pull 2",
      "pull 3",
      'out "c\\n"',
      "pull 4",
    ]);
    assert.equal(stderr, "stdin bytes=6\n");
    // The call, 4 reads (3 lines, the end), the stderr line at the end: 6 exits, the echoes
    // crossing with the reads (8 when each crossed alone, before op 28).
    assert.ok(exits <= 6, `${exits} exits`);
  });

  test("wasi output: a flush the host refuses is EIO on the module's next write", async () => {
    const events: string[] = [];
    await using w = await open(events, true);
    assert.equal(await w.call("refused"), 29); // EIO
    assert.deepEqual(events, ["out:o1", "note", "note"]);
  });
}
