//! The GDB target: a [`Timeline`] plus breakpoints, watchpoints and `monitor` commands.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::SingleThreadStopReason;
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps, SwBreakpoint,
    SwBreakpointOps, WatchKind,
};
use gdbstub::target::ext::monitor_cmd::{outputln, ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use krr_emu::{GuestMemory, PAGE_SIZE};
use krr_replay::load::virt_to_phys;
use krr_replay::{Checkpoint, Stop, Watch};

use crate::arch::{Regs, X86_64Krr};
use crate::timeline::{Found, Timeline};
use crate::{Conn, GdbError};

/// Steps run between looks for a Ctrl-C from GDB.
const POLL_STEPS: u64 = 1 << 20;

/// What the trace is, for `monitor info`.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Lines describing the trace (directory, kernel, events, ...).
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Continue,
    Step,
    ReverseStep,
    ReverseContinue,
}

#[derive(Debug, Clone, Copy)]
struct WatchSpec {
    addr: u64,
    len: u64,
    kind: WatchKind,
}

/// A replay as a GDB target.
#[derive(Debug)]
pub struct ReplayTarget<'a> {
    tl: Timeline<'a>,
    sw: BTreeSet<u64>,
    hw: BTreeSet<u64>,
    watches: Vec<WatchSpec>,
    resume: Option<Resume>,
    saved: Vec<Checkpoint>,
    info: SessionInfo,
}

impl<'a> ReplayTarget<'a> {
    pub fn new(tl: Timeline<'a>, info: SessionInfo) -> Self {
        ReplayTarget {
            tl,
            sw: BTreeSet::new(),
            hw: BTreeSet::new(),
            watches: Vec::new(),
            resume: None,
            saved: Vec::new(),
            info,
        }
    }

    pub fn timeline(&self) -> &Timeline<'a> {
        &self.tl
    }

    /// Read guest-virtual memory through the current page tables; the readable prefix.
    pub fn read_virt(&self, va: u64, out: &mut [u8]) -> usize {
        let s = &self.tl.session;
        let (cpu, mem) = (s.cpu(), s.mem());
        let mut done = 0usize;
        while done < out.len() {
            let at = va.wrapping_add(done as u64);
            let n = (PAGE_SIZE - (at as usize % PAGE_SIZE)).min(out.len() - done);
            let Some(pa) = virt_to_phys(mem, cpu.cr3, at) else { break };
            if !mem.read(pa, &mut out[done..done + n]) {
                break;
            }
            done += n;
        }
        done
    }

    /// The watchpoints as guest-physical ranges (split at pages), with the virtual address of
    /// each piece.
    fn phys_watches(&self) -> (Vec<Watch>, Vec<(usize, u64)>) {
        let s = &self.tl.session;
        let (mut w, mut back) = (Vec::new(), Vec::new());
        for (i, spec) in self.watches.iter().enumerate() {
            let mut off = 0u64;
            while off < spec.len {
                let va = spec.addr.wrapping_add(off);
                let n = (PAGE_SIZE as u64 - (va % PAGE_SIZE as u64)).min(spec.len - off);
                if let Some(pa) = virt_to_phys(s.mem(), s.cpu().cr3, va) {
                    let (read, write) = match spec.kind {
                        WatchKind::Write => (false, true),
                        WatchKind::Read => (true, false),
                        WatchKind::ReadWrite => (true, true),
                    };
                    w.push(Watch { addr: pa, len: n, read, write });
                    back.push((i, va));
                }
                off += n;
            }
        }
        (w, back)
    }

    fn watch_stop(
        &self,
        back: &[(usize, u64)],
        w: &[Watch],
        index: usize,
        pa: u64,
    ) -> SingleThreadStopReason<u64> {
        let (i, va) = back[index];
        SingleThreadStopReason::Watch { tid: (), kind: self.watches[i].kind, addr: va + (pa - w[index].addr) }
    }

    fn break_stop(&self) -> SingleThreadStopReason<u64> {
        if self.sw.contains(&self.tl.session.cpu().rip) {
            SingleThreadStopReason::SwBreak(())
        } else {
            SingleThreadStopReason::HwBreak(())
        }
    }

    fn end(&self) -> SingleThreadStopReason<u64> {
        if let Some(d) = self.tl.session.divergence() {
            eprint!("krr gdb: the replay ends here, it diverged from the trace:\n{d}");
        }
        SingleThreadStopReason::ReplayLog { tid: None, pos: ReplayLogPosition::End }
    }

    /// Run forward in slices until a stop, the end, or data from GDB (`None`).
    fn run_forward(
        &mut self,
        step: bool,
        mut incoming: impl FnMut() -> bool,
    ) -> Option<SingleThreadStopReason<u64>> {
        let (w, back) = self.phys_watches();
        let (sw, hw) = (&self.sw, &self.hw);
        loop {
            let budget = if step { 1 } else { POLL_STEPS };
            let r = self.tl.run(budget, &w, |cpu, _| sw.contains(&cpu.rip) || hw.contains(&cpu.rip));
            return Some(match r {
                Err(_) | Ok(Stop::End) => self.end(),
                Ok(Stop::Observer) => self.break_stop(),
                Ok(Stop::Watch { index, addr, .. }) => self.watch_stop(&back, &w, index, addr),
                Ok(Stop::Budget) if step => SingleThreadStopReason::DoneStep,
                Ok(Stop::Budget) => {
                    if incoming() {
                        return None;
                    }
                    continue;
                }
            });
        }
    }

    fn reverse_continue(&mut self) -> SingleThreadStopReason<u64> {
        let (w, back) = self.phys_watches();
        let (sw, hw) = (self.sw.clone(), self.hw.clone());
        match self.tl.search_back(&w, |cpu| sw.contains(&cpu.rip) || hw.contains(&cpu.rip)) {
            Found::Break => self.break_stop(),
            Found::Watch { index, addr, .. } => self.watch_stop(&back, &w, index, addr),
            Found::Begin => SingleThreadStopReason::ReplayLog { tid: None, pos: ReplayLogPosition::Begin },
        }
    }

    fn reverse_step(&mut self) -> SingleThreadStopReason<u64> {
        if self.tl.step_back() {
            SingleThreadStopReason::DoneStep
        } else {
            SingleThreadStopReason::ReplayLog { tid: None, pos: ReplayLogPosition::Begin }
        }
    }

    /// `monitor when`.
    pub fn when(&self) -> String {
        let s = &self.tl.session;
        format!(
            "event {} of {}, vCPU {}, krr_pos {}, instructions {}, step {}, rip {:#x}",
            s.event_index(),
            s.events().len(),
            s.vcpu(),
            s.krr_pos().map_or("?".into(), |p| p.to_string()),
            s.instructions(),
            s.steps(),
            s.cpu().rip
        )
    }

    /// Go to the first boundary where event `n` is the next the log expects.
    fn goto_event(&mut self, n: u64) {
        if self.tl.session.event_index() >= n {
            self.tl.goto(0);
        }
        const CHUNK: u64 = 4096;
        while self.tl.session.event_index() < n && !self.tl.session.ended() {
            let before = self.tl.session.steps();
            let _ = self.tl.run(CHUNK, &[], |_, _| false);
            if self.tl.session.event_index() >= n {
                self.tl.goto(before);
                while self.tl.session.event_index() < n && !self.tl.session.ended() {
                    let _ = self.tl.run(1, &[], |_, _| false);
                }
            }
        }
    }

    /// Handle one `monitor` command; the text to print.
    pub fn monitor(&mut self, cmd: &str) -> String {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let mut out = String::new();
        match words.as_slice() {
            ["when"] => out = self.when(),
            ["goto", n] => match n.parse::<u64>() {
                Ok(n) => {
                    self.goto_event(n);
                    out = self.when();
                }
                Err(_) => out = format!("goto: {n:?} is not an event index"),
            },
            ["step", n] | ["goto-step", n] => match n.parse::<u64>() {
                Ok(n) => {
                    self.tl.goto(n);
                    out = self.when();
                }
                Err(_) => out = format!("goto-step: {n:?} is not a position"),
            },
            ["checkpoint"] => {
                self.saved.push(self.tl.save());
                out = format!("checkpoint {} at step {}", self.saved.len(), self.tl.session.steps());
            }
            ["restart", n] => {
                match n.parse::<usize>().ok().and_then(|i| i.checked_sub(1)).and_then(|i| self.saved.get(i)) {
                    Some(c) => {
                        let c = c.clone();
                        self.tl.restore(&c);
                        out = self.when();
                    }
                    None => out = format!("restart: no checkpoint {n} (there are {})", self.saved.len()),
                }
            }
            ["info"] => {
                for l in &self.info.lines {
                    let _ = writeln!(out, "{l}");
                }
                let s = &self.tl.session;
                let (n, pages, tables) = self.tl.checkpoint_memory();
                let _ = writeln!(out, "console: {} bytes replayed so far", s.console().len());
                let _ = writeln!(
                    out,
                    "checkpoints: {n} periodic ({} KiB of copied pages, {} KiB of page tables), {} saved",
                    pages * 4,
                    tables / 1024,
                    self.saved.len()
                );
                out.push_str(&self.when());
            }
            _ => {
                out = "krr monitor commands: when, goto EVENT, goto-step STEP, checkpoint, restart N, info"
                    .into();
            }
        }
        out
    }
}

impl Target for ReplayTarget<'_> {
    type Arch = X86_64Krr;
    type Error = GdbError;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadBase for ReplayTarget<'_> {
    fn read_registers(&mut self, regs: &mut Regs) -> TargetResult<(), Self> {
        *regs = Regs::from_cpu(self.tl.session.cpu());
        Ok(())
    }

    fn write_registers(&mut self, _regs: &Regs) -> TargetResult<(), Self> {
        // A replay is the recorded execution: it cannot be changed.
        Err(TargetError::NonFatal)
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        match self.read_virt(start, data) {
            0 if !data.is_empty() => Err(TargetError::NonFatal),
            n => Ok(n),
        }
    }

    fn write_addrs(&mut self, _start: u64, _data: &[u8]) -> TargetResult<(), Self> {
        Err(TargetError::NonFatal)
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for ReplayTarget<'_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(Resume::Continue);
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, (), Self>> {
        Some(self)
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, (), Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for ReplayTarget<'_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<(), Self::Error> {
        self.resume = Some(Resume::Step);
        Ok(())
    }
}

impl ReverseStep<()> for ReplayTarget<'_> {
    fn reverse_step(&mut self, _tid: ()) -> Result<(), Self::Error> {
        self.resume = Some(Resume::ReverseStep);
        Ok(())
    }
}

impl ReverseCont<()> for ReplayTarget<'_> {
    fn reverse_cont(&mut self) -> Result<(), Self::Error> {
        self.resume = Some(Resume::ReverseContinue);
        Ok(())
    }
}

impl Breakpoints for ReplayTarget<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for ReplayTarget<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.sw.insert(addr);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.sw.remove(&addr))
    }
}

impl HwBreakpoint for ReplayTarget<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        self.hw.insert(addr);
        Ok(true)
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(&addr))
    }
}

impl HwWatchpoint for ReplayTarget<'_> {
    fn add_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        self.watches.push(WatchSpec { addr, len, kind });
        Ok(true)
    }

    fn remove_hw_watchpoint(&mut self, addr: u64, len: u64, kind: WatchKind) -> TargetResult<bool, Self> {
        match self.watches.iter().position(|w| w.addr == addr && w.len == len && w.kind == kind) {
            Some(i) => {
                self.watches.remove(i);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

impl MonitorCmd for ReplayTarget<'_> {
    fn handle_monitor_cmd(&mut self, cmd: &[u8], mut out: ConsoleOutput<'_>) -> Result<(), Self::Error> {
        let text = self.monitor(&String::from_utf8_lossy(cmd));
        for line in text.lines() {
            outputln!(out, "{line}");
        }
        Ok(())
    }
}

/// gdbstub's blocking event loop over a [`ReplayTarget`].
#[derive(Debug)]
pub enum EventLoop<'a> {
    #[doc(hidden)]
    _Never(std::convert::Infallible, std::marker::PhantomData<&'a ()>),
}

impl<'a> BlockingEventLoop for EventLoop<'a> {
    type Target = ReplayTarget<'a>;
    type Connection = Conn;
    type StopReason = SingleThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut ReplayTarget<'a>,
        conn: &mut Conn,
    ) -> Result<Event<Self::StopReason>, WaitForStopReasonError<GdbError, std::io::Error>> {
        let stop = match target.resume.take() {
            Some(Resume::ReverseStep) => Some(target.reverse_step()),
            Some(Resume::ReverseContinue) => Some(target.reverse_continue()),
            Some(Resume::Step) => target.run_forward(true, || false),
            Some(Resume::Continue) | None => {
                let mut data = false;
                let r = target.run_forward(false, || {
                    data = conn.peek().map(|b| b.is_some()).unwrap_or(true);
                    data
                });
                if r.is_none() {
                    // Keep going after the byte is handled, unless it is a Ctrl-C.
                    target.resume = Some(Resume::Continue);
                }
                r
            }
        };
        match stop {
            Some(s) => Ok(Event::TargetStopped(s)),
            None => {
                let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                Ok(Event::IncomingData(byte))
            }
        }
    }

    fn on_interrupt(target: &mut ReplayTarget<'a>) -> Result<Option<Self::StopReason>, GdbError> {
        target.resume = None;
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}
