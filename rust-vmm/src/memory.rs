//! Guest memory owned by the library: fresh memory is anonymous `MAP_PRIVATE` (`MADV_DONTNEED`
//! zeroes it again); memory based on a snapshot is the snapshot's memfd mapped `MAP_PRIVATE`, so
//! the guest's writes are private copies of the file's pages and `MADV_DONTNEED` drops them again.
//!
//! Snapshots (issue #9): `GuestMemory::snapshot` writes the region's non-zero pages into a new,
//! sealed memfd (sparse: untouched pages stay holes). `rebase` re-maps the region `MAP_PRIVATE |
//! MAP_FIXED` from a snapshot's memfd at the same host address (the KVM memslot's userspace address
//! does not change), after which a restore is one `MADV_DONTNEED` over the region: work in
//! proportion to the pages the guest dirtied since. `from_snapshot` maps a snapshot into a new VM
//! without copying. A region keeps the snapshot it is based on alive (`Arc`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;
/// Largest region one call may map. The mapping is `MAP_NORESERVE` and costs nothing until
/// touched, but a bigger request is almost certainly a unit mistake.
pub const MAX_REGION_SIZE: u64 = 16 << 30;
/// Highest guest-physical address (exclusive) a region may reach: 1 TiB, inside every x86-64
/// CPU's physical address width.
pub const MAX_GPA: u64 = 1 << 40;

/// An immutable copy of a region's content: a sealed memfd (holes where the region read zero)
/// and which of its pages hold data.
#[derive(Debug)]
pub struct MemorySnapshot {
    fd: OwnedFd,
    /// Where the content's page 0 is in `fd`: 0 for a memfd; a snapshot file's section for a
    /// snapshot mapped from that file ([`MemorySnapshot::from_file`]).
    offset: u64,
    size: u64,
    /// One bit per page: written (non-zero) in `fd`.
    pages: Vec<u64>,
    /// Number of pages written.
    pub data_pages: u64,
    /// The pages a guest started from this snapshot wrote (runs of page indices), learned from
    /// the first such region that wrote any (`learn_written`, at its restore or drop): a region
    /// made from the snapshot later gets them as private copies up front (`populate`).
    written: std::sync::OnceLock<Vec<(usize, usize)>>,
    /// The pages a region made from this snapshot had in its page tables (read or written by its
    /// guest or by the host), learned like `written` (`learn_touched`): a later region populates
    /// just these (with their data) read-only, not every data page, where fault-around is off
    /// for its mapping (`fault_around_off`; issue 19: RSS per idle sandbox).
    touched: std::sync::OnceLock<Vec<(usize, usize)>>,
    /// Whether `fd` is a memfd of ours, sealed: its content and length can never change, so a
    /// shared read-only mapping of it (`view`) can be read without a fault or a signal. False for a
    /// snapshot backed by a file ([`MemorySnapshot::from_file`]), which someone could truncate.
    sealed: bool,
    /// A read-only shared mapping of `fd`, made at the first restore that copies pages back
    /// (`GuestMemory::copy_back`), so that a restore copies with `memcpy` instead of one `pread`
    /// per run of pages. `None` inside when the mapping failed (restores then `pread`).
    view: std::sync::OnceLock<Option<SnapshotView>>,
    /// One read-only mapping of the content that every VM mapping this snapshot as code (with the
    /// hypervisor enforcing read-only) shares ([`GuestMemory::shared_code`]): made by the first,
    /// unmapped when the snapshot drops (each such region holds an `Arc` of it).
    shared: Mutex<Option<SharedView>>,
    /// Mappings of this snapshot left by regions made from it, put back to its content when their
    /// VM went (`GuestMemory::drop`), for the next region made from it (`from_snapshot`): a dispose
    /// then unmaps nothing and a create maps and populates nothing (issue 19: every `munmap` walks
    /// the MMU notifier of every live VM in the process). At most `spares_max()`; unmapped with
    /// the snapshot.
    spares: Mutex<Vec<Spare>>,
}

/// A private mapping of a snapshot (`MAP_PRIVATE` of its fd, `size` bytes) that no VM uses, whose
/// every private page holds the snapshot's content again: a region made from the snapshot can
/// take it as its own (`GuestMemory::from_snapshot`). Unmapped on drop.
#[derive(Debug)]
struct Spare {
    ptr: *mut u8,
    size: u64,
    /// Private pages it holds (counted in `SPARE_PAGES` while it is a spare).
    private: u64,
    /// Write-tracked (`write_track`): a region taking it is too.
    tracked: bool,
}

/// Private pages held by every snapshot's spares together: a spare is not kept beyond
/// `SPARE_PAGES_MAX` (64 MiB), so that spares of many snapshots cannot grow the process by more.
static SPARE_PAGES: AtomicU64 = AtomicU64::new(0);
const SPARE_PAGES_MAX: u64 = 16384;

impl Spare {
    /// The mapping, for a region to own from now on (it leaves the count; nothing is unmapped).
    fn into_ptr(self) -> *mut u8 {
        SPARE_PAGES.fetch_sub(self.private, Ordering::Relaxed);
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }
}

// SAFETY: the pointer is a mapping owned by this value alone (no VM maps it, nothing else points
// into it: the region that left it dropped); it is only unmapped in Drop or handed to one new
// region, so moving it between threads cannot race.
unsafe impl Send for Spare {}

impl Drop for Spare {
    fn drop(&mut self) {
        SPARE_PAGES.fetch_sub(self.private, Ordering::Relaxed);
        // SAFETY: unmapping exactly the mapping a dropped region left here; nothing uses it.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}

/// Most spare mappings a snapshot keeps (`HL_SNAPSHOT_SPARES`, default 4; `0` turns them off, for
/// an A/B). Read once.
pub const SPARES_ENV: &str = "HL_SNAPSHOT_SPARES";

fn spares_max() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var(SPARES_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(4, |n| n.min(64))
    })
}

/// A `PROT_READ`, `MAP_SHARED` mapping of a sealed snapshot memfd: the snapshot's own pages (page
/// cache shared with every VM based on it; no copy). Unmapped with the snapshot.
#[derive(Debug)]
struct SnapshotView {
    ptr: *const u8,
    len: usize,
}

// SAFETY: a read-only mapping of sealed (immutable) memory, unmapped only in Drop; reading it from
// any thread is sound.
unsafe impl Send for SnapshotView {}
// SAFETY: as above: nothing writes through it.
unsafe impl Sync for SnapshotView {}

impl Drop for SnapshotView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `MemorySnapshot::view`; no borrow of it
        // outlives the snapshot that owns this value.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// A snapshot's content mapped once, `PROT_READ` and `MAP_PRIVATE` (issue 19): per VM it would be
/// one more mapping in the process (which KVM_CREATE_VM walks, `mm_take_all_locks`), one more
/// `munmap` at dispose (which walks every live VM's MMU notifier) and its pages counted again in
/// the RSS. Nothing ever writes through it: the host maps it read-only, and the guests reach it
/// only through read-only memory slots. Unlike `SnapshotView` (for restores, sealed memfds only)
/// it is made for a snapshot backed by a file too: the host never reads it, and a guest's read of
/// a page lost to a truncation fails its run (`EFAULT`), not the process. A code snapshot is never
/// restored, so it never has both.
#[derive(Debug)]
struct SharedView {
    ptr: *mut u8,
    size: u64,
}

// SAFETY: the pointer is a read-only mapping owned by this value (unmapped only in Drop); it is
// never written through, so sharing it between threads cannot race.
unsafe impl Send for SharedView {}

impl Drop for SharedView {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `MemorySnapshot::shared_view`; it drops
        // with its snapshot, after every region viewing it (each holds an `Arc` of the snapshot).
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}

impl MemorySnapshot {
    /// The snapshot's content as memory (see `view`): `None` for a snapshot backed by a file or
    /// where the mapping fails.
    fn view(&self) -> Option<&SnapshotView> {
        if !self.sealed {
            return None;
        }
        self.view
            .get_or_init(|| {
                // SAFETY: a new read-only shared mapping of our own sealed memfd (F_SEAL_WRITE
                // allows read-only shared mappings); the result is checked.
                let ptr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        self.size as usize,
                        libc::PROT_READ,
                        libc::MAP_SHARED | libc::MAP_NORESERVE,
                        self.fd.as_raw_fd(),
                        self.offset as libc::off_t,
                    )
                };
                (ptr != libc::MAP_FAILED).then_some(SnapshotView {
                    ptr: ptr as *const u8,
                    len: self.size as usize,
                })
            })
            .as_ref()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn has(&self, page: usize) -> bool {
        self.pages[page / 64] & (1 << (page % 64)) != 0
    }

    /// The snapshot's one shared read-only mapping (see [`SharedView`]), made on first use with its
    /// data pages populated, so the first VM pays the page-table fill and later ones nothing.
    fn shared_view(&self) -> Result<*mut u8> {
        let mut view = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = view.as_ref() {
            return Ok(v.ptr);
        }
        // SAFETY: a new mapping of our own fd, read-only; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                self.size as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                self.fd.as_raw_fd(),
                self.offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os("mmap of shared code", io::Error::last_os_error()));
        }
        let ptr = ptr.cast::<u8>();
        populate_data_pages(ptr, self);
        *view = Some(SharedView {
            ptr,
            size: self.size,
        });
        Ok(ptr)
    }
}

impl MemorySnapshot {
    /// A snapshot holding `data` (zero-padded to whole pages): a sealed memfd, for content the
    /// host supplies rather than a VM wrote, such as a compiled Wasm artifact that every VM of
    /// one module maps read-only (`Vm::map_code`).
    pub fn from_bytes(data: &[u8]) -> Result<Self> {
        let size = (data.len() as u64).div_ceil(PAGE_SIZE).max(1) * PAGE_SIZE;
        GuestMemory::validate(0, size)?;
        let fd = sized_memfd(c"hl-code", size)?;
        write_all_at(&fd, data, 0)?;
        seal(&fd)?;
        let pages = (size / PAGE_SIZE) as usize;
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        for page in 0..pages {
            bitmap[page / 64] |= 1 << (page % 64);
        }
        Ok(Self {
            fd,
            offset: 0,
            size,
            pages: bitmap,
            data_pages: pages as u64,
            written: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            sealed: true,
            view: std::sync::OnceLock::new(),
            shared: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
        })
    }
}

/// Bytes copied per step when a snapshot's pages are written to or read from a file. 64 KiB, not
/// 1 MiB: glibc serves a buffer this size from its heap, where a 1 MiB one is a fresh `mmap` whose
/// 256 pages each fault on first touch, so a new process's first start-snapshot load (issue 20's
/// cold create: the memory pages, then the code image's CRC) paid ~3 ms more (measured on kvm_pvm,
/// AMD EPYC: 4.6 + 1.8 ms against 2.3 + 0.8 ms, 8 alternating pairs of fresh processes).
const FILE_CHUNK: usize = 1 << 16;

impl MemorySnapshot {
    /// One bit per page (bit `p % 64` of word `p / 64`): the page holds data.
    pub fn bitmap(&self) -> &[u64] {
        &self.pages
    }

    /// The runs `(first page, end page)` of pages holding data, in order.
    fn data_runs(&self) -> Vec<(usize, usize)> {
        runs_of(&self.pages, (self.size / PAGE_SIZE) as usize)
    }

    /// Writes the data pages, in page order and back to back (holes left out), to `file` at
    /// `offset`; returns the CRC-32 (IEEE) of the bytes written. Snapshot files (version 9,
    /// docs/snapshot-format.md) hold this with the bitmap beside it.
    pub fn write_pages(&self, file: &std::fs::File, offset: u64) -> Result<u32> {
        use std::os::unix::fs::FileExt;
        let memfd = std::fs::File::from(
            self.fd
                .try_clone()
                .map_err(|e| Error::os("dup of a snapshot", e))?,
        );
        let mut crc = crc32fast::Hasher::new();
        let mut buf = vec![0u8; FILE_CHUNK];
        let mut at = offset;
        for (start, end) in self.data_runs() {
            let mut from = start as u64 * PAGE_SIZE;
            let stop = end as u64 * PAGE_SIZE;
            while from < stop {
                let n = ((stop - from) as usize).min(FILE_CHUNK);
                memfd
                    .read_exact_at(&mut buf[..n], self.offset + from)
                    .map_err(|e| Error::os("reading a snapshot", e))?;
                crc.update(&buf[..n]);
                file.write_all_at(&buf[..n], at)
                    .map_err(|e| Error::os("writing a snapshot file", e))?;
                from += n as u64;
                at += n as u64;
            }
        }
        Ok(crc.finalize())
    }

    /// A snapshot of `size` bytes whose data pages (`bitmap`, as [`Self::bitmap`]) are read back
    /// to back from `file` at `offset` into a new sealed memfd (holes stay holes). Everything is
    /// checked before it is trusted: `size` as for a region, the bitmap's length and that no bit
    /// lies past the last page, the file's length (a short file is `INVALID_ARGUMENT`, not a
    /// fault: nothing is mapped from the file), and the CRC-32 of the pages read against `crc`.
    pub fn read_pages(
        file: &std::fs::File,
        offset: u64,
        size: u64,
        bitmap: &[u64],
        crc: u32,
    ) -> Result<Self> {
        use std::os::unix::fs::FileExt;
        if size == 0 {
            return Err(Error::invalid_argument("a snapshot's size must not be 0"));
        }
        GuestMemory::validate(0, size)?;
        let pages = (size / PAGE_SIZE) as usize;
        if bitmap.len() != pages.div_ceil(64) {
            return Err(Error::invalid_argument(format!(
                "the page bitmap has {} words, {} pages need {}",
                bitmap.len(),
                pages,
                pages.div_ceil(64)
            )));
        }
        if !pages.is_multiple_of(64) && bitmap[pages / 64] >> (pages % 64) != 0 {
            return Err(Error::invalid_argument(
                "the page bitmap marks pages past the end of the snapshot",
            ));
        }
        let data_pages: u64 = bitmap.iter().map(|w| u64::from(w.count_ones())).sum();
        let need = data_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|n| n.checked_add(offset))
            .ok_or_else(|| Error::invalid_argument("the page data's end overflows"))?;
        check_file_holds(file, need)?;
        let fd = sized_memfd(c"hl-guest-memory-snapshot", size)?;
        let memfd = std::fs::File::from(
            fd.try_clone()
                .map_err(|e| Error::os("dup of a snapshot", e))?,
        );
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; FILE_CHUNK];
        let mut at = offset;
        for (start, end) in runs_of(bitmap, pages) {
            let mut to = start as u64 * PAGE_SIZE;
            let stop = end as u64 * PAGE_SIZE;
            while to < stop {
                let n = ((stop - to) as usize).min(FILE_CHUNK);
                read_snapshot_file_at(file, &mut buf[..n], at)?;
                hasher.update(&buf[..n]);
                memfd
                    .write_all_at(&buf[..n], to)
                    .map_err(|e| Error::os("writing a snapshot", e))?;
                to += n as u64;
                at += n as u64;
            }
        }
        check_page_crc(hasher.finalize(), crc)?;
        drop(memfd);
        seal(&fd)?;
        Ok(Self {
            fd,
            offset: 0,
            size,
            pages: bitmap.to_vec(),
            data_pages,
            written: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            sealed: true,
            view: std::sync::OnceLock::new(),
            shared: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
        })
    }
}

impl MemorySnapshot {
    /// A snapshot whose every page holds data, backed by `file` itself from `offset` (page-aligned)
    /// for `size` bytes: no copy, VMs map the file's pages `MAP_PRIVATE` (they share its page
    /// cache). For a snapshot file's code image, which is dense. The pages are read once here to
    /// check them against `crc` (CRC-32) and the file's length is checked; a file truncated later
    /// makes a VM's access to a lost page fail (`KVM_RUN` returns `EFAULT`: an error, not a
    /// signal), and the host never reads these pages itself. The file must not be rewritten while
    /// the snapshot lives: whoever can write it chooses the guest's code (docs/snapshot-format.md).
    pub fn from_file(file: std::fs::File, offset: u64, size: u64, crc: u32) -> Result<Self> {
        Ok(Self::from_file_known(file, offset, size, crc, None)?.0)
    }

    /// [`Self::from_file`], but when `known` is the file's identity ([`file_identity`], taken
    /// from the open file itself) the pages are not read for their CRC-32: an earlier load of
    /// this very file checked them (the caller remembers that, under its own trust rule). Every
    /// other check stays (alignment, bounds, the file's length). Returns the snapshot, the
    /// identity to remember (`None` when the file changed while it was read: not remembered)
    /// and whether the pages were read.
    pub fn from_file_known(
        file: std::fs::File,
        offset: u64,
        size: u64,
        crc: u32,
        known: Option<FileIdentity>,
    ) -> Result<(Self, Option<FileIdentity>, bool)> {
        GuestMemory::validate(0, size)?;
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Error::invalid_argument(format!(
                "the section's offset {offset} is not page-aligned"
            )));
        }
        let end = offset
            .checked_add(size)
            .ok_or_else(|| Error::invalid_argument("the section's end overflows"))?;
        // The identity is taken before the pages are read: a write during or after the read
        // changes the ctime, so what is remembered never covers bytes that were not checked.
        let before = file_identity(&file)?;
        if before.size < end {
            return Err(Error::invalid_argument(format!(
                "the snapshot file is truncated: its pages end at byte {end}, the file has {}",
                before.size
            )));
        }
        let read = known != Some(before);
        let mut remember = Some(before);
        if read {
            let mut hasher = crc32fast::Hasher::new();
            let mut buf = vec![0u8; FILE_CHUNK];
            let mut at = offset;
            while at < end {
                let n = ((end - at) as usize).min(FILE_CHUNK);
                read_snapshot_file_at(&file, &mut buf[..n], at)?;
                hasher.update(&buf[..n]);
                at += n as u64;
            }
            check_page_crc(hasher.finalize(), crc)?;
            FILE_BYTES_CHECKED.fetch_add(size, std::sync::atomic::Ordering::Relaxed);
            if file_identity(&file)? != before {
                remember = None;
            }
        }
        let pages = (size / PAGE_SIZE) as usize;
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        for page in 0..pages {
            bitmap[page / 64] |= 1 << (page % 64);
        }
        let snap = Self {
            fd: OwnedFd::from(file),
            offset,
            size,
            pages: bitmap,
            data_pages: pages as u64,
            written: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            sealed: false,
            view: std::sync::OnceLock::new(),
            shared: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
        };
        Ok((snap, remember, read))
    }
}

/// Bytes of mapped snapshot files read to check their CRC-32 in this process
/// ([`MemorySnapshot::from_file_known`]): a firm count of what a remembered check saves.
pub static FILE_BYTES_CHECKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What identifies an open file's contents without reading them: device, inode, size and the
/// status-change time to the nanosecond. A write, truncation or `utimes` sets the ctime to now,
/// and an unprivileged writer cannot set it back; a rename over the path is another inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileIdentity {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_ctime` (seconds, as its two's-complement bits).
    pub ctime: u64,
    /// `st_ctime_nsec`.
    pub ctime_nsec: u64,
}

impl FileIdentity {
    /// The five words, in the order of the C ABI (`hl_snapshot_map_file_known`).
    pub fn words(&self) -> [u64; 5] {
        [self.dev, self.ino, self.size, self.ctime, self.ctime_nsec]
    }

    /// From the five words of [`Self::words`].
    pub fn from_words(w: [u64; 5]) -> Self {
        Self {
            dev: w[0],
            ino: w[1],
            size: w[2],
            ctime: w[3],
            ctime_nsec: w[4],
        }
    }
}

/// The identity of the open `file` (one `fstat`).
pub fn file_identity(file: &std::fs::File) -> Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = file
        .metadata()
        .map_err(|e| Error::os("fstat of a snapshot file", e))?;
    Ok(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        ctime: m.ctime() as u64,
        ctime_nsec: m.ctime_nsec() as u64,
    })
}

/// Reads `buf.len()` bytes of a snapshot file at `at`: a short file is an invalid argument (the
/// file is truncated), any other failure an OS error. For both ways of loading a snapshot file.
fn read_snapshot_file_at(file: &std::fs::File, buf: &mut [u8], at: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, at).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            Error::invalid_argument("the snapshot file is truncated")
        } else {
            Error::os("reading a snapshot file", e)
        }
    })
}

/// A snapshot file whose pages end at byte `end` must be at least that long.
fn check_file_holds(file: &std::fs::File, end: u64) -> Result<()> {
    let len = file
        .metadata()
        .map_err(|e| Error::os("fstat of a snapshot file", e))?
        .len();
    if len < end {
        return Err(Error::invalid_argument(format!(
            "the snapshot file is truncated: its pages end at byte {end}, the file has {len}"
        )));
    }
    Ok(())
}

/// The CRC-32 `got` over a snapshot file's pages against the `recorded` one from its header.
fn check_page_crc(got: u32, recorded: u32) -> Result<()> {
    if got != recorded {
        return Err(Error::invalid_argument(format!(
            "the snapshot file's page data is corrupt (CRC-32 {got:08x}, recorded {recorded:08x})"
        )));
    }
    Ok(())
}

/// The runs `(first, end)` of set bits among the first `pages` bits of `bitmap`.
fn runs_of(bitmap: &[u64], pages: usize) -> Vec<(usize, usize)> {
    let has = |p: usize| bitmap[p / 64] & (1 << (p % 64)) != 0;
    let mut runs = Vec::new();
    let mut page = 0;
    while page < pages {
        if !has(page) {
            page += 1;
            continue;
        }
        let start = page;
        while page < pages && has(page) {
            page += 1;
        }
        runs.push((start, page));
    }
    runs
}

/// What a region's mapping is a private view of.
#[derive(Debug)]
enum Backing {
    /// Nothing: fresh anonymous memory.
    Anonymous,
    /// A snapshot's memfd, kept alive by the region.
    Snapshot(Arc<MemorySnapshot>),
}

/// Regions that are anonymous memory now (no snapshot behind them): they have no name in
/// `/proc/self/maps` on kernels without `CONFIG_ANON_VMA_NAME`, so leak checks count them here.
pub static ANONYMOUS_REGIONS: AtomicU64 = AtomicU64::new(0);

/// Without `PAGEMAP_SCAN`, up to this many pages (32 MiB) a restore reads `/proc/self/pagemap`
/// to find the pages written since; above it, reading the map costs more than it saves (measured:
/// 256 MiB guest, 1 dirtied page: 594 µs against 146 µs for one `MADV_DONTNEED` over the
/// region), and the whole region is dropped at once. docs/design.md has the figures.
const SELECTIVE_RESET_MAX_PAGES: u64 = 8192;

/// Up to this many pages written since the last restore (2 MiB) are copied back in place rather
/// than dropped (see `GuestMemory::restore_private_pages`).
const COPY_BACK_MAX_PAGES: u64 = 512;

#[derive(Debug)]
pub struct GuestMemory {
    backing: Mutex<Backing>,
    ptr: *mut u8,
    size: u64,
    pub gpa: u64,
    /// `ptr` lies in the snapshot's shared read-only view (`shared_code`): not ours to unmap, and
    /// never reset or re-based (that would change every VM's code).
    shared: bool,
    /// The mapping is write-tracked (`write_track`): a restore scans for `PAGE_IS_WRITTEN`.
    tracked: std::sync::atomic::AtomicBool,
}

// SAFETY: the mapping is plain memory owned by this value; it is only unmapped in Drop, and
// concurrent access from the guest and the host is the documented contract of guest memory.
unsafe impl Send for GuestMemory {}
// SAFETY: as above; the struct itself holds no interior state besides the pointer.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Checks a request before anything is allocated.
    pub fn validate(gpa: u64, size: u64) -> Result<()> {
        if size == 0 {
            return Err(Error::invalid_argument(
                "memory size is 0: give a multiple of 4096",
            ));
        }
        if !size.is_multiple_of(PAGE_SIZE) {
            return Err(Error::invalid_argument(format!(
                "memory size {size} is not a multiple of the 4096-byte page size"
            )));
        }
        if size > MAX_REGION_SIZE {
            return Err(Error::invalid_argument(format!(
                "memory size {size} is larger than the {MAX_REGION_SIZE}-byte limit per region"
            )));
        }
        if !gpa.is_multiple_of(PAGE_SIZE) {
            return Err(Error::invalid_argument(format!(
                "guest address {gpa:#x} is not 4096-byte aligned"
            )));
        }
        match gpa.checked_add(size) {
            Some(end) if end <= MAX_GPA => Ok(()),
            _ => Err(Error::invalid_argument(format!(
                "region {gpa:#x}+{size:#x} ends beyond the guest address limit {MAX_GPA:#x}"
            ))),
        }
    }

    /// Fresh memory: anonymous and private, so a page the guest or host touches costs one host
    /// page (a `MAP_PRIVATE` memfd would cost two: the file's page and the private copy). Named
    /// `[anon:hl-guest-memory]` in `/proc/self/maps` where the kernel allows it.
    pub fn new(gpa: u64, size: u64) -> Result<Self> {
        Self::validate(gpa, size)?;
        // SAFETY: a new anonymous private mapping; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os(
                "mmap of guest memory",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: names our own fresh mapping (the name is copied by the kernel); best effort: a
        // kernel without CONFIG_ANON_VMA_NAME refuses, which changes nothing else.
        unsafe {
            libc::prctl(
                libc::PR_SET_VMA,
                libc::PR_SET_VMA_ANON_NAME,
                ptr as libc::c_ulong,
                size as libc::c_ulong,
                c"hl-guest-memory".as_ptr() as libc::c_ulong,
            );
        }
        ANONYMOUS_REGIONS.fetch_add(1, Ordering::Relaxed);
        Ok(Self {
            backing: Mutex::new(Backing::Anonymous),
            ptr: ptr.cast(),
            size,
            gpa,
            shared: false,
            tracked: false.into(),
        })
    }

    /// A new region at `gpa` that starts as a private (copy-on-write) view of `snap`: no copy. It
    /// takes one of the snapshot's spare mappings when there is one (already holding its content,
    /// its page tables filled), else maps and populates a new one.
    pub fn from_snapshot(gpa: u64, snap: Arc<MemorySnapshot>) -> Result<Self> {
        let size = snap.size;
        Self::validate(gpa, size)?;
        let spare = snap.spares.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (ptr, tracked) = match spare {
            // The region owns the mapping from here on (unmapped in its Drop).
            Some(spare) => {
                let tracked = spare.tracked;
                (spare.into_ptr(), tracked)
            }
            None => {
                let ptr =
                    map_private(std::ptr::null_mut(), size, snap.fd.as_raw_fd(), snap.offset)?;
                let registered = fault_around_off(ptr, size);
                populate(ptr, &snap, registered);
                (ptr, registered && track_clean_pages(ptr, &snap))
            }
        };
        Ok(Self {
            backing: Mutex::new(Backing::Snapshot(snap)),
            ptr,
            size,
            gpa,
            shared: false,
            tracked: tracked.into(),
        })
    }

    /// A region at `gpa` that views `snap`'s one read-only mapping, shared with every other VM
    /// that maps it so (issue 19): for code behind a read-only memory slot only, where the
    /// hypervisor refuses the guest's writes (`Vm::map_code` with `KVM_MEM_READONLY`), so that no
    /// VM can change what another one reads. It cannot be reset or re-based.
    pub fn shared_code(gpa: u64, snap: Arc<MemorySnapshot>) -> Result<Self> {
        let size = snap.size;
        Self::validate(gpa, size)?;
        let ptr = snap.shared_view()?;
        Ok(Self {
            backing: Mutex::new(Backing::Snapshot(snap)),
            ptr,
            size,
            gpa,
            shared: true,
            tracked: false.into(),
        })
    }

    /// Refuses `what` on a shared code region (it would change every VM's code).
    fn not_shared(&self, what: &str) -> Result<()> {
        if self.shared {
            return Err(Error::invalid_argument(format!(
                "cannot {what} the code region at {:#x}: every VM of its module shares it",
                self.gpa
            )));
        }
        Ok(())
    }

    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Whether a restore finds the written pages by the write-protect bit (`write_track`).
    pub fn write_tracked(&self) -> bool {
        self.tracked.load(Ordering::Relaxed)
    }

    /// Restores scan with `PAGE_IS_FILE` from now on, as where write tracking is unavailable: no
    /// page is write-protected any more (the registration stays, as for fault-around).
    #[cfg(test)]
    pub fn stop_write_tracking(&self) {
        self.tracked.store(false, Ordering::Relaxed);
        crate::write_track::untrack(self.ptr, self.size);
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn overlaps(&self, gpa: u64, size: u64) -> bool {
        gpa < self.gpa + self.size && self.gpa < gpa + size
    }

    /// Drops every private page: the next access sees the memfd's content (zeros) again.
    pub fn reset(&self) -> Result<()> {
        self.not_shared("reset")?;
        // SAFETY: the range is exactly our own mapping.
        let rc = unsafe { libc::madvise(self.ptr.cast(), self.size as usize, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(Error::os(
                "madvise(MADV_DONTNEED)",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Drops the private pages of `[offset, offset + len)` (page-aligned, inside the region): they
    /// read as the region's base content again (the snapshot it maps, or zeros), and KVM forgets
    /// every translation of them (its MMU notifier runs for the whole range, present pages or
    /// not). The host uses it after clearing page-table entries the guest may have used: a guest
    /// page table written from here is not write-tracked by KVM's shadow MMU, so a cleared entry
    /// alone can leave the old translation in use (docs/wasm.md, "Guard pages").
    pub fn drop_range(&self, offset: u64, len: u64) -> Result<()> {
        // Dropping a shared view's pages changes no content, but it makes KVM forget the code's
        // translations in every VM sharing it: not a request one VM gets to make.
        self.not_shared("drop pages of")?;
        let end = offset.checked_add(len);
        if !offset.is_multiple_of(PAGE_SIZE)
            || !len.is_multiple_of(PAGE_SIZE)
            || end.is_none_or(|e| e > self.size)
        {
            return Err(Error::invalid_argument(format!(
                "drop range {offset:#x}+{len:#x} is not page-aligned inside the {:#x}-byte region",
                self.size
            )));
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: `[offset, offset + len)` lies inside our own mapping (checked above).
        let rc = unsafe {
            libc::madvise(
                self.ptr.add(offset as usize).cast(),
                len as usize,
                libc::MADV_DONTNEED,
            )
        };
        if rc != 0 {
            return Err(Error::os(
                "madvise(MADV_DONTNEED)",
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Copies the region's content into a new sealed memfd, writing only non-zero pages. The
    /// pages looked at are those this process has a page-table entry for (`/proc/self/pagemap`:
    /// present or swapped: everything the guest or host wrote) and those of the snapshot the
    /// region is based on; every other page reads zero. The vCPU must not run meanwhile.
    pub fn snapshot(&self) -> Result<MemorySnapshot> {
        let pages = (self.size / PAGE_SIZE) as usize;
        let base = match &*self.backing.lock().unwrap_or_else(|p| p.into_inner()) {
            Backing::Snapshot(s) => Some(s.clone()),
            Backing::Anonymous => None,
        };
        let touched = page_table_entries(self.ptr, pages)?;
        let fd = sized_memfd(c"hl-guest-memory-snapshot", self.size)?;
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        let mut data_pages = 0u64;
        let mut run: Option<(usize, usize)> = None;
        let flush = |(start, end): (usize, usize)| -> Result<()> {
            let (off, stop) = (start * PAGE_SIZE as usize, end * PAGE_SIZE as usize);
            // SAFETY: `off..stop` lies inside our mapping (pages < size / PAGE_SIZE), which is
            // readable and stays mapped while this borrow lives (the vCPU is not running).
            let bytes = unsafe { std::slice::from_raw_parts(self.ptr.add(off), stop - off) };
            write_all_at(&fd, bytes, off)
        };
        for page in 0..pages {
            let candidate = touched[page] || base.as_ref().is_some_and(|b| b.has(page));
            let data = candidate && !self.page_is_zero(page);
            if data {
                bitmap[page / 64] |= 1 << (page % 64);
                data_pages += 1;
                run = Some(run.map_or((page, page + 1), |(s, _)| (s, page + 1)));
            } else if let Some(r) = run.take() {
                flush(r)?;
            }
        }
        if let Some(r) = run {
            flush(r)?;
        }
        seal(&fd)?;
        Ok(MemorySnapshot {
            fd,
            offset: 0,
            size: self.size,
            pages: bitmap,
            data_pages,
            written: std::sync::OnceLock::new(),
            touched: std::sync::OnceLock::new(),
            sealed: true,
            view: std::sync::OnceLock::new(),
            shared: Mutex::new(None),
            spares: Mutex::new(Vec::new()),
        })
    }

    fn page_is_zero(&self, page: usize) -> bool {
        // SAFETY: the page lies inside our readable mapping (page < size / PAGE_SIZE); it is
        // page-aligned, so aligned for u64. Racing guest writes are excluded by the caller.
        let words = unsafe {
            std::slice::from_raw_parts(
                self.ptr.add(page * PAGE_SIZE as usize).cast::<u64>(),
                PAGE_SIZE as usize / 8,
            )
        };
        words.iter().all(|&w| w == 0)
    }

    /// Makes the region a private view of `snap` again: one `MADV_DONTNEED` when it already is one
    /// (only the pages written since are dropped), else a `MAP_FIXED` re-map at the same address.
    /// The vCPU must not run meanwhile. Returns the number of pages put back: the private copies
    /// found and restored, or every page of the region when it was dropped or re-mapped whole.
    pub fn rebase(&self, snap: &Arc<MemorySnapshot>) -> Result<u64> {
        self.not_shared("re-base")?;
        if snap.size != self.size {
            return Err(Error::invalid_argument(format!(
                "the snapshot holds {} bytes, the memory region {}",
                snap.size, self.size
            )));
        }
        let mut backing = self.backing.lock().unwrap_or_else(|p| p.into_inner());
        if let Backing::Snapshot(current) = &*backing {
            if Arc::ptr_eq(current, snap) {
                return self.restore_private_pages(current);
            }
        }
        // A new mapping: any registration of the old one went with it.
        self.tracked.store(false, Ordering::Relaxed);
        map_private(self.ptr, self.size, snap.fd.as_raw_fd(), snap.offset)?;
        let registered = fault_around_off(self.ptr, self.size);
        populate(self.ptr, snap, registered);
        self.tracked.store(
            registered && track_clean_pages(self.ptr, snap),
            Ordering::Relaxed,
        );
        if matches!(*backing, Backing::Anonymous) {
            ANONYMOUS_REGIONS.fetch_sub(1, Ordering::Relaxed);
        }
        *backing = Backing::Snapshot(snap.clone());
        Ok(self.size / PAGE_SIZE)
    }
}

impl GuestMemory {
    /// Brings back just the pages that are private copies now (anonymous in `/proc/self/pagemap`,
    /// present or swapped: written since the re-base). Up to `COPY_BACK_MAX_PAGES` of them are
    /// overwritten in place with the snapshot's content (copied from its read-only view, or
    /// `pread` where it has none; zeros for its holes): they
    /// stay mapped, in the host and in KVM, so the next call does not fault them in again (on
    /// this host a fault after `MADV_DONTNEED` costs ~25 µs). More than that are dropped with
    /// `MADV_DONTNEED` (which also shrinks the working set again). Pages still shared with the
    /// snapshot are not touched either way.
    fn restore_private_pages(&self, snap: &MemorySnapshot) -> Result<u64> {
        let Some(runs) = self.private_runs()? else {
            return self.reset().map(|_| self.size / PAGE_SIZE);
        };
        if snap.written.get().is_none() {
            learn_written(snap, &self.written_only(snap, &runs));
        }
        learn_touched(snap, self.ptr);
        self.put_back(snap, &runs)
    }

    /// `runs` less the snapshot's holes that read zero in this region. A write-tracked restore
    /// reports a hole the guest only read (`write_track`), which was not written: the write set
    /// (`learn_written`) leaves such pages out, as it did when the scan reported private copies
    /// only, so later regions do not copy them up front.
    fn written_only(&self, snap: &MemorySnapshot, runs: &[(usize, usize)]) -> Vec<(usize, usize)> {
        let pages = (self.size / PAGE_SIZE).min(snap.size / PAGE_SIZE) as usize;
        let mut out: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
        for &(start, end) in runs {
            for page in start.min(pages)..end.min(pages) {
                if !self.write_tracked() || snap.has(page) || !self.page_is_zero(page) {
                    match out.last_mut() {
                        Some(last) if last.1 == page => last.1 = page + 1,
                        _ => out.push((page, page + 1)),
                    }
                }
            }
        }
        out
    }

    /// Puts the private pages `runs` back to `snap`'s content: copied back in place up to
    /// `COPY_BACK_MAX_PAGES`, dropped above. Returns the number of pages put back.
    fn put_back(&self, snap: &MemorySnapshot, runs: &[(usize, usize)]) -> Result<u64> {
        let count: usize = runs.iter().map(|(a, b)| b - a).sum();
        let copy_back = count as u64 <= COPY_BACK_MAX_PAGES;
        for &(start, end) in runs {
            if copy_back {
                // Runs of pages that all hold data in the snapshot, or all do not.
                let mut page = start;
                while page < end {
                    let data = snap.has(page);
                    let first = page;
                    while page < end && snap.has(page) == data {
                        page += 1;
                    }
                    self.copy_back(snap, first, page, data)?;
                }
                continue;
            }
            let at = start * PAGE_SIZE as usize;
            let len = (end - start) * PAGE_SIZE as usize;
            // SAFETY: the range lies inside our own mapping.
            let rc = unsafe { libc::madvise(self.ptr.add(at).cast(), len, libc::MADV_DONTNEED) };
            if rc != 0 {
                return Err(Error::os(
                    "madvise(MADV_DONTNEED)",
                    io::Error::last_os_error(),
                ));
            }
        }
        Ok(count as u64)
    }

    /// The runs `[start, end)` of pages (indices in the region) that are private copies now:
    /// anonymous, present or swapped. With the `PAGEMAP_SCAN` ioctl (Linux 6.7+) the kernel returns
    /// the runs; elsewhere `/proc/self/pagemap` is read entry by entry, up to
    /// `SELECTIVE_RESET_MAX_PAGES` (`None` above: drop the whole region instead).
    fn private_runs(&self) -> Result<Option<Vec<(usize, usize)>>> {
        let pages = (self.size / PAGE_SIZE) as usize;
        let written = self.tracked.load(Ordering::Relaxed);
        if let Some(runs) = pagemap_scan_private(self.ptr, self.size, written)? {
            return Ok(Some(runs));
        }
        if pages as u64 > SELECTIVE_RESET_MAX_PAGES {
            return Ok(None);
        }
        let private = page_table_entries_where(self.ptr, pages, |e| {
            let present_anon = e & (1 << 63) != 0 && e & (1 << 61) == 0;
            let swapped = e & (1 << 62) != 0;
            present_anon || swapped
        })?;
        let mut runs = Vec::new();
        let mut page = 0;
        while page < pages {
            if !private[page] {
                page += 1;
                continue;
            }
            let start = page;
            while page < pages && private[page] {
                page += 1;
            }
            runs.push((start, page));
        }
        Ok(Some(runs))
    }

    /// Overwrites pages `start..end` with the snapshot's content: its bytes when `data`, else zeros.
    /// A sealed snapshot's bytes are copied from its view (one `memcpy`; measured on this kvm_pvm
    /// host, a JsSandboxPool restore of 53 pages in 21 runs: the copy step ~90 → ~45 µs under
    /// load, against one `pread` per run); a snapshot backed by a file is read with `pread`, so a
    /// truncated file is an error, not a `SIGBUS`.
    fn copy_back(&self, snap: &MemorySnapshot, start: usize, end: usize, data: bool) -> Result<()> {
        let mut off = start * PAGE_SIZE as usize;
        let stop = end * PAGE_SIZE as usize;
        if !data {
            // SAFETY: `off..stop` lies inside our own writable mapping; the vCPU is idle.
            unsafe { std::ptr::write_bytes(self.ptr.add(off), 0, stop - off) };
            return Ok(());
        }
        if let Some(view) = snap.view() {
            // SAFETY: `off..stop` lies inside our own writable mapping and inside the view (both
            // are `size` bytes: `rebase` checked the sizes match); the view is a read-only mapping
            // of a sealed memfd, so it cannot change or shrink under the copy; the two mappings
            // do not overlap. The vCPU is idle (the caller checked).
            unsafe {
                std::ptr::copy_nonoverlapping(view.ptr.add(off), self.ptr.add(off), stop - off)
            };
            return Ok(());
        }
        while off < stop {
            // SAFETY: `off..stop` lies inside our own writable mapping; pread writes at most
            // `stop - off` bytes there. The vCPU is idle (the caller checked).
            let n = unsafe {
                libc::pread(
                    snap.fd.as_raw_fd(),
                    self.ptr.add(off).cast(),
                    stop - off,
                    (snap.offset + off as u64) as libc::off_t,
                )
            };
            if n == 0 {
                // A snapshot mapped from a file (`from_file`) whose file was truncated since.
                return Err(Error::invalid_argument(
                    "reading a snapshot back: its file was truncated",
                ));
            }
            if n < 0 {
                return Err(Error::os(
                    "reading a snapshot back",
                    io::Error::last_os_error(),
                ));
            }
            off += n as usize;
        }
        Ok(())
    }
}

/// `/proc/self/pagemap`, opened once per process: every restore reads it, and an open + close per
/// restore was measurable next to the rest of it. (A failure to open is not cached.)
fn pagemap() -> Result<&'static std::fs::File> {
    static PAGEMAP: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    if let Some(f) = PAGEMAP.get() {
        return Ok(f);
    }
    let f = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| Error::os("opening /proc/self/pagemap", e))?;
    Ok(PAGEMAP.get_or_init(|| f))
}

/// `struct page_region` of `linux/fs.h`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// `struct pm_scan_arg` of `linux/fs.h`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xC000_0000 | (96 << 16) | (0x66 << 8) | 16;
const PAGE_IS_WRITTEN: u64 = 1 << 1;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// The runs of anonymous (present or swapped) pages in `ptr..ptr+size`, as page indices, from the
/// `PAGEMAP_SCAN` ioctl; `None` where the kernel lacks it. For a write-tracked mapping
/// (`written`, see `write_track`): the pages without the write-protect bit instead, which the
/// kernel tells from the page-table entry alone (`PAGE_IS_FILE` looks up each present page).
fn pagemap_scan_private(
    ptr: *mut u8,
    size: u64,
    written: bool,
) -> Result<Option<Vec<(usize, usize)>>> {
    let file = pagemap()?;
    let base = ptr as u64;
    let end = base + size;
    let mut regions = [PageRegion::default(); 64];
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut at = base;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: if written { 0 } else { PAGE_IS_FILE },
            category_mask: if written {
                PAGE_IS_WRITTEN
            } else {
                PAGE_IS_FILE
            },
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Default::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `regions.len()` writable
        // page_region structs; the kernel writes at most that many and updates `walk_end`.
        let n = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(file),
                PAGEMAP_SCAN as _,
                &mut arg,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if runs.is_empty() && at == base {
                // ENOTTY/EINVAL: no PAGEMAP_SCAN on this kernel.
                return Ok(None);
            }
            return Err(Error::os("PAGEMAP_SCAN", err));
        }
        for r in &regions[..(n as usize).min(regions.len())] {
            let (s, e) = (
                ((r.start - base) / PAGE_SIZE) as usize,
                ((r.end - base) / PAGE_SIZE) as usize,
            );
            match runs.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => runs.push((s, e)),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(Some(runs))
}

/// Maps the snapshot's data pages into this process's page tables, read-only (shared with the
/// memfd, no copy: `MADV_POPULATE_READ`, Linux 5.14+), so that the guest's first touch of each does
/// not take a host page fault inside the KVM fault, and so that KVM can map neighbouring pages
/// along with a faulting one (it prefetches only pages the host has mapped). Holes are left alone:
/// populating them would allocate pages in the memfd. Best effort: where the kernel lacks it the
/// pages fault in on first touch as before. Measured (docs/design.md "Memory"): ~330 pages of the
/// Wasm runtime's snapshot read by the first call.
/// A new memfd named `name` (sealable, close-on-exec) of `size` bytes, all holes.
fn sized_memfd(name: &std::ffi::CStr, size: u64) -> Result<OwnedFd> {
    // SAFETY: a valid NUL-terminated name; the result is checked.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(Error::os("memfd_create", io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: plain syscall on the fd we own; the result is checked.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(Error::os(
            "ftruncate of a snapshot",
            io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// Writes all of `bytes` to `fd` at `offset`.
fn write_all_at(fd: &OwnedFd, bytes: &[u8], offset: usize) -> Result<()> {
    let mut done = 0usize;
    while done < bytes.len() {
        // SAFETY: `done..len` lies inside `bytes`; pwrite only reads it.
        let n = unsafe {
            libc::pwrite(
                fd.as_raw_fd(),
                bytes.as_ptr().add(done).cast(),
                bytes.len() - done,
                (offset + done) as libc::off_t,
            )
        };
        if n < 0 {
            return Err(Error::os("writing a snapshot", io::Error::last_os_error()));
        }
        if n == 0 {
            return Err(Error::os(
                "writing a snapshot",
                io::Error::new(io::ErrorKind::WriteZero, "pwrite wrote nothing"),
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// Seals `fd` against every change: writes, growing, shrinking, and further seals.
///
/// `F_SEAL_WRITE` fails with `EBUSY` while any of the file's pages holds a reference beyond the
/// page cache's and its mappings' (the kernel waits ~150 ms for them first). We hold no writable
/// shared mapping of a memfd we seal, so such references are the kernel's own and transient
/// (reclaim or migration isolating a page under memory pressure): seen once here, in a bench with
/// 1,000 live sandboxes beside a CI run. A few more tries, then the error.
fn seal(fd: &OwnedFd) -> Result<()> {
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    let mut tries = 0;
    loop {
        // SAFETY: plain fcntl on our own fd; the result is checked.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        tries += 1;
        if err.raw_os_error() != Some(libc::EBUSY) || tries == SEAL_TRIES {
            return Err(Error::os("sealing a snapshot", err));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How many times [`seal`] asks before it reports `EBUSY`.
const SEAL_TRIES: u32 = 4;

/// Most pages a snapshot's write set may hold (2 MiB): a create copies them all up front.
const WRITE_SET_MAX_PAGES: usize = 512;

/// `HL_SNAPSHOT_WRITE_SET=0`: no write sets (every page of a region made from a snapshot is
/// populated read-only, as before). Read once.
pub const WRITE_SET_ENV: &str = "HL_SNAPSHOT_WRITE_SET";

fn write_set_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(WRITE_SET_ENV).is_none_or(|v| v != "0"))
}

/// Records `runs` (pages a region based on `snap` holds as private copies: written by its guest)
/// as `snap`'s write set, if it has none yet and they are 1..=`WRITE_SET_MAX_PAGES` pages. Runs
/// past the snapshot's end are ignored.
fn learn_written(snap: &MemorySnapshot, runs: &[(usize, usize)]) {
    if !write_set_enabled() || snap.written.get().is_some() {
        return;
    }
    let pages = (snap.size / PAGE_SIZE) as usize;
    let runs: Vec<(usize, usize)> = runs
        .iter()
        .map(|&(a, b)| (a.min(pages), b.min(pages)))
        .filter(|(a, b)| a < b)
        .collect();
    let count: usize = runs.iter().map(|(a, b)| b - a).sum();
    if (1..=WRITE_SET_MAX_PAGES).contains(&count) {
        let _ = snap.written.set(runs);
    }
}

/// `HL_SNAPSHOT_FAULT_AROUND=1`: leave the kernel's fault-around on for mappings of snapshots
/// and populate every data page, as before issue 19's RSS pass (for an A/B). Read once.
pub const FAULT_AROUND_ENV: &str = "HL_SNAPSHOT_FAULT_AROUND";

/// `UFFD_USER_MODE_ONLY` (linux/userfaultfd.h): the only kind an unprivileged process may create
/// where `vm.unprivileged_userfaultfd` is 0. We never resolve a fault, so the mode changes nothing.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// `UFFD_API` and `_IOWR(0xAA, 0x3F, struct uffdio_api)` (24 bytes).
const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
/// `_IOWR(0xAA, 0x00, struct uffdio_register)` (32 bytes) and `UFFDIO_REGISTER_MODE_WP`.
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;

/// The process's one userfaultfd, made on first use; `None` where the kernel refuses it (no
/// `CONFIG_USERFAULTFD`, a seccomp filter) or `HL_SNAPSHOT_FAULT_AROUND=1`.
fn uffd() -> Option<&'static OwnedFd> {
    uffd_and_async().map(|(fd, _)| fd)
}

/// `uffd()`, and whether the kernel granted it asynchronous write-protect
/// (`write_track::FEATURES`, Linux 6.7+), which restores use to find written pages. Asked for
/// first; where refused, a second file without it (`UFFDIO_API` can be asked once per file).
pub(crate) fn uffd_and_async() -> Option<(&'static OwnedFd, bool)> {
    static FD: std::sync::OnceLock<Option<(OwnedFd, bool)>> = std::sync::OnceLock::new();
    FD.get_or_init(|| {
        if std::env::var_os(FAULT_AROUND_ENV).is_some_and(|v| v == "1") {
            return None;
        }
        for features in [crate::write_track::FEATURES, 0] {
            // SAFETY: plain syscall with flags only; the result is checked.
            let raw = unsafe {
                libc::syscall(
                    libc::SYS_userfaultfd,
                    libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
                )
            };
            if raw < 0 {
                return None;
            }
            // SAFETY: `raw` is a fresh fd that nothing else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw as libc::c_int) };
            let mut api = [UFFD_API, features, 0];
            // SAFETY: `api` is a `struct uffdio_api` (three u64) that the kernel reads and writes.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, api.as_mut_ptr()) };
            if rc == 0 {
                return Some((fd, features != 0));
            }
        }
        None
    })
    .as_ref()
    .map(|(fd, on)| (fd, *on))
}

/// Turns the kernel's fault-around off for the mapping `ptr..ptr+size` of a snapshot's memfd, and
/// says whether it did. A read fault on a file mapping otherwise maps up to 16 neighbouring pages
/// of the page cache with the faulting one (`fault_around_bytes`, 64 KiB, a global debugfs knob):
/// each sandbox's RSS then counts every 64 KiB window its guest touched, though those pages are
/// the snapshot's one shared copy. The kernel skips fault-around for a mapping registered with a
/// userfaultfd in write-protect mode (`uffd_disable_fault_around`, Linux 5.19+ for shmem); we
/// register it; pages it write-protects (`write_track`) are in asynchronous mode, which the
/// kernel resolves itself, so no fault ever reaches the userfaultfd and
/// nothing else changes. Best effort: `false` where the kernel refuses (older kernels, no
/// userfaultfd; a snapshot mapped from a file on a disk file system where the userfaultfd lacks
/// asynchronous write-protect, which lets Linux accept a write-protect-only registration on any
/// memory type); the caller then populates every data page, as the faults would map them anyway.
fn fault_around_off(ptr: *mut u8, size: u64) -> bool {
    let Some(fd) = uffd() else { return false };
    // `struct uffdio_register`: range { start, len }, mode, ioctls (out).
    let mut reg = [ptr as u64, size, UFFDIO_REGISTER_MODE_WP, 0];
    // SAFETY: `reg` is a `struct uffdio_register` the kernel reads and writes; the range is a
    // mapping this library owns. Registering changes no content and no page-table entry.
    unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, reg.as_mut_ptr()) == 0 }
}

/// Records the pages the region at `ptr` has in its page tables (present or swapped) as `snap`'s
/// touched set, if it has none yet and the region holds any. Read once per snapshot (a
/// `/proc/self/pagemap` read of the region's entries). Best effort.
fn learn_touched(snap: &MemorySnapshot, ptr: *mut u8) {
    if snap.touched.get().is_some() || uffd().is_none() {
        return;
    }
    let pages = (snap.size / PAGE_SIZE) as usize;
    let Ok(mapped) = page_table_entries(ptr, pages) else {
        return;
    };
    let mut runs = Vec::new();
    let mut page = 0;
    while page < pages {
        if !mapped[page] {
            page += 1;
            continue;
        }
        let start = page;
        while page < pages && mapped[page] {
            page += 1;
        }
        runs.push((start, page));
    }
    if !runs.is_empty() {
        let _ = snap.touched.set(runs);
    }
}

/// Fills the page tables of a fresh private mapping of `snap` at `ptr`: first its write set
/// writable (`MADV_POPULATE_WRITE`: each page copied now, as a fault on a page not mapped yet),
/// then data pages read-only (`MADV_POPULATE_READ`: shared with the memfd, no copy): with
/// fault-around on, every one (a fault would map its neighbours anyway); with it off
/// (`no_fault_around`), the snapshot's touched set, or none until one is learned.
/// A write to a page mapped read-only is a copy-on-write break, which makes the kernel walk the
/// MMU notifier of every live VM in the process (~0.8 µs each on kvm_pvm, docs/design.md
/// "Scale"); a page that was not mapped yet is copied with no such walk. Best effort: a failed
/// populate leaves pages to be faulted in by the guest.
fn populate(ptr: *mut u8, snap: &MemorySnapshot, no_fault_around: bool) {
    if let Some(runs) = snap.written.get() {
        let pages = (snap.size / PAGE_SIZE) as usize;
        for &(start, end) in runs {
            if start >= end || end > pages {
                continue;
            }
            // SAFETY: the range lies inside the mapping of `snap`'s memfd at `ptr` (end <= size /
            // PAGE_SIZE), which is private and writable: populating it for write gives each page
            // a private copy of the memfd's content (or zeros for a hole) and changes no content.
            unsafe {
                libc::madvise(
                    ptr.add(start * PAGE_SIZE as usize).cast(),
                    (end - start) * PAGE_SIZE as usize,
                    libc::MADV_POPULATE_WRITE,
                );
            }
        }
    }
    if !no_fault_around {
        populate_data_pages(ptr, snap);
    } else if let Some(runs) = snap.touched.get() {
        populate_touched(ptr, snap, runs);
    }
}

/// Populates read-only the pages of `runs` that hold data in `snap` (holes are left alone:
/// populating one would allocate a page in the memfd).
fn populate_touched(ptr: *mut u8, snap: &MemorySnapshot, runs: &[(usize, usize)]) {
    let pages = (snap.size / PAGE_SIZE) as usize;
    for &(start, end) in runs {
        let mut page = start.min(pages);
        let end = end.min(pages);
        while page < end {
            if !snap.has(page) {
                page += 1;
                continue;
            }
            let first = page;
            while page < end && snap.has(page) {
                page += 1;
            }
            // SAFETY: as in `populate_data_pages`: inside the mapping, every page holds data in
            // the memfd; populating only fills page tables and changes no content.
            unsafe {
                libc::madvise(
                    ptr.add(first * PAGE_SIZE as usize).cast(),
                    (page - first) * PAGE_SIZE as usize,
                    libc::MADV_POPULATE_READ,
                );
            }
        }
    }
}

/// Write-tracks a mapping of `snap` at `ptr` just made and populated (`write_track::track`):
/// write-protects its data pages outside the write set, which are still the memfd's own pages
/// (the write set's were copied, and are written by the next call anyway). Returns whether the
/// mapping is tracked.
fn track_clean_pages(ptr: *mut u8, snap: &MemorySnapshot) -> bool {
    let pages = (snap.size / PAGE_SIZE) as usize;
    let mut clean = snap.pages.clone();
    if let Some(runs) = snap.written.get() {
        for &(start, end) in runs {
            for page in start..end.min(pages) {
                clean[page / 64] &= !(1 << (page % 64));
            }
        }
    }
    crate::write_track::track(ptr, snap.size, &runs_of(&clean, pages))
}

fn populate_data_pages(ptr: *mut u8, snap: &MemorySnapshot) {
    let pages = (snap.size / PAGE_SIZE) as usize;
    let mut page = 0;
    while page < pages {
        if !snap.has(page) {
            page += 1;
            continue;
        }
        let start = page;
        while page < pages && snap.has(page) {
            page += 1;
        }
        // SAFETY: the range lies inside the mapping of `snap`'s memfd at `ptr` (page < size /
        // PAGE_SIZE), and every page in it holds data in the memfd (no allocation); populating only
        // fills page tables and changes no content.
        let rc = unsafe {
            libc::madvise(
                ptr.add(start * PAGE_SIZE as usize).cast(),
                (page - start) * PAGE_SIZE as usize,
                libc::MADV_POPULATE_READ,
            )
        };
        if rc != 0 {
            return;
        }
    }
}

/// Maps `fd` `MAP_PRIVATE` read/write: at `at` (`MAP_FIXED`, replacing what is there) or anywhere.
fn map_private(at: *mut u8, size: u64, fd: libc::c_int, offset: u64) -> Result<*mut u8> {
    let fixed = if at.is_null() { 0 } else { libc::MAP_FIXED };
    // SAFETY: either a new mapping, or (MAP_FIXED) one that replaces exactly a region this library
    // owns (the caller's own mapping, same size); the result is checked.
    let ptr = unsafe {
        libc::mmap(
            at.cast(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_NORESERVE | fixed,
            fd,
            offset as libc::off_t,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Error::os("mmap of a snapshot", io::Error::last_os_error()));
    }
    Ok(ptr.cast())
}

/// Which of the `pages` pages from `ptr` have a page-table entry in this process (present or
/// swapped), from `/proc/self/pagemap`. Not a write-protect marker (swap entry with
/// `PM_UFFD_WP`, bit 57: left on a snapshot page not mapped yet, `write_track`): that page was
/// never touched (a swapped page of ours never carries the bit: only the snapshot's own pages are
/// write-protected, and those leave a marker, not a swap entry, when unmapped).
fn page_table_entries(ptr: *mut u8, pages: usize) -> Result<Vec<bool>> {
    page_table_entries_where(ptr, pages, |e| {
        e & (1 << 63) != 0 || (e & (1 << 62) != 0 && e & (1 << 57) == 0)
    })
}

/// `/proc/self/pagemap`'s entries of the `pages` pages from `ptr`, mapped through `pick`.
fn page_table_entries_where(
    ptr: *mut u8,
    pages: usize,
    pick: impl Fn(u64) -> bool,
) -> Result<Vec<bool>> {
    use std::os::unix::fs::FileExt;
    let file = pagemap()?;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 * 4096];
    let first = ptr as u64 / PAGE_SIZE;
    let mut done = 0usize;
    while done < pages {
        let n = (pages - done).min(4096);
        let bytes = &mut buf[..n * 8];
        file.read_exact_at(bytes, (first + done as u64) * 8)
            .map_err(|e| Error::os("reading /proc/self/pagemap", e))?;
        for entry in bytes.chunks_exact(8) {
            let mut a = [0u8; 8];
            a.copy_from_slice(entry);
            out.push(pick(u64::from_le_bytes(a)));
        }
        done += n;
    }
    Ok(out)
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        if self.shared {
            // A view of the snapshot's shared mapping, which drops with the snapshot.
            return;
        }
        let backing = self.backing.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(*backing, Backing::Anonymous) {
            ANONYMOUS_REGIONS.fetch_sub(1, Ordering::Relaxed);
        }
        let snap = match &*backing {
            Backing::Snapshot(snap) => Some(snap.clone()),
            Backing::Anonymous => None,
        };
        if let Some(snap) = snap {
            let learn = snap.written.get().is_none() && write_set_enabled();
            // The backing's `Arc` and `snap`: anyone else's means the snapshot outlives this
            // region, so a spare can serve a later one.
            let spare = Arc::strong_count(&snap) > 2
                && snap.spares.lock().unwrap_or_else(|p| p.into_inner()).len() < spares_max();
            // One PAGEMAP_SCAN ioctl (or a pagemap read).
            let runs = if learn || spare {
                self.private_runs().ok().flatten()
            } else {
                None
            };
            learn_touched(&snap, self.ptr);
            if let Some(runs) = runs {
                if learn {
                    learn_written(&snap, &self.written_only(&snap, &runs));
                }
                let count: usize = runs.iter().map(|(a, b)| b - a).sum();
                // Only what a copy-back restores (more would be a `MADV_DONTNEED`, itself an
                // invalidation like the `munmap`): the mapping then reads exactly as the snapshot.
                let private = count as u64;
                if spare
                    && private <= COPY_BACK_MAX_PAGES
                    && SPARE_PAGES.load(Ordering::Relaxed) + private <= SPARE_PAGES_MAX
                    && self.put_back(&snap, &runs).is_ok()
                {
                    let mut spares = snap.spares.lock().unwrap_or_else(|p| p.into_inner());
                    if spares.len() < spares_max() {
                        SPARE_PAGES.fetch_add(private, Ordering::Relaxed);
                        spares.push(Spare {
                            ptr: self.ptr,
                            size: self.size,
                            private,
                            tracked: self.tracked.load(Ordering::Relaxed),
                        });
                        return;
                    }
                }
            }
        }
        // SAFETY: unmapping exactly the mapping created in `new`; nothing uses it after drop.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    /// A new empty file, read-write, already unlinked (it goes with the handle).
    fn scratch_file(name: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }

    #[test]
    fn requests_are_checked_before_anything_is_allocated() {
        let err = |gpa, size| GuestMemory::validate(gpa, size).unwrap_err().message;
        assert!(err(0, 0).contains("size is 0"));
        assert!(err(0, 4095).contains("multiple of the 4096"));
        assert!(err(0x123, 4096).contains("not 4096-byte aligned"));
        assert!(err(0, MAX_REGION_SIZE + PAGE_SIZE).contains("limit per region"));
        assert!(err(MAX_GPA - PAGE_SIZE, 2 * PAGE_SIZE).contains("address limit"));
        assert!(err(u64::MAX - 4095, 4096).contains("address limit"));
        assert!(GuestMemory::validate(0x1000, 2 << 20).is_ok());
    }

    #[test]
    fn a_snapshot_from_bytes_holds_them_sealed_and_padded() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let snap = Arc::new(MemorySnapshot::from_bytes(&data).unwrap());
        assert_eq!(snap.size(), 2 * PAGE_SIZE);
        // SAFETY: plain fcntl on the snapshot's own fd.
        let seals = unsafe { libc::fcntl(snap.fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        let region = GuestMemory::from_snapshot(0x10_0000, snap).unwrap();
        // SAFETY: the mapping is 2 pages long and owned by `region`.
        let bytes = unsafe { std::slice::from_raw_parts(region.host_ptr(), 8192) };
        assert_eq!(&bytes[..5000], &data[..]);
        assert!(bytes[5000..].iter().all(|&b| b == 0), "zero padding");
        assert!(MemorySnapshot::from_bytes(&[]).is_ok_and(|s| s.size() == PAGE_SIZE));
    }

    /// A snapshot written to a file and read back holds the same pages (holes stay holes); a
    /// changed byte, a short file or a bitmap past the end is refused, never mapped.
    #[test]
    fn snapshot_pages_round_trip_through_a_file_and_tampering_is_refused() {
        use std::os::unix::fs::FileExt;
        let memory = GuestMemory::new(0, 8 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 8 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 8 * 4096) };
        bytes[0] = 1;
        bytes[3 * 4096 + 7] = 3;
        bytes[4 * 4096 + 9] = 4;
        let snap = memory.snapshot().unwrap();
        assert_eq!(snap.data_pages, 3);
        let file = scratch_file("hl-snap-test");
        let crc = snap.write_pages(&file, 4096).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4096 + 3 * 4096);
        let back =
            MemorySnapshot::read_pages(&file, 4096, snap.size(), snap.bitmap(), crc).unwrap();
        assert_eq!((back.data_pages, back.bitmap()), (3, snap.bitmap()));
        let region = GuestMemory::from_snapshot(0, Arc::new(back)).unwrap();
        // SAFETY: the mapping is 8 pages long and owned by `region`.
        let got = unsafe { std::slice::from_raw_parts(region.host_ptr(), 8 * 4096) };
        assert_eq!(got, &bytes[..]);
        // read_pages refuses each of these with a message that says `why`.
        let refused = |offset: u64, size: u64, bitmap: &[u64], crc: u32, why: &str| {
            let message = MemorySnapshot::read_pages(&file, offset, size, bitmap, crc)
                .unwrap_err()
                .message;
            assert!(message.contains(why), "{message} lacks {why}");
        };
        refused(4096, snap.size(), snap.bitmap(), crc ^ 1, "corrupt");
        refused(4096, snap.size(), &[1 << 9], crc, "past the end");
        refused(4096, snap.size(), &[], crc, "bitmap");
        refused(4096, 100, snap.bitmap(), crc, "multiple");
        file.write_all_at(&[9], 4096 + 5).unwrap();
        refused(4096, snap.size(), snap.bitmap(), crc, "corrupt");
        file.set_len(4096 + 2 * 4096 + 10).unwrap();
        refused(4096, snap.size(), snap.bitmap(), crc, "truncated");
        refused(u64::MAX - 10, snap.size(), snap.bitmap(), crc, "overflows");
    }

    /// Runs of data pages longer than one copy step (`FILE_CHUNK`), and steps that end inside a
    /// run, come back byte for byte through a file, on both ways of reading it (copied pages and
    /// a dense section mapped in place).
    #[test]
    fn runs_longer_than_one_copy_step_round_trip_through_a_file() {
        let pages = 3 * FILE_CHUNK as u64 / PAGE_SIZE + 8;
        let memory = GuestMemory::new(0, pages * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is `pages` pages long and owned by `memory`.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(memory.host_ptr(), (pages * PAGE_SIZE) as usize)
        };
        // Page 0, a hole, then one run of all but the last 2 pages (more than two steps long).
        for (i, b) in bytes.iter_mut().enumerate() {
            let page = i as u64 / PAGE_SIZE;
            if page == 0 || (2..pages - 2).contains(&page) {
                *b = (i % 251) as u8 | 1;
            }
        }
        let snap = memory.snapshot().unwrap();
        assert_eq!(snap.data_pages, pages - 3);
        let file = scratch_file("hl-snap-chunks");
        let crc = snap.write_pages(&file, 4096).unwrap();
        let back =
            MemorySnapshot::read_pages(&file, 4096, snap.size(), snap.bitmap(), crc).unwrap();
        let region = GuestMemory::from_snapshot(0, Arc::new(back)).unwrap();
        // SAFETY: the mapping is `pages` pages long and owned by `region`.
        let got =
            unsafe { std::slice::from_raw_parts(region.host_ptr(), (pages * PAGE_SIZE) as usize) };
        assert!(got == &bytes[..], "the copied pages differ");
        // The run alone, as a dense section: its CRC is checked in steps too.
        let run = (pages - 4) * PAGE_SIZE;
        let dense = MemorySnapshot::from_file(file.try_clone().unwrap(), 2 * 4096, run, {
            let mut h = crc32fast::Hasher::new();
            h.update(&bytes[(2 * PAGE_SIZE) as usize..(2 * PAGE_SIZE + run) as usize]);
            h.finalize()
        });
        assert!(dense.is_ok(), "{:?}", dense.err());
    }

    /// A dense section mapped from the file reads as the file; a wrong CRC or a short file is
    /// refused.
    #[test]
    fn a_snapshot_mapped_from_a_file_reads_its_pages() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("hl-snap-map-{}", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 253) as u8).collect();
        file.write_all(&[7u8; 4096]).unwrap();
        file.write_all(&data).unwrap();
        drop(file);
        let open = || std::fs::File::open(&path).unwrap();
        let crc = crc32fast::hash(&data);
        let snap = MemorySnapshot::from_file(open(), 4096, 3 * 4096, crc).unwrap();
        assert_eq!(snap.data_pages, 3);
        let region = GuestMemory::from_snapshot(0, Arc::new(snap)).unwrap();
        // SAFETY: the mapping is 3 pages long and owned by `region`.
        let got = unsafe { std::slice::from_raw_parts(region.host_ptr(), 3 * 4096) };
        assert_eq!(got, &data[..]);
        let err = |r: Result<MemorySnapshot>| r.unwrap_err().message;
        assert!(
            err(MemorySnapshot::from_file(open(), 4096, 3 * 4096, crc ^ 1)).contains("corrupt")
        );
        assert!(err(MemorySnapshot::from_file(open(), 4096, 4 * 4096, crc)).contains("truncated"));
        assert!(err(MemorySnapshot::from_file(open(), 100, 4096, crc)).contains("aligned"));
        std::fs::remove_file(&path).unwrap();
    }

    /// A dense section whose file identity matches the remembered one is not read for its CRC;
    /// a file written, truncated or touched since (its ctime changes) is read and checked again,
    /// and a corrupt one is refused; a wrong remembered identity is ignored.
    #[test]
    fn a_remembered_check_skips_the_read_only_for_the_same_file() {
        use std::io::Write;
        use std::os::unix::fs::FileExt;
        let path = std::env::temp_dir().join(format!("hl-snap-known-{}", std::process::id()));
        let mut file = std::fs::File::create(&path).unwrap();
        let data: Vec<u8> = (0..2 * 4096u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&data).unwrap();
        drop(file);
        let open = || std::fs::File::open(&path).unwrap();
        let crc = crc32fast::hash(&data);
        let load = |known| MemorySnapshot::from_file_known(open(), 0, 2 * 4096, crc, known);
        let (_, id, read) = load(None).unwrap();
        let id = id.expect("an unchanged file's identity is returned");
        assert!(read);
        assert_eq!(id.size, 2 * 4096);
        // The same file: not read (the corrupt CRC below would be refused if it were).
        let (_, again, read) =
            MemorySnapshot::from_file_known(open(), 0, 2 * 4096, crc ^ 1, Some(id)).unwrap();
        assert!(!read);
        assert_eq!(again, Some(id));
        // Another identity: read and checked.
        let other = FileIdentity {
            ino: id.ino ^ 1,
            ..id
        };
        let (_, _, read) = load(Some(other)).unwrap();
        assert!(read);
        // Still refused when it is too short, remembered or not.
        let short = MemorySnapshot::from_file_known(open(), 0, 3 * 4096, crc, Some(id));
        assert!(short.unwrap_err().message.contains("truncated"));
        // The bytes changed in place (same size, inode and device): the ctime moved, so the
        // remembered identity no longer matches and the corruption is found.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rw.write_all_at(&[0xee], 4096).unwrap();
        drop(rw);
        let changed = load(Some(id));
        assert!(changed.unwrap_err().message.contains("corrupt"));
        std::fs::remove_file(&path).unwrap();
    }

    /// Regions viewing a snapshot as shared code use its one mapping, read-only; they refuse a
    /// reset or a re-base (either would change the code of every VM sharing it) and a page drop
    /// (it would make every such VM's hypervisor forget the code's translations), and the mapping
    /// goes with the snapshot.
    #[test]
    fn shared_code_regions_view_one_read_only_mapping() {
        let snap = Arc::new(MemorySnapshot::from_bytes(&[0x90; 5000]).unwrap());
        let a = GuestMemory::shared_code(0x10_0000, snap.clone()).unwrap();
        let b = GuestMemory::shared_code(0x20_0000, snap.clone()).unwrap();
        assert_eq!(a.host_ptr(), b.host_ptr());
        // SAFETY: the view is 2 pages long and lives while `a` does.
        let bytes = unsafe { std::slice::from_raw_parts(a.host_ptr(), 8192) };
        assert_eq!((bytes[0], bytes[4999], bytes[5000]), (0x90, 0x90, 0));
        let mapping = || {
            let at = format!("{:x}-", a.host_ptr() as usize);
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .find(|l| l.starts_with(&at))
                .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
        };
        assert_eq!(mapping().as_deref(), Some("r--p"));
        assert!(a.reset().unwrap_err().message.contains("shares it"));
        assert!(b.rebase(&snap).unwrap_err().message.contains("shares it"));
        let dropped = a.drop_range(0, PAGE_SIZE).unwrap_err();
        assert_eq!(dropped.code, Code::InvalidArgument);
        assert!(dropped.message.contains("shares it"));
        let ptr = a.host_ptr() as usize;
        drop((a, b, snap));
        let at = format!("{ptr:x}-");
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(
            !maps
                .lines()
                .any(|l| l.starts_with(&at) && l.contains("hl-code")),
            "unmapped with the snapshot"
        );
    }

    /// A region dropped while its snapshot lives leaves its mapping, put back to the snapshot's
    /// content, to the next region made from the snapshot (no `munmap` at the drop, no `mmap` or
    /// populate at the create); one with more written pages than a copy-back restores, or whose
    /// snapshot goes with it, is unmapped; the snapshot keeps at most `spares_max()` and unmaps
    /// them when it goes.
    #[test]
    fn a_dropped_region_leaves_its_mapping_restored_to_the_next_region_of_its_snapshot() {
        let pages = 1024usize;
        let memory = GuestMemory::new(0, pages as u64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is `pages` pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), pages * 4096) };
        bytes[3 * 4096] = 3;
        bytes[4 * 4096 + 5] = 4;
        let snap = Arc::new(memory.snapshot().unwrap());
        drop(memory);
        let view = |m: &GuestMemory| {
            // SAFETY: `m` maps `pages` pages and lives while the slice is used.
            unsafe { std::slice::from_raw_parts_mut(m.host_ptr(), pages * 4096) }
        };
        let first = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        let at = first.host_ptr();
        view(&first)[3 * 4096] = 0xaa; // a data page
        view(&first)[100 * 4096 + 7] = 0xbb; // a hole
        drop(first);
        assert_eq!(snap.spares.lock().unwrap().len(), 1);
        let second = GuestMemory::from_snapshot(0x1000_0000, snap.clone()).unwrap();
        assert_eq!(second.host_ptr(), at, "the spare is reused");
        assert!(snap.spares.lock().unwrap().is_empty());
        let b = view(&second);
        assert_eq!((b[3 * 4096], b[4 * 4096 + 5], b[100 * 4096 + 7]), (3, 4, 0));
        assert!(
            b.chunks(4096)
                .enumerate()
                .all(|(p, page)| page.iter().all(|&x| x == 0) || p == 3 || p == 4),
            "every other page reads zero"
        );
        // Too many written pages for a copy-back: unmapped, not kept.
        for p in 0..pages {
            b[p * 4096 + 1] = 0xee;
        }
        drop(second);
        assert!(snap.spares.lock().unwrap().is_empty());
        // At most `spares_max()` are kept, and they go with the snapshot.
        let regions: Vec<_> = (0..spares_max() + 2)
            .map(|_| GuestMemory::from_snapshot(0, snap.clone()).unwrap())
            .collect();
        let ptrs: Vec<usize> = regions.iter().map(|r| r.host_ptr() as usize).collect();
        drop(regions);
        assert_eq!(snap.spares.lock().unwrap().len(), spares_max());
        let mapped = |ptr: usize| {
            let at = format!("{ptr:x}-");
            std::fs::read_to_string("/proc/self/maps")
                .unwrap()
                .lines()
                .any(|l| l.starts_with(&at))
        };
        assert_eq!(ptrs.iter().filter(|&&p| mapped(p)).count(), spares_max());
        // The last holder of its snapshot leaves nothing behind.
        let last = GuestMemory::from_snapshot(0, snap).unwrap();
        drop(last);
        assert!(
            ptrs.iter().all(|&p| !mapped(p)),
            "unmapped with the snapshot"
        );
    }

    #[test]
    fn a_dropped_range_reads_its_base_content_and_bad_ranges_are_refused() {
        let mem = GuestMemory::new(0, 4 * PAGE_SIZE).unwrap();
        let bytes = mem.host_ptr();
        // SAFETY: four pages of our own mapping.
        let page = |i: usize| unsafe { *bytes.add(i * PAGE_SIZE as usize) };
        for i in 0..4 {
            // SAFETY: as above.
            unsafe { *bytes.add(i * PAGE_SIZE as usize) = 7 };
        }
        mem.drop_range(PAGE_SIZE, 2 * PAGE_SIZE).unwrap();
        assert_eq!([page(0), page(1), page(2), page(3)], [7, 0, 0, 7]);
        mem.drop_range(4 * PAGE_SIZE, 0).unwrap();
        for (offset, len) in [
            (1, PAGE_SIZE),
            (0, 5 * PAGE_SIZE),
            (4 * PAGE_SIZE, PAGE_SIZE),
        ] {
            let err = mem.drop_range(offset, len).unwrap_err();
            assert_eq!(err.code, Code::InvalidArgument, "{offset:#x}+{len:#x}");
        }
        assert!(mem.drop_range(PAGE_SIZE, u64::MAX - PAGE_SIZE + 1).is_err());
    }

    #[test]
    fn memory_reads_zero_after_reset() {
        let memory = GuestMemory::new(0, 2 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 2 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 8192) };
        bytes[0] = 7;
        bytes[8191] = 9;
        memory.reset().unwrap();
        assert_eq!((bytes[0], bytes[8191]), (0, 0));
    }

    #[test]
    fn snapshots_are_sparse_and_rebase_brings_content_back() {
        let memory = GuestMemory::new(0, 64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 64 pages long and owned by `memory`; the views are re-created
        // after each re-map (same address, same length).
        let bytes = || unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 64 * 4096) };
        bytes()[5 * 4096] = 1;
        bytes()[9 * 4096 + 7] = 2;
        bytes()[20 * 4096] = 0; // touched, but zero: stays a hole
        let snap = Arc::new(memory.snapshot().unwrap());
        assert_eq!(snap.data_pages, 2);
        memory.rebase(&snap).unwrap();
        assert_eq!((bytes()[5 * 4096], bytes()[9 * 4096 + 7]), (1, 2));
        bytes()[5 * 4096] = 9;
        bytes()[30 * 4096] = 9;
        memory.rebase(&snap).unwrap();
        assert_eq!((bytes()[5 * 4096], bytes()[30 * 4096]), (1, 0));
        // A second snapshot of a re-based region includes the base's pages.
        bytes()[40 * 4096] = 4;
        let second = Arc::new(memory.snapshot().unwrap());
        assert_eq!(second.data_pages, 3);
        let copy = GuestMemory::from_snapshot(0, second.clone()).unwrap();
        // SAFETY: `copy` maps 64 pages.
        let c = unsafe { std::slice::from_raw_parts(copy.host_ptr(), 64 * 4096) };
        assert_eq!((c[5 * 4096], c[9 * 4096 + 7], c[40 * 4096]), (1, 2, 4));
        memory.rebase(&snap).unwrap();
        assert_eq!(bytes()[40 * 4096], 0);
    }

    #[test]
    fn a_restore_copies_every_dirtied_page_back_from_the_snapshot_view() {
        let pages = 48usize;
        let memory = GuestMemory::new(0, pages as u64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is `pages` pages long and owned by `memory`; the views are
        // re-created after each re-map (same address, same length).
        let bytes = || unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), pages * 4096) };
        for p in (0..pages).step_by(3) {
            bytes()[p * 4096..(p + 1) * 4096].fill(p as u8 + 1);
        }
        let snap = Arc::new(memory.snapshot().unwrap());
        memory.rebase(&snap).unwrap();
        let want: Vec<u8> = bytes().to_vec();
        assert!(
            snap.view.get().is_none(),
            "no view before a restore needs one"
        );
        for round in 0..3u8 {
            // Data pages and holes, whole pages and single bytes, in runs and alone.
            for p in (0..pages).filter(|p| p % 2 == 0 || p % 7 == 0) {
                bytes()[p * 4096 + (p * 13) % 4096] = 0xa0 ^ round;
                if p % 4 == 0 {
                    bytes()[p * 4096..(p + 1) * 4096].fill(0x5a);
                }
            }
            let put_back = memory.rebase(&snap).unwrap();
            assert!(put_back > 0 && put_back <= COPY_BACK_MAX_PAGES);
            assert!(
                bytes() == &want[..],
                "round {round}: a byte of the run is left behind"
            );
            assert!(
                snap.view().is_some(),
                "the copy-back used the snapshot's view"
            );
        }
    }

    #[test]
    fn a_snapshot_backed_by_a_file_has_no_view() {
        use std::io::Write;
        let path = std::env::temp_dir().join(format!("hl-snap-view-{}", std::process::id()));
        let data = vec![9u8; 2 * 4096];
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&data)
            .unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let snap = MemorySnapshot::from_file(file, 0, 2 * 4096, crc32fast::hash(&data)).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(
            snap.view().is_none(),
            "a file someone can truncate is read with pread"
        );
        assert!(MemorySnapshot::from_bytes(&data).unwrap().view().is_some());
    }

    #[test]
    fn many_dirtied_pages_are_dropped_not_copied_back() {
        let pages = 1024usize;
        let memory = GuestMemory::new(0, pages as u64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is `pages` pages long and owned by `memory`.
        let bytes = || unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), pages * 4096) };
        bytes()[3 * 4096] = 3;
        let snap = Arc::new(memory.snapshot().unwrap());
        memory.rebase(&snap).unwrap();
        for p in 0..pages {
            bytes()[p * 4096 + 1] = 0xee; // more than COPY_BACK_MAX_PAGES
        }
        memory.rebase(&snap).unwrap();
        assert!(bytes()
            .chunks(4096)
            .enumerate()
            .all(|(p, page)| page[1] == 0 && page[0] == if p == 3 { 3 } else { 0 }));
        let private = page_table_entries_where(memory.host_ptr(), pages, |e| {
            e & (1 << 63) != 0 && e & (1 << 61) == 0
        })
        .unwrap();
        assert!(private.iter().all(|&p| !p), "dropped, not copied back");
    }

    #[test]
    fn pagemap_scan_agrees_with_the_pagemap() {
        let memory = GuestMemory::new(0, 256 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 256 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 256 * 4096) };
        for p in [3usize, 4, 5, 9, 200, 255] {
            bytes[p * 4096] = 1;
        }
        let scanned = pagemap_scan_private(memory.host_ptr(), memory.size(), false).unwrap();
        let Some(scanned) = scanned else {
            println!("SKIPPED: no PAGEMAP_SCAN on this kernel");
            return;
        };
        assert_eq!(scanned, vec![(3, 6), (9, 10), (200, 201), (255, 256)]);
    }

    /// Issue 19 (RSS per idle sandbox): a read of one page of a snapshot's mapping maps that page
    /// alone, not the up to 16 page-cache neighbours the kernel's fault-around would map with it,
    /// and a region made after the snapshot learned which pages a region touched has those mapped,
    /// not every data page. Where the kernel refuses the userfaultfd that turns fault-around off,
    /// every data page is populated as before.
    #[test]
    fn a_snapshot_region_maps_only_the_pages_touched() {
        let memory = GuestMemory::new(0, 64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 64 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 64 * 4096) };
        for p in 0..48usize {
            bytes[p * 4096] = p as u8 + 1;
        }
        let snap = Arc::new(memory.snapshot().unwrap());
        let present = |m: &GuestMemory| -> Vec<usize> {
            let e = page_table_entries(m.host_ptr(), 64).unwrap();
            (0..64).filter(|&i| e[i]).collect()
        };
        let first = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        if uffd().is_none() {
            assert_eq!(
                present(&first),
                (0..48).collect::<Vec<_>>(),
                "all data populated"
            );
            return;
        }
        assert_eq!(present(&first), Vec::<usize>::new(), "nothing learned yet");
        // SAFETY: `first` maps 64 pages.
        let r = unsafe { std::slice::from_raw_parts(first.host_ptr(), 64 * 4096) };
        assert_eq!((r[20 * 4096], r[37 * 4096]), (21, 38));
        assert_eq!(present(&first), vec![20, 37], "no fault-around");
        // A restore learns the touched set; a region mapped after it has just those pages.
        first.rebase(&snap).unwrap();
        assert_eq!(snap.touched.get(), Some(&vec![(20, 21), (37, 38)]));
        let later = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        assert_eq!(present(&later), vec![20, 37]);
        // SAFETY: `later` maps 64 pages.
        let l = unsafe { std::slice::from_raw_parts(later.host_ptr(), 64 * 4096) };
        assert_eq!(
            (l[0], l[20 * 4096], l[47 * 4096], l[50 * 4096]),
            (1, 21, 48, 0)
        );
        assert_eq!(present(&later), vec![0, 20, 37, 47, 50]);
    }

    #[test]
    fn a_snapshot_learns_the_pages_its_guests_write_and_later_regions_get_them_private() {
        let private = |m: &GuestMemory| {
            page_table_entries_where(m.host_ptr(), 64, |e| {
                e & (1 << 63) != 0 && e & (1 << 61) == 0
            })
            .unwrap()
        };
        let memory = GuestMemory::new(0, 64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 64 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 64 * 4096) };
        for p in [1usize, 2, 7] {
            bytes[p * 4096] = p as u8;
        }
        let snap = Arc::new(memory.snapshot().unwrap());
        assert!(snap.written.get().is_none());
        // A region that only read learns nothing.
        let reader = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        // SAFETY: `reader` maps 64 pages.
        let r = unsafe { std::slice::from_raw_parts(reader.host_ptr(), 64 * 4096) };
        assert_eq!(r[7 * 4096], 7);
        drop(reader);
        assert!(snap.written.get().is_none());
        // The first region whose guest wrote: pages 2 (data) and 40 (a hole), learned at drop.
        let first = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        assert!(private(&first).iter().all(|&p| !p), "populated read-only");
        // SAFETY: `first` maps 64 pages.
        let w = unsafe { std::slice::from_raw_parts_mut(first.host_ptr(), 64 * 4096) };
        w[2 * 4096 + 1] = 0xaa;
        w[40 * 4096] = 0xbb;
        drop(first);
        assert_eq!(snap.written.get(), Some(&vec![(2, 3), (40, 41)]));
        // A later region has them as private copies from the start, with the snapshot's content,
        // and the other data pages mapped read-only (shared).
        let later = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        let p = private(&later);
        assert!(p[2] && p[40] && !p[1] && !p[7], "{p:?}");
        // SAFETY: `later` maps 64 pages (the same mapping after the restore below).
        let l = unsafe { std::slice::from_raw_parts_mut(later.host_ptr(), 64 * 4096) };
        assert_eq!(
            (l[4096], l[2 * 4096], l[2 * 4096 + 1], l[40 * 4096]),
            (1, 2, 0, 0)
        );
        // A restore after writes puts the snapshot's content back in the learned pages too.
        l[2 * 4096] = 0xcc;
        later.rebase(&snap).unwrap();
        assert_eq!(l[2 * 4096], 2);
        // Too many written pages are not learned (the copy per create stays bounded).
        let big = Arc::new(
            GuestMemory::new(0, 1024 * PAGE_SIZE)
                .unwrap()
                .snapshot()
                .unwrap(),
        );
        learn_written(&big, &[(0, WRITE_SET_MAX_PAGES + 1)]);
        assert!(big.written.get().is_none());
        learn_written(&big, &[(1000, 2000)]);
        assert_eq!(
            big.written.get(),
            Some(&vec![(1000, 1024)]),
            "clipped to the snapshot"
        );
    }

    /// A write-tracked restore also reports a hole the guest only read (`write_track`); the
    /// snapshot's write set must still hold only what was written, or every later region would
    /// copy the read hole up front.
    #[test]
    fn a_hole_only_read_is_not_learned_as_written() {
        let memory = GuestMemory::new(0, 64 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 64 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 64 * 4096) };
        bytes[4096] = 1;
        let snap = Arc::new(memory.snapshot().unwrap());
        let region = GuestMemory::from_snapshot(0, snap.clone()).unwrap();
        // SAFETY: `region` maps 64 pages.
        let r = unsafe { std::slice::from_raw_parts_mut(region.host_ptr(), 64 * 4096) };
        assert_eq!(r[30 * 4096 + 8], 0); // a hole, read
        r[4096 + 2] = 9; // a data page, written
        r[40 * 4096] = 7; // a hole, written
        let put_back = region.rebase(&snap).unwrap();
        assert_eq!(snap.written.get(), Some(&vec![(1, 2), (40, 41)]));
        // The read hole is put back too where the region is write-tracked (only work).
        assert_eq!(put_back, if region.write_tracked() { 3 } else { 2 });
        assert_eq!((r[4096 + 2], r[40 * 4096]), (0, 0));
    }
}
