//! x86-64 specifics: port I/O.
//!
//! The guest runs at CPL 3 (ABI version 2): the host owns the GDT, TSS, IDT and the exception
//! handlers, and reports CPU exceptions itself from the CPU's frame. Nothing here touches
//! privileged state.

use core::arch::asm;

use hl_wire::port;

/// `out dx, eax`: signals the host on one of the ABI's ports.
///
/// The asm block is deliberately not `nomem`: it is a compiler barrier, so every write to the
/// output buffer is done before the exit and every read of the input buffer after it.
#[inline]
pub(crate) fn outl(port: u16, value: u32) {
    // SAFETY: `out` to an ABI port is a VM exit handled by the host, which then resumes at the
    // next instruction (or never, for ABORT). It touches no Rust-visible state by itself.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    }
}

/// Signals ABORT and never returns. The host does not resume an aborted guest; should it, the
/// guest signals ABORT again (`hlt` would be a #GP at CPL 3).
pub(crate) fn abort() -> ! {
    loop {
        outl(port::ABORT, 0);
    }
}
