//! A KVM vCPU started directly in 64-bit long mode (no firmware, no real-mode boot).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use kvm_bindings::{kvm_dtable, kvm_regs, kvm_segment, CpuId};
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
}

impl KvmVcpu {
    pub fn new(
        vm: &VmFd,
        cpuid: &CpuId,
        config: &VcpuConfig,
        intel: bool,
        counters: Arc<Counters>,
    ) -> Result<Self> {
        counters.ioctl(1);
        let mut fd = vm
            .create_vcpu(0)
            .map_err(|e| Error::hypervisor("KVM_CREATE_VCPU", e.errno()))?;
        // CPUID first: KVM only accepts EFER.NXE when the guest's CPUID advertises NX.
        counters.ioctl(1);
        fd.set_cpuid2(cpuid)
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
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        // No EFER.SCE: `syscall` from CPL 3 would enter CPL 0 at LSTAR on the guest's own stack.
        // Without it `syscall` is #UD.
        sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
        counters.ioctl(1);
        fd.set_sregs(&sregs)
            .map_err(|e| Error::hypervisor("KVM_SET_SREGS", e.errno()))?;

        let flag: *mut u8 = &mut fd.get_kvm_run().immediate_exit;
        Ok(Self {
            fd,
            counters,
            immediate_exit: Arc::new(ImmediateExit { flag }),
        })
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

    fn exit_request(&self) -> Arc<dyn ExitRequest> {
        self.immediate_exit.clone()
    }
}
