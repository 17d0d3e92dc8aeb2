//! The `emu` backend: vCPUs executed by krr-emu, with a userspace local APIC per vCPU, an I/O APIC
//! and a PIT, all driven by virtual time.
//!
//! Virtual time is the TSC, and the TSC is the number of instructions retired by all vCPUs
//! (one tick each, a 1 GHz guest clock): a run is a pure function of its inputs. vCPUs take turns
//! in fixed quanta on one thread. When every vCPU is halted, time jumps to the next timer event,
//! so an idle guest costs nothing.

pub mod ioapic;
pub mod lapic;
pub mod pit;
mod profile;

pub use profile::Profile;

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use krr_emu::{Cpu, CpuidResult, EmuError, FlatMemory, Platform, PlatformStop, RunExit, SegReg, Segment};

use crate::boot::{BootPlan, FlatSegment};
use crate::devices::{Devices, DevicesSnapshot, IrqSink, PortAction, CMD_PORT};
use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};
use crate::recorder::{PORT_CTRL, PORT_FLUSH};
use crate::snapshot::{decode_cpu, decode_memory, encode_cpu, encode_memory, SnapshotFile, SnapshotMeta};
use ioapic::IoApic;
use lapic::{LocalApic, APIC_BUS_HZ, TSC_HZ};
use pit::Pit;

/// Instructions a vCPU runs before the machine looks at time, timers and the other vCPUs. Also
/// the resolution of RDTSC within a quantum.
const QUANTUM: u64 = 4096;
/// Ports of the PIT and the speaker gate.
const PIT_PORTS: std::ops::RangeInclusive<u16> = 0x40..=0x43;
const PORT_61: u16 = 0x61;
const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_BIOS_SIGN_ID: Linux writes 0, executes CPUID and reads the microcode revision (EDX) on
/// Intel CPUs.
const MSR_UCODE_REV: u32 = 0x8b;
/// The microcode revision the emu backend's CPU reports.
const EMU_UCODE_REV: u64 = 0x1;

/// The vendor the `emu` backend's CPU is: its CPUID says GenuineIntel family 6 (the model Linux
/// has the fewest quirks for under a hypervisor), so krr-emu gives Intel's answers where the
/// vendors differ (`krr_emu::vendor`), and traces recorded on emu carry this vendor.
pub const EMU_VENDOR: krr_emu::Vendor = krr_emu::Vendor::Intel;

/// The instruction-set features of the `emu` backend's vCPUs (what its CPUID offers).
pub fn emu_features() -> krr_emu::CpuFeatures {
    krr_emu::CpuFeatures { rdrand: false, rdseed: false, vendor: EMU_VENDOR, ..Default::default() }
}

/// Why the emulated machine stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmuStop {
    Exit(u8),
    Reset,
    /// The guest triple-faulted.
    TripleFault(String),
    /// Every vCPU is halted and no timer will ever wake one.
    Deadlock,
    /// krr-emu stopped with an error (an unimplemented instruction, ...).
    Failed(String),
    /// The caller's budget ran out (`run_for`).
    Budget,
    /// The guest's init is about to read its command (the snapshot point), and the machine was
    /// asked to stop there. The reading instruction has not executed.
    SnapshotPoint,
    /// The guest agent wrote `value` to one of its ports (recorder::PORT_FLUSH, PORT_CTRL). The
    /// write has retired: resuming continues after it.
    Agent {
        vcpu: usize,
        port: u16,
        value: u32,
    },
}

/// Pulses raised by devices (the serial port), routed through the I/O APIC after each access.
#[derive(Debug, Default)]
pub struct PendingIrqs(Mutex<Vec<u32>>);

impl IrqSink for PendingIrqs {
    fn pulse(&self, irq: u32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(irq);
    }
}

/// Per-vCPU run state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Running,
    /// An AP after reset: waiting for INIT then SIPI.
    WaitForSipi,
}

/// Everything outside the CPUs: interrupt controllers, timers, devices.
struct Bus {
    lapics: Vec<LocalApic>,
    ioapic: IoApic,
    pit: Pit,
    devices: Devices,
    irqs: Arc<PendingIrqs>,
    /// Virtual TSC at the start of the current quantum.
    now: u64,
    ipis: Vec<(usize, lapic::Ipi)>,
    stop: Option<EmuStop>,
    /// A guest agent port write waiting to be reported once its instruction has retired.
    agent: Option<(u16, u32)>,
    /// Set with `agent`: the CPU's stop predicate reads it (the platform holds the bus).
    agent_flag: Arc<AtomicBool>,
}

impl Bus {
    fn route_irqs(&mut self) {
        let pending: Vec<u32> = std::mem::take(&mut *self.irqs.0.lock().unwrap_or_else(|p| p.into_inner()));
        for irq in pending {
            let deliveries = self.ioapic.pulse(irq as u8);
            self.deliver(deliveries);
        }
    }

    fn deliver(&mut self, deliveries: Vec<ioapic::Delivery>) {
        use ioapic::DeliveryMode;
        for d in deliveries {
            // Only fixed and lowest-priority interrupts are wired (Linux programs the I/O APIC
            // with nothing else); lowest priority goes to the first matching APIC, which keeps
            // the choice deterministic.
            let one = match d.mode {
                DeliveryMode::Fixed => !d.logical,
                DeliveryMode::LowestPriority => true,
                _ => continue,
            };
            for l in self.lapics.iter_mut() {
                if l.matches_destination(d.dest, d.logical) {
                    l.accept(d.vector, d.level);
                    if one {
                        break;
                    }
                }
            }
        }
    }

    fn advance_timers(&mut self) {
        let now = self.now;
        for l in &mut self.lapics {
            l.advance(now);
        }
        let edges = self.pit.advance(now);
        for _ in 0..edges {
            let d = self.ioapic.pulse(0);
            self.deliver(d);
        }
    }

    fn next_event(&self) -> Option<u64> {
        self.lapics.iter().filter_map(|l| l.next_event()).chain(self.pit.next_event()).min()
    }
}

/// The platform one vCPU sees during its quantum.
struct CpuPlatform<'a> {
    cpu: usize,
    bus: &'a mut Bus,
    features: krr_emu::CpuFeatures,
    /// The vCPU's instruction count before the instruction now executing (the run loop's stop
    /// predicate keeps it), and at the start of the quantum: time is exact to the instruction,
    /// so what the guest reads never depends on where a quantum began (a VM restored from a
    /// snapshot starts its quanta elsewhere than the run that saved it).
    clock: &'a Cell<u64>,
    start: u64,
    /// The earliest timer event: a timer the guest arms during the quantum lowers it, and the
    /// quantum ends there so the interrupt comes at its exact time.
    deadline: &'a Cell<u64>,
}

impl CpuPlatform<'_> {
    fn now(&self) -> u64 {
        self.bus.now + (self.clock.get() - self.start)
    }

    /// A timer may have been armed: end the quantum at its event.
    fn rearm(&mut self) {
        if let Some(t) = self.bus.next_event() {
            self.deadline.set(self.deadline.get().min(t));
        }
    }
}

fn stop(bus: &mut Bus, why: EmuStop) -> PlatformStop {
    let msg = format!("{why:?}");
    bus.stop = Some(why);
    PlatformStop::new(msg)
}

impl Platform for CpuPlatform<'_> {
    fn io_in(&mut self, port: u16, size: u8) -> Result<u32, PlatformStop> {
        let now = self.now();
        if port == CMD_PORT && size == 4 && self.bus.devices.take_snapshot_request() {
            return Err(stop(self.bus, EmuStop::SnapshotPoint));
        }
        let v = if PIT_PORTS.contains(&port) || port == PORT_61 {
            self.bus.pit.io_read(port, now) as u32
        } else {
            self.bus.devices.io_in(port, size)
        };
        self.bus.route_irqs();
        Ok(v)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), PlatformStop> {
        let now = self.now();
        if port == PORT_FLUSH || port == PORT_CTRL {
            // Let the OUT retire; `run_for` stops right after it.
            self.bus.agent = Some((port, value));
            self.bus.agent_flag.store(true, Ordering::Relaxed);
            return Ok(());
        }
        if PIT_PORTS.contains(&port) || port == PORT_61 {
            self.bus.pit.io_write(port, value as u8, now);
            self.rearm();
            return Ok(());
        }
        let action = self.bus.devices.io_out(port, size, value);
        self.bus.route_irqs();
        match action {
            PortAction::Continue => Ok(()),
            PortAction::Exit(code) => Err(stop(self.bus, EmuStop::Exit(code))),
            PortAction::Reset => Err(stop(self.bus, EmuStop::Reset)),
        }
    }

    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) -> Result<(), PlatformStop> {
        let now = self.now();
        let v = if (LAPIC_ADDR..LAPIC_ADDR + 0x1000).contains(&gpa) {
            self.bus.lapics[self.cpu].read((gpa - LAPIC_ADDR) as u32 & !3, now)
        } else if (IOAPIC_ADDR..IOAPIC_ADDR + 0x1000).contains(&gpa) {
            self.bus.ioapic.read((gpa - IOAPIC_ADDR) as u32 & !3)
        } else {
            u32::MAX
        };
        let bytes = (v as u64 | ((u32::MAX as u64) << 32)).to_le_bytes();
        let shift = (gpa & 3) as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(shift + i).copied().unwrap_or(0xff);
        }
        Ok(())
    }

    fn mmio_write(&mut self, gpa: u64, data: &[u8]) -> Result<(), PlatformStop> {
        let now = self.now();
        let mut v = [0u8; 4];
        let n = data.len().min(4);
        v[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(v);
        if (LAPIC_ADDR..LAPIC_ADDR + 0x1000).contains(&gpa) {
            let cpu = self.cpu;
            if let Some(ipi) = self.bus.lapics[cpu].write((gpa - LAPIC_ADDR) as u32 & !3, value, now) {
                self.bus.ipis.push((cpu, ipi));
            }
            if let Some(vector) = self.bus.lapics[cpu].take_eoi_level() {
                let d = self.bus.ioapic.eoi(vector);
                self.bus.deliver(d);
            }
            self.rearm();
        } else if (IOAPIC_ADDR..IOAPIC_ADDR + 0x1000).contains(&gpa) {
            // Unmasking an asserted level-triggered pin delivers at once.
            let d = self.bus.ioapic.write((gpa - IOAPIC_ADDR) as u32 & !3, value);
            self.bus.deliver(d);
        }
        Ok(())
    }

    fn rdtsc(&mut self) -> Result<u64, PlatformStop> {
        Ok(self.now())
    }

    fn rdmsr(&mut self, msr: u32) -> Result<Option<u64>, PlatformStop> {
        Ok(match msr {
            MSR_TSC_DEADLINE => Some(self.bus.lapics[self.cpu].tsc_deadline()),
            MSR_UCODE_REV => Some(EMU_UCODE_REV << 32),
            _ => None,
        })
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Result<bool, PlatformStop> {
        Ok(match msr {
            MSR_TSC_DEADLINE => {
                let now = self.now();
                self.bus.lapics[self.cpu].write_tsc_deadline(value, now);
                self.rearm();
                true
            }
            // Writing 0 before CPUID is how Linux asks for the revision; the value is fixed.
            MSR_UCODE_REV => true,
            _ => false,
        })
    }

    fn rdrand(&mut self) -> Result<Option<u64>, PlatformStop> {
        // Not offered in CPUID; krr-emu raises #UD before asking.
        Ok(None)
    }

    fn rdseed(&mut self) -> Result<Option<u64>, PlatformStop> {
        Ok(None)
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Result<CpuidResult, PlatformStop> {
        Ok(emu_cpuid(leaf, subleaf, self.cpu as u32, &self.features))
    }

    fn hlt(&mut self) -> Result<(), PlatformStop> {
        Ok(())
    }

    fn interrupt_pending(&mut self) -> bool {
        self.bus.lapics[self.cpu].pending().is_some()
    }

    fn acknowledge_interrupt(&mut self) -> Result<Option<u8>, PlatformStop> {
        Ok(self.bus.lapics[self.cpu].acknowledge())
    }
}

/// The CPUID the `emu` backend presents: baseline x86-64 plus what krr-emu implements, and a
/// TSC frequency (leaf 0x15) so Linux needs no PIT calibration and knows the APIC timer rate.
pub fn emu_cpuid(leaf: u32, subleaf: u32, apic_id: u32, f: &krr_emu::CpuFeatures) -> CpuidResult {
    let bit = |b: bool, n: u32| if b { 1u32 << n } else { 0 };
    match leaf {
        0 => {
            let id = f.vendor.cpuid_vendor().as_bytes();
            let w = |i: usize| u32::from_le_bytes([id[i], id[i + 1], id[i + 2], id[i + 3]]);
            CpuidResult { eax: 0x16, ebx: w(0), edx: w(4), ecx: w(8) }
        }
        1 => CpuidResult {
            eax: 0x0005_0654, // family 6, model 0x55, stepping 4
            ebx: (apic_id << 24) | (1 << 16) | (8 << 8),
            // CX16, POPCNT (if implemented), TSC-deadline timer, hypervisor.
            ecx: bit(f.cx16, 13) | bit(f.popcnt, 23) | (1 << 24) | (1 << 31),
            // FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH MMX FXSR SSE SSE2 (the SMP
            // trampoline's verify_cpu requires PSE).
            edx: 1
                | 1 << 3
                | 1 << 4
                | 1 << 5
                | 1 << 6
                | 1 << 8
                | 1 << 9
                | 1 << 11
                | 1 << 13
                | 1 << 15
                | 1 << 16
                | 1 << 19
                | 1 << 23
                | 1 << 24
                | 1 << 25
                | 1 << 26,
        },
        7 if subleaf == 0 => CpuidResult { ebx: bit(f.bmi1, 3) | (1 << 9), ..Default::default() },
        // TSC = crystal * 40 / 1: a 25 MHz crystal (the APIC timer clock) and a 1 GHz TSC.
        0x15 => CpuidResult { eax: 1, ebx: (TSC_HZ / APIC_BUS_HZ) as u32, ecx: APIC_BUS_HZ as u32, edx: 0 },
        0x16 => CpuidResult {
            eax: (TSC_HZ / 1_000_000) as u32,
            ebx: (TSC_HZ / 1_000_000) as u32,
            ecx: (APIC_BUS_HZ / 1_000_000) as u32,
            edx: 0,
        },
        0x8000_0000 => CpuidResult { eax: 0x8000_0008, ..Default::default() },
        0x8000_0001 => CpuidResult {
            ecx: 1 | bit(f.lzcnt, 5),
            edx: (1 << 11) | (1 << 20) | (1 << 26) | bit(f.rdtscp, 27) | (1 << 29),
            ..Default::default()
        },
        0x8000_0008 => CpuidResult { eax: f.maxphyaddr as u32 | (48 << 8), ..Default::default() },
        _ => CpuidResult::default(),
    }
}

fn segment(s: FlatSegment) -> Segment {
    Segment {
        selector: s.selector,
        base: 0,
        limit: 0xffff_ffff,
        typ: s.typ,
        s: true,
        dpl: 0,
        present: true,
        avl: false,
        l: s.long,
        db: s.db,
        g: true,
        unusable: false,
    }
}

/// An emulated machine.
pub struct EmuVm {
    mem: FlatMemory,
    cpus: Vec<Cpu>,
    state: Vec<RunState>,
    bus: Bus,
    /// Instructions retired by all vCPUs.
    pub instructions: u64,
    /// Per-instruction accounting, when asked for (it slows the emulator down a little).
    pub profile: Option<Profile>,
    /// State of the generator that varies time-slice lengths (`vary_slices`); 0: fixed slices.
    slice_rng: u64,
}

impl std::fmt::Debug for EmuVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmuVm")
            .field("vcpus", &self.cpus.len())
            .field("instructions", &self.instructions)
            .finish()
    }
}

impl EmuVm {
    /// Build the machine and apply `plan`.
    pub fn new(
        mem_bytes: u64,
        vcpus: u32,
        plan: &BootPlan,
        devices: Devices,
        irqs: Arc<PendingIrqs>,
    ) -> Result<Self, String> {
        let mut mem = FlatMemory::new(mem_bytes);
        for (gpa, data) in &plan.writes {
            if !mem.load(*gpa, data) {
                return Err(format!("boot data at {gpa:#x} does not fit in guest memory"));
            }
        }
        let mut cpus = Vec::new();
        let mut state = Vec::new();
        let mut lapics = Vec::new();
        for id in 0..vcpus {
            let mut cpu = Cpu::new();
            cpu.features = emu_features();
            if id == 0 {
                let e = &plan.entry;
                cpu.cr0 = e.cr0;
                cpu.cr3 = e.cr3;
                cpu.cr4 = e.cr4;
                cpu.efer = e.efer;
                cpu.seg[SegReg::Cs as usize] = segment(e.cs);
                for s in [SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
                    cpu.seg[s as usize] = segment(e.ds);
                }
                cpu.gdtr.base = e.gdt_base;
                cpu.gdtr.limit = e.gdt_limit;
                cpu.rip = e.rip;
                cpu.gpr[6] = e.rsi;
                cpu.gpr[4] = e.rsp;
                cpu.rflags = e.rflags;
                state.push(RunState::Running);
            } else {
                state.push(RunState::WaitForSipi);
            }
            cpus.push(cpu);
            lapics.push(LocalApic::new(id as u8));
        }
        let bus = Bus {
            lapics,
            ioapic: IoApic::new(vcpus as u8),
            pit: Pit::new(),
            devices,
            irqs,
            now: 0,
            ipis: Vec::new(),
            stop: None,
            agent: None,
            agent_flag: Arc::new(AtomicBool::new(false)),
        };
        Ok(EmuVm { mem, cpus, state, bus, instructions: 0, profile: None, slice_rng: 0 })
    }

    /// Give each vCPU turn a pseudo-random length of 256 to 32,768 instructions drawn from
    /// `seed`, instead of one fixed quantum: the same guest then
    /// interleaves its vCPUs differently for every seed, still deterministically for each. For
    /// exploring interleavings when recording races (`--emu-seed`).
    pub fn vary_slices(&mut self, seed: u64) {
        // SplitMix64 of the seed: never 0, which means "fixed".
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.slice_rng = (z ^ (z >> 31)) | 1;
    }

    /// The length of the next turn.
    fn slice(&mut self) -> u64 {
        if self.slice_rng == 0 {
            return QUANTUM;
        }
        // xorshift64
        let mut x = self.slice_rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.slice_rng = x;
        256 + x % (32768 - 256 + 1)
    }

    /// Run until the guest stops or `budget` instructions have retired in total.
    pub fn run_for(&mut self, budget: u64) -> EmuStop {
        let limit = self.instructions.saturating_add(budget);
        loop {
            if self.instructions >= limit {
                return EmuStop::Budget;
            }
            let mut ran_any = false;
            let smp = self.cpus.len() > 1;
            for i in 0..self.cpus.len() {
                if self.state[i] != RunState::Running {
                    continue;
                }
                self.bus.advance_timers();
                let slice = self.slice();
                let q = match self.bus.next_event() {
                    Some(t) if t > self.bus.now => slice.min(t - self.bus.now),
                    Some(_) => 1,
                    None => slice,
                };
                let cpu = &mut self.cpus[i];
                let before = cpu.icount;
                let features = cpu.features;
                let agent_flag = self.bus.agent_flag.clone();
                let (clock, deadline) = (Cell::new(before), Cell::new(self.bus.now + q));
                let mut plat = CpuPlatform {
                    cpu: i,
                    bus: &mut self.bus,
                    features,
                    clock: &clock,
                    start: before,
                    deadline: &deadline,
                };
                let prof = &mut self.profile;
                let now0 = plat.bus.now;
                // Pause-loop exiting: with other vCPUs to run, a PAUSE (a spin loop, e.g. waiting
                // for the kernel lock another vCPU holds) ends the turn.
                let pauses0 = if smp { cpu.pauses } else { u64::MAX };
                let r = cpu.run(&mut self.mem, &mut plat, q, |c| {
                    if let Some(p) = prof.as_mut() {
                        p.observe(c);
                    }
                    clock.set(c.icount);
                    // A timer armed during this quantum is due: stop there.
                    (c.icount > before && now0 + (c.icount - before) >= deadline.get())
                        || agent_flag.load(Ordering::Relaxed)
                        || c.pauses > pauses0
                });
                let ran = cpu.icount - before;
                self.instructions += ran;
                self.bus.now += ran;
                // A vCPU that only took an interrupt (waking from HLT) retired nothing but is
                // running: time must not jump ahead for it.
                if ran > 0 || !cpu.halted {
                    ran_any = true;
                }
                match r {
                    Ok(RunExit::Limit | RunExit::Stopped | RunExit::Halted) => {}
                    Err(EmuError::Platform(_)) => {
                        if let Some(s) = self.bus.stop.take() {
                            return s;
                        }
                    }
                    Err(EmuError::TripleFault { .. }) => {
                        return EmuStop::TripleFault(format!("{}", r.unwrap_err()))
                    }
                    Err(e) => return EmuStop::Failed(format!("vCPU {i}: {e}")),
                }
                self.route_ipis();
                if let Some((port, value)) = self.bus.agent.take() {
                    self.bus.agent_flag.store(false, Ordering::Relaxed);
                    return EmuStop::Agent { vcpu: i, port, value };
                }
            }
            if !ran_any {
                // Everyone is halted: jump to the next timer event.
                match self.bus.next_event() {
                    Some(t) => {
                        let skip = t.saturating_sub(self.bus.now).max(1);
                        self.bus.now += skip;
                        self.bus.advance_timers();
                    }
                    None => return EmuStop::Deadlock,
                }
            }
        }
    }

    fn route_ipis(&mut self) {
        let ipis = std::mem::take(&mut self.bus.ipis);
        for (from, ipi) in ipis {
            for to in 0..self.cpus.len() {
                if !ipi.targets(from as u8, to as u8, &self.bus.lapics[to]) {
                    continue;
                }
                match ipi.delivery {
                    lapic::Delivery::Fixed => self.bus.lapics[to].accept(ipi.vector, false),
                    lapic::Delivery::Init => {
                        self.bus.lapics[to].reset();
                        if to != 0 {
                            self.state[to] = RunState::WaitForSipi;
                        }
                    }
                    lapic::Delivery::Startup => {
                        if self.state[to] == RunState::WaitForSipi {
                            let mut cpu = Cpu::new();
                            cpu.features = self.cpus[to].features;
                            let page = ipi.vector as u16;
                            cpu.seg[SegReg::Cs as usize] = Segment {
                                selector: page << 8,
                                base: (page as u64) << 12,
                                ..cpu.seg[SegReg::Cs as usize]
                            };
                            cpu.rip = 0;
                            self.cpus[to] = cpu;
                            self.state[to] = RunState::Running;
                        }
                    }
                    lapic::Delivery::Nmi | lapic::Delivery::Other => {}
                }
            }
        }
    }

    /// Stop with [`EmuStop::SnapshotPoint`] when the guest's init asks for its command.
    pub fn stop_at_snapshot_point(&mut self) {
        self.bus.devices.request_snapshot();
    }

    /// The devices (to hand the guest its command).
    pub fn devices_mut(&mut self) -> &mut Devices {
        &mut self.bus.devices
    }

    /// The whole machine as a snapshot.
    pub fn save(&self, mut meta: SnapshotMeta) -> SnapshotFile {
        meta.backend = "emu".into();
        meta.vcpus = self.cpus.len() as u32;
        meta.mem_bytes = self.mem.size();
        meta.instructions = self.instructions;
        let mut f = SnapshotFile::default();
        f.add(b"META", serde_json::to_vec(&meta).unwrap_or_default());
        for (i, c) in self.cpus.iter().enumerate() {
            f.add(&cpu_tag(i), encode_cpu(c));
        }
        let devs = EmuDevState {
            lapics: self.bus.lapics.clone(),
            ioapic: self.bus.ioapic.clone(),
            pit: self.bus.pit.clone(),
            devices: self.bus.devices.state(),
            running: self.state.iter().map(|s| *s == RunState::Running).collect(),
            now: self.bus.now,
        };
        f.add(b"DEVS", serde_json::to_vec(&devs).unwrap_or_default());
        let mem = &self.mem;
        f.add(
            b"MEM ",
            encode_memory(mem.size() / 4096, |pfn| {
                mem.dump(pfn * 4096, 4096).unwrap_or_else(|| vec![0; 4096])
            }),
        );
        f
    }

    /// Rebuild a machine from `file`, with fresh `devices` (whose console and IRQ queue it uses).
    pub fn restore(
        file: &SnapshotFile,
        mut devices: Devices,
        irqs: Arc<PendingIrqs>,
    ) -> Result<(Self, SnapshotMeta), String> {
        let section = |tag: &[u8; 4]| {
            file.get(tag).ok_or_else(|| format!("no {:?} section", String::from_utf8_lossy(tag)))
        };
        let meta: SnapshotMeta =
            serde_json::from_slice(section(b"META")?).map_err(|e| format!("META: {e}"))?;
        if meta.backend != "emu" {
            return Err(format!(
                "the snapshot is of a {} VM; only emu snapshots can be resumed here",
                meta.backend
            ));
        }
        let devs: EmuDevState =
            serde_json::from_slice(section(b"DEVS")?).map_err(|e| format!("DEVS: {e}"))?;
        if devs.lapics.len() != meta.vcpus as usize || devs.running.len() != meta.vcpus as usize {
            return Err("device state does not match the vCPU count".into());
        }
        let mut mem = FlatMemory::new(meta.mem_bytes);
        decode_memory(section(b"MEM ")?, meta.mem_bytes, |pfn, page| mem.load(pfn * 4096, page))?;
        let mut cpus = Vec::new();
        for i in 0..meta.vcpus as usize {
            let mut cpu = Cpu::new();
            cpu.features = emu_features();
            decode_cpu(&mut cpu, section(&cpu_tag(i))?)?;
            cpus.push(cpu);
        }
        devices.set_state(&devs.devices);
        let state =
            devs.running.iter().map(|r| if *r { RunState::Running } else { RunState::WaitForSipi }).collect();
        let bus = Bus {
            lapics: devs.lapics,
            ioapic: devs.ioapic,
            pit: devs.pit,
            devices,
            irqs,
            now: devs.now,
            ipis: Vec::new(),
            stop: None,
            agent: None,
            agent_flag: Arc::new(AtomicBool::new(false)),
        };
        let instructions = meta.instructions;
        Ok((EmuVm { mem, cpus, state, bus, instructions, profile: None, slice_rng: 0 }, meta))
    }

    /// Virtual time (TSC) now.
    pub fn now(&self) -> u64 {
        self.bus.now
    }

    /// Guest memory (for snapshots).
    pub fn memory(&self) -> &FlatMemory {
        &self.mem
    }

    /// Where each vCPU stands.
    pub fn vcpu_places(&self) -> Vec<crate::vm::VcpuPlace> {
        self.cpus
            .iter()
            .zip(&self.state)
            .enumerate()
            .map(|(i, (c, st))| crate::vm::VcpuPlace {
                vcpu: i as u32,
                rip: c.rip,
                ring: c.cpl(),
                interrupts_on: c.rflags & (1 << 9) != 0,
                halted: c.halted || *st != RunState::Running,
            })
            .collect()
    }

    /// The CPUID table each vCPU sees (for the trace header).
    pub fn cpuid_tables(&self) -> Vec<krr_trace::CpuidTable> {
        const LEAVES: [(u32, u32); 8] = [
            (0, 0),
            (1, 0),
            (7, 0),
            (0x15, 0),
            (0x16, 0),
            (0x8000_0000, 0),
            (0x8000_0001, 0),
            (0x8000_0008, 0),
        ];
        (0..self.cpus.len())
            .map(|i| krr_trace::CpuidTable {
                vcpu: i as u32,
                entries: LEAVES
                    .iter()
                    .map(|&(leaf, subleaf)| {
                        let r = emu_cpuid(leaf, subleaf, i as u32, &self.cpus[i].features);
                        krr_trace::CpuidEntry {
                            leaf,
                            subleaf,
                            eax: r.eax,
                            ebx: r.ebx,
                            ecx: r.ecx,
                            edx: r.edx,
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The snapshot section of vCPU `i`'s state ("C000", "C001", ...).
pub fn cpu_tag(i: usize) -> [u8; 4] {
    let d = format!("{:03}", i.min(999));
    let b = d.as_bytes();
    [b'C', b[0], b[1], b[2]]
}

/// Everything but CPUs and memory, as a snapshot stores it.
#[derive(serde::Serialize, serde::Deserialize)]
struct EmuDevState {
    lapics: Vec<LocalApic>,
    ioapic: IoApic,
    pit: Pit,
    devices: DevicesSnapshot,
    running: Vec<bool>,
    now: u64,
}

/// An IRQ sink for the devices of an emulated machine, and the queue to give [`EmuVm::new`].
pub fn emu_irq_sink() -> (Arc<dyn IrqSink>, Arc<PendingIrqs>) {
    let q = Arc::new(PendingIrqs::default());
    (q.clone(), q)
}
