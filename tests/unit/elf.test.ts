import assert from "node:assert/strict";
import fc from "fast-check";
import { PF_R, PF_W, PF_X } from "../../src/abi.ts";
import { loadImage, parseElf, relocate } from "../../src/elf.ts";
import { ArgumentError, GuestImageError } from "../../src/errors.ts";
import { computeLayout, initializeMemory, initialRegisters } from "../../src/layout.ts";

// ---- a tiny ELF64 builder ----

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_NOTE = 4;
const PT_TLS = 7;
const PT_GNU_STACK = 0x6474e551;
const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_PLTRELSZ = 2;
const DT_RELA = 7;
const DT_RELASZ = 8;
const DT_RELAENT = 9;
const DT_RELSZ = 18;
const DT_RELRSZ = 35;
const DT_RELACOUNT = 0x6ffffff9;
const DT_GNU_HASH = 0x6ffffef5;
const R_NONE = 0;
const R_64 = 1;
const R_RELATIVE = 8;
const R_IRELATIVE = 37;

interface SegmentSpec {
  vaddr: number;
  data: Uint8Array;
  memsz?: number;
  flags: number;
  align?: number;
  /** Overrides of the program header fields, applied after layout. */
  offset?: number;
  filesz?: number;
}

interface ElfSpec {
  type?: number;
  machine?: number;
  entry: number;
  segments: SegmentSpec[];
  /** Dynamic entries; a PT_DYNAMIC pointing at them is added when present. */
  dynamic?: [number | bigint, number | bigint][];
  /** Extra program headers (type only; the rest zero). */
  extraTypes?: number[];
}

interface BuiltElf {
  bytes: Uint8Array;
  /** File offset of program header i. */
  phdr(i: number): number;
}

function buildElf(spec: ElfSpec): BuiltElf {
  const phnum = spec.segments.length + (spec.dynamic ? 1 : 0) + (spec.extraTypes?.length ?? 0);
  let cursor = 64 + phnum * 56;
  const placed = spec.segments.map((s) => {
    // File offsets congruent to the address modulo 4 KiB, as a linker would place them.
    const offset = Math.ceil(cursor / 4096) * 4096 + (s.vaddr % 4096);
    cursor = offset + s.data.length;
    return offset;
  });
  const dynOffset = cursor;
  const dynSize = (spec.dynamic?.length ?? 0) * 16;
  // Junk after the last segment, so bss must come from zero-fill, never from the file.
  const total = dynOffset + dynSize + 64;
  const bytes = new Uint8Array(total).fill(0xcc);
  const v = new DataView(bytes.buffer);
  bytes.fill(0, 0, 64 + phnum * 56);
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]);
  v.setUint16(16, spec.type ?? 3, true);
  v.setUint16(18, spec.machine ?? 62, true);
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(spec.entry), true);
  v.setBigUint64(32, 64n, true);
  v.setUint16(52, 64, true);
  v.setUint16(54, 56, true);
  v.setUint16(56, phnum, true);
  let ph = 64;
  spec.segments.forEach((s, i) => {
    bytes.set(s.data, placed[i]);
    v.setUint32(ph, PT_LOAD, true);
    v.setUint32(ph + 4, s.flags, true);
    v.setBigUint64(ph + 8, BigInt(s.offset ?? placed[i]), true);
    v.setBigUint64(ph + 16, BigInt(s.vaddr), true);
    v.setBigUint64(ph + 24, BigInt(s.vaddr), true);
    v.setBigUint64(ph + 32, BigInt(s.filesz ?? s.data.length), true);
    v.setBigUint64(ph + 40, BigInt(s.memsz ?? s.data.length), true);
    v.setBigUint64(ph + 48, BigInt(s.align ?? 4096), true);
    ph += 56;
  });
  if (spec.dynamic) {
    spec.dynamic.forEach(([tag, val], i) => {
      v.setBigInt64(dynOffset + 16 * i, BigInt(tag), true);
      v.setBigUint64(dynOffset + 16 * i + 8, BigInt(val), true);
    });
    v.setUint32(ph, PT_DYNAMIC, true);
    v.setUint32(ph + 4, PF_R | PF_W, true);
    v.setBigUint64(ph + 8, BigInt(dynOffset), true);
    v.setBigUint64(ph + 32, BigInt(dynSize), true);
    ph += 56;
  }
  for (const type of spec.extraTypes ?? []) {
    v.setUint32(ph, type, true);
    ph += 56;
  }
  return { bytes, phdr: (i) => 64 + 56 * i };
}

function rela(entries: [offset: number, type: number, addend: number | bigint][]): Uint8Array {
  const out = new Uint8Array(entries.length * 24);
  const v = new DataView(out.buffer);
  entries.forEach(([offset, type, addend], i) => {
    v.setBigUint64(24 * i, BigInt(offset), true);
    v.setBigUint64(24 * i + 8, BigInt(type), true);
    v.setBigInt64(24 * i + 16, BigInt(addend), true);
  });
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const CODE = Uint8Array.of(0xba, 0x00, 0x7f, 0x00, 0x00, 0xef, 0xeb, 0xfe); // mov edx, 0x7f00; out dx, eax; jmp $
const RODATA = new TextEncoder().encode("hello rodata");

/** A static-pie: code at 0x1000 (RX), rodata at 0x2000 (R), data at 0x3000 (RW, with bss). */
function validSpec(relocations: [number, number, number | bigint][] = [
  [0x3000, R_RELATIVE, 0x1000],
  [0x3008, R_RELATIVE, 0x2004],
  [0x3010, R_NONE, 0],
  [0x5ff8, R_RELATIVE, 0x5ff8], // in bss
]): ElfSpec {
  const table = rela(relocations);
  const data = concat(new Uint8Array(0x20).fill(0xaa), table); // slots, then the table at 0x3020
  return {
    entry: 0x1000,
    segments: [
      { vaddr: 0x1000, data: CODE, flags: PF_R | PF_X },
      { vaddr: 0x2000, data: RODATA, flags: PF_R },
      { vaddr: 0x3000, data, memsz: 0x3000, flags: PF_R | PF_W },
    ],
    dynamic: [
      [DT_GNU_HASH, 0],
      [DT_RELA, 0x3020],
      [DT_RELASZ, table.length],
      [DT_RELAENT, 24],
      [DT_RELACOUNT, relocations.length],
      [0x7fffffffn << 32n, 0], // a tag the loader does not know, with a big value
      [DT_NULL, 0],
    ],
    extraTypes: [PT_GNU_STACK, PT_NOTE],
  };
}

function assertImageError(bytes: Uint8Array, pattern?: RegExp): void {
  assert.throws(
    () => parseElf(bytes),
    (err: unknown) => {
      if (!(err instanceof GuestImageError)) throw err;
      if (pattern && !pattern.test(err.message)) {
        throw new Error(`message ${JSON.stringify(err.message)} does not match ${pattern}`);
      }
      return true;
    },
  );
}

function mutate(spec: ElfSpec, edit: (v: DataView, elf: BuiltElf) => void): Uint8Array {
  const elf = buildElf(spec);
  edit(new DataView(elf.bytes.buffer), elf);
  return elf.bytes;
}

Deno.test("ELF loading: a relocation table claimed in zero-filled memory is refused", () => {
  // A few KiB of file whose DT_RELASZ claims ~1 GiB of relocations inside a 1 GiB .bss: refused
  // before any array is sized from the count (no amplification).
  const spec = validSpec();
  const big = 24 * Math.floor((1024 * 1024 * 1024 - 0x10000) / 24);
  spec.segments[2] = { ...spec.segments[2], memsz: 1024 * 1024 * 1024 - 0x4000 };
  spec.dynamic = spec.dynamic!.map(([tag, value]) =>
    tag === DT_RELASZ ? [DT_RELASZ, big] : tag === DT_RELA ? [DT_RELA, 0x4000] : [tag, value]
  );
  const bytes = buildElf(spec).bytes;
  assert.ok(bytes.length < 64 * 1024, `the file is ${bytes.length} bytes`);
  assertImageError(bytes, /relocation table .* not inside the file-backed part/);
});

Deno.test("ELF loading", async (t) => {
  await t.step("a valid static-pie", () => {
    const elf = parseElf(buildElf(validSpec()).bytes);
    assert.equal(elf.fixed, false);
    assert.equal(elf.minVaddr, 0x1000);
    assert.equal(elf.size, 0x5000);
    assert.equal(elf.image.length, 0x5000);
    assert.equal(elf.entry, 0x1000);
    assert.equal(elf.entryOffset, 0);
    assert.equal(elf.align, 4096);
    assert.deepStrictEqual(elf.segments, [
      { vaddr: 0x1000, memsz: CODE.length, flags: PF_R | PF_X },
      { vaddr: 0x2000, memsz: RODATA.length, flags: PF_R },
      { vaddr: 0x3000, memsz: 0x3000, flags: PF_R | PF_W },
    ]);
    assert.deepStrictEqual(elf.image.subarray(0, CODE.length), CODE);
    assert.deepStrictEqual(elf.image.subarray(0x1000, 0x1000 + RODATA.length), RODATA);
    // Gaps and bss are zero even though the file holds junk after each segment.
    assert.ok(elf.image.subarray(CODE.length, 0x1000).every((b) => b === 0));
    const dataEnd = 0x2000 + 0x20 + 4 * 24;
    assert.ok(elf.image.subarray(dataEnd, 0x5000).every((b) => b === 0));
    // Relocations are not applied until relocate().
    assert.equal(elf.image[0x2000], 0xaa);
    assert.deepStrictEqual([...elf.relocationOffsets], [0x2000, 0x2008, 0x4ff8]);
    assert.deepStrictEqual([...elf.relocationAddends], [0x1000, 0x2004, 0x5ff8]);
  });

  await t.step("relocation for any page-aligned base", () => {
    const elf = parseElf(buildElf(validSpec()).bytes);
    for (const base of [0, 0x1000, 0x80_0000, 0x3fff_f000]) {
      const target = new Uint8Array(elf.size + 4096);
      loadImage(elf, target, base);
      const v = new DataView(target.buffer);
      assert.equal(v.getBigUint64(0x2000, true), BigInt(base + 0x1000));
      assert.equal(v.getBigUint64(0x2008, true), BigInt(base + 0x2004));
      assert.equal(v.getBigUint64(0x2010, true), 0xaaaaaaaaaaaaaaaan); // R_X86_64_NONE: untouched
      assert.equal(v.getBigUint64(0x4ff8, true), BigInt(base + 0x5ff8));
      assert.deepStrictEqual(target.subarray(0, CODE.length), CODE);
    }
    assert.equal(elf.image[0x2000], 0xaa, "the parsed image is left as it was");
    // Into zeroed memory only the file's bytes are written: .bss stays untouched.
    const zeroed = new Uint8Array(elf.size);
    loadImage(elf, zeroed, 0, true);
    const full = new Uint8Array(elf.size);
    loadImage(elf, full, 0);
    assert.deepStrictEqual(zeroed, full);
    const poisoned = new Uint8Array(elf.size).fill(0x5a);
    loadImage(elf, poisoned, 0, true);
    const [lastOffset, lastLength] = elf.fileRanges!.at(-1)!;
    assert.equal(poisoned[lastOffset + lastLength], 0x5a, "bytes past the file are not written");
    assert.throws(() => relocate(elf, new Uint8Array(elf.size), 0x1234), ArgumentError);
    assert.throws(() => relocate(elf, new Uint8Array(elf.size), -4096), ArgumentError);
    assert.throws(() => loadImage(elf, new Uint8Array(elf.size - 1), 0), ArgumentError);
  });

  await t.step("addends that wrap are written modulo 2^64", () => {
    const elf = parseElf(
      buildElf(validSpec([[0x3000, R_RELATIVE, -0x2000], [
        0x3008,
        R_RELATIVE,
        2 ** 53 - 1,
      ]])).bytes,
    );
    const target = new Uint8Array(elf.size);
    relocate(elf, target, 0x1000);
    const v = new DataView(target.buffer);
    assert.equal(v.getBigUint64(0x2000, true), 2n ** 64n - 0x1000n);
    assert.equal(v.getBigUint64(0x2008, true), 2n ** 53n - 1n + 0x1000n);
  });

  await t.step("an image without PT_DYNAMIC has no relocations", () => {
    const spec = validSpec();
    delete spec.dynamic;
    const elf = parseElf(buildElf(spec).bytes);
    assert.equal(elf.relocationOffsets.length, 0);
  });

  await t.step("ET_EXEC loads at its link addresses", () => {
    const spec: ElfSpec = {
      type: 2,
      entry: 0x100_0010,
      segments: [
        { vaddr: 0x100_0000, data: concat(new Uint8Array(16), CODE), flags: PF_R | PF_X },
        { vaddr: 0x100_1000, data: new Uint8Array(8), memsz: 0x2000, flags: PF_R | PF_W },
      ],
    };
    const elf = parseElf(buildElf(spec).bytes);
    assert.equal(elf.fixed, true);
    assert.equal(elf.entryOffset, 0x10);
    const layout = computeLayout(elf);
    assert.equal(layout.imageBase, 0);
    assert.equal(layout.imageAddr, 0x100_0000);
    const mem = new Uint8Array(layout.memorySize);
    initializeMemory(mem, layout, elf);
    assert.deepStrictEqual(mem.subarray(0x100_0010, 0x100_0010 + CODE.length), CODE);
    assert.equal(initialRegisters(layout, elf.entryOffset).rip, 0x100_0010);
    // Linked where the buffers go: refused.
    const low = {
      ...spec,
      entry: 0x40_0000,
      segments: [{ ...spec.segments[0], vaddr: 0x40_0000 }],
    };
    assert.throws(() => computeLayout(parseElf(buildElf(low).bytes)), GuestImageError);
  });

  await t.step("loaded into guest memory through the layout", () => {
    const elf = parseElf(buildElf(validSpec()).bytes);
    const layout = computeLayout(elf, { heapSize: 64 * 1024, inputSize: 8192, outputSize: 8192 });
    const mem = new Uint8Array(layout.memorySize);
    initializeMemory(mem, layout, elf);
    const v = new DataView(mem.buffer);
    assert.equal(layout.imageBase + elf.minVaddr, layout.imageAddr);
    assert.equal(
      v.getBigUint64(layout.imageBase + 0x3000, true),
      BigInt(layout.imageBase + 0x1000),
    );
    assert.deepStrictEqual(
      mem.subarray(layout.imageBase + 0x1000, layout.imageBase + 0x1008),
      CODE,
    );
    assert.equal(initialRegisters(layout, elf.entryOffset).rip, layout.imageBase + 0x1000);
  });

  await t.step("p_align up to 2 MiB is honoured for the load base", () => {
    const spec = validSpec();
    for (const s of spec.segments) s.align = 0x20_0000;
    const elf = parseElf(buildElf(spec).bytes);
    assert.equal(elf.align, 0x20_0000);
    const layout = computeLayout(elf);
    assert.equal(layout.imageBase % 0x20_0000, 0);
  });
});

Deno.test("ELF malformations are GuestImageError", async (t) => {
  const spec = validSpec;

  await t.step("header", () => {
    assertImageError(new Uint8Array(0), /too short/);
    assertImageError(buildElf(spec()).bytes.subarray(0, 63), /too short/);
    assertImageError(mutate(spec(), (v) => v.setUint8(1, 0x46)), /magic/);
    assertImageError(mutate(spec(), (v) => v.setUint8(4, 1)), /ELF64/);
    assertImageError(mutate(spec(), (v) => v.setUint8(5, 2)), /little-endian/);
    assertImageError(mutate(spec(), (v) => v.setUint8(6, 0)), /EI_VERSION/);
    assertImageError(buildElf({ ...spec(), type: 1 }).bytes, /ELF type 1/);
    assertImageError(buildElf({ ...spec(), type: 4 }).bytes, /ELF type 4/);
    assertImageError(buildElf({ ...spec(), machine: 3 }).bytes, /machine 3 is not x86-64/);
    assertImageError(buildElf({ ...spec(), machine: 183 }).bytes, /machine 183/);
    assertImageError(mutate(spec(), (v) => v.setUint32(20, 0, true)), /e_version/);
    assertImageError(mutate(spec(), (v) => v.setBigUint64(24, 1n << 60n, true)), /e_entry/);
  });

  await t.step("program headers", () => {
    assertImageError(mutate(spec(), (v) => v.setUint16(56, 0, true)), /no program headers/);
    assertImageError(mutate(spec(), (v) => v.setUint16(56, 0xffff, true)), /PN_XNUM/);
    assertImageError(mutate(spec(), (v) => v.setUint16(54, 32, true)), /e_phentsize/);
    assertImageError(mutate(spec(), (v) => v.setBigUint64(32, 0x10000n, true)), /program headers/);
    assertImageError(mutate(spec(), (v) => v.setBigUint64(32, 2n ** 63n, true)), /e_phoff/);
    assertImageError(mutate(spec(), (v) => v.setUint16(56, 1000, true)), /program headers/);
    assertImageError(buildElf({ ...spec(), extraTypes: [PT_INTERP] }).bytes, /PT_INTERP/);
    assertImageError(buildElf({ ...spec(), extraTypes: [PT_TLS] }).bytes, /PT_TLS/);
    const noLoad = mutate(spec(), (v, elf) => {
      for (let i = 0; i < 3; i++) v.setUint32(elf.phdr(i), PT_NOTE, true);
    });
    assertImageError(noLoad, /no loadable/);
  });

  await t.step("segments", () => {
    const seg = (edit: (s: SegmentSpec[]) => void) => {
      const s = spec();
      edit(s.segments);
      return buildElf(s).bytes;
    };
    assertImageError(seg((s) => (s[1].filesz = 100)), /p_filesz 100 exceeds p_memsz/);
    assertImageError(seg((s) => (s[2].filesz = 0x10000, s[2].memsz = 0x10000)), /past the end/);
    assertImageError(seg((s) => (s[1].offset = 2 ** 40)), /past the end/);
    assertImageError(seg((s) => (s[1].offset = 2 ** 60)), /out of range/);
    assertImageError(seg((s) => (s[0].memsz = 0x1001)), /overlap/);
    assertImageError(seg((s) => (s[1].vaddr = 0x1800)), /share a page/);
    assertImageError(seg((s) => (s[1].align = 3000)), /power of two/);
    assertImageError(seg((s) => (s[1].align = 0x40_0000)), /larger than 2 MiB/);
    assertImageError(seg((s) => (s[1].align = 0x4000, s[1].offset = 0x1000)), /modulo p_align/);
    assertImageError(seg((s) => (s[2].memsz = 0x4000_0000)), /beyond 1 GiB/);
    assertImageError(seg((s) => (s[2].vaddr = 2 ** 52)), /beyond 1 GiB/);
    assertImageError(seg((s) => (s[2].memsz = 2 ** 62)), /out of range/);
    // The same permissions may share a page.
    const shared = spec();
    shared.segments[1].vaddr = 0x2000;
    shared.segments[2] = { vaddr: 0x2010, data: new Uint8Array(8), flags: PF_R };
    delete shared.dynamic;
    assert.equal(parseElf(buildElf(shared).bytes).size, 0x2000);
  });

  await t.step("entry point", () => {
    assertImageError(buildElf({ ...spec(), entry: 0x9000 }).bytes, /entry point 0x9000/);
    assertImageError(buildElf({ ...spec(), entry: 0x2000 }).bytes, /executable segment/);
  });

  await t.step("dynamic section and relocations", () => {
    const dyn = (entries: [number | bigint, number | bigint][]) =>
      buildElf({ ...spec(), dynamic: [...entries, [DT_NULL, 0]] }).bytes;
    assertImageError(dyn([[DT_NEEDED, 1]]), /DT_NEEDED/);
    assertImageError(dyn([[DT_PLTRELSZ, 24]]), /DT_JMPREL/);
    assertImageError(dyn([[DT_RELSZ, 16]]), /DT_REL\)/);
    assertImageError(dyn([[DT_RELRSZ, 8]]), /DT_RELR/);
    assertImageError(dyn([[DT_RELASZ, 24]]), /without DT_RELA/);
    assertImageError(dyn([[DT_RELA, 0x3020], [DT_RELASZ, 24], [DT_RELAENT, 16]]), /DT_RELAENT/);
    assertImageError(dyn([[DT_RELA, 0x3020], [DT_RELASZ, 25]]), /multiple of 24/);
    assertImageError(
      dyn([[DT_RELA, 0x9000], [DT_RELASZ, 24]]),
      /not inside the file-backed part of a loaded segment/,
    );
    assertImageError(
      dyn([[DT_RELA, 0x5ff0], [DT_RELASZ, 48]]),
      /not inside the file-backed part of a loaded segment/,
    );
    assertImageError(dyn([[DT_RELA, 0x3020], [DT_RELASZ, 2n ** 60n]]), /out of range/);
    // Zero-sized REL/RELR/PLT tables are fine.
    assert.ok(parseElf(dyn([[DT_RELSZ, 0], [DT_RELRSZ, 0], [DT_PLTRELSZ, 0]])));

    const relocs = (entries: [number, number, number | bigint][]) => buildElf(spec(entries)).bytes;
    assertImageError(relocs([[0x3000, R_64, 0]]), /R_X86_64_64; only R_X86_64_RELATIVE/);
    assertImageError(relocs([[0x3000, R_IRELATIVE, 0]]), /R_X86_64_IRELATIVE/);
    assertImageError(relocs([[0x3000, 99, 0]]), /type 99/);
    assertImageError(relocs([[0x9000, R_RELATIVE, 0]]), /target 0x9000/);
    assertImageError(relocs([[0x5ffc, R_RELATIVE, 0]]), /target 0x5ffc/);
    assertImageError(relocs([[0x1004, R_RELATIVE, 0]]), /target 0x1004/);
    assertImageError(relocs([[0x3000, R_RELATIVE, 2n ** 60n]]), /r_addend/);

    const dynPastEnd = mutate(
      spec(),
      (v, elf) => v.setBigUint64(elf.phdr(3) + 32, 1n << 20n, true),
    );
    assertImageError(dynPastEnd, /PT_DYNAMIC/);
    const twoDyn = mutate(spec(), (v, elf) => v.setUint32(elf.phdr(4), PT_DYNAMIC, true));
    assertImageError(twoDyn, /more than one PT_DYNAMIC/);
  });

  await t.step("every truncation of a valid file", () => {
    const bytes = buildElf(validSpec()).bytes;
    // The last 64 bytes are junk the loader never reads; before them, everything matters.
    for (let n = 0; n < bytes.length - 64; n++) assertImageError(bytes.subarray(0, n));
    assert.ok(parseElf(bytes.subarray(0, bytes.length - 64)));
  });

  await t.step("random corruption never escapes as another error", () => {
    const bytes = buildElf(validSpec()).bytes;
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 6,
        }),
        (edits) => {
          const copy = bytes.slice();
          // Mostly the headers: that is where the structure is.
          for (const [at, value] of edits) copy[at % (at % 2 ? 64 + 7 * 56 : copy.length)] = value;
          try {
            parseElf(copy);
          } catch (err) {
            if (!(err instanceof GuestImageError)) throw err;
          }
        },
      ),
      { numRuns: 3000 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (junk) => {
        const copy = junk.slice();
        copy.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1].slice(0, copy.length));
        try {
          parseElf(copy);
        } catch (err) {
          if (!(err instanceof GuestImageError)) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});
