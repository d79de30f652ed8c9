//! Native tests of the engine-independent WASI code with a byte-vector memory and a recording
//! host: what each call reads from and writes to the module's memory, what it sends to the host,
//! and the bounds it enforces before anything crosses.

use alloc::vec;
use alloc::vec::Vec;

use crate::abi::errno::{BADF, FAULT, INVAL, IO, NAMETOOLONG, NOSYS, SPIPE, SUCCESS};
use crate::batch::Batcher;
use crate::host::{Op, parse_reply};
use crate::{ChaCha20, Func, GuestMemory, Outcome, Preopen, SliceMemory, WasiCtx, WasiHost};

/// Records every crossing; answers `io` with `reply` (or the errno in `fail`). With `batching`,
/// keeps deferred requests as `HlHost` does (a [`Batcher`]): a `Batch` crossing is answered as
/// all served (then `reply`/`fail` for its last request) unless `batch_fail` names the index
/// and errno of the deferred request that fails.
struct Host {
    requests: Vec<(Op, Vec<u8>)>,
    written: Vec<(u32, Vec<u8>)>,
    reply: Vec<u8>,
    fail: Option<i32>,
    max: u32,
    batching: bool,
    batch: Batcher,
    batch_fail: Option<(u32, i32)>,
}

impl Host {
    /// One raw crossing, recorded and answered.
    fn cross(
        requests: &mut Vec<(Op, Vec<u8>)>,
        reply: &[u8],
        fail: Option<i32>,
        batch_fail: Option<(u32, i32)>,
        op: Op,
        request: Vec<u8>,
    ) -> Result<Vec<u8>, i32> {
        if op != Op::Batch {
            requests.push((op, request));
            return fail.map_or(Ok(reply.to_vec()), Err);
        }
        let n = u32::from_le_bytes(request[..4].try_into().unwrap());
        requests.push((op, request));
        if let Some((at, errno)) = batch_fail {
            let mut out = at.to_le_bytes().to_vec();
            out.extend_from_slice(&(errno as u32).to_le_bytes());
            return Ok(out);
        }
        let mut out = n.to_le_bytes().to_vec();
        out.extend_from_slice(&(fail.unwrap_or(0) as u32).to_le_bytes());
        if fail.is_none() {
            out.extend_from_slice(reply);
        }
        Ok(out)
    }
}

impl Host {
    fn new() -> Self {
        Self {
            requests: Vec::new(),
            written: Vec::new(),
            reply: Vec::new(),
            fail: None,
            max: 1 << 20,
            batching: false,
            batch: Batcher::new(),
            batch_fail: None,
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
        if !self.batching {
            self.requests.push((op, request));
            return self.fail.map_or(Ok(self.reply.clone()), Err);
        }
        if Batcher::answers_lost(op)
            && let Some(errno) = self.batch.take_lost()
        {
            return Err(errno);
        }
        let Self {
            requests,
            reply,
            fail,
            batch,
            batch_fail,
            ..
        } = self;
        let mut send = |op, req| Host::cross(requests, reply, *fail, *batch_fail, op, req);
        batch
            .send(&mut send, op, request, 1 << 20)
            .map_err(|f| f.errno())
    }

    fn max_transfer(&self) -> u32 {
        self.max
    }

    fn defer(&mut self, op: Op, request: &[u8]) -> bool {
        if !self.batching {
            return false;
        }
        let Self {
            requests,
            reply,
            fail,
            batch,
            batch_fail,
            ..
        } = self;
        let mut send = |op, req| Host::cross(requests, reply, *fail, *batch_fail, op, req);
        batch.defer(&mut send, op, request, 1 << 20)
    }
}

impl Host {
    /// What the embedder does at the end of a call: the deferred requests cross alone.
    fn flush(&mut self) {
        let Self {
            requests,
            reply,
            fail,
            batch,
            batch_fail,
            ..
        } = self;
        let mut send = |op, req| Host::cross(requests, reply, *fail, *batch_fail, op, req);
        batch.flush(&mut send);
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
        known: Default::default(),
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
    h.reply = b"\0abcdefghijklmnopq".to_vec(); // u8 0: more may come
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.len(), 1);
    let (op, req) = &h.requests[0];
    assert_eq!(*op, Op::ReadStdin);
    // At most STDIN_READ_AHEAD (64 KiB) although the iovecs hold 13.
    assert_eq!(req[..], [0, 0, 1, 0]);
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
    h.reply = vec![0];
    mem[500] = 9;
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), u32_at(&mem, 500)), (2, 0));
    // The host may not answer with more than was asked.
    h.max = 5;
    h.reply = b"\0xxxxxx".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        IO
    );
    assert!(c.stdin.pending().is_empty());
    // A smaller transfer limit shrinks the request (a partial read).
    h.reply = b"\x0012345".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 2, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().1[..], [5, 0, 0, 0]);
    // Iovecs larger than the read-ahead ask for their total.
    h.max = 1 << 20;
    put_iovec(&mut mem, 24, 0, 100_000);
    let mut big = vec![0u8; 200_000];
    big[..32].copy_from_slice(&mem[..32]);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut big, &mut h, &[0, 24, 1, 500]),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().1[..], 100_000u32.to_le_bytes());
    // An iovec outside the memory, more iovecs than the memory holds, or a bad nread pointer:
    // EFAULT, no crossing, no byte taken from the read-ahead.
    h.reply = b"\0kept".to_vec();
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
    // The reply: fd 9 and its `$fdstat` (all zero here: nothing the guest can answer later).
    h.reply = 9u32.to_le_bytes().to_vec();
    h.reply.extend_from_slice(&[0; 24]);
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
fn output_rides_in_front_of_a_request_and_its_reply_says_whether_it_was_refused() {
    use crate::output::{carried_reply, carry};
    // `blob output`, `u32 op`, then the op's request as it is.
    let req = carry(b"OUT", Op::Mkdir, &[9, 8]);
    assert_eq!(req, [3, 0, 0, 0, b'O', b'U', b'T', 18, 0, 0, 0, 9, 8]);
    // `u8 refused`, then the carried request's whole reply.
    assert_eq!(carried_reply(&[0, 0, 0, 0, 0, 7]), (false, Ok(vec![7])));
    assert_eq!(carried_reply(&[1, 0, 0, 0, 0]), (true, Ok(vec![])));
    assert_eq!(carried_reply(&[1, 44, 0, 0, 0]), (true, Err(44)));
    // Malformed: no flag, a flag that is not 0 or 1, a reply cut short: EIO for the request.
    assert_eq!(carried_reply(&[]), (false, Err(IO)));
    assert_eq!(carried_reply(&[2, 0, 0, 0, 0]), (false, Err(IO)));
    assert_eq!(carried_reply(&[0, 0, 0]), (false, Err(IO)));
}

/// `Seek(fd, offset, whence)`.
fn seek_req(fd: u32, off: u64, whence: u8) -> Vec<u8> {
    let mut r = fd.to_le_bytes().to_vec();
    r.extend_from_slice(&off.to_le_bytes());
    r.push(whence);
    r
}

/// A `Batch` request's records: (op, body) of each deferred request, then the last one's op and body.
type BatchRecords = (Vec<(u32, Vec<u8>)>, u32, Vec<u8>);

/// The records of a `Batch` request: the deferred requests and the last one (op 0: none).
fn batch_records(req: &[u8]) -> BatchRecords {
    let u32_at = |at: usize| u32::from_le_bytes(req[at..at + 4].try_into().unwrap());
    let n = u32_at(0);
    let mut at = 4;
    let mut records = Vec::new();
    for _ in 0..n {
        let (op, len) = (u32_at(at), u32_at(at + 4) as usize);
        records.push((op, req[at + 8..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    (records, u32_at(at), req[at + 4..].to_vec())
}

/// Opens `name` in preopen fd 3 as fd `fd`, the host describing it with `filetype` and `rights`.
fn open_as(c: &mut WasiCtx, h: &mut Host, mem: &mut [u8], fd: u32, filetype: u8, rights: u64) {
    mem[100..104].copy_from_slice(b"f.db");
    let mut reply = fd.to_le_bytes().to_vec();
    let mut stat = [0u8; 24];
    stat[0] = filetype;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    reply.extend_from_slice(&stat);
    h.reply = reply;
    let args = [3, 0, 100, 4, 1, rights, 0, 0, 40];
    assert_eq!(run(Func::PathOpen, c, mem, h, &args), SUCCESS);
    assert_eq!(u32_at(mem, 40), fd);
}

const REGULAR: u8 = 4;
const DIRECTORY: u8 = 3;
const WRITE: u64 = 1 << 6;

#[test]
fn file_writes_seeks_and_closes_wait_for_the_next_request() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    h.batching = true;
    open_as(&mut c, &mut h, &mut mem, 5, REGULAR, WRITE | 2);
    assert_eq!(h.requests.len(), 1);
    // fd_fdstat_get is the host's answer to the open; seek and writes are answered here.
    assert_eq!(
        run(Func::FdFdstatGet, &mut c, &mut mem, &mut h, &[5, 200]),
        SUCCESS
    );
    assert_eq!((mem[200], u32_at(&mem, 208)), (REGULAR, (WRITE | 2) as u32));
    let u64_at = |mem: &[u8], at: usize| u64::from_le_bytes(mem[at..at + 8].try_into().unwrap());
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 4096, 0, 200]),
        SUCCESS
    );
    assert_eq!(u64_at(&mem, 200), 4096);
    mem[16..21].copy_from_slice(b"abcde");
    put_iovec(&mut mem, 64, 16, 3);
    put_iovec(&mut mem, 72, 19, 2);
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[5, 64, 2, 80]),
        SUCCESS
    );
    assert_eq!(u32_at(&mem, 80), 5);
    assert_eq!(
        run(Func::FdPwrite, &mut c, &mut mem, &mut h, &[5, 72, 1, 7, 80]),
        SUCCESS
    );
    assert_eq!(u32_at(&mem, 80), 2);
    assert_eq!(h.requests.len(), 1);
    // A read carries them, in order: one crossing.
    h.reply = b"xy".to_vec();
    put_iovec(&mut mem, 64, 300, 8);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[5, 64, 1, 80]),
        SUCCESS
    );
    assert_eq!((u32_at(&mem, 80), &mem[300..302]), (2, &b"xy"[..]));
    assert_eq!(h.requests.len(), 2);
    let (op, req) = &h.requests[1];
    assert_eq!(*op, Op::Batch);
    let mut write = 5u32.to_le_bytes().to_vec();
    write.extend_from_slice(&5u32.to_le_bytes());
    write.extend_from_slice(b"abcde");
    let mut pwrite = 5u32.to_le_bytes().to_vec();
    pwrite.extend_from_slice(&7u64.to_le_bytes());
    pwrite.extend_from_slice(&2u32.to_le_bytes());
    pwrite.extend_from_slice(b"de");
    let mut read = 5u32.to_le_bytes().to_vec();
    read.extend_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        batch_records(req),
        (
            vec![
                (Op::Seek as u32, seek_req(5, 4096, 0)),
                (Op::Write as u32, write),
                (Op::Pwrite as u32, pwrite),
            ],
            Op::Read as u32,
            read
        )
    );
    // The close waits too; the end of the call sends it alone (op 0), and forgets fd 5.
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[5]), SUCCESS);
    assert_eq!(h.requests.len(), 2);
    c.end_call(&mut h);
    h.flush();
    let close = (Op::Close as u32, 5u32.to_le_bytes().to_vec());
    assert_eq!(
        batch_records(&h.requests[2].1),
        (vec![close], 0, Vec::new())
    );
    h.reply = 7u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[5, 7, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[3], (Op::Seek, seek_req(5, 7, 0)));
}

#[test]
fn only_what_cannot_fail_at_the_host_is_deferred() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    h.batching = true;
    // A file opened without FD_WRITE: its writes cross (EBADF is the host's to answer), its
    // absolute seeks wait; relative seeks and offsets past 1 TiB cross.
    open_as(&mut c, &mut h, &mut mem, 6, REGULAR, 2);
    put_iovec(&mut mem, 64, 16, 3);
    h.fail = Some(BADF);
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[6, 64, 1, 80]),
        BADF
    );
    assert_eq!(h.requests[1].0, Op::Write);
    h.fail = None;
    h.reply = 3u64.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 3, 1, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[2], (Op::Seek, seek_req(6, 3, 1)));
    let far = (1u64 << 40) + 1;
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, far, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[3], (Op::Seek, seek_req(6, far, 0)));
    // Unknown fds cross; a bad result pointer is EFAULT before anything is deferred.
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[9, 0, 0, 200]),
        SUCCESS
    );
    assert_eq!(h.requests[4], (Op::Seek, seek_req(9, 0, 0)));
    assert_eq!(
        run(Func::FdSeek, &mut c, &mut mem, &mut h, &[6, 0, 0, 1020]),
        FAULT
    );
    assert_eq!(h.requests.len(), 5);
    // A directory's sync is answered here (the host does nothing for one); its close waits. A
    // preopen's close crosses (the guest tracks it).
    open_as(&mut c, &mut h, &mut mem, 7, DIRECTORY, u64::MAX);
    assert_eq!(run(Func::FdSync, &mut c, &mut mem, &mut h, &[7]), SUCCESS);
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[7]), SUCCESS);
    assert_eq!(h.requests.len(), 6);
    h.reply = Vec::new();
    assert_eq!(run(Func::FdClose, &mut c, &mut mem, &mut h, &[3]), SUCCESS);
    let (op, req) = &h.requests[6];
    let close = |fd: u32| (Op::Close as u32, fd.to_le_bytes().to_vec());
    assert_eq!(
        (*op, batch_records(req)),
        (
            Op::Batch,
            (
                vec![close(7)],
                Op::Close as u32,
                3u32.to_le_bytes().to_vec()
            )
        )
    );
    // What the host said about fds is forgotten at the end of a call (a restore closes files).
    open_as(&mut c, &mut h, &mut mem, 8, REGULAR, WRITE);
    c.end_call(&mut h);
    h.reply = 3u32.to_le_bytes().to_vec();
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[8, 64, 1, 80]),
        SUCCESS
    );
    assert_eq!(h.requests.last().unwrap().0, Op::Write);
}

#[test]
fn a_deferred_write_that_fails_answers_the_call_that_carries_it_or_the_next() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    h.batching = true;
    const NOSPC: i32 = 51;
    open_as(&mut c, &mut h, &mut mem, 5, REGULAR, WRITE);
    put_iovec(&mut mem, 64, 16, 3);
    for _ in 0..2 {
        assert_eq!(
            run(Func::FdWrite, &mut c, &mut mem, &mut h, &[5, 64, 1, 80]),
            SUCCESS
        );
    }
    // The second write fails at the host: the sync that carried both answers ENOSPC.
    h.batch_fail = Some((1, NOSPC));
    assert_eq!(run(Func::FdSync, &mut c, &mut mem, &mut h, &[5]), NOSPC);
    assert_eq!(h.requests.len(), 2);
    // A flush with no call waiting (the end of a call, a host import): the module's next file
    // call answers the errno without crossing, once.
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[5, 64, 1, 80]),
        SUCCESS
    );
    h.batch_fail = Some((0, NOSPC));
    h.flush();
    assert_eq!(h.requests.len(), 3);
    h.batch_fail = None;
    // Stdin is not a file call: its read crosses and does not take the errno.
    h.reply = b"\x01in".to_vec();
    put_iovec(&mut mem, 96, 400, 2);
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 96, 1, 80]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), &mem[400..402]), (4, &b"in"[..]));
    h.requests.pop();
    assert_eq!(run(Func::FdSync, &mut c, &mut mem, &mut h, &[5]), NOSPC);
    assert_eq!(h.requests.len(), 3);
    h.reply = Vec::new();
    assert_eq!(run(Func::FdSync, &mut c, &mut mem, &mut h, &[5]), SUCCESS);
    assert_eq!((h.requests.len(), h.requests[3].0), (4, Op::Sync));
    // A malformed batch reply is EIO.
    assert_eq!(
        run(Func::FdWrite, &mut c, &mut mem, &mut h, &[5, 64, 1, 80]),
        SUCCESS
    );
    h.batch_fail = Some((0, 9999));
    assert_eq!(run(Func::FdSync, &mut c, &mut mem, &mut h, &[5]), IO);
}

#[test]
fn stdin_the_host_says_ended_answers_end_of_file_without_crossing_until_the_call_ends() {
    let (mut c, mut h, mut mem) = (ctx(), Host::new(), vec![0u8; 1024]);
    put_iovec(&mut mem, 0, 100, 8);
    // u8 1: nothing more can come after these 5 bytes.
    h.reply = b"\x01hello".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 1, 500]),
        SUCCESS
    );
    assert_eq!((u32_at(&mem, 500), &mem[100..105]), (5, &b"hello"[..]));
    mem[500] = 9;
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 1, 500]),
        SUCCESS
    );
    assert_eq!((h.requests.len(), u32_at(&mem, 500)), (1, 0));
    // The next call asks the host again (a restore may have rewound stdin); a bad flag is EIO.
    c.end_call(&mut h);
    h.reply = b"\x02".to_vec();
    assert_eq!(
        run(Func::FdRead, &mut c, &mut mem, &mut h, &[0, 0, 1, 500]),
        IO
    );
    assert_eq!(h.requests.len(), 2);
}
