//! The `Platform` trait: every input the CPU takes from outside comes through it.
//!
//! Replay feeds logged values through it, the VMM backs it with devices, tests use
//! [`SimplePlatform`]. Every method returns a `Result` so an implementation can stop execution
//! (the instruction asking does not retire and RIP stays on it).

use std::collections::VecDeque;

/// A platform asked the emulator to stop; carried out of `Cpu::step` as `EmuError::Platform`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlatformStop(pub String);

impl PlatformStop {
    /// Stop with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        PlatformStop(msg.into())
    }
}

/// Result type of platform methods.
pub type PResult<T> = Result<T, PlatformStop>;

/// Values returned by CPUID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidResult {
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
}

/// Everything the CPU asks the outside world.
///
/// Sizes are in bytes (1, 2 or 4 for ports). MMIO accesses never cross a 4 KiB page.
pub trait Platform {
    /// IN from `port`.
    fn io_in(&mut self, port: u16, size: u8) -> PResult<u32>;
    /// OUT to `port`.
    fn io_out(&mut self, port: u16, size: u8, value: u32) -> PResult<()>;
    /// Read of a guest-physical address that is not RAM.
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) -> PResult<()>;
    /// Write to a guest-physical address that is not RAM.
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> PResult<()>;
    /// Time stamp counter for RDTSC/RDTSCP (and the TSC MSR).
    fn rdtsc(&mut self) -> PResult<u64>;
    /// RDMSR of an MSR the emulator does not own. `Ok(None)` raises #GP(0).
    fn rdmsr(&mut self, msr: u32) -> PResult<Option<u64>>;
    /// WRMSR of an MSR the emulator does not own. `Ok(false)` raises #GP(0).
    fn wrmsr(&mut self, msr: u32, value: u64) -> PResult<bool>;
    /// RDRAND value; `Ok(None)` means "no entropy" (CF=0, destination 0).
    fn rdrand(&mut self) -> PResult<Option<u64>>;
    /// RDSEED value; `Ok(None)` means "no entropy".
    fn rdseed(&mut self) -> PResult<Option<u64>>;
    /// CPUID leaf/subleaf.
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> PResult<CpuidResult>;
    /// HLT retired; the CPU now waits for an interrupt. The platform may advance time here.
    fn hlt(&mut self) -> PResult<()>;
    /// Is an external (maskable) interrupt pending? Asked only when the CPU could take one
    /// (RFLAGS.IF=1, no interrupt shadow), at an instruction boundary. Must be cheap.
    fn interrupt_pending(&mut self) -> bool;
    /// The CPU takes the pending interrupt (INTA): return its vector, or `None` if it went away.
    fn acknowledge_interrupt(&mut self) -> PResult<Option<u8>>;
}

/// A deterministic platform for tests and benchmarks.
///
/// Ports read as all-ones, MMIO reads as all-ones and writes are recorded, RDTSC counts up by
/// `tsc_step`, RDRAND is a xorshift sequence, interrupts come from `pending_irqs`.
#[derive(Debug, Clone)]
pub struct SimplePlatform {
    /// OUT writes seen, in order: (port, size, value).
    pub outs: Vec<(u16, u8, u32)>,
    /// MMIO writes seen: (gpa, bytes).
    pub mmio_writes: Vec<(u64, Vec<u8>)>,
    /// If set, the first OUT stops execution (the difftest convention).
    pub stop_on_out: bool,
    /// Next RDTSC value.
    pub tsc: u64,
    /// Added to `tsc` after each read.
    pub tsc_step: u64,
    /// Random state.
    pub rng: u64,
    /// Interrupt vectors waiting to be delivered, front first.
    pub pending_irqs: VecDeque<u8>,
    /// Number of HLTs executed.
    pub halts: u64,
    /// If set, HLT stops execution.
    pub stop_on_hlt: bool,
    /// Port and MMIO accesses allowed before the platform stops execution: one REP INS/OUTS
    /// or a REP string over non-RAM addresses with a 32-bit count is billions of accesses in
    /// one step, which random programs (robustness tests, fuzzing) reach.
    pub access_limit: u64,
    /// Port and MMIO accesses so far.
    pub accesses: u64,
}

impl Default for SimplePlatform {
    fn default() -> Self {
        SimplePlatform {
            outs: Vec::new(),
            mmio_writes: Vec::new(),
            stop_on_out: false,
            tsc: 1_000_000,
            tsc_step: 1,
            rng: 0x2545_f491_4f6c_dd1d,
            pending_irqs: VecDeque::new(),
            halts: 0,
            stop_on_hlt: false,
            access_limit: u64::MAX,
            accesses: 0,
        }
    }
}

impl SimplePlatform {
    /// New default platform.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one port or MMIO access; past `access_limit` execution stops.
    fn access(&mut self, what: &str) -> PResult<()> {
        self.accesses += 1;
        if self.accesses > self.access_limit {
            return Err(PlatformStop::new(format!(
                "{what}: more than {} port/MMIO accesses",
                self.access_limit
            )));
        }
        Ok(())
    }
}

/// The CPUID table of [`SimplePlatform`]: a baseline x86-64 CPU without AVX/XSAVE/PCID,
/// matching what krr-emu implements (and `CpuFeatures::default()`).
pub fn default_cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let _ = subleaf;
    match leaf {
        // Max leaf 7, "GenuineIntel".
        0 => CpuidResult { eax: 7, ebx: 0x756e_6547, edx: 0x4965_6e69, ecx: 0x6c65_746e },
        // Family 6 model 0x55; SSE3 (bit0) off, CX16 (13), RDRAND (30), POPCNT(23) off.
        1 => CpuidResult {
            eax: 0x0005_0654,
            ebx: 0x0001_0800,
            ecx: (1 << 13) | (1 << 30),
            // FPU, TSC, MSR, PAE, CX8, APIC, SEP, MTRR, PGE, CMOV, PAT, CLFSH, FXSR, SSE, SSE2
            edx: 1
                | (1 << 4)
                | (1 << 5)
                | (1 << 6)
                | (1 << 8)
                | (1 << 9)
                | (1 << 11)
                | (1 << 12)
                | (1 << 13)
                | (1 << 15)
                | (1 << 16)
                | (1 << 19)
                | (1 << 24)
                | (1 << 25)
                | (1 << 26),
        },
        // BMI1 (bit 3) for TZCNT, ERMS (9), RDSEED (18), SMAP (20), CLFLUSHOPT off.
        7 if subleaf == 0 => {
            CpuidResult { ebx: (1 << 3) | (1 << 9) | (1 << 18) | (1 << 20), ..Default::default() }
        }
        0x8000_0000 => CpuidResult { eax: 0x8000_0008, ..Default::default() },
        // LAHF (0), ABM/LZCNT (5); SYSCALL (11), NX (20), 1G pages (26), RDTSCP (27), LM (29).
        0x8000_0001 => CpuidResult {
            ecx: 1 | (1 << 5),
            edx: (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29),
            ..Default::default()
        },
        0x8000_0008 => CpuidResult { eax: 0x3028, ..Default::default() },
        _ => CpuidResult::default(),
    }
}

impl Platform for SimplePlatform {
    fn io_in(&mut self, _port: u16, size: u8) -> PResult<u32> {
        self.access("in")?;
        Ok(match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        })
    }
    fn io_out(&mut self, port: u16, size: u8, value: u32) -> PResult<()> {
        if self.stop_on_out {
            return Err(PlatformStop::new(format!("out to port {port:#x}")));
        }
        self.access("out")?;
        self.outs.push((port, size, value));
        Ok(())
    }
    fn mmio_read(&mut self, _gpa: u64, data: &mut [u8]) -> PResult<()> {
        self.access("mmio read")?;
        data.fill(0xff);
        Ok(())
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> PResult<()> {
        self.access("mmio write")?;
        self.mmio_writes.push((gpa, data.to_vec()));
        Ok(())
    }
    fn rdtsc(&mut self) -> PResult<u64> {
        let t = self.tsc;
        self.tsc = self.tsc.wrapping_add(self.tsc_step);
        Ok(t)
    }
    fn rdmsr(&mut self, _msr: u32) -> PResult<Option<u64>> {
        Ok(None)
    }
    fn wrmsr(&mut self, _msr: u32, _value: u64) -> PResult<bool> {
        Ok(false)
    }
    fn rdrand(&mut self) -> PResult<Option<u64>> {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        Ok(Some(x))
    }
    fn rdseed(&mut self) -> PResult<Option<u64>> {
        self.rdrand()
    }
    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> PResult<CpuidResult> {
        Ok(default_cpuid(leaf, subleaf))
    }
    fn hlt(&mut self) -> PResult<()> {
        self.halts += 1;
        if self.stop_on_hlt {
            return Err(PlatformStop::new("hlt"));
        }
        Ok(())
    }
    fn interrupt_pending(&mut self) -> bool {
        !self.pending_irqs.is_empty()
    }
    fn acknowledge_interrupt(&mut self) -> PResult<Option<u8>> {
        Ok(self.pending_irqs.pop_front())
    }
}
