//! Which pages of a guest memory region were written since it was mapped, without the kernel
//! looking at every page's `struct page` (issues 21 and 24: the restore's page scan).
//!
//! A region based on a snapshot is a `MAP_PRIVATE` mapping of the snapshot's memfd: a page the
//! guest (or the host) wrote is a private (anonymous) copy, every other page is the memfd's own.
//! `PAGEMAP_SCAN` told the two apart with `PAGE_IS_FILE`, which makes the kernel look up the page
//! of every present entry in the range (`vm_normal_page` + `PageAnon`): ~100-150 ns each here,
//! ~0.45 ms per restore for the ~3,100 pages a Python sandbox has mapped from its snapshot.
//!
//! Instead, where the process's one userfaultfd (`memory::uffd_and_async`, with which every
//! snapshot mapping is registered in write-protect mode to turn fault-around off) has asynchronous
//! write-protect (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7+: no fault is ever delivered to us; the kernel
//! clears a page's write-protect bit itself at the first write), the snapshot's data pages are
//! write-protected once, right after the mapping is made and populated, before any guest runs
//! (those not mapped yet get the kernel's marker, which a later fault keeps). Then
//! `PAGE_IS_WRITTEN` (present or swapped, without the bit) is a test of the page-table entry's
//! bits alone. Why this cannot miss a written page: the bit is set only here, only on pages that
//! hold the snapshot's content (the memfd's own pages; the write set's private copies are left
//! out); an entry with the bit is read-only, so any write to it (the guest's through KVM, the
//! host's, the kernel's on our behalf) takes a write fault, and in asynchronous mode that fault
//! clears the bit before the write lands. A page without the bit that still holds the snapshot's
//! content (a hole the guest only read, a page copied back by a restore) is reported too: it is
//! put back again, which is only work. Pages copied back stay private and unprotected, as before:
//! write-protecting them after each restore would report only the last run's writes, but each page
//! the guest then writes again would cost a fault that leaves the guest (5-18 us on kvm_pvm,
//! docs/wasm.md), against ~1 us to copy it back; and 135 of the Python pool's 192 pages, 44 of the
//! JS pool's 52, are written again by every request (measured here).
//!
//! Where the kernel lacks it, userfaultfd is refused (seccomp, an old kernel),
//! `HL_SNAPSHOT_FAULT_AROUND=1` or `HL_RESTORE_WRITE_TRACK=0`, no page is write-protected and a
//! restore scans with `PAGE_IS_FILE` as before.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// `HL_RESTORE_WRITE_TRACK=0`: no write tracking (every restore scans with `PAGE_IS_FILE`, as
/// before), for an A/B on one build. Read once.
pub const WRITE_TRACK_ENV: &str = "HL_RESTORE_WRITE_TRACK";

/// `struct uffdio_range`.
#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_writeprotect`.
#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

const fn iowr(nr: u64, size: usize) -> libc::c_ulong {
    (0xC000_0000 | ((size as u64) << 16) | (0xAA << 8) | nr) as libc::c_ulong
}

const UFFDIO_WRITEPROTECT: libc::c_ulong = iowr(0x06, std::mem::size_of::<UffdioWriteprotect>());
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;
/// Write-protect shmem (a memfd's `MAP_PRIVATE` mapping is shmem-backed).
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;

/// The features asked of the process's userfaultfd (`memory::uffd_and_async`).
pub const FEATURES: u64 = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

/// The process's userfaultfd where it has asynchronous write-protect and tracking is not turned
/// off (`HL_RESTORE_WRITE_TRACK=0`).
fn uffd() -> Option<&'static OwnedFd> {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *OFF.get_or_init(|| std::env::var_os(WRITE_TRACK_ENV).is_some_and(|v| v == "0")) {
        return None;
    }
    match crate::memory::uffd_and_async() {
        Some((fd, true)) => Some(fd),
        _ => None,
    }
}

/// Whether regions can be write-tracked in this process (see the module's text).
#[cfg(test)]
pub fn available() -> bool {
    uffd().is_some()
}

/// Write-protects the pages `runs` (page indices) of the mapping `ptr..ptr + size`, which is
/// registered with the process's userfaultfd (`memory::fault_around_off`) and whose pages in
/// `runs` must hold the content the region is restored to (the snapshot's own pages, nothing
/// written since). No vCPU may run in the region meanwhile. Returns whether the region is
/// tracked; on a failure part-way every bit set here is cleared again (the caller then scans with
/// `PAGE_IS_FILE`).
pub fn track(ptr: *mut u8, size: u64, runs: &[(usize, usize)]) -> bool {
    let Some(fd) = uffd() else {
        return false;
    };
    let page = crate::memory::PAGE_SIZE;
    for &(start, end) in runs {
        if start >= end || end as u64 * page > size {
            continue;
        }
        if let Err(err) = protect(
            fd,
            ptr as u64 + start as u64 * page,
            (end - start) as u64 * page,
            true,
        ) {
            untrack(ptr, size);
            crate::trace::trace!("write tracking refused: {err}");
            return false;
        }
    }
    true
}

/// Clears every write-protect bit and marker in the mapping `ptr..ptr + size` (best effort).
pub fn untrack(ptr: *mut u8, size: u64) {
    if let Some(fd) = uffd() {
        let _ = protect(fd, ptr as u64, size, false);
    }
}

/// `UFFDIO_WRITEPROTECT` of `start..start + len` (inside a registered mapping of ours): sets the
/// write-protect bit of its pages (`on`), or clears it.
fn protect(fd: &OwnedFd, start: u64, len: u64, on: bool) -> io::Result<()> {
    let mut wp = UffdioWriteprotect {
        range: UffdioRange { start, len },
        mode: if on { UFFDIO_WRITEPROTECT_MODE_WP } else { 0 },
    };
    // SAFETY: `wp` is a valid uffdio_writeprotect for a range inside our registered mapping; it
    // changes page protection only, never content.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_WRITEPROTECT as _, &mut wp) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GuestMemory, PAGE_SIZE};
    use std::sync::Arc;

    const PAGES: usize = 64;

    /// A region of `PAGES` pages whose snapshot holds data in pages 1..=8 (page `p` starts with
    /// `p`), re-based on it; and the snapshot.
    fn based() -> (GuestMemory, Arc<crate::memory::MemorySnapshot>) {
        let memory = GuestMemory::new(0, PAGES as u64 * PAGE_SIZE).unwrap();
        for p in 1..=8 {
            bytes(&memory)[p * 4096] = p as u8;
        }
        let snap = Arc::new(memory.snapshot().unwrap());
        memory.rebase(&snap).unwrap();
        (memory, snap)
    }

    // The slice is guest memory seen as the VM sees it: written through while `memory` also
    // writes it (copy-back), as the VM and the host do; the tests run on one thread.
    #[allow(clippy::mut_from_ref)]
    fn bytes(memory: &GuestMemory) -> &mut [u8] {
        // SAFETY: the mapping is `size` bytes long and owned by `memory`, which outlives the
        // borrow; tests touch it from one thread.
        unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), memory.size() as usize) }
    }

    /// Whether the data pages and the holes in `holes` read as the snapshot. (Only those holes:
    /// a hole read is mapped without the write-protect bit, so a tracked restore would put it
    /// back too, which would change the counts the test checks.)
    fn as_snapshot(memory: &GuestMemory, holes: &[usize]) -> bool {
        let b = bytes(memory);
        (1..=8).chain(holes.iter().copied()).all(|p| {
            let page = &b[p * 4096..(p + 1) * 4096];
            page[0] == if (1..=8).contains(&p) { p as u8 } else { 0 }
                && page[1..].iter().all(|&x| x == 0)
        })
    }

    /// The VMA flags of the mapping at `ptr` (`VmFlags:` of /proc/self/smaps).
    fn vm_flags(ptr: *mut u8) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let start = format!("{:x}-", ptr as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        lines
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn a_region_based_on_a_snapshot_is_write_tracked_where_the_kernel_allows_it() {
        let (memory, snap) = based();
        let fresh = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        if !available() {
            println!("SKIPPED: no asynchronous userfaultfd write-protect here");
            assert!(!memory.write_tracked() && !fresh.write_tracked());
            return;
        }
        for m in [&memory, &fresh] {
            assert!(m.write_tracked());
            // `uw`: the kernel tracks the mapping for userfaultfd write-protect.
            assert!(vm_flags(m.host_ptr()).split_whitespace().any(|f| f == "uw"));
        }
        // Nothing written: nothing to put back (a scan with PAGE_IS_WRITTEN but no registration
        // would report all eight present data pages).
        assert_eq!(fresh.rebase(&snap).unwrap(), 0);
    }

    /// Runs the same writes on a tracked region and on one scanned with `PAGE_IS_FILE`: each
    /// restore must find exactly what changed since the snapshot, run after run.
    #[test]
    fn every_page_written_since_the_snapshot_is_put_back_run_after_run() {
        for tracked in [true, false] {
            let (memory, snap) = based();
            if !tracked {
                memory.stop_write_tracking();
            }
            let b = bytes(&memory);
            // Run 1: a data page, a hole.
            b[2 * 4096 + 5] = 0xaa;
            b[40 * 4096] = 0xbb;
            assert_eq!(memory.rebase(&snap).unwrap(), 2);
            assert!(as_snapshot(&memory, &[40]));
            // Run 2: only pages run 1 did not write — a data page, a hole, and a data page the
            // host's kernel writes on our behalf (a `read` into it: a write fault in the kernel).
            b[6 * 4096 + 100] = 0xcc;
            b[50 * 4096 + 7] = 0xdd;
            let mut pipe = [0; 2];
            // SAFETY: a new pipe into our 2-element array.
            assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
            // SAFETY: writes 4 bytes from a static buffer, then reads them into page 8, which
            // lies inside `memory`'s mapping.
            unsafe {
                assert_eq!(libc::write(pipe[1], b"wxyz".as_ptr().cast(), 4), 4);
                assert_eq!(
                    libc::read(pipe[0], b.as_mut_ptr().add(8 * 4096 + 9).cast(), 4),
                    4
                );
                libc::close(pipe[0]);
                libc::close(pipe[1]);
            }
            assert_eq!(b[8 * 4096 + 9], b'w');
            // Pages copied back in run 1 stay private: 2 + 3.
            assert_eq!(memory.rebase(&snap).unwrap(), 5, "tracked: {tracked}");
            assert!(as_snapshot(&memory, &[40, 50]), "tracked: {tracked}");
            // Run 3: pages dropped (as the Wasm guard's page-table clearing does) and written again.
            memory.drop_range(4096, 8 * 4096).unwrap();
            b[3 * 4096 + 1] = 0xee;
            memory.rebase(&snap).unwrap();
            assert!(as_snapshot(&memory, &[40, 50]), "tracked: {tracked}");
        }
    }
}
