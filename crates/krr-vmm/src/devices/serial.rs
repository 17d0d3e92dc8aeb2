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

    pub fn write(&mut self, offset: u8, value: u8) {
        // The writer never fails and the trigger is infallible.
        let _ = self.uart.write(offset, value);
    }
}
