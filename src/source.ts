/**
 * Reading a binary given as bytes, a path or a `file:` URL (guest images, Wasm modules).
 *
 * @module
 */

import { ArgumentError, PermissionError } from "./errors.ts";
import { readFile } from "./host_io.ts";

/**
 * Returns `source`'s bytes; a path or URL that cannot be read is an `ArgumentError` (a missing
 * permission a {@linkcode PermissionError}). `--allow-ffi` alone is enough (`host_io.ts`).
 */
export async function readSource(
  source: Uint8Array | string | URL,
  what: string,
): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (typeof source === "string" || source instanceof URL) {
    try {
      return await readFile(source, what);
    } catch (e) {
      if (e instanceof PermissionError) throw e;
      throw new ArgumentError(
        `cannot read the ${what} ${source}: ${e instanceof Error ? e.message : String(e)}`,
        { cause: e },
      );
    }
  }
  throw new ArgumentError(`${what} must be a Uint8Array, a path or a file: URL`);
}
