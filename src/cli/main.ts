/**
 * The command line's dispatcher: `hl <command> [options] ...`, every failure one line on stderr
 * with a non-zero exit code, never a stack trace.
 *
 * @module
 */

import { call, CALL_HELP } from "./call.ts";
import { CliError, EXIT_USAGE, exitCodeOf, oneLine, writeAllSync } from "./common.ts";
import { inspect, INSPECT_HELP } from "./inspect.ts";
import { js, JS_HELP } from "./js.ts";
import { NEW_GUEST_HELP, newGuest } from "./new_guest.ts";
import { py, PY_HELP } from "./py.ts";
import { run, RUN_HELP } from "./run.ts";
import { serve, SERVE_HELP } from "./serve.ts";

/** `hl --help`. */
export const MAIN_HELP = `Usage: hl <command> [options] ...

Runs WebAssembly modules and native guests in KVM micro-VMs (@hl/sandbox).

Commands:
  run <module.wasm> [--] [args...]           run a WASI command
  call <module.wasm | guest> <fn> [args...]  call one function, print JSON
  js <script.js> [args...]                   run a JavaScript file (QuickJS)
  py <script.py> [args...]                   run a Python file (CPython 3.12; --runtime full, --precompile)
  inspect <module.wasm | guest>              list imports, exports, signatures
  new-guest <dir>                            write a guest project that builds with cargo
  serve --config <file.json>                 serve HTTP requests with sandboxed functions

Run "hl <command> --help" for a command's options.`;

const COMMANDS: Record<string, (argv: readonly string[]) => Promise<number>> = {
  run,
  call,
  js,
  py,
  inspect,
  "new-guest": newGuest,
  serve,
};

/** Every command's help text, for documentation and tests. */
export const HELP: Readonly<Record<string, string>> = {
  "": MAIN_HELP,
  run: RUN_HELP,
  call: CALL_HELP,
  js: JS_HELP,
  py: PY_HELP,
  inspect: INSPECT_HELP,
  "new-guest": NEW_GUEST_HELP,
  serve: SERVE_HELP,
};

/**
 * Runs the command line `argv` (without the program name) and resolves the process exit code.
 * Errors are written to stderr as one line `hl <command>: <message>`.
 */
export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === "--help" || command === "-h" || command === "help") {
    console.log(MAIN_HELP);
    return command === undefined ? EXIT_USAGE : 0;
  }
  const fn = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  try {
    if (!fn) throw new CliError(`unknown command "${command}" (see: hl --help)`, EXIT_USAGE);
    return await fn(rest);
  } catch (e) {
    const where = fn ? `hl ${command}` : "hl";
    writeAllSync(Deno.stderr, new TextEncoder().encode(`${where}: ${oneLine(e)}\n`));
    return exitCodeOf(e);
  }
}
