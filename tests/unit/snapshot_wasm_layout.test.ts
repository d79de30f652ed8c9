// A snapshot file's Wasm reservation layout is bounded like the rest of its layout
// (src/snapshot_file.ts): the host reads and writes the reservation's page tables at
// `wasmTablesAddr` on every hl_wasm_map and restore (src/wasm_reservation.ts), so a description
// whose reservation is too large, misaligned, or whose tables lie elsewhere than computeLayout puts
// them (over the input buffer or the heap, where the guest writes and hl_wasm_map can map) is
// refused as corrupt, not loaded.
import assert from "node:assert/strict";
import { MEMORY_ALIGN, PAGE_SIZE, PT_BASE_ADDR } from "../../src/abi.ts";
import { SnapshotFormatError } from "../../src/snapshot.ts";
import { readSnapshotDescription } from "../../src/snapshot_file.ts";
import { snapshotFileWriter, versionFields } from "./_snapshot_files.ts";

const write = snapshotFileWriter("hl-snapwasm-");

const PAGES = 32;
const TABLES = PT_BASE_ADDR + PAGE_SIZE; // after one identity page table
const INPUT = TABLES + 3 * PAGE_SIZE; // PDPT, PD and one page table for 2 MiB

/** A layout as computeLayout makes it for a 2 MiB reservation, in a 32-page memory. */
function layout(): Record<string, number> {
  return {
    memorySize: PAGES * PAGE_SIZE,
    pageTableCount: 1,
    inputAddr: INPUT,
    inputSize: PAGE_SIZE,
    outputAddr: INPUT + PAGE_SIZE,
    outputSize: PAGE_SIZE,
    imageAddr: INPUT + 2 * PAGE_SIZE,
    imageSize: PAGE_SIZE,
    imageBase: INPUT + 2 * PAGE_SIZE,
    heapAddr: INPUT + 3 * PAGE_SIZE,
    heapSize: 4 * PAGE_SIZE,
    guardAddr: INPUT + 7 * PAGE_SIZE,
    stackAddr: INPUT + 8 * PAGE_SIZE,
    stackSize: PAGE_SIZE,
    stackTop: INPUT + 9 * PAGE_SIZE,
    codeAddr: 0,
    codeSize: 0,
    wasmReservationSize: MEMORY_ALIGN,
    wasmTablesAddr: TABLES,
  };
}

/** A file whose description has layout `l` (a Wasm snapshot otherwise well formed). */
function file(l: Record<string, number>): Promise<string> {
  return write({
    ...versionFields(),
    kind: "wasm",
    memory: { size: PAGES * PAGE_SIZE, offset: 4096, bitmap: "/////w==", crc: 0 },
    layout: l,
    vcpu: "",
    guestId: "test",
    functions: [],
    imports: null,
    hostSignatures: [],
  });
}

Deno.test("snapshot description: a Wasm reservation laid out as computeLayout does reads back", async () => {
  const { description } = await readSnapshotDescription(await file(layout()));
  assert.equal(description.layout.wasmTablesAddr, TABLES);
  const none = { ...layout(), wasmReservationSize: 0, wasmTablesAddr: 0 };
  assert.equal(
    (await readSnapshotDescription(await file(none))).description.layout.wasmTablesAddr,
    0,
  );
});

Deno.test("snapshot description: a Wasm reservation that does not fit is refused as corrupt", async () => {
  const bad: [string, Partial<Record<string, number>>][] = [
    ["a reservation far past 1 GiB", { wasmReservationSize: 2 ** 40 }],
    ["a reservation not a multiple of 2 MiB", { wasmReservationSize: MEMORY_ALIGN + PAGE_SIZE }],
    ["tables in the heap", { wasmTablesAddr: INPUT + 3 * PAGE_SIZE }],
    ["tables over the input buffer", { wasmTablesAddr: TABLES + PAGE_SIZE }],
    ["tables past the memory", { wasmTablesAddr: 2 ** 40 }],
    ["tables without a reservation", { wasmReservationSize: 0 }],
    ["a reservation without tables", { wasmTablesAddr: 0 }],
  ];
  for (const [what, change] of bad) {
    const path = await file({ ...layout(), ...change } as Record<string, number>);
    await assert.rejects(
      readSnapshotDescription(path),
      (e: unknown) => e instanceof SnapshotFormatError && e.reason === "corrupt",
      what,
    );
  }
});
