/**
 * The default WASI stdout/stderr sinks of `WasmSandbox`: asynchronous, ordered, with a quota.
 *
 * @module
 */

import { describeThrown } from "../call/describe.ts";

/** Bytes a default sink holds while its stream drains; beyond them a write fails (EIO). */
export const WASI_SINK_QUOTA = 1 << 20;

/** Something like `Deno.stdout`: an asynchronous writer. */
export interface AsyncWriter {
  write(p: Uint8Array): Promise<number>;
}

/**
 * A default WASI sink: writes go out asynchronously, in order, so a blocked pipe never blocks
 * the event loop; at most `quota` bytes wait at once, and a write past it throws (the module's
 * `fd_write` gets EIO). A failed stream drops what waits and fails later writes.
 */
export function asyncSink(
  file: AsyncWriter,
  quota = WASI_SINK_QUOTA,
): (data: Uint8Array) => void {
  let pending = 0;
  let failed: unknown;
  let chain = Promise.resolve();
  return (data) => {
    if (failed !== undefined) throw new Error(`the WASI output stream failed: ${failed}`);
    if (pending + data.length > quota) {
      throw new Error(`the WASI output stream is ${pending} bytes behind (quota ${quota})`);
    }
    const copy = data.slice();
    pending += copy.length;
    chain = chain.then(async () => {
      if (failed !== undefined) return;
      try {
        let off = 0;
        while (off < copy.length) off += await file.write(copy.subarray(off));
      } catch (e) {
        // Never throws, whatever the stream threw (a later write's message is built from it).
        failed = describeThrown(e);
      } finally {
        pending -= copy.length;
      }
    });
  };
}
