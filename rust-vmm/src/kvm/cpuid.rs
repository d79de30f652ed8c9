//! The CPUID the guest sees: KVM's supported CPUID with what a sandbox must not advertise removed
//! (docs/security.md, "CPUID"). Pure data in, data out, so it is tested without KVM.

use kvm_bindings::kvm_cpuid_entry2;

/// The KVM paravirtual leaves (kvmclock, steal time, async PF, PV EOI, ...).
const HYPERVISOR_LEAVES: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4000_00FF;

// Leaf 1.
const L1_ECX_MONITOR: u32 = 1 << 3;
const L1_ECX_VMX: u32 = 1 << 5;
const L1_ECX_SMX: u32 = 1 << 6;
const L1_ECX_PDCM: u32 = 1 << 15;
const L1_ECX_X2APIC: u32 = 1 << 21;
const L1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const L1_ECX_HYPERVISOR: u32 = 1 << 31;
const L1_EDX_APIC: u32 = 1 << 9;
/// EBX bits 31-24: the initial APIC ID.
const L1_EBX_APIC_ID: u32 = 0xFF00_0000;
/// EAX: keep stepping-free family (bits 11-8 and 27-20); model, extended model, stepping and type
/// go (they identify the host's exact part).
const L1_EAX_FAMILY: u32 = 0x0FF0_0F00;
// Leaf 0x8000_0001.
const E1_ECX_SVM: u32 = 1 << 2;
const E1_ECX_EXTAPIC: u32 = 1 << 3;
const E1_ECX_PERFCTR_CORE: u32 = 1 << 23;
// Leaf 7 subleaf 0.
const L7_EBX_TSC_ADJUST: u32 = 1 << 1;
/// The MAXPHYADDR the guest is told (leaf 0x8000_0008 EAX bits 7-0). Guest memory is at most
/// 1 GiB (30 bits); 39 is the smallest any x86-64 CPU reports, so it never claims more than the
/// host has.
pub const GUEST_PHYS_BITS: u32 = 39;

/// "hl-sandbox vCPU" padded with NULs, the brand string of leaves 0x8000_0002-4.
const BRAND: [u8; 48] = {
    let mut b = [0u8; 48];
    let s = b"hl-sandbox vCPU";
    let mut i = 0;
    while i < s.len() {
        b[i] = s[i];
        i += 1;
    }
    b
};

/// The leaves whose registers say which instructions and state the guest has: the vendor (0),
/// the feature flags (1, 7, 0x8000_0001) and the XSAVE layout (0xD). Leaf 1's EAX/EBX (family,
/// CLFLUSH size, logical count) are left out: they do not change what code runs.
const FEATURE_LEAVES: [u32; 5] = [0x0, 0x1, 0x7, 0xD, 0x8000_0001];

/// A fingerprint of the CPU features `entries` advertise (FNV-1a, 64-bit, over the
/// [`FEATURE_LEAVES`] in order of function and index): equal on hosts whose guests may run the
/// same compiled code and load the same vCPU state (XSAVE layout), different otherwise. Snapshot
/// files record it (docs/snapshot-format.md).
///
/// `granted` ([`extended_features`]) is hashed last: a VM that enables the AVX state runs code
/// (and saves vCPU state) that one without it cannot take.
pub fn features_fingerprint(entries: &[kvm_cpuid_entry2], granted: u64) -> u64 {
    let mut picked: Vec<&kvm_cpuid_entry2> = entries
        .iter()
        .filter(|e| FEATURE_LEAVES.contains(&e.function))
        .collect();
    picked.sort_by_key(|e| (e.function, e.index));
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |v: u32| {
        for b in v.to_le_bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for e in picked {
        let (eax, ebx) = if e.function == 1 {
            (0, 0)
        } else {
            (e.eax, e.ebx)
        };
        for v in [e.function, e.index, eax, ebx, e.ecx, e.edx] {
            eat(v);
        }
    }
    // Nothing more where nothing is granted: the fingerprint of an SSE-only VM is what it was
    // before the grant existed.
    if granted != 0 {
        eat(granted as u32);
        eat((granted >> 32) as u32);
    }
    hash
}

// The features of [`extended_features`] (the bits of `hl_hypervisor_info`'s `out[7]`, equal to the
// compiler library's feature flags: docs/cdylib-abi.md).
/// The VM enables the AVX state: CR4.OSXSAVE and XCR0 = x87|SSE|AVX.
pub const GRANT_AVX_STATE: u64 = 1 << 0;
pub const FEATURE_AVX: u64 = 1 << 1;
pub const FEATURE_AVX2: u64 = 1 << 2;
pub const FEATURE_FMA: u64 = 1 << 3;
pub const FEATURE_BMI1: u64 = 1 << 4;
pub const FEATURE_BMI2: u64 = 1 << 5;
pub const FEATURE_LZCNT: u64 = 1 << 6;
/// XCR0 bits: x87, SSE, AVX (the YMM upper halves).
pub const XCR0_X87_SSE_AVX: u64 = 0b111;
const L1_ECX_FMA: u32 = 1 << 12;
/// SSE3 (0), SSSE3 (9), SSE4.1 (19), SSE4.2 (20) and POPCNT (23): the Wasm artifacts' baseline
/// (`engine_config::BASELINE_FEATURES`).
const L1_ECX_SSE_BASELINE: u32 = 1 | 1 << 9 | 1 << 19 | 1 << 20 | 1 << 23;
const L1_ECX_XSAVE: u32 = 1 << 26;
const L1_ECX_OSXSAVE: u32 = 1 << 27;
const L1_ECX_AVX: u32 = 1 << 28;
const L7_EBX_BMI1: u32 = 1 << 3;
const L7_EBX_AVX2: u32 = 1 << 5;
const L7_EBX_BMI2: u32 = 1 << 8;
const E1_ECX_LZCNT: u32 = 1 << 5;

/// What the VM grants beyond the SSE baseline, from the (filtered) CPUID the guest sees: the AVX
/// state ([`GRANT_AVX_STATE`]) where `xsave_ok` (KVM can set XCRs and the user did not opt out)
/// and CPUID has XSAVE and AVX and leaf 0xD lists x87, SSE and AVX state; AVX, AVX2 and FMA only
/// with that grant (they need the state); BMI1, BMI2 and LZCNT wherever CPUID has them (general
/// registers only, no extended state). docs/abi.md "Entry".
pub fn extended_features(entries: &[kvm_cpuid_entry2], xsave_ok: bool) -> u64 {
    let reg = |function: u32, index: u32, pick: fn(&kvm_cpuid_entry2) -> u32| {
        entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .map_or(0, pick)
    };
    let l1_ecx = reg(0x1, 0, |e| e.ecx);
    let l7_ebx = reg(0x7, 0, |e| e.ebx);
    let e1_ecx = reg(0x8000_0001, 0, |e| e.ecx);
    let xcr0_supported =
        u64::from(reg(0xD, 0, |e| e.eax)) | u64::from(reg(0xD, 0, |e| e.edx)) << 32;
    let has = |reg: u32, bit: u32| reg & bit != 0;
    let mut out = 0;
    if xsave_ok
        && has(l1_ecx, L1_ECX_XSAVE)
        && has(l1_ecx, L1_ECX_AVX)
        && xcr0_supported & XCR0_X87_SSE_AVX == XCR0_X87_SSE_AVX
    {
        out |= GRANT_AVX_STATE | FEATURE_AVX;
        if has(l7_ebx, L7_EBX_AVX2) {
            out |= FEATURE_AVX2;
        }
        if has(l1_ecx, L1_ECX_FMA) {
            out |= FEATURE_FMA;
        }
    }
    for (on, bit) in [
        (has(l7_ebx, L7_EBX_BMI1), FEATURE_BMI1),
        (has(l7_ebx, L7_EBX_BMI2), FEATURE_BMI2),
        (has(e1_ecx, E1_ECX_LZCNT), FEATURE_LZCNT),
    ] {
        if on {
            out |= bit;
        }
    }
    out
}

/// The host CPU's feature registers that [`add_host_features`] reads: leaf 1 ECX, leaf 7 EBX,
/// leaf 0x8000_0001 ECX, and XCR0 as the host kernel set it (0 without OSXSAVE).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCpu {
    pub l1_ecx: u32,
    pub l7_ebx: u32,
    pub e1_ecx: u32,
    pub xcr0: u64,
}

impl HostCpu {
    /// This process's CPU (CPUID and `xgetbv` at CPL 3).
    pub fn read() -> Self {
        use std::arch::x86_64::__cpuid_count;
        // CPUID exists on every x86-64 CPU; leaves 7 and 0x8000_0001 are read only where the
        // maximum leaf reaches them.
        let (l0, l1, e0) = (
            __cpuid_count(0, 0),
            __cpuid_count(1, 0),
            __cpuid_count(0x8000_0000, 0),
        );
        let l7_ebx = if l0.eax >= 7 {
            __cpuid_count(7, 0).ebx
        } else {
            0
        };
        let e1_ecx = if e0.eax >= 0x8000_0001 {
            __cpuid_count(0x8000_0001, 0).ecx
        } else {
            0
        };
        let xcr0 = if l1.ecx & L1_ECX_OSXSAVE != 0 {
            let (lo, hi): (u32, u32);
            // SAFETY: CPUID says the OS enabled XSAVE (CR4.OSXSAVE), so `xgetbv` with ECX = 0
            // reads XCR0 and cannot fault; it touches only EAX, EDX and ECX.
            unsafe {
                std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                    options(nomem, nostack, preserves_flags));
            }
            u64::from(lo) | u64::from(hi) << 32
        } else {
            0
        };
        Self {
            l1_ecx: l1.ecx,
            l7_ebx,
            e1_ecx,
            xcr0,
        }
    }
}

/// Adds to the guest's CPUID the features of [`extended_features`] and of the Wasm baseline that
/// the host CPU has and KVM's CPUID lacks (kvm_pvm reports a leaf 1 with none of SSE3 to SSE4.2,
/// POPCNT, XSAVE or AVX, and a leaf 7 without AVX2 or BMI, on a CPU that has them all; where the
/// CPU has CPUID faulting the guest reads this table): SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, BMI1,
/// BMI2 and LZCNT where the host CPU has them (no extended state); XSAVE, AVX, FMA and AVX2 only
/// where the host kernel enabled the AVX state (its XCR0) and KVM's leaf 0xD lists x87, SSE and
/// AVX state. Nothing the host CPU lacks is ever added.
pub fn add_host_features(entries: &mut [kvm_cpuid_entry2], host: HostCpu) {
    let xcr0_kvm = entries
        .iter()
        .find(|e| e.function == 0xD && e.index == 0)
        .map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
    let avx_state = host.xcr0 & XCR0_X87_SSE_AVX == XCR0_X87_SSE_AVX
        && xcr0_kvm & XCR0_X87_SSE_AVX == XCR0_X87_SSE_AVX
        && host.l1_ecx & (L1_ECX_XSAVE | L1_ECX_AVX) == L1_ECX_XSAVE | L1_ECX_AVX;
    for e in entries.iter_mut() {
        match (e.function, e.index) {
            (0x1, _) => {
                let avx = if avx_state {
                    L1_ECX_XSAVE | L1_ECX_AVX | L1_ECX_FMA
                } else {
                    0
                };
                e.ecx |= host.l1_ecx & (L1_ECX_SSE_BASELINE | avx);
            }
            (0x7, 0) => {
                let avx2 = if avx_state { L7_EBX_AVX2 } else { 0 };
                e.ebx |= host.l7_ebx & (L7_EBX_BMI1 | L7_EBX_BMI2 | avx2);
            }
            (0x8000_0001, _) => e.ecx |= host.e1_ecx & E1_ECX_LZCNT,
            _ => {}
        }
    }
}

/// The host CPU as [`add_host_features`] sees it under the AVX policy (`HL_VCPU_AVX`): with the
/// opt-out its XCR0 is hidden, so the AVX tier is withheld while the SSE baseline, BMI and LZCNT
/// bits are still added (without them a CPU with CPUID faulting would refuse every baseline
/// artifact).
pub fn host_for_policy(host: HostCpu, avx: bool) -> HostCpu {
    if avx {
        host
    } else {
        HostCpu { xcr0: 0, ..host }
    }
}

/// Filters `entries` in place (see the module doc and docs/security.md).
pub fn filter(entries: &mut Vec<kvm_cpuid_entry2>) {
    entries.retain(|e| {
        !HYPERVISOR_LEAVES.contains(&e.function)
            // x2APIC topology, and the PMU / SVM details: no APIC, no PMU, no nesting.
            && !matches!(e.function, 0x0B | 0x1F | 0x0A | 0x8000_000A)
    });
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.eax &= L1_EAX_FAMILY;
                e.ebx &= !L1_EBX_APIC_ID;
                e.ecx &= !(L1_ECX_MONITOR
                    | L1_ECX_VMX
                    | L1_ECX_SMX
                    | L1_ECX_PDCM
                    | L1_ECX_X2APIC
                    | L1_ECX_TSC_DEADLINE
                    | L1_ECX_HYPERVISOR);
                e.edx &= !L1_EDX_APIC;
            }
            0x7 if e.index == 0 => e.ebx &= !L7_EBX_TSC_ADJUST,
            0x8000_0001 => {
                e.eax &= L1_EAX_FAMILY;
                e.ecx &= !(E1_ECX_SVM | E1_ECX_EXTAPIC | E1_ECX_PERFCTR_CORE);
            }
            0x8000_0002..=0x8000_0004 => {
                let at = (e.function - 0x8000_0002) as usize * 16;
                let word = |i: usize| {
                    let b = &BRAND[at + 4 * i..at + 4 * i + 4];
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                (e.eax, e.ebx, e.ecx, e.edx) = (word(0), word(1), word(2), word(3));
            }
            0x8000_0008 => {
                let host = e.eax & 0xFF;
                e.eax = (e.eax & !0xFF) | host.min(GUEST_PHYS_BITS);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    #[test]
    fn masks_what_a_sandbox_must_not_advertise() {
        let mut e = vec![
            entry(0x1, 0, [0x00A0_0F11, 0x0708_0800, u32::MAX, u32::MAX]),
            entry(0x7, 0, [0, u32::MAX, 0, 0]),
            entry(0xA, 0, [u32::MAX; 4]),
            entry(0xB, 0, [1; 4]),
            entry(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x4000_0001, 0, [u32::MAX; 4]),
            entry(0x8000_0001, 0, [0x00A0_0F11, 0, u32::MAX, u32::MAX]),
            entry(0x8000_0002, 0, [u32::MAX; 4]),
            entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
            entry(0x8000_000A, 0, [u32::MAX; 4]),
        ];
        filter(&mut e);
        let get = |f: u32| e.iter().find(|x| x.function == f);
        for gone in [0xA, 0xB, 0x4000_0000, 0x4000_0001, 0x8000_000A] {
            assert!(get(gone).is_none(), "{gone:#x}");
        }
        let l1 = get(0x1).unwrap();
        assert_eq!(l1.eax, 0x00A0_0F00, "family kept, model and stepping gone");
        assert_eq!(l1.ebx >> 24, 0, "APIC ID");
        for bit in [3, 5, 6, 15, 21, 24, 31] {
            assert_eq!(l1.ecx & (1 << bit), 0, "leaf 1 ECX bit {bit}");
        }
        assert_eq!(l1.edx & (1 << 9), 0, "APIC");
        assert_eq!(l1.ecx & 1, 1, "unrelated bits stay");
        assert_eq!(get(0x7).unwrap().ebx & 2, 0);
        assert_eq!(get(0x8000_0001).unwrap().ecx & (1 << 2), 0, "SVM");
        assert_eq!(get(0x8000_0002).unwrap().eax, u32::from_le_bytes(*b"hl-s"));
        assert_eq!(
            get(0x8000_0008).unwrap().eax,
            0x3027,
            "phys 48 -> 39, virt kept"
        );
    }

    /// Extended state is not trimmed here (docs/security.md, "What the guest can read about the
    /// host"): on kvm_pvm CPL-3 code runs with the host's XCR0 whatever the vCPU is told, and the
    /// XSAVE leaves are what KVM sizes the state it saves across exits and snapshots by.
    #[test]
    fn keeps_the_extended_state_leaves() {
        let l1 = [0x00A0_0F11, 0, (1 << 26) | (1 << 28), 0];
        let l7 = [0, (1 << 5) | (1 << 16), 0, 0];
        let xsave = [0x207, 0x988, 0x988, 0];
        let mut e = vec![
            entry(0x1, 0, l1),
            entry(0x7, 0, l7),
            entry(0xD, 0, xsave),
            entry(0xD, 2, [0x100, 0x240, 0, 0]),
        ];
        filter(&mut e);
        assert_eq!(e[0].ecx, l1[2], "XSAVE and AVX advertised as KVM has them");
        assert_eq!(
            e[1].ebx, l7[1],
            "AVX2 and AVX-512F advertised as KVM has them"
        );
        assert_eq!([e[2].eax, e[2].ebx, e[2].ecx, e[2].edx], xsave);
        assert_eq!(e[3].eax, 0x100, "the AVX state component's size");
    }

    /// The fingerprint changes with a feature bit or the XSAVE layout, not with the family,
    /// the APIC ID, other leaves or the order of the entries.
    #[test]
    fn the_features_fingerprint_follows_features_only() {
        let base = vec![
            entry(0x1, 0, [0x00A0_0F11, 0x0708_0800, 1 << 28, 1 << 26]),
            entry(0x7, 0, [0, 1 << 5, 0, 0]),
            entry(0xD, 0, [0x207, 0x988, 0x988, 0]),
            entry(0x8000_0002, 0, [1, 2, 3, 4]),
        ];
        let fp = features_fingerprint(&base, 0);
        let mut reordered = base.clone();
        reordered.reverse();
        assert_eq!(features_fingerprint(&reordered, 0), fp);
        let mut family = base.clone();
        family[0].eax = 0x00B0_0F12;
        family[0].ebx = 0x0100_0800;
        family[3].eax = 9;
        assert_eq!(features_fingerprint(&family, 0), fp);
        let mut avx2 = base.clone();
        avx2[1].ebx &= !(1 << 5);
        assert_ne!(features_fingerprint(&avx2, 0), fp);
        let mut xsave = base.clone();
        xsave[2].eax = 0x7;
        assert_ne!(features_fingerprint(&xsave, 0), fp);
        assert_ne!(
            features_fingerprint(&base, GRANT_AVX_STATE | FEATURE_AVX),
            fp,
            "the AVX grant"
        );
    }

    /// Host features are added only where the host CPU has them, the AVX tier only with the host
    /// kernel's AVX state and KVM's leaf 0xD listing it; nothing else changes.
    #[test]
    fn adds_only_what_the_host_cpu_has() {
        let kvm = vec![
            entry(0x1, 0, [0, 0, 0x2000, 0]),
            entry(0x7, 0, [0, 0x0180_0000, 0, 0]),
            entry(0xD, 0, [0x207, 0x988, 0x988, 0]),
            entry(0x8000_0001, 0, [0, 0, 0x1, 0]),
        ];
        let host = HostCpu {
            l1_ecx: L1_ECX_XSAVE
                | L1_ECX_OSXSAVE
                | L1_ECX_AVX
                | L1_ECX_FMA
                | L1_ECX_SSE_BASELINE
                | 1 << 5,
            l7_ebx: L7_EBX_AVX2 | L7_EBX_BMI1 | L7_EBX_BMI2 | 1 << 16,
            e1_ecx: E1_ECX_LZCNT | 1 << 6,
            xcr0: 0x207,
        };
        let mut e = kvm.clone();
        add_host_features(&mut e, host);
        assert_eq!(
            e[0].ecx,
            0x2000 | L1_ECX_SSE_BASELINE | L1_ECX_XSAVE | L1_ECX_AVX | L1_ECX_FMA,
            "no OSXSAVE (KVM's, from CR4), no VMX"
        );
        assert_eq!(
            e[1].ebx,
            0x0180_0000 | L7_EBX_AVX2 | L7_EBX_BMI1 | L7_EBX_BMI2,
            "no AVX-512F"
        );
        assert_eq!(e[3].ecx, 0x1 | E1_ECX_LZCNT);
        assert_eq!(extended_features(&e, true), 0x7f);
        // The host kernel did not enable AVX: only the general-register features.
        let mut e = kvm.clone();
        add_host_features(&mut e, HostCpu { xcr0: 0x3, ..host });
        assert_eq!(e[0].ecx, 0x2000 | L1_ECX_SSE_BASELINE);
        assert_eq!(e[1].ebx, 0x0180_0000 | L7_EBX_BMI1 | L7_EBX_BMI2);
        assert_eq!(
            extended_features(&e, true),
            FEATURE_BMI1 | FEATURE_BMI2 | FEATURE_LZCNT
        );
        // The opt-out (HL_VCPU_AVX=0): the baseline and general-register bits, no AVX tier.
        let mut e = kvm.clone();
        add_host_features(&mut e, host_for_policy(host, false));
        assert_eq!(e[0].ecx, 0x2000 | L1_ECX_SSE_BASELINE);
        assert_eq!(e[1].ebx, 0x0180_0000 | L7_EBX_BMI1 | L7_EBX_BMI2);
        assert_eq!(
            extended_features(&e, false),
            FEATURE_BMI1 | FEATURE_BMI2 | FEATURE_LZCNT
        );
        let mut e = kvm.clone();
        add_host_features(&mut e, host_for_policy(host, true));
        assert_eq!(extended_features(&e, true), 0x7f);
        // KVM cannot hold the AVX state.
        let mut e = kvm.clone();
        e[2].eax = 0x3;
        add_host_features(&mut e, host);
        assert_eq!(e[0].ecx, 0x2000 | L1_ECX_SSE_BASELINE);
        // A host CPU without any of them: nothing changes.
        let mut e = kvm.clone();
        add_host_features(&mut e, HostCpu::default());
        assert_eq!(
            e.iter()
                .map(|e| (e.eax, e.ebx, e.ecx, e.edx))
                .collect::<Vec<_>>(),
            kvm.iter()
                .map(|e| (e.eax, e.ebx, e.ecx, e.edx))
                .collect::<Vec<_>>()
        );
    }

    /// AVX, AVX2 and FMA only with the AVX state granted; BMI and LZCNT as CPUID has them;
    /// nothing the CPUID lacks.
    #[test]
    fn grants_what_cpuid_and_kvm_have() {
        let full = vec![
            entry(0x1, 0, [0, 0, L1_ECX_XSAVE | L1_ECX_AVX | L1_ECX_FMA, 0]),
            entry(0x7, 0, [0, L7_EBX_AVX2 | L7_EBX_BMI1 | L7_EBX_BMI2, 0, 0]),
            entry(0xD, 0, [0x207, 0x988, 0x988, 0]),
            entry(0x8000_0001, 0, [0, 0, E1_ECX_LZCNT, 0]),
        ];
        let gpr = FEATURE_BMI1 | FEATURE_BMI2 | FEATURE_LZCNT;
        assert_eq!(
            extended_features(&full, true),
            GRANT_AVX_STATE | FEATURE_AVX | FEATURE_AVX2 | FEATURE_FMA | gpr
        );
        assert_eq!(
            extended_features(&full, false),
            gpr,
            "KVM has no XCRs, or opted out"
        );
        let mut no_avx = full.clone();
        no_avx[0].ecx &= !L1_ECX_AVX;
        assert_eq!(extended_features(&no_avx, true), gpr);
        let mut no_ymm_state = full.clone();
        no_ymm_state[2].eax = 0x3;
        assert_eq!(extended_features(&no_ymm_state, true), gpr);
        let mut no_xsave = full.clone();
        no_xsave[0].ecx &= !L1_ECX_XSAVE;
        assert_eq!(extended_features(&no_xsave, true), gpr);
        assert_eq!(
            extended_features(&full[..1], true),
            0,
            "no leaf 0xD: no grant"
        );
    }
}
