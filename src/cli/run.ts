/**
 * `hl run <module.wasm> [--] [args...]`: runs a WASI command in a micro-VM with this process's
 * stdin, stdout and stderr, and exits with the program's exit code.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";
import type { WasmSandbox } from "../wasm/sandbox.ts";
import {
  CliError,
  createCliSandbox,
  engineOption,
  EXIT_USAGE,
  intOption,
  isWasm,
  readOperand,
  sizeOption,
  splitArgs,
  usage,
  writeAllSync,
} from "./common.ts";

/** `hl run --help`. */
export const RUN_HELP = `Usage: hl run [options] <module.wasm> [--] [args...]

Runs a WASI (preview 1) command in its own micro-VM. The program's stdin, stdout
and stderr are this process's; the exit code is the program's. Everything after
the module is the program's arguments (argv[0] is the module path as given).

Options:
  --env K=V              set an environment variable (repeatable; the host's
                         environment is never passed)
  --dir HOST[::GUEST]    preopen host directory HOST as GUEST (default: HOST as
                         written), read-only (repeatable)
  --dir-rw HOST[::GUEST] the same, read-write (repeatable)
  --timeout MS           stop the program after MS milliseconds (exit 124)
  --fuel N               give the program N units of fuel (roughly instructions);
                         running out traps (exit 134)
  --max-memory SIZE      largest linear memory, e.g. 64M (default 16M)
  --engine NAME          wasmtime (default: compiled ahead of time in a
                         locked-down child process, cached on disk) or
                         wasmi (interpreted)
  --stats                print create/run times, VM exits, ioctls and peak
                         memory on stderr when done
  -h, --help             show this help

Exit codes: the program's; 124 timeout; 134 trap or guest failure; 2 usage
error; 1 any other failure (one line on stderr).`;

const SPECS = {
  env: { type: "string", multiple: true },
  dir: { type: "string", multiple: true },
  "dir-rw": { type: "string", multiple: true },
  timeout: { type: "string" },
  fuel: { type: "string" },
  "max-memory": { type: "string" },
  engine: { type: "string" },
  stats: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** Parses `--dir`/`--dir-rw` values into `wasi.preopens`. */
function preopens(
  ro: string[],
  rw: string[],
): Record<string, { path: string; writable: boolean }> {
  const out: Record<string, { path: string; writable: boolean }> = {};
  for (const [list, writable] of [[ro, false], [rw, true]] as const) {
    for (const spec of list) {
      const at = spec.indexOf("::");
      const host = at < 0 ? spec : spec.slice(0, at);
      const guest = at < 0 ? spec : spec.slice(at + 2);
      if (host === "" || guest === "") {
        throw usage("run", `--dir${writable ? "-rw" : ""} takes HOST[::GUEST], got "${spec}"`);
      }
      if (Object.hasOwn(out, guest)) throw usage("run", `two directories named "${guest}"`);
      // Checked here so the error names the option, not the library's wasi.preopens.
      const flag = `--dir${writable ? "-rw" : ""} ${spec}`;
      let isDir: boolean;
      try {
        isDir = Deno.statSync(host).isDirectory;
      } catch (e) {
        throw usage("run", `${flag}: ${host} cannot be opened (${(e as Error).message})`);
      }
      if (!isDir) throw usage("run", `${flag}: ${host} is not a directory`);
      out[guest] = { path: host, writable };
    }
  }
  return out;
}

/** Reads the process's peak resident set size (Linux `VmHWM`), in bytes. */
function peakRss(): number | undefined {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Runs `hl run`; resolves the exit code. */
export async function run(argv: readonly string[]): Promise<number> {
  const { values, operands, rest } = splitArgs("run", argv, SPECS, 1);
  if (values.help) {
    console.log(RUN_HELP);
    return 0;
  }
  const [path] = operands;
  const env: Record<string, string> = {};
  for (const kv of (values.env as string[] | undefined) ?? []) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw usage("run", `--env takes K=V, got "${kv}"`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const dirs = preopens(
    (values.dir as string[] | undefined) ?? [],
    (values["dir-rw"] as string[] | undefined) ?? [],
  );
  const timeoutMs = intOption("run", "timeout", values.timeout);
  const fuel = intOption("run", "fuel", values.fuel);
  const maxMemoryBytes = sizeOption("run", "max-memory", values["max-memory"]);
  const engine = engineOption("run", values.engine);
  const bytes = await readOperand(path);
  if (!isWasm(bytes)) throw new CliError(`${path} is not a WebAssembly module`, EXIT_USAGE);
  const t0 = performance.now();
  const w = await createCliSandbox("run", {
    module: bytes,
    engine,
    fuel,
    maxMemoryBytes,
    wasi: { args: [path, ...rest], env, stdin: "inherit", preopens: dirs },
  }).catch((e) => {
    // What the checks above cannot see (a directory that cannot be opened): in CLI terms.
    const m = e instanceof ArgumentError && /^wasi\.preopens\["(.*?)"\]:? ?(.*)$/s.exec(e.message);
    const dir = m ? dirs[m[1]] : undefined;
    if (!m || !dir) throw e;
    const flag = `--dir${dir.writable ? "-rw" : ""} ${dir.path}::${m[1]}`;
    throw usage("run", `${flag}: ${m[2]}`);
  });
  const t1 = performance.now();
  try {
    const { exitCode } = await w.runWasi({ timeoutMs });
    return exitCode & 0xff;
  } finally {
    // Printed whether the program exited or failed (a trap, a timeout).
    if (values.stats) await printStats(w, t1 - t0, performance.now() - t1);
    await w.dispose();
  }
}

async function printStats(w: WasmSandbox, createMs: number, runMs: number): Promise<void> {
  const s = w.stats();
  const memory = w.poisoned ? undefined : await w.memorySize().catch(() => undefined);
  const line = [
    `create_ms=${createMs.toFixed(2)}`,
    `run_ms=${runMs.toFixed(2)}`,
    `exits=${s.exits}`,
    `ioctls=${s.ioctls}`,
    `runs=${s.runs}`,
    `logs_skipped=${s.logsSkipped}`,
    `wasm_memory_bytes=${memory ?? "unknown"}`,
    `peak_rss_bytes=${peakRss() ?? "unknown"}`,
  ].join(" ");
  writeAllSync(Deno.stderr, new TextEncoder().encode(`hl stats: ${line}\n`));
}
