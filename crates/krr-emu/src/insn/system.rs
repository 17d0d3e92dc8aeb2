//! System instructions: segment and control/debug register moves, descriptor tables, MSRs,
//! SYSCALL/SYSRET/SWAPGS/IRET, software interrupts, port I/O, CLI/STI/HLT, TLB and cache
//! maintenance, CPUID/RDTSC/RDRAND. Privileged ones raise #GP(0) at CPL>0.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{gpr_info, mask, seg_of, Decoded, Handler};
use crate::cpu::{cr, flags, Mode, SegReg, Segment};
use crate::error::{vector, EmuError, ExResult, Exception};
use crate::exceptions::EventKind;
use crate::exec::Ctx;
use crate::modes::load_segment;
use crate::paging::{is_canonical, Access, Priv};

fn require_cpl0(ctx: &Ctx<'_>) -> ExResult {
    if ctx.cpu.cpl() != 0 {
        return Err(Exception::gp(0).into());
    }
    Ok(())
}

pub(crate) fn mov_to_sreg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let sel = ctx.read_op(i, 1)? as u16;
    let s = seg_of(i.op_register(0));
    load_segment(ctx, s, sel)?;
    if s == SegReg::Ss {
        ctx.cpu.interrupt_shadow = true;
    }
    Ok(())
}

pub(crate) fn mov_from_sreg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let sel = u64::from(ctx.cpu.seg[seg_of(i.op_register(1)) as usize].selector);
    if i.op_kind(0) == OpKind::Register {
        let r = i.op_register(0);
        // 32/64-bit register destinations are zero-extended.
        ctx.set_reg(r, sel);
        Ok(())
    } else {
        let ea = ctx.ea(i);
        let seg = ctx.mseg(i);
        ctx.write_mem(seg, ea, 2, sel)
    }
}

fn cr_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::CR0 as usize)
}

pub(crate) fn mov_from_cr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let v = match cr_index(i.op_register(1)) {
        0 => ctx.cpu.cr0,
        2 => ctx.cpu.cr2,
        3 => ctx.cpu.cr3,
        4 => ctx.cpu.cr4,
        8 => ctx.cpu.cr8 & 0xf,
        _ => return Err(Exception::ud().into()),
    };
    ctx.set_reg(i.op_register(0), v);
    Ok(())
}

/// CR4 bits this CPU lets the guest set.
const CR4_ALLOWED: u64 = 0x1
    | 0x2
    | 0x4
    | 0x8
    | cr::CR4_PSE
    | cr::CR4_PAE
    | 0x40
    | cr::CR4_PGE
    | 0x100
    | cr::CR4_OSFXSR
    | cr::CR4_OSXMMEXCPT
    | cr::CR4_UMIP
    | cr::CR4_FSGSBASE
    | cr::CR4_SMEP
    | cr::CR4_SMAP;

pub(crate) fn mov_to_cr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let v = ctx.reg(i.op_register(1));
    let lma = ctx.cpu.efer & cr::EFER_LMA != 0;
    match cr_index(i.op_register(0)) {
        0 => {
            let v = v | cr::CR0_ET;
            if v >> 32 != 0
                || (v & cr::CR0_PG != 0 && v & cr::CR0_PE == 0)
                || (v & cr::CR0_NW != 0 && v & cr::CR0_CD == 0)
            {
                return Err(Exception::gp(0).into());
            }
            let old = ctx.cpu.cr0;
            let pg_on = v & cr::CR0_PG != 0 && old & cr::CR0_PG == 0;
            let pg_off = v & cr::CR0_PG == 0 && old & cr::CR0_PG != 0;
            if pg_off && ctx.long64() {
                return Err(Exception::gp(0).into());
            }
            if pg_on && ctx.cpu.efer & cr::EFER_LME != 0 {
                if ctx.cpu.cr4 & cr::CR4_PAE == 0 {
                    return Err(Exception::gp(0).into());
                }
                ctx.cpu.efer |= cr::EFER_LMA;
            }
            if pg_off {
                ctx.cpu.efer &= !cr::EFER_LMA;
            }
            ctx.cpu.cr0 = v;
            if (old ^ v) & (cr::CR0_PG | cr::CR0_WP | cr::CR0_PE) != 0 {
                ctx.cpu.tlb.flush(true);
            }
        }
        2 => ctx.cpu.cr2 = v,
        3 => {
            if lma && v >> 52 != 0 {
                return Err(Exception::gp(0).into());
            }
            ctx.cpu.cr3 = if lma { v } else { v & 0xffff_ffff };
            ctx.cpu.tlb.flush(false);
        }
        4 => {
            if v & !CR4_ALLOWED != 0 || (lma && v & cr::CR4_PAE == 0) {
                return Err(Exception::gp(0).into());
            }
            let old = ctx.cpu.cr4;
            ctx.cpu.cr4 = v;
            if (old ^ v) & (cr::CR4_PGE | cr::CR4_PAE | cr::CR4_PSE | cr::CR4_SMEP | cr::CR4_SMAP) != 0 {
                ctx.cpu.tlb.flush(true);
            }
        }
        8 => {
            if v >> 4 != 0 {
                return Err(Exception::gp(0).into());
            }
            ctx.cpu.cr8 = v;
        }
        _ => return Err(Exception::ud().into()),
    }
    Ok(())
}

pub(crate) fn mov_from_dr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let n = (i.op_register(1) as usize).wrapping_sub(Register::DR0 as usize);
    let v = match n {
        0..=3 => ctx.cpu.dr[n],
        4 | 6 => ctx.cpu.dr[6],
        5 | 7 => ctx.cpu.dr[7],
        _ => return Err(Exception::ud().into()),
    };
    ctx.set_reg(i.op_register(0), v);
    Ok(())
}

pub(crate) fn mov_to_dr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let n = (i.op_register(0) as usize).wrapping_sub(Register::DR0 as usize);
    let v = ctx.reg(i.op_register(1));
    match n {
        0..=3 => ctx.cpu.dr[n] = v,
        4 | 6 => {
            if v >> 32 != 0 {
                return Err(Exception::gp(0).into());
            }
            ctx.cpu.dr[6] = (v & 0x0001_e00f) | 0xffff_0ff0
        }
        5 | 7 => {
            if v >> 32 != 0 {
                return Err(Exception::gp(0).into());
            }
            // Breakpoints are stored but not armed: krr-emu does not implement DR0-3 matching.
            ctx.cpu.dr[7] = (v & 0xffff_2bff) | 0x400
        }
        _ => return Err(Exception::ud().into()),
    }
    Ok(())
}

/// I/O permission: IOPL, then the TSS I/O bitmap.
pub(crate) fn check_io(ctx: &mut Ctx<'_>, port: u16, size: usize) -> ExResult {
    let mode = ctx.cpu.mode();
    if mode == Mode::Real {
        return Ok(());
    }
    let iopl = ((ctx.cpu.rflags & flags::IOPL) >> 12) as u8;
    if ctx.cpu.cpl() <= iopl && ctx.cpu.rflags & flags::VM == 0 {
        return Ok(());
    }
    let tr = ctx.cpu.tr;
    if tr.limit < 0x67 {
        return Err(Exception::gp(0).into());
    }
    let mut b = [0u8; 2];
    ctx.lin_read(tr.base.wrapping_add(0x66), &mut b, Access::Read, Priv::SupImplicit)?;
    let base = u64::from(u16::from_le_bytes(b));
    let off = base + u64::from(port / 8);
    if off + 1 > u64::from(tr.limit) {
        return Err(Exception::gp(0).into());
    }
    ctx.lin_read(tr.base.wrapping_add(off), &mut b, Access::Read, Priv::SupImplicit)?;
    let bits = u16::from_le_bytes(b) >> (port % 8);
    if bits & ((1 << size) - 1) != 0 {
        return Err(Exception::gp(0).into());
    }
    Ok(())
}

fn io_port(ctx: &Ctx<'_>, i: &Instruction, n: u32) -> u16 {
    match i.op_kind(n) {
        OpKind::Register => (ctx.cpu.gpr[2] & 0xffff) as u16,
        _ => (i.immediate(n) & 0xff) as u16,
    }
}

fn in_(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = gpr_info(i.op_register(0)).1;
    let port = io_port(ctx, i, 1);
    check_io(ctx, port, size)?;
    let v = ctx.plat.io_in(port, size as u8)?;
    ctx.set_reg(i.op_register(0), u64::from(v) & mask(size));
    Ok(())
}

fn out(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = gpr_info(i.op_register(1)).1;
    let port = io_port(ctx, i, 0);
    check_io(ctx, port, size)?;
    let v = ctx.reg(i.op_register(1));
    ctx.plat.io_out(port, size as u8, v as u32)?;
    Ok(())
}

fn cli_sti(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.mode() != Mode::Real {
        let iopl = ((ctx.cpu.rflags & flags::IOPL) >> 12) as u8;
        if ctx.cpu.cpl() > iopl {
            return Err(Exception::gp(0).into());
        }
    }
    if i.mnemonic() == Mnemonic::Cli {
        ctx.cpu.rflags &= !flags::IF;
    } else {
        if ctx.cpu.rflags & flags::IF == 0 {
            ctx.cpu.interrupt_shadow = true;
        }
        ctx.cpu.rflags |= flags::IF;
    }
    Ok(())
}

fn hlt(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    ctx.plat.hlt()?;
    ctx.cpu.halted = true;
    Ok(())
}

fn soft_int(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let (v, kind) = match i.code() {
        Code::Int3 => (vector::BP, EventKind::SoftwareException),
        Code::Int1 => (vector::DB, EventKind::Int1),
        Code::Into => {
            if ctx.long64() {
                return Err(Exception::ud().into());
            }
            if ctx.cpu.rflags & flags::OF == 0 {
                return Ok(());
            }
            (vector::OF, EventKind::SoftwareException)
        }
        _ => ((i.immediate(0) & 0xff) as u8, EventKind::SoftwareInt),
    };
    let ret = ctx.cpu.rip;
    ctx.deliver(Exception::new(v), kind, ret)
}

fn ud(_ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    Err(Exception::ud().into())
}

fn syscall(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    if ctx.cpu.enter_syscall() {
        Ok(())
    } else {
        Err(Exception::ud().into())
    }
}

impl crate::cpu::Cpu {
    /// What SYSCALL does, with RIP already at the instruction after it: RCX = RIP, R11 = RFLAGS,
    /// CS/SS from STAR, RFLAGS masked by SFMASK, RIP = LSTAR. False (nothing changed) where
    /// SYSCALL raises #UD (EFER.SCE clear or not 64-bit mode). Replay enters the kernel for a
    /// logged system call with it, without fetching the user's instruction again.
    pub fn enter_syscall(&mut self) -> bool {
        if self.efer & cr::EFER_SCE == 0 || self.mode() != Mode::Long64 {
            return false;
        }
        let sel = ((self.msrs.star >> 32) & 0xfffc) as u16;
        self.gpr[1] = self.rip;
        self.gpr[11] = self.rflags & !flags::RF;
        self.seg[SegReg::Cs as usize] = Segment::code64(sel, 0);
        self.seg[SegReg::Ss as usize] = Segment { typ: 3, ..Segment::data32(sel.wrapping_add(8), 0) };
        self.rflags = (self.rflags & !self.msrs.sfmask & !flags::RF) | flags::FIXED;
        self.rip = self.msrs.lstar;
        true
    }
}

fn sysret(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.efer & cr::EFER_SCE == 0 || !ctx.long64() {
        return Err(Exception::ud().into());
    }
    require_cpl0(ctx)?;
    let star = ctx.cpu.msrs.star;
    let base = ((star >> 48) & 0xffff) as u16;
    let rcx = ctx.cpu.gpr[1];
    if i.code() == Code::Sysretq {
        // Intel raises #GP(0) in ring 0 on a non-canonical RCX.
        if !is_canonical(rcx) {
            return Err(Exception::gp(0).into());
        }
        ctx.cpu.seg[SegReg::Cs as usize] = Segment::code64(base.wrapping_add(16) | 3, 3);
        ctx.cpu.rip = rcx;
    } else {
        let mut cs = Segment::code64(base | 3, 3);
        cs.l = false;
        cs.db = true;
        ctx.cpu.seg[SegReg::Cs as usize] = cs;
        ctx.cpu.rip = rcx & 0xffff_ffff;
    }
    ctx.cpu.seg[SegReg::Ss as usize] = Segment { typ: 3, ..Segment::data32(base.wrapping_add(8) | 3, 3) };
    ctx.cpu.rflags = (ctx.cpu.gpr[11] & 0x3c_7fd7) | flags::FIXED;
    Ok(())
}

fn swapgs(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    if !ctx.long64() {
        return Err(Exception::ud().into());
    }
    require_cpl0(ctx)?;
    let g = &mut ctx.cpu.seg[SegReg::Gs as usize].base;
    std::mem::swap(g, &mut ctx.cpu.msrs.kernel_gs_base);
    Ok(())
}

/// Loads SS for IRET: selector `sel` at privilege `cpl`.
fn iret_load_ss(ctx: &mut Ctx<'_>, sel: u16, cpl: u8, long: bool) -> ExResult<Segment> {
    if sel & 0xfffc == 0 {
        if long && cpl != 3 && (sel & 3) as u8 == cpl {
            return Ok(Segment { selector: sel, dpl: cpl, unusable: true, ..Segment::data32(sel, cpl) });
        }
        return Err(Exception::gp(0).into());
    }
    let d = ctx.read_descriptor(sel, 0)?;
    let s = Segment::from_descriptor(sel, d);
    let err = u32::from(sel & 0xfffc);
    if (sel & 3) as u8 != cpl || s.dpl != cpl || !s.s || s.typ & 0xa != 0x2 {
        return Err(Exception::gp(err).into());
    }
    if !s.present {
        return Err(Exception::ss(err).into());
    }
    Ok(s)
}

fn iret(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    iret_inner(ctx, i)?;
    // IRET ends NMI blocking (even when it returns from something else, as on hardware).
    ctx.cpu.nmi_blocked = false;
    Ok(())
}

fn iret_inner(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let mode = ctx.cpu.mode();
    if mode == Mode::Real {
        let ip = ctx.peek(0, 2)?;
        let cs = ctx.peek(2, 2)? as u16;
        let fl = ctx.peek(4, 2)?;
        let sa = ctx.stack_addr_size();
        ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(6), sa);
        ctx.cpu.seg[SegReg::Cs as usize] = Segment::real(cs, 0xb);
        ctx.cpu.rip = ip;
        ctx.cpu.rflags = (ctx.cpu.rflags & !0xffff) | (fl & 0x7fd5) | flags::FIXED;
        return Ok(());
    }
    if ctx.cpu.rflags & flags::NT != 0 {
        return Err(EmuError::Unsupported { rip: ctx.start_rip, what: "IRET with NT (task return)" }.into());
    }
    let osz = match i.code() {
        Code::Iretq => 8,
        Code::Iretd => 4,
        _ => 2,
    };
    let new_rip = ctx.peek(0, osz)?;
    let cs_sel = ctx.peek(osz as u64, osz)? as u16;
    let new_fl = ctx.peek(2 * osz as u64, osz)?;
    let cpl = ctx.cpu.cpl();
    let rpl = (cs_sel & 3) as u8;
    if cs_sel & 0xfffc == 0 {
        return Err(Exception::gp(0).into());
    }
    if rpl < cpl {
        return Err(Exception::gp(u32::from(cs_sel & 0xfffc)).into());
    }
    let d = ctx.read_descriptor(cs_sel, 0)?;
    let cs = Segment::from_descriptor(cs_sel, d);
    let conforming = cs.typ & 4 != 0;
    if !cs.is_code() || (!conforming && cs.dpl != rpl) || (conforming && cs.dpl > rpl) {
        return Err(Exception::gp(u32::from(cs_sel & 0xfffc)).into());
    }
    if !cs.present {
        return Err(Exception::np(u32::from(cs_sel & 0xfffc)).into());
    }
    let target_long = cs.l && ctx.cpu.efer & cr::EFER_LMA != 0;
    if target_long && !is_canonical(new_rip) {
        return Err(Exception::gp(0).into());
    }
    // In 64-bit mode IRET always pops SS:RSP.
    let pops_stack = mode == Mode::Long64 || rpl > cpl;
    let (new_rsp, ss) = if pops_stack {
        let rsp = ctx.peek(3 * osz as u64, osz)?;
        let ss_sel = ctx.peek(4 * osz as u64, osz)? as u16;
        (Some(rsp), Some(iret_load_ss(ctx, ss_sel, rpl, target_long)?))
    } else {
        (None, None)
    };
    if new_fl & flags::VM != 0 && cpl == 0 {
        return Err(EmuError::Unsupported { rip: ctx.start_rip, what: "IRET to virtual-8086 mode" }.into());
    }
    let iopl = ((ctx.cpu.rflags & flags::IOPL) >> 12) as u8;
    let mut modifiable =
        flags::STATUS | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
    if cpl <= iopl {
        modifiable |= flags::IF;
    }
    if cpl == 0 {
        modifiable |= flags::IOPL | flags::VIF | flags::VIP;
    }
    if osz == 2 {
        modifiable &= 0xffff;
    }
    // Commit.
    ctx.cpu.rflags = (ctx.cpu.rflags & !modifiable) | (new_fl & modifiable) | flags::FIXED;
    ctx.cpu.seg[SegReg::Cs as usize] = Segment { typ: cs.typ | 1, dpl: rpl, ..cs };
    ctx.cpu.rip = if target_long { new_rip } else { new_rip & mask(osz.min(4)) };
    match (new_rsp, ss) {
        (Some(rsp), Some(ss)) => {
            ctx.cpu.seg[SegReg::Ss as usize] = ss;
            ctx.cpu.gpr[4] = if target_long { rsp } else { rsp & 0xffff_ffff };
        }
        _ => {
            let sa = ctx.stack_addr_size();
            ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(3 * osz as u64), sa);
        }
    }
    if rpl > cpl {
        // Data segments not usable at the new privilege level become null.
        for s in [SegReg::Es, SegReg::Ds, SegReg::Fs, SegReg::Gs] {
            let seg = ctx.cpu.seg[s as usize];
            let conforming_code = seg.is_code() && seg.typ & 4 != 0;
            if !seg.unusable && seg.dpl < rpl && !conforming_code {
                ctx.cpu.seg[s as usize] = Segment { selector: 0, unusable: true, ..seg };
            }
        }
    }
    Ok(())
}

fn lgdt_lidt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let ea = ctx.ea(i);
    let seg = ctx.mseg(i);
    let limit = ctx.read_mem(seg, ea, 2)? as u16;
    let base = if ctx.long64() {
        ctx.read_mem(seg, ea.wrapping_add(2), 8)?
    } else {
        let b = ctx.read_mem(seg, ea.wrapping_add(2), 4)?;
        if i.code() == Code::Lgdt_m1632_16 || i.code() == Code::Lidt_m1632_16 {
            b & 0xff_ffff
        } else {
            b
        }
    };
    if ctx.long64() && !is_canonical(base) {
        return Err(Exception::gp(0).into());
    }
    let t = crate::cpu::DescriptorTable { base, limit };
    if i.mnemonic() == Mnemonic::Lgdt {
        ctx.cpu.gdtr = t;
    } else {
        ctx.cpu.idtr = t;
    }
    Ok(())
}

fn sgdt_sidt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.cr4 & cr::CR4_UMIP != 0 && ctx.cpu.cpl() > 0 {
        return Err(Exception::gp(0).into());
    }
    let t = if i.mnemonic() == Mnemonic::Sgdt { ctx.cpu.gdtr } else { ctx.cpu.idtr };
    let ea = ctx.ea(i);
    let seg = ctx.mseg(i);
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&t.limit.to_le_bytes());
    b[2..].copy_from_slice(&t.base.to_le_bytes());
    let n = if ctx.long64() { 10 } else { 6 };
    ctx.write_bytes(seg, ea, &b[..n])
}

fn ltr_lldt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    if ctx.cpu.mode() == Mode::Real {
        return Err(Exception::ud().into());
    }
    let sel = ctx.read_op(i, 0)? as u16;
    let is_ltr = i.mnemonic() == Mnemonic::Ltr;
    let lma = ctx.cpu.efer & cr::EFER_LMA != 0;
    if sel & 0xfffc == 0 {
        if is_ltr {
            return Err(Exception::gp(0).into());
        }
        ctx.cpu.ldtr = Segment { selector: sel, unusable: true, ..ctx.cpu.ldtr };
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Exception::gp(u32::from(sel & 0xfffc)).into());
    }
    let (lo, hi) = if lma { ctx.read_system_descriptor(sel)? } else { (ctx.read_descriptor(sel, 0)?, 0) };
    let mut s = Segment::from_descriptor(sel, lo);
    if lma {
        s.base |= (hi & 0xffff_ffff) << 32;
    }
    let err = u32::from(sel & 0xfffc);
    let ok_type = if is_ltr { s.typ == 9 || s.typ == 1 } else { s.typ == 2 };
    if s.s || !ok_type {
        return Err(Exception::gp(err).into());
    }
    if !s.present {
        return Err(Exception::np(err).into());
    }
    if is_ltr {
        // Mark the TSS busy in the GDT.
        let addr = ctx.cpu.gdtr.base.wrapping_add(u64::from(sel & 0xfff8) + 5);
        ctx.sys_write(addr, &[((lo >> 40) as u8) | 2])?;
        s.typ |= 2;
        ctx.cpu.tr = s;
    } else {
        ctx.cpu.ldtr = s;
    }
    Ok(())
}

fn str_sldt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.mode() == Mode::Real {
        return Err(Exception::ud().into());
    }
    if ctx.cpu.cr4 & cr::CR4_UMIP != 0 && ctx.cpu.cpl() > 0 {
        return Err(Exception::gp(0).into());
    }
    let sel = if i.mnemonic() == Mnemonic::Str { ctx.cpu.tr.selector } else { ctx.cpu.ldtr.selector };
    if i.op_kind(0) == OpKind::Register {
        ctx.set_reg(i.op_register(0), u64::from(sel));
        Ok(())
    } else {
        let ea = ctx.ea(i);
        let seg = ctx.mseg(i);
        ctx.write_mem(seg, ea, 2, u64::from(sel))
    }
}

fn smsw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.cr4 & cr::CR4_UMIP != 0 && ctx.cpu.cpl() > 0 {
        return Err(Exception::gp(0).into());
    }
    let v = ctx.cpu.cr0;
    if i.op_kind(0) == OpKind::Register {
        ctx.set_reg(i.op_register(0), v);
        Ok(())
    } else {
        let ea = ctx.ea(i);
        let seg = ctx.mseg(i);
        ctx.write_mem(seg, ea, 2, v & 0xffff)
    }
}

fn lmsw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let v = ctx.read_op(i, 0)? & 0xf;
    // LMSW can set PE but not clear it.
    let pe = ctx.cpu.cr0 & cr::CR0_PE;
    ctx.cpu.cr0 = (ctx.cpu.cr0 & !0xe) | (v & 0xe) | pe | (v & 1);
    Ok(())
}

fn clts(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    ctx.cpu.cr0 &= !cr::CR0_TS;
    Ok(())
}

fn rdmsr(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let idx = ctx.cpu.gpr[1] as u32;
    let v = match ctx.cpu.read_msr(idx) {
        Some(v) => v,
        None if idx == crate::cpu::msr::TSC => ctx.plat.rdtsc()?,
        None => match ctx.plat.rdmsr(idx)? {
            Some(v) => v,
            None => return Err(Exception::gp(0).into()),
        },
    };
    ctx.cpu.gpr[0] = v & 0xffff_ffff;
    ctx.cpu.gpr[2] = v >> 32;
    Ok(())
}

fn wrmsr(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let idx = ctx.cpu.gpr[1] as u32;
    let v = (ctx.cpu.gpr[0] & 0xffff_ffff) | (ctx.cpu.gpr[2] << 32);
    let ok = match ctx.cpu.write_msr(idx, v) {
        Some(ok) => ok,
        None => ctx.plat.wrmsr(idx, v)?,
    };
    if !ok {
        return Err(Exception::gp(0).into());
    }
    Ok(())
}

fn rdtsc(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.cr4 & 4 != 0 && ctx.cpu.cpl() > 0 {
        return Err(Exception::gp(0).into());
    }
    let p = i.mnemonic() == Mnemonic::Rdtscp;
    if p && !ctx.cpu.features.rdtscp {
        return Err(Exception::ud().into());
    }
    let t = ctx.plat.rdtsc()?;
    ctx.cpu.gpr[0] = t & 0xffff_ffff;
    ctx.cpu.gpr[2] = t >> 32;
    if p {
        ctx.cpu.gpr[1] = ctx.cpu.msrs.tsc_aux & 0xffff_ffff;
    }
    Ok(())
}

fn rdrand(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let seed = i.mnemonic() == Mnemonic::Rdseed;
    if (seed && !ctx.cpu.features.rdseed) || (!seed && !ctx.cpu.features.rdrand) {
        return Err(Exception::ud().into());
    }
    let v = if seed { ctx.plat.rdseed()? } else { ctx.plat.rdrand()? };
    ctx.set_reg(i.op_register(0), v.unwrap_or(0));
    ctx.set_status(if v.is_some() { flags::CF } else { 0 });
    Ok(())
}

fn cpuid(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    let r = ctx.plat.cpuid(ctx.cpu.gpr[0] as u32, ctx.cpu.gpr[1] as u32)?;
    ctx.cpu.gpr[0] = u64::from(r.eax);
    ctx.cpu.gpr[3] = u64::from(r.ebx);
    ctx.cpu.gpr[1] = u64::from(r.ecx);
    ctx.cpu.gpr[2] = u64::from(r.edx);
    Ok(())
}

fn clac_stac(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if ctx.cpu.cpl() != 0 {
        return Err(Exception::ud().into());
    }
    if i.mnemonic() == Mnemonic::Clac {
        ctx.cpu.rflags &= !flags::AC;
    } else {
        ctx.cpu.rflags |= flags::AC;
    }
    Ok(())
}

fn invlpg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    require_cpl0(ctx)?;
    let ea = ctx.ea(i);
    let seg = ctx.mseg(i);
    let lin = if ctx.long64() {
        if matches!(seg, SegReg::Fs | SegReg::Gs) {
            ea.wrapping_add(ctx.cpu.seg[seg as usize].base)
        } else {
            ea
        }
    } else {
        ctx.cpu.seg[seg as usize].base.wrapping_add(ea) & 0xffff_ffff
    };
    ctx.cpu.tlb.invlpg(lin);
    Ok(())
}

fn privileged_nop(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    require_cpl0(ctx)
}

fn fence(_ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    Ok(())
}

fn clflush(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    // Needs a valid translation like a byte load (can #PF), otherwise no architectural effect.
    let ea = ctx.ea(i);
    let seg = ctx.mseg(i);
    let lin = ctx.linear(seg, ea, 1)?;
    let prv = ctx.data_priv();
    ctx.translate(lin, Access::Read, prv)?;
    Ok(())
}

/// The descriptor for VERR/VERW/LAR/LSL, or `None` when the selector fails the checks these
/// instructions report through ZF (they do not fault for a bad selector).
fn probe_descriptor(ctx: &mut Ctx<'_>, sel: u16) -> ExResult<Option<(Segment, u64)>> {
    if sel & 0xfffc == 0 || ctx.cpu.mode() == Mode::Real {
        return Ok(None);
    }
    let (base, limit) = if sel & 4 != 0 {
        (ctx.cpu.ldtr.base, if ctx.cpu.ldtr.unusable { 0 } else { ctx.cpu.ldtr.limit })
    } else {
        (ctx.cpu.gdtr.base, u32::from(ctx.cpu.gdtr.limit))
    };
    let off = u64::from(sel & 0xfff8);
    if off + 7 > u64::from(limit) {
        return Ok(None);
    }
    let d = ctx.sys_read_u64(base.wrapping_add(off))?;
    let s = Segment::from_descriptor(sel, d);
    let conforming_code = s.s && s.typ & 0xc == 0xc;
    let cpl = ctx.cpu.cpl();
    if !conforming_code && (s.dpl < cpl || s.dpl < (sel & 3) as u8) {
        return Ok(None);
    }
    Ok(Some((s, d)))
}

fn set_zf(ctx: &mut Ctx<'_>, z: bool) {
    ctx.cpu.rflags = (ctx.cpu.rflags & !flags::ZF) | if z { flags::ZF } else { 0 };
}

fn verr_verw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let sel = ctx.read_op(i, 0)? as u16;
    let ok = match probe_descriptor(ctx, sel)? {
        Some((s, _)) if s.s => {
            if i.mnemonic() == Mnemonic::Verw {
                !s.is_code() && s.typ & 2 != 0
            } else {
                !s.is_code() || s.typ & 2 != 0
            }
        }
        _ => false,
    };
    set_zf(ctx, ok);
    Ok(())
}

fn lar_lsl(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let sel = ctx.read_op(i, 1)? as u16;
    let lar = i.mnemonic() == Mnemonic::Lar;
    let found = probe_descriptor(ctx, sel)?.filter(|(s, _)| {
        // System types allowed: LDT and TSS (and, for LAR, 32/64-bit call gates are ignored
        // here since krr guests have none).
        s.s || matches!(s.typ, 1 | 2 | 3 | 9 | 11)
    });
    match found {
        Some((s, d)) => {
            let v = if lar { (d >> 32) & 0x00ff_ff00 } else { u64::from(s.limit) };
            ctx.write_op(i, 0, v)?;
            set_zf(ctx, true);
        }
        None => set_zf(ctx, false),
    }
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::In => in_,
        Mnemonic::Out => out,
        Mnemonic::Cli | Mnemonic::Sti => cli_sti,
        Mnemonic::Hlt => hlt,
        Mnemonic::Int | Mnemonic::Int3 | Mnemonic::Into | Mnemonic::Int1 => soft_int,
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => ud,
        Mnemonic::Syscall => syscall,
        Mnemonic::Sysret | Mnemonic::Sysretq => sysret,
        Mnemonic::Swapgs => swapgs,
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => iret,
        Mnemonic::Lgdt | Mnemonic::Lidt => lgdt_lidt,
        Mnemonic::Sgdt | Mnemonic::Sidt => sgdt_sidt,
        Mnemonic::Ltr | Mnemonic::Lldt => ltr_lldt,
        Mnemonic::Str | Mnemonic::Sldt => str_sldt,
        Mnemonic::Smsw => smsw,
        Mnemonic::Verr | Mnemonic::Verw => verr_verw,
        Mnemonic::Lar | Mnemonic::Lsl => lar_lsl,
        Mnemonic::Lmsw => lmsw,
        Mnemonic::Clts => clts,
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        Mnemonic::Rdtsc | Mnemonic::Rdtscp => rdtsc,
        Mnemonic::Rdrand | Mnemonic::Rdseed => rdrand,
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Clac | Mnemonic::Stac => clac_stac,
        Mnemonic::Invlpg => invlpg,
        Mnemonic::Wbinvd | Mnemonic::Invd => privileged_nop,
        Mnemonic::Lfence | Mnemonic::Sfence | Mnemonic::Mfence => fence,
        Mnemonic::Clflush | Mnemonic::Clflushopt => clflush,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::{flags, SegReg};
    use crate::testutil::*;
    use crate::SimplePlatform;
    use iced_x86::code_asm::*;

    #[test]
    fn syscall_sysret_round_trip() {
        let (mut cpu, mut mem) = prepare(|a| {
            let mut user = a.create_label();
            let mut entry = a.create_label();
            let mut after = a.create_label();
            a.lea(rax, ptr(entry))?;
            a.mov(ecx, 0xc000_0082u32)?; // LSTAR
            a.mov(rdx, rax)?;
            a.shr(rdx, 32)?;
            a.wrmsr()?;
            a.mov(ecx, 0xc000_0084u32)?; // SFMASK: clear IF, TF, DF
            a.mov(eax, 0x700)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.lea(rcx, ptr(user))?;
            a.mov(r11d, 0x202)?;
            a.sysretq()?;
            a.set_label(&mut user)?;
            a.mov(r12, rsp)?;
            a.mov(eax, 60)?;
            a.syscall()?;
            a.set_label(&mut after)?;
            a.nop()?;
            a.set_label(&mut entry)?;
            a.swapgs()?;
            a.lea(r13, ptr(after))?;
            Ok(())
        });
        cpu.msrs.kernel_gs_base = 0x1234;
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!(cpu.cpl(), 0);
        assert_eq!(cpu.seg[SegReg::Cs as usize].selector, 0x10);
        assert_eq!(cpu.seg[SegReg::Ss as usize].selector, 0x18);
        assert_eq!(cpu.gpr[1], cpu.gpr[13], "RCX = return address");
        assert_eq!(cpu.gpr[11], 0x202, "R11 = user RFLAGS");
        assert_eq!(cpu.rflags & flags::IF, 0, "SFMASK cleared IF");
        assert_eq!(cpu.seg[SegReg::Gs as usize].base, 0x1234);
        assert_eq!(cpu.msrs.kernel_gs_base, 0);
    }

    #[test]
    fn sysret_from_user_is_gp() {
        let (cpu, _) = {
            let (mut cpu, mut mem) = prepare(|a| a.sysretq());
            make_user(&mut cpu);
            run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
            (cpu, mem)
        };
        assert_eq!(cpu.gpr[15], 13);
    }

    #[test]
    fn iretq_to_user_and_back_through_interrupt() {
        let (mut cpu, mut mem) = prepare(|a| {
            let mut user = a.create_label();
            a.lea(rax, ptr(user))?;
            a.push(i32::from(USER_DS))?;
            a.push(0x5_0000)?;
            a.push(0x202)?;
            a.push(i32::from(USER_CS))?;
            a.push(rax)?;
            a.iretq()?;
            a.set_label(&mut user)?;
            a.mov(ebx, 77)?;
            a.int(0x80)?;
            Ok(())
        });
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 0x80);
        assert_eq!(cpu.gpr[3], 77);
        assert_eq!(read_u64(&mem, RSP0 - 32), u64::from(USER_CS));
        assert_ne!(read_u64(&mem, RSP0 - 24) & flags::IF, 0);
        assert_eq!(read_u64(&mem, RSP0 - 16), 0x5_0000);
    }

    #[test]
    fn privileged_instructions_fault_in_user_mode() {
        for f in [
            (|a: &mut CodeAssembler| a.cli()) as fn(&mut CodeAssembler) -> Result<(), IcedError>,
            |a| a.hlt(),
            |a| a.mov(rax, cr3),
            |a| a.wrmsr(),
            |a| a.invlpg(byte_ptr(0)),
            |a| a.lgdt(ptr(0)),
        ] {
            let (mut cpu, mut mem) = prepare(f);
            make_user(&mut cpu);
            run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
            assert_eq!(cpu.gpr[15], 13);
            assert_eq!(read_u64(&mem, cpu.gpr[4] + 8), CODE, "RIP of the faulting instruction");
        }
    }

    #[test]
    fn io_permission_and_platform_stop() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(al, 0x41)?;
            a.out(0xe9, al)?;
            a.mov(dx, 0x3f8)?;
            a.in_(al, dx)?;
            Ok(())
        });
        let mut p = SimplePlatform::new();
        run_until_hlt(&mut cpu, &mut mem, &mut p);
        assert_eq!(p.outs, vec![(0xe9, 1, 0x41)]);
        assert_eq!(cpu.gpr[0] & 0xff, 0xff);
        // Stop-on-out: the OUT does not retire, RIP stays on it.
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(al, 0x41)?;
            a.out(0xe9, al)?;
            Ok(())
        });
        let mut p = SimplePlatform { stop_on_out: true, ..SimplePlatform::new() };
        let r = cpu.run(&mut mem, &mut p, 100, |_| false);
        assert!(matches!(r, Err(crate::EmuError::Platform(_))));
        assert_eq!(cpu.rip, CODE + 2);
        assert_eq!(cpu.icount, 1);
        // User mode with IOPL 0 and no I/O bitmap: #GP.
        let (mut cpu, mut mem) = prepare(|a| a.out(0xe9, al));
        make_user(&mut cpu);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[15], 13);
    }

    #[test]
    fn msrs_cpuid_rdtsc_rdrand() {
        let (cpu, _) = run_asm(|a| {
            a.mov(ecx, 0xc000_0100u32)?; // FS_BASE
            a.mov(eax, 0x5000)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(rbx, qword_ptr(0x10).fs())?; // reads 0x5010
            a.mov(r8, rbx)?;
            a.xor(eax, eax)?;
            a.cpuid()?;
            a.mov(r9d, ebx)?;
            a.rdtsc()?;
            a.mov(r10, rax)?;
            a.rdrand(r11)?;
            a.setc(r12b)?;
            Ok(())
        });
        assert_eq!(cpu.seg[SegReg::Fs as usize].base, 0x5000);
        assert_eq!(cpu.gpr[9], 0x756e_6547, "Genu");
        assert_eq!(cpu.gpr[10], 1_000_000);
        assert_eq!(cpu.gpr[12] & 0xff, 1);
    }

    #[test]
    fn verw_lar_lsl() {
        let (cpu, _) = run_asm(|a| {
            a.mov(ax, 0x18)?;
            a.verw(ax)?; // writable data: ZF=1
            a.setz(bl)?;
            a.mov(ax, 0x10)?;
            a.verw(ax)?; // code: ZF=0
            a.setz(bh)?;
            a.mov(ecx, 0x10)?;
            a.lar(edx, ecx)?;
            a.lsl(esi, ecx)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[3] & 0xffff, 0x0001);
        assert_eq!(cpu.gpr[2], 0x00af_9b00, "bits 23:8 of the high dword (19:16 copied, as Intel does)");
        assert_eq!(cpu.gpr[6], 0xffff_ffff);
    }

    #[test]
    fn load_segments_and_ltr() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(eax, 0x18)?;
            a.mov(ds, ax)?;
            a.mov(ax, 0)?;
            a.mov(fs, ax)?;
            a.mov(ax, 0x40)?;
            a.ltr(ax)?;
            a.str(bx)?;
            Ok(())
        });
        assert_eq!(cpu.seg[SegReg::Ds as usize].selector, 0x18);
        assert!(cpu.seg[SegReg::Fs as usize].unusable);
        assert_eq!(cpu.gpr[3] & 0xffff, 0x40);
        assert_eq!(cpu.tr.typ, 0xb, "busy TSS");
        assert_eq!((read_u64(&mem, GDT + 0x40) >> 40) & 0xf, 0xb, "busy bit written to the GDT");
    }
}
