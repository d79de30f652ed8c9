/**
 * `hl py <script.py> [args...]`: runs a Python file in a `PySandbox` (CPython 3.12 on WASI) and
 * exits with its `sys.exit` code.
 *
 * @module
 */

import { type CompileProgress, PyError, type PyRuntime, PySandbox } from "../py/sandbox.ts";
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
       hl py [--runtime NAME] --precompile

Runs a Python file in a new micro-VM (CPython 3.12 compiled to WebAssembly,
standard library only; see docs/python.md). What it prints goes to stdout and
stderr when it ends. sys.argv is the script's path and the arguments after it.
There are no processes, no sockets and no host files unless --dir gives a
directory (read-only, seen as /data).

--precompile compiles the interpreter into the artifact cache (the first use
otherwise does it), drawing a progress bar with an estimate on stderr: about a
minute for cpython, several minutes for full on a 2-core host.

Exit code: the script's sys.exit code (0 when it ends normally); 1 for an
uncaught exception (its traceback on stderr), 124 on timeout.

Options:
  --timeout MS   stop the script after MS milliseconds (exit 124; default 30000)
  --memory SIZE  the interpreter's memory limit, e.g. 512M (default 256M)
  --dir PATH     let the script read PATH as /data
  --engine NAME  Wasm engine: wasmtime (default) or wasmi (cpython only)
  --runtime NAME cpython (default; CPython 3.12, standard library) or full
                 (CPython 3.15 with numpy, pandas, scipy, scikit-learn, ...;
                 bash tools/fetch_python.sh --full fetches it)
  --precompile   compile the runtime (progress on stderr) and exit
  -h, --help     show this help`;

const SPECS = {
  timeout: { type: "string" },
  memory: { type: "string" },
  dir: { type: "string" },
  engine: { type: "string" },
  runtime: { type: "string" },
  precompile: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The `--runtime` value. */
function runtimeOption(text: unknown): PyRuntime | undefined {
  if (text === undefined) return undefined;
  if (text !== "cpython" && text !== "full") {
    throw new CliError(`hl py: --runtime must be cpython or full, got ${String(text)}`);
  }
  return text;
}

/** "1m 05s" / "42s". */
function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

/**
 * A compile progress bar on stderr: redrawn in place on a terminal, one line per tenth
 * otherwise (a log stays short). Returns the listener and a function that ends the line.
 */
export function progressBar(label: string): {
  onProgress: (p: CompileProgress) => void;
  done: () => void;
} {
  const tty = Deno.stderr.isTerminal();
  let lastTenth = -1;
  let drawn = false;
  const onProgress = (p: CompileProgress) => {
    const width = 30;
    const filled = Math.round(p.fraction * width);
    const pct = Math.floor(p.fraction * 100);
    const eta = p.etaMs === undefined ? "estimating" : `about ${duration(p.etaMs)} left`;
    const line = `${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${pct}% ` +
      `${p.translated}/${p.functions} functions, ${duration(p.elapsedMs)} so far, ${eta}`;
    if (tty) {
      writeAllSync(Deno.stderr, utf8.encode(`\r\x1b[K${line}`));
      drawn = true;
    } else if (Math.floor(pct / 10) !== lastTenth) {
      lastTenth = Math.floor(pct / 10);
      writeAllSync(Deno.stderr, utf8.encode(`${line}\n`));
    }
  };
  const done = () => {
    if (drawn) writeAllSync(Deno.stderr, utf8.encode("\n"));
    drawn = false;
  };
  return { onProgress, done };
}

const utf8 = new TextEncoder();

/** The exit code of a `SystemExit` whose `str()` is `message` (and the text to print, if any). */
function systemExit(message: string): { code: number; text?: string } {
  if (message === "" || message === "None") return { code: 0 };
  if (/^-?[0-9]+$/.test(message)) return { code: Number(message) & 0xff };
  return { code: EXIT_FAILURE, text: message };
}

/** Runs `hl py`; resolves the exit code. */
export async function py(argv: readonly string[]): Promise<number> {
  const precompile = splitArgs("py", argv, SPECS, 0).values.precompile === true;
  const { values, operands, rest } = splitArgs("py", argv, SPECS, precompile ? 0 : 1);
  if (values.help) {
    console.log(PY_HELP);
    return 0;
  }
  const timeoutMs = intOption("py", "timeout", values.timeout);
  const maxMemoryBytes = sizeOption("py", "memory", values.memory);
  const engine = engineOption("py", values.engine);
  const runtime = runtimeOption(values.runtime);
  if (precompile) {
    const started = performance.now();
    const bar = progressBar(`hl py: compiling ${runtime ?? "cpython"}`);
    try {
      const made = await PySandbox.create({
        runtime,
        engine,
        maxMemoryBytes,
        // A compile of the full runtime takes minutes on a small host.
        initTimeoutMs: 3_600_000,
        onProgress: bar.onProgress,
      });
      await made.dispose();
    } finally {
      bar.done();
    }
    writeAllSync(
      Deno.stderr,
      utf8.encode(
        `hl py: ${runtime ?? "cpython"} ready (${duration(performance.now() - started)})\n`,
      ),
    );
    return 0;
  }
  const path = operands[0];
  let script: string;
  try {
    script = await Deno.readTextFile(path);
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${oneLine(e)}`);
  }
  // The first use on a machine compiles the 26 MB interpreter (about a minute; cached after).
  const bar = progressBar(`hl py: compiling ${runtime ?? "cpython"}`);
  const slow = setTimeout(() => {
    writeAllSync(
      Deno.stderr,
      utf8.encode(
        runtime === "full"
          ? "hl py: preparing the full runtime (the first run on this machine compiles it: minutes)\n"
          : "hl py: preparing CPython (the first run on this machine compiles it: about a minute)\n",
      ),
    );
  }, 3000);
  let created: PySandbox;
  try {
    created = await PySandbox.create({
      timeoutMs,
      maxMemoryBytes,
      engine,
      runtime,
      onProgress: bar.onProgress,
      preopens: typeof values.dir === "string" ? { "/data": values.dir } : undefined,
    });
  } finally {
    clearTimeout(slow);
    bar.done();
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
