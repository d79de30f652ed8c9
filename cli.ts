/**
 * The `hl` command line: run WASI programs, call functions, and inspect modules and guests, each
 * in its own KVM micro-VM.
 *
 * ```sh
 * deno run -A jsr:@hl/sandbox/cli run prog.wasm -- arg1 arg2
 * deno run -A jsr:@hl/sandbox/cli run --dir ./data::/data --env LANG=C prog.wasm < input.txt
 * deno run -A jsr:@hl/sandbox/cli call fib.wasm fib 20
 * deno run -A jsr:@hl/sandbox/cli inspect fib.wasm
 * ```
 *
 * In a clone: `deno task cli <command> ...` (from any directory: paths are the caller's). Every command has `--help`; errors are one line on
 * stderr with a non-zero exit code (docs/cli.md).
 *
 * @example
 * ```ts
 * import { main } from "@hl/sandbox/cli";
 * const code = await main(["call", "fib.wasm", "fib", "10"]); // prints 55
 * console.log(code); // 0
 * ```
 *
 * @module
 */

import { main as cliMain } from "./src/cli/main.ts";

/**
 * Runs the command line `argv` (without the program name) and resolves the exit code; output
 * goes to this process's stdout and stderr.
 *
 * @example
 * ```ts
 * import { main } from "@hl/sandbox/cli";
 * Deno.exit(await main(["inspect", "fib.wasm"]));
 * ```
 */
export function main(argv: readonly string[]): Promise<number> {
  return cliMain(argv);
}

if (import.meta.main) {
  // `deno task cli` runs in the clone's directory; its task passes the caller's directory
  // (INIT_CWD) so paths on the command line mean what they say where the user typed them.
  const cwd = Deno.env.get("HL_CLI_CWD");
  if (cwd) Deno.chdir(cwd);
  Deno.exit(await main(Deno.args));
}
