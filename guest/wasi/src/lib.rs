//! `hl-wasi`: WASI preview 1 (`wasi_snapshot_preview1`) for @hl/sandbox Wasm guests, independent
//! of the Wasm engine: [`call`] runs one WASI function over a [`GuestMemory`] (the module's
//! linear memory) and a [`WasiHost`] (what must cross to the host). The `wasm-runtime` guest
//! binds it to wasmi's linker (`wasi_wasmi.rs`) and implements [`WasiHost`] with the guest ABI's
//! host calls (`wasi_host.rs`); another engine needs only such an adapter. `no_std` + `alloc`,
//! no `unsafe`; tested natively (`RUSTFLAGS= cargo test -p hl-wasi`).
//!
//! Answered here, with no VM exit: `args_*`, `environ_*` (from the instantiate request),
//! `random_get` (ChaCha20 keyed by a host-chosen seed), `clock_res_get`, `sched_yield`,
//! `proc_exit` (an exit outcome, not a trap), `fd_prestat_get`/`fd_prestat_dir_name` (the
//! preopened directories' names, fds 3.., from the instantiate request), and stat, seek and
//! flag calls on fds 0-2. Crossing to the host: output on fds 1/2 (`WasiHost::write_stdio`, which
//! the runtime guests buffer: [`output::Output`], sent as one `wasi_io` `Output` request), clocks
//! (`wasi_clock`), and everything on stdin (fd 0) or a file (`wasi_io`, only when the module
//! touches one: see `files.rs`). Writes, absolute seeks and closes of files wait in the guest and
//! cross together with the next request (`batch.rs`, `known.rs`); `fd_fdstat_get` on an fd the
//! host described in the same call, and `fd_sync` of a directory, are answered here. Every other
//! import of the module whose type returns one `i32` (an errno) answers `ENOSYS` (52).

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod abi;
pub mod batch;
mod chacha;
mod files;
pub mod host;
mod instantiate;
mod known;
pub mod output;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;

pub use chacha::ChaCha20;
pub use instantiate::{InstantiateRequest, read_list, read_seed};

use abi::errno::{BADF, FAULT, INVAL, NOSYS, NOTSUP, SPIPE, SUCCESS};
use abi::{filetype, rights};

/// The module's WASI configuration, from the instantiate request.
pub struct WasiCtx {
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub rng: ChaCha20,
    /// Guest names of the preopened directories: fd `3 + index`.
    pub preopens: Vec<Preopen>,
    /// Stdin bytes the host sent ahead of the module's reads ([`files::STDIN_READ_AHEAD`]).
    pub stdin: ReadAhead,
    /// What the host said about the open fds in this call (`known.rs`).
    pub known: known::Known,
}

impl WasiCtx {
    /// At the end of every call into the module: gives the unread read-ahead of stdin back to
    /// the host (one `wasi_io` request, only when there is some), so between calls the host
    /// holds every byte the module has not read: a snapshot, a restore's rewind or the next
    /// call sees stdin exactly where the module left it. Forgets what it knew of the open fds
    /// (`known.rs`). The embedder sends the deferred file requests after this (`batch.rs`).
    pub fn end_call(&mut self, host: &mut dyn WasiHost) {
        self.known.clear();
        // The end is the host's to tell again in the next call (a restore rewinds stdin).
        self.stdin.end = false;
        let n = self.stdin.pending().len();
        if n > 0 {
            // A host that refuses has lost the bytes either way; the buffer must not outlive
            // the call (the host's position moves on restore).
            let _ = host.io(
                host::Op::Unread,
                host::Request::default().u32(0).u32(n as u32).0,
            );
            self.stdin.clear();
        }
    }
}

/// Stdin bytes received from the host and not yet read by the module: always a suffix of the
/// host's last `Read` reply (the guest asks again only once this is empty).
#[derive(Default)]
pub struct ReadAhead {
    data: Vec<u8>,
    at: usize,
    /// The host said nothing more can come after `data`: reads at its end answer 0 bytes here.
    end: bool,
}

impl ReadAhead {
    /// The bytes not yet read.
    pub fn pending(&self) -> &[u8] {
        &self.data[self.at..]
    }

    fn fill(&mut self, data: Vec<u8>, end: bool) {
        self.data = data;
        self.at = 0;
        self.end = end;
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.data.len());
        if self.at == self.data.len() {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.data = Vec::new();
        self.at = 0;
    }

    /// Whether the host said stdin ends after what is held.
    fn at_end(&self) -> bool {
        self.end
    }
}

/// A preopened directory as the module sees it.
pub struct Preopen {
    /// The name `fd_prestat_dir_name` reports (e.g. `/data`).
    pub name: Vec<u8>,
    /// Cleared when the module closes the fd.
    pub open: bool,
}

/// The module's linear memory. Every access is bounds-checked and fails with `EFAULT`.
pub trait GuestMemory {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];

    fn range(&self, ptr: u32, len: u32) -> Result<core::ops::Range<usize>, i32> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(FAULT)?;
        if end > self.bytes().len() {
            return Err(FAULT);
        }
        Ok(start..end)
    }

    fn read(&self, ptr: u32, len: u32) -> Result<&[u8], i32> {
        let r = self.range(ptr, len)?;
        Ok(&self.bytes()[r])
    }

    fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), i32> {
        let len = u32::try_from(data.len()).map_err(|_| FAULT)?;
        let r = self.range(ptr, len)?;
        self.bytes_mut()[r].copy_from_slice(data);
        Ok(())
    }

    fn u32_at(&self, ptr: u32) -> Result<u32, i32> {
        let b = self.read(ptr, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn put_u32(&mut self, ptr: u32, v: u32) -> Result<(), i32> {
        self.write(ptr, &v.to_le_bytes())
    }

    fn put_u64(&mut self, ptr: u32, v: u64) -> Result<(), i32> {
        self.write(ptr, &v.to_le_bytes())
    }
}

/// A linear memory an engine hands out as one mutable slice (wasmi, wasmtime).
pub struct SliceMemory<'a>(pub &'a mut [u8]);

impl GuestMemory for SliceMemory<'_> {
    fn bytes(&self) -> &[u8] {
        self.0
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.0
    }
}

/// What crosses to the host (the `wasm-runtime` guest implements it with the guest ABI's host
/// calls `wasi_write`, `wasi_clock` and `wasi_io`).
pub trait WasiHost {
    /// Output on fd 1 or 2; `false` when the host refused it (`EIO`).
    fn write_stdio(&mut self, fd: u32, data: Vec<u8>) -> bool;
    /// Clock `id` in nanoseconds; `None` when the host failed.
    fn clock(&mut self, id: u32) -> Option<u64>;
    /// One request of the host's WASI layer (`host::Op`): the reply's payload, or an errno.
    fn io(&mut self, op: host::Op, request: Vec<u8>) -> Result<Vec<u8>, i32>;
    /// Most bytes one read, write or listing should move (at most `abi::MAX_TRANSFER`): what
    /// fits the crossing both ways.
    fn max_transfer(&self) -> u32;
    /// Queues a file request the guest has answered itself (`batch.rs`); it reaches the host in
    /// order, before anything the host can observe. `false`: it must be sent now instead (a host
    /// that keeps no queue, or a request too large to wait).
    fn defer(&mut self, _op: host::Op, _request: &[u8]) -> bool {
        false
    }
}

/// A WASI parameter or result type.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ty {
    I32,
    I64,
}

/// How a WASI function ended.
pub enum Outcome {
    /// An errno (0 on success).
    Errno(i32),
    /// `proc_exit(code)`.
    Exit(i32),
}

/// The WASI functions this guest knows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Func {
    ArgsGet,
    ArgsSizesGet,
    EnvironGet,
    EnvironSizesGet,
    ClockResGet,
    ClockTimeGet,
    FdAdvise,
    FdAllocate,
    FdClose,
    FdDatasync,
    FdFdstatGet,
    FdFdstatSetFlags,
    FdFilestatGet,
    FdFilestatSetSize,
    FdFilestatSetTimes,
    FdPread,
    FdPrestatGet,
    FdPrestatDirName,
    FdPwrite,
    FdRead,
    FdReaddir,
    FdSeek,
    FdSync,
    FdTell,
    FdWrite,
    PathCreateDirectory,
    PathFilestatGet,
    PathFilestatSetTimes,
    PathOpen,
    PathReadlink,
    PathRemoveDirectory,
    PathRename,
    PathUnlinkFile,
    RandomGet,
    ProcExit,
    SchedYield,
    /// Any other import returning an errno.
    NoSys,
}

use Ty::{I32, I64};

/// The function of `name` with its WASI type, or `None` for a name this guest does not know.
pub fn lookup(name: &str) -> Option<(Func, &'static [Ty], &'static [Ty])> {
    use Func::*;
    Some(match name {
        "args_get" => (ArgsGet, &[I32, I32], &[I32]),
        "args_sizes_get" => (ArgsSizesGet, &[I32, I32], &[I32]),
        "environ_get" => (EnvironGet, &[I32, I32], &[I32]),
        "environ_sizes_get" => (EnvironSizesGet, &[I32, I32], &[I32]),
        "clock_res_get" => (ClockResGet, &[I32, I32], &[I32]),
        "clock_time_get" => (ClockTimeGet, &[I32, I64, I32], &[I32]),
        "fd_advise" => (FdAdvise, &[I32, I64, I64, I32], &[I32]),
        "fd_allocate" => (FdAllocate, &[I32, I64, I64], &[I32]),
        "fd_close" => (FdClose, &[I32], &[I32]),
        "fd_datasync" => (FdDatasync, &[I32], &[I32]),
        "fd_fdstat_get" => (FdFdstatGet, &[I32, I32], &[I32]),
        "fd_fdstat_set_flags" => (FdFdstatSetFlags, &[I32, I32], &[I32]),
        "fd_filestat_get" => (FdFilestatGet, &[I32, I32], &[I32]),
        "fd_filestat_set_size" => (FdFilestatSetSize, &[I32, I64], &[I32]),
        "fd_filestat_set_times" => (FdFilestatSetTimes, &[I32, I64, I64, I32], &[I32]),
        "fd_pread" => (FdPread, &[I32, I32, I32, I64, I32], &[I32]),
        "fd_prestat_get" => (FdPrestatGet, &[I32, I32], &[I32]),
        "fd_prestat_dir_name" => (FdPrestatDirName, &[I32, I32, I32], &[I32]),
        "fd_pwrite" => (FdPwrite, &[I32, I32, I32, I64, I32], &[I32]),
        "fd_read" => (FdRead, &[I32, I32, I32, I32], &[I32]),
        "fd_readdir" => (FdReaddir, &[I32, I32, I32, I64, I32], &[I32]),
        "fd_seek" => (FdSeek, &[I32, I64, I32, I32], &[I32]),
        "fd_sync" => (FdSync, &[I32], &[I32]),
        "fd_tell" => (FdTell, &[I32, I32], &[I32]),
        "fd_write" => (FdWrite, &[I32, I32, I32, I32], &[I32]),
        "path_create_directory" => (PathCreateDirectory, &[I32, I32, I32], &[I32]),
        "path_filestat_get" => (PathFilestatGet, &[I32, I32, I32, I32, I32], &[I32]),
        "path_filestat_set_times" => (
            PathFilestatSetTimes,
            &[I32, I32, I32, I32, I64, I64, I32],
            &[I32],
        ),
        "path_open" => (
            PathOpen,
            &[I32, I32, I32, I32, I32, I64, I64, I32, I32],
            &[I32],
        ),
        "path_readlink" => (PathReadlink, &[I32, I32, I32, I32, I32, I32], &[I32]),
        "path_remove_directory" => (PathRemoveDirectory, &[I32, I32, I32], &[I32]),
        "path_rename" => (PathRename, &[I32, I32, I32, I32, I32, I32], &[I32]),
        "path_unlink_file" => (PathUnlinkFile, &[I32, I32, I32], &[I32]),
        "random_get" => (RandomGet, &[I32, I32], &[I32]),
        "proc_exit" => (ProcExit, &[I32], &[]),
        "sched_yield" => (SchedYield, &[], &[I32]),
        _ => return None,
    })
}

/// Work units a call costs before it runs (one per iovec of a read or write), so fuel bounds
/// the guest-side loops as it bounds Wasm code. An adapter with metering charges them.
pub fn fuel_units(f: Func, args: &[u64]) -> u64 {
    match f {
        Func::FdRead | Func::FdWrite | Func::FdPread | Func::FdPwrite => u64::from(arg32(args, 2)),
        _ => 0,
    }
}

/// Whether `f` touches the module's memory (an adapter may skip looking the memory up).
pub fn needs_memory(f: Func) -> bool {
    !matches!(f, Func::NoSys | Func::SchedYield | Func::ProcExit)
}

/// Argument `i` as a u32 (i32 parameters arrive zero-extended).
pub(crate) fn arg32(args: &[u64], i: usize) -> u32 {
    args.get(i).copied().unwrap_or(0) as u32
}

/// Argument `i` as a u64.
pub(crate) fn arg64(args: &[u64], i: usize) -> u64 {
    args.get(i).copied().unwrap_or(0)
}

/// Runs WASI function `f` with `args` (each i32 zero-extended to u64). `mem` is the module's
/// exported memory (`None` when it exports none: every call that needs it answers `EFAULT`).
pub fn call(
    f: Func,
    ctx: &mut WasiCtx,
    mem: Option<&mut dyn GuestMemory>,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Outcome {
    match f {
        Func::NoSys => return Outcome::Errno(NOSYS),
        Func::SchedYield => return Outcome::Errno(SUCCESS),
        Func::ProcExit => return Outcome::Exit(arg32(args, 0) as i32),
        _ => {}
    }
    let Some(mem) = mem else {
        // WASI requires an exported memory; without one every pointer is bad.
        return Outcome::Errno(FAULT);
    };
    let result = dispatch(f, ctx, mem, host, args);
    Outcome::Errno(match result {
        Ok(()) => SUCCESS,
        Err(errno) => errno,
    })
}

fn dispatch(
    f: Func,
    ctx: &mut WasiCtx,
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Result<(), i32> {
    let p = |i| arg32(args, i);
    let fd = p(0);
    if fd > 2
        && let Some(answered) = answer_known(f, ctx, mem, host, args)
    {
        return answered;
    }
    let result = match f {
        Func::ArgsGet => put_list(mem, &ctx.args, p(0), p(1)),
        Func::ArgsSizesGet => put_sizes(mem, &ctx.args, p(0), p(1)),
        Func::EnvironGet => put_list(mem, &ctx.env, p(0), p(1)),
        Func::EnvironSizesGet => put_sizes(mem, &ctx.env, p(0), p(1)),
        Func::ClockResGet => {
            if p(0) > 3 {
                Err(INVAL)
            } else {
                mem.put_u64(p(1), 1_000)
            }
        }
        Func::ClockTimeGet => {
            if p(0) > 3 {
                Err(INVAL)
            } else {
                match host.clock(p(0)) {
                    Some(ns) => mem.put_u64(p(2), ns),
                    None => Err(abi::errno::IO),
                }
            }
        }
        Func::RandomGet => mem.range(p(0), p(1)).map(|r| {
            ctx.rng.fill(&mut mem.bytes_mut()[r]);
        }),
        Func::FdPrestatGet => prestat_get(ctx, mem, p(0), p(1)),
        Func::FdPrestatDirName => prestat_dir_name(ctx, mem, p(0), p(1), p(2)),
        _ if f != Func::FdClose && is_stdio(args) => stdio(f, ctx, mem, host, args),
        _ => files::call(f, ctx, mem, host, args),
    };
    match f {
        Func::FdSeek if fd > 2 => ctx.known.seen_seek(fd, result.is_ok()),
        Func::FdClose => ctx.known.closed(fd),
        Func::FdFdstatGet if fd > 2 && result.is_ok() => {
            if let Ok(stat) = mem.read(p(1), abi::FDSTAT_SIZE as u32) {
                ctx.known.learn(fd, stat);
            }
        }
        _ => {}
    }
    result
}

/// The calls on fd `args[0]` (3 and up) answered here from what the host said about the fd in
/// this call (`known.rs`): `fd_fdstat_get`; `fd_sync`/`fd_datasync` of a directory (the host
/// does nothing for one); and, deferred to the next crossing (`batch.rs`), `fd_seek(SEEK_SET)`
/// on a regular file, `fd_write`/`fd_pwrite` on a file opened for writing (answered whole: the
/// host writes all of it or fails) and `fd_close` of a file or directory the module opened.
/// `None`: the call crosses as usual. Every pointer is checked before anything is deferred.
fn answer_known(
    f: Func,
    ctx: &mut WasiCtx,
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Option<Result<(), i32>> {
    let p = |i| arg32(args, i);
    let fd = p(0);
    match f {
        Func::FdFdstatGet => {
            let stat = *ctx.known.stat(fd)?;
            Some(mem.write(p(1), &stat))
        }
        Func::FdSync | Func::FdDatasync if ctx.known.directory(fd) => Some(Ok(())),
        Func::FdSeek if p(2) == 0 && ctx.known.can_defer_seek(fd, arg64(args, 1)) => {
            let offset = arg64(args, 1);
            if let Err(e) = mem.range(p(3), 8) {
                return Some(Err(e));
            }
            if !host.defer(host::Op::Seek, &known::seek_request(fd, offset)) {
                return None;
            }
            Some(mem.put_u64(p(3), offset))
        }
        Func::FdWrite | Func::FdPwrite if ctx.known.writable(fd) => {
            files::write_deferred(mem, host, args, f == Func::FdPwrite)
        }
        Func::FdClose if ctx.known.stat(fd).is_some() && fd - 3 >= ctx.preopens.len() as u32 => {
            if !host.defer(host::Op::Close, &host::Request::default().u32(fd).0) {
                return None;
            }
            ctx.known.closed(fd);
            Some(Ok(()))
        }
        _ => None,
    }
}

fn is_stdio(args: &[u64]) -> bool {
    arg32(args, 0) <= 2
}

/// The fd calls on fds 0-2: character devices; output crosses (`wasi_write`), stdin reads
/// cross (`files::read_stdin`, with read-ahead), the rest is answered here.
fn stdio(
    f: Func,
    ctx: &mut WasiCtx,
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Result<(), i32> {
    let fd = arg32(args, 0);
    let p = |i| arg32(args, i);
    match f {
        Func::FdWrite if fd == 0 => Err(BADF),
        Func::FdWrite => files::write_stdio(mem, host, fd, p(1), p(2), p(3)),
        Func::FdRead if fd == 0 => files::read_stdin(&mut ctx.stdin, mem, host, args),
        Func::FdRead => Err(BADF),
        Func::FdFdstatGet => {
            let mut stat = [0u8; abi::FDSTAT_SIZE];
            stat[0] = filetype::CHARACTER_DEVICE;
            let base = if fd == 0 {
                rights::FD_READ
            } else {
                rights::FD_WRITE
            } | rights::FD_FILESTAT_GET;
            stat[8..16].copy_from_slice(&base.to_le_bytes());
            mem.write(p(1), &stat)
        }
        Func::FdFilestatGet => {
            let mut stat = [0u8; abi::FILESTAT_SIZE];
            stat[16] = filetype::CHARACTER_DEVICE;
            stat[24..32].copy_from_slice(&1u64.to_le_bytes()); // nlink
            mem.write(p(1), &stat)
        }
        Func::FdSeek | Func::FdTell | Func::FdPread | Func::FdPwrite | Func::FdAdvise => Err(SPIPE),
        Func::FdFdstatSetFlags | Func::FdAllocate => Err(NOTSUP),
        Func::FdSync | Func::FdDatasync | Func::FdFilestatSetSize | Func::FdFilestatSetTimes => {
            Err(INVAL)
        }
        // Path calls need a directory fd; fds 0-2 are not directories.
        _ => Err(abi::errno::BADF),
    }
}

fn prestat_get(ctx: &WasiCtx, mem: &mut dyn GuestMemory, fd: u32, out: u32) -> Result<(), i32> {
    let p = preopen(ctx, fd)?;
    let mut stat = [0u8; abi::PRESTAT_SIZE];
    stat[4..8].copy_from_slice(&(p.name.len() as u32).to_le_bytes());
    mem.write(out, &stat)
}

fn prestat_dir_name(
    ctx: &WasiCtx,
    mem: &mut dyn GuestMemory,
    fd: u32,
    buf: u32,
    len: u32,
) -> Result<(), i32> {
    let p = preopen(ctx, fd)?;
    if (len as usize) < p.name.len() {
        return Err(abi::errno::NAMETOOLONG);
    }
    mem.write(buf, &p.name)
}

fn preopen(ctx: &WasiCtx, fd: u32) -> Result<&Preopen, i32> {
    let index = fd.checked_sub(3).ok_or(BADF)? as usize;
    match ctx.preopens.get(index) {
        Some(p) if p.open => Ok(p),
        _ => Err(BADF),
    }
}

/// `argv`/`environ`: pointers into a buffer of NUL-terminated strings.
fn put_list(mem: &mut dyn GuestMemory, list: &[Vec<u8>], ptrs: u32, buf: u32) -> Result<(), i32> {
    let mut at = buf;
    for (i, item) in list.iter().enumerate() {
        mem.put_u32(ptrs.wrapping_add(4 * i as u32), at)?;
        mem.write(at, item)?;
        mem.write(at.wrapping_add(item.len() as u32), &[0])?;
        at = at.wrapping_add(item.len() as u32 + 1);
    }
    Ok(())
}

fn put_sizes(
    mem: &mut dyn GuestMemory,
    list: &[Vec<u8>],
    count: u32,
    size: u32,
) -> Result<(), i32> {
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.put_u32(count, list.len() as u32)?;
    mem.put_u32(size, total as u32)
}
