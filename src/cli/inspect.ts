/**
 * `hl inspect <module.wasm | guest ELF>`: a module's imports and exports with their types (as
 * the Wasm guest's validator reads them), or a native guest's function table.
 *
 * @module
 */

import { Sandbox } from "../sandbox.ts";
import { findGuest } from "../artifacts.ts";
import { mapGuestError, parseDescription, Writer } from "../wasm/codec.ts";
import { checkRuntimeTable, runtimeResult } from "../wasm/runtime_table.ts";
import type { WasmExtern } from "../wasm/types.ts";
import type { FunctionSignature } from "../wire.ts";
import { CliError, EXIT_USAGE, isElf, isWasm, readOperand, splitArgs, toJson } from "./common.ts";

/** `hl inspect --help`. */
export const INSPECT_HELP = `Usage: hl inspect [--json] <module.wasm | guest-ELF>

Prints a WebAssembly module's imports and exports with their types (the module
is validated by the same wasmi guest that runs it), or a native guest's
function table (name, parameter types, result type).

Options:
  --json       print one JSON object instead of text
  -h, --help   show this help`;

const SPECS = {
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

const MIB = 1 << 20;

/** The module's imports and exports, read by the `wasm-runtime` guest (`load`). */
async function describe(
  bytes: Uint8Array,
): Promise<{ imports: WasmExtern[]; exports: WasmExtern[] }> {
  await using sb = await Sandbox.create({
    guest: findGuest("wasm-runtime"),
    heapSize: 64 * MIB,
    inputSize: Math.max(4 * MIB, Math.ceil((bytes.length + 64 * 1024) / 4096) * 4096),
  });
  checkRuntimeTable(sb.functions);
  const config = new Writer();
  config.u64(0n);
  config.u32(0);
  const out = await sb.callWithOptions({ timeoutMs: 30_000 }, "load", bytes, config.finish())
    .then((v) => runtimeResult("load", v), (e) => {
      throw mapGuestError(e, undefined);
    }) as Uint8Array;
  return parseDescription(out);
}

function externText(e: WasmExtern): string {
  const name = e.module ? `${e.module}.${e.name}` : e.name;
  if (e.kind === "function" && e.type) {
    return `${name}: func (${e.type.params.join(", ")}) -> (${e.type.results.join(", ")})`;
  }
  return `${name}: ${e.kind}`;
}

function signatureText(f: FunctionSignature): string {
  return `${f.name}: (${f.params.join(", ")}) -> ${f.result}`;
}

/** Runs `hl inspect`; resolves the exit code. */
export async function inspect(argv: readonly string[]): Promise<number> {
  const { values, operands, rest } = splitArgs("inspect", argv, SPECS, 1);
  if (values.help) {
    console.log(INSPECT_HELP);
    return 0;
  }
  if (rest.length > 0) throw new CliError(`unexpected argument "${rest[0]}"`, EXIT_USAGE);
  const [path] = operands;
  const bytes = await readOperand(path);
  if (isWasm(bytes)) {
    const { imports, exports } = await describe(bytes);
    if (values.json) {
      console.log(JSON.stringify({ kind: "wasm", size: bytes.length, imports, exports }));
      return 0;
    }
    const lines = [`${path}: WebAssembly module, ${bytes.length} bytes`, "imports:"];
    lines.push(...(imports.length ? imports.map((e) => `  ${externText(e)}`) : ["  (none)"]));
    lines.push("exports:");
    lines.push(...(exports.length ? exports.map((e) => `  ${externText(e)}`) : ["  (none)"]));
    console.log(lines.join("\n"));
    return 0;
  }
  if (isElf(bytes)) {
    await using sb = await Sandbox.create({ guest: bytes });
    const functions = sb.functions;
    if (values.json) {
      console.log(toJson({ kind: "elf", size: bytes.length, functions }));
      return 0;
    }
    console.log(
      [
        `${path}: native guest (ELF), ${bytes.length} bytes`,
        "functions:",
        ...functions.map((f) => `  ${signatureText(f)}`),
      ].join("\n"),
    );
    return 0;
  }
  throw new CliError(`${path} is neither a WebAssembly module nor an ELF guest`, EXIT_USAGE);
}
