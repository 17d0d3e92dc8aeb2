//! A test case (initial state + instruction sequence) and the outcome of running it.

use crate::layout::{self, DATA_SIZE};

/// General registers in encoding order.
pub const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// One differential test: a starting state and a sequence of instructions (run at CPL 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// Unique, human-readable name (`family/what` or `random/seed/index`).
    pub name: String,
    /// Instruction family (used for `--family` and per-family counts).
    pub family: String,
    /// GPRs in encoding order (rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15).
    pub gprs: [u64; 16],
    /// Starting RFLAGS (only [`layout::RFLAGS_CASE_MASK`] bits are used; IOPL=3 is forced).
    pub rflags: u64,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
    /// Initial contents of the data window (`DATA_SIZE` bytes at `DATA_BASE`).
    pub mem: Vec<u8>,
    /// The instructions, one encoding each (the harness appends `out DONE_PORT, al`).
    pub insns: Vec<Vec<u8>>,
}

impl Case {
    /// A case with zeroed registers (RSP in the middle of the window), a zeroed window and default MXCSR.
    pub fn new(family: &str, name: &str) -> Case {
        let mut gprs = [0u64; 16];
        gprs[RSP] = layout::DATA_BASE + 0x3000;
        Case {
            name: format!("{family}/{name}"),
            family: family.to_string(),
            gprs,
            rflags: 0x202,
            xmm: [0; 16],
            mxcsr: 0x1f80,
            mem: vec![0; DATA_SIZE],
            insns: Vec::new(),
        }
    }

    /// Code bytes of the first `k` instructions followed by the done instruction.
    pub fn code(&self, k: usize) -> Vec<u8> {
        let mut c: Vec<u8> = self.insns[..k.min(self.insns.len())].concat();
        c.extend_from_slice(&layout::DONE_INSN);
        c
    }

    /// The case cut to its first `k` instructions.
    pub fn prefix(&self, k: usize) -> Case {
        let mut c = self.clone();
        c.insns.truncate(k);
        c
    }

    /// Starting RFLAGS as loaded into the CPU.
    pub fn start_rflags(&self) -> u64 {
        layout::start_rflags(self.rflags)
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The sequence reached its final `out`.
    Done,
    /// An exception was delivered through the IDT (`cr2` only for #PF).
    Exception { vector: u8, error_code: Option<u64>, cr2: Option<u64> },
}

/// Architectural state after a run. For an exception, `rip`, `rflags` and `gprs[RSP]` come from the frame
/// the CPU pushed (the faulting instruction's RIP, or the next one for traps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub end: End,
    pub gprs: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
    pub x87: X87,
    pub mem: Vec<u8>,
}

/// x87 state as FXSAVE shows it: control, status and abridged tag words, ST(0)..ST(7) (80 bits each).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct X87 {
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word: bit i set = physical register i is valid.
    pub ftw: u8,
    /// ST(i), in stack order.
    pub st: [[u8; 10]; 8],
}

/// One side could not run a case at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// krr-emu does not implement this instruction (not a pass).
    Unimplemented { rip: u64, mnemonic: String, bytes: Vec<u8> },
    /// Anything else unexpected (timeout, triple fault, emulator error, host problem).
    Other(String),
}

pub type RunResult = Result<Outcome, Failure>;

/// Turns the state at an exception stub's `out` into an exception outcome: `out` holds the registers at
/// the stub (GPRs unchanged since the fault, RSP = ring-0 stack), `rd` reads guest memory. Replaces RIP,
/// RFLAGS and RSP by the frame's and checks the frame is a single delivery from CPL 3.
pub fn apply_exception_frame(
    out: &mut Outcome,
    vector: u8,
    cr2: u64,
    rd: impl Fn(u64) -> u64,
) -> Result<(), String> {
    let has_ec = layout::has_error_code(vector);
    let frame_len = if has_ec { 48 } else { 40 };
    let rsp0 = out.gprs[RSP];
    if rsp0 != layout::RING0_STACK_TOP - frame_len {
        return Err(format!(
            "vector {vector} with ring-0 rsp {rsp0:#x} (expected {:#x}): not a single delivery from CPL 3",
            layout::RING0_STACK_TOP - frame_len
        ));
    }
    let mut f = rsp0;
    let error_code = if has_ec {
        f += 8;
        Some(rd(rsp0))
    } else {
        None
    };
    let (rip, cs, rflags, rsp) = (rd(f), rd(f + 8), rd(f + 16), rd(f + 24));
    if cs != u64::from(layout::USER_CS) {
        return Err(format!("vector {vector} raised with CS {cs:#x}, not from ring 3"));
    }
    out.end = End::Exception { vector, error_code, cr2: (vector == 14).then_some(cr2) };
    out.rip = rip;
    out.rflags = rflags;
    out.gprs[RSP] = rsp;
    Ok(())
}
