//! The panic handler (PANIC frame + ABORT) and the truncating text writer it shares with LOG.

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use hl_wire::{EncodeError, FrameKind, Writer, encode_with};

/// Formats into the rest of a `Writer`, cutting the text at the last UTF-8 character boundary
/// that fits (no allocation, so it works when the heap is exhausted).
struct Truncating<'w, 'b> {
    w: &'w mut Writer<'b>,
    len: usize,
    full: bool,
}

impl Write for Truncating<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.full {
            return Err(fmt::Error);
        }
        let mut cut = s.len().min(self.w.remaining());
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = s.as_bytes().get(..cut).ok_or(fmt::Error)?;
        self.w.put_bytes(head).map_err(|_| fmt::Error)?;
        self.len += cut;
        if cut < s.len() {
            self.full = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Writes a `str` field holding `args`, truncated to the room left in `w`.
pub(crate) fn put_str_truncated(
    w: &mut Writer<'_>,
    args: fmt::Arguments<'_>,
) -> Result<(), EncodeError> {
    let len_at = w.position();
    w.put_u32(0)?;
    let mut t = Truncating {
        w,
        len: 0,
        full: false,
    };
    // An error here only means the text was cut.
    let _ = t.write_fmt(args);
    let len = u32::try_from(t.len).map_err(|_| EncodeError::TooLong)?;
    w.patch_u32(len_at, len)
}

static PANICKING: AtomicBool = AtomicBool::new(false);

/// PANIC frame: `"panicked at <file>:<line>:<column>:\n<message>"` (the format of Rust's std),
/// truncated at a UTF-8 boundary to fit the output buffer.
#[panic_handler]
fn on_panic(info: &PanicInfo<'_>) -> ! {
    // A panic while reporting a panic skips straight to ABORT.
    if !PANICKING.swap(true, Ordering::Relaxed) {
        let _ = crate::peb::with_output(|out| {
            encode_with(out, FrameKind::Panic, |w| match info.location() {
                Some(l) => put_str_truncated(
                    w,
                    format_args!(
                        "panicked at {}:{}:{}:\n{}",
                        l.file(),
                        l.line(),
                        l.column(),
                        info.message()
                    ),
                ),
                None => put_str_truncated(w, format_args!("{}", info.message())),
            })
        });
    }
    crate::arch::abort()
}

// The prebuilt `core`/`alloc` of the linux-gnu target were compiled with panic = "unwind", so
// their cleanup paths reference the unwinder. With panic = "abort" and the handler above no
// unwind ever starts, so these are unreachable; they exist to satisfy the linker.
// SAFETY (for both `#[unsafe(no_mangle)]`): no unwinder is linked, so nothing else defines these
// symbols, and neither is ever called.

/// Never called: nothing unwinds (panic = "abort").
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::arch::abort()
}

/// Never called: nothing unwinds (panic = "abort").
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}
