//! The execution loop: fetch through the TLB, decode (with a per-CPU decoded-instruction cache
//! keyed by physical address), dispatch, count, and deliver events at instruction boundaries.

use std::fmt;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction};

use crate::cpu::{flags, Cpu, Mode, SegReg};
use crate::error::{vector, EmuError, ExResult, Exception, Fault};
use crate::exceptions::EventKind;
use crate::insn::{self, Decoded, Handler};
use crate::memory::GuestMemory;
use crate::paging::{Access, Priv};
use crate::platform::Platform;

/// What one `Cpu::step` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepEvent {
    /// An instruction retired (`icount` went up by one). Software interrupts, SYSCALL and
    /// similar retire too.
    Retired,
    /// An exception raised by the instruction at RIP (or a pending #DB trap) was delivered
    /// through the IDT; the instruction did not retire.
    Exception {
        /// Vector delivered (8 for a double fault).
        vector: u8,
    },
    /// An external interrupt was accepted and delivered.
    Interrupt {
        /// The vector.
        vector: u8,
    },
    /// A REP string instruction executed some iterations and stopped for a pending interrupt;
    /// RIP stays on it with RCX/RSI/RDI updated. Not retired.
    Interrupted,
    /// The CPU is halted and no interrupt is pending; nothing happened.
    Halted,
}

/// Why `Cpu::run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExit {
    /// The requested number of instructions retired.
    Limit,
    /// The stop predicate returned true (checked before every step).
    Stopped,
    /// The CPU is halted with no pending interrupt.
    Halted,
}

/// log2 of the number of decode cache slots.
const CACHE_BITS: u32 = 16;
const CACHE_SLOTS: usize = 1 << CACHE_BITS;
/// Set in every valid tag, so a zero tag (fresh, zero-allocated memory) is an empty slot.
const VALID: u64 = 1 << 63;

/// A decoded instruction and its handler.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    d: Decoded,
    handler: Handler,
    /// `insn::is_plain`: the fetch context survives this instruction.
    plain: bool,
}

/// Decoded-instruction cache; direct mapped by physical address so the slots of one physical
/// page are contiguous and a code-page write invalidates them with one short scan.
///
/// Cheap to create: `meta` is allocated per page color (4096 slots) on first use, and decodes
/// live in `entries`, which only grows with the slots used.
pub(crate) struct DecodeCache {
    /// Per page color, per slot `[tag, rip, entry, 0]`: tag = VALID | (physical address << 2) |
    /// mode, or 0 when empty; rip = the linear RIP the instruction was decoded at (branch
    /// targets depend on it); entry = 1 + index in `entries` owned by the slot, or 0 if it
    /// never held one.
    meta: [Option<Box<[[u64; 4]; 4096]>>; CACHE_SLOTS / 4096],
    /// Decodes, referenced from `meta`.
    entries: Vec<Entry>,
    /// A one-off decode (not cacheable, or the cache is off).
    local: Option<Entry>,
    epoch: u64,
    enabled: bool,
    scratch: Vec<u64>,
    /// Lookups that hit (statistics).
    pub(crate) hits: u64,
    /// Lookups that decoded.
    pub(crate) misses: u64,
}

impl Default for DecodeCache {
    fn default() -> Self {
        DecodeCache {
            meta: Default::default(),
            entries: Vec::new(),
            local: None,
            epoch: 0,
            enabled: true,
            scratch: Vec::new(),
            hits: 0,
            misses: 0,
        }
    }
}

impl Clone for DecodeCache {
    /// A clone starts empty: decodes are not state, and copying megabytes per snapshot is waste.
    fn clone(&self) -> Self {
        DecodeCache { enabled: self.enabled, ..Default::default() }
    }
}

impl fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodeCache")
            .field("enabled", &self.enabled)
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish()
    }
}

impl DecodeCache {
    /// Drops every decode (and the storage: it is reallocated lazily).
    pub(crate) fn flush(&mut self) {
        self.meta = Default::default();
        self.entries = Vec::new();
    }

    /// Index in `entries` of the decode in slot `idx`, if it holds `tag` (VALID set) decoded
    /// at `rip`.
    #[inline(always)]
    fn lookup(&self, idx: usize, tag: u64, rip: u64) -> Option<usize> {
        let [t, r, e, _] = self.meta[(idx >> 12) & (CACHE_SLOTS / 4096 - 1)].as_deref()?[idx & 0xfff];
        (t == tag && r == rip).then_some(e.wrapping_sub(1) as usize)
    }

    fn insert(&mut self, idx: usize, tag: u64, rip: u64, e: Entry) -> &Entry {
        let chunk =
            self.meta[(idx >> 12) & (CACHE_SLOTS / 4096 - 1)].get_or_insert_with(|| Box::new([[0; 4]; 4096]));
        let m = &mut chunk[idx & 0xfff];
        let k = if m[2] == 0 {
            self.entries.push(e);
            m[2] = self.entries.len() as u64;
            self.entries.len() - 1
        } else {
            let k = (m[2] - 1) as usize;
            self.entries[k] = e;
            k
        };
        m[0] = tag;
        m[1] = rip;
        &self.entries[k]
    }

    fn invalidate_page(&mut self, pfn: u64) {
        let color = (pfn as usize) & (CACHE_SLOTS / 4096 - 1);
        if let Some(chunk) = self.meta[color].as_deref_mut() {
            for m in chunk {
                if m[0] != 0 && (m[0] & !VALID) >> 14 == pfn {
                    m[0] = 0;
                }
            }
        }
    }

    fn sync(&mut self, mem: &dyn GuestMemory, epoch: u64) {
        let mut pages = std::mem::take(&mut self.scratch);
        pages.clear();
        if mem.code_pages_written_since(self.epoch, &mut pages) {
            for &p in &pages {
                self.invalidate_page(p);
            }
        } else {
            self.flush();
        }
        self.scratch = pages;
        self.epoch = epoch;
    }
}

/// One instruction's view of the machine: the CPU plus the memory and platform it runs on.
pub(crate) struct Ctx<'a> {
    pub(crate) cpu: &'a mut Cpu,
    pub(crate) mem: &'a mut dyn GuestMemory,
    pub(crate) plat: &'a mut dyn Platform,
    /// RIP of the instruction being executed.
    pub(crate) start_rip: u64,
    /// Set by REP string instructions that stopped early for a pending interrupt.
    pub(crate) rep_interrupted: bool,
    /// A fault's frame gets RFLAGS as it is, without the RF=1 hardware adds (replay's
    /// [`Cpu::inject_exception`]: RFLAGS is then the recorded frame's image).
    pub(crate) rflags_as_is: bool,
    /// Memory may have been written since the code epoch was last compared (only writes
    /// through this context can bump it while the context holds the memory).
    pub(crate) wrote: bool,
    /// Fetch context kept across plain instructions (`insn::is_plain`) while in 64-bit mode:
    /// the user bit of the fetch TLB key (bit 63: CPL 3), or [`NO_FETCH_CTX`] when it must be
    /// recomputed from CS, EFER and CR0 (no fetch TLB key has bit 62 set, so it never matches).
    fetch_user: u64,
}

/// `Ctx::fetch_user` when there is no fetch context.
const NO_FETCH_CTX: u64 = 1 << 62;

impl<'a> Ctx<'a> {
    fn new(cpu: &'a mut Cpu, mem: &'a mut dyn GuestMemory, plat: &'a mut dyn Platform) -> Self {
        Ctx {
            cpu,
            mem,
            plat,
            start_rip: 0,
            rep_interrupted: false,
            rflags_as_is: false,
            wrote: true,
            fetch_user: NO_FETCH_CTX,
        }
    }
}

impl Cpu {
    /// Executes exactly one instruction, or delivers one pending event (#DB trap, external
    /// interrupt). Exceptions raised by the instruction are delivered through the IDT before
    /// returning.
    pub fn step(
        &mut self,
        mem: &mut dyn GuestMemory,
        plat: &mut dyn Platform,
    ) -> Result<StepEvent, EmuError> {
        let mut cache = std::mem::take(&mut self.cache);
        let mut ctx = Ctx::new(self, mem, plat);
        let r = ctx.step(&mut cache);
        self.cache = cache;
        r
    }

    /// Delivers exception `vector` now, as if the instruction at RIP had raised it (a fault:
    /// the frame returns to RIP), with `error_code` and, for #PF, `cr2`. Replay uses it to make
    /// a recorded user-mode exception without re-executing the instruction, whose memory may
    /// have changed since (another vCPU ran while this one waited for the kernel lock). The
    /// frame's RFLAGS is RFLAGS as it is: the caller sets the image the recorded frame had,
    /// RF included (the CPU that recorded decides RF: QEMU's emulated SVM pushes RF=0 where
    /// krr-emu, following the manuals, pushes RF=1 for a fault).
    pub fn inject_exception(
        &mut self,
        mem: &mut dyn GuestMemory,
        plat: &mut dyn Platform,
        vector: u8,
        error_code: Option<u32>,
        cr2: Option<u64>,
    ) -> Result<(), EmuError> {
        let rip = self.rip;
        let mut ctx = Ctx::new(self, mem, plat);
        ctx.start_rip = rip;
        ctx.rflags_as_is = true;
        ctx.raise(Exception { vector, error_code, cr2 }, EventKind::Fault, rip).map(|_| ())
    }

    /// Steps until `max_instructions` more instructions have retired, `stop(cpu)` returns true
    /// (asked before every step, so at instruction boundaries), or the CPU halts with nothing
    /// pending.
    pub fn run(
        &mut self,
        mem: &mut dyn GuestMemory,
        plat: &mut dyn Platform,
        max_instructions: u64,
        mut stop: impl FnMut(&Cpu) -> bool,
    ) -> Result<RunExit, EmuError> {
        let target = self.icount.saturating_add(max_instructions);
        let mut cache = std::mem::take(&mut self.cache);
        let mut ctx = Ctx::new(self, mem, plat);
        let r = loop {
            if ctx.cpu.icount >= target {
                break Ok(RunExit::Limit);
            }
            if stop(ctx.cpu) {
                break Ok(RunExit::Stopped);
            }
            match ctx.step(&mut cache) {
                Ok(StepEvent::Halted) => break Ok(RunExit::Halted),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.cache = cache;
        r
    }

    /// Turns the decoded-instruction cache on or off (off: every step decodes; for benchmarks
    /// and for cross-checking the cache).
    pub fn set_decode_cache(&mut self, enabled: bool) {
        self.cache.enabled = enabled;
        self.cache.flush();
    }

    /// (hits, misses) of the decode cache.
    pub fn decode_cache_stats(&self) -> (u64, u64) {
        (self.cache.hits, self.cache.misses)
    }

    /// Number of valid TLB entries (for tests and diagnostics).
    pub fn tlb_entries(&self) -> usize {
        self.tlb.len()
    }

    /// True if an external interrupt would be accepted at the next boundary.
    pub fn interrupt_window_open(&self) -> bool {
        self.rflags & flags::IF != 0 && !self.interrupt_shadow
    }

    /// Decoder bitness for the current mode.
    pub(crate) fn bitness(&self) -> u32 {
        match self.mode() {
            Mode::Long64 => 64,
            Mode::Protected32 => 32,
            Mode::Real | Mode::Protected16 => 16,
        }
    }
}

impl Ctx<'_> {
    #[inline(always)]
    pub(crate) fn step(&mut self, cache: &mut DecodeCache) -> Result<StepEvent, EmuError> {
        // Nothing pending, IF, TF and RF clear: a plain instruction needs none of the event,
        // single-step and resume-flag work of `step_full`.
        if (self.cpu.pending_db | self.cpu.nmi_pending | self.cpu.halted | self.cpu.interrupt_shadow)
            || self.cpu.rflags & (flags::IF | flags::TF | flags::RF) != 0
        {
            return self.step_full(cache);
        }
        self.sync_code(cache);
        self.start_rip = self.cpu.rip;
        let e = match self.fetch(cache) {
            Ok(e) => e,
            Err(f) => return self.fault(f),
        };
        self.cpu.rip = e.d.next;
        let plain = e.plain;
        if !plain {
            self.fetch_user = NO_FETCH_CTX;
            self.rep_interrupted = false;
        }
        match (e.handler)(self, &e.d) {
            Ok(()) => {
                // Only instructions that are not plain can interrupt a REP or set RF.
                if !plain {
                    if self.rep_interrupted {
                        return Ok(StepEvent::Interrupted);
                    }
                    if self.cpu.rflags & flags::RF != 0 {
                        self.cpu.rflags &= !flags::RF;
                    }
                }
                self.cpu.icount += 1;
                Ok(StepEvent::Retired)
            }
            Err(f) => self.fault(f),
        }
    }

    /// After a guest write, drop the decodes of code pages written since the cache last looked.
    #[inline(always)]
    fn sync_code(&mut self, cache: &mut DecodeCache) {
        if self.wrote {
            self.wrote = false;
            let epoch = self.mem.code_epoch();
            if epoch != cache.epoch {
                cache.sync(&*self.mem, epoch);
            }
        }
    }

    /// `step` with pending events, IF, TF or RF to look after.
    #[inline(always)]
    fn step_full(&mut self, cache: &mut DecodeCache) -> Result<StepEvent, EmuError> {
        self.sync_code(cache);
        self.start_rip = self.cpu.rip;
        // Non-short-circuit `|` so the four adjacent flags are tested with one load.
        if (self.cpu.pending_db | self.cpu.nmi_pending | self.cpu.halted | self.cpu.interrupt_shadow)
            || self.cpu.rflags & flags::IF != 0
        {
            if let Some(ev) = self.events()? {
                self.fetch_user = NO_FETCH_CTX;
                return Ok(ev);
            }
        }
        let tf = self.cpu.rflags & flags::TF != 0;
        let e = match self.fetch(cache) {
            Ok(e) => e,
            Err(f) => return self.fault(f),
        };
        self.cpu.rip = e.d.next;
        self.rep_interrupted = false;
        if !e.plain {
            self.fetch_user = NO_FETCH_CTX;
        }
        match (e.handler)(self, &e.d) {
            Ok(()) => {
                if self.rep_interrupted {
                    return Ok(StepEvent::Interrupted);
                }
                self.cpu.icount += 1;
                // Only store when needed: a byte-wide `and` on RFLAGS would stall the
                // next step's full-width load (failed store forwarding).
                if self.cpu.rflags & flags::RF != 0 {
                    self.cpu.rflags &= !flags::RF;
                }
                if tf {
                    self.cpu.pending_db = true;
                }
                Ok(StepEvent::Retired)
            }
            Err(f) => self.fault(f),
        }
    }

    /// Pending #DB trap, external interrupt, halt: `Some` if the step is used up by it.
    #[inline(never)]
    fn events(&mut self) -> Result<Option<StepEvent>, EmuError> {
        if self.cpu.pending_db {
            self.cpu.pending_db = false;
            self.cpu.dr[6] |= 1 << 14;
            self.raise(Exception::new(vector::DB), EventKind::Trap, self.cpu.rip)?;
            return Ok(Some(StepEvent::Exception { vector: vector::DB }));
        }
        let shadow = std::mem::take(&mut self.cpu.interrupt_shadow);
        if self.cpu.nmi_pending && !self.cpu.nmi_blocked && !shadow {
            self.cpu.nmi_pending = false;
            self.cpu.halted = false;
            self.raise(Exception::new(vector::NMI), EventKind::External, self.cpu.rip)?;
            self.cpu.nmi_blocked = true;
            return Ok(Some(StepEvent::Interrupt { vector: vector::NMI }));
        }
        if !shadow && self.cpu.rflags & flags::IF != 0 && self.plat.interrupt_pending() {
            if let Some(v) = self.plat.acknowledge_interrupt()? {
                self.cpu.halted = false;
                self.raise(Exception::new(v), EventKind::External, self.cpu.rip)?;
                return Ok(Some(StepEvent::Interrupt { vector: v }));
            }
        }
        if self.cpu.halted {
            return Ok(Some(StepEvent::Halted));
        }
        Ok(None)
    }

    #[inline(never)]
    fn fault(&mut self, f: Fault) -> Result<StepEvent, EmuError> {
        self.cpu.rip = self.start_rip;
        self.fetch_user = NO_FETCH_CTX;
        match f {
            Fault::Exc(e) => {
                let v = self.raise(*e, EventKind::Fault, self.start_rip)?;
                Ok(StepEvent::Exception { vector: v })
            }
            Fault::Err(e) => Err(*e),
        }
    }

    /// Fetches the instruction at CS:RIP from the decode cache, decoding on a miss.
    #[inline(always)]
    fn fetch<'c>(&mut self, cache: &'c mut DecodeCache) -> ExResult<&'c Entry> {
        // In 64-bit mode with the CPL of the last fetch, only the page may have changed.
        let rip = self.cpu.rip;
        if self.cpu.tlb.fetch.0 == (rip >> 12) | self.fetch_user {
            let phys = self.cpu.tlb.fetch.1 | (rip & 0xfff);
            let tag = VALID | (phys << 2) | Mode::Long64 as u64;
            let idx = (phys as usize) & (CACHE_SLOTS - 1);
            if let Some(k) = cache.lookup(idx, tag, rip) {
                cache.hits += 1;
                return Ok(&cache.entries[k]);
            }
        }
        self.fetch_slow(cache)
    }

    /// `fetch` computing the fetch context from CS, EFER and CR0.
    #[inline(always)]
    fn fetch_slow<'c>(&mut self, cache: &'c mut DecodeCache) -> ExResult<&'c Entry> {
        let long = self.cpu.efer & crate::cpu::cr::EFER_LMA != 0 && self.cpu.seg[SegReg::Cs as usize].l;
        let rip = self.cpu.rip;
        let lin =
            if long { rip } else { self.cpu.seg[SegReg::Cs as usize].base.wrapping_add(rip) & 0xffff_ffff };
        // CS.dpl is the CPL in every mode krr-emu runs (0 in real mode; VM86 is unsupported).
        let user = self.cpu.seg[SegReg::Cs as usize].dpl == 3;
        let prv = if user { Priv::User } else { Priv::Sup };
        let key = (lin >> 12) | (u64::from(user) << 63);
        let phys = if self.cpu.tlb.fetch.0 == key {
            self.cpu.tlb.fetch.1 | (lin & 0xfff)
        } else {
            let p = self.translate(lin, Access::Exec, prv)?;
            self.cpu.tlb.fetch = (key, p & !0xfff);
            p
        };
        let mode = if long { Mode::Long64 } else { self.cpu.mode() };
        if long {
            self.fetch_user = u64::from(user) << 63;
        }
        let tag = VALID | (phys << 2) | mode as u64;
        let idx = (phys as usize) & (CACHE_SLOTS - 1);
        if let Some(k) = cache.lookup(idx, tag, rip) {
            cache.hits += 1;
            return Ok(&cache.entries[k]);
        }
        self.decode_slow(cache, lin, phys, tag, idx, prv)
    }

    #[inline(never)]
    fn decode_slow<'c>(
        &mut self,
        cache: &'c mut DecodeCache,
        lin: u64,
        phys: u64,
        tag: u64,
        idx: usize,
        prv: Priv,
    ) -> ExResult<&'c Entry> {
        let rip = self.cpu.rip;
        cache.misses += 1;
        let bitness = self.cpu.bitness();
        let mut bytes = [0u8; 15];
        let first = (4096 - (lin & 0xfff) as usize).min(15);
        self.phys_read(phys, &mut bytes[..first])?;
        let mut instr = Instruction::default();
        let mut dec = Decoder::with_ip(bitness, &bytes[..first], rip, DecoderOptions::NONE);
        dec.decode_out(&mut instr);
        let mut cacheable = self.mem.read(phys, &mut [0u8; 1]);
        if instr.is_invalid() && dec.last_error() == DecoderError::NoMoreBytes && first < 15 {
            // The instruction continues on the next page; only fetch it if it is needed.
            let p2 = self.translate(lin.wrapping_add(first as u64), Access::Exec, prv)?;
            self.phys_read(p2, &mut bytes[first..])?;
            let mut dec = Decoder::with_ip(bitness, &bytes, rip, DecoderOptions::NONE);
            dec.decode_out(&mut instr);
            cacheable = false;
        }
        if instr.is_invalid() {
            return Err(Exception::ud().into());
        }
        let d = Decoded::new(instr);
        let handler = match insn::handler_for(instr.code()) {
            Some(h) => insn::specialize(&d, h),
            None => insn::unimplemented_handler,
        };
        let e = Entry { d, handler, plain: insn::is_plain(&d) };
        if cacheable && cache.enabled {
            self.mem.mark_code_page(phys >> 12);
            return Ok(cache.insert(idx, tag, rip, e));
        }
        Ok(cache.local.insert(e))
    }

    /// The bytes of the current instruction (for error reports).
    pub(crate) fn instr_bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mode = self.cpu.mode();
        for i in 0..len as u64 {
            let rip = self.start_rip.wrapping_add(i);
            let lin = if mode == Mode::Long64 {
                rip
            } else {
                self.cpu.seg[SegReg::Cs as usize].base.wrapping_add(rip) & 0xffff_ffff
            };
            let mut b = [0u8];
            if let Ok(p) = self.translate(lin, Access::Exec, Priv::Sup) {
                if self.mem.read(p, &mut b) {
                    out.push(b[0]);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::FlatMemory;
    use crate::platform::SimplePlatform;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    fn looping() -> (Cpu, FlatMemory) {
        prepare(|a| {
            let mut top = a.create_label();
            a.set_label(&mut top)?;
            a.inc(rax)?;
            a.add(rbx, 2)?;
            a.jmp(top)?;
            Ok(())
        })
    }

    #[test]
    fn run_counts_exactly_and_stops_at_boundaries() {
        let (mut cpu, mut mem) = looping();
        let mut p = SimplePlatform::new();
        assert_eq!(cpu.run(&mut mem, &mut p, 1000, |_| false).unwrap(), RunExit::Limit);
        assert_eq!(cpu.icount, 1000);
        // 1000 = 333 full iterations + inc: rax = 334, rbx = 666.
        assert_eq!((cpu.gpr[0], cpu.gpr[3]), (334, 666));
        let r = cpu.run(&mut mem, &mut p, 1_000_000, |c| c.gpr[3] == 1000).unwrap();
        assert_eq!(r, RunExit::Stopped);
        assert_eq!(cpu.gpr[3], 1000);
        assert_eq!(cpu.rip, CODE + 7, "stopped right after the add");
    }

    #[test]
    fn clone_and_snapshot_replay_identically() {
        let (mut cpu, mut mem) = looping();
        let mut p = SimplePlatform::new();
        cpu.run(&mut mem, &mut p, 500, |_| false).unwrap();
        let snap_cpu = cpu.clone();
        let snap_mem = mem.snapshot();
        cpu.run(&mut mem, &mut p, 777, |_| false).unwrap();
        let (a_rax, a_rip) = (cpu.gpr[0], cpu.rip);
        let mut cpu2 = snap_cpu;
        let mut mem2 = mem.clone();
        mem2.restore(&snap_mem);
        cpu2.run(&mut mem2, &mut p, 777, |_| false).unwrap();
        assert_eq!((cpu2.gpr[0], cpu2.rip, cpu2.icount), (a_rax, a_rip, cpu.icount));
    }

    #[test]
    fn self_modifying_code_is_seen() {
        // The loop body's `mov eax, imm32` is rewritten by the loop itself.
        let (mut cpu, mut mem) = prepare(|a| {
            let mut body = a.create_label();
            a.mov(ecx, 3)?;
            a.set_label(&mut body)?;
            a.mov(eax, 1)?; // b8 01 00 00 00: the immediate is at body+1
            a.add(ebx, eax)?;
            a.lea(rdi, ptr(body))?;
            a.inc(dword_ptr(rdi + 1))?;
            a.dec(ecx)?;
            a.jnz(body)?;
            Ok(())
        });
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[3], 1 + 2 + 3, "each pass sees the patched immediate");
        let (_, misses) = cpu.decode_cache_stats();
        assert!(misses >= 3 * 6, "every pass re-decodes the written page ({misses} misses)");
    }

    #[test]
    fn unimplemented_instruction_is_a_precise_error() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.nop()?;
            a.xgetbv()?;
            Ok(())
        });
        let r = cpu.run(&mut mem, &mut SimplePlatform::new(), 10, |_| false);
        match r {
            Err(EmuError::Unimplemented { rip, bytes, mnemonic }) => {
                assert_eq!(rip, CODE + 1);
                assert_eq!(bytes, vec![0x0f, 0x01, 0xd0]);
                assert_eq!(mnemonic, "xgetbv");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cpu.rip, CODE + 1, "RIP stays on the instruction");
        assert_eq!(cpu.icount, 1);
    }

    #[test]
    fn invalid_opcode_is_ud_and_cache_off_matches() {
        for cache in [true, false] {
            let (mut cpu, mut mem) = prepare(|a| a.db(&[0x06])); // push es: invalid in 64-bit
            cpu.set_decode_cache(cache);
            run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
            assert_eq!(cpu.gpr[15], 6);
        }
    }
}
