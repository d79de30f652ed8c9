/**
 * The input and output buffers through small views (issue 19, "Scale"): V8 counts an external
 * ArrayBuffer's whole length as external memory and collects garbage as that grows, so a live
 * sandbox keeps views of only the first {@linkcode SMALL_VIEW_BYTES} of each buffer. A frame that
 * does not fit is written or read through a view of the whole buffer made for that frame and
 * detached right after (`MicroVm.memoryView` / `MicroVm.releaseView`). The frame's bounds are the
 * real buffer's: a frame that fits neither view fails as it did with one view of the whole buffer.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import { FRAME_HEADER_SIZE } from "../abi.ts";
import { type Frame, FrameDecoder, FrameEncoder } from "../wire.ts";

// Eager compilation (docs/js.md "Eager compilation"): `encode` and `decode` run in every cold
// create + first call, and V8 compiles a method lazily in every new process; their bodies are
// static private fields written `(function f(self, ...) {...}).bind(undefined)`, which V8 compiles
// with the module (Deno's code cache then holds them), the methods delegating with `this`.

/** How much of each buffer a live sandbox views: frames up to this size need no other view. */
export const SMALL_VIEW_BYTES = 64 << 10;

/** Makes a view of a whole buffer for one frame, and detaches it afterwards. */
export interface Widen {
  /** A view of the whole buffer (its real size). */
  view(): Uint8Array;
  /** Detaches a view `view()` gave (no use of it follows). */
  release(view: Uint8Array): void;
}

/**
 * Encodes frames into the input buffer through a small view, widening for a frame that does not
 * fit it (the error for a frame that fits neither names the real buffer's size).
 *
 * @example
 * ```ts ignore
 * const encoder = new WindowedEncoder(small, inputSize, widen, "inputSize");
 * encoder.encode({ kind: "CALL", name: "add", args: [] });
 * ```
 */
export class WindowedEncoder {
  readonly #small: FrameEncoder;
  readonly #narrow: boolean;
  readonly #widen: Widen;
  readonly #optionName: string;

  /** `small`: the first bytes of the buffer (at most `size`); `size`: the buffer's real size. */
  constructor(small: Uint8Array, size: number, widen: Widen, optionName = "inputSize") {
    this.#small = new FrameEncoder(small, optionName);
    this.#narrow = small.length < size;
    this.#widen = widen;
    this.#optionName = optionName;
  }

  /** Writes `frame` at the start of the buffer and returns its size; `FrameEncoder.encode`. */
  encode(frame: Frame): number {
    return WindowedEncoder.#encode(this, frame);
  }

  static readonly #encode = (function windowedEncode(self: WindowedEncoder, frame: Frame): number {
    try {
      return self.#small.encode(frame);
    } catch (e) {
      if (!self.#narrow || !(e instanceof ArgumentError)) throw e;
    }
    const view = self.#widen.view();
    try {
      return new FrameEncoder(view, self.#optionName).encode(frame);
    } finally {
      self.#widen.release(view);
    }
  }).bind(undefined); // Eager: see the note after the imports.
}

/**
 * Decodes the frame the guest wrote at the start of the output buffer through a small view, or,
 * when its header's length runs past that view, through a view of the whole buffer made for it
 * (the header is hostile: the decoder checks it against the real buffer's size).
 *
 * @example
 * ```ts ignore
 * const decoder = new WindowedDecoder(small, outputSize, widen);
 * const frame = decoder.decode();
 * ```
 */
export class WindowedDecoder {
  readonly #small: FrameDecoder;
  readonly #header: DataView | undefined;
  readonly #room: number;
  readonly #widen: Widen;
  readonly #make: (view: Uint8Array) => FrameDecoder;

  /**
   * `small`: the first bytes of the buffer (at most `size`); `size`: the buffer's real size;
   * `make`: the decoder for a view (e.g. a subclass that memoises).
   */
  constructor(
    small: Uint8Array,
    size: number,
    widen: Widen,
    make: (view: Uint8Array) => FrameDecoder = (view) => new FrameDecoder(view),
  ) {
    this.#small = make(small);
    // A small view shorter than a header is the whole buffer (or the decoder's own error).
    this.#header = small.length < size && small.length >= FRAME_HEADER_SIZE
      ? new DataView(small.buffer, small.byteOffset, FRAME_HEADER_SIZE)
      : undefined;
    this.#room = small.length - FRAME_HEADER_SIZE;
    this.#widen = widen;
    this.#make = make;
  }

  /** Decodes the frame at the start of the buffer; `FrameDecoder.decode`. */
  decode(): Frame {
    return WindowedDecoder.#decode(this);
  }

  static readonly #decode = (function windowedDecode(self: WindowedDecoder): Frame {
    const header = self.#header;
    if (header === undefined || header.getUint32(4, true) <= self.#room) {
      return self.#small.decode();
    }
    const view = self.#widen.view();
    try {
      return self.#make(view).decode();
    } finally {
      self.#widen.release(view);
    }
  }).bind(undefined); // Eager: see the note after the imports.
}
