/**
 * Snapshot, restore and pool figures (issue #9), as ratios to the raw KVM floor of the same run,
 * plus memory per sandbox and restore cost by guest size and dirtied pages.
 *
 *   deno run -A bench/_snapshot.ts     (just these figures)
 */
import { Sandbox, type SandboxOptions } from "../src/sandbox.ts";
import { SandboxPool } from "../src/pool.ts";
import { type Floor, measureFloor } from "./_floor.ts";
import { type Figure, interleavedFigure, medianUs, printRatios, samplesUs } from "./_ratios.ts";
import { teardownWait } from "../src/ffi/vm.ts";
import { TESTGUEST } from "../tests/_guests.ts";
import { parseElf } from "../src/elf.ts";
import { computeLayout } from "../src/layout.ts";

const MiB = 1024 * 1024;

/** Timings (µs) of `timed`, each run after an untimed `before`. */
async function samplesAfter(
  before: () => Promise<unknown>,
  timed: () => Promise<unknown>,
  iterations: number,
): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < iterations; i++) {
    await before();
    const start = performance.now();
    await timed();
    times.push((performance.now() - start) * 1000);
  }
  return times;
}

/** kB figures of /proc/self/status. */
function status(): { rssAnon: number; rssShmem: number } {
  const text = Deno.readTextFileSync("/proc/self/status");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? 0);
  return { rssAnon: kb("RssAnon"), rssShmem: kb("RssShmem") };
}

/**
 * kB of private (copy-on-write) pages in the guest memory mappings of this process:
 * `/proc/self/smaps` "Anonymous" of the mappings of the snapshot memfd (`hl-guest-memory*`).
 * These are exactly the pages the sandboxes dirtied on top of the shared snapshot; unlike the
 * process's RssAnon it does not move with the JS heap or the allocator (whose GC made the
 * per-sandbox figure negative before).
 */
function guestAnonKb(): number {
  let inGuest = false;
  let kb = 0;
  for (const line of Deno.readTextFileSync("/proc/self/smaps").split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inGuest = line.includes("hl-guest-memory");
    else if (inGuest && line.startsWith("Anonymous:")) kb += Number(/(\d+)/.exec(line)![1]);
  }
  return kb;
}

/** Shmem of the whole system, kB (memfd pages are counted here once, however often mapped). */
function systemShmem(): number {
  const text = Deno.readTextFileSync("/proc/meminfo");
  return Number(/^Shmem:\s+(\d+)/m.exec(text)?.[1] ?? 0);
}

/** Prints the snapshot figures of `options`' guest against `floor`. */
export async function printSnapshotFigures(
  floor: Floor,
  options: SandboxOptions,
): Promise<void> {
  const sb = await Sandbox.create(options);
  const snap = await sb.snapshot();
  const hostFunctions = options.hostFunctions;
  const pool = await SandboxPool.create({ snapshot: snap, size: 2, hostFunctions });
  // Timed in rounds interleaved with the raw floor's (bench/_ratios.ts).
  const settle = () => teardownWait();
  const figures: Figure[] = [
    await interleavedFigure(
      {
        label: "Sandbox.create({ snapshot }) + dispose",
        against: "create",
        goal: "≤ 1.1× (issue 9)",
      },
      (n) =>
        samplesUs(async () => {
          const s = await Sandbox.create({ snapshot: snap, hostFunctions });
          await s.dispose();
        }, n),
      { perRound: 25, settle },
    ),
    await interleavedFigure(
      { label: "Sandbox.create({ snapshot }) + first noop call + dispose", against: "create" },
      (n) =>
        samplesUs(async () => {
          const s = await Sandbox.create({ snapshot: snap, hostFunctions });
          await s.call("noop");
          await s.dispose();
        }, n),
      { perRound: 25, settle },
    ),
    await interleavedFigure(
      { label: "restore after a noop call", against: "exit", goal: "≤ 3× (issue 9)" },
      (n) => samplesAfter(() => sb.call("noop"), () => sb.restore(snap), n),
      { perRound: 250, settle },
    ),
    await interleavedFigure(
      {
        label: "pool.run with a noop call (acquire, call, restore, release)",
        against: "exit",
        goal: "≤ 5× (issue 9)",
      },
      (n) => samplesUs(() => pool.run((s) => s.call("noop")), n),
      { perRound: 250, settle },
    ),
  ];
  printRatios("snapshots", floor, figures);
  await pool.dispose();

  console.log("memory of sandboxes from one snapshot (each called once: counter):");
  for (const n of [100, 1000]) {
    const before = status();
    const guestBefore = guestAnonKb();
    const shmemBefore = systemShmem();
    const all: Sandbox[] = [];
    for (let i = 0; i < n; i++) {
      const s = await Sandbox.create({ snapshot: snap, hostFunctions });
      await s.call("counter");
      all.push(s);
    }
    const after = status();
    const guest = guestAnonKb() - guestBefore;
    const shmem = systemShmem() - shmemBefore;
    console.log(
      `  ${String(n).padStart(4)} sandboxes: guest pages copied on write ` +
        `${(guest / n).toFixed(1)} kB each (smaps Anonymous of the guest mappings), process ` +
        `RssAnon ${((after.rssAnon - before.rssAnon) / n).toFixed(1)} kB each (also counts the ` +
        `JS heap and allocator, so GC can make it negative), system shmem ` +
        `${(shmem / n).toFixed(2)} kB each (${shmem} kB in all), RssShmem of this process ` +
        `${((after.rssShmem - before.rssShmem) / n).toFixed(1)} kB each (counted once per ` +
        `mapping); the snapshot itself: ${snap.dataPages} pages = ${
          (snap.dataPages * 4).toFixed(0)
        } kB, shared`,
    );
    for (const s of all) await s.dispose();
  }
  {
    // Fresh sandboxes (no snapshot): anonymous memory, so a touched page is one host page.
    const n = 50;
    const before = status();
    const shmemBefore = systemShmem();
    const all: Sandbox[] = [];
    for (let i = 0; i < n; i++) {
      const s = await Sandbox.create(options);
      await s.call("counter");
      all.push(s);
    }
    const after = status();
    console.log(
      `    ${n} fresh sandboxes (create + init + one call): host RSS (anon) ` +
        `${((after.rssAnon - before.rssAnon) / n).toFixed(1)} kB each, system shmem ` +
        `${((systemShmem() - shmemBefore) / n).toFixed(2)} kB each (a memfd behind them would ` +
        `double it)`,
    );
    for (const s of all) await s.dispose();
  }
  await snap.dispose();
  await sb.dispose();

  console.log(
    "restore cost by guest size and pages dirtied (median µs of restore alone; the smallest " +
      "layout is 2 MiB: memory is sized in whole last-level page tables of 2 MiB each, and a " +
      "1 MiB guest would cost the same, untouched pages being free):",
  );
  const elf = parseElf(options.guest as Uint8Array);
  for (const size of [2 * MiB, 16 * MiB, 256 * MiB]) {
    const small = size === 2 * MiB;
    const fixed = small
      ? { stackSize: 64 * 1024, inputSize: 64 * 1024, outputSize: 64 * 1024 }
      : { stackSize: MiB, inputSize: 4 * MiB, outputSize: 4 * MiB };
    const heap = heapFor(elf, size, fixed);
    const g = await Sandbox.create({ ...options, ...fixed, heapSize: heap });
    const s = await g.snapshot();
    const row: string[] = [];
    for (const pages of [1, 100, 10_000]) {
      if (pages * 4096 + 64 * 1024 > heap) {
        row.push(`${pages} pages: n/a (heap ${(heap / MiB).toFixed(2)} MiB)`);
        continue;
      }
      const n = pages >= 10_000 ? 30 : 200;
      await samplesAfter(() => g.call("dirty_pages", pages), () => g.restore(s), 10);
      const times = await samplesAfter(() => g.call("dirty_pages", pages), () => g.restore(s), n);
      const us = times.sort((a, b) => a - b)[n >> 1];
      row.push(`${pages} pages: ${us.toFixed(1)} µs`);
    }
    console.log(
      `  ${size / MiB} MiB guest (heap ${(heap / MiB).toFixed(2)} MiB): ${row.join(", ")}`,
    );
    await s.dispose();
    await g.dispose();
  }

  // Issue 9: a guest with 512 MiB of .bss costs nothing at create. The test guest with its last
  // PT_LOAD segment's p_memsz grown by 512 MiB (zero-filled, like .bss).
  {
    const bss = withBss(options.guest as Uint8Array, 512 * MiB);
    const opts = { guest: bss, heapSize: MiB };
    const before = status();
    const kept: Sandbox[] = [];
    for (let i = 0; i < 4; i++) kept.push(await Sandbox.create(opts));
    const after = status();
    for (const k of kept) await k.dispose();
    const us = await medianUs(async () => await (await Sandbox.create(opts)).dispose(), 20, 3);
    const base = await medianUs(
      async () => await (await Sandbox.create({ ...options, heapSize: MiB })).dispose(),
      20,
      3,
    );
    const memory = computeLayout(parseElf(bss), opts).memorySize / MiB;
    console.log(
      `  guest with 512 MiB of .bss (${memory} MiB of guest memory): create + dispose ` +
        `${us.toFixed(0)} µs (${
          (us / floor.create_us.median).toFixed(2)
        }× create; the same guest ` +
        `without it ${base.toFixed(0)} µs): host RSS (anon) ` +
        `${((after.rssAnon - before.rssAnon) / 4).toFixed(0)} kB per sandbox (no memfd: fresh ` +
        `memory is anonymous; the .bss's plain 2 MiB chunks are mapped by 2 MiB pages, so no ` +
        `page table of theirs is written; what still grows is KVM's memslot metadata)`,
    );
  }
}

/** The heap size that makes the guest's memory exactly `size` bytes with the other sizes fixed. */
function heapFor(elf: ReturnType<typeof parseElf>, size: number, fixed: object): number {
  const fits = (heap: number) =>
    computeLayout(elf, { ...fixed, heapSize: heap }).memorySize <= size;
  let [lo, hi] = [4096, size];
  while (hi - lo > 4096) {
    const mid = Math.floor((lo + hi) / 2 / 4096) * 4096;
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** `elf` with its last PT_LOAD segment's `p_memsz` grown by `extra` bytes (more `.bss`). */
function withBss(elf: Uint8Array, extra: number): Uint8Array {
  const out = elf.slice();
  const v = new DataView(out.buffer);
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  let last = -1;
  let lastEnd = 0;
  for (let i = 0; i < v.getUint16(56, true); i++) {
    const at = phoff + i * phentsize;
    if (v.getUint32(at, true) !== 1) continue;
    const end = Number(v.getBigUint64(at + 16, true) + v.getBigUint64(at + 40, true));
    if (end > lastEnd) [last, lastEnd] = [at, end];
  }
  v.setBigUint64(last + 40, v.getBigUint64(last + 40, true) + BigInt(extra), true);
  return out;
}

if (import.meta.main) {
  const options = {
    guest: await Deno.readFile(TESTGUEST),
    heapSize: 4 * MiB,
    hostFunctions: { double: { params: ["i32"], result: "i32", fn: (x: number) => 2 * x } },
  } as const;
  await printSnapshotFigures(await measureFloor(), options);
}
