/**
 * Path resolution for the host's WASI file layer (`wasi_fs.ts`): the preopens option, errno
 * values, and {@linkcode resolvePath}, which confines a module's path to the directory fd it is
 * relative to. docs/wasm.md ("Files") states what it guarantees.
 *
 * @module
 */

import { ArgumentError } from "../errors.ts";

/** WASI errno values used here. */
export const Errno = {
  SUCCESS: 0,
  ACCES: 2,
  BADF: 8,
  BUSY: 10,
  EXIST: 20,
  FBIG: 22,
  ILSEQ: 25,
  INVAL: 28,
  IO: 29,
  ISDIR: 31,
  LOOP: 32,
  MFILE: 33,
  NAMETOOLONG: 37,
  NFILE: 41,
  NOENT: 44,
  NOSPC: 51,
  NOTDIR: 54,
  NOTEMPTY: 55,
  NOTSUP: 58,
  OVERFLOW: 61,
  PERM: 63,
  ROFS: 69,
  SPIPE: 70,
  XDEV: 75,
  NOTCAPABLE: 76,
} as const;

/** A WASI call failed with `errno`. */
export class WasiErrno extends Error {
  /** The errno. */
  readonly errno: number;

  constructor(errno: number, message = `errno ${errno}`) {
    super(message);
    this.errno = errno;
  }
}

/**
 * One `WasiErrno` per errno, made once: {@linkcode fail} throws it again instead of building a
 * new error (with its stack) for every failed request. Nothing reads a WasiErrno's stack: the
 * request handler turns it into the reply's errno (`errnoOf`). A path that does not exist is an
 * everyday answer (SQLite asks for its journal's and WAL's status in every transaction).
 */
const thrown = new Map<number, WasiErrno>();

/** Throws `WasiErrno(errno)`. */
export const fail = (errno: number): never => {
  let e = thrown.get(errno);
  if (e === undefined) thrown.set(errno, e = new WasiErrno(errno));
  throw e;
};

/** Open files and directories per sandbox, preopens included; one more is `EMFILE`. */
export const MAX_OPEN = 128;
/** Longest path the module may pass, in bytes (`ENAMETOOLONG`). */
export const MAX_PATH = 4096;
/** Longest path component, in bytes (`ENAMETOOLONG`). */
export const MAX_NAME = 255;
/** Most symbolic links one resolution follows (`ELOOP`). */
export const MAX_SYMLINKS = 32;
/** A preopened directory as given: the module's name for it, the host directory, writable. */
export interface PreopenSpec {
  /** The name the module sees (`fd_prestat_dir_name`), e.g. `/data`. */
  readonly guest: string;
  /** The host directory's real path (symlinks resolved at create). */
  readonly host: string;
  /** Whether the module may change anything under it. */
  readonly writable: boolean;
}

/** A preopen as the file layer holds it. */
export interface Root {
  readonly host: string;
  readonly writable: boolean;
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Checks the `wasi.preopens` option: `{ guestName: hostDir | { path, writable } }`. Host
 * directories must exist; their real paths are kept. Throws `ArgumentError`.
 */
export function checkPreopens(
  preopens: unknown,
): PreopenSpec[] {
  if (preopens === undefined) return [];
  if (typeof preopens !== "object" || preopens === null || Array.isArray(preopens)) {
    throw new ArgumentError(
      'wasi.preopens must be an object { "/guest": "host/dir" | { path, writable } }',
    );
  }
  const out: PreopenSpec[] = [];
  for (const [guest, value] of Object.entries(preopens)) {
    if (guest.length === 0 || guest.includes("\0") || utf8.encode(guest).length > MAX_PATH) {
      throw new ArgumentError(`wasi.preopens: bad guest name ${JSON.stringify(guest)}`);
    }
    let path: unknown = value;
    let writable = false;
    if (typeof value === "object" && value !== null && !(value instanceof URL)) {
      const v = value as { path?: unknown; writable?: unknown };
      path = v.path;
      if (v.writable !== undefined && typeof v.writable !== "boolean") {
        throw new ArgumentError(`wasi.preopens["${guest}"].writable must be a boolean`);
      }
      writable = v.writable ?? false;
    }
    if (typeof path !== "string" && !(path instanceof URL)) {
      throw new ArgumentError(`wasi.preopens["${guest}"] must be a path, a URL or { path }`);
    }
    let host: string;
    try {
      host = Deno.realPathSync(path);
      if (!Deno.statSync(host).isDirectory) throw new Error("not a directory");
    } catch (e) {
      throw new ArgumentError(
        `wasi.preopens["${guest}"]: ${String(path)} is not a usable directory: ${
          e instanceof Error ? e.message : e
        }`,
        { cause: e },
      );
    }
    out.push({ guest, host, writable });
  }
  if (out.length > MAX_OPEN / 2) {
    throw new ArgumentError(`wasi.preopens: at most ${MAX_OPEN / 2} directories`);
  }
  return out;
}

/** WASI errno by Node/Deno error code. */
const byCode: Readonly<Record<string, number>> = {
  ENOENT: Errno.NOENT,
  EEXIST: Errno.EXIST,
  EACCES: Errno.ACCES,
  EPERM: Errno.PERM,
  EISDIR: Errno.ISDIR,
  ENOTDIR: Errno.NOTDIR,
  ENOTEMPTY: Errno.NOTEMPTY,
  ELOOP: Errno.LOOP,
  ENAMETOOLONG: Errno.NAMETOOLONG,
  ENOSPC: Errno.NOSPC,
  EROFS: Errno.ROFS,
  EXDEV: Errno.XDEV,
  EINVAL: Errno.INVAL,
  EBADF: Errno.BADF,
  EBUSY: Errno.BUSY,
  EFBIG: Errno.FBIG,
  EMFILE: Errno.MFILE,
  ENFILE: Errno.NFILE,
  ESPIPE: Errno.SPIPE,
  EOVERFLOW: Errno.OVERFLOW,
};

/** Errno of a Deno file system error. */
export function errnoOf(e: unknown): number {
  if (e instanceof WasiErrno) return e.errno;
  const code = (e as { code?: unknown })?.code;
  if (typeof code === "string" && Object.hasOwn(byCode, code)) return byCode[code];
  if (e instanceof Deno.errors.NotFound) return Errno.NOENT;
  if (e instanceof Deno.errors.AlreadyExists) return Errno.EXIST;
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return Errno.ACCES;
  }
  if (e instanceof Deno.errors.IsADirectory) return Errno.ISDIR;
  if (e instanceof Deno.errors.NotADirectory) return Errno.NOTDIR;
  return Errno.IO;
}

/** Decodes a path from the module: UTF-8 (`EILSEQ`), no NUL (`EINVAL`), bounded lengths. */
function pathText(bytes: Uint8Array): string {
  if (bytes.length > MAX_PATH) fail(Errno.NAMETOOLONG);
  if (bytes.length === 0) fail(Errno.NOENT);
  if (bytes.includes(0)) fail(Errno.INVAL);
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return fail(Errno.ILSEQ);
  }
}

/** The host path of `rel` below `root`. */
export function join(root: Root, rel: readonly string[]): string {
  return rel.length === 0 ? root.host : `${root.host}/${rel.join("/")}`;
}

/** `lstat`, or `undefined` when nothing is there. */
export function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
}

/** A resolved path: its root, its components below the root, and the host path. */
export interface Resolved {
  readonly root: Root;
  readonly rel: string[];
  readonly host: string;
  /** `lstat` of the host path (undefined: it does not exist). */
  readonly info: Deno.FileInfo | undefined;
}

/**
 * Resolves `path` below directory `dir`, never above it: `..` may not leave `dir`, absolute
 * paths and symlinks to absolute targets are `ENOTCAPABLE`, each symlink on the way (and the
 * last component with `follow`) is expanded lexically, at most {@linkcode MAX_SYMLINKS}
 * (`ELOOP`). Intermediate components must be directories.
 */
export function resolvePath(
  dir: { readonly root: Root; readonly rel: readonly string[] },
  bytes: Uint8Array,
  follow: boolean,
): Resolved {
  const text = pathText(bytes);
  if (text.startsWith("/")) fail(Errno.NOTCAPABLE);
  const pending = text.split("/").reverse();
  const rel = [...dir.rel];
  const floor = dir.rel.length;
  let links = 0;
  let info: Deno.FileInfo | undefined = lstat(join(dir.root, rel));
  while (pending.length > 0) {
    const part = pending.pop()!;
    if (part === "" || part === ".") continue;
    if (utf8.encode(part).length > MAX_NAME) fail(Errno.NAMETOOLONG);
    // The directory we are in must be one.
    if (!info) fail(Errno.NOENT);
    if (!info!.isDirectory) fail(Errno.NOTDIR);
    if (part === "..") {
      if (rel.length <= floor) fail(Errno.NOTCAPABLE);
      rel.pop();
      info = lstat(join(dir.root, rel));
      continue;
    }
    rel.push(part);
    info = lstat(join(dir.root, rel));
    const last = pending.every((p) => p === "" || p === ".");
    if (info?.isSymlink && (!last || follow)) {
      if (++links > MAX_SYMLINKS) fail(Errno.LOOP);
      const target = Deno.readLinkSync(join(dir.root, rel));
      if (target.startsWith("/")) fail(Errno.NOTCAPABLE);
      if (target.length === 0) fail(Errno.NOENT);
      rel.pop();
      pending.push(...target.split("/").reverse());
      info = lstat(join(dir.root, rel));
    }
  }
  // A trailing slash means "a directory".
  if (text.endsWith("/") && info && !info.isDirectory) fail(Errno.NOTDIR);
  return { root: dir.root, rel, host: join(dir.root, rel), info };
}
