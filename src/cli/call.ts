/**
 * `hl call <guest-ELF-or-module> <function> [args...]`: calls one function with arguments
 * parsed from its signature (the Wasm export's type, or the native guest's function table) and
 * prints the result as JSON.
 *
 * @module
 */

import { Sandbox } from "../sandbox.ts";
import type { ValueType } from "../abi.ts";
import type { WasmEngine, WasmValueType } from "../wasm/types.ts";
import {
  CliError,
  createCliSandbox,
  engineOption,
  EXIT_USAGE,
  intOption,
  isElf,
  isWasm,
  parseValue,
  readOperand,
  splitArgs,
  toJson,
} from "./common.ts";
import { callJs, isJsPath } from "./js.ts";

/** `hl call --help`. */
export const CALL_HELP =
  `Usage: hl call [options] <module.wasm | guest-ELF | script.js> <function> [args...]

Calls one function in a new micro-VM and prints its result as JSON. Arguments
are parsed by the function's signature: the Wasm export's type, or the native
guest's function table (see: hl inspect).

  integers  decimal or 0x hex (i64/u64 exact), range-checked
  floats    decimal, nan, inf, -inf
  bool      true, false, 1, 0
  string    as given
  bytes     hex:0a0b... or the argument's UTF-8

Errors number arguments from 0 ("add argument 0" is the first), as the
library's messages do.

Results: i64/u64 as exact integers, NaN/Infinity as strings, bytes as an array
of numbers, several Wasm results as an array, none as null. A Wasm module may
import WASI (output goes to this process's stdout/stderr) but no other host
functions.

A .js file is evaluated as a classic script (QuickJS, see: hl js --help) and
<function> (a global, or a dotted path like lib.fn) is called with each
argument parsed as JSON (text that is not JSON is a string); the result is
printed as JSON. An uncaught exception exits 1 with its JS stack.

Options:
  --timeout MS   stop the call after MS milliseconds (exit 124)
  --fuel N       fuel for a Wasm call (exit 134 when it runs out)
  --engine NAME  Wasm engine: wasmtime (default) or wasmi
  -h, --help     show this help`;

const SPECS = {
  timeout: { type: "string" },
  fuel: { type: "string" },
  engine: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Runs `hl call`; resolves the exit code. */
export async function call(argv: readonly string[]): Promise<number> {
  const { values, operands, rest } = splitArgs("call", argv, SPECS, 2);
  if (values.help) {
    console.log(CALL_HELP);
    return 0;
  }
  const [path, name] = operands;
  const timeoutMs = intOption("call", "timeout", values.timeout);
  const fuel = intOption("call", "fuel", values.fuel);
  const engine = engineOption("call", values.engine);
  const bytes = await readOperand(path);
  let result: unknown;
  if (isJsPath(path) && !isWasm(bytes) && !isElf(bytes)) {
    if (fuel !== undefined) throw new CliError("--fuel applies to Wasm modules only", EXIT_USAGE);
    result = await callJs(path, name, rest, timeoutMs, engine);
  } else if (isWasm(bytes)) {
    result = await callWasm(bytes, path, name, rest, timeoutMs, fuel, engine);
  } else if (isElf(bytes)) {
    if (fuel !== undefined) throw new CliError("--fuel applies to Wasm modules only", EXIT_USAGE);
    if (engine !== undefined) {
      throw new CliError("--engine applies to Wasm modules only", EXIT_USAGE);
    }
    result = await callNative(bytes, name, rest, timeoutMs);
  } else {
    throw new CliError(`${path} is neither a WebAssembly module nor an ELF guest`, EXIT_USAGE);
  }
  console.log(toJson(result));
  return 0;
}

function arity(name: string, want: number, got: number, signature: string): void {
  if (want !== got) {
    throw new CliError(
      `${name} takes ${want} argument(s) ${signature}, got ${got}`,
      EXIT_USAGE,
    );
  }
}

async function callWasm(
  bytes: Uint8Array,
  path: string,
  name: string,
  args: string[],
  timeoutMs: number | undefined,
  fuel: number | undefined,
  engine: WasmEngine | undefined,
): Promise<unknown> {
  const w = await createCliSandbox("call", {
    module: bytes,
    engine,
    fuel,
    wasi: { args: [path] },
  });
  try {
    const f = w.exports.find((x) => x.name === name);
    if (!f || f.kind !== "function" || !f.type) {
      const names = w.exports.filter((x) => x.kind === "function").map((x) => x.name);
      throw new CliError(
        `the module exports no function "${name}" (it has: ${names.join(", ")})`,
        EXIT_USAGE,
      );
    }
    const signature = `(${f.type.params.join(", ")}) -> (${f.type.results.join(", ")})`;
    arity(name, f.type.params.length, args.length, signature);
    const values = args.map((a, i) =>
      parseValue(a, f.type!.params[i] as WasmValueType, `${name} argument ${i}`)
    );
    return await w.callWithOptions({ timeoutMs }, name, ...values);
  } finally {
    await w.dispose();
  }
}

async function callNative(
  bytes: Uint8Array,
  name: string,
  args: string[],
  timeoutMs: number | undefined,
): Promise<unknown> {
  await using sb = await Sandbox.create({ guest: bytes });
  const f = sb.functions.find((x) => x.name === name);
  if (!f) {
    throw new CliError(
      `the guest has no function "${name}" (it has: ${sb.functions.map((x) => x.name).join(", ")})`,
      EXIT_USAGE,
    );
  }
  arity(name, f.params.length, args.length, `(${f.params.join(", ")}) -> ${f.result}`);
  const values = args.map((a, i) =>
    parseValue(a, f.params[i] as ValueType, `${name} argument ${i}`)
  );
  return await sb.callWithOptions({ timeoutMs }, name, ...values);
}
