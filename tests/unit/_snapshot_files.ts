// Writes snapshot files around a given description, for the unit tests of the description's
// checks (src/snapshot_file.ts): the header as the format defines it, the description, zero pages;
// and a byte flipped in a file in place, for the tests of the code-image check.
import { ABI_VERSION } from "../../src/abi.ts";
import { PACKAGE_VERSION } from "../../src/artifacts.ts";
import { CDYLIB_ABI_VERSION } from "../../src/ffi/lib.ts";
import { SNAPSHOT_FORMAT_VERSION, SNAPSHOT_MAGIC } from "../../src/snapshot_file.ts";

/** The description fields that name this library and its versions, as a saved file has them. */
export function versionFields(): Record<string, unknown> {
  return {
    format: SNAPSHOT_FORMAT_VERSION,
    library: PACKAGE_VERSION,
    cdylibAbi: CDYLIB_ABI_VERSION,
    guestAbi: ABI_VERSION,
    cpu: "0123456789abcdef",
  };
}

/**
 * A writer of files into a temporary folder (removed at unload): each call writes a header, `d`
 * as the description (its SHA-256 correct unless `badSum`) and zero pages, and returns the path.
 */
export function snapshotFileWriter(
  prefix: string,
): (d: Record<string, unknown>, badSum?: boolean) => Promise<string> {
  const dir = Deno.makeTempDirSync({ prefix });
  addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
  let n = 0;
  return async (d, badSum = false) => {
    const json = new TextEncoder().encode(JSON.stringify(d));
    const out = new Uint8Array(8192);
    out.set(SNAPSHOT_MAGIC, 0);
    const view = new DataView(out.buffer);
    view.setUint32(8, SNAPSHOT_FORMAT_VERSION, true);
    view.setUint32(12, json.length, true);
    out.set(new Uint8Array(await crypto.subtle.digest("SHA-256", json)), 16);
    if (badSum) out[16] ^= 1;
    out.set(json, 48);
    const path = `${dir}/${n++}.hlsnap`;
    Deno.writeFileSync(path, out);
    return path;
  };
}

/** The byte at `at` of `file`, flipped in place (the same inode and size). */
export function flipByte(file: string, at: number): void {
  const f = Deno.openSync(file, { read: true, write: true });
  try {
    const b = new Uint8Array(1);
    f.seekSync(at, Deno.SeekMode.Start);
    f.readSync(b);
    b[0] ^= 0x5a;
    f.seekSync(at, Deno.SeekMode.Start);
    f.writeSync(b);
  } finally {
    f.close();
  }
}
