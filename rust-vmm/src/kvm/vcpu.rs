//! A KVM vCPU started directly in 64-bit long mode (no firmware, no real-mode boot).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    kvm_dtable, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcr,
    kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::backend::{
    ExitInfo, ExitKind, ExitRequest, Regs, RunOutcome, SpecialRegs, VcpuBackend, VcpuConfig,
};
use crate::error::{Error, Result};
use crate::stats::Counters;

// Control-register bits (Intel SDM vol. 3, 2.5; AMD APM vol. 2, 3.1).
const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;

/// Writes `kvm_run.immediate_exit` from another thread. The pointer is only dereferenced in
/// `set`, whose contract (`ExitRequest::set`) is that the vCPU, and so its kvm_run mapping, still
/// exists; `vcpu_thread.rs` upholds it by calling `set` from other threads only under the mutex of
/// the slot the vCPU thread empties before it drops the vCPU.
struct ImmediateExit {
    flag: *mut u8,
}

// SAFETY: the raw pointer is the only non-Send part; it is only dereferenced in `set`, under the
// contract above, and KVM documents writing this byte from another thread as the way to kick a
// vCPU.
unsafe impl Send for ImmediateExit {}
// SAFETY: as above; the only operation is an atomic byte store.
unsafe impl Sync for ImmediateExit {}

impl ExitRequest for ImmediateExit {
    unsafe fn set(&self, on: bool) {
        // SAFETY: by `set`'s contract the vCPU exists, so `flag` points into its live kvm_run
        // mapping (page-aligned, so aligned for a byte). Every store to it from this process is
        // through this atomic (the kernel reads it on entry to KVM_RUN), so there is no data race.
        unsafe { AtomicU8::from_ptr(self.flag).store(u8::from(on), Ordering::SeqCst) }
    }
}

pub struct KvmVcpu {
    fd: VcpuFd,
    counters: Arc<Counters>,
    immediate_exit: Arc<ImmediateExit>,
    /// Whether the CPU is Intel's (VMX): how TR's type is loaded (`new`, `set_state`).
    intel: bool,
    /// The last exit was port or MMIO I/O, which KVM completes (moving RIP past the instruction)
    /// only at the next `KVM_RUN`: see `complete_pending_io`.
    io_pending: bool,
}

impl KvmVcpu {
    pub fn new(
        vm: &VmFd,
        cpuid: &CpuId,
        config: &VcpuConfig,
        intel: bool,
        granted: u64,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        counters.ioctl(1);
        let mut fd = super::retry_eintr(|| vm.create_vcpu(0))
            .map_err(|e| Error::hypervisor("KVM_CREATE_VCPU", e.errno()))?;
        // CPUID first: KVM only accepts EFER.NXE when the guest's CPUID advertises NX.
        counters.ioctl(1);
        super::retry_eintr(|| fd.set_cpuid2(cpuid))
            .map_err(|e| Error::hypervisor("KVM_SET_CPUID2", e.errno()))?;

        counters.ioctl(1);
        let mut sregs = fd
            .get_sregs()
            .map_err(|e| Error::hypervisor("KVM_GET_SREGS", e.errno()))?;
        // The segment registers are loaded directly (no GDT is read at entry); their DPL is the
        // selector's RPL, so a CPL-3 guest starts in user mode with CS = SS.DPL = 3.
        let cpl = config.cpl() as u8;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: config.code_selector,
            type_: 0b1011, // execute/read, accessed
            present: 1,
            dpl: cpl,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        let data = kvm_segment {
            selector: config.data_selector,
            type_: 0b0011, // read/write, accessed
            db: 1,
            l: 0,
            ..code
        };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        // With a TSS in the config, exceptions from CPL 3 switch to its RSP0/IST stacks and port
        // access at CPL 3 is checked against its I/O bitmap. VMX refuses a long-mode entry unless
        // TR holds a busy 64-bit TSS (type 11). SVM has no such check, and QEMU's emulated CPU
        // (the nested harness) denies every port through a TR cached as busy, so elsewhere TR is
        // an available 64-bit TSS (type 9), as `ltr` itself leaves it cached.
        sregs.tr = kvm_segment {
            base: config.tss.base,
            limit: if config.tss_selector == 0 {
                0xffff
            } else {
                config.tss.limit
            },
            selector: config.tss_selector,
            type_: if intel { 0b1011 } else { 0b1001 },
            s: 0,
            dpl: 0,
            db: 0,
            l: 0,
            g: 0,
            ..code
        };
        sregs.gdt = kvm_dtable {
            base: config.gdt.base,
            limit: config.gdt.limit as u16,
            ..Default::default()
        };
        sregs.idt = kvm_dtable {
            base: config.idt.base,
            limit: config.idt.limit as u16,
            ..Default::default()
        };
        sregs.cr3 = config.cr3;
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        // The AVX state where the hypervisor grants it (`cpuid::extended_features`): CR4.OSXSAVE
        // here, XCR0 below. KVM then shows OSXSAVE in the guest's CPUID leaf 1 (from this CR4).
        let avx = granted & super::cpuid::GRANT_AVX_STATE != 0;
        if avx {
            sregs.cr4 |= CR4_OSXSAVE;
        }
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        // No EFER.SCE: `syscall` from CPL 3 would enter CPL 0 at LSTAR on the guest's own stack.
        // Without it `syscall` is #UD.
        sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
        counters.ioctl(1);
        // With the grant, a refusal names the way back to the SSE-only setup.
        let (set_sregs, set_xcrs) = if avx {
            (
                "KVM_SET_SREGS (CR4.OSXSAVE; HL_VCPU_AVX=0 leaves it off)",
                "KVM_SET_XCRS (XCR0 = x87|SSE|AVX; HL_VCPU_AVX=0 leaves it at x87)",
            )
        } else {
            ("KVM_SET_SREGS", "KVM_SET_XCRS")
        };
        fd.set_sregs(&sregs)
            .map_err(|e| Error::hypervisor(set_sregs, e.errno()))?;
        if avx {
            let mut xcrs = kvm_xcrs {
                nr_xcrs: 1,
                ..Default::default()
            };
            xcrs.xcrs[0] = kvm_xcr {
                xcr: 0,
                value: super::cpuid::XCR0_X87_SSE_AVX,
                ..Default::default()
            };
            counters.ioctl(1);
            fd.set_xcrs(&xcrs)
                .map_err(|e| Error::hypervisor(set_xcrs, e.errno()))?;
        }

        let flag: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
        Ok(Self {
            intel,
            io_pending: false,
            fd,
            counters,
            immediate_exit: Arc::new(ImmediateExit { flag }),
        })
    }
}

impl KvmVcpu {
    /// Completes the port or MMIO access the last exit reported, without entering the guest.
    /// KVM finishes such an exit (skips the `out`, takes an `in`'s data) only at the next
    /// `KVM_RUN`, so state read before that has RIP still at the instruction on hardware KVM (on
    /// kvm_pvm it is already past it), and a snapshot of it would run the `out` again when
    /// restored — which the guest's CPU answered with #GP under nested SVM. KVM's documented way to
    /// save state after an I/O exit: a `KVM_RUN` with `immediate_exit` set, which runs the
    /// completion and returns `EINTR` before entering the guest.
    fn complete_pending_io(&mut self) -> Result<()> {
        if !self.io_pending {
            return Ok(());
        }
        // SAFETY: `&mut self` holds the vCPU, so its kvm_run mapping exists (`ExitRequest::set`'s
        // contract); the vCPU is not running (this thread owns it for this call).
        unsafe { self.immediate_exit.set(true) };
        self.counters.ioctl(1);
        let result = self.fd.run().map(|_| ());
        // SAFETY: as above.
        unsafe { self.immediate_exit.set(false) };
        self.io_pending = false;
        match result {
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(()),
            // Not expected with immediate_exit set; the completion ran either way.
            Ok(()) => Ok(()),
            Err(e) => Err(Error::hypervisor(
                "KVM_RUN (completing the last I/O exit)",
                e.errno(),
            )),
        }
    }
}

#[cfg(test)]
impl KvmVcpu {
    /// The vCPU's fd, for tests that read what KVM holds.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }
}

impl VcpuBackend for KvmVcpu {
    fn run(&mut self, exit: &mut ExitInfo) -> Result<RunOutcome> {
        self.counters.ioctl(1);
        self.counters
            .runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = self.fd.run();
        let kind = match result {
            Ok(VcpuExit::IoOut(port, data)) => {
                let size = data.len() as u64;
                exit.set(ExitKind::IoOut, port.into(), size, 1, data);
                ExitKind::IoOut
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                // The guest reads whatever we leave here when it is resumed: zeros, never stale
                // bytes from an earlier exit.
                data.fill(0);
                exit.set(ExitKind::IoIn, port.into(), data.len() as u64, 1, &[]);
                ExitKind::IoIn
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                data.fill(0);
                exit.set(ExitKind::Mmio, addr, data.len() as u64, 0, &[]);
                ExitKind::Mmio
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                exit.set(ExitKind::Mmio, addr, data.len() as u64, 1, data);
                ExitKind::Mmio
            }
            Ok(VcpuExit::Hlt) => {
                exit.set(ExitKind::Halt, 0, 0, 0, &[]);
                ExitKind::Halt
            }
            Ok(VcpuExit::Shutdown) => {
                exit.set(ExitKind::Shutdown, 0, 0, 0, &[]);
                ExitKind::Shutdown
            }
            Ok(VcpuExit::FailEntry(reason, _cpu)) => {
                exit.set(ExitKind::FailEntry, reason, 0, 0, &[]);
                ExitKind::FailEntry
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the `internal` union member
                // is the one the kernel filled in.
                let internal = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal };
                // The kernel's diagnostic words (instruction bytes, exit info): for bug reports.
                let n = (internal.ndata as usize).min(internal.data.len());
                let words: Vec<u8> = internal.data[..n]
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
                    .collect();
                exit.set(
                    ExitKind::InternalError,
                    internal.suberror.into(),
                    n as u64,
                    0,
                    &words,
                );
                ExitKind::InternalError
            }
            Ok(VcpuExit::Intr) => return Ok(RunOutcome::Signalled),
            Ok(other) => {
                let text = format!("{other:?}");
                let reason = self.fd.get_kvm_run().exit_reason;
                exit.set(ExitKind::Other, reason.into(), 0, 0, text.as_bytes());
                ExitKind::Other
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                return Ok(RunOutcome::Signalled)
            }
            Err(e) => return Err(Error::hypervisor("KVM_RUN", e.errno())),
        };
        self.io_pending = matches!(kind, ExitKind::IoOut | ExitKind::IoIn | ExitKind::Mmio);
        self.counters
            .exits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(RunOutcome::Exited(kind))
    }

    fn set_regs(&mut self, r: &Regs) -> Result<()> {
        let regs = kvm_regs {
            rax: r[0],
            rbx: r[1],
            rcx: r[2],
            rdx: r[3],
            rsi: r[4],
            rdi: r[5],
            rsp: r[6],
            rbp: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
            rip: r[16],
            rflags: r[17],
        };
        self.counters.ioctl(1);
        self.fd
            .set_regs(&regs)
            .map_err(|e| Error::hypervisor("KVM_SET_REGS", e.errno()))
    }

    fn get_regs(&mut self) -> Result<Regs> {
        self.counters.ioctl(1);
        let r = self
            .fd
            .get_regs()
            .map_err(|e| Error::hypervisor("KVM_GET_REGS", e.errno()))?;
        Ok([
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15, r.rip, r.rflags,
        ])
    }

    fn get_special_regs(&mut self) -> Result<SpecialRegs> {
        self.counters.ioctl(1);
        let s = self
            .fd
            .get_sregs()
            .map_err(|e| Error::hypervisor("KVM_GET_SREGS", e.errno()))?;
        Ok([
            s.cr0,
            s.cr2,
            s.cr3,
            s.cr4,
            s.efer,
            s.cs.selector.into(),
            s.ss.selector.into(),
            0,
        ])
    }

    fn get_state(&mut self) -> Result<Vec<u8>> {
        let hv =
            |what: &'static str| move |e: kvm_ioctls::Error| Error::hypervisor(what, e.errno());
        self.complete_pending_io()?;
        let mut blob = Vec::with_capacity(STATE_MAX);
        blob.extend_from_slice(&STATE_MAGIC.to_le_bytes());
        let flags_at = blob.len();
        blob.extend_from_slice(&0u32.to_le_bytes());
        let mut flags = 0u32;
        self.counters.ioctl(3);
        push_pod(&mut blob, &self.fd.get_regs().map_err(hv("KVM_GET_REGS"))?);
        push_pod(
            &mut blob,
            &self.fd.get_sregs().map_err(hv("KVM_GET_SREGS"))?,
        );
        push_pod(
            &mut blob,
            &self
                .fd
                .get_vcpu_events()
                .map_err(hv("KVM_GET_VCPU_EVENTS"))?,
        );
        // FPU/SSE: XSAVE where KVM has it (the full legacy area, MXCSR included), else KVM_GET_FPU.
        self.counters.ioctl(1);
        match self.fd.get_xsave() {
            Ok(x) => {
                flags |= STATE_XSAVE;
                push_pod(&mut blob, &x.region);
            }
            Err(_) => {
                self.counters.ioctl(1);
                push_pod(&mut blob, &self.fd.get_fpu().map_err(hv("KVM_GET_FPU"))?);
            }
        }
        self.counters.ioctl(1);
        if let Ok(x) = self.fd.get_xcrs() {
            flags |= STATE_XCRS;
            push_pod(&mut blob, &x);
        }
        let entries: Vec<kvm_msr_entry> = STATE_MSRS
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries)
            .map_err(|_| Error::hypervisor("building the MSR list", libc::EINVAL))?;
        self.counters.ioctl(1);
        // KVM reads MSRs in order and stops at the first it does not know: keep what it read.
        let n = self.fd.get_msrs(&mut msrs).map_err(hv("KVM_GET_MSRS"))?;
        let read = &msrs.as_slice()[..n.min(entries.len())];
        blob.extend_from_slice(&(read.len() as u32).to_le_bytes());
        for e in read {
            blob.extend_from_slice(&e.index.to_le_bytes());
            blob.extend_from_slice(&e.data.to_le_bytes());
        }
        blob[flags_at..flags_at + 4].copy_from_slice(&flags.to_le_bytes());
        Ok(blob)
    }

    fn set_state(&mut self, blob: &[u8]) -> Result<()> {
        let hv =
            |what: &'static str| move |e: kvm_ioctls::Error| Error::hypervisor(what, e.errno());
        let ParsedState {
            regs,
            sregs,
            events,
            xsave,
            fpu,
            xcrs,
            entries,
        } = parse_state(blob)?;
        let mut sregs = sregs;
        // KVM_GET_SREGS on SVM reports TR as busy whatever the VMCB holds; loaded back as busy,
        // QEMU's emulated CPU (the nested harness) denies every port at CPL 3 (#GP at the guest's
        // first `out` after a restore). TR's type as `new` loads it: busy for VMX, else available.
        if !self.intel && sregs.tr.type_ == 0b1011 {
            sregs.tr.type_ = 0b1001;
        }
        // System registers first (the mode), then what depends on them.
        self.counters.ioctl(1);
        self.fd.set_sregs(&sregs).map_err(hv("KVM_SET_SREGS"))?;
        if let Some(x) = xcrs {
            self.counters.ioctl(1);
            self.fd.set_xcrs(&x).map_err(hv("KVM_SET_XCRS"))?;
        }
        self.counters.ioctl(1);
        match (xsave, fpu) {
            // SAFETY: `x` is a whole `kvm_xsave` (4096 bytes) that KVM_GET_XSAVE filled on a vCPU
            // of this library (same CPUID, no XSAVE features beyond what fits: XCR0 is at most
            // x87|SSE|AVX, set by the host, and the guest cannot change CR4 or XCR0 at CPL 3),
            // so the kernel reads only within it.
            (Some(x), _) => unsafe { self.fd.set_xsave(&x) }.map_err(hv("KVM_SET_XSAVE"))?,
            (None, Some(f)) => self.fd.set_fpu(&f).map_err(hv("KVM_SET_FPU"))?,
            (None, None) => {}
        }
        if !entries.is_empty() {
            let msrs = Msrs::from_entries(&entries)
                .map_err(|_| Error::hypervisor("building the MSR list", libc::EINVAL))?;
            self.counters.ioctl(1);
            let n = self.fd.set_msrs(&msrs).map_err(hv("KVM_SET_MSRS"))?;
            if n != entries.len() {
                return Err(Error::hypervisor("KVM_SET_MSRS (partial)", libc::EINVAL));
            }
        }
        self.counters.ioctl(2);
        self.fd
            .set_vcpu_events(&events)
            .map_err(hv("KVM_SET_VCPU_EVENTS"))?;
        self.fd.set_regs(&regs).map_err(hv("KVM_SET_REGS"))
    }

    fn exit_request(&self) -> Arc<dyn ExitRequest> {
        self.immediate_exit.clone()
    }
}

/// A vCPU state blob, decoded and checked.
struct ParsedState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    events: kvm_vcpu_events,
    xsave: Option<kvm_xsave>,
    fpu: Option<kvm_fpu>,
    xcrs: Option<kvm_xcrs>,
    entries: Vec<kvm_msr_entry>,
}

/// Checks that `blob` is a vCPU state blob of this library (on any thread, before any ioctl).
pub fn check_state(blob: &[u8]) -> Result<()> {
    parse_state(blob).map(|_| ())
}

fn parse_state(blob: &[u8]) -> Result<ParsedState> {
    let mut r = Reader { blob, at: 0 };
    if r.u32()? != STATE_MAGIC {
        return Err(bad_state("it does not start with the state magic"));
    }
    let flags = r.u32()?;
    let regs: kvm_regs = r.pod()?;
    let sregs: kvm_sregs = r.pod()?;
    let events: kvm_vcpu_events = r.pod()?;
    let xsave: Option<kvm_xsave> = if flags & STATE_XSAVE != 0 {
        Some(kvm_xsave {
            region: r.pod()?,
            ..Default::default()
        })
    } else {
        None
    };
    let fpu: Option<kvm_fpu> = if flags & STATE_XSAVE == 0 {
        Some(r.pod()?)
    } else {
        None
    };
    let xcrs: Option<kvm_xcrs> = if flags & STATE_XCRS != 0 {
        Some(r.pod()?)
    } else {
        None
    };
    let count = r.u32()? as usize;
    if count > STATE_MSRS.len() {
        return Err(bad_state("it lists too many MSRs"));
    }
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let index = r.u32()?;
        if !STATE_MSRS.contains(&index) {
            return Err(bad_state("it lists an MSR this library does not restore"));
        }
        let data = r.u64()?;
        entries.push(kvm_msr_entry {
            index,
            data,
            ..Default::default()
        });
    }
    if r.at != blob.len() {
        return Err(bad_state("it has trailing bytes"));
    }
    Ok(ParsedState {
        regs,
        sregs,
        events,
        xsave,
        fpu,
        xcrs,
        entries,
    })
}

/// "HLS1": the vCPU state blob's format (docs/cdylib-abi.md, `hl_vcpu_get_state`).
const STATE_MAGIC: u32 = u32::from_le_bytes(*b"HLS1");
const STATE_XSAVE: u32 = 1;
const STATE_XCRS: u32 = 2;
/// Enough for every section (the blob is about 5 KiB).
const STATE_MAX: usize = 8192;
/// The per-vCPU MSRs KVM keeps that a restore brings back, most certain first (KVM stops reading
/// at the first it lacks). The TSC is left out on purpose: guest time keeps running.
const STATE_MSRS: [u32; 10] = [
    0x174,       // SYSENTER_CS
    0x175,       // SYSENTER_ESP
    0x176,       // SYSENTER_EIP
    0xC000_0081, // STAR
    0xC000_0082, // LSTAR
    0xC000_0083, // CSTAR
    0xC000_0084, // SFMASK
    0xC000_0102, // KERNEL_GS_BASE
    0x277,       // PAT
    0xC000_0103, // TSC_AUX
];

fn bad_state(why: &str) -> Error {
    Error::invalid_argument(format!("not a vCPU state blob of this library: {why}"))
}

/// Appends the bytes of a plain KVM struct.
fn push_pod<T: Copy>(blob: &mut Vec<u8>, v: &T) {
    // SAFETY: `T` is one of kvm-bindings' plain C structs (integers and arrays of them), read in
    // full from a valid reference; every byte was initialised (Default-zeroed, then filled by the
    // kernel), so viewing it as bytes reads no uninitialised memory.
    let bytes = unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) };
    blob.extend_from_slice(bytes);
}

struct Reader<'a> {
    blob: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.blob.len());
        let end = end.ok_or_else(|| bad_state("it is truncated"))?;
        let out = &self.blob[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads a plain KVM struct.
    fn pod<T: Copy>(&mut self) -> Result<T> {
        let b = self.take(size_of::<T>())?;
        // SAFETY: `b` holds exactly size_of::<T>() readable bytes (read unaligned), and `T` is a
        // plain C struct (or array) of integers, for which every bit pattern is a valid value.
        Ok(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<T>()) })
    }
}
