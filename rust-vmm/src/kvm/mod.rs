//! The KVM backend, on the rust-vmm crates (`kvm-ioctls`, `kvm-bindings`).

mod vcpu;
mod vm;

use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::backend::{Capabilities, Hypervisor, VmBackend};
use crate::error::{Code, Error, Result};
use crate::stats::{global_ioctl, Counters};

/// The only KVM API version there has ever been; anything else is not a KVM we understand.
const KVM_API_VERSION: i32 = 12;

pub struct KvmHypervisor {
    kvm: Kvm,
    caps: Capabilities,
    /// Queried once per process: every vCPU gets the host's supported CPUID.
    cpuid: Arc<CpuId>,
    /// Whether the CPU is Intel's (VMX): its VM entry needs TR loaded as a busy TSS.
    intel: bool,
}

/// "GenuineIntel" in CPUID leaf 0's EBX (the first four bytes).
const CPUID_VENDOR_INTEL_EBX: u32 = u32::from_le_bytes(*b"Genu");

impl KvmHypervisor {
    pub fn open() -> Result<Self> {
        let kvm = Kvm::new().map_err(|e| open_error(e.errno()))?;
        global_ioctl(1);
        let api_version = kvm.get_api_version();
        if api_version != KVM_API_VERSION {
            return Err(Error::new(
                Code::ApiVersion,
                format!(
                    "/dev/kvm reports KVM API version {api_version}, this library needs \
                     {KVM_API_VERSION}: use a Linux kernel with standard KVM"
                ),
            ));
        }
        if !kvm.check_extension(Cap::ImmediateExit) {
            return Err(Error::new(
                Code::ApiVersion,
                "KVM lacks KVM_CAP_IMMEDIATE_EXIT (Linux 4.11+), needed to interrupt a guest \
                 without races: use a newer kernel",
            ));
        }
        let caps = Capabilities {
            api_version: api_version as u64,
            immediate_exit: true,
            readonly_memory: kvm.check_extension(Cap::ReadonlyMem),
            dirty_log: kvm.check_extension(Cap::SyncMmu),
            max_memory_slots: kvm.get_nr_memslots() as u64,
            max_vcpus: kvm.get_max_vcpus() as u64,
        };
        global_ioctl(5);
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::hypervisor("KVM_GET_SUPPORTED_CPUID", e.errno()))?;
        global_ioctl(1);
        let intel = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == 0 && e.ebx == CPUID_VENDOR_INTEL_EBX);
        Ok(Self {
            kvm,
            caps,
            cpuid: Arc::new(cpuid),
            intel,
        })
    }
}

fn open_error(errno: i32) -> Error {
    match errno {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => Error::new(
            Code::NoHypervisor,
            "/dev/kvm does not exist: this host has no KVM (enable virtualization and load the \
             kvm module, or run the command through the nested-KVM harness: deno task vm <cmd>)",
        ),
        libc::EACCES | libc::EPERM => Error::new(
            Code::Permission,
            "permission denied opening /dev/kvm: add this user to the 'kvm' group \
             (sudo usermod -aG kvm $USER, then log in again) or run as a user that can open it",
        ),
        e => Error::new(
            Code::NoHypervisor,
            format!(
                "cannot open /dev/kvm: {}",
                std::io::Error::from_raw_os_error(e)
            ),
        ),
    }
}

impl Hypervisor for KvmHypervisor {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn create_vm(&self, counters: Arc<Counters>) -> Result<Arc<dyn VmBackend>> {
        let fd = self
            .kvm
            .create_vm()
            .map_err(|e| Error::hypervisor("KVM_CREATE_VM", e.errno()))?;
        // KVM_CREATE_VM, and KVM_GET_VCPU_MMAP_SIZE inside kvm-ioctls' create_vm.
        counters.ioctl(2);
        Ok(Arc::new(vm::KvmVm::new(
            fd,
            counters,
            self.cpuid.clone(),
            self.caps,
            self.intel,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_errors_name_the_cause_and_the_fix() {
        let missing = open_error(libc::ENOENT);
        assert_eq!(missing.code, Code::NoHypervisor);
        assert!(
            missing.message.contains("does not exist") && missing.message.contains("deno task vm")
        );
        let denied = open_error(libc::EACCES);
        assert_eq!(denied.code, Code::Permission);
        assert!(denied.message.contains("kvm' group"));
        let other = open_error(libc::EIO);
        assert_eq!(other.code, Code::NoHypervisor);
        assert!(other.message.contains("cannot open /dev/kvm"));
    }
}
