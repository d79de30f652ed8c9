//! Native tests of the engine-independent WASI code with a byte-vector memory and a recording
//! host: what each call reads from and writes to the module's memory, what it sends to the host,
//! and the bounds it enforces before anything crosses.

use alloc::vec;
use alloc::vec::Vec;

use crate::abi::errno::{BADF, FAULT, INVAL, IO, NAMETOOLONG, NOSYS, SPIPE, SUCCESS};
use crate::host::{Op, parse_reply};
use crate::{ChaCha20, Func, GuestMemory, Outcome, Preopen, SliceMemory, WasiCtx, WasiHost};

/// Records every crossing; answers `io` with `reply` (or the errno in `fail`).
struct Host {
    requests: Vec<(Op, Vec<u8>)>,
    written: Vec<(u32, Vec<u8>)>,
    reply: Vec<u8>,
    fail: Option<i32>,
    max: u32,
}

impl Host {
    fn new() -> Self {
        Self {
            requests: Vec::new(),
            written: Vec::new(),
            reply: Vec::new(),
            fail: None,
            max: 1 << 20,
        }
    }
}

impl WasiHost for Host {
    fn write_stdio(&mut self, fd: u32, data: Vec<u8>) -> bool {
        self.written.push((fd, data));
        true
    }

    fn clock(&mut self, _id: u32) -> Option<u64> {
        Some(1_234)
    }

    fn io(&mut self, op: Op, request: Vec<u8>) -> Result<Vec<u8>, i32> {
        self.requests.push((op, request));
        match self.fail {
            Some(e) => Err(e),
            None => Ok(self.reply.clone()),
        }
    }

    fn max_transfer(&self) -> u32 {
        self.max
    }
}

fn ctx() -> WasiCtx {
    WasiCtx {
        args: vec![b"prog".to_vec(), b"-v".to_vec()],
        env: vec![b"A=1".to_vec()],
        rng: ChaCha20::new(&[7; 32]),
        preopens: vec![Preopen {
            name: b"/data".to_vec(),
            open: true,
        }],
        stdin: Default::default(),
        seeks: Default::default(),
    }
}

fn run(f: Func, ctx: &mut WasiCtx, mem: &mut [u8], host: &mut Host, args: &[u64]) -> i32 {
    let mut m = SliceMemory(mem);
    match crate::call(f, ctx, Some(&mut m), host, args) {
        Outcome::Errno(e) => e,
        Outcome::Exit(code) => 1000 + code,
    }
}

fn u32_at(mem: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([mem[at], mem[at + 1], mem[at + 2], mem[at + 3]])
}

fn put_iovec(mem: &mut [u8], at: usize, ptr: u32, len: u32) {
    mem[at..at + 4].copy_from_slice(&ptr.to_le_bytes());
    mem[at + 4..at + 8].copy_from_slice(&len.to_le_bytes());
}

#[test]
fn args_environ_and_prestat_are_answered_without_crossing() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 256]);
    assert_eq!(
        run(Func::ArgsSizesGet, &mut c, &mut mem, &mut h, &[0, 4]),
        SUCCESS
    );
    assert_eq!((u32_at(&mem, 0), u32_at(&mem, 4)), (2, 8));
    assert_eq!(
        run(Func::ArgsGet, &mut c, &mut mem, &mut h, &[16, 64]),
        SUCCESS
    );
    assert_eq!((u32_at(&mem, 16), u32_at(&mem, 20)), (64, 69));
    assert_eq!(&mem[64..72], b"prog\0-v\0");
    assert_eq!(
        run(Func::FdPrestatGet, &mut c, &mut mem, &mut h, &[3, 100]),
        SUCCESS
    );
    assert_eq!((mem[100], u32_at(&mem, 104)), (0, 5));
    assert_eq!(
        run(
            Func::FdPrestatDirName,
            &mut c,
            &mut mem,
            &mut h,
            &[3, 120, 4]
        ),
        NAMETOOLONG
    );
    assert_eq!(
        run(
            Func::FdPrestatDirName,
            &mut c,
            &mut mem,
            &mut h,
            &[3, 120, 5]
        ),
        SUCCESS
    );
    assert_eq!(&mem[120..125], b"/data");
    assert_eq!(
        run(Func::FdPrestatGet, &mut c, &mut mem, &mut h, &[4, 100]),
        BADF
    );
    assert_eq!(
        run(Func::FdPrestatGet, &mut c, &mut mem, &mut h, &[2, 100]),
        BADF
    );
    // Pointers past the memory are EFAULT, never a panic.
    assert_eq!(
        run(Func::ArgsGet, &mut c, &mut mem, &mut h, &[250, 64]),
        FAULT
    );
    assert_eq!(
        run(
            Func::FdPrestatGet,
            &mut c,
            &mut mem,
            &mut h,
            &[3, u64::from(u32::MAX)]
        ),
        FAULT
    );
    assert_eq!(
        run(Func::ClockTimeGet, &mut c, &mut mem, &mut h, &[9, 0, 0]),
        INVAL
    );
    assert!(h.requests.is_empty());
    // Closing the preopen crosses, and prestat then says EBADF.
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[3]), SUCCESS);
    assert_eq!(h.requests.len(), 1);
    assert_eq!(
        run(Func::FdPrestatGet, &mut c, &mut mem, &mut h, &[3, 100]),
        BADF
    );
    // fds 0-2 close as a no-op.
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[1]), SUCCESS);
    assert_eq!(h.requests.len(), 1);
    let mut m = SliceMemory(&mut mem);
    assert!(matches!(
        crate::call(Func::ProcExit, &mut c, Some(&mut m), &mut h, &[3]),
        Outcome::Exit(3)
    ));
    assert!(matches!(
        crate::call(Func::ArgsGet, &mut c, None, &mut h, &[0, 0]),
        Outcome::Errno(FAULT)
    ));
    assert!(crate::lookup("sock_accept").is_none());
    assert!(matches!(
        crate::call(Func::NoSys, &mut c, None, &mut h, &[]),
        Outcome::Errno(NOSYS)
    ));
}

#[test]
fn stdin_reads_ask_for_a_block_scatter_it_and_serve_the_rest_without_crossing() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    put_iovec(&mut mem, 0, 100, 3);
    put_iovec(&mut mem, 8, 200, 10);
    h.reply = b"abcdefghijklmnopq".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.len(), 1);
    let (op, req) = &h.requests[0];
    assert_eq!(*op, Op::Read);
    // fd 0, at most STDIN_READ_AHEAD (64 KiB) although the iovecs hold 13.
    assert_eq!(req[..], [0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(&mem[100..103], b"abc");
    assert_eq!(&mem[200..210], b"defghijklm");
    assert_eq!(u32_at(&mem, 500), 13);
    // The rest is served from the read-ahead: no crossing, a partial read of what is left.
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.len(), 1);
    assert_eq!(&mem[100..103], b"nop");
    assert_eq!(&mem[200..201], b"q");
    assert_eq!(u32_at(&mem, 500), 4);
    // A read of 0 bytes asks nothing; an empty reply is end of input (nread 0).
    put_iovec(&mut mem, 16, 100, 0);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 16, 1, 500]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), u32_at(&mem, 500)), (1, 0));
    h.reply = Vec::new();
    mem[500] = 9;
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), u32_at(&mem, 500)), (2, 0));
    // The host may not answer with more than was asked.
    h.max = 5;
    h.reply = vec![b'x'; 6];
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        IO
    );
    assert!(c.stdin.pending().is_empty());
    // A smaller transfer limit shrinks the request (a partial read).
    h.reply = b"12345".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().1[4..8], [5, 0, 0, 0]);
    // Iovecs larger than the read-ahead ask for their total.
    h.max = 1 << 20;
    put_iovec(&mut mem, 24, 0, 100_000);
    let mut big = vec![0u8; 200_000];
    big[..32].copy_from_slice(&mem[..32]);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut big, &mut h, &[0, 24, 1, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().1[4..8], 100_000u32.to_le_bytes());
    // An iovec outside the memory, more iovecs than the memory holds, or a bad nread pointer:
    // EFAULT, no crossing, no byte taken from the read-ahead.
    h.reply = b"kept".to_vec();
    run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 16, 1, 500]);
    put_iovec(&mut mem, 16, 100, 1);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 16, 1, 500]),
        SUCCESS
    );
    let before = h.requests.len();
    put_iovec(&mut mem, 16, 1020, 10);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 16, 1, 500]),
        FAULT
    );
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 1000, 500]),
        FAULT
    );
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 1, 1022]),
        FAULT
    );
    assert_eq!(h.requests.len(), before);
    assert_eq!(c.stdin.pending(), b"ept");
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[1, 0, 1, 500]),
        BADF
    );
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[0, 0, 0, 500]),
        SPIPE
    );
    // At the end of a call the unread bytes go back to the host (fd 0, 3 bytes), once.
    c.end_call(&mut h);
    let (op, req) = h.requests.last().unwrap();
    assert_eq!((*op, &req[..]), (Op::Unread, &[0, 0, 0, 0, 3, 0, 0, 0][..]));
    assert!(c.stdin.pending().is_empty());
    c.end_call(&mut h);
    assert_eq!(h.requests.len(), before + 1);
}

#[test]
fn stdio_writes_gather_within_the_transfer_limit() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 512]);
    mem[100..105].copy_from_slice(b"hello");
    mem[200..206].copy_from_slice(b" world");
    put_iovec(&mut mem, 0, 100, 5);
    put_iovec(&mut mem, 8, 200, 6);
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[1, 0, 2, 300]),
        SUCCESS
    );
    assert_eq!(h.written, vec![(1, b"hello world".to_vec())]);
    assert_eq!(u32_at(&mem, 300), 11);
    h.max = 7;
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[2, 0, 2, 300]),
        SUCCESS
    );
    assert_eq!(h.written[1], (2, b"hello w".to_vec()));
    assert_eq!(u32_at(&mem, 300), 7); // partial: the program writes the rest
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[0, 0, 2, 300]),
        BADF
    );
    assert_eq!(crate::fuel_units(Func::FdWrite, &[1, 0, 2, 300]), 2);
    // More iovecs than Linux takes (1,024) is EINVAL, before anything sized by the count.
    let mut big = vec![0u8; 16384];
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut big, &mut h, &[1, 0, 1025, 9000]),
        INVAL
    );
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut big, &mut h, &[1, 0, 1024, 9000]),
        SUCCESS
    );
}

#[test]
fn file_calls_send_exact_requests_and_bound_paths_first() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 8192]);
    mem[100..108].copy_from_slice(b"file.txt");
    h.reply = 9u32.to_le_bytes().to_vec();
    let args = [3, 1, 100, 8, 9, 0x42, 0x43, 1, 40];
    assert_eq!(
        run(Func::PathOpen, &mut c, &mut mem, &mut h, &args),
        SUCCESS
    );
    assert_eq!(u32_at(&mem, 40), 9);
    let (op, req) = h.requests.last().unwrap();
    assert_eq!(*op, Op::Open);
    let mut want = Vec::new();
    for v in [3u32, 1, 8] {
        want.extend_from_slice(&v.to_le_bytes());
    }
    want.extend_from_slice(b"file.txt");
    want.extend_from_slice(&9u32.to_le_bytes());
    want.extend_from_slice(&0x42u64.to_le_bytes());
    want.extend_from_slice(&0x43u64.to_le_bytes());
    want.extend_from_slice(&1u32.to_le_bytes());
    assert_eq!(*req, want);
    // A reply of the wrong size is EIO, not a stray write.
    h.reply = vec![1, 2];
    assert_eq!(run(Func::PathOpen, &mut c, &mut mem, &mut h, &args), IO);
    // The host's errno passes through.
    h.fail = Some(76);
    assert_eq!(run(Func::PathOpen, &mut c, &mut mem, &mut h, &args), 76);
    h.fail = None;
    // A path longer than 4096 bytes never crosses.
    let before = h.requests.len();
    let long = [3, 1, 100, 4097, 0, 0, 0, 0, 40];
    assert_eq!(
        run(Func::PathOpen, &mut c, &mut mem, &mut h, &long),
        NAMETOOLONG
    );
    assert_eq!(
        run(
            Func::PathUnlinkFile,
            &mut c,
            &mut mem,
            &mut h,
            &[3, 8000, 500]
        ),
        FAULT
    );
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 0, 3, 40]),
        INVAL
    );
    assert_eq!(h.requests.len(), before);
    // Seek: an i64 offset goes as its bits; the new offset comes back as a u64.
    h.reply = 77u64.to_le_bytes().to_vec();
    let minus_two = (-2i64) as u64;
    assert_eq!(
        run(
            Func::FdSeek,
            &mut c,
            &mut mem,
            &mut h,
            &[5, minus_two, 2, 40]
        ),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().1[4..12], minus_two.to_le_bytes());
    assert_eq!(u32_at(&mem, 40), 77);
    // Readdir: the reply is copied, and bufused says how much.
    h.reply = vec![9; 30];
    assert_eq!(
        run(
            Func::FdReaddir,
            &mut c,
            &mut mem,
            &mut h,
            &[4, 1000, 64, 0, 40]
        ),
        SUCCESS
    );
    assert_eq!(u32_at(&mem, 40), 30);
    h.reply = vec![9; 65];
    assert_eq!(
        run(
            Func::FdReaddir,
            &mut c,
            &mut mem,
            &mut h,
            &[4, 1000, 64, 0, 40]
        ),
        IO
    );
}

#[test]
fn replies_are_parsed_strictly() {
    assert_eq!(parse_reply(&[0, 0, 0, 0, 5]), Ok(vec![5]));
    assert_eq!(parse_reply(&[44, 0, 0, 0]), Err(44));
    assert_eq!(parse_reply(&[200, 0, 0, 0]), Err(IO)); // not a WASI errno
    assert_eq!(parse_reply(&[0, 0]), Err(IO));
    let mut mem = vec![0u8; 16];
    let m = SliceMemory(&mut mem);
    assert_eq!(m.read(8, 9), Err(FAULT));
    assert_eq!(m.read(u32::MAX, 2), Err(FAULT));
}

#[test]
fn the_instantiate_request_is_parsed_strictly() {
    use crate::InstantiateRequest;
    let mut req = Vec::new();
    req.extend_from_slice(&1u64.to_le_bytes());
    req.extend_from_slice(&2u64.to_le_bytes());
    req.push(1);
    for list in [&[&b"prog"[..], &b"a"[..]][..], &[&b"K=V"[..]][..]] {
        req.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for item in list {
            req.extend_from_slice(&(item.len() as u32).to_le_bytes());
            req.extend_from_slice(item);
        }
    }
    req.extend_from_slice(&[9u8; 32]);
    req.extend_from_slice(&1u32.to_le_bytes());
    req.extend_from_slice(&5u32.to_le_bytes());
    req.extend_from_slice(b"/data");
    let r = InstantiateRequest::parse(&req).unwrap();
    let wasi = r.wasi.unwrap();
    assert_eq!((r.max_memory, r.max_table), (1, 2));
    assert_eq!(wasi.args, vec![b"prog".to_vec(), b"a".to_vec()]);
    assert_eq!(wasi.env, vec![b"K=V".to_vec()]);
    assert_eq!(wasi.preopens[0].name, b"/data".to_vec());
    // Every cut is an error, and so is a trailing byte; a count larger than what follows too.
    for n in 0..req.len() {
        assert!(InstantiateRequest::parse(&req[..n]).is_err(), "cut at {n}");
    }
    let mut long = req.clone();
    long.push(0);
    assert!(InstantiateRequest::parse(&long).is_err());
    let mut huge = req[..17].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(InstantiateRequest::parse(&huge).is_err());
    // WASI off: nothing after the flag.
    let mut off = req[..17].to_vec();
    off[16] = 0;
    assert!(InstantiateRequest::parse(&off).is_ok_and(|r| r.wasi.is_none()));
}

/// Decodes an `Output` request into (fd, bytes) records, checking every length.
fn output_records(mut b: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let fd = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let n = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        out.push((fd, b[8..8 + n].to_vec()));
        b = &b[8 + n..];
    }
    out
}

#[test]
fn output_keeps_the_order_of_both_streams_and_merges_runs() {
    use crate::output::Output;
    let mut o = Output::new();
    assert!(o.is_empty());
    o.push(1, b"a");
    assert_eq!(o.len_after(1, 2), o.len() + 2);
    assert_eq!(o.len_after(2, 2), o.len() + 8 + 2);
    o.push(1, b"bc");
    o.push(2, b"E");
    o.push(2, b"");
    o.push(1, b"d");
    assert_eq!(o.len(), 3 * 8 + 5);
    let records = output_records(&o.take());
    assert_eq!(
        records,
        vec![(1, b"abc".to_vec()), (2, b"E".to_vec()), (1, b"d".to_vec())]
    );
    assert!(o.is_empty());
    // After a take, a write to the last record's fd starts a new record.
    o.push(1, b"x");
    assert_eq!(output_records(&o.take()), vec![(1, b"x".to_vec())]);
    o.push(2, b"y");
    o.clear();
    assert!(o.take().is_empty());
}

#[test]
fn absolute_seeks_on_a_known_seekable_fd_travel_with_the_next_request() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    let u64_at = |mem: &[u8], at: usize| u64::from_le_bytes(mem[at..at + 8].try_into().unwrap());
    let seek_req = |fd: u32, off: u64, whence: u8| {
        let mut r = fd.to_le_bytes().to_vec();
        r.extend_from_slice(&off.to_le_bytes());
        r.push(whence);
        r
    };
    // The first seek on fd 5 crosses: only the host knows whether fd 5 is seekable.
    h.reply = 100u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 100, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests, vec![(Op::Seek, seek_req(5, 100, 0))]);
    // Now absolute seeks are answered here; the later one of the same fd replaces the earlier.
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 300, 0, 200]),
        SUCCESS
    );
    assert_eq!(u64_at(&mem, 200), 300);
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 400, 0, 200]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), u64_at(&mem, 200)), (1, 400));
    // The next request carries it: seek fd 5 to 400, then write.
    mem[16..19].copy_from_slice(b"abc");
    put_iovec(&mut mem, 64, 16, 3);
    h.reply = 3u32.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[5, 64, 1, 80]),
        SUCCESS
    );
    let mut want = 5u32.to_le_bytes().to_vec();
    want.extend_from_slice(&400u64.to_le_bytes());
    want.extend_from_slice(&(Op::Write as u32).to_le_bytes());
    want.extend_from_slice(&5u32.to_le_bytes());
    want.extend_from_slice(&3u32.to_le_bytes());
    want.extend_from_slice(b"abc");
    assert_eq!(h.requests[1], (Op::SeekThen, want));
    // Relative seeks, offsets past 1 TiB and a negative offset cross as before.
    h.reply = 7u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 4, 1, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[2], (Op::Seek, seek_req(5, 4, 1)));
    let far = (1u64 << 40) + 1;
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, far, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[3], (Op::Seek, seek_req(5, far, 0)));
    assert_eq!(h.requests.len(), 4);
    // A seek on another fd sends the pending one first; the end of the call sends the last.
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 9, 0, 200]),
        SUCCESS
    );
    h.reply = 1u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 1, 0, 200]),
        SUCCESS
    );
    assert_eq!(
        h.requests[4],
        (Op::SeekThen, {
            let mut r = 5u32.to_le_bytes().to_vec();
            r.extend_from_slice(&9u64.to_le_bytes());
            r.extend_from_slice(&(Op::Seek as u32).to_le_bytes());
            r.extend_from_slice(&seek_req(6, 1, 0));
            r
        })
    );
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 2, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests.len(), 5);
    c.end_call(&mut h);
    assert_eq!(h.requests[5], (Op::Seek, seek_req(6, 2, 0)));
    // After a close the fd is unknown again: its next seek crosses.
    h.reply = Vec::new();
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[6]), SUCCESS);
    h.reply = 0u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 0, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[7], (Op::Seek, seek_req(6, 0, 0)));
    // A failed seek makes the fd unknown (a directory, a closed fd).
    h.fail = Some(BADF);
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 4, 1, 200]),
        BADF
    );
    h.fail = None;
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 0, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests.len(), 10);
    // A bad result pointer is EFAULT before anything is deferred.
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 0, 0, 1020]),
        FAULT
    );
}
