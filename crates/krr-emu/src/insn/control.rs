//! Control transfer: JMP/Jcc/CALL/RET (near and far), LOOP/LOOPE/LOOPNE, JCXZ/JECXZ/JRCXZ.
//!
//! A near branch to a non-canonical target raises #GP(0) at the branch (Intel behaviour).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::{cond, mask, Decoded, Handler};
use crate::cpu::{flags, Mode, SegReg};
use crate::error::{EmuError, ExResult, Exception};
use crate::exec::Ctx;
use crate::modes::load_cs_far;
use crate::paging::is_canonical;

/// Target of a relative branch operand.
#[inline]
fn rel_target(i: &Instruction) -> u64 {
    match i.op_kind(0) {
        OpKind::NearBranch16 => u64::from(i.near_branch16()),
        OpKind::NearBranch32 => u64::from(i.near_branch32()),
        _ => i.near_branch64(),
    }
}

/// Operand size of a near branch (8 in 64-bit mode).
#[inline]
fn branch_size(ctx: &Ctx<'_>, i: &Instruction) -> usize {
    if ctx.long64() {
        return 8;
    }
    match i.op_kind(0) {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        OpKind::Register => super::gpr_info(i.op_register(0)).1,
        OpKind::Memory => i.memory_size().size(),
        _ => 4,
    }
}

/// Sets RIP to `t`, checking canonical form in 64-bit mode.
#[inline]
pub(crate) fn jump_to(ctx: &mut Ctx<'_>, t: u64, size: usize) -> ExResult {
    if ctx.long64() {
        if !is_canonical(t) {
            return Err(Exception::gp(0).into());
        }
        ctx.cpu.rip = t;
    } else {
        ctx.cpu.rip = t & mask(size);
    }
    Ok(())
}

fn jmp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = branch_size(ctx, i);
    let t = match i.op_kind(0) {
        OpKind::Register | OpKind::Memory => ctx.read_op(i, 0)?,
        _ => rel_target(i),
    };
    jump_to(ctx, t, size)
}

fn jcc(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if cond(ctx.cpu.rflags, i.condition_code()) {
        let size = branch_size(ctx, i);
        jump_to(ctx, rel_target(i), size)
    } else {
        Ok(())
    }
}

fn call(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = branch_size(ctx, i);
    let t = match i.op_kind(0) {
        OpKind::Register | OpKind::Memory => ctx.read_op(i, 0)?,
        _ => rel_target(i),
    };
    if ctx.long64() && !is_canonical(t) {
        return Err(Exception::gp(0).into());
    }
    let ret = ctx.cpu.rip;
    ctx.push(ret & mask(size), size)?;
    jump_to(ctx, t, size)
}

fn ret(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = i.stack_pointer_increment().unsigned_abs() as usize;
    let size = if i.op_count() == 1 { size.saturating_sub(i.immediate(0) as usize & 0xffff) } else { size };
    let size = size.clamp(2, 8);
    let t = ctx.peek(0, size)?;
    if ctx.long64() && !is_canonical(t) {
        return Err(Exception::gp(0).into());
    }
    let extra = if i.op_count() == 1 { i.immediate(0) & 0xffff } else { 0 };
    let sa = ctx.stack_addr_size();
    ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(size as u64 + extra), sa);
    jump_to(ctx, t, size)
}

/// LOOP/LOOPE/LOOPNE with a CX/ECX/RCX counter (const = counter size in bytes).
fn loop_<const CSIZE: usize>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let m = mask(CSIZE);
    let c = ctx.cpu.gpr[1].wrapping_sub(1) & m;
    ctx.cpu.gpr[1] = match CSIZE {
        8 => c,
        4 => c,
        _ => (ctx.cpu.gpr[1] & !0xffff) | c,
    };
    let zf = ctx.cpu.rflags & flags::ZF != 0;
    let take = c != 0
        && match i.mnemonic() {
            Mnemonic::Loope => zf,
            Mnemonic::Loopne => !zf,
            _ => true,
        };
    if take {
        let size = branch_size(ctx, i);
        jump_to(ctx, rel_target(i), size)?;
    }
    Ok(())
}

fn jrcxz(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let c = match i.mnemonic() {
        Mnemonic::Jcxz => ctx.cpu.gpr[1] & 0xffff,
        Mnemonic::Jecxz => ctx.cpu.gpr[1] & 0xffff_ffff,
        _ => ctx.cpu.gpr[1],
    };
    if c == 0 {
        let size = branch_size(ctx, i);
        jump_to(ctx, rel_target(i), size)?;
    }
    Ok(())
}

/// Reads a far pointer operand: (selector, offset, offset size).
fn far_ptr(ctx: &mut Ctx<'_>, i: &Instruction) -> ExResult<(u16, u64, usize)> {
    match i.op_kind(0) {
        OpKind::FarBranch16 => Ok((i.far_branch_selector(), u64::from(i.far_branch16()), 2)),
        OpKind::FarBranch32 => Ok((i.far_branch_selector(), u64::from(i.far_branch32()), 4)),
        _ => {
            let osz = i.memory_size().size() - 2;
            let ea = ctx.ea(i);
            let seg = ctx.mseg(i);
            let off = ctx.read_mem(seg, ea, osz)?;
            let sel = ctx.read_mem(seg, ea.wrapping_add(osz as u64), 2)? as u16;
            Ok((sel, off, osz))
        }
    }
}

fn jmp_far(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let (sel, off, osz) = far_ptr(ctx, i)?;
    load_cs_far(ctx, sel, off, osz)
}

fn call_far(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let (sel, off, osz) = far_ptr(ctx, i)?;
    let old_cs = ctx.cpu.seg[SegReg::Cs as usize];
    let ret = ctx.cpu.rip;
    let old_sp = ctx.cpu.gpr[4];
    let r = (|| -> ExResult {
        ctx.push(u64::from(old_cs.selector), osz)?;
        ctx.push(ret, osz)?;
        load_cs_far(ctx, sel, off, osz)
    })();
    if r.is_err() {
        ctx.cpu.gpr[4] = old_sp;
        ctx.cpu.seg[SegReg::Cs as usize] = old_cs;
    }
    r
}

fn ret_far(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let osz = match i.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfq | Code::Retfq_imm16 => 8,
        _ => 4,
    };
    let off = ctx.peek(0, osz)?;
    let sel = ctx.peek(osz as u64, osz)? as u16;
    let extra = if i.op_count() == 1 { i.immediate(0) & 0xffff } else { 0 };
    if ctx.cpu.mode() != Mode::Real && (sel & 3) as u8 > ctx.cpu.cpl() {
        return Err(EmuError::Unsupported {
            rip: ctx.start_rip,
            what: "far return to an outer privilege level",
        }
        .into());
    }
    let sa = ctx.stack_addr_size();
    load_cs_far(ctx, sel, off, osz)?;
    ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(2 * osz as u64 + extra), sa);
    Ok(())
}

fn loop_handler(code: Code) -> Handler {
    let name = format!("{code:?}");
    if name.ends_with("RCX") {
        loop_::<8>
    } else if name.ends_with("ECX") {
        loop_::<4>
    } else {
        loop_::<2>
    }
}

/// Jcc/JMP rel in 64-bit mode with the target precomputed.
fn jcc64(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    if cond(ctx.cpu.rflags, d.condition_code()) {
        if !is_canonical(d.imm) {
            return Err(Exception::gp(0).into());
        }
        ctx.cpu.rip = d.imm;
    }
    Ok(())
}

/// JMP rel in 64-bit mode with the target precomputed (`jcc64` without the condition).
fn jmp64(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    if !is_canonical(d.imm) {
        return Err(Exception::gp(0).into());
    }
    ctx.cpu.rip = d.imm;
    Ok(())
}

/// CALL rel32 in 64-bit mode with the target precomputed: push the return address, jump.
fn call64(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    if !is_canonical(d.imm) {
        return Err(Exception::gp(0).into());
    }
    let ret = ctx.cpu.rip;
    ctx.push(ret, 8)?;
    ctx.cpu.rip = d.imm;
    Ok(())
}

/// RET (near, no immediate) in 64-bit mode.
fn ret64(ctx: &mut Ctx<'_>, _d: &Decoded) -> ExResult {
    let t = ctx.peek(0, 8)?;
    if !is_canonical(t) {
        return Err(Exception::gp(0).into());
    }
    ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(8), 8);
    ctx.cpu.rip = t;
    Ok(())
}

/// Fast handlers for 64-bit relative branches, near calls and returns (decoded in 64-bit
/// mode, so the CPU is in it).
pub(crate) fn specialize(d: &Decoded) -> Option<Handler> {
    match d.code() {
        Code::Retnq => return Some(ret64),
        Code::Call_rel32_64 if d.op_kind(0) == OpKind::NearBranch64 => return Some(call64),
        _ => {}
    }
    if d.op_count() != 1 || d.op_kind(0) != OpKind::NearBranch64 {
        return None;
    }
    // Only JMP and Jcc: LOOPE/LOOPNE also carry a condition code but decrement RCX.
    let is_jcc = matches!(
        d.mnemonic(),
        Mnemonic::Jo
            | Mnemonic::Jno
            | Mnemonic::Jb
            | Mnemonic::Jae
            | Mnemonic::Je
            | Mnemonic::Jne
            | Mnemonic::Jbe
            | Mnemonic::Ja
            | Mnemonic::Js
            | Mnemonic::Jns
            | Mnemonic::Jp
            | Mnemonic::Jnp
            | Mnemonic::Jl
            | Mnemonic::Jge
            | Mnemonic::Jle
            | Mnemonic::Jg
    );
    if d.mnemonic() == Mnemonic::Jmp {
        Some(jmp64)
    } else if is_jcc {
        Some(jcc64)
    } else {
        None
    }
}

/// Dispatch for this family.
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Jmp => match code {
            Code::Jmp_ptr1616 | Code::Jmp_ptr1632 | Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Jmp_m1664 => {
                jmp_far
            }
            _ => jmp,
        },
        Mnemonic::Call => match code {
            Code::Call_ptr1616
            | Code::Call_ptr1632
            | Code::Call_m1616
            | Code::Call_m1632
            | Code::Call_m1664 => call_far,
            _ => call,
        },
        Mnemonic::Ret => ret,
        Mnemonic::Retf => ret_far,
        Mnemonic::Jo
        | Mnemonic::Jno
        | Mnemonic::Jb
        | Mnemonic::Jae
        | Mnemonic::Je
        | Mnemonic::Jne
        | Mnemonic::Jbe
        | Mnemonic::Ja
        | Mnemonic::Js
        | Mnemonic::Jns
        | Mnemonic::Jp
        | Mnemonic::Jnp
        | Mnemonic::Jl
        | Mnemonic::Jge
        | Mnemonic::Jle
        | Mnemonic::Jg => jcc,
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne => loop_handler(code),
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => jrcxz,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn calls_loops_and_branches() {
        let (cpu, _) = run_asm(|a| {
            let mut func = a.create_label();
            let mut l1 = a.create_label();
            let mut done = a.create_label();
            let mut skip = a.create_label();
            a.xor(eax, eax)?;
            a.mov(ecx, 10)?;
            a.set_label(&mut l1)?;
            a.add(eax, ecx)?;
            a.loop_(l1)?; // 55
            a.call(func)?;
            a.xor(ecx, ecx)?;
            a.jrcxz(skip)?;
            a.mov(edx, 0xbad)?;
            a.set_label(&mut skip)?;
            a.lea(rbx, ptr(done))?;
            a.jmp(rbx)?;
            a.mov(edx, 0xbad)?;
            a.set_label(&mut func)?;
            a.add(eax, 100)?;
            a.ret()?;
            a.set_label(&mut done)?;
            a.cmp(eax, 155)?;
            a.jne(func)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 155);
        assert_ne!(cpu.gpr[2], 0xbad);
    }

    #[test]
    fn noncanonical_jump_faults() {
        let (cpu, _) = run_asm_expect_exception(|a| {
            a.mov(rax, 0x8000_0000_0000_0000u64)?;
            a.jmp(rax)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[15], 13);
    }

    #[test]
    fn far_return_same_privilege() {
        let (cpu, _) = run_asm(|a| {
            let mut target = a.create_label();
            a.lea(rax, ptr(target))?;
            a.push(0x10)?;
            a.push(rax)?;
            a.db(&[0x48, 0xcb])?; // retfq
            a.mov(ebx, 0xbad)?;
            a.set_label(&mut target)?;
            a.mov(ecx, 7)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[1], 7);
        assert_ne!(cpu.gpr[3], 0xbad);
    }

    #[test]
    fn loop_variants() {
        let (cpu, _) = run_asm(|a| {
            let mut l1 = a.create_label();
            let mut l2 = a.create_label();
            a.mov(ecx, 100)?;
            a.xor(eax, eax)?;
            a.set_label(&mut l1)?;
            a.inc(eax)?;
            a.cmp(eax, 5)?;
            a.loopne(l1)?; // stops when eax == 5
            a.mov(r8, rcx)?;
            a.mov(ecx, 3)?;
            a.xor(ebx, ebx)?;
            a.set_label(&mut l2)?;
            a.inc(ebx)?;
            a.cmp(ebx, ebx)?;
            a.loope(l2)?; // ZF=1 always: runs until rcx = 0
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 5);
        assert_eq!(cpu.gpr[8], 95);
        assert_eq!(cpu.gpr[3], 3);
        assert_eq!(cpu.gpr[1], 0);
    }
}
