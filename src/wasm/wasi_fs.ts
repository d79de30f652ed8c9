/**
 * The host half of WASI file access: one sandbox's table of open files and directories and the
 * file calls on them (paths are resolved, confined, by `wasi_path.ts`). The guest
 * (`guest/wasi/src/files.rs`) forwards each file call as one `wasi_io` request;
 * everything that confines the module is checked here, since the guest is as hostile as the
 * module. Confinement and its guarantees are in docs/wasm.md ("Files").
 *
 * Operations are synchronous (Deno's `*Sync` file APIs): a request is served start to finish
 * without yielding to the event loop, so nothing else in this process (another sandbox sharing a
 * directory included) can change the files between a check and the use that follows it.
 *
 * @module
 */

import {
  Errno,
  fail,
  join,
  lstat,
  MAX_OPEN,
  type PreopenSpec,
  type Resolved,
  resolvePath,
  type Root,
} from "./wasi_path.ts";

const FILETYPE = { UNKNOWN: 0, CHARACTER_DEVICE: 2, DIRECTORY: 3, REGULAR: 4, SYMLINK: 7 };
const OFLAGS = { CREAT: 1, DIRECTORY: 2, EXCL: 4, TRUNC: 8 };
const FDFLAGS = { APPEND: 1, DSYNC: 2, NONBLOCK: 4, RSYNC: 8, SYNC: 16 };
const LOOKUP_SYMLINK_FOLLOW = 1;
const RIGHT = {
  FD_DATASYNC: 1n << 0n,
  FD_READ: 1n << 1n,
  FD_SEEK: 1n << 2n,
  FD_FDSTAT_SET_FLAGS: 1n << 3n,
  FD_SYNC: 1n << 4n,
  FD_TELL: 1n << 5n,
  FD_WRITE: 1n << 6n,
  FD_ADVISE: 1n << 7n,
  FD_ALLOCATE: 1n << 8n,
  FD_READDIR: 1n << 14n,
  FD_FILESTAT_GET: 1n << 21n,
  FD_FILESTAT_SET_SIZE: 1n << 22n,
  FD_FILESTAT_SET_TIMES: 1n << 23n,
  POLL_FD_READWRITE: 1n << 27n,
};
/** Every right of preview 1 (bits 0-29). */
const ALL_RIGHTS = (1n << 30n) - 1n;
const FILE_RIGHTS = RIGHT.FD_SEEK | RIGHT.FD_TELL | RIGHT.FD_FDSTAT_SET_FLAGS |
  RIGHT.FD_ADVISE | RIGHT.FD_FILESTAT_GET | RIGHT.FD_FILESTAT_SET_TIMES |
  RIGHT.POLL_FD_READWRITE;
const WRITE_RIGHTS = RIGHT.FD_WRITE | RIGHT.FD_DATASYNC | RIGHT.FD_SYNC | RIGHT.FD_ALLOCATE |
  RIGHT.FD_FILESTAT_SET_SIZE;

/** Most entries `fd_readdir` lists of one directory (more are not listed). */
export const MAX_DIR_ENTRIES = 65_536;
/** Most bytes one read, write or listing moves. */
export const MAX_TRANSFER = 1 << 20;

interface DirHandle {
  readonly kind: "dir";
  readonly root: Root;
  /** Components below the root. */
  readonly rel: readonly string[];
  /** Entries as listed at the last `fd_readdir` with cookie 0. */
  listing?: { name: Uint8Array; type: number; ino: bigint }[];
}

interface FileHandle {
  readonly kind: "file";
  readonly root: Root;
  readonly rel: readonly string[];
  readonly file: Deno.FsFile;
  readonly read: boolean;
  readonly write: boolean;
  flags: number;
}

type Handle = DirHandle | FileHandle;

const utf8 = new TextEncoder();

function fileType(info: Deno.FileInfo): number {
  if (info.isFile) return FILETYPE.REGULAR;
  if (info.isDirectory) return FILETYPE.DIRECTORY;
  if (info.isSymlink) return FILETYPE.SYMLINK;
  if (info.isCharDevice) return FILETYPE.CHARACTER_DEVICE;
  return FILETYPE.UNKNOWN;
}

function ns(d: Date | null | undefined): bigint {
  return d ? BigInt(d.getTime()) * 1_000_000n : 0n;
}

/** `$filestat`: dev, ino, filetype, nlink, size, atim, mtim, ctim (64 bytes). */
function filestat(info: Deno.FileInfo): Uint8Array {
  const out = new Uint8Array(64);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt(Math.max(0, info.dev ?? 0)), true);
  v.setBigUint64(8, BigInt(Math.max(0, info.ino ?? 0)), true);
  v.setUint8(16, fileType(info));
  v.setBigUint64(24, BigInt(Math.max(0, info.nlink ?? 1)), true);
  v.setBigUint64(32, BigInt(info.size), true);
  v.setBigUint64(40, ns(info.atime), true);
  v.setBigUint64(48, ns(info.mtime), true);
  v.setBigUint64(56, ns(info.ctime ?? info.mtime), true);
  return out;
}

/**
 * One sandbox's files. Fds 3.. start as the preopened directories; opened files and directories
 * take the lowest free fd. Every fd the module passes is looked up here (`EBADF` otherwise), so
 * a module can only reach its own handles.
 */
export class WasiFiles {
  readonly #preopens: readonly PreopenSpec[];
  readonly #fds = new Map<number, Handle>();

  constructor(preopens: readonly PreopenSpec[]) {
    this.#preopens = preopens;
    this.reset();
  }

  /** Closes every file the module opened and reopens the preopens (restore, dispose). */
  reset(): void {
    this.close();
    this.#preopens.forEach((p, i) => {
      this.#fds.set(3 + i, { kind: "dir", root: { host: p.host, writable: p.writable }, rel: [] });
    });
  }

  /** Closes every open file (dispose). */
  close(): void {
    for (const h of this.#fds.values()) {
      if (h.kind === "file") {
        try {
          h.file.close();
        } catch {
          // Already closed.
        }
      }
    }
    this.#fds.clear();
  }

  /** Number of open fds (preopens included). */
  get openCount(): number {
    return this.#fds.size;
  }

  #handle(fd: number): Handle {
    return this.#fds.get(fd) ?? fail(Errno.BADF);
  }

  #file(fd: number): FileHandle {
    const h = this.#handle(fd);
    if (h.kind !== "file") fail(Errno.ISDIR);
    return h as FileHandle;
  }

  #dir(fd: number): DirHandle {
    const h = this.#handle(fd);
    if (h.kind !== "dir") fail(Errno.NOTDIR);
    return h as DirHandle;
  }

  #writable(r: { root: Root }): void {
    if (!r.root.writable) fail(Errno.ROFS);
  }

  #newFd(handle: Handle): number {
    if (this.#fds.size >= MAX_OPEN) {
      if (handle.kind === "file") handle.file.close();
      fail(Errno.MFILE);
    }
    let fd = 3;
    while (this.#fds.has(fd)) fd++;
    this.#fds.set(fd, handle);
    return fd;
  }

  /** `path_open`. Returns the new fd. */
  open(
    dirFd: number,
    lookup: number,
    path: Uint8Array,
    oflags: number,
    rightsBase: bigint,
    fdflags: number,
  ): number {
    const dir = this.#dir(dirFd);
    const follow = (lookup & LOOKUP_SYMLINK_FOLLOW) !== 0;
    const r = resolvePath(dir, path, follow);
    const wantRead = (rightsBase & (RIGHT.FD_READ | RIGHT.FD_READDIR)) !== 0n;
    const wantWrite = (rightsBase & RIGHT.FD_WRITE) !== 0n ||
      (fdflags & FDFLAGS.APPEND) !== 0;
    const create = (oflags & OFLAGS.CREAT) !== 0;
    const truncate = (oflags & OFLAGS.TRUNC) !== 0;
    if (r.info?.isSymlink) fail(Errno.LOOP); // the last component, not followed (O_NOFOLLOW)
    if (r.info && create && (oflags & OFLAGS.EXCL) !== 0) fail(Errno.EXIST);
    if (r.info?.isDirectory || (oflags & OFLAGS.DIRECTORY) !== 0) {
      if (!r.info) fail(create ? Errno.INVAL : Errno.NOENT);
      if (!r.info!.isDirectory) fail(Errno.NOTDIR);
      if (wantWrite || truncate) fail(Errno.ISDIR);
      return this.#newFd({ kind: "dir", root: r.root, rel: r.rel });
    }
    if (!r.info && !create) fail(Errno.NOENT);
    if (r.rel.length === 0) fail(Errno.ISDIR);
    if (wantWrite || truncate || (create && !r.info)) this.#writable(r);
    if (r.info && !r.info.isFile) fail(Errno.NOTSUP); // devices, sockets, fifos
    const file = Deno.openSync(r.host, {
      read: wantRead || !wantWrite,
      write: wantWrite && (fdflags & FDFLAGS.APPEND) === 0,
      append: (fdflags & FDFLAGS.APPEND) !== 0,
      create,
      createNew: create && (oflags & OFLAGS.EXCL) !== 0,
      truncate,
    });
    try {
      this.#sameFile(file, r);
    } catch (e) {
      file.close();
      throw e;
    }
    return this.#newFd({
      kind: "file",
      root: r.root,
      rel: r.rel,
      file,
      read: wantRead || !wantWrite,
      write: wantWrite,
      flags: fdflags & (FDFLAGS.APPEND | FDFLAGS.DSYNC | FDFLAGS.RSYNC | FDFLAGS.SYNC),
    });
  }

  /**
   * After an open: the file opened is the one the checked path names now (same device and
   * inode as `lstat`, a regular file), and that path's real location is inside the root. A
   * component swapped for a symlink by another process between the check and the open is
   * caught here (`ENOTCAPABLE`).
   */
  #sameFile(file: Deno.FsFile, r: Resolved): void {
    const opened = file.statSync();
    const now = lstat(r.host);
    const real = Deno.realPathSync(r.host);
    if (
      !now || !now.isFile || now.ino !== opened.ino || now.dev !== opened.dev ||
      !(real === r.root.host || real.startsWith(`${r.root.host}/`))
    ) {
      fail(Errno.NOTCAPABLE);
    }
  }

  /** `fd_close`. */
  closeFd(fd: number): void {
    const h = this.#handle(fd);
    this.#fds.delete(fd);
    if (h.kind === "file") h.file.close();
  }

  /** `fd_read` (`offset` undefined) and `fd_pread`: at most `max` bytes; empty at the end. */
  read(fd: number, max: number, offset?: bigint): Uint8Array {
    const h = this.#file(fd);
    if (!h.read) fail(Errno.BADF);
    const buf = new Uint8Array(Math.min(max, MAX_TRANSFER));
    const at = (fn: () => number | null) => {
      if (offset === undefined) return fn();
      const saved = h.file.seekSync(0, Deno.SeekMode.Current);
      h.file.seekSync(offset, Deno.SeekMode.Start);
      try {
        return fn();
      } finally {
        h.file.seekSync(saved, Deno.SeekMode.Start);
      }
    };
    let n = 0;
    while (n < buf.length) {
      const got = at(() => h.file.readSync(buf.subarray(n)));
      if (got === null || got === 0) break;
      n += got;
      if (offset !== undefined) offset += BigInt(got);
    }
    return buf.slice(0, n);
  }

  /** `fd_write` (`offset` undefined) and `fd_pwrite`: returns the bytes written. */
  write(fd: number, data: Uint8Array, offset?: bigint): number {
    const h = this.#file(fd);
    if (!h.write) fail(Errno.BADF);
    this.#writable(h);
    if (offset === undefined) return writeAll(h.file, data);
    const saved = h.file.seekSync(0, Deno.SeekMode.Current);
    h.file.seekSync(offset, Deno.SeekMode.Start);
    try {
      return writeAll(h.file, data);
    } finally {
      h.file.seekSync(saved, Deno.SeekMode.Start);
    }
  }

  /** `fd_seek` (whence 0 set, 1 current, 2 end): the new offset. */
  seek(fd: number, offset: bigint, whence: number): bigint {
    const h = this.#handle(fd);
    if (h.kind !== "file") fail(Errno.BADF);
    const mode = [Deno.SeekMode.Start, Deno.SeekMode.Current, Deno.SeekMode.End][whence];
    if (mode === undefined) fail(Errno.INVAL);
    const file = (h as FileHandle).file;
    if (whence === 0 && offset < 0n) fail(Errno.INVAL);
    return BigInt(file.seekSync(offset, mode!));
  }

  /** `fd_fdstat_get` (24 bytes). */
  fdstat(fd: number): Uint8Array {
    const h = this.#handle(fd);
    const out = new Uint8Array(24);
    const v = new DataView(out.buffer);
    if (h.kind === "dir") {
      v.setUint8(0, FILETYPE.DIRECTORY);
      v.setBigUint64(8, ALL_RIGHTS, true);
      v.setBigUint64(16, ALL_RIGHTS, true);
    } else {
      v.setUint8(0, FILETYPE.REGULAR);
      v.setUint16(2, h.flags, true);
      const base = FILE_RIGHTS | (h.read ? RIGHT.FD_READ : 0n) | (h.write ? WRITE_RIGHTS : 0n);
      v.setBigUint64(8, base, true);
    }
    return out;
  }

  /** `fd_fdstat_set_flags`: the flags the file has already succeed; a change is `ENOTSUP`. */
  setFlags(fd: number, flags: number): void {
    const h = this.#handle(fd);
    const current = h.kind === "file" ? h.flags : 0;
    if (flags !== current) fail(Errno.NOTSUP);
  }

  /** `fd_filestat_get`. */
  filestat(fd: number): Uint8Array {
    const h = this.#handle(fd);
    if (h.kind === "file") return filestat(h.file.statSync());
    return filestat(Deno.statSync(join(h.root, h.rel)));
  }

  /** `fd_filestat_set_size`. */
  setSize(fd: number, size: bigint): void {
    const h = this.#file(fd);
    if (!h.write) fail(Errno.BADF);
    this.#writable(h);
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) fail(Errno.FBIG);
    h.file.truncateSync(Number(size));
  }

  /** `fd_filestat_set_times` / `path_filestat_set_times` (fstflags: 1 atim, 2 atim_now, 4 mtim, 8 mtim_now). */
  setTimes(fd: number, atim: bigint, mtim: bigint, fst: number, path?: Uint8Array, lookup = 0) {
    if ((fst & 3) === 3 || (fst & 12) === 12 || fst > 15) fail(Errno.INVAL);
    const h = this.#handle(fd);
    let target: { root: Root; host: string; info?: Deno.FileInfo };
    if (path === undefined) target = { root: h.root, host: join(h.root, h.rel) };
    else {
      const r = resolvePath(this.#dir(fd), path, (lookup & LOOKUP_SYMLINK_FOLLOW) !== 0);
      if (!r.info) fail(Errno.NOENT);
      if (r.info!.isSymlink) fail(Errno.NOTSUP);
      target = r;
    }
    this.#writable(target);
    // The old times are needed only for a time the module leaves as it is (neither given nor
    // "now"): `utimes(path, NULL)`, SQLite's lock refresh, sets both to now.
    const keeps = (fst & 3) === 0 || (fst & 12) === 0;
    const info = !keeps
      ? undefined
      : h.kind === "file" && path === undefined
      ? h.file.statSync()
      : Deno.statSync(target.host);
    const now = new Date();
    const pick = (given: bigint, set: number, setNow: number, old: Date | null | undefined) =>
      (fst & set) ? new Date(Number(given / 1_000_000n)) : (fst & setNow) ? now : old ?? now;
    const a = pick(atim, 1, 2, info?.atime);
    const m = pick(mtim, 4, 8, info?.mtime);
    if (h.kind === "file" && path === undefined) h.file.utimeSync(a, m);
    else Deno.utimeSync(target.host, a, m);
  }

  /** `fd_sync` / `fd_datasync`. */
  sync(fd: number, dataOnly: boolean): void {
    const h = this.#handle(fd);
    if (h.kind !== "file") return; // directories: nothing to flush that the host exposes
    if (dataOnly) h.file.syncDataSync();
    else h.file.syncSync();
  }

  /** `fd_advise`: a hint, accepted for files. */
  advise(fd: number): void {
    this.#file(fd);
  }

  /**
   * `fd_readdir`: `$dirent` records from entry `cookie` on, at most `max` bytes (the last one
   * cut short when it does not fit, as WASI specifies). `.` and `..` are not listed.
   */
  readdir(fd: number, cookie: bigint, max: number): Uint8Array {
    const h = this.#dir(fd);
    if (cookie === 0n || !h.listing) {
      const host = join(h.root, h.rel);
      const listing: NonNullable<DirHandle["listing"]> = [];
      for (const e of Deno.readDirSync(host)) {
        if (listing.length >= MAX_DIR_ENTRIES) break;
        const info = lstat(`${host}/${e.name}`);
        listing.push({
          name: utf8.encode(e.name),
          type: info ? fileType(info) : FILETYPE.UNKNOWN,
          ino: BigInt(Math.max(0, info?.ino ?? 0)),
        });
      }
      h.listing = listing;
    }
    const limit = Math.min(max, MAX_TRANSFER);
    const out = new Uint8Array(limit);
    let pos = 0;
    for (let i = Number(cookie); i < h.listing.length && pos < limit; i++) {
      const e = h.listing[i];
      const header = new Uint8Array(24);
      const hv = new DataView(header.buffer);
      hv.setBigUint64(0, BigInt(i + 1), true);
      hv.setBigUint64(8, e.ino, true);
      hv.setUint32(16, e.name.length, true);
      hv.setUint8(20, e.type);
      for (const part of [header, e.name]) {
        const n = Math.min(part.length, limit - pos);
        out.set(part.subarray(0, n), pos);
        pos += n;
      }
    }
    return out.slice(0, pos);
  }

  /** `path_filestat_get`. */
  pathFilestat(fd: number, lookup: number, path: Uint8Array): Uint8Array {
    const r = resolvePath(this.#dir(fd), path, (lookup & LOOKUP_SYMLINK_FOLLOW) !== 0);
    if (!r.info) fail(Errno.NOENT);
    return filestat(r.info!);
  }

  /** `path_create_directory`. */
  mkdir(fd: number, path: Uint8Array): void {
    const r = resolvePath(this.#dir(fd), path, false);
    this.#writable(r);
    if (r.info) fail(Errno.EXIST);
    Deno.mkdirSync(r.host);
  }

  /** `path_unlink_file`: a file or symlink, never a directory (`EISDIR`). */
  unlink(fd: number, path: Uint8Array): void {
    const r = resolvePath(this.#dir(fd), path, false);
    this.#writable(r);
    if (!r.info) fail(Errno.NOENT);
    if (r.info!.isDirectory) fail(Errno.ISDIR);
    Deno.removeSync(r.host);
  }

  /** `path_remove_directory`: an empty directory, never the directory fd itself. */
  rmdir(fd: number, path: Uint8Array): void {
    const dir = this.#dir(fd);
    const r = resolvePath(dir, path, false);
    this.#writable(r);
    if (!r.info) fail(Errno.NOENT);
    if (!r.info!.isDirectory) fail(Errno.NOTDIR);
    if (r.rel.length <= dir.rel.length) fail(Errno.BUSY);
    Deno.removeSync(r.host);
  }

  /** `path_rename`: both ends resolved in their own directory fds. */
  rename(fd: number, from: Uint8Array, toFd: number, to: Uint8Array): void {
    const a = resolvePath(this.#dir(fd), from, false);
    const b = resolvePath(this.#dir(toFd), to, false);
    this.#writable(a);
    this.#writable(b);
    if (!a.info) fail(Errno.NOENT);
    if (a.rel.length === 0 || b.rel.length === 0) fail(Errno.BUSY);
    if (a.root.host !== b.root.host) fail(Errno.XDEV);
    Deno.renameSync(a.host, b.host);
  }

  /** `path_readlink`: the link's text (at most `max` bytes), never followed. */
  readlink(fd: number, path: Uint8Array, max: number): Uint8Array {
    const r = resolvePath(this.#dir(fd), path, false);
    if (!r.info) fail(Errno.NOENT);
    if (!r.info!.isSymlink) fail(Errno.INVAL);
    return utf8.encode(Deno.readLinkSync(r.host)).slice(0, Math.min(max, MAX_TRANSFER));
  }
}

function writeAll(file: Deno.FsFile, data: Uint8Array): number {
  let n = 0;
  while (n < data.length) {
    const wrote = file.writeSync(data.subarray(n));
    if (wrote === 0) break;
    n += wrote;
  }
  return n;
}
