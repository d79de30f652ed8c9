/**
 * Shared pieces of the command line (`cli.ts`): the error types that become one line on stderr
 * and an exit code, splitting a command's own options from what follows its operands, value
 * parsing by type, and JSON output of results.
 *
 * @module
 */

import {
  type WasiOptions,
  type WasmEngine,
  WasmLinkError,
  type WasmSandboxOptions,
} from "../wasm/types.ts";
import { WasmSandbox } from "../wasm/sandbox.ts";
import { parseArgs } from "node:util";
import { SandboxError } from "../errors.ts";
import type { ValueType } from "../abi.ts";
import type { WasmValueType } from "../wasm/types.ts";

/** Exit code of a usage error (unknown option, missing operand, bad value). */
export const EXIT_USAGE = 2;
/** Exit code of any other failure of the tool itself (the file cannot be loaded, ...). */
export const EXIT_FAILURE = 1;
/** Exit code when the program trapped or the guest failed (as if it had aborted: 128 + 6). */
export const EXIT_TRAP = 134;
/** Exit code when `--timeout` fired (as `timeout(1)`). */
export const EXIT_TIMEOUT = 124;

/** A failure reported as one line on stderr with `exitCode`. */
export class CliError extends Error {
  /** The process exit code. */
  readonly exitCode: number;

  constructor(message: string, exitCode = EXIT_FAILURE, options?: ErrorOptions) {
    super(message, options);
    this.exitCode = exitCode;
  }
}

/** A usage error: exit code 2, with a hint to `--help`. */
export function usage(command: string, message: string): CliError {
  return new CliError(`${message} (see: hl ${command} --help)`, EXIT_USAGE);
}

/**
 * An error's whole message on one line: its lines joined with spaces (a guest panic's
 * "panicked at src/main.rs:32:5:" and its reason on the next line stay together); never a stack.
 */
export function oneLine(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const line = text.split("\n").map((l) => l.trim()).filter((l) => l !== "").join(" ");
  return line || (e instanceof Error ? e.name : "error");
}

/** Option specs of `node:util` `parseArgs`. */
export type OptionSpecs = Record<
  string,
  { type: "string" | "boolean"; multiple?: boolean; short?: string }
>;

/**
 * Splits `argv` of a command into its options (before the first operand), its `count` operands,
 * and everything after them verbatim (an immediate `--` after the last operand is dropped; a
 * `--` before the operands ends the options). Options are then checked by `parseArgs` (strict:
 * an unknown option is a usage error).
 */
export function splitArgs(
  command: string,
  argv: readonly string[],
  specs: OptionSpecs,
  count: number,
): {
  values: Record<string, string | boolean | string[] | undefined>;
  operands: string[];
  rest: string[];
} {
  const takesValue = new Set<string>();
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.type === "string") {
      takesValue.add(`--${name}`);
      if (spec.short) takesValue.add(`-${spec.short}`);
    }
  }
  let i = 0;
  const options: string[] = [];
  while (i < argv.length) {
    const a = argv[i];
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-") || a === "-") break;
    options.push(a);
    if (takesValue.has(a) && !a.includes("=")) {
      if (i + 1 >= argv.length) throw usage(command, `option ${a} needs a value`);
      options.push(argv[i + 1]);
      i++;
    }
    i++;
  }
  let values: Record<string, string | boolean | string[] | undefined>;
  try {
    values = parseArgs({ args: options, options: specs, strict: true, allowPositionals: false })
      .values as Record<string, string | boolean | string[] | undefined>;
  } catch (e) {
    throw usage(command, oneLine(e));
  }
  const operands = argv.slice(i, i + count);
  let rest = argv.slice(i + count);
  if (rest[0] === "--") rest = rest.slice(1);
  if (values.help) return { values, operands, rest };
  if (operands.length < count) throw usage(command, "missing operand");
  return { values, operands, rest };
}

/** A non-negative integer option (`--fuel`, `--timeout`); `undefined` when not given. */
export function intOption(
  command: string,
  name: string,
  text: unknown,
): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (typeof text !== "string" || !/^\d+$/.test(text) || !Number.isSafeInteger(n)) {
    throw usage(command, `--${name} must be a non-negative integer, got ${JSON.stringify(text)}`);
  }
  return n;
}

/** `--engine`: `wasmi` or `wasmtime`; `undefined` (the library's default) when not given. */
export function engineOption(command: string, text: unknown): WasmEngine | undefined {
  if (text === undefined) return undefined;
  if (text === "wasmi" || text === "wasmtime") return text;
  throw usage(command, `--engine must be wasmi or wasmtime, got ${JSON.stringify(text)}`);
}

/** A byte size: an integer with an optional K, M or G suffix (powers of 1024). */
export function sizeOption(command: string, name: string, text: unknown): number | undefined {
  if (text === undefined) return undefined;
  const m = typeof text === "string" ? /^(\d+)([KMG]i?B?)?$/i.exec(text) : null;
  if (!m) {
    throw usage(command, `--${name} must be a size like 65536, 64K or 16M, got ${text}`);
  }
  const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[
    (m[2] ?? "").charAt(0).toLowerCase()
  ]!;
  const n = Number(m[1]) * unit;
  if (!Number.isSafeInteger(n)) throw usage(command, `--${name} is too large`);
  return n;
}

const INT = /^[+-]?(0x[0-9a-f]+|\d+)$/i;

function integer(text: string): bigint | undefined {
  if (!INT.test(text)) return undefined;
  const neg = text.startsWith("-");
  const digits = text.replace(/^[+-]/, "");
  const v = BigInt(digits);
  return neg ? -v : v;
}

function float(text: string): number | undefined {
  const t = text.toLowerCase();
  if (t === "nan") return NaN;
  if (t === "inf" || t === "+inf" || t === "infinity") return Infinity;
  if (t === "-inf" || t === "-infinity") return -Infinity;
  if (!/^[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?|0x[0-9a-f]+)$/i.test(text)) return undefined;
  return Number(text);
}

/**
 * Parses a command-line argument as a value of `type` (Wasm types and the native guest ABI's
 * types). Integers: decimal or `0x` hex, range-checked; floats: decimal, `nan`, `inf`; `bool`:
 * `true`/`false`/`1`/`0`; `string`: as is; `bytes`: `hex:0a0b...` or the text's UTF-8.
 */
export function parseValue(
  text: string,
  type: WasmValueType | ValueType,
  where: string,
): unknown {
  const bad = (what: string) =>
    new CliError(`${where}: ${JSON.stringify(text)} is not ${what}`, EXIT_USAGE);
  const ranged = (lo: bigint, hi: bigint, what: string) => {
    const v = integer(text);
    if (v === undefined || v < lo || v > hi) throw bad(what);
    return v;
  };
  switch (type) {
    case "i32":
      return Number(ranged(-(1n << 31n), (1n << 32n) - 1n, "an i32 (-2^31 .. 2^32-1)"));
    case "u32":
      return Number(ranged(0n, (1n << 32n) - 1n, "a u32"));
    case "i64":
      return ranged(-(1n << 63n), (1n << 64n) - 1n, "an i64 (-2^63 .. 2^64-1)");
    case "u64":
      return ranged(0n, (1n << 64n) - 1n, "a u64");
    case "f32":
    case "f64": {
      const v = float(text);
      if (v === undefined) throw bad(`an ${type} (a number, nan, inf)`);
      return v;
    }
    case "bool":
      if (text === "true" || text === "1") return true;
      if (text === "false" || text === "0") return false;
      throw bad("a bool (true, false, 1, 0)");
    case "string":
      return text;
    case "bytes":
      if (text.startsWith("hex:")) {
        const hex = text.slice(4);
        if (!/^([0-9a-f]{2})*$/i.test(hex)) throw bad("hex:<pairs of hex digits>");
        return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
      }
      return new TextEncoder().encode(text);
    default:
      throw bad(`a value of type ${type} (it cannot be given on the command line)`);
  }
}

/**
 * A result as JSON text: bigints as exact integers, non-finite floats as the strings `"NaN"`,
 * `"Infinity"`, `"-Infinity"`, bytes as an array of numbers, `undefined` as `null`.
 */
export function toJson(value: unknown): string {
  if (value === undefined || value === null) return "null";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "number") {
    return Number.isFinite(value) ? JSON.stringify(value) : `"${value}"`;
  }
  if (value instanceof Uint8Array) return `[${[...value].join(",")}]`;
  if (Array.isArray(value)) return `[${value.map(toJson).join(",")}]`;
  return JSON.stringify(value);
}

/** Writes all of `data` to a file synchronously (the CLI's stdout/stderr). */
export function writeAllSync(file: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += file.writeSync(data.subarray(off));
}

/**
 * `WasmSandbox.create` for a command: not cached (one module per process), WASI output to this
 * process's stdout and stderr, and an import the command cannot provide reported as one line.
 */
export async function createCliSandbox(
  command: string,
  options: Omit<WasmSandboxOptions, "wasi"> & { wasi: WasiOptions },
): Promise<WasmSandbox> {
  try {
    return await WasmSandbox.create({
      ...options,
      cache: false,
      wasi: {
        ...options.wasi,
        stdout: (b) => writeAllSync(Deno.stdout, b),
        stderr: (b) => writeAllSync(Deno.stderr, b),
      },
    });
  } catch (e) {
    if (
      e instanceof WasmLinkError && e.importName !== undefined && !e.importName.startsWith("wasi_")
    ) {
      throw new CliError(
        `the module imports ${e.importName}, a host function hl ${command} cannot provide`,
      );
    }
    throw e;
  }
}

/** Whether `bytes` start with the Wasm magic `\0asm`. */
export function isWasm(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0 && bytes[1] === 0x61 && bytes[2] === 0x73 &&
    bytes[3] === 0x6d;
}

/** Whether `bytes` start with the ELF magic. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c &&
    bytes[3] === 0x46;
}

/** Reads the file an operand names; a missing file is one clear line. */
export async function readOperand(path: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${oneLine(e)}`);
  }
}

/** Maps a library error to the CLI's exit codes. */
export function exitCodeOf(e: unknown): number {
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof SandboxError) {
    if (e.name === "TimeoutError") return EXIT_TIMEOUT;
    if (
      e.name === "WasmTrapError" || e.name === "GuestPanicError" ||
      e.name === "GuestFaultError" || e.name === "StackOverflowError"
    ) return EXIT_TRAP;
  }
  return EXIT_FAILURE;
}
