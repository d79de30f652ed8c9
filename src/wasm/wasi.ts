/**
 * The host side of WASI preview 1 for `WasmSandbox`. WASI is implemented in the guest
 * (`guest/wasm-runtime/src/wasi.rs`); only what needs the host crosses: output, clocks.
 * {@linkcode WasiRuntime} holds one sandbox's settings and sinks, and
 * {@linkcode wasiHostFunctions} is the host functions the guest calls for them.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import type { HostFunction } from "../call/types.ts";
import type { Writer } from "./codec.ts";
import type { WasiOptions } from "./types.ts";
import { asyncSink } from "./wasi_sink.ts";

const utf8 = new TextEncoder();

/**
 * The WASI host functions: `wasi_write` and `wasi_clock`. Each fails while `runtime()` has none
 * (WASI not enabled for the module).
 */
export function wasiHostFunctions(
  runtime: () => WasiRuntime | undefined,
): Record<string, HostFunction> {
  const on = (): WasiRuntime => {
    const r = runtime();
    if (!r) throw new Error("WASI is not enabled for this module");
    return r;
  };
  return {
    wasi_write: {
      params: ["u32", "bytes"],
      result: "void",
      fn: (fd: number, data: Uint8Array) => {
        on().write(fd, data);
        return undefined;
      },
    },
    wasi_clock: {
      params: ["u32"],
      result: "u64",
      fn: (id: number) => {
        on();
        return clockNow(id);
      },
    },
  };
}

/** `argv[0]` by default: the module file's name, or `module.wasm` for bytes. */
export function moduleName(module: Uint8Array | string | URL): string {
  if (typeof module === "string") return module.split("/").pop()!;
  if (module instanceof URL) return module.pathname.split("/").pop()!;
  return "module.wasm";
}

/** WASI clocks in nanoseconds: 0 realtime, 1 monotonic, 2/3 (CPU time) monotonic too. */
function clockNow(id: number): bigint {
  if (id === 0) return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  return BigInt(Math.round(performance.now() * 1e6));
}

/** The host side of WASI: settings to send to the guest, and the stdout/stderr sinks. */
export class WasiRuntime {
  readonly #args: string[];
  readonly #env: string[];
  readonly #seed: Uint8Array;
  readonly #stdout: (data: Uint8Array) => void;
  readonly #stderr: (data: Uint8Array) => void;

  constructor(options: WasiOptions, module: Uint8Array | string | URL) {
    this.#args = options.args ? [...options.args] : [moduleName(module)];
    if (this.#args.some((a) => typeof a !== "string")) {
      throw new ArgumentError("wasi.args must be strings");
    }
    this.#env = Object.entries(options.env ?? {}).map(([k, v]) => {
      if (typeof v !== "string" || k.includes("=")) {
        throw new ArgumentError(`wasi.env.${k} must be a string and its name has no "="`);
      }
      return `${k}=${v}`;
    });
    if (options.randomSeed !== undefined) {
      if (!(options.randomSeed instanceof Uint8Array) || options.randomSeed.length !== 32) {
        throw new ArgumentError("wasi.randomSeed must be a Uint8Array of 32 bytes");
      }
      this.#seed = options.randomSeed;
    } else {
      this.#seed = crypto.getRandomValues(new Uint8Array(32));
    }
    this.#stdout = options.stdout ?? asyncSink(Deno.stdout);
    this.#stderr = options.stderr ?? asyncSink(Deno.stderr);
  }

  encode(w: Writer): void {
    for (const list of [this.#args, this.#env]) {
      w.u32(list.length);
      for (const s of list) w.bytes(utf8.encode(s));
    }
    w.raw(this.#seed);
  }

  /** fd 1 → stdout, fd 2 → stderr; any other fd is EBADF (the runtime guest may ask anyway). */
  write(fd: number, data: Uint8Array): void {
    if (fd === 1) this.#stdout(data);
    else if (fd === 2) this.#stderr(data);
    else throw new Error(`EBADF: fd ${fd} is not writable`);
  }
}
