/**
 * Where a language runtime's console output goes: the runtime writes it to WASI stdout/stderr,
 * and {@linkcode Output} hands it on as lines (`onLog`) or bytes (`stdout`/`stderr` sinks, or the
 * host's own). One per VM; it moves with the VM to a pool's next handle.
 *
 * Internal (not exported by `mod.ts`).
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** The output options every language-runtime sandbox takes (`JsOutputOptions`, ...). */
export interface OutputOptions {
  /** Each line, without its newline: `"log"` from stdout, `"error"` from stderr. */
  onLog?: (level: "log" | "error", line: string) => void;
  /** stdout as bytes (default: the host's stdout). */
  stdout?: (data: Uint8Array) => void;
  /** stderr as bytes (default: the host's stderr). */
  stderr?: (data: Uint8Array) => void;
}

/**
 * Checks that each output option, if given, is a function.
 *
 * @example
 * ```ts ignore
 * checkOutput({ onLog: (level, line) => console.log(level, line) });
 * ```
 */
export const checkOutput = (function checkOutput(options: OutputOptions): void {
  for (const k of ["onLog", "stdout", "stderr"] as const) {
    if (options[k] !== undefined && typeof options[k] !== "function") {
      throw new ArgumentError(`${k} must be a function`);
    }
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The longest line (in UTF-16 code units) {@linkcode Output} holds for `onLog`: a guest that never
 * writes a newline has its output handed on in pieces of this length, so the host's memory stays
 * bounded (guest output is hostile).
 */
export const MAX_LINE_LENGTH = 1 << 20;

/**
 * Where the VM's WASI output goes; moves with the VM to a pool's next handle.
 *
 * @example
 * ```ts ignore
 * const output = new Output({ onLog: (level, line) => console.log(level, line) });
 * await WasmSandbox.create({ module, wasi: output.sinks() }); // console lines reach onLog
 * output.flush(); // at the end of each call: a last line without its newline
 * ```
 */
export class Output {
  onLog: OutputOptions["onLog"];
  stdout: OutputOptions["stdout"];
  stderr: OutputOptions["stderr"];
  readonly #partial = { log: "", error: "" };
  readonly #decoders = { log: new TextDecoder(), error: new TextDecoder() };

  constructor(options: OutputOptions) {
    this.onLog = options.onLog;
    this.stdout = options.stdout;
    this.stderr = options.stderr;
  }

  /** The WASI `stdout`/`stderr` sinks of the VM, writing here. */
  sinks(): { stdout: (b: Uint8Array) => void; stderr: (b: Uint8Array) => void } {
    return { stdout: (b) => this.write("log", b), stderr: (b) => this.write("error", b) };
  }

  /** The sink for one stream (`undefined`: the host's own stdout/stderr). */
  write(level: "log" | "error", data: Uint8Array): void {
    if (this.onLog) {
      const text = this.#partial[level] + this.#decoders[level].decode(data, { stream: true });
      const lines = text.split("\n");
      let rest = lines.pop()!;
      for (const line of lines) this.onLog(level, line);
      while (rest.length > MAX_LINE_LENGTH) {
        // Not between the halves of a surrogate pair.
        const high = rest.charCodeAt(MAX_LINE_LENGTH - 1);
        const cut = high >= 0xd800 && high <= 0xdbff ? MAX_LINE_LENGTH - 1 : MAX_LINE_LENGTH;
        this.onLog(level, rest.slice(0, cut));
        rest = rest.slice(cut);
      }
      this.#partial[level] = rest;
      return;
    }
    const sink = level === "log" ? this.stdout : this.stderr;
    if (sink) sink(data);
    else if (level === "log") Deno.stdout.writeSync(data);
    else Deno.stderr.writeSync(data);
  }

  /** Hands a line left without its newline to `onLog` (at the end of each call). */
  flush(): void {
    for (const level of ["log", "error"] as const) {
      const rest = this.#partial[level];
      this.#partial[level] = "";
      if (rest && this.onLog) this.onLog(level, rest);
    }
  }
}
