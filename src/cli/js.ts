/**
 * `hl js <script.js> [args...]`: evaluates a script in a `JsSandbox` (console output to this
 * process's stdout/stderr) and exits with its `exitCode`; and `callJs`, the JavaScript side of
 * `hl call <script.js> <fn> [args...]` (JSON arguments, JSON result).
 *
 * @module
 */

import { JsError } from "../errors.ts";
import { JsSandbox } from "../js/sandbox.ts";
import type { WasmEngine } from "../wasm/types.ts";
import {
  CliError,
  engineOption,
  EXIT_FAILURE,
  intOption,
  oneLine,
  sizeOption,
  splitArgs,
  writeAllSync,
} from "./common.ts";

/** `hl js --help`. */
export const JS_HELP = `Usage: hl js [options] <script.js> [--] [args...]

Evaluates a JavaScript file as a classic script in a new micro-VM (QuickJS-NG
in WebAssembly). console.log/info/debug go to stdout, console.error/warn to
stderr. The arguments after the script are the global array scriptArgs
(strings). A Promise the script ends with is awaited. There are no Node or Deno
APIs, no fetch and no modules (see docs/js.md).

Exit code: the global exitCode the script sets (an integer 0-255), else 0;
1 for an uncaught exception (its name, message and JS stack on stderr), 124
on timeout.

Options:
  --timeout MS   stop the script after MS milliseconds (exit 124)
  --memory SIZE  QuickJS's memory limit, e.g. 64M (default 32M)
  --engine NAME  Wasm engine: wasmtime (default) or wasmi
  -h, --help     show this help`;

const SPECS = {
  timeout: { type: "string" },
  memory: { type: "string" },
  engine: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

/** Whether `path` names a JavaScript file (`.js`, `.cjs`, `.mjs`). */
export function isJsPath(path: string): boolean {
  return /\.(c|m)?js$/i.test(path);
}

function sandboxFor(
  command: string,
  options: { source: string; timeoutMs?: number; maxMemoryBytes?: number; engine?: WasmEngine },
): Promise<JsSandbox> {
  void command;
  return JsSandbox.create({
    ...options,
    cache: false, // one script per process
    stdout: (b) => writeAllSync(Deno.stdout, b),
    stderr: (b) => writeAllSync(Deno.stderr, b),
  });
}

/** A JS exception as the lines the CLI writes: `Name: message` and the JS stack. */
function reportJsError(e: JsError): never {
  const stack = e.jsStack.trimEnd();
  throw new CliError(`${e.message}${stack ? `\n${stack}` : ""}`, EXIT_FAILURE);
}

async function readScript(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${oneLine(e)}`);
  }
}

/** Runs `hl js`; resolves the exit code. */
export async function js(argv: readonly string[]): Promise<number> {
  const { values, operands, rest } = splitArgs("js", argv, SPECS, 1);
  if (values.help) {
    console.log(JS_HELP);
    return 0;
  }
  const timeoutMs = intOption("js", "timeout", values.timeout);
  const maxMemoryBytes = sizeOption("js", "memory", values.memory);
  const engine = engineOption("js", values.engine);
  const script = await readScript(operands[0]);
  const prelude = `var scriptArgs = ${JSON.stringify(rest)};`;
  await using sb = await sandboxFor("js", {
    source: prelude,
    timeoutMs,
    maxMemoryBytes,
    engine,
  });
  try {
    await sb.eval(script);
  } catch (e) {
    if (e instanceof JsError) reportJsError(e);
    throw e;
  }
  const code = await sb.eval(
    "typeof exitCode === 'number' && Number.isInteger(exitCode) ? exitCode : 0",
  );
  return typeof code === "number" && code >= 0 && code <= 255 ? code : EXIT_FAILURE;
}

/** `hl call <script.js> <fn> [args...]`: each argument JSON if it parses, else a string. */
export async function callJs(
  path: string,
  name: string,
  args: readonly string[],
  timeoutMs: number | undefined,
  engine: WasmEngine | undefined,
): Promise<unknown> {
  const source = await readScript(path);
  const values = args.map((a) => {
    try {
      return JSON.parse(a);
    } catch {
      return a;
    }
  });
  try {
    await using sb = await sandboxFor("call", { source, timeoutMs, engine });
    return await sb.call(name, ...values);
  } catch (e) {
    if (e instanceof JsError) reportJsError(e);
    throw e;
  }
}
