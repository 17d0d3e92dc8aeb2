//! CPU vendor profiles: whose silicon krr-emu imitates where the manuals leave a result open.
//!
//! A replay must reproduce what the recorded CPU did, also where the SDM/APM say "undefined":
//! a kernel that pushes RFLAGS after a MUL, or spills a register a 16-bit SHLD by 20 wrote, sees
//! the vendor's answer. AMD and Intel answer differently (measured with krr-difftest: the AMD EPYC
//! hosts of this project directly, an Intel Xeon through its report in `crates/krr-difftest/golden`).
//! Where the vendors differ, the instruction code asks [`Vendor`]; the rules, side by side
//! (FXSAVE's MXCSR_MASK differs too — AMD 0x2ffff with its misaligned-SSE mode — but krr-emu
//! has no such mode and reports 0xffff in both profiles):
//!
//! | instruction | AMD (Zen) | Intel (Xeon, family 6) |
//! |---|---|---|
//! | SHL/SHR/SAR, count ≠ 0 | AF = 1; OF from the last step (SHL: MSB(res) ^ CF, SHR: top two result bits, SAR: 0) | AF = 0; OF from the first step (SHL: top two bits of the operand, SHR: its MSB, SAR: 0) |
//! | ROL/ROR by CL, count > 1 | OF from the result (as for a count of 1) | OF from the first step (one-bit rotate of the operand) |
//! | ROL/ROR by an immediate > 1 | OF from the result | OF unchanged |
//! | RCL/RCR, count > 1 | OF from the result | OF from the first step |
//! | RCL/RCR 8/16-bit, count a multiple of width + 1 | CF kept, OF from the unchanged value | no flag changes |
//! | SHLD/SHRD, count ≠ 0 | AF = 1; OF from the result | AF = 0; OF from the first step |
//! | SHLD/SHRD r16, count 17..31 | shifts DEST:SRC:SRC; CF = 0 (and OF = 0 for SHLD) | shifts DEST:SRC:DEST (a 32-bit rotate); CF the last bit out |
//! | MUL/IMUL | SF, ZF, AF, PF unchanged | SF = MSB of the low half, ZF = AF = 0, PF = parity of the low byte |
//! | DIV/IDIV | CF, OF kept; AF = 1; SF = ZF = PF = 0 | every flag unchanged |
//! | TZCNT/LZCNT | OF unchanged | OF = 0 |
//! | REPE CMPSB, both operands fault | DS:[RSI] reported first | ES:[RDI] first (as every CMPS) |
//! | REP CMPS/SCAS faulting after some iterations | status flags of the last compare | status flags as before the instruction |
//! | #AC of 16-byte accesses (MOVUPS, MOVDQU...) | raised | not raised |
//! | FXSAVE FIP (last x87 instruction) | stored only with an exception pending (ES) | the last non-control x87 instruction's RIP |

use std::fmt;
use std::str::FromStr;

/// The vendor whose implementation-specific behaviour krr-emu follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Vendor {
    /// AMD Zen ("AuthenticAMD"), measured directly on this project's hosts.
    #[default]
    Amd,
    /// Intel Core/Xeon, family 6 ("GenuineIntel").
    Intel,
}

impl Vendor {
    /// Both profiles, in a fixed order.
    pub const ALL: [Vendor; 2] = [Vendor::Amd, Vendor::Intel];

    /// The profile for a CPUID vendor string (leaf 0: EBX, EDX, ECX), if krr-emu has one.
    /// Other vendors (Hygon, Zhaoxin, VIA...) have none: their undefined results were never
    /// measured.
    pub fn from_cpuid_vendor(id: &str) -> Option<Vendor> {
        match id {
            "AuthenticAMD" => Some(Vendor::Amd),
            "GenuineIntel" => Some(Vendor::Intel),
            _ => None,
        }
    }

    /// The CPUID vendor string of this profile.
    pub fn cpuid_vendor(self) -> &'static str {
        match self {
            Vendor::Amd => "AuthenticAMD",
            Vendor::Intel => "GenuineIntel",
        }
    }

    /// Short lower-case name (`amd`, `intel`), as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Amd => "amd",
            Vendor::Intel => "intel",
        }
    }

    /// The CPUID vendor string of the CPU this process runs on.
    pub fn host_cpuid_vendor() -> String {
        #[cfg(target_arch = "x86_64")]
        {
            let r = std::arch::x86_64::__cpuid(0);
            let mut b = Vec::with_capacity(12);
            for w in [r.ebx, r.edx, r.ecx] {
                b.extend_from_slice(&w.to_le_bytes());
            }
            String::from_utf8_lossy(&b).into_owned()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            String::from("(not x86-64)")
        }
    }

    /// The profile of the CPU this process runs on, if krr-emu has one.
    pub fn host() -> Option<Vendor> {
        Vendor::from_cpuid_vendor(&Vendor::host_cpuid_vendor())
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Vendor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "amd" | "authenticamd" => Ok(Vendor::Amd),
            "intel" | "genuineintel" => Ok(Vendor::Intel),
            _ => Err(format!("unknown CPU vendor profile {s:?} (krr-emu has amd and intel)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for v in Vendor::ALL {
            assert_eq!(v.name().parse::<Vendor>().unwrap(), v);
            assert_eq!(v.cpuid_vendor().parse::<Vendor>().unwrap(), v);
            assert_eq!(Vendor::from_cpuid_vendor(v.cpuid_vendor()), Some(v));
        }
        assert_eq!(Vendor::from_cpuid_vendor("HygonGenuine"), None);
        assert!("via".parse::<Vendor>().is_err());
    }

    use crate::testutil::{long_mode_cpu, read_u64, run_asm_on, status_flags_after, DATA};
    use iced_x86::code_asm::*;

    /// The status flags `f` leaves on a CPU of `v`, from `flags_in`.
    fn flags_after(
        v: Vendor,
        flags_in: u64,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> u64 {
        let mut cpu = long_mode_cpu();
        cpu.features.vendor = v;
        status_flags_after(cpu, flags_in, f)
    }

    #[test]
    fn the_table_in_programs() {
        use crate::cpu::flags::{AF, CF, OF, PF, SF, ZF};
        let all = CF | PF | AF | ZF | SF | OF;
        // MUL 0 * 0: AMD keeps SF/ZF/AF/PF, Intel computes SF/PF from the low half, ZF = AF = 0.
        let mul = |a: &mut CodeAssembler| {
            a.mov(ecx, 0)?;
            a.mov(rax, 0u64)?;
            a.mul(ecx)
        };
        assert_eq!(flags_after(Vendor::Amd, all, mul), SF | ZF | AF | PF);
        assert_eq!(flags_after(Vendor::Intel, all, mul), PF);
        // DIV: AMD sets AF and clears SF/ZF/PF; Intel changes nothing.
        let div = |a: &mut CodeAssembler| {
            a.mov(ecx, 7)?;
            a.mov(eax, 100)?;
            a.mov(edx, 0)?;
            a.div(ecx)
        };
        assert_eq!(flags_after(Vendor::Amd, SF | ZF | PF | CF, div), AF | CF);
        assert_eq!(flags_after(Vendor::Intel, SF | ZF | PF | CF, div), SF | ZF | PF | CF);
        // TZCNT keeps OF on AMD only.
        let tz = |a: &mut CodeAssembler| {
            a.mov(ecx, 0x80)?;
            a.tzcnt(eax, ecx)
        };
        assert_eq!(flags_after(Vendor::Amd, OF, tz), OF);
        assert_eq!(flags_after(Vendor::Intel, OF, tz), 0);
    }

    #[test]
    fn fxsave_stores_the_last_x87_instruction_on_intel_only() {
        for (v, want) in [(Vendor::Amd, 0), (Vendor::Intel, crate::testutil::CODE + 10)] {
            let mut cpu = long_mode_cpu();
            cpu.features.vendor = v;
            let (_, mem) = run_asm_on(cpu, |a| {
                a.mov(rdi, DATA)?; // 10 bytes
                a.fld1()?; // at CODE + 10
                a.fxsave64(ptr(rdi))
            });
            assert_eq!(read_u64(&mem, DATA + 8), want, "FIP, {v}");
        }
    }

    #[test]
    fn the_host_vendor_is_a_cpuid_string() {
        assert_eq!(Vendor::host_cpuid_vendor().len(), 12);
    }
}
