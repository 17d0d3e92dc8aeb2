//! The replay engine (one vCPU): re-executes the recorded kernel on krr-emu from the start
//! snapshot, feeding it the logged inputs, skipping user space, and checking every event.
//!
//! How each event is consumed (docs/replay.md):
//! - port/MMIO reads, RDTSC, RDMSR, CPUID, RDRAND: by the instruction that asks for them,
//!   through [`Platform`], in log order, checked for kind, port/MSR/leaf and size;
//! - a syscall, user exception or interrupt from user mode: when the kernel returns to user mode,
//!   the logged user registers are loaded and the entry is made as the hardware made it (the
//!   user instruction at the logged RIP is re-executed for SYSCALL and faults; an interrupt is
//!   delivered through the IDT);
//! - an interrupt in kernel mode: when the position counter `krr_pos`, RIP and the GPRs equal
//!   the logged ones, the vector is delivered through the IDT;
//! - user-memory reads: when the agent reserves their slot (`krr_ur_begin`), the logged bytes are
//!   written where the kernel is about to read them;
//! - user PTE reads: at `krr_pte_read`, the logged value replaces the value the kernel read (and
//!   the PTE in memory, unless the read cleared it).
//!
//! The guest agent runs in replay too, so every hook it calls is checked against the log.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use krr_emu::{Cpu, CpuidResult, EmuError, FlatMemory, GuestMemory, Platform, PlatformStop, RunExit, SegReg};
use krr_trace::{Event, Regs};

use crate::events::{EventRef, Events};
use crate::hooks::{Hook, Hooks};
use crate::load::virt_to_phys;
use crate::report::Divergence;

mod session;
pub use session::{Checkpoint, Session, Stop, Watch};

const COM1_THR: u16 = 0x3f8;
/// The line control register: its bit 7 (DLAB) turns THR into the divisor latch.
const COM1_LCR: u16 = 0x3fb;
const LCR_DLAB: u32 = 0x80;
use krr_vmm::recorder::{CTRL_PANIC, PORT_CTRL};
const PAGE_USER: u64 = 1 << 2;
/// The PTE bits the hardware sets by itself (accessed, dirty).
const PAGE_ACCESSED_DIRTY: u64 = 0x60;
/// Offset of `cs` in the kernel's `struct pt_regs`.
const PT_REGS_CS: u64 = 17 * 8;
/// The kernel's direct map of physical memory (x86-64, 4-level paging, no KASLR).
const PAGE_OFFSET: u64 = 0xffff_8880_0000_0000;
const PF_VECTOR: u8 = 14;

/// Exceptions whose frame carries an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, ...).
fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}
/// RFLAGS.RF: set in the frame of an interrupt taken between REP iterations.
const RF: u64 = 1 << 16;
/// CF, PF, AF, ZF, SF, OF.
const STATUS_FLAGS: u64 = 0x8d5;

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Events consumed (console markers included).
    pub events: u64,
    /// Guest kernel instructions executed.
    pub instructions: u64,
    /// What the kernel wrote to the console during replay.
    pub console: Vec<u8>,
    /// CRC-32 of the final registers and all of guest RAM: equal for equal executions.
    pub digest: u32,
}

/// Where the log is, and the inputs the instructions ask for.
struct Log<'a> {
    events: &'a Events,
    /// Index of the next event to consume.
    cursor: usize,
    /// The event at `cursor` when last looked at (an index and the event).
    head: Option<(usize, EventRef)>,
    /// Sequence number of the next ring event (every event but console markers and the end).
    seq: u64,
    console: Vec<u8>,
    /// Set when an input did not match the log; the run stops and reports it.
    divergence: Option<String>,
    /// RIP of the kernel-mode interrupt the log expects next (0: none): the run loop stops there.
    irq_rip: Rc<Cell<u64>>,
    /// An interrupt vector to deliver at the next instruction boundary.
    pending: Option<u8>,
    /// Events already consumed out of order (a user read or PTE read whose hook was reached
    /// before an interrupt the log puts first): skipped when the cursor gets there.
    pre: std::collections::BTreeSet<usize>,
    /// The agent's panic hook told the VMM the recording ends here.
    panicked: bool,
    /// The vCPU that runs (holds the kernel lock): only its events can be consumed.
    vcpu: u32,
    /// The trace has more than one vCPU (messages name them).
    multi: bool,
    /// An input was asked for after the log's last event where [`Log::ends_here`]: the run
    /// stops, and that is the end of the replay, not a divergence.
    over: bool,
    /// COM1's divisor latch is selected: a write to THR sets the baud rate, it is not output.
    dlab: bool,
}

impl<'a> Log<'a> {
    fn new(events: &'a Events, irq_rip: Rc<Cell<u64>>) -> Self {
        Log {
            events,
            cursor: 0,
            head: None,
            seq: 0,
            console: Vec::new(),
            divergence: None,
            irq_rip,
            pending: None,
            pre: std::collections::BTreeSet::new(),
            panicked: false,
            vcpu: 0,
            multi: false,
            over: false,
            dlab: false,
        }
    }

    /// Whether only the end is left and the recording may have stopped the running vCPU
    /// anywhere: stopped from outside (time limit, Ctrl-C), or one of several vCPUs (when one
    /// ends the recording, KVM's other vCPUs are stopped wherever they were, in the middle of
    /// an interrupt handler, say). Such a vCPU asking for more is the end of the replay.
    ///
    /// A log with no end event at all (the recorder was killed, or the events after a damaged
    /// block were dropped) stopped every vCPU wherever it was: past its last event, likewise.
    fn ends_here(&mut self) -> bool {
        use krr_trace::EndReason::{Interrupted, Stopped};
        let multi = self.multi;
        let unsealed = !matches!(self.events.last(), Some(Event::End { .. }));
        match self.peek() {
            None => unsealed,
            Some(Event::End { reason, .. }) => multi || matches!(reason, Stopped | Interrupted),
            Some(_) => false,
        }
    }

    /// Index of the next event [`Log::peek`] returns.
    fn peek_index(&mut self) -> usize {
        self.peek();
        self.cursor
    }

    /// Skip console markers; the next event that is an input.
    fn peek(&mut self) -> Option<&Event> {
        loop {
            if self.head.as_ref().is_none_or(|(i, _)| *i != self.cursor) {
                self.head = self.events.get(self.cursor).map(|e| (self.cursor, e));
            }
            match self.head.as_ref().map(|(_, e)| &**e) {
                Some(Event::Console { .. }) => self.cursor += 1,
                Some(_) if self.pre.remove(&self.cursor) => {
                    self.cursor += 1;
                    self.seq += 1;
                }
                _ => break,
            }
        }
        self.head.as_ref().map(|(_, e)| &**e)
    }

    /// The event a hook must consume: the next one if `want` matches it; or, when the log puts
    /// a kernel-mode interrupt first (it landed between the hook's entry and the point where the
    /// agent disabled interrupts), the first match after that interrupt's own events, taken out
    /// of order. Returns its index and sequence number, or `None`.
    fn take_for_hook(&mut self, want: impl Fn(&Event) -> bool) -> Option<(usize, u64, Event)> {
        let me = self.vcpu;
        let want = |e: &Event| e.vcpu() == me && want(e);
        let first = self.peek()?.clone();
        if want(&first) {
            let (i, seq) = (self.cursor, self.seq);
            self.take();
            return Some((i, seq, first));
        }
        kernel_irq_rip(&first, me)?;
        let mut seq = self.seq;
        for (j, e) in (self.cursor..).zip(self.events.iter_from(self.cursor)) {
            let e = &*e;
            if self.pre.contains(&j) || matches!(e, Event::Console { .. }) {
                if !matches!(e, Event::Console { .. }) {
                    seq += 1;
                }
                continue;
            }
            if want(e) {
                self.pre.insert(j);
                return Some((j, seq, e.clone()));
            }
            // Only what an interrupt handler on this vCPU logs may stand in between.
            let inside = kernel_irq_rip(e, me).is_some()
                || e.vcpu() == me
                    && matches!(
                        e,
                        Event::Rdtsc { .. }
                            | Event::PortRead { .. }
                            | Event::MmioRead { .. }
                            | Event::Rdmsr { .. }
                            | Event::Cpuid { .. }
                            | Event::Random { .. }
                    );
            if !inside {
                return None;
            }
            seq += 1;
        }
        None
    }

    /// Whether the next event is an interrupt in kernel mode (it may land inside a hook).
    fn irq_next(&mut self) -> bool {
        let me = self.vcpu;
        self.peek().is_some_and(|e| kernel_irq_rip(e, me).is_some())
    }

    fn take(&mut self) -> Option<Event> {
        let e = self.peek()?.clone();
        tracing::trace!(index = self.cursor, vcpu = self.vcpu, event = ?e, "replayed event");
        self.cursor += 1;
        if !matches!(e, Event::End { .. }) {
            self.seq += 1;
        }
        self.update_irq();
        Some(e)
    }

    /// Arm the run loop for the next event if it is an interrupt in kernel mode.
    fn update_irq(&mut self) {
        let me = self.vcpu;
        let rip = self.peek().and_then(|e| kernel_irq_rip(e, me)).unwrap_or(0);
        self.irq_rip.set(rip);
    }

    fn diverge(&mut self, msg: String) -> PlatformStop {
        self.divergence.get_or_insert(msg.clone());
        PlatformStop::new(msg)
    }

    fn expected(&mut self) -> String {
        let multi = self.multi;
        self.peek().map_or_else(
            || "the end of the trace".into(),
            |e| if multi { format!("{} on vCPU {}", describe(e), e.vcpu()) } else { describe(e) },
        )
    }

    /// The next event must be an input of `kind`; `check` says whether it is the one asked for.
    fn input(&mut self, asked: &str, check: impl Fn(&Event) -> bool) -> Result<Event, PlatformStop> {
        let me = self.vcpu;
        let ends_here = self.ends_here();
        match self.peek() {
            Some(e) if e.vcpu() == me && check(e) => {
                Ok(self.take().unwrap_or(Event::End { vcpu: 0, reason: krr_trace::EndReason::Stopped }))
            }
            _ if ends_here => {
                self.over = true;
                Err(PlatformStop::new(format!("the recording ended before this {asked}")))
            }
            _ => {
                let exp = self.expected();
                Err(self.diverge(format!("the kernel executed {asked}, the log expects {exp}")))
            }
        }
    }
}

fn is_kernel(addr: u64) -> bool {
    addr >= 0xffff_8000_0000_0000
}

/// The RIP of `e` if it is an interrupt of vCPU `me` taken in kernel mode.
fn kernel_irq_rip(e: &Event, me: u32) -> Option<u64> {
    match e {
        Event::Interrupt { regs, vcpu, .. } if is_kernel(regs.rip) && *vcpu == me => Some(regs.rip),
        _ => None,
    }
}

/// One line for an event.
pub fn describe(e: &Event) -> String {
    match e {
        Event::PortRead { port, size, value, .. } => format!("port read {port:#x}/{size} = {value:#x}"),
        Event::MmioRead { addr, size, value, .. } => format!("MMIO read {addr:#x}/{size} = {value:#x}"),
        Event::Rdtsc { tsc, .. } => format!("RDTSC = {tsc}"),
        Event::Rdmsr { msr, value, fault, .. } => {
            format!("RDMSR {msr:#x} = {value:#x}{}", if *fault { " (#GP)" } else { "" })
        }
        Event::Cpuid { leaf, subleaf, .. } => format!("CPUID {leaf:#x}.{subleaf}"),
        Event::Random { source, .. } => format!("{source:?}"),
        Event::Syscall { regs, .. } => format!("syscall {} from {:#x}", regs.gpr[0], regs.rip),
        Event::Exception { vector, error_code, cr2, regs, .. } => {
            format!("exception {vector} (error {error_code:#x}, CR2 {cr2:#x}) at {:#x}", regs.rip)
        }
        Event::Interrupt { vector, pos, regs, .. } => {
            format!("interrupt {vector:#x} at pos {pos} RIP {:#x}", regs.rip)
        }
        Event::UserRead { read, addr, data, .. } => {
            format!("{} of {} bytes at {addr:#x}", read.name(), data.len())
        }
        Event::PteRead { addr, value, .. } => format!("PTE read {addr:#x} = {value:#x}"),
        Event::LockHandoff { vcpu, pos } => format!("vCPU {vcpu} taking the kernel lock at pos {pos}"),
        other => other.kind().to_string(),
    }
}

impl Platform for Log<'_> {
    fn io_in(&mut self, port: u16, size: u8) -> Result<u32, PlatformStop> {
        let e = self.input(
            &format!("IN {port:#x}/{size}"),
            |e| matches!(e, Event::PortRead { port: p, size: s, .. } if *p == port && *s == size),
        )?;
        Ok(if let Event::PortRead { value, .. } = e { value } else { 0 })
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) -> Result<(), PlatformStop> {
        if port == COM1_LCR && size == 1 {
            self.dlab = value & LCR_DLAB != 0;
        }
        if port == COM1_THR && size == 1 && !self.dlab {
            self.console.push(value as u8);
        }
        if port == PORT_CTRL && value == CTRL_PANIC {
            // The recorder stopped the machine at this write: so does replay.
            self.panicked = true;
            return Err(PlatformStop::new("the agent's panic hook ended the recording"));
        }
        Ok(())
    }

    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) -> Result<(), PlatformStop> {
        let size = data.len() as u8;
        let e = self.input(
            &format!("an MMIO read of {gpa:#x}/{size}"),
            |e| matches!(e, Event::MmioRead { size: s, .. } if *s == size),
        )?;
        if let Event::MmioRead { value, .. } = e {
            let b = value.to_le_bytes();
            data.copy_from_slice(&b[..data.len()]);
        }
        Ok(())
    }

    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) -> Result<(), PlatformStop> {
        Ok(())
    }

    fn rdtsc(&mut self) -> Result<u64, PlatformStop> {
        // RDMSR of the TSC comes here too.
        let e = self.input("RDTSC", |e| matches!(e, Event::Rdtsc { .. } | Event::Rdmsr { msr: 0x10, .. }))?;
        Ok(match e {
            Event::Rdtsc { tsc, .. } => tsc,
            Event::Rdmsr { value, .. } => value,
            _ => 0,
        })
    }

    fn rdmsr(&mut self, msr: u32) -> Result<Option<u64>, PlatformStop> {
        let e = self
            .input(&format!("RDMSR {msr:#x}"), |e| matches!(e, Event::Rdmsr { msr: m, .. } if *m == msr))?;
        Ok(match e {
            Event::Rdmsr { fault: true, .. } => None,
            Event::Rdmsr { value, .. } => Some(value),
            _ => None,
        })
    }

    fn wrmsr(&mut self, _msr: u32, _value: u64) -> Result<bool, PlatformStop> {
        Ok(true)
    }

    fn rdrand(&mut self) -> Result<Option<u64>, PlatformStop> {
        let e = self.input("RDRAND", |e| matches!(e, Event::Random { .. }))?;
        Ok(match e {
            Event::Random { ok: true, value, .. } => Some(value),
            _ => None,
        })
    }

    fn rdseed(&mut self) -> Result<Option<u64>, PlatformStop> {
        self.rdrand()
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> Result<CpuidResult, PlatformStop> {
        let e = self.input(
            &format!("CPUID {leaf:#x}.{subleaf}"),
            |e| matches!(e, Event::Cpuid { leaf: l, .. } if *l == leaf),
        )?;
        Ok(match e {
            Event::Cpuid { eax, ebx, ecx, edx, .. } => CpuidResult { eax, ebx, ecx, edx },
            _ => CpuidResult::default(),
        })
    }

    fn hlt(&mut self) -> Result<(), PlatformStop> {
        Ok(())
    }

    fn interrupt_pending(&mut self) -> bool {
        self.pending.is_some()
    }

    fn acknowledge_interrupt(&mut self) -> Result<Option<u8>, PlatformStop> {
        Ok(self.pending.take())
    }
}

/// A user-memory read whose slot the agent reserved, waiting for `krr_ur_end`.
#[derive(Debug, Clone)]
struct OpenRead {
    kind: u32,
    addr: u64,
    len: u32,
}

/// Where a vCPU that does not hold the kernel lock stopped, which says how it resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Park {
    /// In user mode: resumes with its next kernel entry from the log.
    User,
    /// At HLT: resumes with the interrupt that woke it.
    Halted,
    /// In the kernel lock's acquire spin: resumes by taking the lock.
    Spinning,
}

/// A vCPU that waits while another holds the kernel lock.
#[derive(Debug, Clone)]
struct Parked {
    cpu: Cpu,
    park: Park,
}

/// Replays `events` on `cpus`/`mem` (the start snapshot) with the agent's `hooks`.
///
/// Several vCPUs replay one at a time (DESIGN §5): `cpu` is the one that holds the kernel
/// lock; the others are parked where they stopped holding it and resume when the log's next
/// event is theirs.
pub struct Replayer<'a> {
    cpu: Cpu,
    mem: FlatMemory,
    /// Every other vCPU, by number (`None` at the running one, whose number is `Log::vcpu`).
    parked: Vec<Option<Parked>>,
    /// The running vCPU changed at the last boundary (its first instruction is not stepped over).
    switched: bool,
    /// Acquire spins the running vCPU went through without parking while another vCPU's event
    /// is next, and the cursor they were counted at: a vCPU that keeps waiting for the lock
    /// while the log says another one runs has diverged (else replay would spin forever).
    idle_spins: (usize, u64),
    hooks: Hooks,
    events: &'a Events,
    open_reads: HashMap<u64, OpenRead>,
    /// The user-mode entry just made, checked when the agent logs it.
    injected: Option<Event>,
    /// Each vCPU's instruction count at the start snapshot.
    start_icount: Vec<u64>,
    /// Stop after this many events (`--until`).
    until: Option<u64>,
    /// Compare the status flags at interrupt points. True for traces recorded on krr-emu (the
    /// same emulator must compute the same flags). Off for traces recorded on KVM: where KVM
    /// emulates guest ring 0 (this project's hosts) its instruction emulator sets some status
    /// flags differently from silicon and krr-emu (it runs TZCNT as BSF); a status flag that
    /// is live at the interrupt and differs changes control flow, which the position and GPR
    /// checks of the following events catch.
    check_status_flags: bool,
}

impl std::fmt::Debug for Replayer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer").field("rip", &self.cpu.rip).finish_non_exhaustive()
    }
}

/// Instructions per `run` slice between looks at progress.
const SLICE: u64 = 1 << 20;

impl<'a> Replayer<'a> {
    /// `cpus[i]` is vCPU i of the start snapshot.
    pub fn new(mut cpus: Vec<Cpu>, mem: FlatMemory, hooks: Hooks, events: &'a Events) -> Self {
        assert!(!cpus.is_empty(), "a machine has at least one vCPU");
        let start_icount = cpus.iter().map(|c| c.icount).collect();
        let cpu = cpus.remove(0);
        let mut parked = vec![None];
        // Classified by `start` once the start event names the running vCPU.
        parked.extend(cpus.into_iter().map(|cpu| Some(Parked { cpu, park: Park::User })));
        Replayer {
            cpu,
            mem,
            parked,
            switched: false,
            idle_spins: (usize::MAX, 0),
            hooks,
            events,
            open_reads: HashMap::new(),
            injected: None,
            start_icount,
            until: None,
            check_status_flags: true,
        }
    }

    /// Whether to compare RFLAGS' status flags at interrupt points (see the field).
    pub fn check_status_flags(&mut self, on: bool) {
        self.check_status_flags = on;
    }

    /// Stop once `n` events have been consumed.
    pub fn until(&mut self, n: u64) {
        self.until = Some(n);
    }

    /// The machine (for digests and the debugger).
    pub fn machine(&self) -> (&Cpu, &FlatMemory) {
        (&self.cpu, &self.mem)
    }

    /// Run to the end of the log. `progress` is called now and then with (events, instructions).
    pub fn run(&mut self, mut progress: impl FnMut(u64, u64)) -> Result<Outcome, Box<Divergence>> {
        let irq_rip = Rc::new(Cell::new(0u64));
        let mut log = Log::new(self.events, irq_rip.clone());
        self.start(&mut log)?;
        // Step over the instruction the run loop stopped at (a hook, an interrupt point).
        let mut skip = false;
        let hooks = self.hooks.clone();
        let mut slices = 0u64;
        loop {
            if self.until.is_some_and(|n| log.cursor as u64 >= n) || log.peek().is_none() {
                break;
            }
            if matches!(log.peek(), Some(Event::End { .. })) {
                log.cursor += 1;
                break;
            }
            let mut first = true;
            let r = self.cpu.run(&mut self.mem, &mut log, SLICE, |c| {
                if std::mem::take(&mut first) && std::mem::take(&mut skip) {
                    return false;
                }
                c.cpl() == 3 || c.rip == irq_rip.get() || hooks.at(c.rip).is_some()
            });
            slices += 1;
            if slices % 16 == 0 {
                progress(log.cursor as u64, self.instructions());
            }
            match self.after_run(r, &mut log)? {
                RunExit::Limit | RunExit::Halted => {
                    self.take_switched();
                    continue;
                }
                RunExit::Stopped => {}
            }
            self.boundary(&mut log)?;
            // Step over the instruction it stopped at, unless another vCPU runs now.
            skip = !self.take_switched();
        }
        progress(log.cursor as u64, self.instructions());
        Ok(Outcome {
            events: log.cursor as u64,
            instructions: self.instructions(),
            console: std::mem::take(&mut log.console),
            digest: self.digest(),
        })
    }

    /// Consume the start event: the position counter must agree with the snapshot.
    fn start(&mut self, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        log.multi = self.parked.len() > 1;
        match log.take() {
            Some(Event::Start { pos, vcpu }) => {
                self.start_on(log, vcpu)?;
                let now = self.krr_pos();
                if now != pos {
                    return Err(self.divergence(
                        log,
                        format!("the snapshot's krr_pos is {now}, the start event says {pos}"),
                    ));
                }
            }
            other => {
                let got = other.as_ref().map_or("nothing".into(), describe);
                return Err(self.divergence(log, format!("the trace starts with {got}, not a start event")));
            }
        }
        log.update_irq();
        Ok(())
    }

    /// Make the start event's vCPU the running one and say where each other vCPU waits: at HLT,
    /// in the acquire spin, or in user mode. Anything else ran kernel code outside the lock.
    fn start_on(&mut self, log: &mut Log<'_>, vcpu: u32) -> Result<(), Box<Divergence>> {
        if vcpu as usize >= self.parked.len() {
            return Err(self.divergence(
                log,
                format!("the trace starts on vCPU {vcpu}; the snapshot has {} vCPUs", self.parked.len()),
            ));
        }
        if vcpu != 0 {
            let p = self.parked[vcpu as usize].take().map(|p| p.cpu).unwrap_or_default();
            let first = std::mem::replace(&mut self.cpu, p);
            self.parked[0] = Some(Parked { cpu: first, park: Park::User });
            log.vcpu = vcpu;
        }
        for i in 0..self.parked.len() {
            let Some(mut p) = self.parked[i].take() else { continue };
            let settled = self.settle(&mut p.cpu);
            let rip = p.cpu.rip;
            p.park = settled.unwrap_or(p.park);
            self.parked[i] = Some(p);
            if settled.is_none() {
                return Err(self.divergence(
                    log,
                    format!("vCPU {i} was running kernel code at {rip:#x} without the kernel lock at the start snapshot"),
                ));
            }
        }
        Ok(())
    }

    /// Where a vCPU that does not hold the lock at the start snapshot waits. One caught in the
    /// few instructions between dropping the lock and waiting (the rest of a yield after its
    /// PAUSE, `sti; hlt` after the idle drop) first runs them: they read no input and touch
    /// only its own stack and per-CPU data (its position counter), and it ran them right after
    /// the snapshot in the recording too. `None` if it does not reach a wait within 256
    /// instructions without an input (it was running kernel code).
    fn settle(&mut self, cpu: &mut Cpu) -> Option<Park> {
        let spin = self.hooks.lock_spin.clone();
        let at_wait = |c: &Cpu| c.halted || c.cpl() == 3 || spin.contains(&c.rip);
        if !at_wait(cpu) && !spin.is_empty() {
            let r = cpu.run(&mut self.mem, &mut NoInputs, 256, at_wait);
            if r.is_err() || !at_wait(cpu) {
                return None;
            }
        }
        Some(if cpu.halted {
            Park::Halted
        } else if cpu.cpl() == 3 {
            Park::User
        } else if spin.contains(&cpu.rip) {
            Park::Spinning
        } else {
            return None;
        })
    }

    /// Stop running the current vCPU (it waits as `park`) and run vCPU `v`, resumed the way it
    /// waits. `v`'s next event is the one at the cursor.
    fn switch_to(&mut self, log: &mut Log<'_>, park: Park, v: u32) -> Result<(), Box<Divergence>> {
        tracing::debug!(event = log.cursor, from = log.vcpu, to = v, "kernel lock hand-off: switch vCPU");
        let Some(next) = self.parked.get_mut(v as usize).and_then(Option::take) else {
            let exp = log.expected();
            let why = if v as usize >= self.parked.len() {
                "the snapshot has no such vCPU"
            } else {
                "it is running"
            };
            return Err(self.divergence(
                log,
                format!("vCPU {} released the kernel lock; the log expects {exp}, but {why}", log.vcpu),
            ));
        };
        if let Some(e) = self.injected.take() {
            self.injected = Some(e);
            return Err(self.divergence(
                log,
                format!("vCPU {} released the kernel lock before the agent logged its entry", log.vcpu),
            ));
        }
        let old = std::mem::replace(&mut self.cpu, next.cpu);
        self.parked[log.vcpu as usize] = Some(Parked { cpu: old, park });
        log.vcpu = v;
        log.update_irq();
        self.switched = true;
        self.resume(log, next.park)
    }

    /// The running vCPU dropped the kernel lock and waits as `park` (in user mode or at HLT):
    /// the log's next event says whether it goes on or another vCPU runs.
    fn released(&mut self, log: &mut Log<'_>, park: Park) -> Result<(), Box<Divergence>> {
        match log.peek().map(|e| (e.vcpu(), matches!(e, Event::End { .. }))) {
            None | Some((_, true)) => Ok(()),
            Some((v, _)) if v != log.vcpu => self.switch_to(log, park, v),
            Some(_) => self.resume(log, park),
        }
    }

    /// The running vCPU, which waited as `park`, goes on with the event at the cursor.
    fn resume(&mut self, log: &mut Log<'_>, park: Park) -> Result<(), Box<Divergence>> {
        let v = log.vcpu;
        match park {
            Park::User => self.enter_from_user(log),
            Park::Halted => self.wake(log),
            Park::Spinning if self.cpu.rip != self.hooks.lock_spin.start => {
                // Inside the spin since the start snapshot: the record it logs when it gets
                // the lock (a hand-off, or the interrupt whose entry was waiting) is next.
                match log.peek() {
                    Some(Event::LockHandoff { .. } | Event::Interrupt { .. }) => {
                        log.take();
                        Ok(())
                    }
                    _ => {
                        let exp = log.expected();
                        Err(self.divergence(
                            log,
                            format!("vCPU {v} waited for the kernel lock; the log expects {exp}"),
                        ))
                    }
                }
            }
            // At the spin's first instruction: the LockSpin hook takes the hand-off.
            Park::Spinning => Ok(()),
        }
    }

    /// Guest kernel instructions replayed so far, all vCPUs together.
    pub(crate) fn instructions(&self) -> u64 {
        (0..self.parked.len()).map(|i| self.vcpu_state(i).icount.wrapping_sub(self.start_icount[i])).sum()
    }

    /// vCPU `i`'s state, parked or running.
    fn vcpu_state(&self, i: usize) -> &Cpu {
        self.parked[i].as_ref().map_or(&self.cpu, |p| &p.cpu)
    }

    /// The running vCPU takes the lock without a hand-off: fine, unless it keeps doing so while
    /// the log says another vCPU's turn is next (it is spinning on something replay will never
    /// give it).
    fn count_idle_spin(
        &mut self,
        log: &mut Log<'_>,
        pos: u64,
        next: Option<usize>,
    ) -> Result<(), Box<Divergence>> {
        const MAX_IDLE_SPINS: u64 = 100_000;
        let at = log.peek_index();
        let me = log.vcpu;
        if log.peek().is_none_or(|e| e.vcpu() == me) {
            return Ok(());
        }
        if self.idle_spins.0 != at {
            self.idle_spins = (at, 0);
        }
        self.idle_spins.1 += 1;
        if self.idle_spins.1 < MAX_IDLE_SPINS {
            return Ok(());
        }
        let mine = next.map_or_else(
            || "none".to_string(),
            |j| {
                self.events
                    .get(j)
                    .map_or_else(|| format!("event {j}"), |e| format!("{} (event {j})", describe(&e)))
            },
        );
        let exp = log.expected();
        Err(self.divergence(
            log,
            format!(
                "vCPU {} took the kernel lock {MAX_IDLE_SPINS} times (now at pos {pos}) without reaching its next event, {mine}; the log expects {exp}",
                log.vcpu
            ),
        ))
    }

    /// Whether the running vCPU changed since the last call.
    fn take_switched(&mut self) -> bool {
        std::mem::take(&mut self.switched)
    }

    /// The index of vCPU `v`'s next event at or after the cursor, if any.
    fn next_of(&self, log: &Log<'_>, v: u32) -> Option<usize> {
        if v as usize >= self.parked.len() {
            return None;
        }
        self.events.next_of(v, log.cursor, log.pre.len(), |i| log.pre.contains(&i))
    }

    /// The halted vCPU resumes: the next event must be the interrupt that woke it here.
    fn wake(&mut self, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        if let Some(&Event::Interrupt { regs, vcpu, .. }) = log.peek() {
            if vcpu == log.vcpu && regs.rip + 1 == self.cpu.rip && self.read_virt(regs.rip) == Some([0xf4]) {
                // The recorded CPU took it on the HLT itself, in the shadow of the STI before
                // it (KVM can): the HLT had not run. Replay ran it when another vCPU's events
                // came first; HLT changes nothing else, so stand on it again and deliver.
                self.cpu.rip = regs.rip;
            }
        }
        match log.peek().cloned() {
            Some(Event::Interrupt { vector, regs, vcpu, .. })
                if regs.rip == self.cpu.rip && vcpu == log.vcpu =>
            {
                self.check_regs(log, &regs, "the interrupt that ended HLT")?;
                self.injected = log.take();
                log.pending = Some(vector);
                Ok(())
            }
            _ => {
                let exp = log.expected();
                Err(self.divergence(log, format!("the kernel halted; the log expects {exp}")))
            }
        }
    }

    /// After `Cpu::run` returned: report a divergence or an emulator error; on HLT, deliver the
    /// interrupt the log says woke the CPU. `Stopped` means the loop stopped at a boundary
    /// [`Replayer::boundary`] must handle.
    fn after_run(
        &mut self,
        r: Result<RunExit, EmuError>,
        log: &mut Log<'_>,
    ) -> Result<RunExit, Box<Divergence>> {
        if let Some(msg) = log.divergence.take() {
            return Err(self.divergence(log, msg));
        }
        match r {
            Ok(RunExit::Halted) => {
                // Idle: the next event is the interrupt that woke this vCPU here, or another
                // vCPU's (it took the kernel lock this one dropped before HLT).
                self.released(log, Park::Halted)?;
                Ok(RunExit::Halted)
            }
            Ok(exit) => Ok(exit),
            Err(EmuError::Platform(_)) if log.panicked => {
                // The recorder stopped the machine here; the log must end here too (the run
                // loop takes the end event next).
                if !matches!(log.peek(), Some(Event::End { .. })) {
                    let exp = log.expected();
                    return Err(self.divergence(
                        log,
                        format!("the kernel's panic hook ended the recording; the log expects {exp}"),
                    ));
                }
                Ok(RunExit::Limit)
            }
            // An input asked for after the last event of a vCPU the recording stopped anywhere.
            Err(EmuError::Platform(_)) if log.over => Ok(RunExit::Limit),
            Err(EmuError::Platform(_)) => {
                let msg = log.divergence.take().unwrap_or_else(|| "the platform stopped".into());
                Err(self.divergence(log, msg))
            }
            Err(e) => Err(self.divergence(log, format!("the emulator stopped: {e}"))),
        }
    }

    /// The run loop stopped at user mode, an interrupt point or a hook: do the replay side.
    fn boundary(&mut self, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        if self.cpu.cpl() == 3 {
            // Back in user mode (the kernel lock dropped): the next entry, on this vCPU or
            // another.
            return self.released(log, Park::User);
        }
        if self.cpu.rip == log.irq_rip.get() {
            self.at_interrupt_point(log)?;
            if log.pending.is_some() {
                // The interrupt comes before the instruction here: an agent hook at this RIP
                // runs when the handler has returned to it, not now (it would run twice).
                return Ok(());
            }
        }
        if let Some(h) = self.hooks.at(self.cpu.rip) {
            self.hook(h, log)?;
        }
        self.accessed_dirty_ahead(log);
        Ok(())
    }

    /// The hardware sets accessed and dirty bits in user PTEs while user code runs, which
    /// replay does not run; the log's user-PTE reads say what the kernel found. When the
    /// running vCPU's next event is one, put those bits in memory now, before the kernel loads
    /// the PTE: it may keep the raw value in a register besides the one it hands the agent
    /// (kvm smp-mix at four vCPUs: `copy_present_pte` kept it in R12 across the hook).
    fn accessed_dirty_ahead(&mut self, log: &mut Log<'_>) {
        let Some(&Event::PteRead { vcpu, addr, value }) = log.peek() else { return };
        if vcpu != log.vcpu {
            return;
        }
        let Some(cur) = self.direct_u64(addr) else { return };
        // Only bits the hardware adds: the logged value is the one in memory plus A/D.
        if cur & !value == 0 && (value & !cur) & !PAGE_ACCESSED_DIRTY == 0 {
            self.replace_pte(addr, cur, value);
        }
    }

    /// CRC-32 over the GPRs, RIP, RFLAGS, CR3 and every page of RAM.
    pub fn digest(&self) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for i in 0..self.parked.len() {
            let c = self.vcpu_state(i);
            for v in c.gpr.iter().chain([&c.rip, &c.rflags, &c.cr3]) {
                h.update(&v.to_le_bytes());
            }
        }
        let mut page = vec![0u8; 4096];
        for pfn in 0..self.mem.size() / 4096 {
            if self.mem.read(pfn * 4096, &mut page) {
                h.update(&page);
            }
        }
        h.finalize()
    }

    fn krr_pos(&self) -> u64 {
        let at = self.cpu.segment(SegReg::Gs).base.wrapping_add(self.hooks.krr_pos);
        self.read_virt_u64(at).unwrap_or(u64::MAX)
    }

    /// An interrupt logged at the entry of the agent's user-PTE hook: the value the kernel
    /// passes (RSI) may lack accessed/dirty bits that the recording's hardware had set in the
    /// PTE (user code on another vCPU, which replay does not run). The hook would put them in
    /// memory and RSI; the interrupt came first, so do it now, as it happened there.
    fn pte_bits_before_the_hook(&mut self, regs: &Regs) {
        const RSI: usize = 6;
        const RDI: usize = 7;
        let (mine, logged) = (self.cpu.gpr[RSI], regs.gpr[RSI]);
        let others_equal = (0..16).all(|i| i == RSI || self.cpu.gpr[i] == regs.gpr[i]);
        if mine == logged || (mine ^ logged) & !PAGE_ACCESSED_DIRTY != 0 || !others_equal {
            return;
        }
        self.replace_pte(self.cpu.gpr[RDI], mine, logged);
        self.cpu.gpr[RSI] = logged;
    }

    /// The u64 at a kernel direct-map address (a PTE the agent names).
    fn direct_u64(&self, va: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.mem.read(va.checked_sub(PAGE_OFFSET)?, &mut b).then_some(u64::from_le_bytes(b))
    }

    /// Put `new` in the PTE at direct-map address `ptep` if it still holds `old` (the value the
    /// kernel read): what the hardware had made of it in the recording.
    fn replace_pte(&mut self, ptep: u64, old: u64, new: u64) {
        if old != new && self.direct_u64(ptep) == Some(old) {
            self.mem.write(ptep - PAGE_OFFSET, &new.to_le_bytes());
        }
    }

    fn read_virt<const N: usize>(&self, va: u64) -> Option<[u8; N]> {
        let pa = virt_to_phys(&self.mem, self.cpu.cr3, va)?;
        let mut b = [0u8; N];
        self.mem.read(pa, &mut b).then_some(b)
    }

    fn read_virt_u64(&self, va: u64) -> Option<u64> {
        self.read_virt(va).map(u64::from_le_bytes)
    }

    /// The kernel returned to user mode: make the next logged kernel entry.
    fn enter_from_user(&mut self, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        let Some(ev) = log.peek().cloned() else { return Ok(()) };
        if matches!(ev, Event::End { .. }) {
            return Ok(());
        }
        let regs = match &ev {
            Event::Syscall { regs, .. } | Event::Exception { regs, .. } => *regs,
            Event::Interrupt { regs, .. } if !is_kernel(regs.rip) => *regs,
            _ => {
                let exp = describe(&ev);
                return Err(
                    self.divergence(log, format!("the kernel returned to user mode; the log expects {exp}"))
                );
            }
        };
        log.take();
        self.cpu.gpr = regs.gpr;
        self.cpu.rflags = regs.rflags;
        self.cpu.rip = regs.rip;
        let r = match &ev {
            // An exception is delivered as the log has it, not re-raised by the user
            // instruction: with several vCPUs its page may have been mapped or changed by
            // another one between the fault and the moment this one took the kernel lock.
            // (The frame of a trap such as #BP holds the RIP after the instruction: so does
            // the log.)
            Event::Exception { vector, error_code, cr2, .. } => {
                let code = has_error_code(*vector).then_some(*error_code as u32);
                let cr2 = (*vector == PF_VECTOR).then_some(*cr2);
                self.cpu.inject_exception(&mut self.mem, log, *vector, code, cr2)
            }
            // SYSCALL's effect, from the logged registers (RIP after the instruction, RCX and
            // R11 as SYSCALL set them), without fetching the user's instruction again: another
            // vCPU may have unmapped or changed its page meanwhile.
            Event::Syscall { .. } => match self.cpu.enter_syscall() {
                true => Ok(()),
                false => Err(EmuError::Unsupported { rip: regs.rip, what: "SYSCALL outside 64-bit mode" }),
            },
            // An interrupt from user mode: delivered through the IDT at the next boundary,
            // before any user instruction.
            _ => {
                if let Event::Interrupt { vector, .. } = &ev {
                    log.pending = Some(*vector);
                }
                self.cpu.step(&mut self.mem, log).map(|_| ())
            }
        };
        if let Some(msg) = log.divergence.take() {
            return Err(self.divergence(log, msg));
        }
        if let Err(e) = r {
            return Err(self.divergence(log, format!("entering the kernel for {}: {e}", describe(&ev))));
        }
        if self.cpu.cpl() == 3 {
            return Err(self.divergence(
                log,
                format!(
                    "the entry at user RIP {:#x} did not enter the kernel as the log says ({})",
                    regs.rip,
                    describe(&ev)
                ),
            ));
        }
        self.injected = Some(ev);
        Ok(())
    }

    /// RIP equals the next kernel interrupt's: deliver it if the position and GPRs agree.
    fn at_interrupt_point(&mut self, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        let Some(Event::Interrupt { vector, pos, regs, .. }) = log.peek().cloned() else { return Ok(()) };
        let now = self.krr_pos();
        if now < pos {
            return Ok(());
        }
        if now > pos {
            return Err(self.divergence(
                log,
                format!("the position counter passed the interrupt's position: krr_pos {now} > {pos} at RIP {:#x}", regs.rip),
            ));
        }
        if self.hooks.at(self.cpu.rip) == Some(Hook::PteRead) {
            self.pte_bits_before_the_hook(&regs);
        }
        if self.cpu.gpr != regs.gpr {
            const RCX: usize = 1;
            // GPRs a string instruction does not change (RAX, RCX, RSI, RDI may move).
            let others_equal =
                (0..16).filter(|i| ![0, 1, 6, 7].contains(i)).all(|i| self.cpu.gpr[i] == regs.gpr[i]);
            if others_equal && self.rep_string_at(self.cpu.rip) && self.cpu.gpr[RCX] >= regs.gpr[RCX] {
                // The interrupt came between two iterations of a REP string instruction: run
                // exactly the iterations that ran before it, then stand on the instruction again
                // with the count that was left, as the hardware did.
                let rip = self.cpu.rip;
                self.cpu.gpr[RCX] -= regs.gpr[RCX];
                let r = self.cpu.step(&mut self.mem, log);
                if let Some(msg) = log.divergence.take() {
                    return Err(self.divergence(log, msg));
                }
                if let Err(e) = r {
                    return Err(self
                        .divergence(log, format!("replaying the REP iterations before an interrupt: {e}")));
                }
                self.cpu.gpr[RCX] = regs.gpr[RCX];
                self.cpu.rip = rip;
                if self.cpu.gpr != regs.gpr {
                    return Err(self.divergence(log, format!("interrupt inside the REP string instruction at {rip:#x}: the GPRs differ from the log")));
                }
                self.cpu.rflags |= regs.rflags & RF;
            } else {
                // Same block, same RIP: an uninstrumented loop; the GPRs pick the iteration.
                return Ok(());
            }
        }
        // RFLAGS too, but RF (hardware sets it in the frame of an interrupted REP instruction)
        // and, for traces not recorded on krr-emu, the status flags (see `check_status_flags`).
        let mask = if self.check_status_flags { !RF } else { !(RF | STATUS_FLAGS) };
        if (self.cpu.rflags ^ regs.rflags) & mask != 0 {
            return Err(self.divergence(
                log,
                format!(
                    "interrupt point {:#x}: RFLAGS {:#x}, the log has {:#x}",
                    regs.rip, self.cpu.rflags, regs.rflags
                ),
            ));
        }
        if let Some(after) = self.ambiguous(pos, &regs) {
            return Err(self.divergence(
                log,
                format!(
                    "ambiguous interrupt point: position {pos}, RIP {:#x} and the same GPRs recur {after} instructions later without the position counter moving; replay does not guess which one the interrupt hit",
                    regs.rip
                ),
            ));
        }
        self.injected = log.take();
        log.pending = Some(vector);
        // The recorded CPU took the interrupt here even if this instruction is in the shadow
        // of an STI or MOV SS (an interrupt window KVM opened, or a hypervisor that lost the
        // shadow across a VM exit): deliver it here too, not one instruction later, which
        // would run the instruction before the handler and push another return address.
        self.cpu.interrupt_shadow = false;
        Ok(())
    }

    /// Look ahead from a matching interrupt point, on a copy of the machine (memory writes are
    /// undone, the CPU state restored): if the same RIP and GPRs come back before the position
    /// counter has moved (an inline increment or a `__sanitizer_cov_trace_pc` call, seen when the
    /// RIP comes back), an input, an agent hook, user mode, or `LOOKAHEAD` instructions, the point
    /// is ambiguous. Returns how many instructions later it recurred.
    fn ambiguous(&mut self, pos: u64, regs: &Regs) -> Option<u64> {
        const LOOKAHEAD: u64 = 4096;
        let saved = krr_vmm::snapshot::encode_cpu(&self.cpu);
        let start = self.cpu.icount;
        let hooks = self.hooks.clone();
        let (rip0, trace_pc, rflags0) = (regs.rip, hooks.trace_pc, self.cpu.rflags);
        let mut undo = UndoMem { inner: &mut self.mem, log: Vec::new() };
        let mut found = None;
        loop {
            let used = self.cpu.icount - start;
            if used >= LOOKAHEAD {
                break;
            }
            let mut first = true;
            let r = self.cpu.run(&mut undo, &mut NoInputs, LOOKAHEAD - used, |c| {
                if std::mem::take(&mut first) {
                    return false;
                }
                c.rip == rip0 || c.rip == trace_pc || c.cpl() == 3 || hooks.at(c.rip).is_some()
            });
            match r {
                Ok(RunExit::Stopped) if self.cpu.rip == rip0 => {
                    let at = self.cpu.segment(SegReg::Gs).base.wrapping_add(hooks.krr_pos);
                    let now = read_u64(undo.inner, self.cpu.cr3, at);
                    if self.cpu.gpr == regs.gpr && now == Some(pos) {
                        // The same machine state again (a loop that waits for the interrupt
                        // itself): either point gives the same future, so there is nothing
                        // to choose. Any other difference (flags, memory) is an ambiguity.
                        if self.cpu.rflags != rflags0 || undo.changed() {
                            found = Some(self.cpu.icount - start);
                        }
                        break;
                    }
                    if rip0 == trace_pc || now != Some(pos) {
                        // The counter moved (it never goes back): every later arrival is at
                        // a later position.
                        break;
                    }
                }
                _ => break,
            }
        }
        undo.undo();
        let _ = krr_vmm::snapshot::decode_cpu(&mut self.cpu, &saved);
        self.cpu.icount = start;
        self.cpu.flush_tlb_all();
        found
    }

    /// Whether the instruction at `rip` is a REP-prefixed string instruction.
    fn rep_string_at(&self, rip: u64) -> bool {
        let mut b = [0u8; 6];
        for (i, byte) in b.iter_mut().enumerate() {
            let Some(pa) = virt_to_phys(&self.mem, self.cpu.cr3, rip + i as u64) else { return false };
            let mut one = [0u8; 1];
            if !self.mem.read(pa, &mut one) {
                return false;
            }
            *byte = one[0];
        }
        let mut rep = false;
        for &x in &b {
            match x {
                0xf2 | 0xf3 => rep = true,
                0x66 | 0x67 | 0x2e | 0x3e | 0x26 | 0x36 | 0x64 | 0x65 | 0x40..=0x4f => {}
                0xa4..=0xa7 | 0xaa..=0xaf => return rep,
                _ => return false,
            }
        }
        false
    }

    fn check_regs(&self, log: &Log<'_>, regs: &Regs, what: &str) -> Result<(), Box<Divergence>> {
        if self.cpu.gpr != regs.gpr {
            return Err(self.divergence(log, format!("{what}: the GPRs differ from the log")));
        }
        Ok(())
    }

    /// RDMSR of an MSR the emulator keeps itself (FS/GS bases, EFER, STAR, ...): the instruction
    /// never reaches the platform, so the hook consumes the event (out of order if an interrupt
    /// landed first) and the logged value must be the state the replayed CPU holds.
    fn owned_msr(&self, log: &mut Log<'_>, asked: u32, mine: u64) -> Result<(), Box<Divergence>> {
        match log.take_for_hook(|e| matches!(e, Event::Rdmsr { msr, .. } if *msr == asked)) {
            Some((_, _, Event::Rdmsr { value, fault: false, .. })) if value == mine => Ok(()),
            Some((_, _, Event::Rdmsr { value, fault, .. })) => {
                let logged = if fault { "#GP".to_string() } else { format!("{value:#x}") };
                Err(self.divergence(
                    log,
                    format!("RDMSR {asked:#x}: the replayed CPU holds {mine:#x}, the log has {logged}"),
                ))
            }
            _ => {
                let exp = log.expected();
                Err(self.divergence(log, format!("the agent logged RDMSR {asked:#x}; the log expects {exp}")))
            }
        }
    }

    fn arg(&self, i: usize) -> u64 {
        // System V: RDI, RSI, RDX, RCX, R8.
        const ARGS: [usize; 5] = [7, 6, 2, 1, 8];
        self.cpu.gpr[ARGS[i]]
    }

    /// The agent was called: check the call against the log and do the replay side of it.
    fn hook(&mut self, h: Hook, log: &mut Log<'_>) -> Result<(), Box<Divergence>> {
        // A recording that stopped this vCPU wherever it was (see `Log::ends_here`): reaching
        // the agent again after the last event is the end of the replay, not a divergence (the
        // run loop takes the end event next).
        if log.ends_here() {
            return Ok(());
        }
        let mismatch = |s: &Self, log: &mut Log<'_>, what: &str| {
            let exp = log.expected();
            Err(s.divergence(log, format!("the agent logged {what}; the log expects {exp}")))
        };
        let input_hook = matches!(
            h,
            Hook::PortIn | Hook::MmioRead | Hook::Rdtsc | Hook::Rdmsr | Hook::Cpuid | Hook::Rdrand
        );
        if h == Hook::Rdmsr {
            if let Some(mine) = self.cpu.read_msr(self.arg(0) as u32) {
                return self.owned_msr(log, self.arg(0) as u32, mine);
            }
        }
        if input_hook && log.irq_next() {
            // The interrupt lands before the agent disables interrupts; the instruction that
            // reads the input is checked when it runs.
            return Ok(());
        }
        match h {
            Hook::Syscall => match self.injected.take() {
                Some(Event::Syscall { .. }) => Ok(()),
                _ => mismatch(self, log, "a system call"),
            },
            Hook::Entry => {
                let (vector, error) = (self.arg(1) as u8, self.arg(2));
                let cs = self.read_virt_u64(self.arg(0) + PT_REGS_CS).unwrap_or(0);
                match self.injected.take() {
                    Some(Event::Exception { vector: v, error_code, cr2, .. }) => {
                        if v != vector || error_code != error || (v == 14 && cr2 != self.cpu.cr2) {
                            return Err(self.divergence(
                                log,
                                format!(
                                    "user exception: the kernel took vector {vector} error {error:#x} CR2 {:#x}, the log has {v} error {error_code:#x} CR2 {cr2:#x}",
                                    self.cpu.cr2
                                ),
                            ));
                        }
                        Ok(())
                    }
                    Some(Event::Interrupt { vector: v, .. }) if v == vector => Ok(()),
                    Some(other) => {
                        self.injected = Some(other);
                        mismatch(self, log, &format!("an entry through vector {vector}"))
                    }
                    // An exception raised by kernel code: deterministic, not logged.
                    None if vector < 32 && vector != 2 && cs & 3 == 0 => Ok(()),
                    None => mismatch(self, log, &format!("an entry through vector {vector} from CS {cs:#x}")),
                }
            }
            Hook::PortIn => match log.peek() {
                Some(Event::PortRead { port, .. }) if *port as u64 == self.arg(0) & 0xffff => Ok(()),
                _ => mismatch(self, log, &format!("a port read of {:#x}", self.arg(0) & 0xffff)),
            },
            Hook::MmioRead => match log.peek() {
                Some(Event::MmioRead { addr, .. }) if *addr == self.arg(0) => Ok(()),
                _ => mismatch(self, log, &format!("an MMIO read of {:#x}", self.arg(0))),
            },
            Hook::Rdtsc => match log.peek() {
                Some(Event::Rdtsc { .. }) => Ok(()),
                _ => mismatch(self, log, "RDTSC"),
            },
            Hook::Rdmsr => match log.peek() {
                Some(Event::Rdmsr { msr, .. }) if *msr as u64 == self.arg(0) & 0xffff_ffff => Ok(()),
                _ => mismatch(self, log, &format!("RDMSR {:#x}", self.arg(0) & 0xffff_ffff)),
            },
            Hook::Cpuid => match log.peek() {
                Some(Event::Cpuid { .. }) => Ok(()),
                _ => mismatch(self, log, "CPUID"),
            },
            Hook::Rdrand => match log.peek() {
                Some(Event::Random { .. }) => Ok(()),
                _ => mismatch(self, log, "RDRAND/RDSEED"),
            },
            Hook::PteRead => {
                let (ptep, val) = (self.arg(0), self.arg(1));
                if val & PAGE_USER == 0 {
                    return Ok(());
                }
                match log.take_for_hook(|e| matches!(e, Event::PteRead { .. })) {
                    Some((_, _, Event::PteRead { addr, value, .. })) if addr == ptep => {
                        // The value the kernel continues with is the one the hardware had made.
                        self.cpu.gpr[6] = value;
                        self.replace_pte(ptep, val, value);
                        Ok(())
                    }
                    _ => mismatch(self, log, &format!("a user PTE read at {ptep:#x}")),
                }
            }
            Hook::UserReadBegin => match log.take_for_hook(|e| matches!(e, Event::UserRead { .. })) {
                Some((_, seq, Event::UserRead { read, addr, data, .. })) => {
                    self.place_user_bytes(read == krr_trace::UserReadKind::KmapAnon, addr, &data);
                    self.open_reads
                        .insert(seq, OpenRead { kind: user_read_code(read), addr, len: data.len() as u32 });
                    Ok(())
                }
                _ => mismatch(self, log, "the start of a user-memory read"),
            },
            Hook::LockSpin => {
                // The vCPU dropped the kernel lock (or never held it) and takes it now. If its
                // next event is a hand-off at this position, others ran first in the recording:
                // they run first now too, and it waits here.
                let pos = self.krr_pos();
                let next = self.next_of(log, log.vcpu);
                let j = match next {
                    Some(j)
                        if self
                            .events
                            .get(j)
                            .is_some_and(|e| matches!(*e, Event::LockHandoff { pos: p, .. } if p == pos)) =>
                    {
                        j
                    }
                    _ => return self.count_idle_spin(log, pos, next),
                };
                if log.peek_index() == j {
                    log.take();
                    return Ok(());
                }
                let me = log.vcpu;
                let v = log.peek().map_or(me, Event::vcpu);
                if v == me {
                    let exp = log.expected();
                    return Err(self.divergence(
                        log,
                        format!(
                            "vCPU {v} waits for the kernel lock at pos {pos}; the log expects {exp} first"
                        ),
                    ));
                }
                self.switch_to(log, Park::Spinning, v)
            }
            Hook::UserReadEnd => {
                let (seq, kind, addr, len) =
                    (self.arg(0), self.arg(1) as u32, self.arg(2), self.arg(4) as u32);
                match self.open_reads.remove(&seq) {
                    Some(o) if o.kind == kind && o.addr == addr && o.len == len => Ok(()),
                    Some(o) => Err(self.divergence(
                        log,
                        format!(
                            "user read #{seq}: the kernel read {len} bytes of kind {kind} at {addr:#x}, the log has {} bytes of kind {} at {:#x}",
                            o.len, o.kind, o.addr
                        ),
                    )),
                    None => Err(self.divergence(log, format!("user read #{seq} ended but never began in the log"))),
                }
            }
        }
    }

    /// Put logged user bytes where the kernel will read them: at a user virtual address through
    /// the current page tables (pages that are not mapped yet get their deterministic contents
    /// when the kernel faults them in), or a physical page (kmap of an anonymous page).
    fn place_user_bytes(&mut self, physical: bool, addr: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = addr + done as u64;
            let n = ((4096 - (at & 0xfff)) as usize).min(data.len() - done);
            let pa = if physical { Some(at) } else { virt_to_phys(&self.mem, self.cpu.cr3, at) };
            if let Some(pa) = pa {
                self.mem.write(pa, &data[done..done + n]);
            }
            done += n;
        }
    }

    fn divergence(&self, log: &Log<'_>, what: String) -> Box<Divergence> {
        let index = log.cursor as u64;
        tracing::debug!(event = index, vcpu = log.vcpu, rip = format_args!("{:#x}", self.cpu.rip), %what, "divergence");
        let from = log.cursor.saturating_sub(20);
        let to = (log.cursor + 1).min(self.events.len());
        Box::new(Divergence {
            event_index: index,
            vcpu: log.vcpu,
            what,
            expected: self.events.get(log.cursor).map(|e| Event::clone(&e)),
            rip: self.cpu.rip,
            gpr: self.cpu.gpr,
            rflags: self.cpu.rflags,
            krr_pos: self.krr_pos(),
            instructions: self.instructions(),
            recent: (from..to)
                .filter_map(|i| Some((i as u64, Event::clone(&*self.events.get(i)?))))
                .collect(),
        })
    }
}

fn read_u64(mem: &FlatMemory, cr3: u64, va: u64) -> Option<u64> {
    let pa = virt_to_phys(mem, cr3, va)?;
    let mut b = [0u8; 8];
    mem.read(pa, &mut b).then_some(u64::from_le_bytes(b))
}

/// Guest memory whose writes can be taken back (the ambiguity look-ahead runs on it).
struct UndoMem<'m> {
    inner: &'m mut FlatMemory,
    /// (address, bytes before the write), oldest first.
    log: Vec<(u64, Vec<u8>)>,
}

impl UndoMem<'_> {
    /// Whether memory differs from before the first write.
    fn changed(&self) -> bool {
        // The first write to a byte saved its original value.
        let mut first = HashMap::new();
        for (gpa, old) in &self.log {
            for (i, b) in old.iter().enumerate() {
                first.entry(gpa + i as u64).or_insert(*b);
            }
        }
        first.into_iter().any(|(gpa, b)| {
            let mut now = [0u8];
            self.inner.read(gpa, &mut now) && now[0] != b
        })
    }

    fn undo(self) {
        for (gpa, old) in self.log.into_iter().rev() {
            self.inner.write(gpa, &old);
        }
    }
}

impl GuestMemory for UndoMem<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.inner.read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> bool {
        let mut old = vec![0u8; data.len()];
        if !self.inner.read(gpa, &mut old) {
            return false;
        }
        self.log.push((gpa, old));
        self.inner.write(gpa, data)
    }
    fn mark_code_page(&mut self, pfn: u64) {
        self.inner.mark_code_page(pfn)
    }
    fn code_epoch(&self) -> u64 {
        self.inner.code_epoch()
    }
    fn code_pages_written_since(&self, epoch: u64, out: &mut Vec<u64>) -> bool {
        self.inner.code_pages_written_since(epoch, out)
    }
}

/// The look-ahead's platform: any input ends it (the position would be decided by the log).
struct NoInputs;

fn stop<T>() -> Result<T, PlatformStop> {
    Err(PlatformStop::new("look-ahead reached an input"))
}

impl Platform for NoInputs {
    fn io_in(&mut self, _: u16, _: u8) -> Result<u32, PlatformStop> {
        stop()
    }
    fn io_out(&mut self, _: u16, _: u8, _: u32) -> Result<(), PlatformStop> {
        stop()
    }
    fn mmio_read(&mut self, _: u64, _: &mut [u8]) -> Result<(), PlatformStop> {
        stop()
    }
    fn mmio_write(&mut self, _: u64, _: &[u8]) -> Result<(), PlatformStop> {
        stop()
    }
    fn rdtsc(&mut self) -> Result<u64, PlatformStop> {
        stop()
    }
    fn rdmsr(&mut self, _: u32) -> Result<Option<u64>, PlatformStop> {
        stop()
    }
    fn wrmsr(&mut self, _: u32, _: u64) -> Result<bool, PlatformStop> {
        stop()
    }
    fn rdrand(&mut self) -> Result<Option<u64>, PlatformStop> {
        stop()
    }
    fn rdseed(&mut self) -> Result<Option<u64>, PlatformStop> {
        stop()
    }
    fn cpuid(&mut self, _: u32, _: u32) -> Result<CpuidResult, PlatformStop> {
        stop()
    }
    fn hlt(&mut self) -> Result<(), PlatformStop> {
        stop()
    }
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Result<Option<u8>, PlatformStop> {
        Ok(None)
    }
}

fn user_read_code(k: krr_trace::UserReadKind) -> u32 {
    use krr_trace::UserReadKind::*;
    match k {
        CopyFromUser => 0,
        GetUser => 1,
        StrncpyFromUser => 2,
        StrnlenUser => 3,
        Futex => 4,
        KmapAnon => 5,
        IoUringSq => 6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: u64 = 0x10000;
    const DATA: u64 = 0x20000;
    /// The per-CPU area (GS base); `krr_pos` sits at offset 0 and holds 7.
    const PERCPU: u64 = 0x30000;

    /// A 64-bit CPU at CPL0 running `code` with identity paging of the first 16 MiB.
    fn machine(code: &[u8]) -> (Cpu, FlatMemory) {
        let mut mem = FlatMemory::new(16 << 20);
        let mut put = |a: u64, v: u64| assert!(mem.write(a, &v.to_le_bytes()));
        // Accessed and dirty already set, as in a running kernel: the walks write nothing.
        put(0x1000, 0x2000 | 0x23);
        put(0x2000, 0x3000 | 0x23);
        for i in 0..8u64 {
            put(0x3000 + i * 8, (i << 21) | 0xe3);
        }
        put(PERCPU, 7);
        assert!(mem.write(CODE, code));
        let mut cpu = Cpu::new_long_mode(0x1000);
        cpu.rip = CODE;
        cpu.gpr[4] = 0x8000;
        cpu.segment_mut(SegReg::Gs).base = PERCPU;
        (cpu, mem)
    }

    fn regs_of(cpu: &Cpu) -> Regs {
        Regs { gpr: cpu.gpr, rip: cpu.rip, rflags: cpu.rflags }
    }

    /// The look-ahead from an interrupt point at CODE (position 7, the current GPRs).
    fn lookahead(code: &[u8]) -> (Option<u64>, Replayer<'static>) {
        let (cpu, mem) = machine(code);
        let regs = regs_of(&cpu);
        let mut r = Replayer::new(
            vec![cpu],
            mem,
            Hooks::none(0, 0xdead_0000),
            Box::leak(Box::new(Events::from(vec![]))),
        );
        let before = r.digest();
        let found = r.ambiguous(7, &regs);
        assert_eq!(r.digest(), before, "the look-ahead leaves the machine as it found it");
        assert_eq!(r.cpu.rip, CODE);
        (found, r)
    }

    /// An interrupt the log puts on the instruction right after STI (in its shadow) is
    /// delivered there, before that instruction runs.
    #[test]
    fn an_interrupt_logged_in_the_sti_shadow_is_delivered_there() {
        // sti ; inc rax ; hlt
        let (mut cpu, mem) = machine(&[0xfb, 0x48, 0xff, 0xc0, 0xf4]);
        let mut plat = krr_emu::SimplePlatform::new();
        cpu.step(&mut FlatMemory::clone(&mem), &mut plat).unwrap();
        assert!(cpu.interrupt_shadow, "STI opens a one-instruction shadow");
        let regs = regs_of(&cpu);
        let events = Events::from(vec![Event::Interrupt { vcpu: 0, vector: 0x30, pos: 7, regs }]);
        let mut r = Replayer::new(vec![cpu], mem, Hooks::none(0, 0xdead_0000), &events);
        let mut log = Log::new(&events, Rc::new(Cell::new(regs.rip)));
        r.at_interrupt_point(&mut log).unwrap();
        assert_eq!(log.pending, Some(0x30));
        assert!(!r.cpu.interrupt_shadow, "delivered at the logged instruction, not after it");
        assert_eq!(r.cpu.rip, CODE + 1);
    }

    /// `sti; hlt` with the interrupt logged on the HLT (in the STI shadow, before HLT ran):
    /// when replay has already halted there (another vCPU's events came first), waking it
    /// delivers the interrupt on the HLT, as recorded, not after it.
    #[test]
    fn an_interrupt_logged_on_a_hlt_in_the_sti_shadow_wakes_it_there() {
        let (mut cpu, mem) = machine(&[0xfb, 0xf4, 0x90]);
        let mut plat = krr_emu::SimplePlatform::new();
        let mut m = FlatMemory::clone(&mem);
        cpu.step(&mut m, &mut plat).unwrap();
        let regs = regs_of(&cpu);
        assert_eq!(regs.rip, CODE + 1);
        cpu.step(&mut m, &mut plat).unwrap();
        assert!(cpu.halted && cpu.rip == CODE + 2, "HLT ran");
        let events = Events::from(vec![Event::Interrupt { vcpu: 0, vector: 0x30, pos: 7, regs }]);
        let mut r = Replayer::new(vec![cpu], mem, Hooks::none(0, 0xdead_0000), &events);
        let mut log = Log::new(&events, Rc::new(Cell::new(0)));
        r.wake(&mut log).unwrap();
        assert_eq!(log.pending, Some(0x30));
        assert_eq!(r.cpu.rip, CODE + 1, "the interrupt's frame will point at the HLT");
        // Logged after the HLT (the usual wake-up): RIP stays.
        let (mut cpu, mem) = machine(&[0xfb, 0xf4, 0x90]);
        let mut m = FlatMemory::clone(&mem);
        cpu.step(&mut m, &mut plat).unwrap();
        cpu.step(&mut m, &mut plat).unwrap();
        let events =
            Events::from(vec![Event::Interrupt { vcpu: 0, vector: 0x30, pos: 7, regs: regs_of(&cpu) }]);
        let mut r = Replayer::new(vec![cpu], mem, Hooks::none(0, 0xdead_0000), &events);
        let mut log = Log::new(&events, Rc::new(Cell::new(0)));
        r.wake(&mut log).unwrap();
        assert_eq!(r.cpu.rip, CODE + 2);
    }

    /// A vCPU of a multi-core recording that reaches the agent after the log's last event
    /// (KVM stopped it mid-handler when another vCPU powered the machine off) ends the replay;
    /// one vCPU of a one-vCPU recording that powered off may not ask for more.
    #[test]
    fn after_the_last_event_a_multi_core_vcpu_may_stop_anywhere() {
        let end = Events::from(vec![Event::End { vcpu: 0, reason: krr_trace::EndReason::Poweroff }]);
        for multi in [true, false] {
            let (cpu, mem) = machine(&[0x90, 0xf4]);
            let hooks = Hooks::one(0, 0xdead_0000, CODE, crate::hooks::Hook::Rdtsc);
            let mut r = Replayer::new(vec![cpu], mem, hooks, &end);
            let mut log = Log::new(&end, Rc::new(Cell::new(0)));
            log.multi = multi;
            assert_eq!(r.boundary(&mut log).is_ok(), multi, "multi-core: {multi}");
            // An input the platform serves (a port read) likewise.
            assert!(log.input("IN 0x3fd", |e| matches!(e, Event::PortRead { .. })).is_err());
            assert_eq!(log.over, multi);
            assert_eq!(log.divergence.is_some(), !multi);
        }
    }

    /// A killed recorder leaves no end event: a vCPU that reaches the agent after the last
    /// valid event ends the replay of that prefix, at one vCPU or several; a log that ends in
    /// an end event already taken asks the same of nobody (the run loop stopped there).
    #[test]
    fn after_the_last_event_of_an_unsealed_log_any_vcpu_may_stop() {
        let rdtsc = Events::from(vec![Event::Rdtsc { vcpu: 0, tsc: 7, aux: None }]);
        for multi in [true, false] {
            let (cpu, mem) = machine(&[0x90, 0xf4]);
            let hooks = Hooks::one(0, 0xdead_0000, CODE, crate::hooks::Hook::Rdtsc);
            let mut r = Replayer::new(vec![cpu], mem, hooks, &rdtsc);
            let mut log = Log::new(&rdtsc, Rc::new(Cell::new(0)));
            log.multi = multi;
            log.take();
            assert!(r.boundary(&mut log).is_ok(), "multi-core: {multi}");
            assert!(log.input("IN 0x3fd", |e| matches!(e, Event::PortRead { .. })).is_err());
            assert!(log.over && log.divergence.is_none(), "multi-core: {multi}");
        }
        let sealed = Events::from(vec![
            Event::Rdtsc { vcpu: 0, tsc: 7, aux: None },
            Event::End { vcpu: 0, reason: krr_trace::EndReason::Poweroff },
        ]);
        let mut log = Log::new(&sealed, Rc::new(Cell::new(0)));
        log.take();
        assert!(!log.ends_here(), "the end event is still to come");
        log.take();
        assert!(!log.ends_here(), "taken: a sealed log is not cut short");
    }

    /// A user PTE whose accessed bit the recording's hardware had set: an interrupt logged at
    /// the agent's PTE hook entry finds RSI without it; replay puts it in RSI and memory first.
    #[test]
    fn an_interrupt_at_the_pte_hook_sees_the_hardware_accessed_bit() {
        let (mut cpu, mut mem) = machine(&[0x90, 0xf4]);
        let (raw, seen) = (0x8000_0000_019f_d045u64, 0x8000_0000_019f_d065u64);
        assert!(mem.write(DATA, &raw.to_le_bytes()));
        cpu.gpr[7] = PAGE_OFFSET + DATA;
        cpu.gpr[6] = raw;
        let mut regs = regs_of(&cpu);
        regs.gpr[6] = seen;
        let events = Events::from(vec![Event::Interrupt { vcpu: 0, vector: 0xec, pos: 7, regs }]);
        let hooks = Hooks::one(0, 0xdead_0000, CODE, crate::hooks::Hook::PteRead);
        let mut r = Replayer::new(vec![cpu], mem, hooks, &events);
        let mut log = Log::new(&events, Rc::new(Cell::new(CODE)));
        r.at_interrupt_point(&mut log).unwrap();
        assert_eq!(log.pending, Some(0xec), "delivered: the GPRs agree once RSI has the bit");
        assert_eq!(r.cpu.gpr[6], seen);
        let mut b = [0u8; 8];
        assert!(r.mem.read(DATA, &mut b));
        assert_eq!(u64::from_le_bytes(b), seen);
    }

    /// The next event is a user-PTE read: its accessed/dirty bits go to memory before the
    /// kernel loads the PTE; any other difference is left for the hook to report.
    #[test]
    fn accessed_and_dirty_bits_are_in_memory_before_the_kernel_reads_the_pte() {
        for (raw, logged, expect) in [
            (0x8000_0000_0fad_4005u64, 0x8000_0000_0fad_4065u64, 0x8000_0000_0fad_4065u64),
            (0x8000_0000_0fad_4005, 0x8000_0000_0fad_4007, 0x8000_0000_0fad_4005),
            (0x8000_0000_0fad_4065, 0x8000_0000_0fad_4025, 0x8000_0000_0fad_4065),
        ] {
            let (cpu, mut mem) = machine(&[0x90, 0xf4]);
            assert!(mem.write(DATA, &raw.to_le_bytes()));
            let events =
                Events::from(vec![Event::PteRead { vcpu: 0, addr: PAGE_OFFSET + DATA, value: logged }]);
            let mut r = Replayer::new(vec![cpu], mem, Hooks::none(0, 0xdead_0000), &events);
            let mut log = Log::new(&events, Rc::new(Cell::new(0)));
            r.accessed_dirty_ahead(&mut log);
            let mut b = [0u8; 8];
            assert!(r.mem.read(DATA, &mut b));
            assert_eq!(u64::from_le_bytes(b), expect, "{raw:#x} -> logged {logged:#x}");
        }
    }

    /// An interrupt logged at the first instruction of an agent hook is delivered first; the
    /// hook runs when the handler returns there (here: a user-read end the replay has not seen
    /// begin would be a divergence if it ran now).
    #[test]
    fn an_interrupt_at_a_hook_comes_before_the_hook() {
        let (cpu, mem) = machine(&[0x90, 0xf4]);
        let regs = regs_of(&cpu);
        let events = Events::from(vec![
            Event::Interrupt { vcpu: 0, vector: 0x30, pos: 7, regs },
            Event::End { vcpu: 0, reason: krr_trace::EndReason::Poweroff },
        ]);
        let hooks = Hooks::one(0, 0xdead_0000, CODE, crate::hooks::Hook::UserReadEnd);
        let mut r = Replayer::new(vec![cpu], mem, hooks, &events);
        let mut log = Log::new(&events, Rc::new(Cell::new(CODE)));
        r.boundary(&mut log).unwrap();
        assert_eq!(log.pending, Some(0x30));
        // The CPU delivers it; back at the hook with nothing to deliver, the hook runs.
        log.pending = None;
        assert!(r.boundary(&mut log).is_err(), "the user-read end now runs (and finds no begin)");
    }

    #[test]
    fn a_loop_that_changes_memory_is_ambiguous() {
        // 1: inc qword [DATA] ; jmp 1b  -- same RIP and GPRs each time round, memory differs.
        let code = [0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0xeb, 0xf6];
        let (found, r) = lookahead(&code);
        assert_eq!(found, Some(2));
        let mut b = [0u8; 8];
        assert!(r.mem.read(DATA, &mut b));
        assert_eq!(u64::from_le_bytes(b), 0, "memory writes undone");
    }

    #[test]
    fn a_loop_that_changes_nothing_is_not_ambiguous() {
        // 1: pause ; jmp 1b  -- waits for the interrupt: every point is the same state.
        let (found, _) = lookahead(&[0xf3, 0x90, 0xeb, 0xfc]);
        assert_eq!(found, None);
        // 1: mov qword [DATA], 0 ; jmp 1b  -- writes, but the same value.
        let code = [0x48, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0xeb, 0xf2];
        let (found, _) = lookahead(&code);
        assert_eq!(found, None);
    }

    #[test]
    fn straight_line_code_or_a_moving_counter_is_not_ambiguous() {
        // inc rax ; jmp back: the GPRs never repeat.
        let (found, _) = lookahead(&[0x48, 0xff, 0xc0, 0xeb, 0xfb]);
        assert_eq!(found, None);
        // 1: inc qword gs:[0] (the position counter) ; inc qword [DATA] ; jmp 1b
        let code = [
            0x65, 0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, 0x48, 0xff, 0x04, 0x25, 0x00, 0x00, 0x02,
            0x00, 0xeb, 0xed,
        ];
        let (found, _) = lookahead(&code);
        assert_eq!(found, None);
    }
}
