//! x86-64 specifics: port I/O, GDT + TSS + IDT, the exception stubs and handler.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use hl_wire::{FaultInfo, encode_fault, port};

/// A static the runtime writes through raw pointers.
#[repr(transparent)]
pub(crate) struct Racy<T>(UnsafeCell<T>);

// SAFETY: the guest runs on a single vCPU with interrupts disabled and no threads; every
// `Racy` static is written only during init (before any other access) or from a path that
// never returns to the code it interrupted.
unsafe impl<T> Sync for Racy<T> {}

impl<T> Racy<T> {
    pub(crate) const fn new(v: T) -> Self {
        Self(UnsafeCell::new(v))
    }

    pub(crate) const fn get(&self) -> *mut T {
        self.0.get()
    }
}

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

/// Signals ABORT and never returns (the host does not resume an aborted guest; should it,
/// `hlt` exits again).
pub(crate) fn abort() -> ! {
    outl(port::ABORT, 0);
    loop {
        // SAFETY: `hlt` with interrupts disabled only stops the vCPU (a VM exit).
        unsafe { asm!("hlt", options(nomem, nostack, preserves_flags)) }
    }
}

// --- Descriptor tables ----------------------------------------------------------------------

const IST_STACK_SIZE: usize = 32 * 1024;
const TSS_SIZE: usize = 104;
const TSS_IST1_OFFSET: usize = 36;
const TSS_IOMAP_OFFSET: usize = 102;
const VECTORS: usize = 32;
const STUB_SIZE: usize = 16;

/// 64-bit code, DPL 0 (selector 0x08).
const GDT_CODE64: u64 = 0x00AF_9A00_0000_FFFF;
/// Flat read/write data, DPL 0 (selector 0x10).
const GDT_DATA: u64 = 0x00CF_9200_0000_FFFF;
const SEL_CODE: u16 = 0x08;
const SEL_TSS: u16 = 0x18;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

#[repr(C, align(16))]
struct Tables {
    /// null, code 0x08, data 0x10, TSS 0x18 (16 bytes).
    gdt: [u64; 5],
    /// 32 gates of 16 bytes.
    idt: [u64; 2 * VECTORS],
    tss: [u8; TSS_SIZE],
}

/// The stack exceptions run on (TSS IST1): a stack overflow or a red-zone-using function must
/// not be trampled by the CPU's exception frame.
static IST1_STACK: Racy<IstStack> = Racy::new(IstStack([0; IST_STACK_SIZE]));
static TABLES: Racy<Tables> = Racy::new(Tables {
    gdt: [0; 5],
    idt: [0; 2 * VECTORS],
    tss: [0; TSS_SIZE],
});

/// Operand of `lgdt` / `lidt`.
#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

// SAFETY: both symbols are defined by the `global_asm!` below; Rust only takes their addresses
// and never calls them.
unsafe extern "C" {
    /// Start of the 32 exception stubs, one per 16 bytes (defined in `global_asm!` below).
    fn hl_isr_stubs();
    /// End of the stubs: `hl_isr_stubs + 32 * 16` exactly when every stub fits in 16 bytes.
    fn hl_isr_stubs_end();
}

fn tss_descriptor(base: u64) -> [u64; 2] {
    let limit = (TSS_SIZE - 1) as u64;
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, DPL 0, type 9 = available 64-bit TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

fn interrupt_gate(handler: u64) -> [u64; 2] {
    let low = (handler & 0xFFFF)
        | (u64::from(SEL_CODE) << 16)
        | (1 << 32) // IST1
        | (0x8E << 40) // present, DPL 0, type E = 64-bit interrupt gate
        | (((handler >> 16) & 0xFFFF) << 48);
    [low, handler >> 32]
}

/// Installs the GDT (keeping the ABI's selectors), the TSS with IST1 and the IDT for vectors
/// 0-31, and reloads every segment register.
pub(crate) fn init_cpu() {
    let tables = TABLES.get();
    let ist1_top = IST1_STACK.get() as u64 + IST_STACK_SIZE as u64;
    let stubs = hl_isr_stubs as *const () as u64;
    let stubs_end = hl_isr_stubs_end as *const () as u64;
    assert!(
        stubs_end - stubs == (VECTORS * STUB_SIZE) as u64,
        "exception stubs are not {STUB_SIZE} bytes apart"
    );

    // SAFETY: runs once, first thing after the PEB checks; nothing else refers to TABLES yet,
    // so this exclusive reference is unique while it lives.
    let t = unsafe { &mut *tables };
    let tss_base = t.tss.as_ptr() as u64;
    let [tss_lo, tss_hi] = tss_descriptor(tss_base);
    t.gdt = [0, GDT_CODE64, GDT_DATA, tss_lo, tss_hi];
    t.tss = [0; TSS_SIZE];
    t.tss[TSS_IST1_OFFSET..TSS_IST1_OFFSET + 8].copy_from_slice(&ist1_top.to_le_bytes());
    // I/O map base past the limit: no I/O permission bitmap.
    t.tss[TSS_IOMAP_OFFSET..TSS_IOMAP_OFFSET + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    for v in 0..VECTORS {
        let [lo, hi] = interrupt_gate(stubs + (v * STUB_SIZE) as u64);
        t.idt[2 * v] = lo;
        t.idt[2 * v + 1] = hi;
    }
    let gdtr = DescriptorPointer {
        limit: (core::mem::size_of_val(&t.gdt) - 1) as u16,
        base: t.gdt.as_ptr() as u64,
    };
    let idtr = DescriptorPointer {
        limit: (core::mem::size_of_val(&t.idt) - 1) as u16,
        base: t.idt.as_ptr() as u64,
    };

    // SAFETY: the GDT keeps 0x08 as 64-bit code and 0x10 as flat data, so reloading CS (far
    // return), the data segments and SS changes nothing the running code relies on; the TSS
    // descriptor and IDT gates point at live statics. The far return uses the stack, hence no
    // `nostack` (which also keeps the compiler out of the red zone here).
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, {data}",
            "mov ds, {tmp:x}",
            "mov es, {tmp:x}",
            "mov ss, {tmp:x}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "mov {tmp:e}, {tss}",
            "ltr {tmp:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &raw const gdtr,
            idtr = in(reg) &raw const idtr,
            code = const SEL_CODE,
            data = const 0x10,
            tss = const SEL_TSS,
            tmp = out(reg) _,
        );
    }
}

// --- Exception stubs -------------------------------------------------------------------------
//
// One 16-byte-aligned stub per vector: push a zero error code where the CPU pushes none, push
// the vector, and join the common path, which passes the frame to `isr_dispatch` on a
// 16-byte-aligned stack. Gates use IST1, so this always runs on the exception stack.
global_asm!(
    r#"
    .pushsection .text.hl_isr, "ax", @progbits
    .balign 16
    .globl hl_isr_stubs
    .hidden hl_isr_stubs
hl_isr_stubs:
    .macro HL_ISR_STUB vector, has_error
    .balign 16
    .if \has_error == 0
    push 0
    .endif
    push \vector
    jmp hl_isr_common
    .endm
    HL_ISR_STUB 0, 0
    HL_ISR_STUB 1, 0
    HL_ISR_STUB 2, 0
    HL_ISR_STUB 3, 0
    HL_ISR_STUB 4, 0
    HL_ISR_STUB 5, 0
    HL_ISR_STUB 6, 0
    HL_ISR_STUB 7, 0
    HL_ISR_STUB 8, 1
    HL_ISR_STUB 9, 0
    HL_ISR_STUB 10, 1
    HL_ISR_STUB 11, 1
    HL_ISR_STUB 12, 1
    HL_ISR_STUB 13, 1
    HL_ISR_STUB 14, 1
    HL_ISR_STUB 15, 0
    HL_ISR_STUB 16, 0
    HL_ISR_STUB 17, 1
    HL_ISR_STUB 18, 0
    HL_ISR_STUB 19, 0
    HL_ISR_STUB 20, 0
    HL_ISR_STUB 21, 1
    HL_ISR_STUB 22, 0
    HL_ISR_STUB 23, 0
    HL_ISR_STUB 24, 0
    HL_ISR_STUB 25, 0
    HL_ISR_STUB 26, 0
    HL_ISR_STUB 27, 0
    HL_ISR_STUB 28, 0
    HL_ISR_STUB 29, 1
    HL_ISR_STUB 30, 1
    HL_ISR_STUB 31, 0
    .purgem HL_ISR_STUB
    .balign 16
    .globl hl_isr_stubs_end
    .hidden hl_isr_stubs_end
hl_isr_stubs_end:
hl_isr_common:
    cld
    mov rdi, rsp
    and rsp, -16
    call {dispatch}
    ud2
    .popsection
    "#,
    dispatch = sym isr_dispatch,
);

/// What the stubs leave on the IST stack, lowest address first.
#[repr(C)]
struct IsrFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

static IN_FAULT: AtomicBool = AtomicBool::new(false);

/// Common exception handler: writes a FAULT frame and signals ABORT.
extern "C" fn isr_dispatch(frame: *const IsrFrame) -> ! {
    if IN_FAULT.swap(true, Ordering::Relaxed) {
        // An exception while reporting one: give up loudly (the host sees a triple fault)
        // rather than loop on the IST stack.
        triple_fault();
    }
    // SAFETY: `frame` is the stub's stack pointer: seven u64s written by the CPU and the stub.
    let f = unsafe { frame.read() };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects (CPL 0).
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    let info = FaultInfo {
        vector: f.vector,
        error_code: f.error_code,
        rip: f.rip,
        cr2,
        rsp: f.rsp,
    };
    let _ = crate::peb::with_output(|out| encode_fault(out, &info));
    abort()
}

/// Loads an empty IDT and raises an exception: #UD → #GP → #DF → shutdown.
fn triple_fault() -> ! {
    let empty = DescriptorPointer { limit: 0, base: 0 };
    // SAFETY: deliberately ends the VM; nothing runs after this.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) &raw const empty, options(noreturn, nostack)) }
}
