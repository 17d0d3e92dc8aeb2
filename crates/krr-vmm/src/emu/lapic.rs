//! A local APIC in xAPIC mode (the MMIO page at 0xfee00000), one per vCPU of the `emu` backend.
//!
//! Everything is a function of the virtual TSC the caller passes in (`now`), never of wall-clock
//! time, so two runs of the same guest see the same interrupts at the same instructions. The
//! timer is kept as an absolute expiry TSC rather than a counter that is decremented, so a
//! current-count read, a periodic re-arm and the caller's skip-to-next-deadline all agree
//! exactly and periodic timers do not drift.
//!
//! Registers and behaviour follow the Intel SDM vol. 3A ch. 11 (xAPIC) and, where the SDM leaves
//! room, what KVM's userspace-visible local APIC does, because that is what Linux is tested on.

/// Virtual TSC frequency: one TSC tick per retired instruction, presented to the guest as 1 GHz.
pub const TSC_HZ: u64 = 1_000_000_000;
/// The APIC timer's input clock (the "crystal" of CPUID leaf 0x15).
pub const APIC_BUS_HZ: u64 = 25_000_000;
/// TSC ticks per APIC bus tick (40).
pub const TSC_PER_BUS_TICK: u64 = TSC_HZ / APIC_BUS_HZ;
/// Guest-physical base of the xAPIC MMIO page.
pub const APIC_MMIO_BASE: u64 = 0xfee0_0000;
/// Version register: version 0x14 (integrated APIC), max LVT entry 5 (six LVTs, no CMCI).
pub const APIC_VERSION: u32 = 0x0005_0014;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;

/// Register offsets within the APIC page.
pub mod reg {
    pub const ID: u32 = 0x20;
    pub const VERSION: u32 = 0x30;
    pub const TPR: u32 = 0x80;
    pub const APR: u32 = 0x90;
    pub const PPR: u32 = 0xa0;
    pub const EOI: u32 = 0xb0;
    pub const RRD: u32 = 0xc0;
    pub const LDR: u32 = 0xd0;
    pub const DFR: u32 = 0xe0;
    pub const SVR: u32 = 0xf0;
    pub const ISR: u32 = 0x100;
    pub const TMR: u32 = 0x180;
    pub const IRR: u32 = 0x200;
    pub const ESR: u32 = 0x280;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const LVT_THERMAL: u32 = 0x330;
    pub const LVT_PERF: u32 = 0x340;
    pub const LVT_LINT0: u32 = 0x350;
    pub const LVT_LINT1: u32 = 0x360;
    pub const LVT_ERROR: u32 = 0x370;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// ESR bits.
pub mod esr {
    /// A fixed IPI with a vector below 16 was sent.
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    /// An interrupt with a vector below 16 was received.
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
    /// A reserved register offset was accessed.
    pub const ILLEGAL_REGISTER: u32 = 1 << 7;
}

const LVT_MASKED: u32 = 1 << 16;
const LVT_COUNT: usize = 6;
const LVT_TIMER: usize = 0;
const LVT_LINT0: usize = 3;
const LVT_ERROR: usize = 5;
/// Writable bits of each LVT, in register order: timer (vector, mask, mode incl. TSC-deadline),
/// thermal and perf (vector, delivery mode, mask), LINT0/1 (also polarity and trigger mode;
/// remote IRR is read-only), error (vector, mask).
const LVT_WRITABLE: [u32; LVT_COUNT] =
    [0x0007_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];
const SVR_ENABLE: u32 = 1 << 8;
/// Writable ICR low bits: vector, delivery mode, destination mode, level, trigger, shorthand.
const ICR_LOW_WRITABLE: u32 = 0x000c_cfff;

/// The delivery mode of an IPI, as the caller routes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Accept `vector` into the target's IRR (edge-triggered).
    Fixed,
    /// Non-maskable interrupt to the target CPU.
    Nmi,
    /// INIT (assert): reset the target CPU and its APIC; an AP then waits for STARTUP. The
    /// level-deassert form is a no-op on every processor since the Pentium 4 and is not reported.
    Init,
    /// STARTUP: start the target (if waiting for SIPI) in real mode at `vector << 12`.
    Startup,
    /// SMI, lowest priority and the reserved modes. Linux 6.1 sends none of these as IPIs (it
    /// removed lowest-priority delivery), so the `emu` backend drops them.
    Other,
}

/// The ICR destination shorthand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    SelfOnly,
    AllIncludingSelf,
    AllExcludingSelf,
}

/// An interprocessor interrupt produced by an ICR low write; the caller routes it to the APICs
/// it [`targets`](Ipi::targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    pub delivery: Delivery,
    /// The vector (fixed), or the start page (STARTUP).
    pub vector: u8,
    pub shorthand: Shorthand,
    /// Logical destination mode (else physical).
    pub logical: bool,
    /// ICR bits 56-63.
    pub dest: u8,
    /// Level-triggered (ICR bit 15).
    pub level_triggered: bool,
}

impl Ipi {
    /// Whether this IPI, sent by the APIC with ID `from`, is for `apic` (whose ID is `to`).
    pub fn targets(&self, from: u8, to: u8, apic: &LocalApic) -> bool {
        match self.shorthand {
            Shorthand::None => apic.matches_destination(self.dest, self.logical),
            Shorthand::SelfOnly => from == to,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => from != to,
        }
    }
}

/// The LVT timer mode (bits 17-18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerMode {
    OneShot,
    Periodic,
    TscDeadline,
}

/// What an asserted LINT pin did, per its LVT entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LintAction {
    /// The LVT entry is masked (or the pin does not exist): nothing happens.
    Masked,
    /// Fixed delivery: the vector was accepted into the IRR.
    Accepted(u8),
    /// The caller injects an NMI into this CPU.
    Nmi,
    /// The caller delivers an SMI (the `emu` backend has no SMM and drops it).
    Smi,
    /// The caller resets this CPU.
    Init,
    /// The caller asks the (8259-compatible) external controller for a vector.
    ExtInt,
}

/// One local APIC. `Clone + PartialEq` so the VMM can snapshot, restore and compare it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalApic {
    /// The ID the APIC had at power-on; `reset` restores it.
    initial_id: u8,
    id: u32,
    tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    isr: [u32; 8],
    tmr: [u32; 8],
    irr: [u32; 8],
    /// ESR as last latched (what reads return).
    esr: u32,
    /// Errors since the last ESR write; a write latches them into `esr`.
    esr_pending: u32,
    icr_low: u32,
    icr_high: u32,
    lvt: [u32; LVT_COUNT],
    timer_initial: u32,
    timer_divide: u32,
    /// One-shot/periodic: absolute TSC at which the count reaches zero; `None` = not counting.
    timer_expiry: Option<u64>,
    /// TSC-deadline mode: the armed deadline, 0 = disarmed.
    deadline: u64,
    /// Vectors of level-triggered interrupts EOIed and not yet forwarded to the I/O APIC.
    eoi_levels: Vec<u8>,
}

fn bit_set(bits: &[u32; 8], v: u8) -> bool {
    bits[v as usize / 32] & (1 << (v % 32)) != 0
}

fn set_bit(bits: &mut [u32; 8], v: u8, on: bool) {
    let m = 1 << (v % 32);
    if on {
        bits[v as usize / 32] |= m;
    } else {
        bits[v as usize / 32] &= !m;
    }
}

fn highest(bits: &[u32; 8]) -> Option<u8> {
    (0..8).rev().find(|&i| bits[i] != 0).map(|i| (i * 32 + 31 - bits[i].leading_zeros() as usize) as u8)
}

/// Divisor selected by the divide configuration register (bits 0, 1 and 3).
fn divisor(tdcr: u32) -> u64 {
    let code = (tdcr & 3) | ((tdcr >> 1) & 4);
    if code == 7 {
        1
    } else {
        2 << code
    }
}

impl LocalApic {
    /// An APIC in its power-on state: every LVT masked, software-disabled (SVR 0xff), ID `apic_id`.
    pub fn new(apic_id: u8) -> Self {
        LocalApic {
            initial_id: apic_id,
            id: (apic_id as u32) << 24,
            tpr: 0,
            ldr: 0,
            dfr: 0xffff_ffff,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_low: 0,
            icr_high: 0,
            lvt: [LVT_MASKED; LVT_COUNT],
            timer_initial: 0,
            timer_divide: 0,
            timer_expiry: None,
            deadline: 0,
            eoi_levels: Vec::new(),
        }
    }

    /// INIT / power-on reset: everything back to the state of `new`, keeping the initial ID.
    pub fn reset(&mut self) {
        *self = LocalApic::new(self.initial_id);
    }

    /// The APIC ID (register bits 24-31).
    pub fn id(&self) -> u8 {
        (self.id >> 24) as u8
    }

    /// SVR bit 8.
    pub fn software_enabled(&self) -> bool {
        self.svr & SVR_ENABLE != 0
    }

    /// The full 8-bit task priority register.
    pub fn tpr(&self) -> u8 {
        self.tpr
    }

    pub fn set_tpr(&mut self, tpr: u8) {
        self.tpr = tpr;
    }

    /// CR8 reads TPR bits 4-7.
    pub fn cr8(&self) -> u64 {
        (self.tpr >> 4) as u64
    }

    /// CR8 writes TPR bits 4-7 and clear bits 0-3.
    pub fn set_cr8(&mut self, cr8: u64) {
        self.tpr = ((cr8 & 0xf) << 4) as u8;
    }

    /// Processor priority: the TPR, or the class of the highest in-service vector if that is higher.
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    fn apr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0) & 0xf0;
        let irrv = highest(&self.irr).unwrap_or(0) & 0xf0;
        if self.tpr >> 4 >= irrv >> 4 && self.tpr >> 4 > isrv >> 4 {
            self.tpr
        } else {
            (self.tpr & 0xf0).max(isrv).max(irrv)
        }
    }

    /// The timer mode currently selected in the LVT (mode 3 is reserved and behaves as one-shot).
    pub fn timer_mode(&self) -> TimerMode {
        match (self.lvt[LVT_TIMER] >> 17) & 3 {
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::OneShot,
        }
    }

    /// Whether a fixed interrupt addressed with (`dest`, `logical`) is for this APIC. Physical:
    /// the ID or broadcast 0xff. Logical: flat model (DFR 0xf) is a bit mask against LDR bits
    /// 24-31; cluster model (DFR 0x0) matches the cluster nibble and a bit of the member nibble.
    pub fn matches_destination(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.id();
        }
        if dest == 0xff {
            return true;
        }
        let ldr = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xf {
            ldr & dest != 0
        } else {
            ldr >> 4 == dest >> 4 && ldr & dest & 0xf != 0
        }
    }

    /// Record an APIC error and raise the error LVT if it is unmasked.
    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        let vector = lvt as u8;
        // An illegal error vector would raise another error: drop it instead of recursing.
        if lvt & LVT_MASKED == 0 && vector >= 16 {
            set_bit(&mut self.irr, vector, true);
            set_bit(&mut self.tmr, vector, false);
        }
    }

    /// Accept a fixed interrupt into the IRR (from an IPI, the I/O APIC or an LVT). `level`
    /// sets the vector's TMR bit so its EOI is forwarded to the I/O APIC. Vectors 0-15 are
    /// illegal: they set ESR bit 6 and are dropped. Like KVM, a software-disabled APIC drops
    /// fixed interrupts (but keeps what is already in IRR/ISR).
    pub fn accept(&mut self, vector: u8, level: bool) {
        if vector < 16 {
            self.error(esr::RECEIVE_ILLEGAL_VECTOR);
            return;
        }
        if !self.software_enabled() {
            return;
        }
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, level);
    }

    /// The vector the CPU would take now if its IF allowed it: the highest requested vector whose
    /// priority class is above the processor priority class.
    pub fn pending(&self) -> Option<u8> {
        let v = highest(&self.irr)?;
        (v >> 4 > self.ppr() >> 4).then_some(v)
    }

    /// The CPU takes the pending interrupt: it moves from IRR to ISR. `None` if nothing is
    /// deliverable (the caller asked without a prior `pending`, or the TPR rose in between).
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending()?;
        set_bit(&mut self.irr, v, false);
        set_bit(&mut self.isr, v, true);
        Some(v)
    }

    /// The next level-triggered vector that was EOIed; the caller forwards it to the I/O APIC
    /// (`IoApic::eoi`) so the line can re-deliver. Call after each `write`.
    pub fn take_eoi_level(&mut self) -> Option<u8> {
        if self.eoi_levels.is_empty() {
            None
        } else {
            Some(self.eoi_levels.remove(0))
        }
    }

    fn eoi(&mut self) {
        if let Some(v) = highest(&self.isr) {
            set_bit(&mut self.isr, v, false);
            if bit_set(&self.tmr, v) {
                self.eoi_levels.push(v);
            }
        }
    }

    /// Assert LINT0 (`pin` 0) or LINT1 (`pin` 1) as an edge, delivered per its LVT entry.
    pub fn lint(&mut self, pin: u8) -> LintAction {
        if pin > 1 {
            return LintAction::Masked;
        }
        let lvt = self.lvt[LVT_LINT0 + pin as usize];
        if lvt & LVT_MASKED != 0 {
            return LintAction::Masked;
        }
        match (lvt >> 8) & 7 {
            0 => {
                let vector = lvt as u8;
                // Trigger mode (bit 15) only applies to fixed delivery.
                self.accept(vector, lvt & (1 << 15) != 0);
                if vector < 16 {
                    LintAction::Masked
                } else {
                    LintAction::Accepted(vector)
                }
            }
            2 => LintAction::Smi,
            4 => LintAction::Nmi,
            5 => LintAction::Init,
            7 => LintAction::ExtInt,
            _ => LintAction::Masked,
        }
    }

    /// TSC ticks per timer count at the current divider.
    fn count_len(&self) -> u64 {
        TSC_PER_BUS_TICK * divisor(self.timer_divide)
    }

    /// Raise the timer's LVT vector unless masked. Masked timers still run; they just don't
    /// interrupt.
    fn fire_timer(&mut self) -> bool {
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED != 0 {
            return false;
        }
        self.accept(lvt as u8, false);
        true
    }

    /// Fire the timer if it expired at or before `now`. A periodic timer re-arms from its previous
    /// expiry (not from `now`), so it never drifts; if the caller was late by several periods the
    /// expiries coalesce into one interrupt, as IRR is one bit. Returns whether an interrupt was
    /// raised.
    pub fn advance(&mut self, now: u64) -> bool {
        match self.timer_mode() {
            TimerMode::TscDeadline => {
                if self.deadline != 0 && now >= self.deadline {
                    self.deadline = 0;
                    return self.fire_timer();
                }
                false
            }
            mode => {
                let Some(expiry) = self.timer_expiry else { return false };
                if now < expiry {
                    return false;
                }
                let period = self.timer_initial as u64 * self.count_len();
                if mode == TimerMode::Periodic && period > 0 {
                    let k = (now - expiry) / period + 1;
                    self.timer_expiry = Some(expiry + k * period);
                } else {
                    self.timer_expiry = None;
                }
                self.fire_timer()
            }
        }
    }

    /// Absolute TSC of the next timer interrupt, if the timer is armed and would interrupt
    /// (unmasked). The caller stops its quantum there or skips ahead to it when idle.
    pub fn next_event(&self) -> Option<u64> {
        if self.lvt[LVT_TIMER] & LVT_MASKED != 0 {
            return None;
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => (self.deadline != 0).then_some(self.deadline),
            _ => self.timer_expiry,
        }
    }

    /// IA32_TSC_DEADLINE write. Ignored unless the timer is in TSC-deadline mode (SDM); 0
    /// disarms; a deadline at or before `now` fires at the next `advance`.
    pub fn write_tsc_deadline(&mut self, value: u64, now: u64) {
        self.advance(now);
        if self.timer_mode() == TimerMode::TscDeadline {
            self.deadline = value;
        }
    }

    /// IA32_TSC_DEADLINE read: the armed deadline, 0 if disarmed or not in TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.deadline
        } else {
            0
        }
    }

    /// The current-count register at `now`: counts remaining until expiry, rounded up, so it reads
    /// the initial count right after the write and 1 in the last count period.
    pub fn current_count(&self, now: u64) -> u32 {
        if self.timer_mode() == TimerMode::TscDeadline {
            return 0;
        }
        match self.timer_expiry {
            Some(expiry) if now < expiry => {
                let len = self.count_len();
                ((expiry - now).div_ceil(len)).min(self.timer_initial as u64) as u32
            }
            _ => 0,
        }
    }

    /// A 32-bit read at `offset` in the APIC page at virtual time `now`.
    pub fn read(&mut self, offset: u32, now: u64) -> u32 {
        self.advance(now);
        let offset = offset & 0xff0;
        match offset {
            reg::ID => self.id,
            reg::VERSION => APIC_VERSION,
            reg::TPR => self.tpr as u32,
            reg::APR => self.apr() as u32,
            reg::PPR => self.ppr() as u32,
            reg::EOI | reg::RRD => 0,
            reg::LDR => self.ldr,
            reg::DFR => self.dfr,
            reg::SVR => self.svr,
            0x100..=0x170 => self.isr[((offset - reg::ISR) >> 4) as usize],
            0x180..=0x1f0 => self.tmr[((offset - reg::TMR) >> 4) as usize],
            0x200..=0x270 => self.irr[((offset - reg::IRR) >> 4) as usize],
            reg::ESR => self.esr,
            // Delivery status (bit 12) is always idle: IPIs are delivered at once.
            reg::ICR_LOW => self.icr_low,
            reg::ICR_HIGH => self.icr_high,
            0x320..=0x370 => self.lvt[((offset - reg::LVT_TIMER) >> 4) as usize],
            reg::TIMER_INITIAL => self.timer_initial,
            reg::TIMER_CURRENT => self.current_count(now),
            reg::TIMER_DIVIDE => self.timer_divide,
            _ => {
                self.error(esr::ILLEGAL_REGISTER);
                0
            }
        }
    }

    /// A 32-bit write at `offset` at virtual time `now`. An ICR low write returns the IPI it
    /// sends; an EOI of a level-triggered vector queues it for [`take_eoi_level`](Self::take_eoi_level).
    pub fn write(&mut self, offset: u32, value: u32, now: u64) -> Option<Ipi> {
        self.advance(now);
        let offset = offset & 0xff0;
        match offset {
            reg::ID => self.id = value & 0xff00_0000,
            reg::TPR => self.tpr = value as u8,
            reg::EOI => self.eoi(),
            reg::LDR => self.ldr = value & 0xff00_0000,
            reg::DFR => self.dfr = value | 0x0fff_ffff,
            reg::SVR => {
                self.svr = value & 0x3ff;
                if !self.software_enabled() {
                    // SDM: software disable sets every LVT mask bit.
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            reg::ESR => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            reg::ICR_LOW => {
                self.icr_low = value & ICR_LOW_WRITABLE;
                return self.send_ipi();
            }
            reg::ICR_HIGH => self.icr_high = value & 0xff00_0000,
            0x320..=0x370 => self.write_lvt(((offset - reg::LVT_TIMER) >> 4) as usize, value),
            reg::TIMER_INITIAL => {
                if self.timer_mode() != TimerMode::TscDeadline {
                    self.timer_initial = value;
                    self.timer_expiry = (value != 0).then(|| now + value as u64 * self.count_len());
                }
            }
            reg::TIMER_DIVIDE => {
                let old = divisor(self.timer_divide);
                self.timer_divide = value & 0xb;
                let new = divisor(self.timer_divide);
                // Keep the counts still to go: the remaining time scales with the divisor.
                if let Some(expiry) = self.timer_expiry {
                    let rest = expiry.saturating_sub(now) as u128 * new as u128 / old as u128;
                    self.timer_expiry = Some(now + rest as u64);
                }
            }
            // Read-only registers: writes are ignored (as KVM does), not errors.
            reg::VERSION | reg::APR | reg::PPR | reg::RRD | 0x100..=0x270 | reg::TIMER_CURRENT => {}
            _ => self.error(esr::ILLEGAL_REGISTER),
        }
        None
    }

    fn write_lvt(&mut self, index: usize, value: u32) {
        let mut value = value & LVT_WRITABLE[index];
        // Remote IRR (LINT bit 14) is read-only.
        value |= self.lvt[index] & (1 << 14);
        if !self.software_enabled() {
            value |= LVT_MASKED;
        }
        if index == LVT_TIMER {
            let was_deadline = self.timer_mode() == TimerMode::TscDeadline;
            self.lvt[index] = value;
            // SDM: switching between TSC-deadline and the counting modes disarms the timer.
            if was_deadline != (self.timer_mode() == TimerMode::TscDeadline) {
                self.timer_initial = 0;
                self.timer_expiry = None;
                self.deadline = 0;
            }
        } else {
            self.lvt[index] = value;
        }
    }

    fn send_ipi(&mut self) -> Option<Ipi> {
        let low = self.icr_low;
        let vector = low as u8;
        let level_assert = low & (1 << 14) != 0;
        let level_triggered = low & (1 << 15) != 0;
        let delivery = match (low >> 8) & 7 {
            0 => Delivery::Fixed,
            4 => Delivery::Nmi,
            5 if level_triggered && !level_assert => return None, // INIT level de-assert: no-op.
            5 => Delivery::Init,
            6 => Delivery::Startup,
            _ => Delivery::Other,
        };
        if delivery == Delivery::Fixed && vector < 16 {
            self.error(esr::SEND_ILLEGAL_VECTOR);
            return None;
        }
        let shorthand = match (low >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::SelfOnly,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Some(Ipi {
            delivery,
            vector,
            shorthand,
            logical: low & (1 << 11) != 0,
            dest: (self.icr_high >> 24) as u8,
            level_triggered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(id: u8) -> LocalApic {
        let mut a = LocalApic::new(id);
        a.write(reg::SVR, 0x1ff, 0);
        a
    }

    #[test]
    fn reset_state() {
        let mut a = LocalApic::new(3);
        assert_eq!(a.read(reg::ID, 0), 3 << 24);
        assert_eq!(a.read(reg::VERSION, 0), 0x0005_0014);
        assert_eq!(a.read(reg::SVR, 0), 0xff);
        assert_eq!(a.read(reg::DFR, 0), 0xffff_ffff);
        assert_eq!(a.read(reg::TPR, 0), 0);
        for off in (0x320..=0x370).step_by(16) {
            assert_eq!(a.read(off, 0), 1 << 16, "LVT {off:#x}");
        }
        assert!(!a.software_enabled());
    }

    #[test]
    fn nested_priority_acknowledge_and_eoi_order() {
        let mut a = enabled(0);
        a.accept(0x31, false);
        assert_eq!(a.pending(), Some(0x31));
        assert_eq!(a.acknowledge(), Some(0x31));
        assert_eq!(a.read(reg::PPR, 0), 0x30);
        // Same class as the one in service: held.
        a.accept(0x3a, false);
        assert_eq!(a.pending(), None);
        assert_eq!(a.acknowledge(), None);
        // Higher class nests.
        a.accept(0x51, false);
        assert_eq!(a.pending(), Some(0x51));
        assert_eq!(a.acknowledge(), Some(0x51));
        assert_eq!(a.read(reg::PPR, 0), 0x50);
        assert_eq!(a.read(reg::ISR + 0x10, 0), (1 << (0x31 - 32)));
        assert_eq!(a.read(reg::ISR + 0x20, 0), (1 << (0x51 - 64)));
        // EOI retires the highest in-service vector first.
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.read(reg::ISR + 0x20, 0), 0);
        assert_eq!(a.read(reg::PPR, 0), 0x30);
        assert_eq!(a.pending(), None);
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.read(reg::PPR, 0), 0);
        assert_eq!(a.acknowledge(), Some(0x3a));
        assert_eq!(a.read(reg::IRR + 0x10, 0), 0);
        // Highest IRR first when several are requested.
        a.write(reg::EOI, 0, 0);
        a.accept(0x40, false);
        a.accept(0xe0, false);
        a.accept(0x80, false);
        assert_eq!(a.acknowledge(), Some(0xe0));
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.acknowledge(), Some(0x80));
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.acknowledge(), Some(0x40));
    }

    #[test]
    fn tpr_masks_by_class() {
        let mut a = enabled(0);
        a.write(reg::TPR, 0x50, 0);
        a.accept(0x55, false);
        assert_eq!(a.pending(), None);
        a.accept(0x60, false);
        assert_eq!(a.pending(), Some(0x60));
        a.set_cr8(7);
        assert_eq!(a.read(reg::TPR, 0), 0x70);
        assert_eq!(a.pending(), None);
        a.set_cr8(5);
        assert_eq!(a.cr8(), 5);
        assert_eq!(a.acknowledge(), Some(0x60));
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.pending(), None);
        a.set_tpr(0x4f);
        assert_eq!(a.acknowledge(), Some(0x55));
    }

    #[test]
    fn level_eoi_is_reported_for_the_ioapic() {
        let mut a = enabled(0);
        a.accept(0x41, true);
        a.accept(0x90, false);
        assert_eq!(a.read(reg::TMR + 0x20, 0), 1 << 1);
        assert_eq!(a.acknowledge(), Some(0x90));
        assert_eq!(a.acknowledge(), None);
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.take_eoi_level(), None);
        assert_eq!(a.acknowledge(), Some(0x41));
        a.write(reg::EOI, 0, 0);
        assert_eq!(a.take_eoi_level(), Some(0x41));
        assert_eq!(a.take_eoi_level(), None);
    }

    #[test]
    fn illegal_vectors_set_esr() {
        let mut a = enabled(0);
        a.write(reg::LVT_ERROR, 0xfe, 0);
        a.accept(7, false);
        assert_eq!(a.read(reg::ESR, 0), 0, "ESR reads the value latched by the last write");
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), esr::RECEIVE_ILLEGAL_VECTOR);
        assert_eq!(a.pending(), Some(0xfe), "error LVT raised");
        a.write(reg::ICR_LOW, 0x0000_4005, 0);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), esr::SEND_ILLEGAL_VECTOR);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), 0);
    }

    #[test]
    fn software_disabled_masks_lvts_and_drops_fixed() {
        let mut a = enabled(0);
        a.write(reg::LVT_TIMER, 0x20, 0);
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x20);
        a.write(reg::SVR, 0xff, 0);
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x1_0020);
        a.write(reg::LVT_TIMER, 0x20, 0);
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x1_0020, "mask cannot be cleared while disabled");
        a.write(reg::TIMER_INITIAL, 10, 0);
        assert_eq!(a.next_event(), None);
        a.advance(10_000);
        a.accept(0x40, false);
        assert_eq!(a.pending(), None);
        // Re-enabling keeps the masks.
        a.write(reg::SVR, 0x1ff, 0);
        assert_eq!(a.read(reg::LVT_TIMER, 0), 0x1_0020);
    }

    #[test]
    fn one_shot_with_each_divider() {
        for (tdcr, div) in [(0xb, 1), (0, 2), (1, 4), (2, 8), (3, 16), (8, 32), (9, 64), (0xa, 128)] {
            let mut a = enabled(0);
            a.write(reg::TIMER_DIVIDE, tdcr, 0);
            a.write(reg::LVT_TIMER, 0x30, 0);
            let t0 = 1_000;
            a.write(reg::TIMER_INITIAL, 100, t0);
            let len = 40 * div;
            let expiry = t0 + 100 * len;
            assert_eq!(a.next_event(), Some(expiry), "div {div}");
            assert_eq!(a.read(reg::TIMER_CURRENT, t0), 100);
            assert_eq!(a.read(reg::TIMER_CURRENT, t0 + len - 1), 100);
            assert_eq!(a.read(reg::TIMER_CURRENT, t0 + len), 99);
            assert_eq!(a.read(reg::TIMER_CURRENT, t0 + 37 * len + 1), 63);
            assert_eq!(a.read(reg::TIMER_CURRENT, expiry - 1), 1);
            assert!(!a.advance(expiry - 1));
            assert_eq!(a.pending(), None);
            assert!(a.advance(expiry));
            assert_eq!(a.pending(), Some(0x30));
            assert_eq!(a.read(reg::TIMER_CURRENT, expiry), 0);
            assert_eq!(a.next_event(), None);
            assert_eq!(a.read(reg::TIMER_INITIAL, expiry), 100);
        }
    }

    #[test]
    fn periodic_reloads_without_drift() {
        for (tdcr, div) in [(0xb, 1), (0, 2), (1, 4), (2, 8), (3, 16), (8, 32), (9, 64), (0xa, 128)] {
            let mut a = enabled(0);
            a.write(reg::TIMER_DIVIDE, tdcr, 0);
            a.write(reg::LVT_TIMER, 0x2_0040, 0);
            let t0 = 77;
            a.write(reg::TIMER_INITIAL, 1_000, t0);
            let period = 1_000 * 40 * div;
            let mut now = t0;
            for k in 1..=1000u64 {
                let next = a.next_event().unwrap();
                assert_eq!(next, t0 + k * period);
                // The caller is a little late each time; re-arming is from the expiry, not now.
                now = next + (k % 7) * 3;
                assert!(a.advance(now));
                assert_eq!(a.acknowledge(), Some(0x40));
                a.write(reg::EOI, 0, now);
            }
            assert_eq!(a.next_event(), Some(t0 + 1001 * period));
            assert_eq!(a.read(reg::TIMER_CURRENT, t0 + 1000 * period + 40 * div * 250), 750);
            // Several periods late: one interrupt, phase kept.
            let late = t0 + 1005 * period + 5;
            assert!(a.advance(late));
            assert_eq!(a.next_event(), Some(t0 + 1006 * period));
            assert!(now < late);
        }
    }

    #[test]
    fn masked_timer_counts_but_does_not_interrupt() {
        let mut a = enabled(0);
        a.write(reg::TIMER_DIVIDE, 0xb, 0);
        a.write(reg::LVT_TIMER, 0x1_0030, 0);
        a.write(reg::TIMER_INITIAL, 10, 0);
        assert_eq!(a.next_event(), None);
        assert_eq!(a.read(reg::TIMER_CURRENT, 200), 5);
        assert!(!a.advance(400));
        assert_eq!(a.pending(), None);
        assert_eq!(a.read(reg::TIMER_CURRENT, 400), 0);
    }

    #[test]
    fn divide_change_scales_the_remaining_time() {
        let mut a = enabled(0);
        a.write(reg::TIMER_DIVIDE, 0xb, 0); // /1
        a.write(reg::LVT_TIMER, 0x30, 0);
        a.write(reg::TIMER_INITIAL, 100, 0);
        a.write(reg::TIMER_DIVIDE, 0, 1_000); // /2 with 75 counts to go
        assert_eq!(a.read(reg::TIMER_CURRENT, 1_000), 75);
        assert_eq!(a.next_event(), Some(1_000 + 75 * 80));
    }

    #[test]
    fn tsc_deadline_arm_disarm_past() {
        let mut a = enabled(0);
        // Not in deadline mode: MSR writes are ignored.
        a.write_tsc_deadline(5_000, 0);
        assert_eq!(a.tsc_deadline(), 0);
        a.write(reg::LVT_TIMER, 0x4_00ef, 0);
        assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
        // Initial-count writes are ignored in deadline mode.
        a.write(reg::TIMER_INITIAL, 10, 0);
        assert_eq!(a.read(reg::TIMER_INITIAL, 0), 0);
        a.write_tsc_deadline(5_000, 100);
        assert_eq!(a.tsc_deadline(), 5_000);
        assert_eq!(a.next_event(), Some(5_000));
        assert!(!a.advance(4_999));
        assert!(a.advance(5_000));
        assert_eq!(a.pending(), Some(0xef));
        assert_eq!(a.tsc_deadline(), 0, "cleared once fired");
        assert_eq!(a.next_event(), None);
        a.acknowledge();
        a.write(reg::EOI, 0, 5_000);
        // Disarm.
        a.write_tsc_deadline(9_000, 5_000);
        a.write_tsc_deadline(0, 5_001);
        assert_eq!(a.next_event(), None);
        assert!(!a.advance(20_000));
        // A deadline in the past fires at the next advance.
        a.write_tsc_deadline(10, 20_000);
        assert_eq!(a.next_event(), Some(10));
        assert!(a.advance(20_001));
        assert_eq!(a.pending(), Some(0xef));
        // Leaving deadline mode disarms.
        a.write_tsc_deadline(30_000, 20_001);
        a.write(reg::LVT_TIMER, 0xef, 20_002);
        assert_eq!(a.next_event(), None);
        assert_eq!(a.tsc_deadline(), 0);
    }

    #[test]
    fn icr_ipis() {
        let mut a = enabled(0);
        // INIT assert, physical destination 2.
        a.write(reg::ICR_HIGH, 2 << 24, 0);
        let ipi = a.write(reg::ICR_LOW, 0x0000_c500, 0).unwrap();
        assert_eq!(ipi.delivery, Delivery::Init);
        assert_eq!((ipi.dest, ipi.logical, ipi.shorthand), (2, false, Shorthand::None));
        // INIT level de-assert: nothing.
        assert_eq!(a.write(reg::ICR_LOW, 0x0000_8500, 0), None);
        // STARTUP with start page 0x9a (trampoline at 0x9a000).
        let ipi = a.write(reg::ICR_LOW, 0x0000_069a, 0).unwrap();
        assert_eq!((ipi.delivery, ipi.vector, ipi.dest), (Delivery::Startup, 0x9a, 2));
        assert_eq!(a.read(reg::ICR_LOW, 0) & (1 << 12), 0, "delivery status idle");
        // Fixed with shorthands.
        let ipi = a.write(reg::ICR_LOW, 0x0004_00f0, 0).unwrap();
        assert_eq!((ipi.delivery, ipi.vector, ipi.shorthand), (Delivery::Fixed, 0xf0, Shorthand::SelfOnly));
        assert!(ipi.targets(0, 0, &a));
        assert!(!ipi.targets(0, 1, &LocalApic::new(1)));
        let ipi = a.write(reg::ICR_LOW, 0x0008_00f1, 0).unwrap();
        assert_eq!(ipi.shorthand, Shorthand::AllIncludingSelf);
        assert!(ipi.targets(0, 0, &a) && ipi.targets(0, 1, &LocalApic::new(1)));
        let ipi = a.write(reg::ICR_LOW, 0x000c_00f2, 0).unwrap();
        assert_eq!(ipi.shorthand, Shorthand::AllExcludingSelf);
        assert!(!ipi.targets(0, 0, &a) && ipi.targets(0, 1, &LocalApic::new(1)));
        // NMI.
        let ipi = a.write(reg::ICR_LOW, 0x0000_0400, 0).unwrap();
        assert_eq!(ipi.delivery, Delivery::Nmi);
        // Physical and logical (flat) destinations.
        let mut b = enabled(1);
        b.write(reg::LDR, 0x0400_0000, 0);
        a.write(reg::ICR_HIGH, 1 << 24, 0);
        let ipi = a.write(reg::ICR_LOW, 0x0000_0041, 0).unwrap();
        assert!(ipi.targets(0, 1, &b) && !ipi.targets(0, 0, &a));
        a.write(reg::ICR_HIGH, 0x06 << 24, 0);
        let ipi = a.write(reg::ICR_LOW, 0x0000_0841, 0).unwrap();
        assert!(ipi.logical);
        assert!(ipi.targets(0, 1, &b));
        assert!(!ipi.targets(0, 0, &a), "LDR 0 matches no logical destination");
        assert!(b.matches_destination(0xff, false) && b.matches_destination(0xff, true));
        // Cluster model: cluster 1, member bit 2.
        b.write(reg::DFR, 0x0fff_ffff, 0);
        b.write(reg::LDR, 0x1400_0000, 0);
        assert!(b.matches_destination(0x14, true) && b.matches_destination(0x1c, true));
        assert!(!b.matches_destination(0x24, true) && !b.matches_destination(0x18, true));
    }

    #[test]
    fn lint_delivery() {
        let mut a = enabled(0);
        assert_eq!(a.lint(0), LintAction::Masked);
        a.write(reg::LVT_LINT0, 0x700, 0);
        a.write(reg::LVT_LINT1, 0x400, 0);
        assert_eq!(a.lint(0), LintAction::ExtInt);
        assert_eq!(a.lint(1), LintAction::Nmi);
        a.write(reg::LVT_LINT1, 0x0033, 0);
        assert_eq!(a.lint(1), LintAction::Accepted(0x33));
        assert_eq!(a.pending(), Some(0x33));
    }

    #[test]
    fn reserved_offsets_and_read_only_registers() {
        let mut a = enabled(0);
        assert_eq!(a.read(0x2f0, 0), 0, "no CMCI LVT with max LVT 5");
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), esr::ILLEGAL_REGISTER);
        // Read-only registers ignore writes without an error.
        a.write(reg::VERSION, 0, 0);
        a.write(reg::IRR, 0xffff_ffff, 0);
        a.write(reg::ESR, 0, 0);
        assert_eq!(a.read(reg::ESR, 0), 0);
        assert_eq!(a.read(reg::VERSION, 0), APIC_VERSION);
        assert_eq!(a.read(reg::IRR, 0), 0);
        // Sub-register offsets read the register they fall in.
        a.write(reg::TPR, 0x20, 0);
        assert_eq!(a.read(reg::TPR + 4, 0), 0x20);
        // APR follows the highest of TPR, ISR and IRR classes.
        a.accept(0x61, false);
        assert_eq!(a.read(reg::APR, 0), 0x60);
    }

    #[test]
    fn reset_restores_power_on_state() {
        let mut a = enabled(5);
        a.write(reg::TPR, 0x20, 0);
        a.accept(0x40, false);
        a.write(reg::LVT_TIMER, 0x30, 0);
        a.write(reg::TIMER_INITIAL, 99, 0);
        a.reset();
        assert_eq!(a, LocalApic::new(5));
    }
}
