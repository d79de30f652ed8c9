//! The host side of the isolated compile: starts `hl-wasm-compile` (src/bin/hl-wasm-compile.rs,
//! which sets its own rlimits and filter before reading) with an empty environment, feeds it the module on stdin, reads the artifact from
//! stdout (bounded), and waits with a deadline (then SIGKILL and reap). Every outcome is a code
//! and a message (docs/cdylib-abi.md, "The compiler library").

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ERR_CHILD, ERR_INTERNAL, ERR_MODULE, ERR_TIMEOUT};

/// Child exit status: the module was refused (its message on stderr).
const EXIT_MODULE: i32 = 2;
/// Modules from this size on are compiled on several threads (below it, starting the threads
/// costs more than they save: docs/design.md, "The isolated compile").
pub const PARALLEL_FROM: usize = 256 * 1024;
/// The most stderr kept (a message).
const MAX_STDERR: usize = 64 * 1024;

/// The address-space limit of the child for a module of `len` bytes: room for the binary, the
/// engine and Cranelift's working set, which grows with the module (measured: docs/design.md,
/// "The isolated compile").
pub fn memory_limit(len: usize) -> u64 {
    (1u64 << 30)
        .saturating_add((len as u64).saturating_mul(64))
        .min(32 << 30)
}

/// The largest artifact accepted from the child for a module of `len` bytes.
pub fn output_limit(len: usize) -> usize {
    (64usize << 20).saturating_add(len.saturating_mul(32))
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns (a pipe end held by `Child`).
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "a signal",
    }
}

/// Kills and reaps the child (after a deadline or an oversized output).
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Where the child's progress records go: translated, compiled, functions (see
/// src/bin/hl-wasm-compile.rs), each stored as it arrives.
pub type ProgressSink<'a> = &'a dyn Fn(u64, u64, u64);

/// The first byte of a progress record on the child's stderr (ASCII record separator; never in
/// a message). One definition for the child (src/bin/hl-wasm-compile.rs) and this reader.
pub const PROGRESS_MARK: u8 = 0x1e;

/// Takes the complete progress records out of `err` (the child's stderr so far), from `from` on,
/// and hands each to `sink`; a partial record at the end stays for the next read. Returns where
/// the next scan starts. Malformed records are dropped (the child is untrusted: `P` and three
/// decimal numbers only). One pass that moves each kept byte once, so a child that writes
/// nothing but tiny records costs linear time in what it wrote.
fn take_progress(err: &mut Vec<u8>, from: usize, sink: Option<ProgressSink<'_>>) -> usize {
    let mut kept = from; // err[..kept] is the message so far
    let mut at = from; // next byte to look at
    while let Some(i) = err[at..].iter().position(|&b| b == PROGRESS_MARK) {
        let start = at + i;
        err.copy_within(at..start, kept);
        kept += start - at;
        let Some(len) = err[start..].iter().position(|&b| b == b'\n') else {
            // Incomplete: keep it for the rest, and scan from it next time.
            err.copy_within(start.., kept);
            err.truncate(kept + (err.len() - start));
            return kept;
        };
        if let (Some(sink), Some((t, c, n))) = (sink, parse_progress(&err[start + 1..start + len]))
        {
            sink(t, c, n);
        }
        at = start + len + 1;
    }
    err.copy_within(at.., kept);
    err.truncate(kept + (err.len() - at));
    err.len()
}

/// A progress record's body (between the mark and the newline): `P <t> <c> <n>`.
fn parse_progress(body: &[u8]) -> Option<(u64, u64, u64)> {
    let mut parts = std::str::from_utf8(body).ok()?.split(' ');
    if parts.next()? != "P" {
        return None;
    }
    let mut num = || parts.next()?.parse::<u64>().ok();
    let record = (num()?, num()?, num()?);
    parts.next().is_none().then_some(record)
}

/// Compiles `wasm` in a child started from `program`; `fault` is the test-only switch (empty
/// otherwise); `progress` gets the child's progress records as they come. Returns the
/// artifact, or a code and message.
pub fn compile_isolated(
    program: &str,
    flags: u32,
    fault: &str,
    timeout: Duration,
    wasm: &[u8],
    progress: Option<ProgressSink<'_>>,
) -> Result<Vec<u8>, (i32, String)> {
    let deadline = Instant::now() + timeout;
    let mem = memory_limit(wasm.len());
    let cpu_secs = timeout.as_secs().saturating_add(1);
    let mut cmd = Command::new(program);
    // The child confines itself before it reads anything (src/bin/hl-wasm-compile.rs): no
    // `pre_exec`, so std spawns it with posix_spawn (vfork) instead of forking this process.
    cmd.arg(flags.to_string())
        .arg(mem.to_string())
        .arg(cpu_secs.to_string())
        .arg(std::process::id().to_string())
        .arg(if wasm.len() >= PARALLEL_FROM {
            "1"
        } else {
            "0"
        });
    if !fault.is_empty() {
        cmd.arg(fault);
    }
    cmd.env_clear()
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| (ERR_INTERNAL, format!("cannot start {program}: {e}")))?;
    let timed_out = || {
        (
            ERR_TIMEOUT,
            format!(
                "compiling the module took longer than {} ms",
                timeout.as_millis()
            ),
        )
    };
    let result = drive(
        &mut child,
        wasm,
        deadline,
        output_limit(wasm.len()),
        progress,
    );
    let (stdout, stderr) = match result {
        Ok(out) => out,
        Err(Drive::Timeout) => {
            kill(&mut child);
            return Err(timed_out());
        }
        Err(Drive::TooLarge) => {
            kill(&mut child);
            return Err((
                ERR_CHILD,
                "the compiler's output exceeded its size limit".into(),
            ));
        }
        Err(Drive::Io(e)) => {
            kill(&mut child);
            return Err((
                ERR_INTERNAL,
                format!("talking to the compiler process: {e}"),
            ));
        }
    };
    // Both pipes closed: the child is exiting (it cannot close them itself: `close` is not in
    // its filter), but the deadline still holds.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                kill(&mut child);
                return Err(timed_out());
            }
            Err(e) => {
                kill(&mut child);
                return Err((
                    ERR_INTERNAL,
                    format!("waiting for the compiler process: {e}"),
                ));
            }
        }
    };
    let text = String::from_utf8_lossy(&stderr);
    // The first line is the message (a panic or abort may add notes after it).
    let message = text.trim().lines().next().unwrap_or("").to_string();
    if let Some(sig) = status.signal() {
        let what = match sig {
            libc::SIGSYS => "made a system call its seccomp filter forbids".to_string(),
            libc::SIGXCPU | libc::SIGKILL => {
                return Err((
                    ERR_TIMEOUT,
                    format!(
                        "compiling the module used up its CPU time limit ({cpu_secs} s; killed by {})",
                        signal_name(sig)
                    ),
                ));
            }
            libc::SIGABRT if message.contains("memory allocation") => {
                format!("ran out of memory (limit {} MiB)", mem >> 20)
            }
            _ => "crashed".to_string(),
        };
        return Err((
            ERR_CHILD,
            format!(
                "the compiler process {what} (killed by {} ({sig})){}",
                signal_name(sig),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
        ));
    }
    match status.code() {
        Some(0) if !stdout.is_empty() => Ok(stdout),
        Some(0) => Err((
            ERR_CHILD,
            "the compiler process produced no artifact".into(),
        )),
        Some(EXIT_MODULE) => Err((ERR_MODULE, message)),
        Some(code) => Err((
            ERR_CHILD,
            format!("the compiler process failed (exit status {code}): {message}"),
        )),
        None => Err((
            ERR_CHILD,
            "the compiler process ended in an unknown way".into(),
        )),
    }
}

enum Drive {
    Timeout,
    TooLarge,
    Io(std::io::Error),
}

/// Writes `wasm` to the child's stdin while reading its stdout and stderr, until both are closed
/// or the deadline passes.
fn drive(
    child: &mut Child,
    wasm: &[u8],
    deadline: Instant,
    max_out: usize,
    progress: Option<ProgressSink<'_>>,
) -> Result<(Vec<u8>, Vec<u8>), Drive> {
    let mut stdin = child.stdin.take();
    let mut stdout = child
        .stdout
        .take()
        .ok_or(Drive::Io(ErrorKind::Other.into()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or(Drive::Io(ErrorKind::Other.into()))?;
    for fd in [stdout.as_raw_fd(), stderr.as_raw_fd()]
        .into_iter()
        .chain(stdin.as_ref().map(|s| s.as_raw_fd()))
    {
        set_nonblocking(fd).map_err(Drive::Io)?;
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let mut written = 0usize;
    if wasm.is_empty() {
        stdin = None;
    }
    let mut buf = vec![0u8; 256 * 1024];
    let mut scanned = 0usize;
    while out_open || err_open {
        let now = Instant::now();
        if now >= deadline {
            return Err(Drive::Timeout);
        }
        let wait_ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = Vec::with_capacity(3);
        if out_open {
            fds.push(libc::pollfd {
                fd: stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if err_open {
            fds.push(libc::pollfd {
                fd: stderr.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        if let Some(s) = &stdin {
            fds.push(libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(Drive::Io(e));
        }
        if out_open {
            match read_some(&mut stdout, &mut buf, &mut out, max_out, false)? {
                Some(open) => out_open = open,
                None => return Err(Drive::TooLarge),
            }
        }
        if err_open {
            // A message longer than the cap is cut, not an error.
            if let Some(open) = read_some(&mut stderr, &mut buf, &mut err, MAX_STDERR, true)? {
                err_open = open;
            }
            // Progress records leave the message as they come, so they never fill its cap.
            scanned = take_progress(&mut err, scanned, progress);
        }
        if let Some(s) = &mut stdin {
            match s.write(&wasm[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The child stopped reading (it died or refused): its status tells why.
                Err(_) => written = wasm.len(),
            }
            if written >= wasm.len() {
                stdin = None; // EOF for the child.
            }
        }
    }
    Ok((out, err))
}

/// Reads what is there: `Some(still open)`, `None` when `into` would pass `max` (unless
/// `cut`: then what passes `max` is dropped).
fn read_some(
    r: &mut impl Read,
    buf: &mut [u8],
    into: &mut Vec<u8>,
    max: usize,
    cut: bool,
) -> Result<Option<bool>, Drive> {
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(Some(false)),
            Ok(n) => {
                if into.len() + n > max {
                    if !cut {
                        return Ok(None);
                    }
                    let room = max - into.len();
                    into.extend_from_slice(&buf[..room]);
                    continue;
                }
                into.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Some(true)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(Drive::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::take_progress;
    use std::cell::RefCell;

    #[test]
    fn progress_records_leave_the_message_and_reach_the_sink() {
        let seen = RefCell::new(Vec::new());
        let sink = |t: u64, c: u64, n: u64| seen.borrow_mut().push((t, c, n));
        let mut err = b"\x1eP 1 2 10\n\x1eP 3 4 10\nmessage \x1eP x y z\n\x1eP 5 6".to_vec();
        let next = take_progress(&mut err, 0, Some(&sink));
        // The malformed record is dropped; the partial one waits for the rest.
        assert_eq!(*seen.borrow(), vec![(1, 2, 10), (3, 4, 10)]);
        assert_eq!(err, b"message \x1eP 5 6".to_vec());
        err.extend_from_slice(b" 10\n");
        let next = take_progress(&mut err, next, Some(&sink));
        assert_eq!(seen.borrow().last(), Some(&(5, 6, 10)));
        assert_eq!(err, b"message ".to_vec());
        assert_eq!(next, err.len());
    }

    #[test]
    fn message_text_between_records_is_kept_in_order() {
        let seen = RefCell::new(Vec::new());
        let sink = |t: u64, c: u64, n: u64| seen.borrow_mut().push((t, c, n));
        // Empty and extra-field records are dropped like any malformed one.
        let mut err = b"a\x1eP 1 1 2\nb\x1e\nc\x1eP 2 2 2 9\nd\x1eP 2 3 2\n".to_vec();
        let next = take_progress(&mut err, 0, Some(&sink));
        assert_eq!(err, b"abcd".to_vec());
        assert_eq!(next, 4);
        assert_eq!(*seen.borrow(), vec![(1, 1, 2), (2, 3, 2)]);
        // A stderr made of nothing but records leaves an empty message, whatever its size.
        let mut err = b"\x1e\n".repeat(32 * 1024);
        err.extend_from_slice(b"end");
        assert_eq!(take_progress(&mut err, 0, Some(&sink)), 3);
        assert_eq!(err, b"end".to_vec());
    }
}
