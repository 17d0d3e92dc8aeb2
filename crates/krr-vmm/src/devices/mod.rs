//! Port-I/O devices shared by both backends, and the seam through which they raise interrupts.
//!
//! The set is deliberately small: a 16550 UART for the console, the exit-status port the guest's
//! init writes, the i8042 reset line, and a CMOS stub. Unclaimed ports read as all ones and
//! ignore writes, like an empty ISA bus.

mod console;
mod serial;

use std::sync::Arc;

pub use console::{Console, ConsoleEvent, Echo};
pub use serial::{SerialPort, SerialSnapshot};

/// Port the guest's init writes its exit status to (QEMU's isa-debug-exit uses the same port).
pub const EXIT_PORT: u16 = 0xf4;
/// The command port (guest/init/krr-port.h): a 32-bit read gives the length of the command, then
/// 8-bit reads give its bytes (arguments, each NUL-terminated). The first read is the snapshot
/// point: the guest's init is about to ask what to run.
pub const CMD_PORT: u16 = 0xf5;
/// COM1.
pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
const I8042_COMMAND: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
const CMOS_INDEX: u16 = 0x70;
const CMOS_DATA: u16 = 0x71;

/// Raises guest interrupt lines: the in-kernel irqchip under KVM, the userspace I/O APIC under
/// the emulator.
pub trait IrqSink: Send + Sync {
    /// Pulse ISA interrupt `irq` (an edge).
    fn pulse(&self, irq: u32);
}

/// Saved device state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevicesSnapshot {
    pub serial: SerialSnapshot,
    pub cmos_index: u8,
}

/// What a port write asked the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortAction {
    Continue,
    /// The guest's init reported its workload's exit status.
    Exit(u8),
    /// The guest reset the machine (i8042 pulse).
    Reset,
}

/// The devices on the port bus.
pub struct Devices {
    serial: SerialPort,
    cmos_index: u8,
    command: Vec<u8>,
    command_pos: usize,
    snapshot_requested: bool,
}

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devices").field("cmos_index", &self.cmos_index).finish_non_exhaustive()
    }
}

impl Devices {
    pub fn new(console: Console, irq: Arc<dyn IrqSink>) -> Self {
        Devices {
            serial: SerialPort::new(console, irq, COM1_IRQ),
            cmos_index: 0,
            command: Vec::new(),
            command_pos: 0,
            snapshot_requested: false,
        }
    }

    /// The command the guest's init runs: its arguments (none: init falls back to the kernel
    /// command line, then to a shell).
    pub fn set_command(&mut self, args: &[String]) {
        self.command.clear();
        for a in args {
            self.command.extend_from_slice(a.as_bytes());
            self.command.push(0);
        }
        self.command_pos = 0;
    }

    /// Ask the VM to stop at the snapshot point: the next 32-bit read of the command port.
    pub fn request_snapshot(&mut self) {
        self.snapshot_requested = true;
    }

    /// Whether the snapshot point has been requested; clears the request.
    pub fn take_snapshot_request(&mut self) -> bool {
        std::mem::take(&mut self.snapshot_requested)
    }

    /// Device state for snapshots (the command is not part of it: a restored VM gets a new one).
    pub fn state(&self) -> DevicesSnapshot {
        DevicesSnapshot { serial: self.serial.state(), cmos_index: self.cmos_index }
    }

    /// Restore what [`Devices::state`] saved.
    pub fn set_state(&mut self, s: &DevicesSnapshot) {
        self.serial.set_state(&s.serial);
        self.cmos_index = s.cmos_index;
    }

    /// The console the serial port writes to.
    pub fn console(&self) -> &Console {
        self.serial.console()
    }

    /// Port read of `size` bytes.
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let value = self.io_in_inner(port, size);
        tracing::trace!(
            port = format_args!("{port:#x}"),
            size,
            value = format_args!("{value:#x}"),
            "port in"
        );
        value
    }

    fn io_in_inner(&mut self, port: u16, size: u8) -> u32 {
        let ones = if size >= 4 { u32::MAX } else { (1u32 << (size * 8)) - 1 };
        match port {
            COM1_BASE..=0x3ff if size == 1 => self.serial.read((port - COM1_BASE) as u8) as u32,
            // No key, output buffer empty: nothing for the guest to wait on.
            I8042_COMMAND if size == 1 => 0,
            CMOS_DATA if size == 1 => 0,
            CMOS_INDEX if size == 1 => self.cmos_index as u32,
            CMD_PORT if size == 4 => {
                self.command_pos = 0;
                self.command.len() as u32
            }
            CMD_PORT if size == 1 => {
                let b = self.command.get(self.command_pos).copied().unwrap_or(0);
                self.command_pos += 1;
                b as u32
            }
            _ => ones,
        }
    }

    /// Port write.
    pub fn io_out(&mut self, port: u16, size: u8, value: u32) -> PortAction {
        tracing::trace!(
            port = format_args!("{port:#x}"),
            size,
            value = format_args!("{value:#x}"),
            "port out"
        );
        match port {
            COM1_BASE..=0x3ff if size == 1 => {
                self.serial.write((port - COM1_BASE) as u8, value as u8);
                PortAction::Continue
            }
            EXIT_PORT => PortAction::Exit(value as u8),
            I8042_COMMAND if value as u8 == I8042_RESET => PortAction::Reset,
            CMOS_INDEX => {
                self.cmos_index = value as u8 & 0x7f;
                PortAction::Continue
            }
            _ => PortAction::Continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Default)]
    struct CountIrq(AtomicU32);
    impl IrqSink for CountIrq {
        fn pulse(&self, _irq: u32) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn ports() {
        let irq = Arc::new(CountIrq::default());
        let console = Console::new(Echo::Nothing);
        let mut d = Devices::new(console.clone(), irq.clone());
        for b in b"hi\n" {
            assert_eq!(d.io_out(COM1_BASE, 1, *b as u32), PortAction::Continue);
        }
        assert_eq!(console.bytes(), b"hi\n");
        assert_eq!(d.io_out(EXIT_PORT, 1, 7), PortAction::Exit(7));
        assert_eq!(d.io_out(I8042_COMMAND, 1, 0xfe), PortAction::Reset);
        assert_eq!(d.io_in(0x1234, 2), 0xffff);
        // The command port: no command, then "a b" as two arguments.
        assert_eq!(d.io_in(CMD_PORT, 4), 0);
        d.set_command(&["a".into(), "b c".into()]);
        assert_eq!(d.io_in(CMD_PORT, 4), 6);
        let bytes: Vec<u8> = (0..6).map(|_| d.io_in(CMD_PORT, 1) as u8).collect();
        assert_eq!(bytes, b"a\0b c\0");
        assert_eq!(d.io_in(0x1234, 4), u32::MAX);
        // LSR: transmitter empty.
        assert_ne!(d.io_in(COM1_BASE + 5, 1) & 0x20, 0);
        // Enabling the THR-empty interrupt raises IRQ 4.
        d.io_out(COM1_BASE + 1, 1, 0x02);
        assert!(irq.0.load(Ordering::Relaxed) >= 1);
    }
}
