//! COM1: a 16550A (vm-superio) whose output goes to the [`Console`] and whose interrupt goes to
//! an [`IrqSink`].

use std::io::Write;
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

use super::{Console, IrqSink};

struct IrqTrigger {
    sink: Arc<dyn IrqSink>,
    irq: u32,
}

impl IrqTrigger {
    fn clone_trigger(&self) -> Self {
        IrqTrigger { sink: self.sink.clone(), irq: self.irq }
    }
}

/// The UART's registers (vm-superio's state, in a form krr serializes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR.
    pub regs: [u8; 9],
    pub in_buffer: Vec<u8>,
}

impl Trigger for IrqTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.sink.pulse(self.irq);
        Ok(())
    }
}

/// The console's writer: the UART hands it every transmitted byte.
struct ConsoleWriter(Console);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 16550A UART.
#[allow(missing_debug_implementations)] // vm-superio's Serial has no Debug
pub struct SerialPort {
    uart: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleWriter>,
}

impl SerialPort {
    pub fn new(console: Console, sink: Arc<dyn IrqSink>, irq: u32) -> Self {
        SerialPort { uart: Serial::new(IrqTrigger { sink, irq }, ConsoleWriter(console)) }
    }

    pub fn console(&self) -> &Console {
        &self.uart.writer().0
    }

    pub fn read(&mut self, offset: u8) -> u8 {
        self.uart.read(offset)
    }

    /// Register state, for snapshots.
    pub fn state(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            in_buffer: s.in_buffer,
        }
    }

    /// Restore register state saved by [`SerialPort::state`].
    pub fn set_state(&mut self, snap: &SerialSnapshot) {
        let r = snap.regs;
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: r[0],
            baud_divisor_high: r[1],
            interrupt_enable: r[2],
            interrupt_identification: r[3],
            line_control: r[4],
            line_status: r[5],
            modem_control: r[6],
            modem_status: r[7],
            scratch: r[8],
            in_buffer: snap.in_buffer.clone(),
        };
        let trigger = self.uart.interrupt_evt().clone_trigger();
        let console = self.console().clone();
        // from_state only fails on an invalid FIFO, which state() never produces.
        if let Ok(uart) =
            Serial::from_state(&state, trigger, vm_superio::serial::NoEvents, ConsoleWriter(console))
        {
            self.uart = uart;
        }
    }

    pub fn write(&mut self, offset: u8, value: u8) {
        // The writer never fails and the trigger is infallible.
        let _ = self.uart.write(offset, value);
    }
}
