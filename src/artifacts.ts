/**
 * Where the built artifacts are: the cdylib (`libhl_rust_vmm.so`) and the built-in guests
 * (`testguest`, `wasm-runtime`). One lookup for all of them, in this order:
 *
 * 1. an explicit path (the `library` / `runtime` option), else the environment variable
 *    (`HL_SANDBOX_LIB`, `HL_WASM_RUNTIME`): when one of these names a path, only it is tried;
 * 2. the local cargo build next to this package (a clone after `deno task build`);
 * 3. the per-version cache that `deno run -A jsr:@hl/sandbox/setup` fills
 *    (`$XDG_CACHE_HOME/hl-sandbox/<version>/`, else `~/.cache/hl-sandbox/<version>/`).
 *
 * A miss throws an error that names the one command that fixes it. This module imports only
 * `errors.ts` and `host_io.ts` (leaves), so `src/ffi/` may use it. `--allow-ffi` alone is enough
 * for the lookup (see `host_io.ts`); without it, a `PermissionError` names the flag.
 *
 * @module
 */

import { GuestNotFoundError, LibraryNotFoundError } from "./errors.ts";
import { configEnv, isFile, locationEnv, requireFfi } from "./host_io.ts";
import denoJson from "../deno.json" with { type: "json" };

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

/** This package's version (`deno.json`); the cache directory is per version. */
export const PACKAGE_VERSION: string = denoJson.version;

/** File name of the cdylib. */
export const LIBRARY_FILE = "libhl_rust_vmm.so";

/** Names of the guests built from `guest/` (cargo binary names). */
export type BuiltinGuestName = "testguest" | "wasm-runtime" | "wasmtime-runtime";

/** File name of the Wasm compiler library (`compiler/`, loaded only by the wasmtime engine). */
export const COMPILER_FILE = "libhl_wasm_compiler.so";

/** File name of the compiler's child process (`compiler/src/bin/hl-wasm-compile.rs`). */
export const COMPILE_CHILD_FILE = "hl-wasm-compile";

const PACKAGE_ROOT = new URL("../", import.meta.url);
const GUEST_BUILD_DIR = "guest/target/x86_64-unknown-linux-gnu/release/";

/**
 * An `HL_*` variable: only where `--allow-env` grants it (else it does not apply); files are
 * checked with `--allow-read` or, under `--allow-ffi` alone, through libc (`src/host_io.ts`).
 */
const env = configEnv;

/** A path under this package when it is on the local disk (a clone or a copy), else undefined. */
const localPath = (function localPath(relative: string): string | undefined {
  const url = new URL(relative, PACKAGE_ROOT);
  return url.protocol === "file:" ? decodeURIComponent(url.pathname) : undefined;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The per-version cache directory: `$XDG_CACHE_HOME/hl-sandbox/<version>/`, else
 * `$HOME/.cache/hl-sandbox/<version>/`; undefined when neither variable is readable.
 */
export const cacheDir = (function cacheDir(version: string = PACKAGE_VERSION): string | undefined {
  const xdg = locationEnv("XDG_CACHE_HOME");
  const home = locationEnv("HOME");
  const base = xdg ?? (home === undefined ? undefined : `${home}/.cache`);
  return base === undefined ? undefined : `${base}/hl-sandbox/${version}`;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Language runtimes built as Wasm modules (`tools/build_quickjs.sh` →
 * `target/runtimes/quickjs.wasm`). The package ships the reproducible module at that path and
 * `setup` copies it into the cache (docs/js.md, "How a JSR consumer gets the module").
 */
export type RuntimeModuleName = "quickjs";

/** Where a clone's build puts a runtime module, relative to the package root. */
export const runtimeModulePath = (function runtimeModulePath(name: RuntimeModuleName): string {
  return `target/runtimes/${name}.wasm`;
}).bind(undefined); // Eager: see the note after the imports.

/** Where `setup` puts the cdylib and the guests inside {@linkcode cacheDir}. */
export const cachedArtifact = (function cachedArtifact(
  dir: string,
  what: "library" | "compiler" | "compile-child" | BuiltinGuestName | RuntimeModuleName,
): string {
  if (what === "quickjs") return `${dir}/runtimes/${what}.wasm`;
  if (what === "library") return `${dir}/${LIBRARY_FILE}`;
  if (what === "compiler") return `${dir}/${COMPILER_FILE}`;
  if (what === "compile-child") return `${dir}/${COMPILE_CHILD_FILE}`;
  return `${dir}/guests/${what}`;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The one command that makes the artifacts exist: `deno task build` in a clone (this package has
 * `tools/build.sh` beside it), else the setup entry point of this exact version.
 */
export function fixCommand(): string {
  const tools = localPath("tools/build.sh");
  if (tools !== undefined && isFile(tools)) return "deno task build";
  const setup = localPath("setup.ts");
  if (setup !== undefined) return `deno run -A ${setup}`;
  return `deno run -A jsr:@hl/sandbox@${PACKAGE_VERSION}/setup`;
}

/** The candidates in lookup order: only the named one if `named` is set, else local then cache. */
const candidates = (function candidates(
  named: string | undefined,
  local: string | undefined,
  what: "library" | "compiler" | "compile-child" | BuiltinGuestName | RuntimeModuleName,
): string[] {
  if (named !== undefined) return [named];
  const out: string[] = [];
  if (local !== undefined) out.push(local);
  const dir = cacheDir();
  if (dir !== undefined) out.push(cachedArtifact(dir, what));
  return out;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The first of {@linkcode candidates} that is a regular file, else undefined: the same answer as
 * `candidates(...).find(isFile)`, but the cache directory (two environment reads and their
 * permission queries) is looked up only when the earlier candidate is not a file (a clone's
 * build is found first, on every cold create).
 */
const firstFile = (function firstFile(
  named: string | undefined,
  local: string | undefined,
  what: "library" | "compiler" | "compile-child" | BuiltinGuestName | RuntimeModuleName,
): string | undefined {
  if (named !== undefined) return isFile(named) ? named : undefined;
  if (local !== undefined && isFile(local)) return local;
  const dir = cacheDir();
  if (dir === undefined) return undefined;
  const cached = cachedArtifact(dir, what);
  return isFile(cached) ? cached : undefined;
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The path of the cdylib to open: `explicit`, else `$HL_SANDBOX_LIB`, else the local build
 * `target/release/libhl_rust_vmm.so`, else the cache. Throws {@linkcode LibraryNotFoundError}
 * naming the command that fixes it.
 */
export const findLibrary = (function findLibrary(explicit?: string): string {
  requireFfi("loading the native library");
  const named = explicit ?? env("HL_SANDBOX_LIB");
  const found = firstFile(named, localPath(`target/release/${LIBRARY_FILE}`), "library");
  if (found !== undefined) return found;
  throw new LibraryNotFoundError(
    candidates(named, localPath(`target/release/${LIBRARY_FILE}`), "library"),
    named !== undefined
      ? `point ${explicit !== undefined ? "the `library` option" : "HL_SANDBOX_LIB"} at an ` +
        `existing ${LIBRARY_FILE}, or drop it (and HL_SANDBOX_LIB) and run \`${fixCommand()}\``
      : `run \`${fixCommand()}\``,
  );
}).bind(undefined); // Eager: see the note after the imports.

/**
 * The path of a built-in guest: for `wasm-runtime` `$HL_WASM_RUNTIME` if set (then only it),
 * else the local build under `guest/target/`, else the cache. Throws
 * {@linkcode GuestNotFoundError} naming the command that fixes it.
 */
export const findGuest = (function findGuest(name: BuiltinGuestName): string {
  requireFfi(`finding the built-in guest ${name}`);
  const named = name === "wasm-runtime"
    ? env("HL_WASM_RUNTIME")
    : name === "wasmtime-runtime"
    ? env("HL_WASMTIME_RUNTIME")
    : undefined;
  const found = firstFile(named, localPath(GUEST_BUILD_DIR + name), name);
  if (found !== undefined) return found;
  throw new GuestNotFoundError(
    name,
    candidates(named, localPath(GUEST_BUILD_DIR + name), name),
    named !== undefined
      ? `point the variable at an existing ${name} guest, or unset it and run \`${fixCommand()}\``
      : `run \`${fixCommand()}\``,
  );
}).bind(undefined); // Eager: see the note after the imports.

/**
 * Finds the Wasm compiler library: `$HL_WASM_COMPILER_LIB`, else the local cargo build
 * (`target/release/`), else the setup cache. Throws {@linkcode LibraryNotFoundError}.
 */
export function findCompiler(): string {
  requireFfi("loading the Wasm compiler library");
  const named = env("HL_WASM_COMPILER_LIB");
  const found = firstFile(named, localPath(`target/release/${COMPILER_FILE}`), "compiler");
  if (found !== undefined) return found;
  throw new LibraryNotFoundError(
    candidates(named, localPath(`target/release/${COMPILER_FILE}`), "compiler"),
    `the wasmtime engine needs ${COMPILER_FILE}: run \`${fixCommand()}\``,
  );
}

/**
 * Finds the compiler's child process (`hl-wasm-compile`, which compiles every untrusted module
 * under seccomp): `$HL_WASM_COMPILE_BIN`, else the local cargo build (`target/release/`), else
 * the setup cache. Throws {@linkcode LibraryNotFoundError}.
 */
export function findCompileChild(): string {
  requireFfi("starting the Wasm compiler process");
  const named = env("HL_WASM_COMPILE_BIN");
  const found = firstFile(
    named,
    localPath(`target/release/${COMPILE_CHILD_FILE}`),
    "compile-child",
  );
  if (found !== undefined) return found;
  throw new LibraryNotFoundError(
    candidates(
      named,
      localPath(`target/release/${COMPILE_CHILD_FILE}`),
      "compile-child",
    ),
    `the wasmtime engine needs its compiler process ${COMPILE_CHILD_FILE}: run \`${fixCommand()}\``,
  );
}

/**
 * Finds a language runtime's Wasm module (`quickjs`: `JsSandbox`'s engine): `$HL_QUICKJS_WASM`
 * (then only it), else the package's `target/runtimes/quickjs.wasm` (a clone's build, or the
 * copy shipped in the package when it is on the local disk), else the setup cache. Throws
 * {@linkcode GuestNotFoundError} naming the command that fixes it. Needs `--allow-read` (the
 * module is read, not mapped) or `--allow-ffi` for the lookup.
 */
export const findRuntimeModule = (function findRuntimeModule(name: RuntimeModuleName): string {
  requireFfi(`finding the ${name} runtime module`);
  const named = env("HL_QUICKJS_WASM");
  const found = firstFile(named, localPath(runtimeModulePath(name)), name);
  if (found !== undefined) return found;
  const tools = localPath("tools/build_quickjs.sh");
  const inClone = tools !== undefined && isFile(tools);
  throw new GuestNotFoundError(
    `${name}.wasm`,
    candidates(named, localPath(runtimeModulePath(name)), name),
    named !== undefined
      ? `point HL_QUICKJS_WASM at an existing ${name}.wasm, or unset it and run \`${fixCommand()}\``
      : inClone
      ? "run `bash tools/build_quickjs.sh` (needs Debian's clang lld wasi-libc " +
        "libclang-rt-14-dev-wasm32: `bash tools/setup.sh test`)"
      : `run \`${fixCommand()}\``,
  );
}).bind(undefined); // Eager: see the note after the imports.

/** The built-in guests by name; see {@linkcode guests}. */
export interface BuiltinGuests {
  /** The test guest (`guest/testguest`): `add`, `echo`, `call_host`, ...; see `guest/README.md`. */
  readonly testguest: string;
  /** The guest that runs WebAssembly modules (`guest/wasm-runtime`); `WasmSandbox` uses it. */
  readonly wasmRuntime: string;
}

/**
 * The built-in guests, each resolved to a path when read (local build, else the setup cache),
 * so a program never types a path. Reading one that is not built throws
 * {@linkcode GuestNotFoundError} naming the command that builds it.
 *
 * @example
 * ```ts
 * import { guests, Sandbox } from "@hl/sandbox";
 * await using sb = await Sandbox.create({ guest: guests.testguest });
 * console.log(await sb.call("add", 2, 3)); // 5
 * ```
 */
export const guests: BuiltinGuests = {
  get testguest(): string {
    return findGuest("testguest");
  },
  get wasmRuntime(): string {
    return findGuest("wasm-runtime");
  },
};
