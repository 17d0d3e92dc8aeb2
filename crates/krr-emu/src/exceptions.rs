//! Exception and interrupt delivery: IDT gates (64-bit long mode and real-mode IVT), stack
//! switch through the TSS (RSP0-2, IST), error codes, and the #DF/triple-fault rules.

use crate::cpu::{flags, Mode, SegReg, Segment};
use crate::error::{vector, EmuError, ExResult, Exception, Fault};
use crate::exec::Ctx;
use crate::paging::{is_canonical, Access, Priv};

/// Where an event comes from; decides the EXT bit, gate DPL checks, and the return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// Fault raised by an instruction (return to the instruction).
    Fault,
    /// Trap after an instruction (#DB single step).
    Trap,
    /// External interrupt.
    External,
    /// INT n: gate DPL is checked against CPL.
    SoftwareInt,
    /// INT3 / INTO: like INT n for DPL checks, vector is an exception.
    SoftwareException,
    /// ICEBP (INT1): no DPL check.
    Int1,
}

fn class(v: u8) -> u8 {
    match v {
        vector::DE | vector::TS | vector::NP | vector::SS | vector::GP => 1, // contributory
        vector::PF => 2,
        vector::DF => 3,
        _ => 0, // benign
    }
}

impl Ctx<'_> {
    /// Delivers an event; exceptions during delivery escalate to #DF and then to a triple
    /// fault. Returns the vector actually delivered.
    pub(crate) fn raise(&mut self, e: Exception, kind: EventKind, ret_rip: u64) -> Result<u8, EmuError> {
        let mut cur = e;
        let mut kind = kind;
        let mut ret = ret_rip;
        loop {
            if let Some(a) = cur.cr2 {
                self.cpu.cr2 = a;
            }
            match self.deliver(cur, kind, ret) {
                Ok(()) => {
                    self.cpu.halted = false;
                    return Ok(cur.vector);
                }
                Err(Fault::Err(e)) => return Err(*e),
                Err(Fault::Exc(next)) => {
                    let next = *next;
                    let (c1, c2) = (class(cur.vector), class(next.vector));
                    if kind != EventKind::SoftwareInt && c1 == 3 {
                        return Err(EmuError::TripleFault { rip: self.start_rip, vector: next.vector });
                    }
                    let df = kind != EventKind::SoftwareInt
                        && kind != EventKind::SoftwareException
                        && ((c1 == 1 && c2 == 1) || (c1 == 2 && (c2 == 1 || c2 == 2)));
                    if df {
                        cur = Exception::with_code(vector::DF, 0);
                    } else {
                        cur = next;
                    }
                    kind = EventKind::Fault;
                    ret = self.start_rip;
                }
            }
        }
    }

    /// EXT bit of error codes produced while delivering this event.
    fn ext(kind: EventKind) -> u32 {
        match kind {
            EventKind::SoftwareInt | EventKind::SoftwareException => 0,
            _ => 1,
        }
    }

    pub(crate) fn deliver(&mut self, e: Exception, kind: EventKind, ret_rip: u64) -> ExResult {
        match self.cpu.mode() {
            Mode::Long64 => self.deliver_long(e, kind, ret_rip),
            Mode::Real => self.deliver_real(e, ret_rip),
            _ if self.cpu.efer & crate::cpu::cr::EFER_LMA != 0 => self.deliver_long(e, kind, ret_rip),
            _ => self.deliver_protected(e, kind, ret_rip),
        }
    }

    /// Legacy protected mode: 8-byte 32-bit interrupt/trap gates, stack switch through a
    /// 32-bit TSS on a privilege change. Task gates, 16-bit gates and VM86 are not modelled.
    fn deliver_protected(&mut self, e: Exception, kind: EventKind, ret_rip: u64) -> ExResult {
        let rip = self.start_rip;
        let unsupported = move |what| -> crate::error::Fault { EmuError::Unsupported { rip, what }.into() };
        if self.cpu.rflags & flags::VM != 0 {
            return Err(unsupported("interrupt delivery in virtual-8086 mode"));
        }
        let ext = Self::ext(kind);
        let v = u64::from(e.vector);
        let idt_err = u32::from(e.vector) * 8 + 2 + ext;
        if v * 8 + 7 > u64::from(self.cpu.idtr.limit) {
            return Err(Exception::gp(idt_err).into());
        }
        let gate = self.sys_read_u64(self.cpu.idtr.base.wrapping_add(v * 8))?;
        let typ = (gate >> 40) & 0xf;
        let gate_dpl = ((gate >> 45) & 3) as u8;
        match typ {
            0xe | 0xf => {}
            0x5..=0x7 => return Err(unsupported("task or 16-bit interrupt gate")),
            _ => return Err(Exception::gp(idt_err).into()),
        }
        let cpl = self.cpu.cpl();
        if matches!(kind, EventKind::SoftwareInt | EventKind::SoftwareException) && gate_dpl < cpl {
            return Err(Exception::gp(idt_err).into());
        }
        if gate & (1 << 47) == 0 {
            return Err(Exception::np(idt_err).into());
        }
        let target = (gate & 0xffff) | ((gate >> 32) & 0xffff_0000);
        let cs_sel = ((gate >> 16) & 0xffff) as u16;
        if cs_sel & 0xfffc == 0 {
            return Err(Exception::gp(ext).into());
        }
        let cs = Segment::from_descriptor(cs_sel, self.read_descriptor(cs_sel, ext)?);
        if !cs.is_code() || cs.dpl > cpl {
            return Err(Exception::gp(u32::from(cs_sel & 0xfffc) | ext).into());
        }
        if !cs.present {
            return Err(Exception::np(u32::from(cs_sel & 0xfffc) | ext).into());
        }
        let new_cpl = cs.dpl;
        let old_ss = self.cpu.seg[SegReg::Ss as usize];
        let old_esp = self.cpu.gpr[4];
        let mut frame: Vec<u32> = Vec::with_capacity(6);
        let (new_ss, mut esp) = if new_cpl < cpl {
            let off = 4 + u64::from(new_cpl) * 8;
            if off + 5 > u64::from(self.cpu.tr.limit) {
                return Err(
                    Exception::with_code(vector::TS, u32::from(self.cpu.tr.selector & 0xfffc) | ext).into()
                );
            }
            let ent = self.sys_read_u64(self.cpu.tr.base.wrapping_add(off))?;
            let ss_sel = ((ent >> 32) & 0xffff) as u16;
            let ss = Segment::from_descriptor(ss_sel, self.read_descriptor(ss_sel, ext)?);
            if ss_sel & 0xfffc == 0
                || (ss_sel & 3) as u8 != new_cpl
                || ss.dpl != new_cpl
                || !ss.s
                || ss.typ & 0xa != 2
            {
                return Err(Exception::with_code(vector::TS, u32::from(ss_sel & 0xfffc) | ext).into());
            }
            frame.push(u32::from(old_ss.selector));
            frame.push(old_esp as u32);
            (ss, ent & 0xffff_ffff)
        } else {
            (old_ss, old_esp)
        };
        let rf = kind == EventKind::Fault && !self.rflags_as_is;
        frame.push(self.cpu.rflags as u32 | if rf { flags::RF as u32 } else { 0 });
        frame.push(u32::from(self.cpu.seg[SegReg::Cs as usize].selector));
        frame.push(ret_rip as u32);
        if let Some(code) = e.error_code {
            frame.push(code);
        }
        let mask = if new_ss.db { 0xffff_ffff } else { 0xffff };
        let prv = if new_cpl == 3 { Priv::User } else { Priv::SupImplicit };
        let mut writes = Vec::with_capacity(frame.len());
        for x in &frame {
            esp = esp.wrapping_sub(4) & mask;
            let lin = new_ss.base.wrapping_add(esp) & 0xffff_ffff;
            self.translate(lin, Access::Write, prv)?;
            writes.push((lin, *x));
        }
        for (lin, x) in writes {
            self.lin_write(lin, &x.to_le_bytes(), prv)?;
        }
        self.cpu.seg[SegReg::Ss as usize] = new_ss;
        self.cpu.gpr[4] = if new_ss.db { esp } else { (old_esp & !0xffff) | esp };
        self.cpu.seg[SegReg::Cs as usize] =
            Segment { selector: (cs_sel & 0xfffc) | u16::from(new_cpl), dpl: new_cpl, ..cs };
        self.cpu.rip = target;
        self.cpu.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if typ == 0xe {
            self.cpu.rflags &= !flags::IF;
        }
        Ok(())
    }

    fn deliver_real(&mut self, e: Exception, ret_rip: u64) -> ExResult {
        let v = u64::from(e.vector);
        if v * 4 + 3 > u64::from(self.cpu.idtr.limit) {
            return Err(Exception::gp(0).into());
        }
        let ent = self.sys_read_u64(self.cpu.idtr.base + v * 4)?;
        let sp = self.cpu.gpr[4];
        let frame = [ret_rip as u16, self.cpu.seg[SegReg::Cs as usize].selector, self.cpu.rflags as u16];
        let mut nsp = sp as u16;
        for w in frame.iter().rev() {
            nsp = nsp.wrapping_sub(2);
            self.write_mem(SegReg::Ss, u64::from(nsp), 2, u64::from(*w))?;
        }
        self.cpu.gpr[4] = (sp & !0xffff) | u64::from(nsp);
        self.cpu.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
        self.cpu.seg[SegReg::Cs as usize] = Segment::real((ent >> 16) as u16, 0xb);
        self.cpu.rip = ent & 0xffff;
        Ok(())
    }

    fn deliver_long(&mut self, e: Exception, kind: EventKind, ret_rip: u64) -> ExResult {
        let ext = Self::ext(kind);
        let v = u64::from(e.vector);
        let idt_err = (e.vector as u32) * 8 + 2 + ext;
        if v * 16 + 15 > u64::from(self.cpu.idtr.limit) {
            return Err(Exception::gp(idt_err).into());
        }
        let gate_lo = self.sys_read_u64(self.cpu.idtr.base.wrapping_add(v * 16))?;
        let gate_hi = self.sys_read_u64(self.cpu.idtr.base.wrapping_add(v * 16 + 8))?;
        let typ = (gate_lo >> 40) & 0xf;
        let gate_dpl = ((gate_lo >> 45) & 3) as u8;
        let present = gate_lo & (1 << 47) != 0;
        if typ != 0xe && typ != 0xf {
            return Err(Exception::gp(idt_err).into());
        }
        let cpl = self.cpu.cpl();
        if matches!(kind, EventKind::SoftwareInt | EventKind::SoftwareException) && gate_dpl < cpl {
            return Err(Exception::gp(idt_err).into());
        }
        if !present {
            return Err(Exception::np(idt_err).into());
        }
        let target = (gate_lo & 0xffff) | ((gate_lo >> 32) & 0xffff_0000) | (gate_hi << 32);
        let cs_sel = ((gate_lo >> 16) & 0xffff) as u16;
        let ist = (gate_lo >> 32) & 7;
        if cs_sel & 0xfffc == 0 {
            return Err(Exception::gp(ext).into());
        }
        let desc = self.read_descriptor(cs_sel, ext)?;
        let cs = Segment::from_descriptor(cs_sel, desc);
        if !cs.is_code() || !cs.l || cs.db || cs.dpl > cpl {
            return Err(Exception::gp(u32::from(cs_sel & 0xfffc) | ext).into());
        }
        if !cs.present {
            return Err(Exception::np(u32::from(cs_sel & 0xfffc) | ext).into());
        }
        // Conforming segments keep CPL; Linux uses none, treat as non-conforming.
        let new_cpl = cs.dpl;
        let old_ss = self.cpu.seg[SegReg::Ss as usize];
        let old_rsp = self.cpu.gpr[4];
        let mut new_rsp = old_rsp;
        let priv_change = new_cpl < cpl;
        if priv_change || ist != 0 {
            let tss_off = if ist != 0 { 0x24 + (ist - 1) * 8 } else { 4 + u64::from(new_cpl) * 8 };
            if tss_off + 7 > u64::from(self.cpu.tr.limit) {
                return Err(
                    Exception::with_code(vector::TS, u32::from(self.cpu.tr.selector & 0xfffc) | ext).into()
                );
            }
            new_rsp = self.sys_read_u64(self.cpu.tr.base.wrapping_add(tss_off))?;
        }
        if !is_canonical(new_rsp) {
            return Err(Exception::ss(ext).into());
        }
        new_rsp &= !0xf;
        let mut frame: [u64; 6] = [0; 6];
        let mut n = 0;
        let mut push = |x: u64| {
            frame[n] = x;
            n += 1;
        };
        if let Some(code) = e.error_code {
            push(u64::from(code));
        }
        push(ret_rip);
        push(u64::from(self.cpu.seg[SegReg::Cs as usize].selector));
        // Faults push RF=1 so IRET does not re-trigger an instruction breakpoint (SDM 17.3.1.1).
        let rf = kind == EventKind::Fault && !self.rflags_as_is;
        let saved_flags = if rf { self.cpu.rflags | flags::RF } else { self.cpu.rflags };
        push(saved_flags);
        push(old_rsp);
        push(u64::from(old_ss.selector));
        let bytes_len = n * 8;
        let base = new_rsp.wrapping_sub(bytes_len as u64);
        let prv = if new_cpl == 3 { Priv::User } else { Priv::SupImplicit };
        // Check every page of the frame before writing any of it.
        self.translate(base, Access::Write, prv)?;
        self.translate(new_rsp.wrapping_sub(1), Access::Write, prv)?;
        let mut buf = [0u8; 48];
        for (i, x) in frame[..n].iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        self.lin_write(base, &buf[..bytes_len], prv)?;
        // Commit.
        if priv_change {
            self.cpu.seg[SegReg::Ss as usize] = Segment {
                selector: u16::from(new_cpl),
                dpl: new_cpl,
                unusable: true,
                ..Segment::data32(u16::from(new_cpl), new_cpl)
            };
        }
        self.cpu.gpr[4] = base;
        self.cpu.seg[SegReg::Cs as usize] =
            Segment { selector: (cs_sel & 0xfffc) | u16::from(new_cpl), ..cs };
        self.cpu.rip = target;
        self.cpu.rflags &= !(flags::TF | flags::NT | flags::RF | flags::VM);
        if typ == 0xe {
            self.cpu.rflags &= !flags::IF;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::{flags, SegReg};
    use crate::error::EmuError;
    use crate::exec::StepEvent;
    use crate::testutil::*;
    use crate::SimplePlatform;
    use iced_x86::code_asm::*;

    #[test]
    fn external_interrupt_after_sti_shadow() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.sti()?;
            a.mov(eax, 1)?; // runs in the STI shadow
            a.mov(ebx, 2)?; // interrupt arrives before this
            Ok(())
        });
        let mut p = SimplePlatform::new();
        p.pending_irqs.push_back(0x30);
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Retired); // sti
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Retired); // mov eax
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Interrupt { vector: 0x30 });
        assert_eq!(cpu.gpr[0], 1);
        assert_eq!(cpu.gpr[3], 0);
        // Frame: RIP, CS, RFLAGS, RSP, SS.
        let frame = cpu.gpr[4];
        assert_eq!(frame, STACK_TOP - 40);
        assert_eq!(read_u64(&mem, frame), CODE + 1 + 5);
        assert_eq!(read_u64(&mem, frame + 8), 0x10);
        assert_ne!(read_u64(&mem, frame + 16) & flags::IF, 0);
        assert_eq!(read_u64(&mem, frame + 24), STACK_TOP);
        assert_eq!(cpu.rflags & flags::IF, 0, "interrupt gate clears IF");
        assert_eq!(cpu.icount, 2);
    }

    #[test]
    fn ist_stack_is_used() {
        let (mut cpu, mut mem) = prepare(|a| a.int(0x31));
        let h = HANDLERS + 0x31 * 16;
        set_gate(&mut mem, 0x31, h, 3, 1, 0xe);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 0x31);
        assert_eq!(cpu.gpr[4], IST1 - 40);
        assert_eq!(read_u64(&mem, IST1 - 40), CODE + 2, "INT n returns after itself");
    }

    #[test]
    fn privilege_change_uses_rsp0_and_null_ss() {
        let (mut cpu, mut mem) = prepare(|a| a.int(0x80));
        make_user(&mut cpu);
        cpu.gpr[4] = 0x5_0000;
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 0x80);
        assert_eq!(cpu.cpl(), 0);
        assert_eq!(cpu.gpr[4], RSP0 - 40);
        assert_eq!(cpu.seg[SegReg::Ss as usize].selector, 0);
        assert_eq!(read_u64(&mem, RSP0 - 32), u64::from(USER_CS));
        assert_eq!(read_u64(&mem, RSP0 - 16), 0x5_0000);
        assert_eq!(read_u64(&mem, RSP0 - 8), u64::from(USER_DS));
    }

    #[test]
    fn int_n_to_dpl0_gate_from_user_is_gp() {
        let (mut cpu, mut mem) = prepare(|a| a.int(0x81));
        set_gate(&mut mem, 0x81, HANDLERS + 0x81 * 16, 0, 0, 0xe);
        make_user(&mut cpu);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 13);
        assert_eq!(read_u64(&mem, cpu.gpr[4]), 0x81 * 8 + 2, "error code names the IDT entry");
        assert_eq!(read_u64(&mem, cpu.gpr[4] + 8), CODE, "fault returns to the INT");
        assert_ne!(read_u64(&mem, cpu.gpr[4] + 24) & flags::RF, 0, "faults push RF=1");
    }

    /// Replay injects a recorded user-mode fault with the recorded frame's RFLAGS image: RF as
    /// the recording CPU pushed it (QEMU's emulated SVM pushes RF=0), not RF=1 added.
    #[test]
    fn an_injected_fault_pushes_rflags_as_it_is() {
        for rf in [0, flags::RF] {
            let (mut cpu, mut mem) = prepare(|a| a.nop());
            make_user(&mut cpu);
            cpu.gpr[4] = 0x5_0000;
            cpu.rflags = flags::FIXED | flags::IF | flags::PF | rf;
            cpu.inject_exception(&mut mem, &mut SimplePlatform::new(), 14, Some(4), Some(0x1234)).unwrap();
            assert_eq!(cpu.cpl(), 0);
            assert_eq!(cpu.cr2, 0x1234);
            // Error code, RIP, CS, RFLAGS, RSP, SS.
            assert_eq!(read_u64(&mem, cpu.gpr[4]), 4);
            assert_eq!(read_u64(&mem, cpu.gpr[4] + 24), flags::FIXED | flags::IF | flags::PF | rf);
        }
    }

    #[test]
    fn page_fault_with_missing_handler_is_double_fault() {
        let (mut cpu, mut mem) = prepare(|a| a.mov(rax, qword_ptr(0x4000_0000u64)));
        // Vector 14 gate not present.
        write_u64(&mut mem, IDT + 14 * 16, 0);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 8);
        assert_eq!(read_u64(&mem, cpu.gpr[4]), 0, "#DF error code is 0");
        assert_eq!(cpu.cr2, 0x4000_0000);
    }

    #[test]
    fn fault_during_double_fault_is_triple_fault() {
        let (mut cpu, mut mem) = prepare(|a| a.mov(rax, qword_ptr(0x4000_0000u64)));
        write_u64(&mut mem, IDT + 14 * 16, 0);
        write_u64(&mut mem, IDT + 8 * 16, 0);
        let r = cpu.run(&mut mem, &mut SimplePlatform::new(), 100, |_| false);
        assert!(matches!(r, Err(EmuError::TripleFault { .. })), "{r:?}");
    }

    #[test]
    fn benign_fault_during_delivery_is_delivered_instead() {
        // #UD with a not-present #UD gate: #NP is delivered (benign + contributory).
        let (mut cpu, mut mem) = prepare(|a| a.ud2());
        let g = read_u64(&mem, IDT + 6 * 16);
        write_u64(&mut mem, IDT + 6 * 16, g & !(1 << 47));
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 11);
        assert_eq!(read_u64(&mem, cpu.gpr[4]), 6 * 8 + 2 + 1, "EXT bit set for a hardware event");
    }

    #[test]
    fn zeroed_gate_is_gp() {
        let (mut cpu, mut mem) = prepare(|a| a.ud2());
        write_u64(&mut mem, IDT + 6 * 16, 0);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 13);
        assert_eq!(read_u64(&mem, cpu.gpr[4]), 6 * 8 + 2 + 1);
    }

    #[test]
    fn nmi_ignores_if_and_blocks_until_iret() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.nop()?;
            a.nop()?;
            Ok(())
        });
        let mut p = SimplePlatform::new();
        assert_eq!(cpu.rflags & flags::IF, 0);
        cpu.inject_nmi();
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Interrupt { vector: 2 });
        assert!(cpu.nmi_blocked);
        cpu.inject_nmi();
        // Blocked: the handler (mov r15, 2; hlt) runs instead.
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Retired);
        assert_eq!(cpu.gpr[15], 2);
        assert!(cpu.nmi_pending);
    }

    #[test]
    fn single_step_trap() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.pushfq()?;
            a.or(qword_ptr(rsp), 0x100)?;
            a.popfq()?; // TF=1 from here; the trap comes after the next instruction
            a.mov(eax, 5)?;
            a.mov(ebx, 6)?;
            Ok(())
        });
        let mut p = SimplePlatform::new();
        for _ in 0..4 {
            assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Retired);
        }
        assert_eq!(cpu.step(&mut mem, &mut p).unwrap(), StepEvent::Exception { vector: 1 });
        assert_eq!(cpu.gpr[0], 5);
        assert_eq!(cpu.gpr[3], 0);
        assert_ne!(cpu.dr[6] & (1 << 14), 0);
    }
}
