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
    fn set(&self, on: bool);
}

/// A hypervisor (one per process, opened lazily).
pub trait Hypervisor: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    fn create_vm(&self, counters: Arc<Counters>) -> Result<Arc<dyn VmBackend>>;
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

    /// Creates the vCPU in 64-bit long mode with SSE enabled and `cr3` as the page-table root.
    /// Called on the thread that will run it.
    fn create_vcpu(&self, cr3: u64) -> Result<Box<dyn VcpuBackend>>;
}

/// A vCPU. Lives on, and is only used from, its own thread.
pub trait VcpuBackend {
    fn run(&mut self, exit: &mut ExitInfo) -> Result<RunOutcome>;
    fn set_regs(&mut self, regs: &Regs) -> Result<()>;
    fn get_regs(&mut self) -> Result<Regs>;
    fn exit_request(&self) -> Arc<dyn ExitRequest>;
}
