/**
 * The library's own access to the host's files and environment, under exactly the permissions a
 * user grants. The library cannot work without `--allow-ffi` (it is a native library), and FFI
 * grants everything a process can do; so with `--allow-ffi` alone, the files the library itself
 * needs (the native library, the built-in guests, a guest or module given as a path) are read
 * through the C library (`open`/`fstat`/`read` via `Deno.dlopen("libc.so.6")`), and `HOME` /
 * `XDG_CACHE_HOME` (where the setup cache lives) through `getenv`. Where `--allow-read` /
 * `--allow-env` are granted, Deno's own APIs are used.
 *
 * `HL_*` variables are configuration: they are consulted only when `--allow-env` grants them
 * (never through `getenv`), so a program that does not grant the environment is not steered by it.
 *
 * Permissions are asked with `Deno.permissions.querySync` first, so the library never makes Deno
 * prompt on a terminal. A permission the library truly needs and does not have is a
 * {@linkcode PermissionError} naming the flag.
 *
 * Why libc and not a C-ABI entry in the cdylib (`hl_read_file`): the cdylib's own path and the
 * setup cache's directory (from `HOME`) must be known *before* the cdylib is open; libc is always
 * loaded and needs no ABI version bump.
 *
 * @module
 */

import { PermissionError } from "./errors.ts";

// Eager compilation (docs/js.md "Eager compilation"): the functions here written
// `const f = (function f() {...}).bind(undefined)` run in every cold create + first call. V8
// compiles a parenthesised function together with its module, so Deno's code cache holds it and a
// new process does not compile it again on first call (a declaration is compiled lazily, in every
// process). `.bind` keeps the parentheses: Deno's TypeScript emit drops redundant ones.

const state = (function state(desc: Deno.PermissionDescriptor): Deno.PermissionState {
  try {
    return Deno.permissions.querySync(desc).state;
  } catch {
    return "denied";
  }
}).bind(undefined); // Eager: see the note after the imports.

/** Whether FFI is granted (to every library: the library then may use libc). */
export const ffiGranted = (function ffiGranted(): boolean {
  return state({ name: "ffi" }) === "granted";
}).bind(undefined); // Eager: see the note after the imports.

/** Throws {@linkcode PermissionError} naming `--allow-ffi` unless FFI is granted. */
export const requireFfi = (function requireFfi(what: string): void {
  if (!ffiGranted()) throw new PermissionError("--allow-ffi", what);
}).bind(undefined); // Eager: see the note after the imports.

const readGranted = (function readGranted(path: string | URL): boolean {
  return state({ name: "read", path }) === "granted";
}).bind(undefined); // Eager: see the note after the imports.

const LIBC_SYMBOLS = {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  getenv: { parameters: ["buffer"], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];
let libc: Libc | null | undefined;

/** libc's symbols, or undefined when FFI is not granted or libc cannot be opened. */
function openLibc(): Libc | undefined {
  if (libc !== undefined) return libc ?? undefined;
  if (!ffiGranted()) return undefined;
  try {
    libc = Deno.dlopen("libc.so.6", LIBC_SYMBOLS).symbols;
  } catch {
    libc = null;
  }
  return libc ?? undefined;
}

const encoder = new TextEncoder();
const cString = (s: string) => encoder.encode(s + "\0");

/** An OS error from libc, with its errno. */
export class OsError extends Error {
  /** The errno value (e.g. 2 for ENOENT). */
  readonly errno: number;
  /** Creates the error from the errno and what was being done. */
  constructor(errno: number, what: string) {
    const lc = openLibc();
    const p = lc?.strerror(errno);
    const text = p ? Deno.UnsafePointerView.getCString(p) : `errno ${errno}`;
    super(`${what}: ${text} (os error ${errno})`);
    this.name = errno === 2 ? "NotFound" : "OsError";
    this.errno = errno;
  }
}

function errno(lc: Libc): number {
  const p = lc.__errno_location();
  return p ? new Deno.UnsafePointerView(p).getInt32() : 0;
}

const O_RDONLY_CLOEXEC = 0o2000000;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const EINTR = 4;
/** `struct stat` on x86-64 Linux: 144 bytes; `st_mode` at 24, `st_size` at 48. */
const STAT_SIZE = 144;

/** Opens `path` read-only through libc; returns the fd and the file's mode and size. */
function libcOpen(lc: Libc, path: string): { fd: number; mode: number; size: number } {
  const fd = lc.open(cString(path), O_RDONLY_CLOEXEC);
  if (fd < 0) throw new OsError(errno(lc), `open ${path}`);
  const st = new Uint8Array(STAT_SIZE);
  if (lc.fstat(fd, st) !== 0) {
    const e = errno(lc);
    lc.close(fd);
    throw new OsError(e, `fstat ${path}`);
  }
  const view = new DataView(st.buffer);
  return { fd, mode: view.getUint32(24, true), size: Number(view.getBigInt64(48, true)) };
}

function libcReadFile(lc: Libc, path: string): Uint8Array {
  const { fd, mode, size } = libcOpen(lc, path);
  try {
    if ((mode & S_IFMT) !== S_IFREG) throw new OsError(21, `read ${path}`); // EISDIR-like
    let buf = new Uint8Array(Math.max(size, 4096));
    let len = 0;
    for (;;) {
      if (len === buf.length) {
        const grown = new Uint8Array(buf.length * 2);
        grown.set(buf);
        buf = grown;
      }
      const n = Number(lc.read(fd, buf.subarray(len), BigInt(buf.length - len)));
      if (n < 0) {
        const e = errno(lc);
        if (e === EINTR) continue;
        throw new OsError(e, `read ${path}`);
      }
      if (n === 0) break;
      len += n;
    }
    return buf.length === len ? buf : buf.slice(0, len);
  } finally {
    lc.close(fd);
  }
}

function pathString(path: string | URL): string {
  if (typeof path === "string") return path;
  if (path.protocol !== "file:") throw new TypeError(`not a file: URL: ${path.href}`);
  return decodeURIComponent(path.pathname);
}

/**
 * The bytes of the file at `path`: with Deno's API where `--allow-read` grants it, else through
 * libc where `--allow-ffi` is granted, else a {@linkcode PermissionError} naming `--allow-ffi`.
 * OS errors (not found, a directory) are thrown as they come.
 */
export async function readFile(path: string | URL, what: string): Promise<Uint8Array> {
  if (readGranted(path)) return await Deno.readFile(path);
  const lc = openLibc();
  if (lc === undefined) {
    throw new PermissionError(
      ffiGranted() ? "--allow-read" : "--allow-ffi",
      `reading the ${what} ${path}`,
    );
  }
  return libcReadFile(lc, pathString(path));
}

/** Whether `path` is a regular file (false when it cannot be checked). */
export const isFile = (function isFile(path: string): boolean {
  if (readGranted(path)) {
    try {
      return Deno.statSync(path).isFile;
    } catch {
      return false;
    }
  }
  const lc = openLibc();
  if (lc === undefined) return false;
  try {
    const { fd, mode } = libcOpen(lc, path);
    lc.close(fd);
    return (mode & S_IFMT) === S_IFREG;
  } catch {
    return false;
  }
}).bind(undefined); // Eager: see the note after the imports.

const envGranted = (function envGranted(name: string): boolean {
  return state({ name: "env", variable: name }) === "granted";
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A configuration variable (`HL_*`): its value only when `--allow-env` grants it, else undefined
 * (never a prompt, never libc). An empty value counts as unset.
 */
export const configEnv = (function configEnv(name: string): string | undefined {
  if (!envGranted(name)) return undefined;
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined;
  }
}).bind(undefined); // Eager: see the note after the imports.

/**
 * A variable that says where the user's files are (`HOME`, `XDG_CACHE_HOME`): from Deno where
 * `--allow-env` grants it, else from libc's `getenv` where FFI is granted. Empty counts as unset.
 */
export const locationEnv = (function locationEnv(name: string): string | undefined {
  if (envGranted(name)) {
    // Granted: read it here (configEnv would ask for the same permission again).
    try {
      return Deno.env.get(name) || undefined;
    } catch {
      return undefined;
    }
  }
  const lc = openLibc();
  if (lc === undefined) return undefined;
  const p = lc.getenv(cString(name));
  return (p ? Deno.UnsafePointerView.getCString(p) : "") || undefined;
}).bind(undefined); // Eager: see the note after the imports.
