//! The register file GDB sees: x86-64 as GDB's own `amd64` target descriptions lay it out
//! (core, x87, SSE, FS/GS base), plus the system registers a kernel debugger needs
//! (`org.krr.sys`: KERNEL_GS_BASE, CR0, CR2, CR3, CR4, CR8, EFER).

use gdbstub::arch::{Arch, RegId, Registers};
use krr_emu::{Cpu, SegReg};

/// x86-64 with krr's target description.
#[derive(Debug)]
pub enum X86_64Krr {}

impl Arch for X86_64Krr {
    type Usize = u64;
    type Registers = Regs;
    type BreakpointKind = usize;
    type RegId = NoRegId;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// Single registers are not accessed one by one (the `g` packet carries them all).
#[derive(Debug)]
pub enum NoRegId {}

impl RegId for NoRegId {
    fn from_raw_id(_id: usize) -> Option<(Self, Option<std::num::NonZeroUsize>)> {
        None
    }
}

/// KRR-emu GPR index (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..) of GDB's rax, rbx, rcx,
/// rdx, rsi, rdi, rbp, rsp, r8..r15.
const GPR_ORDER: [usize; 16] = [0, 3, 1, 2, 6, 7, 5, 4, 8, 9, 10, 11, 12, 13, 14, 15];
/// GDB's cs, ss, ds, es, fs, gs.
const SEG_ORDER: [SegReg; 6] = [SegReg::Cs, SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs];

/// Every register, in target-description order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs {
    /// rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..r15 (GDB's order).
    pub gpr: [u64; 16],
    pub rip: u64,
    pub eflags: u32,
    /// cs, ss, ds, es, fs, gs selectors.
    pub seg: [u32; 6],
    /// st0..st7 (80-bit).
    pub st: [[u8; 10]; 8],
    /// fctrl, fstat, ftag, fiseg, fioff, foseg, fooff, fop.
    pub fpu: [u32; 8],
    pub xmm: [u128; 16],
    pub mxcsr: u32,
    pub fs_base: u64,
    pub gs_base: u64,
    /// k_gs_base, cr0, cr2, cr3, cr4, cr8, efer.
    pub sys: [u64; 7],
}

impl Regs {
    /// The registers of `cpu`.
    pub fn from_cpu(cpu: &Cpu) -> Self {
        let f = &cpu.fpu;
        // GDB's tag word: 2 bits a register, 11 = empty (FXSAVE keeps one bit: valid or empty).
        let ftag = (0..8).fold(0u32, |t, i| if f.ftw & (1 << i) != 0 { t } else { t | (3 << (2 * i)) });
        Regs {
            gpr: GPR_ORDER.map(|i| cpu.gpr[i]),
            rip: cpu.rip,
            eflags: cpu.rflags as u32,
            seg: SEG_ORDER.map(|s| u32::from(cpu.segment(s).selector)),
            st: f.st,
            fpu: [
                u32::from(f.fcw),
                u32::from(f.fsw),
                ftag,
                ((f.fip >> 32) & 0xffff) as u32,
                f.fip as u32,
                ((f.fdp >> 32) & 0xffff) as u32,
                f.fdp as u32,
                u32::from(f.fop),
            ],
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            fs_base: cpu.segment(SegReg::Fs).base,
            gs_base: cpu.segment(SegReg::Gs).base,
            sys: [cpu.msrs.kernel_gs_base, cpu.cr0, cpu.cr2, cpu.cr3, cpu.cr4, cpu.cr8, cpu.efer],
        }
    }

    /// The bytes of the `g` packet, little-endian, in target-description order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(REGS_BYTES);
        for v in self.gpr.iter().chain([&self.rip]) {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.eflags.to_le_bytes());
        for v in &self.seg {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for st in &self.st {
            b.extend_from_slice(st);
        }
        for v in &self.fpu {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.xmm {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.mxcsr.to_le_bytes());
        for v in [self.fs_base, self.gs_base].iter().chain(&self.sys) {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parse the bytes of a `G` packet.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != REGS_BYTES {
            return None;
        }
        let mut at = 0usize;
        let mut take = |n: usize| {
            let s = &b[at..at + n];
            at += n;
            s
        };
        let u64_ = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        let u32_ = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
        let mut r = Regs::default();
        for g in &mut r.gpr {
            *g = u64_(take(8));
        }
        r.rip = u64_(take(8));
        r.eflags = u32_(take(4));
        for s in &mut r.seg {
            *s = u32_(take(4));
        }
        for st in &mut r.st {
            st.copy_from_slice(take(10));
        }
        for v in &mut r.fpu {
            *v = u32_(take(4));
        }
        for x in &mut r.xmm {
            *x = u128::from_le_bytes(take(16).try_into().unwrap_or_default());
        }
        r.mxcsr = u32_(take(4));
        r.fs_base = u64_(take(8));
        r.gs_base = u64_(take(8));
        for v in &mut r.sys {
            *v = u64_(take(8));
        }
        Some(r)
    }
}

/// Size of the whole register file in the `g` packet.
pub const REGS_BYTES: usize = 17 * 8 + 4 + 6 * 4 + 8 * 10 + 8 * 4 + 16 * 16 + 4 + 9 * 8;

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        for b in self.to_bytes() {
            write_byte(Some(b));
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        *self = Regs::from_bytes(bytes).ok_or(())?;
        Ok(())
    }
}

/// The target description: GDB's amd64 features (as in its `features/i386/64bit-*.xml`) and
/// krr's system registers.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
  <architecture>i386:x86-64</architecture>
  <feature name="org.gnu.gdb.i386.core">
    <flags id="i386_eflags" size="4">
      <field name="" start="22" end="31"/>
      <field name="CF" start="0" end="0"/>
      <field name="" start="1" end="1"/>
      <field name="PF" start="2" end="2"/>
      <field name="AF" start="4" end="4"/>
      <field name="ZF" start="6" end="6"/>
      <field name="SF" start="7" end="7"/>
      <field name="TF" start="8" end="8"/>
      <field name="IF" start="9" end="9"/>
      <field name="DF" start="10" end="10"/>
      <field name="OF" start="11" end="11"/>
      <field name="NT" start="14" end="14"/>
      <field name="RF" start="16" end="16"/>
      <field name="VM" start="17" end="17"/>
      <field name="AC" start="18" end="18"/>
      <field name="VIF" start="19" end="19"/>
      <field name="VIP" start="20" end="20"/>
      <field name="ID" start="21" end="21"/>
    </flags>
    <reg name="rax" bitsize="64" type="int64"/>
    <reg name="rbx" bitsize="64" type="int64"/>
    <reg name="rcx" bitsize="64" type="int64"/>
    <reg name="rdx" bitsize="64" type="int64"/>
    <reg name="rsi" bitsize="64" type="int64"/>
    <reg name="rdi" bitsize="64" type="int64"/>
    <reg name="rbp" bitsize="64" type="data_ptr"/>
    <reg name="rsp" bitsize="64" type="data_ptr"/>
    <reg name="r8" bitsize="64" type="int64"/>
    <reg name="r9" bitsize="64" type="int64"/>
    <reg name="r10" bitsize="64" type="int64"/>
    <reg name="r11" bitsize="64" type="int64"/>
    <reg name="r12" bitsize="64" type="int64"/>
    <reg name="r13" bitsize="64" type="int64"/>
    <reg name="r14" bitsize="64" type="int64"/>
    <reg name="r15" bitsize="64" type="int64"/>
    <reg name="rip" bitsize="64" type="code_ptr"/>
    <reg name="eflags" bitsize="32" type="i386_eflags"/>
    <reg name="cs" bitsize="32" type="int32"/>
    <reg name="ss" bitsize="32" type="int32"/>
    <reg name="ds" bitsize="32" type="int32"/>
    <reg name="es" bitsize="32" type="int32"/>
    <reg name="fs" bitsize="32" type="int32"/>
    <reg name="gs" bitsize="32" type="int32"/>
    <reg name="st0" bitsize="80" type="i387_ext"/>
    <reg name="st1" bitsize="80" type="i387_ext"/>
    <reg name="st2" bitsize="80" type="i387_ext"/>
    <reg name="st3" bitsize="80" type="i387_ext"/>
    <reg name="st4" bitsize="80" type="i387_ext"/>
    <reg name="st5" bitsize="80" type="i387_ext"/>
    <reg name="st6" bitsize="80" type="i387_ext"/>
    <reg name="st7" bitsize="80" type="i387_ext"/>
    <reg name="fctrl" bitsize="32" type="int" group="float"/>
    <reg name="fstat" bitsize="32" type="int" group="float"/>
    <reg name="ftag" bitsize="32" type="int" group="float"/>
    <reg name="fiseg" bitsize="32" type="int" group="float"/>
    <reg name="fioff" bitsize="32" type="int" group="float"/>
    <reg name="foseg" bitsize="32" type="int" group="float"/>
    <reg name="fooff" bitsize="32" type="int" group="float"/>
    <reg name="fop" bitsize="32" type="int" group="float"/>
  </feature>
  <feature name="org.gnu.gdb.i386.sse">
    <vector id="v8bf16" type="bfloat16" count="8"/>
    <vector id="v4f" type="ieee_single" count="4"/>
    <vector id="v2d" type="ieee_double" count="2"/>
    <vector id="v16i8" type="int8" count="16"/>
    <vector id="v8i16" type="int16" count="8"/>
    <vector id="v4i32" type="int32" count="4"/>
    <vector id="v2i64" type="int64" count="2"/>
    <union id="vec128">
      <field name="v8_bfloat16" type="v8bf16"/>
      <field name="v4_float" type="v4f"/>
      <field name="v2_double" type="v2d"/>
      <field name="v16_int8" type="v16i8"/>
      <field name="v8_int16" type="v8i16"/>
      <field name="v4_int32" type="v4i32"/>
      <field name="v2_int64" type="v2i64"/>
      <field name="uint128" type="uint128"/>
    </union>
    <flags id="i386_mxcsr" size="4">
      <field name="IE" start="0" end="0"/>
      <field name="DE" start="1" end="1"/>
      <field name="ZE" start="2" end="2"/>
      <field name="OE" start="3" end="3"/>
      <field name="UE" start="4" end="4"/>
      <field name="PE" start="5" end="5"/>
      <field name="DAZ" start="6" end="6"/>
      <field name="IM" start="7" end="7"/>
      <field name="DM" start="8" end="8"/>
      <field name="ZM" start="9" end="9"/>
      <field name="OM" start="10" end="10"/>
      <field name="UM" start="11" end="11"/>
      <field name="PM" start="12" end="12"/>
      <field name="FZ" start="15" end="15"/>
    </flags>
    <reg name="xmm0" bitsize="128" type="vec128" regnum="40"/>
    <reg name="xmm1" bitsize="128" type="vec128"/>
    <reg name="xmm2" bitsize="128" type="vec128"/>
    <reg name="xmm3" bitsize="128" type="vec128"/>
    <reg name="xmm4" bitsize="128" type="vec128"/>
    <reg name="xmm5" bitsize="128" type="vec128"/>
    <reg name="xmm6" bitsize="128" type="vec128"/>
    <reg name="xmm7" bitsize="128" type="vec128"/>
    <reg name="xmm8" bitsize="128" type="vec128"/>
    <reg name="xmm9" bitsize="128" type="vec128"/>
    <reg name="xmm10" bitsize="128" type="vec128"/>
    <reg name="xmm11" bitsize="128" type="vec128"/>
    <reg name="xmm12" bitsize="128" type="vec128"/>
    <reg name="xmm13" bitsize="128" type="vec128"/>
    <reg name="xmm14" bitsize="128" type="vec128"/>
    <reg name="xmm15" bitsize="128" type="vec128"/>
    <reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
  </feature>
  <feature name="org.gnu.gdb.i386.segments">
    <reg name="fs_base" bitsize="64" type="int"/>
    <reg name="gs_base" bitsize="64" type="int"/>
  </feature>
  <feature name="org.krr.sys">
    <reg name="k_gs_base" bitsize="64" type="int" group="system"/>
    <reg name="cr0" bitsize="64" type="int" group="system"/>
    <reg name="cr2" bitsize="64" type="int" group="system"/>
    <reg name="cr3" bitsize="64" type="int" group="system"/>
    <reg name="cr4" bitsize="64" type="int" group="system"/>
    <reg name="cr8" bitsize="64" type="int" group="system"/>
    <reg name="efer" bitsize="64" type="int" group="system"/>
  </feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_follows_the_description() {
        let mut cpu = Cpu::new();
        cpu.gpr = std::array::from_fn(|i| 0x1000 + i as u64); // RAX=0x1000, RCX=0x1001, ...
        cpu.rip = 0xffff_ffff_8100_0000;
        cpu.rflags = 0x246;
        cpu.segment_mut(SegReg::Cs).selector = 0x10;
        cpu.segment_mut(SegReg::Gs).base = 0xffff_8880_0f00_0000;
        cpu.cr3 = 0x1234_5000;
        cpu.efer = 0xd01;
        let r = Regs::from_cpu(&cpu);
        let b = r.to_bytes();
        assert_eq!(b.len(), REGS_BYTES);
        let at = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
        assert_eq!(at(0), 0x1000, "rax");
        assert_eq!(at(8), 0x1003, "rbx");
        assert_eq!(at(16), 0x1001, "rcx");
        assert_eq!(at(7 * 8), 0x1004, "rsp");
        assert_eq!(at(6 * 8), 0x1005, "rbp");
        assert_eq!(at(16 * 8), cpu.rip, "rip");
        assert_eq!(u32::from_le_bytes(b[136..140].try_into().unwrap()), 0x246, "eflags");
        assert_eq!(u32::from_le_bytes(b[140..144].try_into().unwrap()), 0x10, "cs");
        // After the x87 and SSE registers: fs_base, gs_base, then the system registers.
        let bases = REGS_BYTES - 9 * 8;
        assert_eq!(at(bases + 8), 0xffff_8880_0f00_0000, "gs_base");
        assert_eq!(at(bases + 5 * 8), 0x1234_5000, "cr3");
        assert_eq!(at(bases + 8 * 8), 0xd01, "efer");
        assert_eq!(Regs::from_bytes(&b), Some(r));
        assert_eq!(Regs::from_bytes(&b[1..]), None);
    }

    #[test]
    fn description_names_every_register_once() {
        let n = TARGET_XML.matches("<reg ").count();
        assert_eq!(n, 16 + 1 + 1 + 6 + 8 + 8 + 16 + 1 + 2 + 7);
        for name in ["\"fs_base\"", "\"gs_base\"", "\"k_gs_base\"", "\"cr3\"", "\"efer\"", "\"mxcsr\""] {
            assert_eq!(TARGET_XML.matches(name).count(), 1, "{name}");
        }
    }
}
