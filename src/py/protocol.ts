/**
 * The Python driver's side of the wire as the host reads it: the frames it writes to fd 1 (a
 * reply, an `hl.fetch` request) with the bytes around them, and a reply's JSON. Everything here
 * is hostile input: lengths are bounded by `maxOutputBytes` before anything is kept, and a frame
 * or reply of the wrong shape is a `ProtocolError`.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import { FRAME_MARKER } from "./driver.ts";

const decoder = new TextDecoder();

/** A decoded reply of the driver. */
export type Reply =
  | { ok: true; stdout: string; stderr: string; value?: unknown }
  | { ok: false; type: string; message: string; traceback: string; stdout: string; stderr: string };

/** A frame the driver wrote to fd 1. */
export interface Frame {
  kind: "reply" | "fetch";
  text: string;
}

/**
 * Bytes a new reader holds before its first growth: a typical reply fits. One reader is made per
 * request, and a 64 KiB start cost ~100-200 µs per request on the JavaScript thread (a zeroed
 * allocation, measured at load ~11) against ~9 µs for 4 KiB; larger replies grow it by doubling.
 */
export const READER_START_BYTES = 4096;

/** Reads the frames out of the interpreter's fd 1, with the bytes around them. */
export class ReplyReader {
  #buf = new Uint8Array(READER_START_BYTES);
  #len = 0;
  /** Bytes written to fd 1 outside a reply (user code writing to fd 1 itself). */
  stray = "";
  readonly #max: number;
  readonly #decoder = new TextDecoder();

  constructor(maxBytes: number) {
    this.#max = maxBytes;
  }

  /** Bytes the reader holds now (its buffer's size). */
  get capacity(): number {
    return this.#buf.length;
  }

  /**
   * Adds bytes; returns every frame completed: `Y` a reply, `F` an `hl.fetch` request (throws
   * ProtocolError).
   */
  push(data: Uint8Array): Frame[] {
    if (this.#len + data.length > this.#buf.length) {
      let size = this.#buf.length;
      while (size < this.#len + data.length) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.#buf.subarray(0, this.#len));
      this.#buf = grown;
    }
    this.#buf.set(data, this.#len);
    this.#len += data.length;
    const out: Frame[] = [];
    for (;;) {
      const buf = this.#buf.subarray(0, this.#len);
      const at = indexOf(buf, FRAME_MARKER);
      if (at < 0) {
        // No marker, not even the start of one at the end: all of it is stray output.
        this.#strayBytes(buf);
        this.#shift(buf.length);
        return out;
      }
      if (at > 0) {
        this.#strayBytes(buf.subarray(0, at));
        this.#shift(at);
        continue;
      }
      if (buf.length <= FRAME_MARKER.length) return out;
      const kind = buf[FRAME_MARKER.length];
      if (kind !== 0x59 && kind !== 0x46) throw new ProtocolError("Python frame of unknown kind");
      const head = FRAME_MARKER.length + 1;
      const nl = buf.subarray(head, head + 21).indexOf(10);
      if (nl < 0) {
        if (buf.length >= head + 21) throw new ProtocolError("Python reply: no length line");
        return out;
      }
      const digits = decoder.decode(buf.subarray(head, head + nl));
      if (!/^[0-9]{1,20}$/.test(digits)) throw new ProtocolError("Python reply: bad length");
      const n = Number(digits);
      if (n > this.#max) {
        throw new ProtocolError(`Python reply of ${n} bytes exceeds maxOutputBytes (${this.#max})`);
      }
      const start = head + nl + 1;
      if (buf.length < start + n) return out;
      out.push({
        kind: kind === 0x59 ? "reply" : "fetch",
        text: decoder.decode(buf.subarray(start, start + n)),
      });
      this.#shift(start + n);
    }
  }

  #strayBytes(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    this.stray += this.#decoder.decode(bytes, { stream: true });
    if (this.stray.length > this.#max) {
      throw new ProtocolError(`Python wrote more than maxOutputBytes (${this.#max}) to fd 1`);
    }
  }

  #shift(n: number): void {
    this.#buf.copyWithin(0, n, this.#len);
    this.#len -= n;
  }
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  const first = needle[0];
  for (let i = haystack.indexOf(first); i >= 0; i = haystack.indexOf(first, i + 1)) {
    let j = 1;
    while (j < needle.length && i + j < haystack.length && haystack[i + j] === needle[j]) j++;
    if (j === needle.length) return i;
    if (i + j === haystack.length) return i; // a marker's start at the end: wait for more
  }
  return -1;
}

export function decodeReply(text: string): Reply {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new ProtocolError("Python reply is not JSON");
  }
  const o = v as Record<string, unknown>;
  const str = (k: string) => typeof o[k] === "string";
  if (typeof v !== "object" || v === null || !str("stdout") || !str("stderr")) {
    throw new ProtocolError("Python reply has the wrong shape");
  }
  if (o.ok === true) return o as Reply;
  if (o.ok === false && str("type") && str("message") && str("traceback")) return o as Reply;
  throw new ProtocolError("Python reply has the wrong shape");
}
