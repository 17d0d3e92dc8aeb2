//! Architectural CPU state: registers, segments, control registers, MSRs, FPU/SSE state.

use crate::exec::DecodeCache;
use crate::paging::Tlb;

/// RFLAGS bits.
pub mod flags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Reserved, always 1.
    pub const FIXED: u64 = 1 << 1;
    /// Parity.
    pub const PF: u64 = 1 << 2;
    /// Auxiliary carry.
    pub const AF: u64 = 1 << 4;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Sign.
    pub const SF: u64 = 1 << 7;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check / SMAP override.
    pub const AC: u64 = 1 << 18;
    /// Virtual interrupt flag.
    pub const VIF: u64 = 1 << 19;
    /// Virtual interrupt pending.
    pub const VIP: u64 = 1 << 20;
    /// CPUID available.
    pub const ID: u64 = 1 << 21;
    /// The six arithmetic status flags.
    pub const STATUS: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Control register bits used by the emulator.
pub mod cr {
    /// CR0: protection enable.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0: monitor coprocessor.
    pub const CR0_MP: u64 = 1 << 1;
    /// CR0: emulation.
    pub const CR0_EM: u64 = 1 << 2;
    /// CR0: task switched.
    pub const CR0_TS: u64 = 1 << 3;
    /// CR0: extension type (always 1).
    pub const CR0_ET: u64 = 1 << 4;
    /// CR0: numeric error.
    pub const CR0_NE: u64 = 1 << 5;
    /// CR0: write protect.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0: alignment mask.
    pub const CR0_AM: u64 = 1 << 18;
    /// CR0: not write-through.
    pub const CR0_NW: u64 = 1 << 29;
    /// CR0: cache disable.
    pub const CR0_CD: u64 = 1 << 30;
    /// CR0: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4: page size extensions.
    pub const CR4_PSE: u64 = 1 << 4;
    /// CR4: physical address extension.
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4: page global enable.
    pub const CR4_PGE: u64 = 1 << 7;
    /// CR4: OS supports FXSAVE.
    pub const CR4_OSFXSR: u64 = 1 << 9;
    /// CR4: OS supports SIMD exceptions.
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    /// CR4: user-mode instruction prevention.
    pub const CR4_UMIP: u64 = 1 << 11;
    /// CR4: FSGSBASE instructions.
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    /// CR4: PCID.
    pub const CR4_PCIDE: u64 = 1 << 17;
    /// CR4: XSAVE.
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    /// CR4: supervisor-mode execution prevention.
    pub const CR4_SMEP: u64 = 1 << 20;
    /// CR4: supervisor-mode access prevention.
    pub const CR4_SMAP: u64 = 1 << 21;
    /// EFER: SYSCALL enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER: long mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER: long mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER: no-execute enable.
    pub const EFER_NXE: u64 = 1 << 11;
}

/// MSR numbers owned by the emulator.
pub mod msr {
    /// Time stamp counter (read goes to the platform).
    pub const TSC: u32 = 0x10;
    /// APIC base.
    pub const APIC_BASE: u32 = 0x1b;
    /// SYSENTER CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// SYSENTER ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// SYSENTER EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// Misc enable.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// Page attribute table.
    pub const PAT: u32 = 0x277;
    /// Extended feature enables.
    pub const EFER: u32 = 0xc000_0080;
    /// SYSCALL segments.
    pub const STAR: u32 = 0xc000_0081;
    /// 64-bit SYSCALL target.
    pub const LSTAR: u32 = 0xc000_0082;
    /// Compatibility-mode SYSCALL target.
    pub const CSTAR: u32 = 0xc000_0083;
    /// SYSCALL RFLAGS mask.
    pub const SFMASK: u32 = 0xc000_0084;
    /// FS base.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// GS base.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// SWAPGS shadow.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// RDTSCP auxiliary value.
    pub const TSC_AUX: u32 = 0xc000_0103;
}

/// Index of a segment register in `Cpu::seg` (x86 encoding order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum SegReg {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// A segment register: visible selector plus the hidden descriptor cache (KVM `kvm_segment` shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Base address.
    pub base: u64,
    /// Limit in bytes (already scaled by G).
    pub limit: u32,
    /// Descriptor type field (4 bits).
    pub typ: u8,
    /// S: code/data (true) or system (false).
    pub s: bool,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present.
    pub present: bool,
    /// Available for software.
    pub avl: bool,
    /// 64-bit code segment.
    pub l: bool,
    /// Default operation size / big.
    pub db: bool,
    /// Granularity.
    pub g: bool,
    /// Unusable (null selector loaded).
    pub unusable: bool,
}

impl Segment {
    /// A flat 64-bit code segment at `dpl`.
    pub fn code64(selector: u16, dpl: u8) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            typ: 0xb,
            s: true,
            dpl,
            present: true,
            l: true,
            g: true,
            ..Default::default()
        }
    }
    /// A flat 32-bit read/write data segment at `dpl`.
    pub fn data32(selector: u16, dpl: u8) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xffff_ffff,
            typ: 0x3,
            s: true,
            dpl,
            present: true,
            db: true,
            g: true,
            ..Default::default()
        }
    }
    /// A real-mode segment for `selector`.
    pub fn real(selector: u16, typ: u8) -> Self {
        Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xffff,
            typ,
            s: true,
            present: true,
            ..Default::default()
        }
    }
    /// Decodes an 8-byte GDT/LDT descriptor (the upper 8 bytes of system descriptors in long
    /// mode are merged by the caller).
    pub fn from_descriptor(selector: u16, d: u64) -> Self {
        let limit_raw = (d & 0xffff) as u32 | (((d >> 48) & 0xf) as u32) << 16;
        let g = d & (1 << 55) != 0;
        let limit = if g { (limit_raw << 12) | 0xfff } else { limit_raw };
        Segment {
            selector,
            base: ((d >> 16) & 0xff_ffff) | (((d >> 56) & 0xff) << 24),
            limit,
            typ: ((d >> 40) & 0xf) as u8,
            s: d & (1 << 44) != 0,
            dpl: ((d >> 45) & 3) as u8,
            present: d & (1 << 47) != 0,
            avl: d & (1 << 52) != 0,
            l: d & (1 << 53) != 0,
            db: d & (1 << 54) != 0,
            g,
            unusable: false,
        }
    }
    /// Code segment (S=1, type bit 3).
    pub fn is_code(&self) -> bool {
        self.s && self.typ & 8 != 0
    }
}

/// GDTR/IDTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DescriptorTable {
    /// Linear base.
    pub base: u64,
    /// Limit (bytes - 1).
    pub limit: u16,
}

/// MSRs held by the CPU itself (FS/GS base live in the segment registers, EFER in `Cpu::efer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Msrs {
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK.
    pub sfmask: u64,
    /// IA32_KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// IA32_TSC_AUX.
    pub tsc_aux: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_APIC_BASE.
    pub apic_base: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
}

/// x87/SSE state in FXSAVE layout terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpuState {
    /// Control word.
    pub fcw: u16,
    /// Status word (TOP in bits 13..11).
    pub fsw: u16,
    /// Abridged tag word (FXSAVE form: bit i = 1 means physical register i is valid).
    pub ftw: u8,
    /// Last opcode.
    pub fop: u16,
    /// Last instruction pointer.
    pub fip: u64,
    /// Last data pointer.
    pub fdp: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// ST/MM registers as 80-bit values in the low 10 bytes, physical register order.
    pub st: [[u8; 10]; 8],
    /// XMM0-15.
    pub xmm: [u128; 16],
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState {
            fcw: 0x037f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            mxcsr: 0x1f80,
            st: [[0; 10]; 8],
            xmm: [0; 16],
        }
    }
}

impl FpuState {
    /// The FXSAVE64 image (512 bytes; bytes 416.. are zero). ST(i) is stored in stack order
    /// (slot i = physical register (TOP + i) mod 8), the tag word in its abridged form.
    pub fn to_fxsave(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.ftw;
        b[6..8].copy_from_slice(&self.fop.to_le_bytes());
        b[8..16].copy_from_slice(&self.fip.to_le_bytes());
        b[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        let top = usize::from((self.fsw >> 11) & 7);
        for k in 0..8 {
            let o = 32 + k * 16;
            b[o..o + 10].copy_from_slice(&self.st[(top + k) & 7]);
        }
        for (k, x) in self.xmm.iter().enumerate() {
            let o = 160 + k * 16;
            b[o..o + 16].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// Loads an FXSAVE64 image (`xmm_count` XMM registers: 16 in 64-bit mode, else 8).
    /// Returns `false`, changing nothing, if MXCSR has bits outside `MXCSR_MASK` set (FXRSTOR
    /// raises #GP(0) then).
    pub fn load_fxsave(&mut self, b: &[u8; 512], xmm_count: usize) -> bool {
        let w16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let w32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let w64 = |o: usize| u64::from(w32(o)) | (u64::from(w32(o + 4)) << 32);
        let mxcsr = w32(24);
        if mxcsr & !MXCSR_MASK != 0 {
            return false;
        }
        self.fcw = w16(0);
        self.fsw = w16(2);
        self.ftw = b[4];
        self.fop = w16(6) & 0x7ff;
        self.fip = w64(8);
        self.fdp = w64(16);
        self.mxcsr = mxcsr;
        let top = usize::from((self.fsw >> 11) & 7);
        for k in 0..8 {
            let o = 32 + k * 16;
            let mut v = [0u8; 10];
            v.copy_from_slice(&b[o..o + 10]);
            self.st[(top + k) & 7] = v;
        }
        for k in 0..xmm_count.min(16) {
            let o = 160 + k * 16;
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[o..o + 16]);
            self.xmm[k] = u128::from_le_bytes(v);
        }
        true
    }
}

/// MXCSR bits the CPU supports (with DAZ).
pub const MXCSR_MASK: u32 = 0xffff;

/// Instruction-set features the CPU executes; keep it consistent with the CPUID the platform
/// reports. Disabled features behave as on a CPU without them (e.g. LZCNT runs as BSR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    /// LZCNT (ABM); without it F3 0F BD is BSR.
    pub lzcnt: bool,
    /// TZCNT (BMI1); without it F3 0F BC is BSF.
    pub bmi1: bool,
    /// POPCNT.
    pub popcnt: bool,
    /// RDRAND.
    pub rdrand: bool,
    /// RDSEED.
    pub rdseed: bool,
    /// RDTSCP.
    pub rdtscp: bool,
    /// CMPXCHG16B.
    pub cx16: bool,
    /// Physical address width (reserved-bit checks in page tables).
    pub maxphyaddr: u8,
    /// Whose answers to undefined flags and results the CPU gives ([`crate::vendor`]): the
    /// vendor of the CPU that ran the recording.
    pub vendor: crate::vendor::Vendor,
}

impl Default for CpuFeatures {
    fn default() -> Self {
        CpuFeatures {
            lzcnt: true,
            bmi1: true,
            popcnt: false,
            rdrand: true,
            rdseed: true,
            rdtscp: true,
            cx16: true,
            maxphyaddr: 40,
            vendor: crate::vendor::Vendor::default(),
        }
    }
}

/// Decoding/execution mode, derived from CR0.PE, EFER.LMA, CS.L/D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real address mode.
    Real,
    /// 16-bit protected mode code segment.
    Protected16,
    /// 32-bit protected mode (or compatibility mode) code segment.
    Protected32,
    /// 64-bit long mode.
    Long64,
}

/// The architectural state of one logical processor, plus its TLB and decode cache.
///
/// Clone it for a snapshot: the TLB is copied (it is guest-visible when the guest forgets an
/// INVLPG), the decode cache is not (a clone starts with an empty one).
#[derive(Debug, Clone)]
pub struct Cpu {
    /// GPRs in encoding order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15.
    pub gpr: [u64; 16],
    /// Instruction pointer (offset within CS).
    pub rip: u64,
    /// RFLAGS (bit 1 always set).
    pub rflags: u64,
    /// ES, CS, SS, DS, FS, GS (index with `SegReg`). FS/GS base are the FS_BASE/GS_BASE MSRs.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldtr: Segment,
    /// Task register.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// CR0.
    pub cr0: u64,
    /// CR2 (page fault address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (TPR).
    pub cr8: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// Other CPU-owned MSRs.
    pub msrs: Msrs,
    /// Debug registers DR0-DR7 (DR4/5 alias 6/7).
    pub dr: [u64; 8],
    /// x87 and SSE state.
    pub fpu: FpuState,
    /// Retired instructions (REP string: counted once, when the last iteration completes).
    pub icount: u64,
    /// Halted by HLT, waiting for an interrupt.
    pub halted: bool,
    /// Instruction-set features.
    pub features: CpuFeatures,
    /// Interrupts are blocked for one instruction (after STI or MOV/POP SS).
    pub interrupt_shadow: bool,
    /// A single-step #DB trap is due before the next instruction.
    pub pending_db: bool,
    /// An NMI is waiting (set it with `inject_nmi`); delivered at the next boundary unless
    /// `nmi_blocked` or a MOV SS shadow.
    pub nmi_pending: bool,
    /// NMIs are blocked from NMI delivery until the next IRET.
    pub nmi_blocked: bool,
    /// PAUSE instructions executed: not architectural state; the `emu` backend ends a vCPU's
    /// turn at one, as pause-loop exiting does on hardware, so a vCPU spinning for a lock
    /// another vCPU holds hands the host thread over at once.
    pub pauses: u64,
    pub(crate) tlb: Tlb,
    pub(crate) cache: DecodeCache,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new()
    }
}

impl Cpu {
    /// The architectural state after RESET (real mode, CS:IP = F000:FFF0, base FFFF0000).
    pub fn new() -> Self {
        let mut seg = [Segment::real(0, 3); 6];
        seg[SegReg::Cs as usize] = Segment { base: 0xffff_0000, ..Segment::real(0xf000, 0xb) };
        Cpu {
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: flags::FIXED,
            seg,
            ldtr: Segment { typ: 2, present: true, limit: 0xffff, ..Default::default() },
            tr: Segment { typ: 0xb, present: true, limit: 0xffff, ..Default::default() },
            gdtr: DescriptorTable { base: 0, limit: 0xffff },
            idtr: DescriptorTable { base: 0, limit: 0xffff },
            cr0: 0x6000_0010,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            msrs: Msrs {
                pat: 0x0007_0406_0007_0406,
                apic_base: 0xfee0_0900,
                misc_enable: 1,
                ..Default::default()
            },
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            fpu: FpuState::default(),
            icount: 0,
            halted: false,
            features: CpuFeatures::default(),
            interrupt_shadow: false,
            pending_db: false,
            nmi_pending: false,
            nmi_blocked: false,
            pauses: 0,
            tlb: Tlb::default(),
            cache: DecodeCache::default(),
        }
    }

    /// A CPU in 64-bit long mode at CPL0 with paging on at `cr3` (the caller builds the page
    /// tables), flat CS=0x10/SS=DS=ES=0x18, SCE and NXE on, PGE, SSE enabled.
    pub fn new_long_mode(cr3: u64) -> Self {
        let mut c = Cpu::new();
        c.setup_long_mode(cr3);
        c
    }

    /// Switches this CPU to the state `new_long_mode` describes (keeps GPRs and RIP).
    pub fn setup_long_mode(&mut self, cr3: u64) {
        self.cr0 = cr::CR0_PE | cr::CR0_MP | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP | cr::CR0_PG;
        self.cr4 = cr::CR4_PAE | cr::CR4_PGE | cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
        self.cr3 = cr3;
        self.efer = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        self.seg[SegReg::Cs as usize] = Segment::code64(0x10, 0);
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es] {
            self.seg[s as usize] = Segment::data32(0x18, 0);
        }
        for s in [SegReg::Fs, SegReg::Gs] {
            self.seg[s as usize] = Segment { unusable: true, ..Segment::data32(0, 0) };
        }
        self.tr = Segment { typ: 0xb, present: true, limit: 0x67, ..Default::default() };
        self.flush_tlb_all();
    }

    /// Current privilege level: CS.dpl in protected mode (krr-emu keeps the CS cache's DPL
    /// equal to the CPL, which also holds between setting CR0.PE and the far jump after it).
    #[inline]
    pub fn cpl(&self) -> u8 {
        if self.cr0 & cr::CR0_PE == 0 {
            0
        } else if self.rflags & flags::VM != 0 {
            3
        } else {
            self.seg[SegReg::Cs as usize].dpl & 3
        }
    }

    /// Requests a non-maskable interrupt (the platform calls this between `run` slices; NMIs
    /// are rare enough that the CPU does not poll for them).
    pub fn inject_nmi(&mut self) {
        self.nmi_pending = true;
    }

    /// The state after INIT and a STARTUP IPI with `vector`: real mode at vector×4096.
    pub fn new_sipi(vector: u8) -> Self {
        let mut c = Cpu::new();
        c.seg[SegReg::Cs as usize] = Segment::real(u16::from(vector) << 8, 0xb);
        c.rip = 0;
        c
    }

    /// Current execution mode.
    #[inline]
    pub fn mode(&self) -> Mode {
        let cs = &self.seg[SegReg::Cs as usize];
        if self.cr0 & cr::CR0_PE == 0 {
            Mode::Real
        } else if self.efer & cr::EFER_LMA != 0 && cs.l {
            Mode::Long64
        } else if cs.db {
            Mode::Protected32
        } else {
            Mode::Protected16
        }
    }

    /// GPR by encoding index (0 = RAX .. 15 = R15).
    pub fn reg(&self, i: usize) -> u64 {
        self.gpr[i & 15]
    }

    /// Sets a GPR by encoding index.
    pub fn set_reg(&mut self, i: usize, v: u64) {
        self.gpr[i & 15] = v;
    }

    /// Segment register by index.
    pub fn segment(&self, s: SegReg) -> &Segment {
        &self.seg[s as usize]
    }

    /// Mutable segment register (changing CS.L/D changes the decoding mode at the next step).
    pub fn segment_mut(&mut self, s: SegReg) -> &mut Segment {
        &mut self.seg[s as usize]
    }

    /// Reads an MSR the CPU owns; `None` for MSRs that belong to the platform.
    pub fn read_msr(&self, index: u32) -> Option<u64> {
        Some(match index {
            msr::EFER => self.efer,
            msr::STAR => self.msrs.star,
            msr::LSTAR => self.msrs.lstar,
            msr::CSTAR => self.msrs.cstar,
            msr::SFMASK => self.msrs.sfmask,
            msr::FS_BASE => self.seg[SegReg::Fs as usize].base,
            msr::GS_BASE => self.seg[SegReg::Gs as usize].base,
            msr::KERNEL_GS_BASE => self.msrs.kernel_gs_base,
            msr::TSC_AUX => self.msrs.tsc_aux,
            msr::SYSENTER_CS => self.msrs.sysenter_cs,
            msr::SYSENTER_ESP => self.msrs.sysenter_esp,
            msr::SYSENTER_EIP => self.msrs.sysenter_eip,
            msr::PAT => self.msrs.pat,
            msr::APIC_BASE => self.msrs.apic_base,
            msr::MISC_ENABLE => self.msrs.misc_enable,
            _ => return None,
        })
    }

    /// Writes an MSR the CPU owns. Returns `None` if the CPU does not own it, `Some(false)` if
    /// the value is invalid (WRMSR then raises #GP).
    pub fn write_msr(&mut self, index: u32, v: u64) -> Option<bool> {
        let canonical = crate::paging::is_canonical(v);
        match index {
            msr::EFER => {
                // SCE, LME, LMA (read-only: keep current), NXE.
                if v & !(cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE) != 0 {
                    return Some(false);
                }
                let lma = self.efer & cr::EFER_LMA;
                if self.cr0 & cr::CR0_PG != 0 && (v ^ self.efer) & cr::EFER_LME != 0 {
                    return Some(false);
                }
                self.efer = (v & !cr::EFER_LMA) | lma;
                self.flush_tlb_all();
            }
            msr::STAR => self.msrs.star = v,
            msr::LSTAR | msr::CSTAR | msr::FS_BASE | msr::GS_BASE | msr::KERNEL_GS_BASE if !canonical => {
                return Some(false)
            }
            msr::LSTAR => self.msrs.lstar = v,
            msr::CSTAR => self.msrs.cstar = v,
            msr::SFMASK => self.msrs.sfmask = v & 0xffff_ffff,
            msr::FS_BASE => self.seg[SegReg::Fs as usize].base = v,
            msr::GS_BASE => self.seg[SegReg::Gs as usize].base = v,
            msr::KERNEL_GS_BASE => self.msrs.kernel_gs_base = v,
            msr::TSC_AUX => {
                if v >> 32 != 0 {
                    return Some(false);
                }
                self.msrs.tsc_aux = v
            }
            msr::SYSENTER_CS => self.msrs.sysenter_cs = v & 0xffff,
            msr::SYSENTER_ESP => self.msrs.sysenter_esp = v,
            msr::SYSENTER_EIP => self.msrs.sysenter_eip = v,
            msr::PAT => {
                // Each byte must be a valid memory type (0,1,4,5,6,7).
                if (0..8).any(|i| matches!((v >> (i * 8)) & 0xff, 2 | 3 | 8..=0xff)) {
                    return Some(false);
                }
                self.msrs.pat = v
            }
            msr::APIC_BASE => self.msrs.apic_base = v,
            msr::MISC_ENABLE => self.msrs.misc_enable = v,
            _ => return None,
        }
        Some(true)
    }

    /// Drops every TLB entry, global ones included (as a CR4.PGE toggle does).
    pub fn flush_tlb_all(&mut self) {
        self.tlb.flush(true);
    }

    /// Drops all decoded instructions (needed only after changing guest memory behind the
    /// `GuestMemory` code tracking, which `FlatMemory` never requires).
    pub fn flush_decode_cache(&mut self) {
        self.cache.flush();
    }

    /// The TOP field of the x87 status word.
    pub fn fpu_top(&self) -> usize {
        usize::from((self.fpu.fsw >> 11) & 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_state() {
        let c = Cpu::new();
        assert_eq!(c.mode(), Mode::Real);
        assert_eq!(c.seg[SegReg::Cs as usize].base + c.rip, 0xffff_fff0);
        assert_eq!(c.rflags, 2);
        assert_eq!(c.cpl(), 0);
    }

    #[test]
    fn long_mode_setup() {
        let c = Cpu::new_long_mode(0x1000);
        assert_eq!(c.mode(), Mode::Long64);
        assert_eq!(c.read_msr(msr::EFER).unwrap() & cr::EFER_LMA, cr::EFER_LMA);
    }

    #[test]
    fn msr_validation() {
        let mut c = Cpu::new_long_mode(0);
        assert_eq!(c.write_msr(msr::LSTAR, 0x8000_0000_0000_0000), Some(false));
        assert_eq!(c.write_msr(msr::LSTAR, 0xffff_ffff_8100_0000), Some(true));
        assert_eq!(c.read_msr(msr::LSTAR), Some(0xffff_ffff_8100_0000));
        assert_eq!(c.write_msr(msr::GS_BASE, 0x1234), Some(true));
        assert_eq!(c.seg[SegReg::Gs as usize].base, 0x1234);
        assert_eq!(c.write_msr(msr::PAT, 0x0202), Some(false));
        assert_eq!(c.write_msr(0x8b, 0), None);
    }

    #[test]
    fn descriptor_decode() {
        // Linux __KERNEL_CS: 0x00af9b000000ffff.
        let s = Segment::from_descriptor(0x10, 0x00af_9b00_0000_ffff);
        assert!(s.l && s.present && s.is_code() && s.g && !s.db);
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.typ, 0xb);
        assert_eq!(s.dpl, 0);
        // __USER_DS: 0x00cff3000000ffff.
        let d = Segment::from_descriptor(0x2b, 0x00cf_f300_0000_ffff);
        assert_eq!(d.dpl, 3);
        assert!(d.db && !d.is_code());
    }
}
