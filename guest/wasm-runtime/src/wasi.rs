//! WASI preview 1 (`wasi_snapshot_preview1`), the useful subset, implemented in the guest.
//!
//! Answered here: `args_*`, `environ_*` (from the instantiate request), `random_get` (ChaCha20
//! keyed by a host-chosen seed), `clock_res_get`, `fd_fdstat_get` for fds 0-2 (character
//! devices, so libc line-buffers stdout), `sched_yield`, `proc_exit` (an i32 exit, reported
//! as an outcome, not a trap). Crossing to the host: `fd_write` on fds 1/2 (`wasi_write`) and
//! `clock_time_get` (`wasi_clock`). `fd_prestat_get`/`fd_prestat_dir_name` answer EBADF (no
//! preopened directories; libc stops probing there). Every other import of the module whose type returns one
//! `i32` (an errno) answers `ENOSYS` (52).

use alloc::string::String;
use alloc::vec::Vec;

use hl_guest::{Value, call_host};
use wasmi::{Caller, Error, Extern, FuncType, Linker, TrapCode, Val, ValType};

use crate::HostState;

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EIO: i32 = 29;
pub const ENOSYS: i32 = 52;

/// Configuration from the instantiate request.
pub struct WasiCtx {
    pub args: Vec<Vec<u8>>,
    pub env: Vec<Vec<u8>>,
    pub rng: ChaCha20,
}

#[derive(Clone, Copy)]
enum WasiFn {
    ArgsGet,
    ArgsSizesGet,
    EnvironGet,
    EnvironSizesGet,
    ClockResGet,
    ClockTimeGet,
    FdWrite,
    FdFdstatGet,
    RandomGet,
    ProcExit,
    SchedYield,
    /// No preopened directories: libc probes fds 3.. with `fd_prestat_get` until EBADF.
    BadFd,
    NoSys,
}

use ValType::{I32, I64};

fn known(name: &str) -> Option<(WasiFn, &'static [ValType], &'static [ValType])> {
    Some(match name {
        "args_get" => (WasiFn::ArgsGet, &[I32, I32], &[I32]),
        "args_sizes_get" => (WasiFn::ArgsSizesGet, &[I32, I32], &[I32]),
        "environ_get" => (WasiFn::EnvironGet, &[I32, I32], &[I32]),
        "environ_sizes_get" => (WasiFn::EnvironSizesGet, &[I32, I32], &[I32]),
        "clock_res_get" => (WasiFn::ClockResGet, &[I32, I32], &[I32]),
        "clock_time_get" => (WasiFn::ClockTimeGet, &[I32, I64, I32], &[I32]),
        "fd_write" => (WasiFn::FdWrite, &[I32, I32, I32, I32], &[I32]),
        "fd_fdstat_get" => (WasiFn::FdFdstatGet, &[I32, I32], &[I32]),
        "random_get" => (WasiFn::RandomGet, &[I32, I32], &[I32]),
        "proc_exit" => (WasiFn::ProcExit, &[I32], &[]),
        "sched_yield" => (WasiFn::SchedYield, &[], &[I32]),
        "fd_prestat_get" => (WasiFn::BadFd, &[I32, I32], &[I32]),
        "fd_prestat_dir_name" => (WasiFn::BadFd, &[I32, I32, I32], &[I32]),
        _ => return None,
    })
}

/// Defines the import `wasi_snapshot_preview1.<name>` of type `ty` in `linker`.
pub fn define(linker: &mut Linker<HostState>, name: &str, ty: &FuncType) -> Result<(), String> {
    let which = match known(name) {
        Some((f, params, results)) => {
            if ty.params() != params || ty.results() != results {
                return Err(alloc::format!(
                    "import wasi_snapshot_preview1.{name} has type {:?} -> {:?}, WASI says {params:?} -> {results:?}",
                    ty.params(),
                    ty.results()
                ));
            }
            f
        }
        None if ty.results() == [I32] => WasiFn::NoSys,
        None => {
            return Err(alloc::format!(
                "import wasi_snapshot_preview1.{name} is not supported (and does not return an errno)"
            ));
        }
    };
    linker
        .func_new(
            "wasi_snapshot_preview1",
            name,
            ty.clone(),
            move |caller, params, results| {
                let errno = call(which, caller, params)?;
                if let Some(r) = results.first_mut() {
                    *r = Val::I32(errno);
                }
                Ok(())
            },
        )
        .map_err(|e| alloc::format!("{e}"))?;
    Ok(())
}

fn arg_u32(params: &[Val], i: usize) -> u32 {
    params.get(i).and_then(Val::i32).unwrap_or(0) as u32
}

/// A window on the module's exported `memory`; every access is bounds-checked (EFAULT).
struct Mem<'a> {
    data: &'a mut [u8],
}

impl Mem<'_> {
    fn range(&self, ptr: u32, len: u32) -> Result<core::ops::Range<usize>, i32> {
        let start = ptr as usize;
        let end = start.checked_add(len as usize).ok_or(EFAULT)?;
        if end > self.data.len() {
            return Err(EFAULT);
        }
        Ok(start..end)
    }

    fn read(&self, ptr: u32, len: u32) -> Result<&[u8], i32> {
        let r = self.range(ptr, len)?;
        Ok(&self.data[r])
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), i32> {
        let r = self.range(ptr, bytes.len() as u32)?;
        self.data[r].copy_from_slice(bytes);
        Ok(())
    }

    fn u32(&self, ptr: u32) -> Result<u32, i32> {
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

fn call(which: WasiFn, mut caller: Caller<'_, HostState>, params: &[Val]) -> Result<i32, Error> {
    match which {
        WasiFn::NoSys => return Ok(ENOSYS),
        WasiFn::SchedYield => return Ok(ESUCCESS),
        WasiFn::BadFd => return Ok(EBADF),
        WasiFn::ProcExit => return Err(Error::i32_exit(params[0].i32().unwrap_or(0))),
        WasiFn::FdWrite => charge_fuel(&mut caller, u64::from(arg_u32(params, 2)))?,
        _ => {}
    }
    let Some(memory) = caller.get_export("memory").and_then(Extern::into_memory) else {
        // WASI requires an exported memory; without one every pointer is bad.
        return Ok(EFAULT);
    };
    let (data, state) = memory.data_and_store_mut(&mut caller);
    let mut mem = Mem { data };
    let Some(wasi) = state.wasi.as_mut() else {
        return Ok(ENOSYS);
    };
    let p = |i| arg_u32(params, i);
    let result = match which {
        WasiFn::ArgsGet => put_list(&mut mem, &wasi.args, p(0), p(1)),
        WasiFn::ArgsSizesGet => put_sizes(&mut mem, &wasi.args, p(0), p(1)),
        WasiFn::EnvironGet => put_list(&mut mem, &wasi.env, p(0), p(1)),
        WasiFn::EnvironSizesGet => put_sizes(&mut mem, &wasi.env, p(0), p(1)),
        WasiFn::ClockResGet => {
            if p(0) > 3 {
                Err(EINVAL)
            } else {
                mem.put_u64(p(1), 1_000)
            }
        }
        WasiFn::ClockTimeGet => clock_time_get(&mut mem, p(0), p(2)),
        WasiFn::FdWrite => fd_write(&mut mem, p(0), p(1), p(2), p(3)),
        WasiFn::FdFdstatGet => fd_fdstat_get(&mut mem, p(0), p(1)),
        WasiFn::RandomGet => random_get(&mut mem, &mut wasi.rng, p(0), p(1)),
        WasiFn::ProcExit | WasiFn::SchedYield | WasiFn::BadFd | WasiFn::NoSys => Ok(()),
    };
    Ok(match result {
        Ok(()) => ESUCCESS,
        Err(errno) => errno,
    })
}

/// `argv`/`environ`: pointers into a buffer of NUL-terminated strings.
fn put_list(mem: &mut Mem<'_>, list: &[Vec<u8>], ptrs: u32, buf: u32) -> Result<(), i32> {
    let mut at = buf;
    for (i, item) in list.iter().enumerate() {
        mem.put_u32(ptrs.wrapping_add(4 * i as u32), at)?;
        mem.write(at, item)?;
        mem.write(at.wrapping_add(item.len() as u32), &[0])?;
        at = at.wrapping_add(item.len() as u32 + 1);
    }
    Ok(())
}

fn put_sizes(mem: &mut Mem<'_>, list: &[Vec<u8>], count: u32, size: u32) -> Result<(), i32> {
    let total: usize = list.iter().map(|s| s.len() + 1).sum();
    mem.put_u32(count, list.len() as u32)?;
    mem.put_u32(size, total as u32)
}

fn clock_time_get(mem: &mut Mem<'_>, id: u32, out: u32) -> Result<(), i32> {
    if id > 3 {
        return Err(EINVAL);
    }
    match call_host("wasi_clock", &[Value::U32(id)]) {
        Ok(Value::U64(ns)) => mem.put_u64(out, ns),
        _ => Err(EIO),
    }
}

/// Charges `units` of fuel (one per iovec of an `fd_write`), so fuel bounds the host-side loop
/// as it bounds Wasm code; out of fuel traps `out_of_fuel`. Without metering, nothing to charge.
fn charge_fuel(caller: &mut Caller<'_, HostState>, units: u64) -> Result<(), Error> {
    let Ok(fuel) = caller.get_fuel() else {
        return Ok(());
    };
    if fuel < units {
        let _ = caller.set_fuel(0);
        return Err(Error::from(TrapCode::OutOfFuel));
    }
    caller.set_fuel(fuel - units)
}

fn fd_write(mem: &mut Mem<'_>, fd: u32, iovs: u32, count: u32, nwritten: u32) -> Result<(), i32> {
    if fd != 1 && fd != 2 {
        return Err(EBADF);
    }
    // Every iovec is 8 bytes of memory: more than fit cannot be valid (and the loop stays
    // bounded by the memory size even without fuel metering).
    if u64::from(count) * 8 > mem.data.len() as u64 {
        return Err(EFAULT);
    }
    let mut data = Vec::new();
    for i in 0..count {
        let iov = iovs.wrapping_add(8 * i);
        let ptr = mem.u32(iov)?;
        let len = mem.u32(iov.wrapping_add(4))?;
        data.extend_from_slice(mem.read(ptr, len)?);
    }
    let n = data.len() as u32;
    match call_host("wasi_write", &[Value::U32(fd), Value::Bytes(data)]) {
        Ok(_) => mem.put_u32(nwritten, n),
        Err(_) => Err(EIO),
    }
}

fn fd_fdstat_get(mem: &mut Mem<'_>, fd: u32, out: u32) -> Result<(), i32> {
    if fd > 2 {
        return Err(EBADF);
    }
    const CHARACTER_DEVICE: u8 = 2;
    const RIGHT_FD_READ: u64 = 1 << 1;
    const RIGHT_FD_WRITE: u64 = 1 << 6;
    let mut stat = [0u8; 24];
    stat[0] = CHARACTER_DEVICE;
    let rights = if fd == 0 {
        RIGHT_FD_READ
    } else {
        RIGHT_FD_WRITE
    };
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    mem.write(out, &stat)
}

fn random_get(mem: &mut Mem<'_>, rng: &mut ChaCha20, buf: u32, len: u32) -> Result<(), i32> {
    let r = mem.range(buf, len)?;
    rng.fill(&mut mem.data[r]);
    Ok(())
}

/// ChaCha20 (RFC 8439 block function) as a keystream generator: a 32-byte host-chosen key,
/// zero nonce, 64-bit block counter.
pub struct ChaCha20 {
    key: [u32; 8],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl ChaCha20 {
    pub fn new(seed: &[u8; 32]) -> Self {
        let mut key = [0u32; 8];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u32::from_le_bytes([
                seed[4 * i],
                seed[4 * i + 1],
                seed[4 * i + 2],
                seed[4 * i + 3],
            ]);
        }
        Self {
            key,
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }

    fn refill(&mut self) {
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        s[4..12].copy_from_slice(&self.key);
        s[12] = self.counter as u32;
        s[13] = (self.counter >> 32) as u32;
        let mut x = s;
        for _ in 0..10 {
            quarter(&mut x, 0, 4, 8, 12);
            quarter(&mut x, 1, 5, 9, 13);
            quarter(&mut x, 2, 6, 10, 14);
            quarter(&mut x, 3, 7, 11, 15);
            quarter(&mut x, 0, 5, 10, 15);
            quarter(&mut x, 1, 6, 11, 12);
            quarter(&mut x, 2, 7, 8, 13);
            quarter(&mut x, 3, 4, 9, 14);
        }
        for i in 0..16 {
            self.block[4 * i..4 * i + 4].copy_from_slice(&x[i].wrapping_add(s[i]).to_le_bytes());
        }
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 64 {
                self.refill();
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }
}

fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(16);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(12);
    x[a] = x[a].wrapping_add(x[b]);
    x[d] = (x[d] ^ x[a]).rotate_left(8);
    x[c] = x[c].wrapping_add(x[d]);
    x[b] = (x[b] ^ x[c]).rotate_left(7);
}
