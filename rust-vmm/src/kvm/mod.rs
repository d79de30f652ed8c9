//! The KVM backend, on the rust-vmm crates (`kvm-ioctls`, `kvm-bindings`).

mod cpuid;
mod vcpu;
mod vm;

use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VmFd};

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
    /// Whether KVM has KVM_CAP_X86_MSR_FILTER (checked once; see [`msr_filter_policy`]).
    msr_filter: bool,
}

/// The environment variable that lets VMs run without an MSR filter where KVM lacks one.
pub const ALLOW_NO_MSR_FILTER_ENV: &str = "HL_ALLOW_NO_MSR_FILTER";

/// Whether to install the MSR filter: yes where KVM has it; where it does not, fail closed unless
/// the user opted out with `HL_ALLOW_NO_MSR_FILTER=1` (guests run at CPL 3, where `rdmsr`/`wrmsr`
/// are #GP before KVM sees them, so the filter is defence in depth; docs/security.md).
fn msr_filter_policy(has_cap: bool, opt_out: Option<&std::ffi::OsStr>) -> Result<bool> {
    if has_cap {
        return Ok(true);
    }
    if opt_out.is_some_and(|v| v == "1") {
        return Ok(false);
    }
    Err(Error::new(
        Code::ApiVersion,
        "KVM lacks KVM_CAP_X86_MSR_FILTER (Linux 5.10+), so guest MSR accesses cannot be \
         default-denied: use a newer kernel, or set HL_ALLOW_NO_MSR_FILTER=1 to run without the \
         filter (guests run at CPL 3, where rdmsr/wrmsr fault anyway; see docs/security.md)",
    ))
}

/// The environment variable that keeps the VM's setup without the AVX state (`0`): no CR4.OSXSAVE,
/// XCR0 left at KVM's x87 default, no XSAVE/AVX/AVX2/FMA in the guest's CPUID, and Wasm artifacts
/// compiled without AVX (BMI1/BMI2/LZCNT, which need no extended state, and the SSE baseline stay
/// where the CPU has them; docs/abi.md "Entry"). A setup, not an enforcement boundary: on kvm_pvm
/// CPL-3 code runs with the host's CR4/XCR0, so AVX instructions still execute there.
pub const AVX_ENV: &str = "HL_VCPU_AVX";

/// Whether the user lets the VM enable the AVX state (anything but `HL_VCPU_AVX=0`).
fn avx_policy(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_none_or(|v| v != "0")
}

/// How often a setup ioctl is tried again after a signal interrupted it.
const EINTR_RETRIES: u32 = 100;

/// Runs a setup ioctl again when a signal interrupted it (EINTR): KVM_CREATE_VM, for one, waits
/// interruptibly, and a process that takes signals (a profiler's SIGPROF, a timer) must not see
/// a create fail for it. Bounded, so a signal storm ends in the error instead of a hang.
pub(crate) fn retry_eintr<T>(
    mut ioctl: impl FnMut() -> std::result::Result<T, kvm_ioctls::Error>,
) -> std::result::Result<T, kvm_ioctls::Error> {
    let mut tries = 0;
    loop {
        match ioctl() {
            Err(e) if e.errno() == libc::EINTR && tries < EINTR_RETRIES => tries += 1,
            result => return result,
        }
    }
}

/// Installs a default-deny MSR filter on `vm`: every guest `rdmsr`/`wrmsr` that KVM would handle
/// is refused (#GP injected). KVM rejects a deny filter with no range, so one range with an
/// all-zero (deny) bitmap is given. Host-side KVM_SET_MSRS is not filtered.
fn install_msr_filter(vm: &VmFd) -> Result<()> {
    let deny = [0u8; 1];
    let range = MsrFilterRange {
        flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
        base: 0,
        msr_count: 8,
        bitmap: &deny,
    };
    retry_eintr(|| vm.set_msr_filter(MsrFilterDefaultAction::DENY, &[range]))
        .map_err(|e| Error::hypervisor("KVM_X86_SET_MSR_FILTER", e.errno()))
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
            cpu_features: 0,
            granted_features: 0,
        };
        global_ioctl(5);
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| Error::hypervisor("KVM_GET_SUPPORTED_CPUID", e.errno()))?;
        global_ioctl(1);
        let mut entries = supported.as_slice().to_vec();
        cpuid::filter(&mut entries);
        // The SSE baseline, BMI and LZCNT bits KVM's table lacks are added either way; the
        // opt-out withholds the AVX tier (`host_for_policy`).
        let avx = avx_policy(std::env::var_os(AVX_ENV).as_deref());
        cpuid::add_host_features(
            &mut entries,
            cpuid::host_for_policy(cpuid::HostCpu::read(), avx),
        );
        let cpuid = CpuId::from_entries(&entries)
            .map_err(|_| Error::hypervisor("building the filtered CPUID", libc::EINVAL))?;
        let msr_filter = kvm.check_extension(Cap::X86MsrFilter);
        global_ioctl(1);
        let xsave_ok =
            avx_policy(std::env::var_os(AVX_ENV).as_deref()) && kvm.check_extension(Cap::Xcrs);
        global_ioctl(1);
        let granted = cpuid::extended_features(cpuid.as_slice(), xsave_ok);
        let caps = Capabilities {
            cpu_features: cpuid::features_fingerprint(cpuid.as_slice(), granted),
            granted_features: granted,
            ..caps
        };
        let intel = cpuid
            .as_slice()
            .iter()
            .any(|e| e.function == 0 && e.ebx == CPUID_VENDOR_INTEL_EBX);
        Ok(Self {
            kvm,
            caps,
            cpuid: Arc::new(cpuid),
            intel,
            msr_filter,
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

    fn check_vcpu_state(&self, blob: &[u8]) -> Result<()> {
        vcpu::check_state(blob)
    }

    fn create_vm(&self, counters: Arc<Counters>) -> Result<Arc<dyn VmBackend>> {
        let fd = retry_eintr(|| self.kvm.create_vm())
            .map_err(|e| Error::hypervisor("KVM_CREATE_VM", e.errno()))?;
        // KVM_CREATE_VM, and KVM_GET_VCPU_MMAP_SIZE inside kvm-ioctls' create_vm.
        counters.ioctl(2);
        if msr_filter_policy(
            self.msr_filter,
            std::env::var_os(ALLOW_NO_MSR_FILTER_ENV).as_deref(),
        )? {
            install_msr_filter(&fd)?;
            counters.ioctl(1);
        }
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
    use crate::backend::VcpuBackend;

    #[test]
    fn an_interrupted_setup_ioctl_is_tried_again_but_not_forever() {
        let mut calls = 0;
        let r = retry_eintr(|| {
            calls += 1;
            if calls < 3 {
                Err(kvm_ioctls::Error::new(libc::EINTR))
            } else {
                Ok(7)
            }
        });
        assert_eq!((r.unwrap(), calls), (7, 3));
        let mut calls = 0;
        let r: std::result::Result<(), _> = retry_eintr(|| {
            calls += 1;
            Err(kvm_ioctls::Error::new(libc::EINTR))
        });
        assert_eq!(
            (r.unwrap_err().errno(), calls),
            (libc::EINTR, EINTR_RETRIES + 1)
        );
        // Other errors are not retried.
        let mut calls = 0;
        let r: std::result::Result<(), _> = retry_eintr(|| {
            calls += 1;
            Err(kvm_ioctls::Error::new(libc::EINVAL))
        });
        assert_eq!((r.unwrap_err().errno(), calls), (libc::EINVAL, 1));
    }

    #[test]
    fn msr_filter_fails_closed_without_the_capability() {
        use std::ffi::OsStr;
        assert!(msr_filter_policy(true, None).unwrap());
        assert!(msr_filter_policy(true, Some(OsStr::new("1"))).unwrap());
        let err = msr_filter_policy(false, None).unwrap_err();
        assert!(err.message.contains("KVM_CAP_X86_MSR_FILTER"));
        assert!(err.message.contains(ALLOW_NO_MSR_FILTER_ENV));
        assert!(msr_filter_policy(false, Some(OsStr::new("0"))).is_err());
        assert!(!msr_filter_policy(false, Some(OsStr::new("1"))).unwrap());
    }

    /// On this machine's KVM (whatever it is) the deny filter is accepted, and a VM with it
    /// still runs (the KVM tests run every guest on such VMs).
    #[test]
    fn the_deny_filter_installs() {
        let Ok(kvm) = Kvm::new() else {
            println!("SKIPPED: no /dev/kvm");
            return;
        };
        if !kvm.check_extension(Cap::X86MsrFilter) {
            println!("SKIPPED: this KVM has no KVM_CAP_X86_MSR_FILTER");
            return;
        }
        let vm = kvm.create_vm().unwrap();
        install_msr_filter(&vm).unwrap();
    }

    /// The filtered CPUID is what every vCPU gets.
    #[test]
    fn the_hypervisor_holds_the_filtered_cpuid() {
        let Ok(h) = KvmHypervisor::open() else {
            println!("SKIPPED: no /dev/kvm");
            return;
        };
        let e = h.cpuid.as_slice();
        assert!(!e
            .iter()
            .any(|e| (0x4000_0000..=0x4000_00FF).contains(&e.function)));
        let l1 = e.iter().find(|e| e.function == 1).unwrap();
        assert_eq!(l1.ecx & (1 << 21 | 1 << 31 | 1 << 5), 0);
    }

    #[test]
    fn the_avx_opt_out_is_zero_only() {
        use std::ffi::OsStr;
        assert!(avx_policy(None));
        assert!(avx_policy(Some(OsStr::new("1"))));
        assert!(!avx_policy(Some(OsStr::new("0"))));
    }

    /// XCR0 as KVM holds it for `fd`.
    fn xcr0(fd: &kvm_ioctls::VcpuFd) -> u64 {
        let x = fd.get_xcrs().unwrap();
        let n = (x.nr_xcrs as usize).min(x.xcrs.len());
        x.xcrs[..n].iter().find(|x| x.xcr == 0).unwrap().value
    }

    /// A new vCPU has CR4.OSXSAVE and XCR0 = x87|SSE|AVX exactly where the hypervisor reports the
    /// grant (KVM's x87-only default otherwise), and a restore puts the snapshot's CR4 and XCR0
    /// back on a vCPU set up without the grant. Holds on every host: where the CPU or KVM lacks
    /// AVX, the grant is 0 and the test checks the SSE-only setup.
    #[test]
    fn the_avx_grant_is_in_the_vcpu_and_its_restored_state() {
        let Ok(h) = KvmHypervisor::open() else {
            println!("SKIPPED: no /dev/kvm");
            return;
        };
        let granted = h.caps.granted_features;
        let avx = granted & cpuid::GRANT_AVX_STATE != 0;
        assert_eq!(avx, granted & cpuid::FEATURE_AVX != 0, "{granted:#x}");
        if !avx {
            assert_eq!(granted & (cpuid::FEATURE_AVX2 | cpuid::FEATURE_FMA), 0);
        }
        let config =
            crate::backend::VcpuConfig::from_words(&[0x1000, 0, 0, 0, 0, 0, 0, 0x23, 0x1b, 0])
                .unwrap();
        let counters = Arc::new(Counters::default());
        let vm = h.kvm.create_vm().unwrap();
        let mut a =
            vcpu::KvmVcpu::new(&vm, &h.cpuid, &config, h.intel, granted, counters.clone()).unwrap();
        let cr4 = a.get_special_regs().unwrap()[3];
        assert_eq!(cr4 & (1 << 18) != 0, avx, "CR4.OSXSAVE");
        let want_xcr0 = if avx { cpuid::XCR0_X87_SSE_AVX } else { 1 };
        if h.kvm.check_extension(Cap::Xcrs) {
            assert_eq!(xcr0(a.fd()), want_xcr0);
        }
        let state = a.get_state().unwrap();
        drop(a);
        let vm = h.kvm.create_vm().unwrap();
        let mut b =
            vcpu::KvmVcpu::new(&vm, &h.cpuid, &config, h.intel, 0, counters.clone()).unwrap();
        assert_eq!(b.get_special_regs().unwrap()[3] & (1 << 18), 0);
        b.set_state(&state).unwrap();
        assert_eq!(b.get_special_regs().unwrap()[3], cr4, "CR4 restored");
        if h.kvm.check_extension(Cap::Xcrs) {
            assert_eq!(xcr0(b.fd()), want_xcr0, "XCR0 restored");
        }
    }

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
