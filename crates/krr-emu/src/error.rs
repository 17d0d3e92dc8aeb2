//! Error and exception types.
//!
//! `EmuError` is what the public API returns: conditions the emulator cannot turn into guest
//! behaviour (unimplemented instruction, triple fault, a platform asking to stop). Guest-visible
//! faults are `Exception`s and are delivered through the IDT instead.

use crate::platform::PlatformStop;

/// Why the emulator stopped with an error rather than a guest-visible event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmuError {
    /// The instruction decodes but krr-emu does not implement it. RIP is left at the instruction,
    /// nothing of it was executed.
    #[error("unimplemented instruction `{mnemonic}` at rip {rip:#x} (bytes {bytes:02x?})")]
    Unimplemented {
        /// Linear RIP of the instruction.
        rip: u64,
        /// The instruction bytes.
        bytes: Vec<u8>,
        /// iced-x86 formatted instruction text.
        mnemonic: String,
    },
    /// An exception occurred while delivering a double fault: real hardware shuts down.
    #[error("triple fault at rip {rip:#x} (third fault vector {vector})")]
    TripleFault {
        /// RIP of the instruction that started the fault chain.
        rip: u64,
        /// Vector of the fault that could not be delivered.
        vector: u8,
    },
    /// A `Platform` method returned an error; the current instruction did not retire.
    #[error("platform stopped execution: {0}")]
    Platform(#[from] PlatformStop),
    /// A processor mode or feature the emulator does not model (e.g. 32-bit paging, VM86).
    #[error("unsupported processor state at rip {rip:#x}: {what}")]
    Unsupported {
        /// Linear RIP at the time.
        rip: u64,
        /// What is unsupported.
        what: &'static str,
    },
}

/// A guest-visible exception (fault, trap or abort) raised by an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// Vector number (0..=31 for architectural exceptions).
    pub vector: u8,
    /// Error code pushed on the stack, for vectors that have one.
    pub error_code: Option<u32>,
    /// Faulting linear address, loaded into CR2 when a #PF is delivered.
    pub cr2: Option<u64>,
}

/// Architectural exception vectors.
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (INT3).
    pub const BP: u8 = 3;
    /// Overflow (INTO).
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// SIMD floating point.
    pub const XM: u8 = 19;
}

impl Exception {
    /// An exception without error code.
    pub const fn new(vector: u8) -> Self {
        Exception { vector, error_code: None, cr2: None }
    }
    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Exception { vector, error_code: Some(code), cr2: None }
    }
    /// #UD.
    pub const fn ud() -> Self {
        Self::new(vector::UD)
    }
    /// #GP(code).
    pub const fn gp(code: u32) -> Self {
        Self::with_code(vector::GP, code)
    }
    /// #SS(code).
    pub const fn ss(code: u32) -> Self {
        Self::with_code(vector::SS, code)
    }
    /// #DE.
    pub const fn de() -> Self {
        Self::new(vector::DE)
    }
    /// #NP(code).
    pub const fn np(code: u32) -> Self {
        Self::with_code(vector::NP, code)
    }
    /// #PF with error code and faulting address.
    pub const fn pf(code: u32, addr: u64) -> Self {
        Exception { vector: vector::PF, error_code: Some(code), cr2: Some(addr) }
    }
}

/// Internal failure of one instruction: either a guest exception or an emulator error.
#[derive(Debug)]
pub(crate) enum Fault {
    /// Deliver this exception to the guest (boxed too: `ExResult<u64>` then fits in two
    /// registers, and exceptions are rare next to instructions).
    Exc(Box<Exception>),
    /// Stop emulation (boxed to keep `Result<(), Fault>` small on the hot path).
    Err(Box<EmuError>),
}

impl From<Exception> for Fault {
    fn from(e: Exception) -> Self {
        Fault::Exc(Box::new(e))
    }
}

impl From<EmuError> for Fault {
    fn from(e: EmuError) -> Self {
        Fault::Err(Box::new(e))
    }
}

impl From<PlatformStop> for Fault {
    fn from(e: PlatformStop) -> Self {
        Fault::Err(Box::new(EmuError::Platform(e)))
    }
}

/// Result of one instruction's execution.
pub(crate) type ExResult<T = ()> = Result<T, Fault>;
