//! Guest memory owned by the library: a memfd mapped `MAP_PRIVATE`, so that the guest's writes are
//! private copies of the file's pages and `MADV_DONTNEED` drops them again (fast reset and
//! copy-on-write snapshots later).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use crate::error::{Error, Result};

pub const PAGE_SIZE: u64 = 4096;
/// Largest region one call may map. The mapping is `MAP_NORESERVE` and costs nothing until
/// touched, but a bigger request is almost certainly a unit mistake.
pub const MAX_REGION_SIZE: u64 = 16 << 30;
/// Highest guest-physical address (exclusive) a region may reach: 1 TiB, inside every x86-64
/// CPU's physical address width.
pub const MAX_GPA: u64 = 1 << 40;

#[derive(Debug)]
pub struct GuestMemory {
    _fd: OwnedFd,
    ptr: *mut u8,
    size: u64,
    pub gpa: u64,
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

    pub fn new(gpa: u64, size: u64) -> Result<Self> {
        Self::validate(gpa, size)?;
        // SAFETY: the name is a valid NUL-terminated string; the result is checked.
        let raw = unsafe { libc::memfd_create(c"hl-guest-memory".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(Error::os("memfd_create", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on the fd we own; the result is checked.
        if unsafe { libc::ftruncate(raw, size as libc::off_t) } != 0 {
            return Err(Error::os(
                "ftruncate of guest memory",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: a new private mapping of our own fd; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                raw,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::os(
                "mmap of guest memory",
                io::Error::last_os_error(),
            ));
        }
        Ok(Self {
            _fd: fd,
            ptr: ptr.cast(),
            size,
            gpa,
        })
    }

    pub fn host_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn overlaps(&self, gpa: u64, size: u64) -> bool {
        gpa < self.gpa + self.size && self.gpa < gpa + size
    }

    /// Drops every private page: the next access sees the memfd's content (zeros) again.
    pub fn reset(&self) -> Result<()> {
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
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; nothing uses it after drop.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn memory_reads_zero_after_reset() {
        let memory = GuestMemory::new(0, 2 * PAGE_SIZE).unwrap();
        // SAFETY: the mapping is 2 pages long and owned by `memory`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(memory.host_ptr(), 8192) };
        bytes[0] = 7;
        bytes[8191] = 9;
        memory.reset().unwrap();
        assert_eq!((bytes[0], bytes[8191]), (0, 0));
    }
}
