//! The emulator side: runs a [`Case`] on krr-emu from the same machine state as the KVM side (the same
//! physical memory image, so the same page tables, GDT, IDT, TSS and exception stubs; the same segment
//! and control registers).

use krr_emu::platform::{default_cpuid, CpuidResult, PResult, Platform, PlatformStop};
use krr_emu::{
    Cpu, CpuFeatures, DescriptorTable, EmuError, FlatMemory, MemorySnapshot, RunExit, SegReg, Segment,
};

use crate::case::{apply_exception_frame, Case, End, Failure, Outcome, RunResult, X87};
use crate::compare::Runner;
use crate::layout::{self, CODE_BASE, DATA_BASE, DATA_SIZE, RAM_SIZE};

/// Instructions one case may retire before it counts as a hang (cases are short; REP strings count once).
pub const INSN_LIMIT: u64 = 100_000;

/// A platform that stops at every `out` and remembers the port (the harness's only way out of a case).
#[derive(Debug, Default)]
struct StopPlatform {
    last_out: Option<u16>,
}

impl Platform for StopPlatform {
    fn io_in(&mut self, _port: u16, size: u8) -> PResult<u32> {
        // As the KVM side answers.
        Ok(match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        })
    }
    fn io_out(&mut self, port: u16, _size: u8, _value: u32) -> PResult<()> {
        self.last_out = Some(port);
        Err(PlatformStop::new(format!("out to port {port:#x}")))
    }
    fn mmio_read(&mut self, gpa: u64, _data: &mut [u8]) -> PResult<()> {
        Err(PlatformStop::new(format!("MMIO read at {gpa:#x}")))
    }
    fn mmio_write(&mut self, gpa: u64, _data: &[u8]) -> PResult<()> {
        Err(PlatformStop::new(format!("MMIO write at {gpa:#x}")))
    }
    fn rdtsc(&mut self) -> PResult<u64> {
        Err(PlatformStop::new("rdtsc (not comparable)"))
    }
    fn rdmsr(&mut self, _msr: u32) -> PResult<Option<u64>> {
        Ok(None)
    }
    fn wrmsr(&mut self, _msr: u32, _value: u64) -> PResult<bool> {
        Ok(false)
    }
    fn rdrand(&mut self) -> PResult<Option<u64>> {
        Err(PlatformStop::new("rdrand (not comparable)"))
    }
    fn rdseed(&mut self) -> PResult<Option<u64>> {
        Err(PlatformStop::new("rdseed (not comparable)"))
    }
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> PResult<CpuidResult> {
        Ok(default_cpuid(leaf, subleaf))
    }
    fn hlt(&mut self) -> PResult<()> {
        Err(PlatformStop::new("hlt"))
    }
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> PResult<Option<u8>> {
        Ok(None)
    }
}

/// Runs cases on krr-emu.
#[derive(Debug)]
pub struct EmuRunner {
    mem: FlatMemory,
    image: MemorySnapshot,
    template: Cpu,
    cpu: Cpu,
    last_code_len: usize,
    decode_cache: bool,
    /// Restore all of memory and flush the decode cache before each case (slow; see `set_full_reset`).
    full_reset: bool,
}

/// The instruction-set features of the CPU running the KVM side (so both sides decode F3 0F BC/BD and
/// POPCNT the same way), and its vendor profile (AMD where krr-emu has none for the host).
pub fn host_features() -> CpuFeatures {
    CpuFeatures {
        vendor: krr_emu::Vendor::host().unwrap_or_default(),
        lzcnt: std::arch::is_x86_feature_detected!("lzcnt"),
        bmi1: std::arch::is_x86_feature_detected!("bmi1"),
        popcnt: std::arch::is_x86_feature_detected!("popcnt"),
        rdrand: std::arch::is_x86_feature_detected!("rdrand"),
        rdseed: std::arch::is_x86_feature_detected!("rdseed"),
        cx16: std::arch::is_x86_feature_detected!("cmpxchg16b"),
        ..CpuFeatures::default()
    }
}

/// The host CPU as a golden file names it: model name, family and model.
pub fn host_cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("model name")).map(|l| l.to_string()))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let r = std::arch::x86_64::__cpuid(1);
    let (fam, base_model, ext_model) = ((r.eax >> 8) & 0xf, (r.eax >> 4) & 0xf, (r.eax >> 16) & 0xf);
    let ext_fam = (r.eax >> 20) & 0xff;
    let family = if fam == 0xf { fam + ext_fam } else { fam };
    let model_no = if fam == 6 || fam == 0xf { (ext_model << 4) | base_model } else { base_model };
    format!("{model} ({}, family {family:#x} model {model_no:#x})", krr_emu::Vendor::host_cpuid_vendor())
}

impl Default for EmuRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuRunner {
    pub fn new() -> EmuRunner {
        let mut mem = FlatMemory::new(RAM_SIZE as u64);
        assert!(mem.load(0, &layout::build_image()), "image fits RAM");
        let image = mem.snapshot();
        let mut c = Cpu::new_long_mode(layout::PML4_BASE);
        c.cr0 = layout::CR0;
        c.cr4 = layout::CR4;
        c.efer = layout::EFER;
        c.cr2 = 0;
        c.gdtr = DescriptorTable { base: layout::GDT_BASE, limit: layout::GDT_LIMIT };
        c.idtr = DescriptorTable { base: layout::IDT_BASE, limit: layout::IDT_LIMIT };
        c.seg[SegReg::Cs as usize] = Segment::code64(layout::USER_CS, 3);
        c.seg[SegReg::Ss as usize] = Segment::data32(layout::USER_DS, 3);
        let null = Segment { selector: 0, present: false, unusable: true, ..Segment::data32(0, 3) };
        c.seg[SegReg::Ds as usize] = null;
        c.seg[SegReg::Es as usize] = null;
        c.seg[SegReg::Fs as usize] = Segment { base: layout::FS_BASE, ..null };
        c.seg[SegReg::Gs as usize] = Segment { base: layout::GS_BASE, ..null };
        c.tr = Segment {
            selector: layout::TSS_SEL,
            base: layout::TSS_BASE,
            limit: layout::TSS_LIMIT,
            typ: 0xb,
            present: true,
            ..Default::default()
        };
        c.ldtr = Segment { typ: 2, unusable: true, ..Default::default() };
        c.features = host_features();
        c.flush_tlb_all();
        let cpu = c.clone();
        EmuRunner { mem, image, template: c, cpu, last_code_len: 0, decode_cache: true, full_reset: false }
    }

    /// Whose undefined results krr-emu gives (default: the host CPU's vendor).
    pub fn set_vendor(&mut self, v: krr_emu::Vendor) {
        self.template.features.vendor = v;
    }

    /// By default memory persists across cases like the KVM guest's: each case rewrites only the code area
    /// and the window (krr-emu's code-page tracking invalidates the decodes of the rewritten code, which is
    /// then tested too). With `full_reset`, every case starts from the pristine image with an empty decode
    /// cache (about 3x slower).
    pub fn set_full_reset(&mut self, on: bool) {
        self.full_reset = on;
    }

    /// Turns krr-emu's decoded-instruction cache on or off.
    pub fn set_decode_cache(&mut self, on: bool) {
        self.decode_cache = on;
        self.cpu.set_decode_cache(on);
    }

    fn load(&mut self, case: &Case, k: usize) -> Result<(), String> {
        let code = case.code(k);
        if code.len() > layout::CODE_SIZE || case.mem.len() != DATA_SIZE {
            return Err("case does not fit the layout".into());
        }
        if self.full_reset {
            self.mem.restore(&self.image);
        } else {
            let fill = vec![layout::CODE_FILL; self.last_code_len];
            self.mem.load(CODE_BASE, &fill);
        }
        self.mem.load(CODE_BASE, &code);
        self.mem.load(DATA_BASE, &case.mem);
        self.last_code_len = code.len();
        let t = &self.template;
        let c = &mut self.cpu;
        // Reset the architectural state field by field (keeps the CPU's decode cache allocation).
        c.gpr = case.gprs;
        c.rip = CODE_BASE;
        c.rflags = case.start_rflags();
        c.seg = t.seg;
        c.ldtr = t.ldtr;
        c.tr = t.tr;
        c.gdtr = t.gdtr;
        c.idtr = t.idtr;
        c.cr0 = t.cr0;
        c.cr2 = 0;
        c.cr3 = t.cr3;
        c.cr4 = t.cr4;
        c.cr8 = t.cr8;
        c.efer = t.efer;
        c.msrs = t.msrs;
        c.dr = t.dr;
        c.fpu = t.fpu;
        c.fpu.xmm = case.xmm;
        c.fpu.mxcsr = case.mxcsr;
        c.halted = false;
        c.interrupt_shadow = false;
        c.pending_db = false;
        c.features = t.features;
        c.flush_tlb_all();
        if self.full_reset {
            c.flush_decode_cache();
        }
        Ok(())
    }

    fn execute(&mut self) -> RunResult {
        let mut plat = StopPlatform::default();
        let r = self.cpu.run(&mut self.mem, &mut plat, INSN_LIMIT, |_| false);
        let c = &self.cpu;
        match r {
            Err(EmuError::Platform(_)) if plat.last_out.is_some() => {}
            Err(EmuError::Unimplemented { rip, bytes, mnemonic }) => {
                return Err(Failure::Unimplemented { rip, mnemonic, bytes })
            }
            // An explicit "this case is not modelled" (e.g. SSE arithmetic outside the default MXCSR):
            // reported like an unimplemented instruction, with the reason.
            Err(EmuError::Unsupported { rip, what }) => {
                let bytes = self.mem.dump(rip, 15).unwrap_or_default();
                let text = crate::gen::disasm(&bytes, rip);
                let m = text.split_whitespace().next().unwrap_or("?").to_string();
                return Err(Failure::Unimplemented {
                    rip,
                    mnemonic: format!("{m} (unsupported: {what})"),
                    bytes,
                });
            }
            Err(e) => return Err(Failure::Other(format!("krr-emu: {e}"))),
            Ok(RunExit::Limit) => {
                return Err(Failure::Other(format!(
                    "krr-emu: no exit after {INSN_LIMIT} instructions (rip {:#x})",
                    c.rip
                )))
            }
            Ok(other) => {
                return Err(Failure::Other(format!("krr-emu: stopped with {other:?} at rip {:#x}", c.rip)))
            }
        }
        let port = plat.last_out.unwrap_or_default();
        let mem = self.mem.dump(DATA_BASE, DATA_SIZE).unwrap_or_default();
        let mut out = Outcome {
            end: End::Done,
            gprs: c.gpr,
            rip: c.rip,
            rflags: c.rflags,
            xmm: c.fpu.xmm,
            mxcsr: c.fpu.mxcsr,
            x87: X87 {
                fcw: c.fpu.fcw,
                fsw: c.fpu.fsw,
                ftw: c.fpu.ftw,
                st: std::array::from_fn(|i| c.fpu.st[(c.fpu_top() + i) & 7]),
            },
            mem,
        };
        if port == layout::DONE_PORT {
            return Ok(out);
        }
        let vector = port.wrapping_sub(layout::EXC_PORT_BASE);
        if vector >= u16::from(layout::EXC_VECTORS) {
            return Err(Failure::Other(format!(
                "krr-emu: out to unexpected port {port:#x} at rip {:#x}",
                c.rip
            )));
        }
        let m = &self.mem;
        let rd = |a: u64| m.dump(a, 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        apply_exception_frame(&mut out, vector as u8, c.cr2, rd)
            .map_err(|e| Failure::Other(format!("krr-emu: {e}")))?;
        Ok(out)
    }
}

impl Runner for EmuRunner {
    /// A panic inside krr-emu is caught and reported as an emulator error (krr-emu must never panic); the
    /// runner then starts over from a fresh CPU and memory.
    fn run_prefix(&mut self, case: &Case, k: usize) -> RunResult {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.load(case, k).map_err(Failure::Other)?;
            self.execute()
        }));
        match r {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let (cache, full, vendor) =
                    (self.decode_cache, self.full_reset, self.template.features.vendor);
                *self = EmuRunner::new();
                self.set_decode_cache(cache);
                self.full_reset = full;
                self.set_vendor(vendor);
                Err(Failure::Other(format!("krr-emu panicked: {msg}")))
            }
        }
    }
}
