//! An 82093AA-style I/O APIC (MMIO at 0xfec00000, 24 pins) for the `emu` backend.
//!
//! Device interrupt lines come in through [`IoApic::set_irq`] / [`IoApic::pulse`] and go out as
//! [`Delivery`] messages that the caller routes to local APICs. Nothing here depends on time, so
//! the model is deterministic by construction.
//!
//! The line level passed in is the logical "asserted" state; the polarity bit is stored and read
//! back but not applied, as in KVM, because the VMM's devices signal assertion, not voltage.

/// Guest-physical base of the I/O APIC.
pub const IOAPIC_MMIO_BASE: u64 = 0xfec0_0000;
/// Number of redirection entries (pins).
pub const PINS: usize = 24;
/// Version register: version 0x11, max redirection entry 23.
pub const IOAPIC_VERSION: u32 = 0x0017_0011;
/// MMIO offset of the register select register.
pub const IOREGSEL: u32 = 0x00;
/// MMIO offset of the data window.
pub const IOWIN: u32 = 0x10;

const MASKED: u64 = 1 << 16;
const REMOTE_IRR: u64 = 1 << 14;
const LEVEL: u64 = 1 << 15;
/// Writable bits of an entry: vector, delivery mode, destination mode, polarity, trigger, mask,
/// destination. Delivery status (12) and remote IRR (14) are read-only.
const WRITABLE: u64 = 0xff00_0000_0001_afff;

/// The delivery mode of a redirection entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    /// The caller may pick the lowest-numbered matching APIC (deterministic).
    LowestPriority,
    Smi,
    Nmi,
    Init,
    ExtInt,
    /// Modes 3 and 6 are reserved.
    Reserved,
}

/// An interrupt message for the local APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Destination APIC ID (physical) or logical destination mask.
    pub dest: u8,
    pub logical: bool,
    pub vector: u8,
    /// Level-triggered: the receiving APIC sets TMR and reports its EOI back via [`IoApic::eoi`].
    pub level: bool,
    pub mode: DeliveryMode,
}

/// The I/O APIC. `Clone + PartialEq` for snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IoApic {
    id: u32,
    ioregsel: u8,
    entries: [u64; PINS],
    /// Current asserted state of each input line.
    lines: u32,
}

impl IoApic {
    /// Reset state: every entry masked, edge-triggered, vector 0.
    pub fn new(id: u8) -> Self {
        IoApic { id: ((id & 0xf) as u32) << 24, ioregsel: 0, entries: [MASKED; PINS], lines: 0 }
    }

    /// The raw 64-bit redirection entry of `pin` (for inspection and tests).
    pub fn entry(&self, pin: u8) -> Option<u64> {
        self.entries.get(pin as usize).copied()
    }

    /// A 32-bit read at `offset` in the MMIO window.
    pub fn read(&self, offset: u32) -> u32 {
        match offset & 0xff {
            IOREGSEL => self.ioregsel as u32,
            IOWIN => self.read_register(self.ioregsel),
            _ => 0,
        }
    }

    fn read_register(&self, index: u8) -> u32 {
        match index {
            0x00 => self.id,
            0x01 => IOAPIC_VERSION,
            // Arbitration ID: the APIC ID.
            0x02 => self.id,
            0x10..=0x3f => {
                let e = self.entries[(index as usize - 0x10) / 2];
                if index & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// A 32-bit write at `offset`. Returns what must be delivered as a result: unmasking a
    /// level-triggered pin whose line is asserted (and remote IRR clear) delivers it at once,
    /// as on KVM, or the interrupt would be lost.
    pub fn write(&mut self, offset: u32, value: u32) -> Vec<Delivery> {
        match offset & 0xff {
            IOREGSEL => self.ioregsel = value as u8,
            IOWIN => return self.write_register(self.ioregsel, value),
            _ => {}
        }
        Vec::new()
    }

    fn write_register(&mut self, index: u8, value: u32) -> Vec<Delivery> {
        match index {
            0x00 => self.id = value & 0x0f00_0000,
            0x10..=0x3f => {
                let pin = (index as usize - 0x10) / 2;
                let old = self.entries[pin];
                let new = if index & 1 == 0 {
                    (old & !0xffff_ffff) | value as u64
                } else {
                    (old & 0xffff_ffff) | ((value as u64) << 32)
                };
                let mut e = (new & WRITABLE) | (old & REMOTE_IRR);
                // An edge-triggered entry has no remote IRR.
                if e & LEVEL == 0 {
                    e &= !REMOTE_IRR;
                }
                self.entries[pin] = e;
                if e & LEVEL != 0 && self.lines & (1 << pin) != 0 {
                    return self.service(pin).into_iter().collect();
                }
            }
            _ => {}
        }
        Vec::new()
    }

    /// Deliver a level-triggered pin if it is unmasked and not already awaiting an EOI.
    fn service(&mut self, pin: usize) -> Option<Delivery> {
        let e = self.entries[pin];
        if e & MASKED != 0 || e & REMOTE_IRR != 0 {
            return None;
        }
        self.entries[pin] |= REMOTE_IRR;
        Some(Self::delivery(e))
    }

    fn delivery(e: u64) -> Delivery {
        Delivery {
            dest: (e >> 56) as u8,
            logical: e & (1 << 11) != 0,
            vector: e as u8,
            level: e & LEVEL != 0,
            mode: match (e >> 8) & 7 {
                0 => DeliveryMode::Fixed,
                1 => DeliveryMode::LowestPriority,
                2 => DeliveryMode::Smi,
                4 => DeliveryMode::Nmi,
                5 => DeliveryMode::Init,
                7 => DeliveryMode::ExtInt,
                _ => DeliveryMode::Reserved,
            },
        }
    }

    /// Set input line `pin` to `level` (asserted or not). Edge-triggered pins deliver on a rising
    /// edge when unmasked (an edge while masked is lost, as on hardware); level-triggered pins
    /// deliver while asserted, unmasked and remote IRR is clear, and then set remote IRR.
    pub fn set_irq(&mut self, pin: u8, level: bool) -> Vec<Delivery> {
        let pin = pin as usize;
        if pin >= PINS {
            return Vec::new();
        }
        let bit = 1u32 << pin;
        let was = self.lines & bit != 0;
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
        let e = self.entries[pin];
        if !level {
            return Vec::new();
        }
        if e & LEVEL != 0 {
            self.service(pin).into_iter().collect()
        } else if !was && e & MASKED == 0 {
            vec![Self::delivery(e)]
        } else {
            Vec::new()
        }
    }

    /// Raise then lower `pin`: one edge, for edge-triggered ISA devices.
    pub fn pulse(&mut self, pin: u8) -> Vec<Delivery> {
        let mut d = self.set_irq(pin, true);
        d.extend(self.set_irq(pin, false));
        d
    }

    /// A local APIC EOIed level-triggered `vector`: clear remote IRR of the level entries with
    /// that vector, and deliver again those whose line is still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<Delivery> {
        let mut out = Vec::new();
        for pin in 0..PINS {
            let e = self.entries[pin];
            if e as u8 != vector || e & LEVEL == 0 || e & REMOTE_IRR == 0 {
                continue;
            }
            self.entries[pin] &= !REMOTE_IRR;
            if self.lines & (1 << pin) != 0 {
                out.extend(self.service(pin));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entry(io: &mut IoApic, pin: u8, low: u32, high: u32) -> Vec<Delivery> {
        io.write(IOREGSEL, 0x11 + 2 * pin as u32);
        io.write(IOWIN, high);
        io.write(IOREGSEL, 0x10 + 2 * pin as u32);
        io.write(IOWIN, low)
    }

    fn read_reg(io: &mut IoApic, index: u32) -> u32 {
        io.write(IOREGSEL, index);
        io.read(IOWIN)
    }

    #[test]
    fn registers() {
        let mut io = IoApic::new(2);
        assert_eq!(read_reg(&mut io, 0), 2 << 24);
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011);
        assert_eq!(read_reg(&mut io, 2), 2 << 24);
        assert_eq!(io.read(IOREGSEL), 2);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), 1 << 16);
            assert_eq!(read_reg(&mut io, 0x11 + 2 * pin), 0);
        }
        io.write(IOREGSEL, 0);
        io.write(IOWIN, 0x0500_0000);
        assert_eq!(read_reg(&mut io, 0), 5 << 24);
        // Read-only bits (delivery status, remote IRR) do not stick.
        write_entry(&mut io, 5, 0x0001_ffff, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, 0x1a), 0x0001_afff);
        assert_eq!(read_reg(&mut io, 0x1b), 0xff00_0000);
        assert_eq!(io.entry(5), Some(0xff00_0000_0001_afff));
    }

    #[test]
    fn edge_triggered() {
        let mut io = IoApic::new(0);
        // Masked at reset: nothing.
        assert!(io.pulse(4).is_empty());
        write_entry(&mut io, 4, 0x0000_0834, 0x0300_0000);
        let d = io.pulse(4);
        assert_eq!(
            d,
            vec![Delivery { dest: 3, logical: true, vector: 0x34, level: false, mode: DeliveryMode::Fixed }]
        );
        // Only rising edges.
        assert_eq!(io.set_irq(4, true).len(), 1);
        assert!(io.set_irq(4, true).is_empty());
        assert!(io.set_irq(4, false).is_empty());
        // Masked again: edges are lost.
        write_entry(&mut io, 4, 0x0001_0834, 0);
        assert!(io.pulse(4).is_empty());
        assert!(io.pulse(30).is_empty(), "no such pin");
    }

    #[test]
    fn eoi_serves_every_level_pin_with_the_vector() {
        let mut io = IoApic::new(0);
        write_entry(&mut io, 10, 0x0000_8050, 0);
        write_entry(&mut io, 11, 0x0000_8050, 0);
        assert_eq!(io.set_irq(10, true).len(), 1);
        assert_eq!(io.set_irq(11, true).len(), 1);
        io.set_irq(11, false);
        let d = io.eoi(0x50);
        assert_eq!(d.len(), 1, "only pin 10 is still asserted");
        assert_eq!(io.entry(11).unwrap() & (1 << 14), 0);
        assert_ne!(io.entry(10).unwrap() & (1 << 14), 0);
    }

    #[test]
    fn level_triggered_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        write_entry(&mut io, 9, 0x0000_a141, 0);
        let d = io.set_irq(9, true);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].vector, d[0].level, d[0].mode), (0x41, true, DeliveryMode::LowestPriority));
        assert_ne!(read_reg(&mut io, 0x22) & (1 << 14), 0, "remote IRR set");
        // Still asserted, remote IRR set: no re-delivery.
        assert!(io.set_irq(9, true).is_empty());
        // EOI of another vector does nothing.
        assert!(io.eoi(0x42).is_empty());
        // EOI while the line is still high: delivered again.
        assert_eq!(io.eoi(0x41).len(), 1);
        assert_ne!(read_reg(&mut io, 0x22) & (1 << 14), 0);
        // Line drops, then EOI: remote IRR clears, nothing delivered.
        io.set_irq(9, false);
        assert!(io.eoi(0x41).is_empty());
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 0);
        // Masked while asserted: held; unmasking delivers.
        write_entry(&mut io, 9, 0x0001_a141, 0);
        assert!(io.set_irq(9, true).is_empty());
        let d = write_entry(&mut io, 9, 0x0000_a141, 0);
        assert_eq!(d.len(), 1);
        // Switching to edge clears remote IRR.
        write_entry(&mut io, 9, 0x0000_2141, 0);
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 0);
    }
}
