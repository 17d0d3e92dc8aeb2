//! Where the guest agent's functions are in the recorded kernel: replay stops at their first
//! instruction to check each call against the log and to do the replay side of it.

use std::path::Path;

use crate::ReplayError;

/// An agent function replay cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Syscall,
    Entry,
    PortIn,
    MmioRead,
    Rdtsc,
    Rdmsr,
    Cpuid,
    Rdrand,
    PteRead,
    UserReadBegin,
    UserReadEnd,
    /// The kernel lock's acquire spin (SMP recordings): where replay decides which vCPU runs.
    LockSpin,
}

const NAMES: [(&str, Hook); 12] = [
    ("krr_syscall", Hook::Syscall),
    ("krr_entry", Hook::Entry),
    ("krr_port_in", Hook::PortIn),
    ("krr_mmio_read", Hook::MmioRead),
    ("krr_rdtsc", Hook::Rdtsc),
    ("krr_rdtsc_ordered", Hook::Rdtsc),
    ("krr_rdmsr", Hook::Rdmsr),
    ("krr_cpuid", Hook::Cpuid),
    ("krr_rdrand", Hook::Rdrand),
    ("krr_pte_read", Hook::PteRead),
    ("krr_ur_begin", Hook::UserReadBegin),
    ("krr_ur_end", Hook::UserReadEnd),
];

/// The agent's entry points and the position counter's per-CPU offset.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// (address, hook), sorted by address.
    at: Vec<(u64, Hook)>,
    lo: u64,
    hi: u64,
    /// Offset of `krr_pos` in the per-CPU area (added to the kernel's GS base).
    pub krr_pos: u64,
    /// The position counter's callback: the only code that moves `krr_pos`.
    pub trace_pc: u64,
    /// The kernel lock's acquire spin `[start, end)`; empty for kernels without the lock.
    pub lock_spin: std::ops::Range<u64>,
}

impl Hooks {
    /// Read the symbols of `vmlinux`.
    pub fn from_vmlinux(vmlinux: &Path) -> Result<Self, ReplayError> {
        let syms = krr_vmm::boot::symbols(vmlinux, false).map_err(|e| ReplayError::Kernel(e.to_string()))?;
        let find = |name: &str| syms.iter().find(|s| s.name == name).map(|s| s.addr);
        let mut at = Vec::new();
        for (name, hook) in NAMES {
            let addr = find(name).ok_or_else(|| {
                ReplayError::Kernel(format!(
                    "{}: no symbol {name}: not a kernel with the krr agent",
                    vmlinux.display()
                ))
            })?;
            at.push((addr, hook));
        }
        // Kernels built before the kernel lock replay their one-vCPU traces without it.
        let lock_spin = match syms.iter().find(|s| s.name == "krr_lock_spin") {
            Some(s) => {
                at.push((s.addr, Hook::LockSpin));
                s.addr..s.addr + s.size.max(1)
            }
            None => 0..0,
        };
        at.sort_unstable_by_key(|h| h.0);
        let krr_pos = find("krr_pos")
            .ok_or_else(|| ReplayError::Kernel(format!("{}: no symbol krr_pos", vmlinux.display())))?;
        let trace_pc = find("__sanitizer_cov_trace_pc").ok_or_else(|| {
            ReplayError::Kernel(format!("{}: no symbol __sanitizer_cov_trace_pc", vmlinux.display()))
        })?;
        Ok(Hooks { lo: at[0].0, hi: at[at.len() - 1].0, at, krr_pos, trace_pc, lock_spin })
    }

    /// No agent entry points: for tests that run code outside a kernel.
    #[cfg(test)]
    pub(crate) fn none(krr_pos: u64, trace_pc: u64) -> Self {
        Hooks { at: Vec::new(), lo: u64::MAX, hi: 0, krr_pos, trace_pc, lock_spin: 0..0 }
    }

    /// `none` plus one agent entry point: `hook` at `addr`.
    #[cfg(test)]
    pub(crate) fn one(krr_pos: u64, trace_pc: u64, addr: u64, hook: Hook) -> Self {
        Hooks { at: vec![(addr, hook)], lo: addr, hi: addr, ..Hooks::none(krr_pos, trace_pc) }
    }

    /// The hook whose first instruction is at `rip`.
    #[inline]
    pub fn at(&self, rip: u64) -> Option<Hook> {
        if rip < self.lo || rip > self.hi {
            return None;
        }
        self.at.iter().find(|h| h.0 == rip).map(|h| h.1)
    }
}
