/**
 * `hl py <script.py> [args...]`: runs a Python file in a `PySandbox` (CPython 3.12 on WASI) and
 * exits with its `sys.exit` code.
 *
 * @module
 */

import { PyError, PySandbox } from "../py/sandbox.ts";
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

/** `hl py --help`. */
export const PY_HELP = `Usage: hl py [options] <script.py> [--] [args...]

Runs a Python file in a new micro-VM (CPython 3.12 compiled to WebAssembly,
standard library only; see docs/python.md). What it prints goes to stdout and
stderr when it ends. sys.argv is the script's path and the arguments after it.
There are no processes, no sockets and no host files unless --dir gives a
directory (read-only, seen as /data).

Exit code: the script's sys.exit code (0 when it ends normally); 1 for an
uncaught exception (its traceback on stderr), 124 on timeout.

Options:
  --timeout MS   stop the script after MS milliseconds (exit 124; default 30000)
  --memory SIZE  the interpreter's memory limit, e.g. 512M (default 256M)
  --dir PATH     let the script read PATH as /data
  --engine NAME  Wasm engine: wasmtime (default) or wasmi
  -h, --help     show this help`;

const SPECS = {
  timeout: { type: "string" },
  memory: { type: "string" },
  dir: { type: "string" },
  engine: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

const utf8 = new TextEncoder();

/** The exit code of a `SystemExit` whose `str()` is `message` (and the text to print, if any). */
function systemExit(message: string): { code: number; text?: string } {
  if (message === "" || message === "None") return { code: 0 };
  if (/^-?[0-9]+$/.test(message)) return { code: Number(message) & 0xff };
  return { code: EXIT_FAILURE, text: message };
}

/** Runs `hl py`; resolves the exit code. */
export async function py(argv: readonly string[]): Promise<number> {
  const { values, operands, rest } = splitArgs("py", argv, SPECS, 1);
  if (values.help) {
    console.log(PY_HELP);
    return 0;
  }
  const timeoutMs = intOption("py", "timeout", values.timeout);
  const maxMemoryBytes = sizeOption("py", "memory", values.memory);
  const engine = engineOption("py", values.engine);
  const path = operands[0];
  let script: string;
  try {
    script = await Deno.readTextFile(path);
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${oneLine(e)}`);
  }
  // The first use on a machine compiles the 26 MB interpreter (about a minute; cached after).
  const slow = setTimeout(() => {
    writeAllSync(
      Deno.stderr,
      utf8.encode(
        "hl py: preparing CPython (the first run on this machine compiles it: about a minute)\n",
      ),
    );
  }, 3000);
  let created: PySandbox;
  try {
    created = await PySandbox.create({
      timeoutMs,
      maxMemoryBytes,
      engine,
      preopens: typeof values.dir === "string" ? { "/data": values.dir } : undefined,
    });
  } finally {
    clearTimeout(slow);
  }
  await using sb = created;
  try {
    const r = await sb.run(script, { argv: [path, ...rest] });
    writeAllSync(Deno.stdout, utf8.encode(r.stdout));
    writeAllSync(Deno.stderr, utf8.encode(r.stderr));
    return 0;
  } catch (e) {
    if (!(e instanceof PyError)) throw e;
    writeAllSync(Deno.stdout, utf8.encode(e.stdout));
    writeAllSync(Deno.stderr, utf8.encode(e.stderr));
    if (e.type === "SystemExit") {
      const exit = systemExit(e.pyMessage);
      if (exit.text) writeAllSync(Deno.stderr, utf8.encode(`${exit.text}\n`));
      return exit.code;
    }
    writeAllSync(Deno.stderr, utf8.encode(e.traceback));
    return EXIT_FAILURE;
  }
}
