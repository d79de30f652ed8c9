//! A KVM VM: memory slots and vCPU creation.

use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, CpuId, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;

use super::vcpu::KvmVcpu;
use crate::backend::{Capabilities, VcpuBackend, VcpuConfig, VmBackend};
use crate::error::{Error, Result};
use crate::stats::Counters;

pub struct KvmVm {
    fd: VmFd,
    counters: Arc<Counters>,
    cpuid: Arc<CpuId>,
    caps: Capabilities,
    intel: bool,
}

impl KvmVm {
    pub fn new(
        fd: VmFd,
        counters: Arc<Counters>,
        cpuid: Arc<CpuId>,
        caps: Capabilities,
        intel: bool,
    ) -> Self {
        Self {
            fd,
            counters,
            cpuid,
            caps,
            intel,
        }
    }
}

impl VmBackend for KvmVm {
    unsafe fn map_memory(
        &self,
        slot: u32,
        gpa: u64,
        host: *mut u8,
        size: u64,
        readonly: bool,
    ) -> Result<()> {
        if readonly && !self.caps.readonly_memory {
            return Err(Error::invalid_argument(
                "read-only guest memory is not supported by this KVM (no KVM_CAP_READONLY_MEM)",
            ));
        }
        let region = kvm_userspace_memory_region {
            slot,
            flags: if readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        };
        self.counters.ioctl(1);
        // SAFETY: the caller guarantees the host range stays mapped for the VM's lifetime.
        super::retry_eintr(|| unsafe { self.fd.set_user_memory_region(region) })
            .map_err(|e| Error::hypervisor("KVM_SET_USER_MEMORY_REGION", e.errno()))
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> Result<Box<dyn VcpuBackend>> {
        let vcpu = KvmVcpu::new(
            &self.fd,
            &self.cpuid,
            config,
            self.intel,
            self.caps.granted_features,
            self.counters.clone(),
        )?;
        Ok(Box::new(vcpu))
    }
}
