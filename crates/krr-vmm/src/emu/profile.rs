//! Exact instruction counts of an emulated run, split by privilege and by what ran: the numbers
//! behind the recording-overhead benchmark (the emulator is deterministic, so they are exact).

use std::path::Path;

use krr_emu::Cpu;

use crate::boot::{code_matches, function_symbols, symbols, BootError};

/// Counts every instruction the emulated vCPUs execute once `krr_start_init` has been reached
/// (the point where a recording starts, reached the same way by a run that does not record).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Instructions at CPL 3.
    pub user: u64,
    /// Instructions at CPL 0.
    pub kernel: u64,
    /// Calls of the trace-pc position-counter callback `__sanitizer_cov_trace_pc` (each costs
    /// a call, an `incq %gs:krr_pos` and a `ret`; a kernel built with CONFIG_KRR_POS_TRACE_PC).
    pub trace_pc_calls: u64,
    /// Inline `incq %gs:krr_pos` increments executed (a kernel built with the krr_pos plugin,
    /// CONFIG_KRR_POS_PLUGIN; the callback's own increment is not counted here).
    pub inline_increments: u64,
    /// Instructions inside the guest agent's functions (`krr_*`: hooks and ring).
    pub agent: u64,
    /// Of those, instructions in the ring's functions (`krr_ring_*`: open a record with
    /// interrupts off and the ring locked, publish it, flush a full ring); the rest of `agent`
    /// is the hooks' own work (deciding, reading the input, writing it into the record).
    pub ring: u64,
    /// Of those, instructions in the kernel lock's acquire spin `krr_lock_spin`: vCPUs waiting
    /// for the lock (on emu, virtual time is instructions, so this is their waiting time).
    pub lock_spin: u64,
    start_rip: u64,
    lock_range: (u64, u64),
    started: bool,
    trace_pc: u64,
    /// Where the kernel's inline increments are: a bit per byte of [inc_lo, inc_lo + 64 * len).
    inc_sites: Vec<u64>,
    inc_lo: u64,
    /// Sorted, disjoint [start, end) ranges of the agent's functions, and whether each is
    /// one of the ring's.
    agent_ranges: Vec<(u64, u64, bool)>,
}

impl Profile {
    /// A profile of the kernel at `vmlinux` (it must carry the krr agent).
    pub fn for_kernel(vmlinux: &Path) -> Result<Self, BootError> {
        let syms = function_symbols(vmlinux)?;
        let find = |name: &str| syms.iter().find(|s| s.name == name).map(|s| s.addr);
        let missing = |name: &str| BootError::BadKernel {
            path: vmlinux.to_owned(),
            reason: format!("no symbol {name}: the kernel is not built with the krr agent"),
        };
        let start_rip = find("krr_start_init").ok_or_else(|| missing("krr_start_init"))?;
        let trace_pc = find("__sanitizer_cov_trace_pc").ok_or_else(|| missing("__sanitizer_cov_trace_pc"))?;
        let mut agent_ranges: Vec<(u64, u64, bool)> = syms
            .iter()
            .filter(|s| s.name.starts_with("krr_") && s.size > 0)
            .map(|s| (s.addr, s.addr + s.size, s.name.starts_with("krr_ring_")))
            .collect();
        agent_ranges.sort_unstable();
        agent_ranges.dedup();
        let lock_range =
            syms.iter().find(|s| s.name == "krr_lock_spin").map_or((0, 0), |s| (s.addr, s.addr + s.size));
        // The plugin's increment, `incq %gs:krr_pos` (krr_pos's per-CPU offset as disp32), and
        // not the callback's own (it is counted as part of each call).
        let krr_pos = symbols(vmlinux, false)?
            .into_iter()
            .find(|s| s.name == "krr_pos")
            .ok_or_else(|| missing("krr_pos"))?
            .addr;
        let mut incq = vec![0x65, 0x48, 0xff, 0x04, 0x25];
        incq.extend_from_slice(&(krr_pos as u32).to_le_bytes());
        let callback = trace_pc..trace_pc + 16;
        let sites: Vec<u64> =
            code_matches(vmlinux, &incq)?.into_iter().filter(|a| !callback.contains(a)).collect();
        let inc_lo = sites.first().copied().unwrap_or(0);
        let span = sites.last().map_or(0, |hi| hi - inc_lo + 1);
        let mut inc_sites = vec![0u64; span.div_ceil(64) as usize];
        for a in &sites {
            let bit = a - inc_lo;
            inc_sites[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        Ok(Profile { start_rip, trace_pc, inc_sites, inc_lo, agent_ranges, lock_range, ..Default::default() })
    }

    /// Account for the instruction `cpu` is about to execute.
    #[inline]
    pub fn observe(&mut self, cpu: &Cpu) {
        if !self.started {
            if cpu.rip != self.start_rip {
                return;
            }
            self.started = true;
        }
        if cpu.cpl() == 3 {
            self.user += 1;
            return;
        }
        self.kernel += 1;
        let rip = cpu.rip;
        if rip == self.trace_pc {
            self.trace_pc_calls += 1;
        }
        let bit = rip.wrapping_sub(self.inc_lo);
        if self.inc_sites.get((bit / 64) as usize).is_some_and(|w| w & (1 << (bit % 64)) != 0) {
            self.inline_increments += 1;
        }
        let i = self.agent_ranges.partition_point(|r| r.0 <= rip);
        if i > 0 && rip < self.agent_ranges[i - 1].1 {
            self.agent += 1;
            self.ring += u64::from(self.agent_ranges[i - 1].2);
            if (self.lock_range.0..self.lock_range.1).contains(&rip) {
                self.lock_spin += 1;
            }
        }
    }

    /// Kernel instructions the position counter costs: each callback's call, `incq` and `ret`,
    /// and each inline `incq`.
    pub fn position_counter_cost(&self) -> u64 {
        3 * self.trace_pc_calls + self.inline_increments
    }

    /// Position-counter increments (either kind).
    pub fn increments(&self) -> u64 {
        self.trace_pc_calls + self.inline_increments
    }
}
