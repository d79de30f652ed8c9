// How a snapshot file's sections are best brought in (docs/snapshot-format.md, "Choices"): the
// code image (dense) read into a new memfd (hl_snapshot_load_pages) against mapped from the file
// (hl_snapshot_map_file, which reads it once for the CRC-32), and the memory section read into a
// memfd; plus the description (read, SHA-256, checks). Interleaved rounds, medians.
//   deno run -A bench/snapshot_file.ts <file.hlsnap> [rounds=30]
// With no file, it makes one: a JsSandbox's start state (QuickJS after init).
import { JsSandbox } from "../mod.ts";
import { check, openLibrary } from "../src/ffi/lib.ts";
import { readSnapshotDescription } from "../src/snapshot_file.ts";

let path = Deno.args[0];
const rounds = Number(Deno.args[1] ?? 30);
if (!path) {
  path = await Deno.makeTempFile({ suffix: ".hlsnap" });
  await using js = await JsSandbox.create({ source: "function f(x) { return x; }" });
  await (await js.snapshot()).save(path);
}
const lib = openLibrary();
const { description: d } = await readSnapshotDescription(path);
const enc = new TextEncoder().encode(path);
const out = new Uint32Array(1);
const bitmapOf = (b64: string) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
const sections = [["memory", d.memory], ["code", d.code!]] as const;
const times: Record<string, number[]> = {};
const time = (name: string, f: () => number) => {
  const t0 = performance.now();
  const handle = f();
  (times[name] ??= []).push(performance.now() - t0);
  check(lib, lib.hl_snapshot_release(handle));
};
for (let r = 0; r < rounds; r++) {
  for (const [name, s] of sections) {
    const bitmap = bitmapOf(s.bitmap);
    const words = BigInt(bitmap.length / 8);
    time(`${name}: read into a memfd (${(s.size / 4096) | 0} pages)`, () => {
      check(
        lib,
        lib.hl_snapshot_load_pages(
          enc,
          enc.length,
          BigInt(s.offset),
          BigInt(s.size),
          bitmap,
          words,
          s.crc,
          out,
        ),
      );
      return out[0];
    });
    if (name === "code") {
      time("code: mapped from the file (CRC read)", () => {
        check(
          lib,
          lib.hl_snapshot_map_file(enc, enc.length, BigInt(s.offset), BigInt(s.size), s.crc, out),
        );
        return out[0];
      });
    }
  }
  const t0 = performance.now();
  await readSnapshotDescription(path);
  (times["description: read + SHA-256 + checks"] ??= []).push(performance.now() - t0);
}
const median = (v: number[]) => v.sort((a, b) => a - b)[Math.floor(v.length / 2)];
for (const [name, v] of Object.entries(times)) {
  console.log(
    `${name.padEnd(46)} median ${median(v).toFixed(2)} ms (min ${Math.min(...v).toFixed(2)})`,
  );
}
