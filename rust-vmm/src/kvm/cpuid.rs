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
pub fn features_fingerprint(entries: &[kvm_cpuid_entry2]) -> u64 {
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
    hash
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
        let fp = features_fingerprint(&base);
        let mut reordered = base.clone();
        reordered.reverse();
        assert_eq!(features_fingerprint(&reordered), fp);
        let mut family = base.clone();
        family[0].eax = 0x00B0_0F12;
        family[0].ebx = 0x0100_0800;
        family[3].eax = 9;
        assert_eq!(features_fingerprint(&family), fp);
        let mut avx2 = base.clone();
        avx2[1].ebx &= !(1 << 5);
        assert_ne!(features_fingerprint(&avx2), fp);
        let mut xsave = base.clone();
        xsave[2].eax = 0x7;
        assert_ne!(features_fingerprint(&xsave), fp);
    }
}
