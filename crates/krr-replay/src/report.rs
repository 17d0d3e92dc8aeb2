//! The divergence report: where replay and the log first disagree, both states, and what led
//! there. Replay stops at the first one; it is never a warning.

use krr_trace::{Event, Regs};

use crate::engine::describe;

/// The first point where the replayed kernel did not do what the log says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the event replay expected next.
    pub event_index: u64,
    pub vcpu: u32,
    /// What differs, in words.
    pub what: String,
    /// The event the log has at that index.
    pub expected: Option<Event>,
    pub rip: u64,
    pub gpr: [u64; 16],
    pub rflags: u64,
    /// The replayed vCPU's position counter.
    pub krr_pos: u64,
    /// Guest kernel instructions executed before it.
    pub instructions: u64,
    /// Up to 20 events before it and the expected one, with their indices.
    pub recent: Vec<(u64, Event)>,
}

const NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "replay diverged at event {} (vCPU {}): {}", self.event_index, self.vcpu, self.what)?;
        writeln!(
            f,
            "  position: krr_pos {} RIP {:#x} RFLAGS {:#x}, after {} instructions",
            self.krr_pos, self.rip, self.rflags, self.instructions
        )?;
        let logged: Option<Regs> = match &self.expected {
            Some(
                Event::Syscall { regs, .. } | Event::Exception { regs, .. } | Event::Interrupt { regs, .. },
            ) => Some(*regs),
            _ => None,
        };
        match &logged {
            Some(_) => writeln!(f, "  registers (replay vs log):")?,
            None => writeln!(f, "  registers (replay):")?,
        }
        for (i, name) in NAMES.iter().enumerate() {
            match &logged {
                Some(r) if r.gpr[i] != self.gpr[i] => {
                    writeln!(f, "    {name:>3} {:#018x}  log {:#018x}  <- differs", self.gpr[i], r.gpr[i])?
                }
                Some(r) => writeln!(f, "    {name:>3} {:#018x}  log {:#018x}", self.gpr[i], r.gpr[i])?,
                None => writeln!(f, "    {name:>3} {:#018x}", self.gpr[i])?,
            }
        }
        writeln!(f, "  last events:")?;
        for (i, e) in &self.recent {
            let mark = if *i == self.event_index { "  <- expected next" } else { "" };
            writeln!(f, "    #{i} cpu{} {}{mark}", e.vcpu(), describe(e))?;
        }
        Ok(())
    }
}
