//! The one internal interface every hypervisor backend implements. Nothing outside a backend
//! module knows which hypervisor runs the guest; the C ABI and the TypeScript side only see these
//! hypervisor-neutral types.

use std::sync::Arc;

use crate::error::Result;
use crate::stats::Counters;

/// What the hypervisor can do, as reported by `hl_hypervisor_info`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Capabilities {
    pub api_version: u64,
    pub immediate_exit: bool,
    pub readonly_memory: bool,
    pub dirty_log: bool,
    pub max_memory_slots: u64,
    pub max_vcpus: u64,
    /// A fingerprint of the CPU features the guest sees (FNV-1a over the filtered CPUID's vendor,
    /// feature and XSAVE leaves): snapshot files record it and refuse another (version 9).
    pub cpu_features: u64,
    /// What the VM grants beyond SSE (`hl_hypervisor_info`'s `out[7]`, version 13): bit 0 the
    /// AVX state (CR4.OSXSAVE, XCR0 = x87|SSE|AVX), then AVX, AVX2, FMA, BMI1, BMI2, LZCNT.
    pub granted_features: u64,
}

/// Kinds of exit reported to the caller. Values are part of the C ABI (`docs/cdylib-abi.md`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    IoOut = 1,
    IoIn = 2,
    Halt = 3,
    Shutdown = 4,
    Mmio = 5,
    FailEntry = 6,
    InternalError = 7,
    Interrupted = 8,
    Other = 9,
    /// `hl_vcpu_run`'s timeout elapsed; the sticky stop is now set (as by `hl_vcpu_interrupt`).
    TimedOut = 10,
}

/// Capacity of `ExitInfo::data`.
pub const EXIT_DATA_CAPACITY: usize = 256;

/// Details of the last exit, in memory the library owns and the caller reads in place.
/// Layout (C ABI): kind u32 @0, a u64 @8, b u64 @16, c u64 @24, data_len u64 @32, data @40.
///
/// | kind        | a                     | b            | c              | data            |
/// |-------------|-----------------------|--------------|----------------|-----------------|
/// | IoOut/IoIn  | port                  | access size  | repeat count   | bytes written   |
/// | Mmio        | guest-physical address| access size  | 1 = write      | bytes written   |
/// | FailEntry   | hardware reason       | 0            | 0              |                 |
/// | InternalError | suberror            | 0            | 0              |                 |
/// | Other       | backend exit reason   | 0            | 0              |                 |
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExitInfo {
    pub kind: u32,
    pub _pad: u32,
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub data_len: u64,
    pub data: [u8; EXIT_DATA_CAPACITY],
}

impl Default for ExitInfo {
    fn default() -> Self {
        Self {
            kind: 0,
            _pad: 0,
            a: 0,
            b: 0,
            c: 0,
            data_len: 0,
            data: [0; EXIT_DATA_CAPACITY],
        }
    }
}

impl ExitInfo {
    pub fn set(&mut self, kind: ExitKind, a: u64, b: u64, c: u64, data: &[u8]) {
        let n = data.len().min(EXIT_DATA_CAPACITY);
        self.kind = kind as u32;
        self.a = a;
        self.b = b;
        self.c = c;
        self.data_len = n as u64;
        self.data[..n].copy_from_slice(&data[..n]);
    }
}

/// A descriptor table (GDT or IDT) or the TSS: where it is in guest memory and its limit (size
/// minus one). A zero limit with a zero base means "none".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableRef {
    pub base: u64,
    pub limit: u32,
}

/// How a vCPU starts: 64-bit long mode, SSE on, paging at `cr3`, and the privilege level and
/// system tables the caller built in guest memory. The caller (the TypeScript layout) owns every
/// address and selector; the backend only loads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuConfig {
    pub cr3: u64,
    pub gdt: TableRef,
    pub idt: TableRef,
    pub tss: TableRef,
    /// CS; its RPL (low two bits) is the privilege level the vCPU starts at (0 or 3).
    pub code_selector: u16,
    /// SS, DS, ES, FS and GS; same RPL as `code_selector`.
    pub data_selector: u16,
    /// TR (0: no TSS).
    pub tss_selector: u16,
}

/// Number of u64 words of a `VcpuConfig` in the C ABI (`hl_vcpu_create`): cr3, gdt base,
/// gdt limit, idt base, idt limit, tss base, tss limit, code, data and tss selectors.
pub const VCPU_CONFIG_WORDS: usize = 10;

impl VcpuConfig {
    /// Decodes and checks the C ABI's words.
    pub fn from_words(w: &[u64; VCPU_CONFIG_WORDS]) -> Result<Self> {
        use crate::error::Error;
        let bad = |m: String| Err(Error::invalid_argument(m));
        if !w[0].is_multiple_of(4096) {
            return bad(format!(
                "page-table root {:#x} is not 4096-byte aligned",
                w[0]
            ));
        }
        let limit = |v: u64, what: &str| -> Result<u32> {
            u32::try_from(v)
                .ok()
                .filter(|&l| l <= 0xFFFF || what == "tss")
                .ok_or_else(|| Error::invalid_argument(format!("{what} limit {v:#x} is too large")))
        };
        let selector = |v: u64, what: &str| -> Result<u16> {
            u16::try_from(v).map_err(|_| {
                Error::invalid_argument(format!("{what} selector {v:#x} is not 16-bit"))
            })
        };
        let config = Self {
            cr3: w[0],
            gdt: TableRef {
                base: w[1],
                limit: limit(w[2], "gdt")?,
            },
            idt: TableRef {
                base: w[3],
                limit: limit(w[4], "idt")?,
            },
            tss: TableRef {
                base: w[5],
                limit: limit(w[6], "tss")?,
            },
            code_selector: selector(w[7], "code")?,
            data_selector: selector(w[8], "data")?,
            tss_selector: selector(w[9], "tss")?,
        };
        let cpl = config.cpl();
        if cpl != 0 && cpl != 3 {
            return bad(format!(
                "code selector {:#x}: the vCPU starts at CPL 0 or 3",
                w[7]
            ));
        }
        if config.data_selector & 3 != cpl || config.data_selector & !3 == 0 {
            return bad(format!(
                "data selector {:#x} must be non-null with the code selector's RPL {cpl}",
                w[8]
            ));
        }
        if config.code_selector & !3 == 0 {
            return bad("the code selector must not be null".into());
        }
        Ok(config)
    }

    /// The privilege level the vCPU starts at.
    pub fn cpl(&self) -> u16 {
        self.code_selector & 3
    }
}

/// Control registers and selectors of a stopped vCPU (`hl_vcpu_get_special_regs`), in the C
/// ABI's order: cr0 cr2 cr3 cr4 efer cs ss, and one reserved word.
pub type SpecialRegs = [u64; 8];

/// General-purpose registers in the C ABI's order: rax rbx rcx rdx rsi rdi rsp rbp r8-r15 rip
/// rflags.
pub type Regs = [u64; 18];

/// Result of one run: an exit was written to the `ExitInfo`, or the run was cut short by a
/// signal (the caller decides whether that was an interrupt it asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    Exited(ExitKind),
    Signalled,
}

/// Lets another thread make a run return promptly (for KVM: `kvm_run.immediate_exit`).
pub trait ExitRequest: Send + Sync {
    /// # Safety
    /// The vCPU this request came from (`VcpuBackend::exit_request`) must still exist for the
    /// whole call: the request writes into memory the vCPU owns (KVM: its `kvm_run` mapping).
    unsafe fn set(&self, on: bool);
}

/// A hypervisor (one per process, opened lazily).
pub trait Hypervisor: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    fn create_vm(&self, counters: Arc<Counters>) -> Result<Arc<dyn VmBackend>>;
    /// Checks that `blob` is a vCPU state blob `VcpuBackend::set_state` accepts (format only; on
    /// any thread, before any ioctl).
    fn check_vcpu_state(&self, blob: &[u8]) -> Result<()>;
}

/// A VM: memory slots and the factory of its vCPU.
pub trait VmBackend: Send + Sync {
    /// Maps `size` bytes at host address `host` to guest-physical `gpa` in `slot`.
    ///
    /// # Safety
    /// `host..host+size` must stay mapped for as long as the VM exists.
    unsafe fn map_memory(
        &self,
        slot: u32,
        gpa: u64,
        host: *mut u8,
        size: u64,
        readonly: bool,
    ) -> Result<()>;

    /// Creates the vCPU in 64-bit long mode with SSE enabled, as `config` says. Called on the
    /// worker thread that runs it first (`vcpu_thread.rs`).
    fn create_vcpu(&self, config: &VcpuConfig) -> Result<Box<dyn VcpuBackend>>;
}

/// A vCPU. Used from one thread at a time: the worker that holds it (`vcpu_thread.rs`), which
/// may be a different one after the vCPU was idle.
pub trait VcpuBackend: Send {
    fn run(&mut self, exit: &mut ExitInfo) -> Result<RunOutcome>;
    fn set_regs(&mut self, regs: &Regs) -> Result<()>;
    fn get_regs(&mut self) -> Result<Regs>;
    fn get_special_regs(&mut self) -> Result<SpecialRegs>;
    /// Everything the guest can observe of the vCPU (registers, system registers, FPU/SSE,
    /// XCRs, the per-vCPU MSRs, pending events), as an opaque blob for `set_state`.
    fn get_state(&mut self) -> Result<Vec<u8>>;
    /// Loads a blob from `get_state`; checks its format first.
    fn set_state(&mut self, blob: &[u8]) -> Result<()>;
    fn exit_request(&self) -> Arc<dyn ExitRequest>;
}
