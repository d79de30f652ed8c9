//! `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp`: on the linux-gnu target the prebuilt
//! `core` expects them from libc, and there is none.
//!
//! Each body is a `rep` string instruction in inline asm, so the optimiser has no loop it could
//! recognise as a `memcpy`/`memset` idiom and turn back into a call to the function itself.
//! The direction flag is clear on entry (SysV ABI; the exception path executes `cld`).

use core::arch::asm;

// SAFETY (for every `#[unsafe(no_mangle)]` below): these are the libc symbol names with the
// libc signatures and semantics; the image links no libc, so nothing else defines them.

/// # Safety
/// `dest` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for `n` bytes; `rep movsb` copies
    // exactly `n` bytes forwards (DF = 0).
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// # Safety
/// `dest` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if n == 0 || core::ptr::eq(dest, src) {
        return dest;
    }
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // `dest` does not start inside (src, src + n): a forward copy never reads a byte it
        // has already overwritten.
        // SAFETY: both ranges are valid for `n` bytes; memcpy's forward `rep movsb` is correct
        // for this overlap (dest < src) too.
        unsafe { memcpy(dest, src, n) };
    } else {
        // `dest` starts inside the source: copy backwards from the last byte, DF set for the
        // duration of the instruction only.
        // SAFETY: both ranges are valid for `n` (>= 1) bytes, so `+ n - 1` stays inside them;
        // DF is cleared again before the block ends.
        unsafe {
            asm!(
                "std",
                "rep movsb",
                "cld",
                inout("rcx") n => _,
                inout("rdi") dest.add(n - 1) => _,
                inout("rsi") src.add(n - 1) => _,
                options(nostack)
            );
        }
    }
    dest
}

/// # Safety
/// `dest` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees `dest` is valid for `n` bytes; `rep stosb` writes exactly
    // those bytes with the low byte of `c`.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        );
    }
    dest
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    if n == 0 {
        return 0;
    }
    let end_a: *const u8;
    let end_b: *const u8;
    // SAFETY: both ranges are valid for `n` bytes; `repe cmpsb` reads at most `n` bytes of
    // each and stops one past the first difference (or after the last byte).
    unsafe {
        asm!(
            "repe cmpsb",
            inout("rcx") n => _,
            inout("rsi") a => end_a,
            inout("rdi") b => end_b,
            options(nostack, readonly)
        );
    }
    // The last pair compared is the first difference, or equal when there is none.
    // SAFETY: at least one byte was compared, so `end - 1` is inside each range.
    let (x, y) = unsafe { (*end_a.sub(1), *end_b.sub(1)) };
    i32::from(x) - i32::from(y)
}

/// # Safety
/// `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
