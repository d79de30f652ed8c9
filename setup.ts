/**
 * The setup entry point for a program that uses this package from JSR:
 *
 * ```sh
 * deno run -A jsr:@hl/sandbox/setup
 * ```
 *
 * It copies the Rust sources shipped in the package (the cdylib `rust-vmm/`, the guest runtime
 * and the guests in `guest/`) into the per-version cache directory
 * (`$XDG_CACHE_HOME/hl-sandbox/<version>/`, else `~/.cache/hl-sandbox/<version>/`), builds them
 * there with your cargo (Rust stable), and prints where the results went. The library then finds
 * them by itself: `Sandbox.create({ guest: guests.testguest })` and `WasmSandbox.create(...)`
 * need no path. Running it again rebuilds only what changed. It also builds WasmSandbox's
 * default wasmtime engine (the `wasmtime-runtime` guest, the Cranelift compiler library and its
 * `hl-wasm-compile` child process, `compiler/`): several more minutes of cargo, which
 * `--no-wasmtime` (`setup({ wasmtime: false })`) skips for programs that use only
 * `engine: "wasmi"`.
 *
 * @example
 * ```ts
 * import { setup } from "@hl/sandbox/setup";
 * const dir = await setup();
 * console.log(`built into ${dir}`);
 * ```
 *
 * @module
 */

import {
  type BuiltinGuestName,
  cachedArtifact,
  cacheDir,
  COMPILE_CHILD_FILE,
  COMPILER_FILE,
  LIBRARY_FILE,
  PACKAGE_VERSION,
  runtimeModulePath,
} from "./src/artifacts.ts";
import { RUST_SOURCES } from "./src/rust_sources.ts";

/** Options of {@linkcode setup}. */
export interface SetupOptions {
  /** Where to build (default: the per-version cache directory the library looks in). */
  dir?: string;
  /** Print progress lines (default true); cargo's own output always goes to stderr. */
  verbose?: boolean;
  /**
   * Build WasmSandbox's wasmtime engine (its default): the `wasmtime-runtime` guest, the
   * Cranelift compiler library and its `hl-wasm-compile` child process (default true; false
   * saves several minutes of cargo for programs that use only `engine: "wasmi"`).
   */
  wasmtime?: boolean;
  /**
   * Prepare the Python runtimes whose modules are fetched (`tools/fetch_python.sh [--full]`, or
   * `HL_PYTHON_WASM`/`HL_PYTHON_FULL_WASM`): compile each into the artifact cache (a progress
   * line per tenth; minutes for `full`) and write its runtime base state, so that a
   * `PySandbox.create` of any `setup` starts from it instead of the artifact (docs/python.md,
   * "The runtime base state"). Default true; only for the cache directory the library searches
   * (no `dir` of another place), and a runtime that is not fetched, or a host without KVM, is
   * skipped with a line saying so.
   */
  python?: boolean;
}

/**
 * Builds the native library and the built-in guests into `options.dir` (default: the cache
 * directory the library searches) and returns that directory.
 *
 * @example
 * ```ts
 * import { setup } from "@hl/sandbox/setup";
 * console.log(await setup({ verbose: false }));
 * ```
 */
export async function setup(options: SetupOptions = {}): Promise<string> {
  const dir = options.dir ?? cacheDir();
  if (dir === undefined) {
    throw new Error("no cache directory: set XDG_CACHE_HOME or HOME (and run with --allow-env)");
  }
  const say = options.verbose === false ? () => {} : (s: string) => console.log(`hl-sandbox: ${s}`);
  say(`building @hl/sandbox ${PACKAGE_VERSION} with cargo into ${dir}`);

  // 1. The sources, read through the module graph's URLs (file: in a copy, https: from JSR).
  const src = `${dir}/src`;
  const root = new URL("./", import.meta.url);
  let written = 0;
  for (const rel of RUST_SOURCES) {
    const res = await fetch(new URL(rel, root));
    if (!res.ok) throw new Error(`cannot read ${rel} from ${root.href}: HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (writeIfChanged(`${src}/${rel}`, bytes)) written++;
  }
  say(`sources: ${RUST_SOURCES.length} files in ${src} (${written} updated)`);

  // 2. The builds; cargo's output goes to stderr.
  await cargo(src, [
    "build",
    "--release",
    "--locked",
    "-p",
    "hl-rust-vmm",
    "--lib",
    "--target-dir",
    `${dir}/target`,
  ]);
  const wasmtime = options.wasmtime ?? true;
  const guests: BuiltinGuestName[] = ["testguest", "wasm-runtime"];
  if (wasmtime) {
    guests.push("wasmtime-runtime");
    await cargo(src, [
      "build",
      "--release",
      "--locked",
      "-p",
      "hl-wasm-compiler",
      "--target-dir",
      `${dir}/target`,
    ]);
  }
  await cargo(`${src}/guest`, [
    "build",
    "--release",
    "--locked",
    ...guests.flatMap((g) => ["-p", g]),
    "--target-dir",
    `${dir}/guest-target`,
  ]);

  // 3. The results where the library looks; renamed into place, so a process that has the old
  //    library open keeps its copy.
  install(`${dir}/target/release/${LIBRARY_FILE}`, cachedArtifact(dir, "library"));
  if (wasmtime) {
    install(`${dir}/target/release/${COMPILER_FILE}`, cachedArtifact(dir, "compiler"));
    install(`${dir}/target/release/${COMPILE_CHILD_FILE}`, cachedArtifact(dir, "compile-child"));
    say(`compiler:     ${cachedArtifact(dir, "compiler")}`);
    say(`compile-child: ${cachedArtifact(dir, "compile-child")}`);
  }
  for (const g of guests) {
    install(`${dir}/guest-target/x86_64-unknown-linux-gnu/release/${g}`, cachedArtifact(dir, g));
  }
  // 4. JsSandbox's engine: the reproducible quickjs.wasm the package ships (docs/js.md, "How a JSR
  //    consumer gets the module"); nothing to build.
  const quickjs = new URL(runtimeModulePath("quickjs"), root);
  const res = await fetch(quickjs);
  if (res.ok) {
    const bytes = new Uint8Array(await res.arrayBuffer());
    writeIfChanged(`${dir}/runtimes/quickjs.wasm.part`, bytes);
    install(`${dir}/runtimes/quickjs.wasm.part`, cachedArtifact(dir, "quickjs"));
    say(`quickjs:      ${cachedArtifact(dir, "quickjs")}`);
  } else {
    await res.body?.cancel();
    say(`quickjs.wasm is not in this package (HTTP ${res.status}): JsSandbox is unavailable`);
  }
  say(`library:      ${cachedArtifact(dir, "library")}`);
  for (const g of guests) say(`${`${g}:`.padEnd(13)} ${cachedArtifact(dir, g)}`);
  // 5. The Python runtimes that are fetched: compiled, and their base states written.
  if (wasmtime && (options.python ?? true) && dir === cacheDir()) await preparePython(say);
  say(`done: the library finds these by itself (version ${PACKAGE_VERSION})`);
  return dir;
}

/**
 * Compiles each fetched Python runtime into the artifact cache and writes its runtime base state
 * (`preparePyRuntime`, src/py/sandbox.ts); a runtime not fetched, or a failure (no KVM here), is
 * a line, never a failed setup: the first create does the same work later.
 */
async function preparePython(say: (s: string) => void): Promise<void> {
  const { preparePyRuntime } = await import("./src/py/sandbox.ts");
  for (const runtime of ["cpython", "full"] as const) {
    const started = performance.now();
    let tenth = -1;
    try {
      const ready = await preparePyRuntime(runtime, {
        onProgress: (p) => {
          if (Math.floor(p.fraction * 10) === tenth) return;
          tenth = Math.floor(p.fraction * 10);
          const eta = p.etaMs === undefined ? "" : `, about ${Math.ceil(p.etaMs / 1000)} s left`;
          say(`python ${runtime}: compiling ${tenth * 10}%${eta}`);
        },
      });
      const s = ((performance.now() - started) / 1000).toFixed(1);
      say(
        ready
          ? `python ${runtime}: ready: compiled, its base state on disk (${s} s)`
          : `python ${runtime}: not fetched (bash tools/fetch_python.sh${
            runtime === "full" ? " --full" : ""
          }), skipped`,
      );
    } catch (e) {
      say(`python ${runtime}: not prepared (${(e as Error).message}); the first create will`);
    }
  }
}

function writeIfChanged(path: string, bytes: Uint8Array): boolean {
  try {
    const old = Deno.readFileSync(path);
    if (old.length === bytes.length && old.every((b, i) => b === bytes[i])) return false;
  } catch {
    // missing: write it
  }
  Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  Deno.writeFileSync(path, bytes);
  return true;
}

function install(from: string, to: string): void {
  Deno.mkdirSync(to.slice(0, to.lastIndexOf("/")), { recursive: true });
  const tmp = `${to}.tmp-${Deno.pid}`;
  Deno.copyFileSync(from, tmp);
  Deno.chmodSync(tmp, 0o755);
  Deno.renameSync(tmp, to);
}

async function cargo(cwd: string, args: string[]): Promise<void> {
  let status: Deno.CommandStatus;
  try {
    status = await new Deno.Command("cargo", { args, cwd, stdout: "inherit", stderr: "inherit" })
      .spawn().status;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Error(
        "cargo not found: install Rust stable (https://rustup.rs), then run this again",
      );
    }
    throw e;
  }
  if (!status.success) {
    throw new Error(`cargo ${args.join(" ")} failed in ${cwd} (exit ${status.code})`);
  }
}

if (import.meta.main) {
  try {
    await setup({ wasmtime: !Deno.args.includes("--no-wasmtime") });
  } catch (e) {
    console.error(`hl-sandbox setup: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
