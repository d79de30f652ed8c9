/**
 * The host's side of Wasm guard pages (docs/abi.md, "Wasm guard pages"): a sandbox whose layout has
 * a Wasm reservation gets page tables that map nothing at `WASM_RESERVATION_ADDR` at first; the
 * guest asks, through the host function `hl_wasm_map`, for the first `bytes` of the reservation to
 * map a block of its own heap (growing or shrinking the mapping), and a #PF in the unmapped rest
 * from the published code is delivered to the guest's trap entry instead of ending the sandbox.
 *
 * The reservation's page tables are supervisor-only pages the host alone writes, so what they map
 * is always a prefix of the reservation onto one heap block, read back here rather than kept
 * anywhere the guest could change. KVM does not notice the host's writes to guest page tables
 * (its shadow MMU tracks only the guest's own), so every entry the host clears is followed by a
 * drop of the page it mapped (`MicroVm.dropMemory`), which makes KVM forget the translation.
 *
 * @module
 */

import {
  PAGE_SIZE,
  PTE_ACCESSED,
  PTE_DIRTY,
  PTE_NX_HIGH,
  PTE_PRESENT,
  PTE_USER,
  PTE_WRITABLE,
  WASM_RESERVATION_ADDR,
  WASM_RESERVATION_SPAN,
} from "./abi.ts";
import type { MemoryLayout } from "./layout.ts";

/** What the reservation maps: its first `bytes` onto guest-physical `[base, base + bytes)`. */
export interface WasmMapping {
  /** Guest-physical address of the heap block (0 when nothing is mapped). */
  readonly base: number;
  /** Bytes mapped from the start of the reservation (a multiple of 4 KiB). */
  readonly bytes: number;
}

/** A guest-physical range the host must drop after clearing the entries that mapped it. */
export interface DropRange {
  /** Guest-physical address (= offset in memory slot 0). */
  readonly offset: number;
  /** Bytes (a multiple of 4 KiB). */
  readonly length: number;
}

const LEAF = PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_ACCESSED | PTE_DIRTY;

function entries(mem: Uint8Array, layout: MemoryLayout): Uint32Array {
  const count = layout.wasmReservationSize / PAGE_SIZE;
  return new Uint32Array(
    mem.buffer,
    mem.byteOffset + layout.wasmTablesAddr + 2 * PAGE_SIZE,
    2 * count,
  );
}

/**
 * Reads what the reservation maps now, from the host-owned page tables (mapped entries are a
 * prefix: the host writes them no other way). `{ base: 0, bytes: 0 }` without a reservation.
 */
export function wasmMapping(mem: Uint8Array, layout: MemoryLayout): WasmMapping {
  if (layout.wasmReservationSize === 0) return { base: 0, bytes: 0 };
  const words = entries(mem, layout);
  const present = (i: number) => (words[2 * i] & PTE_PRESENT) !== 0;
  let lo = 0;
  let hi = words.length / 2;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (present(mid)) lo = mid + 1;
    else hi = mid;
  }
  if (lo === 0) return { base: 0, bytes: 0 };
  return { base: words[0] & ~(PAGE_SIZE - 1), bytes: lo * PAGE_SIZE };
}

/**
 * Maps the first `bytes` of the reservation onto `[base, base + bytes)`, which must lie in the
 * guest's heap; `bytes` 0 unmaps all. While something is mapped the base cannot change (unmap
 * first). Returns the range the caller must drop (pages that were mapped and no longer are), if
 * any. Throws a `RangeError` naming the problem for a request it refuses (the guest's host call
 * then fails). `mem` views guest memory from address 0 at least up to the reservation's tables;
 * `touch(from, to)` makes the newly mapped guest-physical pages present ({@linkcode touchPages}),
 * by default through `mem` (which must then reach `to`).
 */
export function mapWasmMemory(
  mem: Uint8Array,
  layout: MemoryLayout,
  base: number,
  bytes: number,
  touch: (from: number, to: number) => void = (from, to) => touchPages(mem.subarray(from, to)),
): DropRange | undefined {
  const limit = layout.wasmReservationSize;
  if (limit === 0) throw new RangeError("this sandbox has no Wasm reservation");
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % PAGE_SIZE !== 0 || bytes > limit) {
    throw new RangeError(
      `hl_wasm_map: ${bytes} bytes is not a multiple of 4 KiB up to the reservation's ${limit}`,
    );
  }
  const heapEnd = layout.heapAddr + layout.heapSize;
  if (
    bytes !== 0 &&
    (!Number.isSafeInteger(base) || base % PAGE_SIZE !== 0 || base < layout.heapAddr ||
      base + bytes > heapEnd)
  ) {
    throw new RangeError(
      `hl_wasm_map: [0x${base.toString(16)}, +0x${bytes.toString(16)}) is not page-aligned ` +
        `inside the heap`,
    );
  }
  const now = wasmMapping(mem, layout);
  if (now.bytes !== 0 && bytes !== 0 && base !== now.base) {
    throw new RangeError("hl_wasm_map: the reservation maps another block (unmap it first)");
  }
  const words = entries(mem, layout);
  for (let p = now.bytes / PAGE_SIZE; p < bytes / PAGE_SIZE; p++) {
    words[2 * p] = (base + p * PAGE_SIZE) | LEAF;
    words[2 * p + 1] = PTE_NX_HIGH;
  }
  if (bytes >= now.bytes) {
    const from = base + now.bytes;
    const to = Math.min(base + bytes, from + PREFAULT_MAX_BYTES);
    if (to > from) touch(from, to);
    return undefined;
  }
  words.fill(0, 2 * (bytes / PAGE_SIZE), 2 * (now.bytes / PAGE_SIZE));
  return { offset: now.base + bytes, length: now.bytes - bytes };
}

/**
 * The most one `hl_wasm_map` makes present ahead of the guest (bytes, from the start of what it
 * maps): the work runs on the thread that serves host calls (in Deno, the event loop), ~4 µs per
 * page on this kvm_pvm host for anonymous memory and 6–10 µs for a hole of a snapshot's memfd
 * (docs/wasm.md, "First touch of linear memory"), so 32 MiB holds it for ~35–80 ms and a grow of
 * hundreds of MiB would hold it for seconds; the pages past it fault in the guest as before.
 */
export const PREFAULT_MAX_BYTES = 32 << 20;

/**
 * Makes the host's pages under `pages` (a page-aligned view of guest memory: what
 * {@linkcode mapWasmMemory} newly maps, at most `PREFAULT_MAX_BYTES`) present and writable in this
 * process, without changing a byte: one locked
 * `or 0` per page, which the CPU faults in as a write (one fault per page; a plain read-then-write
 * would fault twice). Every page mapped here is written by the guest right after anyway (it zeroes
 * what comes into use, or has copied a moved memory into it), so this allocates nothing the guest
 * would not. What it saves is the guest's faults: KVM maps a faulting guest page together with up
 * to 7 neighbours of its aligned group of 8 (its page-table prefetch), but only neighbours whose
 * host page is present already and whose guest entry is accessed and dirty (`LEAF`), so on
 * kvm_pvm, where each shadow fault leaves the guest, a run of the 16 MiB hash kernel took ~620 of
 * them instead of ~4,200 (docs/wasm.md, "First touch of linear memory").
 */
export function touchPages(pages: Uint8Array): void {
  const words = new Int32Array(pages.buffer, pages.byteOffset, pages.length >> 2);
  for (let i = 0; i < words.length; i += PAGE_SIZE / 4) Atomics.or(words, i, 0);
}

/**
 * The range to drop after a restore changed the mapping from `before` to `after` (both read with
 * {@linkcode wasmMapping}): pages mapped before and not mapped, or mapped elsewhere, after.
 */
export function droppedByRestore(before: WasmMapping, after: WasmMapping): DropRange | undefined {
  if (before.bytes === 0) return undefined;
  if (after.bytes === 0 || after.base !== before.base) {
    return { offset: before.base, length: before.bytes };
  }
  if (after.bytes >= before.bytes) return undefined;
  return { offset: before.base + after.bytes, length: before.bytes - after.bytes };
}

/** Whether `address` (CR2 of a #PF) lies in the reservation's span Wasm code may address. */
export function inWasmReservation(layout: MemoryLayout, address: bigint): boolean {
  return layout.wasmReservationSize !== 0 && address >= BigInt(WASM_RESERVATION_ADDR) &&
    address < BigInt(WASM_RESERVATION_ADDR + WASM_RESERVATION_SPAN);
}
