//! WASI preview 1 constants: errno values, file types, flags, rights and the byte layouts of the
//! structures this guest writes (all from the `wasi_snapshot_preview1` witx definitions).

/// Errno values (`$errno`).
pub mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const INVAL: i32 = 28;
    pub const IO: i32 = 29;
    pub const NAMETOOLONG: i32 = 37;
    pub const NOSYS: i32 = 52;
    pub const NOTSUP: i32 = 58;
    pub const SPIPE: i32 = 70;
}

/// `$filetype`.
pub mod filetype {
    pub const CHARACTER_DEVICE: u8 = 2;
    pub const DIRECTORY: u8 = 3;
    pub const REGULAR_FILE: u8 = 4;
}

/// `$rights` bits this guest reports for fds 0-2 (and `FD_WRITE`, which it reads in a file's).
pub mod rights {
    pub const FD_READ: u64 = 1 << 1;
    pub const FD_WRITE: u64 = 1 << 6;
    pub const FD_FILESTAT_GET: u64 = 1 << 21;
}

/// Size of `$fdstat`.
pub const FDSTAT_SIZE: usize = 24;
/// Size of `$filestat`.
pub const FILESTAT_SIZE: usize = 64;
/// Size of `$prestat` (tag u8, pad, u32 name length).
pub const PRESTAT_SIZE: usize = 8;

/// Most bytes one `fd_read`/`fd_write`/`fd_readdir`/... moves across the VM boundary; a larger
/// request is served partially (as POSIX allows; libc loops).
pub const MAX_TRANSFER: u32 = 1 << 20;
/// Longest path a module may pass (bytes); longer is `ENAMETOOLONG` before anything crosses.
pub const MAX_PATH: u32 = 4096;
