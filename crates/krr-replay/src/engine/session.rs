//! An incremental replay for the debugger: the same engine as [`Replayer::run`], driven one
//! stop at a time, with a position (`steps`) that names every point where it can stop, and
//! checkpoints of the whole replay state.
//!
//! A *boundary* is a point between two instructions where the debugger can stop: the engine's
//! own work there (a kernel entry from user mode, an interrupt delivered at its logged position,
//! a hook of the guest agent) is done first, so the machine is seen as the kernel sees it. The
//! position counts the emulator steps taken since the start (an instruction, an exception or an
//! interrupt delivery); a kernel entry the engine makes for a logged user-mode event does not
//! count, so each boundary has its own position. Replay is deterministic: restoring a checkpoint
//! and running to position N always gives the same machine.

use std::cell::Cell;
use std::rc::Rc;

use krr_emu::{Cpu, FlatMemory, GuestMemory, MemorySnapshot, RunExit, SegReg};
use krr_trace::Event;

use super::{Log, OpenRead, Parked, Replayer, SLICE};
use crate::report::Divergence;

/// Why [`Session::run_until`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The caller's predicate asked to stop at this boundary.
    Observer,
    /// The instruction before this boundary accessed a watched range.
    Watch {
        /// Index in the `watches` passed to `run_until`.
        index: usize,
        /// Guest-physical address accessed.
        addr: u64,
        /// A write (else a read).
        write: bool,
    },
    /// `budget` steps ran.
    Budget,
    /// Nothing more to replay: the log is used up, or replay diverged (see [`Session::divergence`]).
    End,
}

/// A guest-physical range to watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watch {
    pub addr: u64,
    pub len: u64,
    pub read: bool,
    pub write: bool,
}

/// The whole replay state at a boundary; memory is shared copy-on-write with the live machine.
#[derive(Clone)]
pub struct Checkpoint {
    cpu: Cpu,
    parked: Vec<Option<Parked>>,
    vcpu: u32,
    mem: MemorySnapshot,
    cursor: usize,
    seq: u64,
    console: Vec<u8>,
    dlab: bool,
    pending: Option<u8>,
    pre: std::collections::BTreeSet<usize>,
    irq: u64,
    open_reads: std::collections::HashMap<u64, OpenRead>,
    injected: Option<Event>,
    engine_done: bool,
    observed: bool,
    steps: u64,
    ended: bool,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("steps", &self.steps)
            .field("rip", &self.cpu.rip)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// The position it was taken at.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Its memory contents.
    pub fn memory(&self) -> &MemorySnapshot {
        &self.mem
    }
}

/// Memory that reports accesses to watched ranges (the emulator's accesses go through it).
struct Watched<'m> {
    mem: &'m mut FlatMemory,
    watches: &'m [Watch],
    hit: &'m Cell<Option<(usize, u64, bool)>>,
}

impl Watched<'_> {
    fn check(&self, gpa: u64, len: usize, write: bool) {
        if self.hit.get().is_some() {
            return;
        }
        for (i, w) in self.watches.iter().enumerate() {
            if (if write { w.write } else { w.read }) && gpa < w.addr + w.len && w.addr < gpa + len as u64 {
                self.hit.set(Some((i, gpa.max(w.addr), write)));
                return;
            }
        }
    }
}

impl GuestMemory for Watched<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.check(gpa, buf.len(), false);
        self.mem.read(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.check(gpa, data.len(), true);
        self.mem.write(gpa, data)
    }

    fn mark_code_page(&mut self, pfn: u64) {
        self.mem.mark_code_page(pfn)
    }

    fn code_epoch(&self) -> u64 {
        self.mem.code_epoch()
    }

    fn code_pages_written_since(&self, epoch: u64, out: &mut Vec<u64>) -> bool {
        self.mem.code_pages_written_since(epoch, out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    None,
    Engine,
    Watch,
    Observer,
    Budget,
}

/// A replay driven by a debugger.
pub struct Session<'a> {
    r: Replayer<'a>,
    log: Log<'a>,
    irq: Rc<Cell<u64>>,
    /// The engine's work at the current boundary is done.
    engine_done: bool,
    /// The current boundary was shown to the caller (do not stop there again when resuming).
    observed: bool,
    steps: u64,
    ended: bool,
    divergence: Option<Box<Divergence>>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("steps", &self.steps)
            .field("rip", &self.r.cpu.rip)
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// Start replaying: consume the start event; the machine stands before its first instruction.
    pub fn new(mut r: Replayer<'a>) -> Result<Self, Box<Divergence>> {
        let irq = Rc::new(Cell::new(0u64));
        let mut log = Log::new(r.events, irq.clone());
        r.start(&mut log)?;
        let mut s = Session {
            r,
            log,
            irq,
            engine_done: false,
            observed: false,
            steps: 0,
            ended: false,
            divergence: None,
        };
        s.ended = s.log_finished();
        Ok(s)
    }

    /// The CPU state of the vCPU that runs now (holds the kernel lock).
    pub fn cpu(&self) -> &Cpu {
        &self.r.cpu
    }

    /// The number of the vCPU that runs now.
    pub fn vcpu(&self) -> u32 {
        self.log.vcpu
    }

    pub fn mem(&self) -> &FlatMemory {
        &self.r.mem
    }

    /// The position: emulator steps since the start.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Guest instructions retired since the start.
    pub fn instructions(&self) -> u64 {
        self.r.instructions()
    }

    /// Index of the next event the log expects.
    pub fn event_index(&self) -> u64 {
        self.log.cursor as u64
    }

    /// The events replayed.
    pub fn events(&self) -> &'a crate::Events {
        self.r.events
    }

    /// The vCPU's position counter (`krr_pos`), `None` if unreadable. Between an entry from user
    /// mode and its SWAPGS the kernel's GS base is in KERNEL_GS_BASE: it is read from there.
    pub fn krr_pos(&self) -> Option<u64> {
        let gs = self.r.cpu.segment(SegReg::Gs).base;
        let base = if super::is_kernel(gs) { gs } else { self.r.cpu.msrs.kernel_gs_base };
        self.r.read_virt_u64(base.wrapping_add(self.r.hooks.krr_pos))
    }

    /// What the kernel wrote to the console so far.
    pub fn console(&self) -> &[u8] {
        &self.log.console
    }

    /// Whether there is nothing more to replay.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Why replay ended early, if it diverged from the log.
    pub fn divergence(&self) -> Option<&Divergence> {
        self.divergence.as_deref()
    }

    fn log_finished(&mut self) -> bool {
        match self.log.peek() {
            None => true,
            Some(Event::End { .. }) => {
                self.log.cursor += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// One step: to the next boundary.
    pub fn step(&mut self) -> Result<Stop, Box<Divergence>> {
        self.run_until(1, &[], |_, _| false)
    }

    /// Run until `stop(cpu, steps)` is true at a boundary (not the current one), an access to one
    /// of `watches`, `budget` more steps, or the end. A divergence ends the replay: it is
    /// returned once, later calls return [`Stop::End`].
    pub fn run_until(
        &mut self,
        budget: u64,
        watches: &[Watch],
        mut stop: impl FnMut(&Cpu, u64) -> bool,
    ) -> Result<Stop, Box<Divergence>> {
        if self.ended {
            return Ok(Stop::End);
        }
        match self.advance(budget, watches, &mut stop) {
            Err(d) => {
                self.ended = true;
                self.divergence = Some(d.clone());
                Err(d)
            }
            ok => ok,
        }
    }

    fn advance(
        &mut self,
        budget: u64,
        watches: &[Watch],
        stop: &mut impl FnMut(&Cpu, u64) -> bool,
    ) -> Result<Stop, Box<Divergence>> {
        let limit = self.steps.saturating_add(budget);
        let hit = Cell::new(None);
        loop {
            let mut why = Why::None;
            let r = {
                let Replayer { cpu, mem, hooks, .. } = &mut self.r;
                let irq = &*self.irq;
                let (skip_engine, skip_observe) = (self.engine_done, self.observed);
                let steps = &mut self.steps;
                let mut first = true;
                let mut watched;
                let m: &mut dyn GuestMemory = if watches.is_empty() {
                    mem
                } else {
                    watched = Watched { mem, watches, hit: &hit };
                    &mut watched
                };
                let why = &mut why;
                cpu.run(m, &mut self.log, SLICE, |c| {
                    let f = std::mem::take(&mut first);
                    if !(f && skip_engine)
                        && (c.cpl() == 3 || c.rip == irq.get() || hooks.at(c.rip).is_some())
                    {
                        *why = Why::Engine;
                        return true;
                    }
                    if !(f && skip_observe) {
                        *why = if hit.get().is_some() {
                            Why::Watch
                        } else if stop(c, *steps) {
                            Why::Observer
                        } else if *steps >= limit {
                            Why::Budget
                        } else {
                            Why::None
                        };
                        if *why != Why::None {
                            return true;
                        }
                    }
                    *steps += 1;
                    false
                })
            };
            self.engine_done = false;
            self.observed = false;
            match self.r.after_run(r, &mut self.log)? {
                // The agent's panic hook stopped the recording: the log has ended here.
                RunExit::Limit if self.log.panicked && self.log_finished() => {
                    self.ended = true;
                    return Ok(Stop::End);
                }
                RunExit::Limit => continue,
                RunExit::Halted => {
                    self.r.take_switched();
                    // The step that found the CPU halted did nothing.
                    self.steps -= 1;
                    self.observed = true;
                    if self.log_finished() {
                        self.ended = true;
                        return Ok(Stop::End);
                    }
                    continue;
                }
                RunExit::Stopped => {}
            }
            if why == Why::Engine {
                self.r.boundary(&mut self.log)?;
                // Another vCPU may run now: its first instruction is not stepped over.
                self.engine_done = !self.r.take_switched();
                if self.log_finished() {
                    self.ended = true;
                    return Ok(Stop::End);
                }
                why = if hit.get().is_some() {
                    Why::Watch
                } else if stop(&self.r.cpu, self.steps) {
                    Why::Observer
                } else if self.steps >= limit {
                    Why::Budget
                } else {
                    self.observed = true;
                    continue;
                };
            }
            self.observed = true;
            return Ok(match why {
                Why::Watch => {
                    let (index, addr, write) = hit.get().unwrap_or_default();
                    Stop::Watch { index, addr, write }
                }
                Why::Observer => Stop::Observer,
                _ => Stop::Budget,
            });
        }
    }

    /// The whole state, to come back to with [`Session::restore`].
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            cpu: self.r.cpu.clone(),
            parked: self.r.parked.clone(),
            vcpu: self.log.vcpu,
            mem: self.r.mem.snapshot(),
            cursor: self.log.cursor,
            seq: self.log.seq,
            console: self.log.console.clone(),
            dlab: self.log.dlab,
            pending: self.log.pending,
            pre: self.log.pre.clone(),
            irq: self.irq.get(),
            open_reads: self.r.open_reads.clone(),
            injected: self.r.injected.clone(),
            engine_done: self.engine_done,
            observed: self.observed,
            steps: self.steps,
            ended: self.ended,
        }
    }

    /// Go back (or forward) to a checkpoint of this session.
    pub fn restore(&mut self, c: &Checkpoint) {
        // The TLB comes back too: it is guest-visible (accessed bits, a forgotten INVLPG).
        self.r.cpu = c.cpu.clone();
        self.r.parked.clone_from(&c.parked);
        self.log.vcpu = c.vcpu;
        self.r.mem.restore(&c.mem);
        self.log.cursor = c.cursor;
        self.log.seq = c.seq;
        self.log.console.clone_from(&c.console);
        self.log.dlab = c.dlab;
        self.log.pending = c.pending;
        self.log.pre.clone_from(&c.pre);
        self.log.divergence = None;
        self.irq.set(c.irq);
        self.r.open_reads.clone_from(&c.open_reads);
        self.r.injected.clone_from(&c.injected);
        self.engine_done = c.engine_done;
        self.observed = c.observed;
        self.steps = c.steps;
        self.ended = c.ended;
        if !c.ended {
            self.divergence = None;
        }
    }
}
