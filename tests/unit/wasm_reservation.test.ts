// The host's side of Wasm guard pages (src/wasm_reservation.ts, docs/abi.md "Wasm guard pages"):
// the reservation's page tables, and what the host maps, refuses and drops.
import assert from "node:assert/strict";
import {
  PAGE_SIZE,
  PEB_ADDR,
  PebOffset,
  PML4_ADDR,
  PT_BASE_ADDR,
  WASM_RESERVATION_ADDR,
  WASM_RESERVATION_SPAN,
} from "../../src/abi.ts";
import { computeLayout, pageTablesEnd, writePageTables, writePeb } from "../../src/layout.ts";
import {
  droppedByRestore,
  inWasmReservation,
  mapWasmMemory,
  PREFAULT_MAX_BYTES,
  wasmMapping,
} from "../../src/wasm_reservation.ts";

const MIB = 1024 * 1024;
const IMAGE = { size: 64 * 1024, minVaddr: 0, align: PAGE_SIZE, fixed: false };

function setup(reservation = 4 * MIB, heapSize = 16 * MIB) {
  const layout = computeLayout(IMAGE, { heapSize, wasmReservationSize: reservation });
  const mem = new Uint8Array(layout.memorySize);
  writePeb(mem, layout);
  writePageTables(mem, layout, []);
  return { layout, mem, view: new DataView(mem.buffer) };
}

/** The reservation's page-table entry for its page `i`. */
function entry(view: DataView, tables: number, i: number): bigint {
  return view.getBigUint64(tables + 2 * PAGE_SIZE + 8 * i, true);
}

Deno.test("wasm reservation: layout, PEB and page tables", () => {
  const none = computeLayout(IMAGE, { heapSize: 16 * MIB });
  assert.equal(none.wasmReservationSize, 0);
  assert.equal(none.wasmTablesAddr, 0);
  const { layout, view } = setup();
  assert.equal(layout.wasmTablesAddr, PT_BASE_ADDR + layout.pageTableCount * PAGE_SIZE);
  // PDPT, PD and one page table per 2 MiB, then the input buffer.
  assert.equal(layout.inputAddr, layout.wasmTablesAddr + 4 * PAGE_SIZE);
  assert.equal(pageTablesEnd(layout), layout.inputAddr);
  const peb = (off: number) => Number(view.getBigUint64(PEB_ADDR + off, true));
  assert.equal(peb(PebOffset.wasmReservationAddr), WASM_RESERVATION_ADDR);
  assert.equal(peb(PebOffset.wasmReservationSize), 4 * MIB);
  // PML4 entry 1 → PDPT → PD → the two page tables, every leaf not present.
  const pml4 = view.getBigUint64(PML4_ADDR + 8, true);
  assert.equal(Number(pml4 & ~0xfffn), layout.wasmTablesAddr);
  const pd = view.getBigUint64(layout.wasmTablesAddr, true);
  assert.equal(Number(pd & ~0xfffn), layout.wasmTablesAddr + PAGE_SIZE);
  for (let i = 0; i < 2; i++) {
    const pt = view.getBigUint64(layout.wasmTablesAddr + PAGE_SIZE + 8 * i, true);
    assert.equal(Number(pt & ~0xfffn), layout.wasmTablesAddr + (2 + i) * PAGE_SIZE);
  }
  assert.equal(view.getBigUint64(layout.wasmTablesAddr + PAGE_SIZE + 16, true), 0n);
  for (let i = 0; i < 1024; i++) assert.equal(entry(view, layout.wasmTablesAddr, i), 0n);
  assert.throws(() => computeLayout(IMAGE, { wasmReservationSize: MIB }), /multiple of 2 MiB/);
});

Deno.test("wasm reservation: map, grow, refuse, shrink and drop", () => {
  const { layout, mem, view } = setup();
  const heap = layout.heapAddr;
  assert.deepEqual(wasmMapping(mem, layout), { base: 0, bytes: 0 });
  assert.equal(mapWasmMemory(mem, layout, heap, 64 * 1024), undefined);
  assert.deepEqual(wasmMapping(mem, layout), { base: heap, bytes: 64 * 1024 });
  const first = entry(view, layout.wasmTablesAddr, 0);
  assert.equal(Number(first & 0xfffff000n), heap);
  assert.equal(first & 0x7n, 0x7n, "present, writable, user");
  assert.equal(first >> 63n, 1n, "NX");
  assert.equal(mapWasmMemory(mem, layout, heap, 3 * MIB), undefined, "grow");
  assert.deepEqual(wasmMapping(mem, layout), { base: heap, bytes: 3 * MIB });
  assert.equal(Number(entry(view, layout.wasmTablesAddr, 767) & 0xfffff000n), heap + 767 * 4096);
  assert.equal(entry(view, layout.wasmTablesAddr, 768), 0n);

  const refused: [number, number, RegExp][] = [
    [heap, 4 * MIB + PAGE_SIZE, /reservation/],
    [heap, 100, /multiple of 4 KiB/],
    [heap + 1, PAGE_SIZE, /page-aligned/],
    [layout.heapAddr - PAGE_SIZE, PAGE_SIZE, /inside the heap/],
    [layout.heapAddr + layout.heapSize - PAGE_SIZE, 2 * PAGE_SIZE, /inside the heap/],
    [heap + PAGE_SIZE, 3 * MIB, /another block/],
    [heap, 2 ** 60, /reservation/],
  ];
  for (const [base, bytes, why] of refused) {
    assert.throws(() => mapWasmMemory(mem, layout, base, bytes), why, `${base} ${bytes}`);
  }
  assert.deepEqual(wasmMapping(mem, layout), { base: heap, bytes: 3 * MIB }, "unchanged");

  assert.deepEqual(mapWasmMemory(mem, layout, heap, MIB), { offset: heap + MIB, length: 2 * MIB });
  assert.equal(entry(view, layout.wasmTablesAddr, 256), 0n);
  assert.deepEqual(mapWasmMemory(mem, layout, 0, 0), { offset: heap, length: MIB });
  assert.deepEqual(wasmMapping(mem, layout), { base: 0, bytes: 0 });
  // Unmapped, another block may be mapped.
  assert.equal(mapWasmMemory(mem, layout, heap + MIB, PAGE_SIZE), undefined);
  assert.throws(() => mapWasmMemory(setup(0).mem, setup(0).layout, heap, 0), /no Wasm/);
});

Deno.test("wasm reservation: what a restore drops; which faults are in the reservation", () => {
  const a = { base: 0x100000, bytes: 3 * MIB };
  assert.equal(droppedByRestore({ base: 0, bytes: 0 }, a), undefined);
  assert.equal(droppedByRestore(a, a), undefined);
  assert.equal(droppedByRestore(a, { base: a.base, bytes: 4 * MIB }), undefined);
  assert.deepEqual(droppedByRestore(a, { base: a.base, bytes: MIB }), {
    offset: a.base + MIB,
    length: 2 * MIB,
  });
  assert.deepEqual(droppedByRestore(a, { base: 0, bytes: 0 }), { offset: a.base, length: a.bytes });
  assert.deepEqual(droppedByRestore(a, { base: 0x200000, bytes: MIB }), {
    offset: a.base,
    length: a.bytes,
  });
  const { layout } = setup();
  const start = BigInt(WASM_RESERVATION_ADDR);
  assert.ok(inWasmReservation(layout, start));
  assert.ok(inWasmReservation(layout, start + BigInt(WASM_RESERVATION_SPAN) - 1n));
  assert.ok(!inWasmReservation(layout, start + BigInt(WASM_RESERVATION_SPAN)));
  assert.ok(!inWasmReservation(layout, start - 1n));
  assert.ok(!inWasmReservation(setup(0).layout, start));
});

/** The host address of `mem[0]`. */
const address = (mem: Uint8Array) => Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(mem)!));

/** `setup()` on page-aligned memory (as guest memory is: an `mmap`), untouched past the tables. */
function alignedSetup(reservation = 4 * MIB, heapSize = 16 * MIB) {
  const { layout } = setup(reservation, heapSize);
  const big = new Uint8Array(layout.memorySize + PAGE_SIZE);
  const shift = (PAGE_SIZE - address(big) % PAGE_SIZE) % PAGE_SIZE;
  const mem = big.subarray(shift, shift + layout.memorySize);
  writePeb(mem, layout);
  writePageTables(mem, layout, []);
  return { layout, mem };
}

/**
 * Whether each 4 KiB page of `[from, to)` of `mem` is present in this process: `mincore(2)` through
 * libc (reading `/proc/self/pagemap` would need every permission).
 */
function present(mem: Uint8Array, from: number, to: number): boolean[] {
  const addr = address(mem) + from;
  if (addr % PAGE_SIZE !== 0) throw new Error("the test's memory is not page-aligned");
  const pages = (to - from) / PAGE_SIZE;
  const libc = Deno.dlopen("libc.so.6", {
    mincore: { parameters: ["pointer", "usize", "buffer"], result: "i32" },
  });
  try {
    const vec = new Uint8Array(pages);
    const rc = libc.symbols.mincore(
      Deno.UnsafePointer.create(BigInt(addr)),
      BigInt(to - from),
      vec,
    );
    if (rc !== 0) throw new Error("mincore failed");
    return Array.from(vec, (v) => (v & 1) === 1);
  } finally {
    libc.close();
  }
}

Deno.test("wasm reservation: what a grow maps is present in the host before the guest touches it", () => {
  // KVM maps a faulting guest page together with its neighbours only where the host's pages are
  // present already (docs/wasm.md, "First touch of linear memory"): the host makes them present,
  // keeping every byte, and maps nothing beyond what was asked.
  const { layout, mem } = alignedSetup();
  const heap = layout.heapAddr;
  const before = present(mem, heap, heap + 3 * MIB);
  assert.ok(before.some((p) => !p), "the heap's pages start not present (the test can fail)");
  mem[heap + 5000] = 0xa5;
  mem[heap + 2 * MIB + 7] = 0x5a;
  mapWasmMemory(mem, layout, heap, MIB);
  mapWasmMemory(mem, layout, heap, 3 * MIB); // a grow: only the new part is touched
  assert.ok(present(mem, heap, heap + 3 * MIB).every((p) => p), "every mapped page present");
  assert.equal(mem[heap + 5000], 0xa5, "content kept");
  assert.equal(mem[heap + 2 * MIB + 7], 0x5a, "content kept");
  assert.equal(mem.subarray(heap, heap + 3 * MIB).reduce((n, b) => n + (b ? 1 : 0), 0), 2);
  // A shrink touches nothing.
  assert.deepEqual(mapWasmMemory(mem, layout, heap, MIB), { offset: heap + MIB, length: 2 * MIB });
});

Deno.test("wasm reservation: one grow makes at most PREFAULT_MAX_BYTES present ahead", () => {
  // The host does this work on the thread that serves host calls; past the bound the guest's own
  // faults bring the pages in, as before.
  const size = PREFAULT_MAX_BYTES + 8 * MIB; // past a 2 MiB huge page where THP is always on
  const { layout, mem } = alignedSetup(size, size + 2 * MIB);
  const heap = layout.heapAddr;
  mapWasmMemory(mem, layout, heap, size);
  const pages = present(mem, heap, heap + size);
  const bound = PREFAULT_MAX_BYTES / PAGE_SIZE;
  assert.ok(pages.slice(0, bound).every((p) => p), "the first PREFAULT_MAX_BYTES present");
  assert.ok(pages.slice(bound).some((p) => !p), "not what lies past it");
});
