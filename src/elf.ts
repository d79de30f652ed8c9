/**
 * The guest image loader: parses a freestanding x86-64 ELF64 (`ET_DYN` static-pie or `ET_EXEC`),
 * lays its `PT_LOAD` segments out in one page-rounded span, and applies its
 * `R_X86_64_RELATIVE` relocations for whatever base the image is loaded at.
 *
 * The file is untrusted: every offset, size and count is checked before use, and every problem is
 * a {@link GuestImageError}.
 *
 * @module
 */

import { MAX_MEMORY_SIZE, MEMORY_ALIGN, PAGE_SIZE, PF_R, PF_W, PF_X } from "./abi.ts";
import { ArgumentError, GuestImageError } from "./errors.ts";

/** A loaded segment: where it goes (link-time address) and its `PF_*` permission flags. */
export interface ElfSegment {
  /** The segment's link-time virtual address (`p_vaddr`). */
  readonly vaddr: number;
  /** The segment's size in memory (`p_memsz`). */
  readonly memsz: number;
  /** Its permissions: `PF_X` (1), `PF_W` (2), `PF_R` (4). */
  readonly flags: number;
}

/** A parsed guest image, ready to be copied into guest memory. */
export interface ElfImage {
  /** `ET_EXEC` images must be loaded at their link addresses; `ET_DYN` ones anywhere. */
  readonly fixed: boolean;
  /**
   * The image span, from `minVaddr` to the page-rounded end of the highest segment: file
   * contents copied in, everything else (bss, gaps) zero. Relocations are not applied.
   */
  readonly image: Uint8Array;
  /** `image.length`: the span size, a multiple of the page size. */
  readonly size: number;
  /** The link-time address of `image[0]`: the lowest segment address, rounded down to a page. */
  readonly minVaddr: number;
  /** The largest `p_align` of the segments (at least a page, at most 2 MiB). */
  readonly align: number;
  /** The entry point's link-time address (`e_entry`). */
  readonly entry: number;
  /** The entry point's offset in `image`. */
  readonly entryOffset: number;
  /** The loaded segments, by ascending address. */
  readonly segments: readonly ElfSegment[];
  /**
   * Where `image` holds file content, as `[offset, length]` pairs (offsets in `image`); the
   * rest is zero (`.bss`, gaps), so a loader into zeroed memory copies only these. Absent: the
   * whole image is copied.
   */
  readonly fileRanges?: readonly (readonly [number, number])[];
  /** Offsets in `image` of the 8-byte `R_X86_64_RELATIVE` targets. */
  readonly relocationOffsets: Uint32Array;
  /** The addend of each relocation, in the same order. */
  readonly relocationAddends: Float64Array;
}

const ELF_HEADER_SIZE = 64;
const PROGRAM_HEADER_SIZE = 56;
const RELA_SIZE = 24;
const DYN_SIZE = 16;
const EM_X86_64 = 62;
const ET_EXEC = 2;
const ET_DYN = 3;
const PN_XNUM = 0xffff;

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_TLS = 7;

const DT_NULL = 0;
const DT_NEEDED = 1;
const DT_PLTRELSZ = 2;
const DT_RELA = 7;
const DT_RELASZ = 8;
const DT_RELAENT = 9;
const DT_REL = 17;
const DT_RELSZ = 18;
const DT_RELRSZ = 35;

const R_X86_64_NONE = 0;
const R_X86_64_RELATIVE = 8;

const RELOCATION_NAMES: Readonly<Record<number, string>> = {
  1: "R_X86_64_64",
  2: "R_X86_64_PC32",
  5: "R_X86_64_COPY",
  6: "R_X86_64_GLOB_DAT",
  7: "R_X86_64_JUMP_SLOT",
  16: "R_X86_64_DTPMOD64",
  17: "R_X86_64_DTPOFF64",
  18: "R_X86_64_TPOFF64",
  37: "R_X86_64_IRELATIVE",
};

const TWO_32 = 0x1_0000_0000;
/** High halves below this keep a u64 under 2^53, a safe integer. */
const SAFE_HIGH = 0x20_0000;

function fail(message: string): never {
  throw new GuestImageError(`invalid guest image: ${message}`);
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Bounds-checked little-endian reads of the file. */
class FileReader {
  readonly #view: DataView;
  readonly length: number;

  constructor(bytes: Uint8Array) {
    this.#view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.length = bytes.byteLength;
  }

  #check(offset: number, n: number, what: string): void {
    if (offset > this.length - n) {
      fail(`${what} at file offset ${hex(offset)} runs past the end of the file (${this.length})`);
    }
  }

  u8(offset: number, what: string): number {
    this.#check(offset, 1, what);
    return this.#view.getUint8(offset);
  }

  u16(offset: number, what: string): number {
    this.#check(offset, 2, what);
    return this.#view.getUint16(offset, true);
  }

  u32(offset: number, what: string): number {
    this.#check(offset, 4, what);
    return this.#view.getUint32(offset, true);
  }

  /** A u64 that must be a safe integer (every address and size the loader uses is). */
  u64(offset: number, what: string): number {
    this.#check(offset, 8, what);
    const lo = this.#view.getUint32(offset, true);
    const hi = this.#view.getUint32(offset + 4, true);
    if (hi >= SAFE_HIGH) {
      fail(`${what} 0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")} is out of range`);
    }
    return hi * TWO_32 + lo;
  }

  /** An i64 that must be a safe integer. */
  i64(offset: number, what: string): number {
    this.#check(offset, 8, what);
    const lo = this.#view.getUint32(offset, true);
    const hi = this.#view.getInt32(offset + 4, true);
    if (hi >= SAFE_HIGH || hi < -SAFE_HIGH) fail(`${what} is out of range`);
    return hi * TWO_32 + lo;
  }
}

interface ProgramHeaders {
  segments: (ElfSegment & { offset: number; filesz: number })[];
  dynamic?: { offset: number; size: number };
  align: number;
}

/** How a page of the segment will be mapped: executable read-only, writable, or read-only. */
function mapping(flags: number): number {
  return flags & PF_X ? PF_X : flags & PF_W;
}

function readProgramHeaders(file: FileReader): ProgramHeaders {
  const phoff = file.u64(32, "e_phoff");
  const phentsize = file.u16(54, "e_phentsize");
  const phnum = file.u16(56, "e_phnum");
  if (phnum === 0) fail("no program headers");
  if (phnum === PN_XNUM) fail("more than 65534 program headers (PN_XNUM) is not supported");
  if (phentsize !== PROGRAM_HEADER_SIZE) {
    fail(`e_phentsize is ${phentsize}, expected ${PROGRAM_HEADER_SIZE}`);
  }
  if (phoff > file.length || phnum * PROGRAM_HEADER_SIZE > file.length - phoff) {
    fail(`program headers (${phnum} at offset ${hex(phoff)}) run past the end of the file`);
  }
  const result: ProgramHeaders = { segments: [], align: PAGE_SIZE };
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * PROGRAM_HEADER_SIZE;
    const type = file.u32(at, "p_type");
    if (type === PT_INTERP) {
      fail("it needs a dynamic loader (PT_INTERP); link it static (e.g. -static-pie)");
    }
    if (type === PT_TLS) {
      fail("it uses thread-local storage (PT_TLS), which the sandbox does not provide");
    }
    if (type === PT_DYNAMIC) {
      if (result.dynamic) fail("more than one PT_DYNAMIC");
      const offset = file.u64(at + 8, "PT_DYNAMIC p_offset");
      const size = file.u64(at + 32, "PT_DYNAMIC p_filesz");
      if (offset > file.length || size > file.length - offset) {
        fail(`PT_DYNAMIC (${size} bytes at ${hex(offset)}) runs past the end of the file`);
      }
      result.dynamic = { offset, size };
      continue;
    }
    if (type !== PT_LOAD) continue;
    const what = `PT_LOAD segment ${i}`;
    const flags = file.u32(at + 4, "p_flags") & (PF_R | PF_W | PF_X);
    const offset = file.u64(at + 8, `${what} p_offset`);
    const vaddr = file.u64(at + 16, `${what} p_vaddr`);
    const filesz = file.u64(at + 32, `${what} p_filesz`);
    const memsz = file.u64(at + 40, `${what} p_memsz`);
    const align = file.u64(at + 48, `${what} p_align`);
    if (filesz > memsz) fail(`${what}: p_filesz ${filesz} exceeds p_memsz ${memsz}`);
    if (offset > file.length || filesz > file.length - offset) {
      fail(`${what}: file range ${hex(offset)}+${filesz} runs past the end of the file`);
    }
    // Guest memory is at most 1 GiB and identity-mapped, so images are linked below 1 GiB.
    if (vaddr + memsz > MAX_MEMORY_SIZE) {
      fail(`${what}: ${memsz} bytes at ${hex(vaddr)} reach beyond 1 GiB`);
    }
    if (align > 1) {
      if ((align & (align - 1)) !== 0) fail(`${what}: p_align ${align} is not a power of two`);
      if (align > MEMORY_ALIGN) fail(`${what}: p_align ${hex(align)} is larger than 2 MiB`);
      if (vaddr % align !== offset % align) {
        fail(`${what}: p_vaddr ${hex(vaddr)} and p_offset ${hex(offset)} disagree modulo p_align`);
      }
      result.align = Math.max(result.align, align);
    }
    if (memsz > 0) result.segments.push({ vaddr, memsz, flags, offset, filesz });
  }
  if (result.segments.length === 0) fail("no loadable (PT_LOAD) segments");
  result.segments.sort((a, b) => a.vaddr - b.vaddr);
  for (let i = 1; i < result.segments.length; i++) {
    const prev = result.segments[i - 1];
    const cur = result.segments[i];
    const prevEnd = prev.vaddr + prev.memsz;
    if (prevEnd > cur.vaddr) {
      fail(
        `segments at ${hex(prev.vaddr)} (${prev.memsz} bytes) and ${hex(cur.vaddr)} overlap`,
      );
    }
    const sharePage = Math.floor(cur.vaddr / PAGE_SIZE) === Math.floor((prevEnd - 1) / PAGE_SIZE);
    if (sharePage && mapping(prev.flags) !== mapping(cur.flags)) {
      fail(
        `segments at ${hex(prev.vaddr)} and ${hex(cur.vaddr)} share a page but have different ` +
          "permissions",
      );
    }
  }
  return result;
}

interface DynamicInfo {
  rela?: number;
  relasz?: number;
  relaent?: number;
}

function readDynamic(file: FileReader, offset: number, size: number): DynamicInfo {
  const info: DynamicInfo = {};
  const count = Math.floor(size / DYN_SIZE);
  for (let i = 0; i < count; i++) {
    const at = offset + i * DYN_SIZE;
    const tagLo = file.u32(at, "d_tag");
    const tagHi = file.u32(at + 4, "d_tag");
    // Every tag the loader acts on is small; larger ones (OS- and processor-specific) are ignored.
    if (tagHi !== 0) continue;
    const value = () => file.u64(at + 8, `dynamic entry ${tagLo} value`);
    switch (tagLo) {
      case DT_NULL:
        return info;
      case DT_NEEDED:
        fail("it needs shared libraries (DT_NEEDED); link it static");
        break;
      case DT_PLTRELSZ:
        if (value() > 0) fail("PLT relocations (DT_JMPREL) are not supported; link it static");
        break;
      case DT_RELA:
        info.rela = value();
        break;
      case DT_RELASZ:
        info.relasz = value();
        break;
      case DT_RELAENT:
        info.relaent = value();
        break;
      case DT_RELSZ:
        if (value() > 0) fail("REL relocations (DT_REL) are not supported; only RELA");
        break;
      case DT_REL:
        break;
      case DT_RELRSZ:
        if (value() > 0) {
          fail(
            "RELR relocations (DT_RELR) are not supported; link without -z pack-relative-relocs",
          );
        }
        break;
    }
  }
  return info;
}

function containingSegment(
  segments: readonly ElfSegment[],
  vaddr: number,
  size: number,
): ElfSegment | undefined {
  for (const s of segments) {
    if (vaddr >= s.vaddr && size <= s.memsz && vaddr - s.vaddr <= s.memsz - size) return s;
  }
  return undefined;
}

function readRelocations(
  image: Uint8Array,
  minVaddr: number,
  segments: readonly (ElfSegment & { filesz: number })[],
  info: DynamicInfo,
): { offsets: Uint32Array; addends: Float64Array } {
  const { rela, relasz = 0, relaent = RELA_SIZE } = info;
  if (relasz === 0) return { offsets: new Uint32Array(0), addends: new Float64Array(0) };
  if (rela === undefined) fail("DT_RELASZ without DT_RELA");
  if (relaent !== RELA_SIZE) fail(`DT_RELAENT is ${relaent}, expected ${RELA_SIZE}`);
  if (relasz % RELA_SIZE !== 0) fail(`DT_RELASZ ${relasz} is not a multiple of ${RELA_SIZE}`);
  // The table must lie in the file-backed bytes of a segment: one in zero-filled memory would let
  // a few bytes of file claim up to 1 GiB of relocations (44 million entries, ~540 MB of arrays
  // here). So the count is bounded by the file's own size.
  const inFile = segments.some((s) =>
    rela >= s.vaddr && relasz <= s.filesz && rela - s.vaddr <= s.filesz - relasz
  );
  if (!inFile) {
    fail(
      `relocation table (${relasz} bytes at ${hex(rela)}) is not inside the file-backed part ` +
        "of a loaded segment",
    );
  }
  // The table lies in a segment, so it lies in the image, whose bytes hold the file's.
  const table = new FileReader(image.subarray(rela - minVaddr, rela - minVaddr + relasz));
  const count = relasz / RELA_SIZE;
  const offsets = new Uint32Array(count);
  const addends = new Float64Array(count);
  let n = 0;
  for (let i = 0; i < count; i++) {
    const at = i * RELA_SIZE;
    const type = table.u32(at + 8, "r_info");
    if (type === R_X86_64_NONE) continue;
    if (type !== R_X86_64_RELATIVE) {
      const name = RELOCATION_NAMES[type] ?? `type ${type}`;
      fail(
        `relocation ${i} is ${name}; only R_X86_64_RELATIVE is supported (link it as a ` +
          "static-pie without symbol references to resolve at load time)",
      );
    }
    const target = table.u64(at, `relocation ${i} r_offset`);
    if (!containingSegment(segments, target, 8)) {
      fail(`relocation ${i} target ${hex(target)} is not inside a loaded segment`);
    }
    offsets[n] = target - minVaddr;
    addends[n] = table.i64(at + 16, `relocation ${i} r_addend`);
    n++;
  }
  return { offsets: offsets.subarray(0, n), addends: addends.subarray(0, n) };
}

/**
 * Parses and validates a guest ELF file. The result holds its own copy of the image bytes, so
 * `bytes` may be reused, and it can be loaded into any number of sandboxes.
 *
 * Throws {@link GuestImageError} when the file is not a valid static x86-64 ELF64 executable.
 */
export function parseElf(bytes: Uint8Array): ElfImage {
  if (
    bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0x61 && bytes[2] === 0x73 &&
    bytes[3] === 0x6d
  ) {
    fail(
      "not an ELF file: these bytes are a WebAssembly module (\\0asm); run it with WasmSandbox " +
        "(WasmSandbox.create({ module }))",
    );
  }
  const file = new FileReader(bytes);
  if (file.length < ELF_HEADER_SIZE) fail(`${file.length} bytes is too short for an ELF header`);
  if (
    file.u8(0, "magic") !== 0x7f || file.u8(1, "magic") !== 0x45 ||
    file.u8(2, "magic") !== 0x4c || file.u8(3, "magic") !== 0x46
  ) {
    fail("not an ELF file (bad magic)");
  }
  const elfClass = file.u8(4, "EI_CLASS");
  if (elfClass !== 2) fail(`ELF class ${elfClass} is not ELF64 (2)`);
  const data = file.u8(5, "EI_DATA");
  if (data !== 1) fail(`ELF data encoding ${data} is not little-endian (1)`);
  if (file.u8(6, "EI_VERSION") !== 1) fail("EI_VERSION is not 1");
  const type = file.u16(16, "e_type");
  if (type !== ET_EXEC && type !== ET_DYN) {
    fail(`ELF type ${type} is not an executable (ET_EXEC 2 or ET_DYN 3)`);
  }
  const machine = file.u16(18, "e_machine");
  if (machine !== EM_X86_64) fail(`machine ${machine} is not x86-64 (${EM_X86_64})`);
  if (file.u32(20, "e_version") !== 1) fail("e_version is not 1");
  const entry = file.u64(24, "e_entry");

  const headers = readProgramHeaders(file);
  const segments = headers.segments;
  const minVaddr = Math.floor(segments[0].vaddr / PAGE_SIZE) * PAGE_SIZE;
  let end = 0;
  for (const s of segments) end = Math.max(end, s.vaddr + s.memsz);
  const size = Math.ceil(end / PAGE_SIZE) * PAGE_SIZE - minVaddr;
  if (size > MAX_MEMORY_SIZE) fail(`its segments span ${size} bytes, more than 1 GiB`);

  const image = new Uint8Array(size);
  for (const s of segments) {
    image.set(bytes.subarray(s.offset, s.offset + s.filesz), s.vaddr - minVaddr);
  }

  const entrySegment = containingSegment(segments, entry, 1);
  if (!entrySegment || !(entrySegment.flags & PF_X)) {
    fail(`entry point ${hex(entry)} is not inside an executable segment`);
  }

  const dynamic = headers.dynamic
    ? readDynamic(file, headers.dynamic.offset, headers.dynamic.size)
    : {};
  const relocations = readRelocations(image, minVaddr, segments, dynamic);
  return {
    fixed: type === ET_EXEC,
    image,
    size,
    minVaddr,
    align: headers.align,
    entry,
    entryOffset: entry - minVaddr,
    segments: segments.map(({ vaddr, memsz, flags }) => ({ vaddr, memsz, flags })),
    fileRanges: segments.filter((s) => s.filesz > 0).map((s) => [s.vaddr - minVaddr, s.filesz]),
    relocationOffsets: relocations.offsets,
    relocationAddends: relocations.addends,
  };
}

/**
 * Applies the image's relocations to `target`, a copy of `elf.image` in place in guest memory,
 * for an image loaded so that link-time address 0 lands at `imageBase`: each target becomes
 * `imageBase + addend`.
 */
export function relocate(elf: ElfImage, target: Uint8Array, imageBase: number): void {
  if (!Number.isSafeInteger(imageBase) || imageBase < 0 || imageBase % PAGE_SIZE !== 0) {
    throw new ArgumentError(`image base ${imageBase} is not a page-aligned address`);
  }
  if (target.length < elf.size) {
    throw new ArgumentError(`target is ${target.length} bytes, the image needs ${elf.size}`);
  }
  const view = new DataView(target.buffer, target.byteOffset, target.byteLength);
  const offsets = elf.relocationOffsets;
  const addends = elf.relocationAddends;
  for (let i = 0; i < offsets.length; i++) {
    const at = offsets[i];
    const value = imageBase + addends[i];
    if (value >= 0 && Number.isSafeInteger(value)) {
      view.setUint32(at, value % TWO_32, true);
      view.setUint32(at + 4, Math.floor(value / TWO_32), true);
    } else {
      // A negative or huge result wraps like the 64-bit addition the guest expects.
      const wrapped = BigInt.asUintN(64, BigInt(imageBase) + BigInt(addends[i]));
      view.setBigUint64(at, wrapped, true);
    }
  }
}

/**
 * Copies the image into `target` (the image span in guest memory) and relocates it for
 * `imageBase`. With `zeroed` (fresh guest memory) only the file's bytes are copied: `.bss` and
 * gaps are already zero, and writing them would cost a host page each (issue #9: 512 MiB of
 * `.bss` must cost nothing at create).
 */
export function loadImage(
  elf: ElfImage,
  target: Uint8Array,
  imageBase: number,
  zeroed = false,
): void {
  if (target.length < elf.size) {
    throw new ArgumentError(`target is ${target.length} bytes, the image needs ${elf.size}`);
  }
  if (zeroed && elf.fileRanges) {
    for (const [offset, length] of elf.fileRanges) {
      target.set(elf.image.subarray(offset, offset + length), offset);
    }
  } else {
    target.set(elf.image);
  }
  relocate(elf, target, imageBase);
}
