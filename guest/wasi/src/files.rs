//! The WASI calls on stdin and files: the guest reads the module's iovecs, paths and buffers,
//! bounds them (`WasiHost::max_transfer`, at most `MAX_TRANSFER`; [`MAX_PATH`]), and sends one
//! `wasi_io` request to the host, which owns the open files and does every check that confines
//! them (the guest is as hostile as the module: nothing here is trusted by the host). Replies
//! are bounded again here before they are copied into the module's memory.

use alloc::vec::Vec;

use hl_wire::Reader;

use super::abi::errno::{BADF, FAULT, INVAL, IO, NAMETOOLONG, NOTSUP};
use super::abi::{FDSTAT_SIZE, FILESTAT_SIZE, MAX_PATH};
use super::host::{Op, Request};
use super::{Func, GuestMemory, ReadAhead, WasiCtx, WasiHost, arg32, arg64};

/// Runs a file call (fd 3 and up, or `fd_close` on any fd).
pub fn call(
    f: Func,
    ctx: &mut WasiCtx,
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Result<(), i32> {
    let fd = arg32(args, 0);
    let p = |i| arg32(args, i);
    let q = |i| arg64(args, i);
    let simple = |host: &mut dyn WasiHost, op, req: Request| host.io(op, req.0).map(|_| ());
    match f {
        Func::FdClose => {
            if fd <= 2 {
                // Closing stdio is allowed and changes nothing (the host's streams stay open).
                return Ok(());
            }
            simple(host, Op::Close, Request::default().u32(fd))?;
            if let Some(p) = ctx.preopens.get_mut(fd as usize - 3) {
                p.open = false;
            }
            Ok(())
        }
        Func::FdRead => read(mem, host, args),
        Func::FdPread => read(mem, host, args),
        Func::FdWrite | Func::FdPwrite => write(mem, host, args, f == Func::FdPwrite),
        Func::FdSeek => {
            let whence = p(2);
            if whence > 2 {
                return Err(INVAL);
            }
            let req = Request::default().u32(fd).u64(q(1)).u8(whence as u8);
            let pos = u64_reply(&host.io(Op::Seek, req.0)?)?;
            mem.put_u64(p(3), pos)
        }
        Func::FdTell => {
            let req = Request::default().u32(fd).u64(0).u8(1);
            let pos = u64_reply(&host.io(Op::Seek, req.0)?)?;
            mem.put_u64(p(1), pos)
        }
        Func::FdFdstatGet => {
            let stat = host.io(Op::Fdstat, Request::default().u32(fd).0)?;
            exact(&stat, FDSTAT_SIZE)?;
            mem.write(p(1), &stat)
        }
        Func::FdFdstatSetFlags => simple(host, Op::SetFlags, Request::default().u32(fd).u32(p(1))),
        Func::FdFilestatGet => {
            let stat = host.io(Op::Filestat, Request::default().u32(fd).0)?;
            exact(&stat, FILESTAT_SIZE)?;
            mem.write(p(1), &stat)
        }
        Func::FdFilestatSetSize => simple(host, Op::SetSize, Request::default().u32(fd).u64(q(1))),
        Func::FdFilestatSetTimes => simple(
            host,
            Op::SetTimes,
            Request::default().u32(fd).u64(q(1)).u64(q(2)).u32(p(3)),
        ),
        Func::FdSync => simple(host, Op::Sync, Request::default().u32(fd).u8(0)),
        Func::FdDatasync => simple(host, Op::Sync, Request::default().u32(fd).u8(1)),
        Func::FdAdvise => {
            if p(3) > 5 {
                return Err(INVAL);
            }
            simple(
                host,
                Op::Advise,
                Request::default().u32(fd).u64(q(1)).u64(q(2)).u32(p(3)),
            )
        }
        // Preallocation is not offered (documented in docs/wasm.md).
        Func::FdAllocate => Err(NOTSUP),
        Func::FdReaddir => {
            let (buf, len) = (p(1), p(2));
            mem.range(buf, len)?;
            let max = len.min(host.max_transfer());
            let req = Request::default().u32(fd).u64(q(3)).u32(max);
            let data = host.io(Op::Readdir, req.0)?;
            if data.len() > max as usize {
                return Err(IO);
            }
            mem.write(buf, &data)?;
            mem.put_u32(p(4), data.len() as u32)
        }
        Func::PathOpen => {
            let path = path(mem, p(2), p(3))?;
            let req = Request::default()
                .u32(fd)
                .u32(p(1))
                .blob(path)
                .u32(p(4))
                .u64(q(5))
                .u64(q(6))
                .u32(p(7));
            // The reply: the new fd and its `$fdstat` (`known.rs`).
            let reply = host.io(Op::Open, req.0)?;
            let new_fd = Reader::new(&reply).u32().map_err(|_| IO)?;
            exact(&reply, 4 + FDSTAT_SIZE)?;
            mem.put_u32(p(8), new_fd)?;
            ctx.known.learn(new_fd, &reply[4..]);
            Ok(())
        }
        Func::PathFilestatGet => {
            let path = path(mem, p(2), p(3))?;
            let req = Request::default().u32(fd).u32(p(1)).blob(path);
            let stat = host.io(Op::PathFilestat, req.0)?;
            exact(&stat, FILESTAT_SIZE)?;
            mem.write(p(4), &stat)
        }
        Func::PathFilestatSetTimes => {
            let path = path(mem, p(2), p(3))?;
            let req = Request::default()
                .u32(fd)
                .u32(p(1))
                .blob(path)
                .u64(q(4))
                .u64(q(5))
                .u32(p(6));
            simple(host, Op::PathSetTimes, req)
        }
        Func::PathCreateDirectory | Func::PathUnlinkFile | Func::PathRemoveDirectory => {
            let op = match f {
                Func::PathCreateDirectory => Op::Mkdir,
                Func::PathUnlinkFile => Op::Unlink,
                _ => Op::Rmdir,
            };
            let path = path(mem, p(1), p(2))?;
            simple(host, op, Request::default().u32(fd).blob(path))
        }
        Func::PathRename => {
            let from = path(mem, p(1), p(2))?;
            let to = path(mem, p(4), p(5))?;
            let req = Request::default().u32(fd).blob(from).u32(p(3)).blob(to);
            simple(host, Op::Rename, req)
        }
        Func::PathReadlink => {
            let path = path(mem, p(1), p(2))?;
            let (buf, len) = (p(3), p(4));
            mem.range(buf, len)?;
            let max = len.min(host.max_transfer());
            let req = Request::default().u32(fd).blob(path).u32(max);
            let data = host.io(Op::Readlink, req.0)?;
            if data.len() > max as usize {
                return Err(IO);
            }
            mem.write(buf, &data)?;
            mem.put_u32(p(5), data.len() as u32)
        }
        _ => Err(BADF),
    }
}

/// A path argument: at most [`MAX_PATH`] bytes (the host checks everything else: NUL bytes,
/// UTF-8, components, confinement).
fn path(mem: &dyn GuestMemory, ptr: u32, len: u32) -> Result<&[u8], i32> {
    if len > MAX_PATH {
        return Err(NAMETOOLONG);
    }
    mem.read(ptr, len)
}

fn exact(reply: &[u8], len: usize) -> Result<(), i32> {
    if reply.len() == len { Ok(()) } else { Err(IO) }
}

fn u64_reply(reply: &[u8]) -> Result<u64, i32> {
    exact(reply, 8)?;
    Reader::new(reply).u64().map_err(|_| IO)
}

/// Most iovecs one call may pass (POSIX's `IOV_MAX` on Linux): the count sizes an allocation.
const MAX_IOVECS: u32 = 1024;

/// The iovecs (`ptr, len` pairs) at `iovs`: a list that cannot fit in memory (8 bytes each) is
/// `EFAULT`; more than `MAX_IOVECS` is `EINVAL` (as Linux); each must lie within memory.
fn iovecs(mem: &dyn GuestMemory, iovs: u32, count: u32) -> Result<Vec<(u32, u32)>, i32> {
    if u64::from(count) * 8 > mem.bytes().len() as u64 {
        return Err(FAULT);
    }
    if count > MAX_IOVECS {
        return Err(INVAL);
    }
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = iovs.wrapping_add(8 * i);
        let (ptr, len) = (mem.u32_at(at)?, mem.u32_at(at.wrapping_add(4))?);
        mem.range(ptr, len)?;
        out.push((ptr, len));
    }
    Ok(out)
}

/// `fd_read(fd, iovs, count, nread)` on a file and `fd_pread(fd, iovs, count, offset, nread)`:
/// asks the host for at most the iovecs' total (capped at `max_transfer`) and scatters what comes back.
pub fn read(mem: &mut dyn GuestMemory, host: &mut dyn WasiHost, args: &[u64]) -> Result<(), i32> {
    let fd = arg32(args, 0);
    let pread = args.len() == 5;
    let iovs = iovecs(mem, arg32(args, 1), arg32(args, 2))?;
    let nread_at = arg32(args, if pread { 4 } else { 3 });
    let total: u64 = iovs.iter().map(|&(_, l)| u64::from(l)).sum();
    let max = total.min(u64::from(host.max_transfer())) as u32;
    let data = if max == 0 {
        Vec::new()
    } else if pread {
        let req = Request::default().u32(fd).u32(max).u64(arg64(args, 3));
        host.io(Op::Pread, req.0)?
    } else {
        host.io(Op::Read, Request::default().u32(fd).u32(max).0)?
    };
    if data.len() > max as usize {
        return Err(IO);
    }
    let n = scatter(mem, &iovs, &data)?;
    mem.put_u32(nread_at, n as u32)
}

/// Most bytes a stdin read asks the host for when the module asks for less (libc reads stdin
/// 1 KiB at a time): the rest waits in [`ReadAhead`] for the module's next reads, so 426 KB of
/// input cross in 7 exits instead of 416. The host answers with what it has (a stream's next
/// chunk, one read of an inherited stdin), so an interactive stdin never waits to fill it.
pub const STDIN_READ_AHEAD: u32 = 64 << 10;

/// `fd_read` on fd 0: served from the read-ahead when it holds anything (a partial read, as a
/// pipe gives, and no exit); otherwise one `ReadStdin` asks the host for the larger of the
/// iovecs' total and [`STDIN_READ_AHEAD`] (capped at `max_transfer`), and what the module did not
/// take stays for its next reads. A read of 0 bytes asks nothing; an empty reply is end of input,
/// and so is a read once the host said nothing more can come (no exit for the end of a byte stdin).
pub fn read_stdin(
    ahead: &mut ReadAhead,
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
) -> Result<(), i32> {
    let iovs = iovecs(mem, arg32(args, 1), arg32(args, 2))?;
    let nread_at = arg32(args, 3);
    // Checked before any byte is taken, so a bad pointer loses no input.
    mem.range(nread_at, 4)?;
    let total: u64 = iovs.iter().map(|&(_, l)| u64::from(l)).sum();
    if total == 0 {
        return mem.put_u32(nread_at, 0);
    }
    if ahead.pending().is_empty() {
        if ahead.at_end() {
            // The host said stdin ended: end of file, as it would answer.
            return mem.put_u32(nread_at, 0);
        }
        let max = total
            .max(u64::from(STDIN_READ_AHEAD))
            .min(u64::from(host.max_transfer())) as u32;
        let reply = host.io(Op::ReadStdin, Request::default().u32(max).0)?;
        let (&end, data) = reply.split_first().ok_or(IO)?;
        if data.len() > max as usize || end > 1 {
            return Err(IO);
        }
        ahead.fill(data.to_vec(), end == 1);
    }
    let n = scatter(mem, &iovs, ahead.pending())?;
    ahead.consume(n);
    mem.put_u32(nread_at, n as u32)
}

/// Copies the start of `data` into the iovecs in order; the number of bytes copied.
fn scatter(mem: &mut dyn GuestMemory, iovs: &[(u32, u32)], data: &[u8]) -> Result<usize, i32> {
    let mut rest = data;
    for &(ptr, len) in iovs {
        if rest.is_empty() {
            break;
        }
        let n = rest.len().min(len as usize);
        mem.write(ptr, &rest[..n])?;
        rest = &rest[n..];
    }
    Ok(data.len() - rest.len())
}

/// Gathers the iovecs, at most `limit` bytes (a larger write is partial).
fn gather(mem: &dyn GuestMemory, iovs: u32, count: u32, limit: u32) -> Result<Vec<u8>, i32> {
    let mut data = Vec::new();
    for (ptr, len) in iovecs(mem, iovs, count)? {
        let room = limit as usize - data.len();
        if room == 0 {
            break;
        }
        let take = (len as usize).min(room) as u32;
        data.extend_from_slice(mem.read(ptr, take)?);
    }
    Ok(data)
}

/// `fd_write` on fds 1 and 2: to the host's sinks (`wasi_write`).
pub fn write_stdio(
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    fd: u32,
    iovs: u32,
    count: u32,
    nwritten: u32,
) -> Result<(), i32> {
    let data = gather(mem, iovs, count, host.max_transfer())?;
    let n = data.len() as u32;
    if !host.write_stdio(fd, data) {
        return Err(IO);
    }
    mem.put_u32(nwritten, n)
}

/// `fd_write`/`fd_pwrite` on a file the host opened for writing, answered here and queued for
/// the next crossing (`batch.rs`): the host writes all of it or fails (its errno then answers
/// the call that carries it). `None`: the request is too large to wait; it crosses as usual.
pub fn write_deferred(
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
    positioned: bool,
) -> Option<Result<(), i32>> {
    let out = arg32(args, if positioned { 4 } else { 3 });
    let built = gather(mem, arg32(args, 1), arg32(args, 2), host.max_transfer())
        .and_then(|data| mem.range(out, 4).map(|_| data));
    let data = match built {
        Ok(data) => data,
        Err(e) => return Some(Err(e)),
    };
    let fd = arg32(args, 0);
    let (op, req) = if positioned {
        let req = Request::default().u32(fd).u64(arg64(args, 3)).blob(&data);
        (Op::Pwrite, req)
    } else {
        (Op::Write, Request::default().u32(fd).blob(&data))
    };
    if !host.defer(op, &req.0) {
        return None;
    }
    Some(mem.put_u32(out, data.len() as u32))
}

/// `fd_write`/`fd_pwrite` on a file.
fn write(
    mem: &mut dyn GuestMemory,
    host: &mut dyn WasiHost,
    args: &[u64],
    positioned: bool,
) -> Result<(), i32> {
    let fd = arg32(args, 0);
    let data = gather(mem, arg32(args, 1), arg32(args, 2), host.max_transfer())?;
    let sent = data.len() as u32;
    let (req, op, out) = if positioned {
        let req = Request::default().u32(fd).u64(arg64(args, 3)).blob(&data);
        (req, Op::Pwrite, arg32(args, 4))
    } else {
        (
            Request::default().u32(fd).blob(&data),
            Op::Write,
            arg32(args, 3),
        )
    };
    let reply = host.io(op, req.0)?;
    exact(&reply, 4)?;
    let n = Reader::new(&reply).u32().map_err(|_| IO)?;
    if n > sent {
        return Err(IO);
    }
    mem.put_u32(out, n)
}
