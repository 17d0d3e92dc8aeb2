//! The CPUID krr presents to guests. The guest kernel picks code paths from CPUID at boot
//! (alternatives, static keys), so a trace recorded on one backend replays on krr-emu only if the
//! recorded kernel saw no feature krr-emu lacks. Both backends therefore present the host's (or
//! the emulator's) CPUID minus the features below; the table goes into the trace.

/// One CPUID entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidLeaf {
    pub function: u32,
    pub index: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

// Leaf 1 ECX.
const L1_ECX_CLEAR: u32 = 1 << 3 // MONITOR/MWAIT: idle must HLT so the VMM sees it
    | 1 << 5 // VMX
    | 1 << 12 // FMA
    | 1 << 17 // PCID
    | 1 << 21 // x2APIC
    | 1 << 22 // MOVBE
    | 1 << 23 // POPCNT
    | 1 << 26 // XSAVE
    | 1 << 27 // OSXSAVE
    | 1 << 28 // AVX
    | 1 << 29 // F16C
    | 1 << 30; // RDRAND
               // Leaf 1 EDX.
const L1_EDX_CLEAR: u32 = 1 << 22 // ACPI thermal MSRs
    | 1 << 29; // TM
               // Leaf 0x80000001 ECX: LZCNT, SSE4a, misaligned SSE, PREFETCHW, XOP, FMA4, TBM, perfctr extensions.
const EXT1_ECX_CLEAR: u32 = 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 11 | 1 << 16 | 1 << 21 | 1 << 23;
// Leaf 0x80000001 EDX: RDTSCP is kept; 1 GiB pages are kept.

/// Apply krr's reductions to `leaves` (as the host reports them) for vCPU `apic_id`.
pub fn reduce(leaves: &mut Vec<CpuidLeaf>, apic_id: u32) {
    leaves.retain(|l| !matches!(l.function, 0xa | 0xd | 0xb | 0x1f | 0x14 | 0x12 | 0x0f | 0x10));
    for l in leaves.iter_mut() {
        match l.function {
            1 => {
                l.ecx &= !L1_ECX_CLEAR;
                l.ecx |= 1 << 31; // running under a hypervisor
                l.edx &= !L1_EDX_CLEAR;
                l.ebx = (l.ebx & 0x00ff_ffff) | (apic_id << 24);
            }
            // Structured extended features (FSGSBASE, BMI, AVX2, SMEP, SMAP, INVPCID, RDSEED,
            // PKU, RDPID, ...): none, except ERMS which only changes `rep movsb` speed.
            7 => {
                l.eax = 0;
                l.ebx &= 1 << 9;
                l.ecx = 0;
                l.edx = 0;
            }
            6 => {
                l.eax = 0; // no turbo/HWP/APERF-MPERF power management
                l.ecx = 0;
            }
            0x8000_0001 => l.ecx &= !EXT1_ECX_CLEAR,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clears_what_krr_emu_lacks() {
        let mut v = vec![
            CpuidLeaf { function: 1, index: 0, eax: 0x806c1, ebx: 0x0a, ecx: u32::MAX, edx: u32::MAX },
            CpuidLeaf { function: 7, index: 0, eax: 1, ebx: u32::MAX, ecx: u32::MAX, edx: u32::MAX },
            CpuidLeaf { function: 0xd, index: 0, eax: 7, ebx: 0, ecx: 0, edx: 0 },
        ];
        reduce(&mut v, 3);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].ecx & (1 << 28 | 1 << 26 | 1 << 21), 0);
        assert_eq!(v[0].ebx >> 24, 3);
        assert_eq!(v[1].ebx, 1 << 9);
    }
}
