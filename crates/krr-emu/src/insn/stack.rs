//! Stack instructions: PUSH/POP (registers, memory, immediates, segment registers),
//! PUSHF/POPF with the IOPL/IF rules, ENTER/LEAVE.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{mask, seg_of, Decoded, Handler};
use crate::cpu::flags;
use crate::error::ExResult;
use crate::exec::Ctx;

/// Operand size of a push/pop from the decoder's stack pointer increment.
fn ssize(i: &Instruction) -> usize {
    i.stack_pointer_increment().unsigned_abs() as usize
}

fn push(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ssize(i);
    let v = match i.op_kind(0) {
        OpKind::Register if i.op_register(0).is_segment_register() => {
            u64::from(ctx.cpu.seg[seg_of(i.op_register(0)) as usize].selector)
        }
        _ => ctx.read_op(i, 0)?,
    };
    ctx.push(v & mask(size), size)
}

fn pop(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ssize(i);
    let v = ctx.peek(0, size)?;
    if i.op_kind(0) == OpKind::Register && i.op_register(0).is_segment_register() {
        let s = seg_of(i.op_register(0));
        crate::modes::load_segment(ctx, s, v as u16)?;
        let sa = ctx.stack_addr_size();
        ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(size as u64), sa);
        if s == crate::cpu::SegReg::Ss {
            ctx.cpu.interrupt_shadow = true;
        }
        return Ok(());
    }
    let old = ctx.cpu.gpr[4];
    let sa = ctx.stack_addr_size();
    // The memory destination's address uses the incremented RSP.
    ctx.set_sp(old.wrapping_add(size as u64), sa);
    if let Err(e) = ctx.write_op(i, 0, v) {
        ctx.cpu.gpr[4] = old;
        return Err(e);
    }
    Ok(())
}

fn pushf(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ssize(i);
    let v = ctx.cpu.rflags & !(flags::VM | flags::RF);
    ctx.push(v & mask(size), size)
}

fn popf(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ssize(i);
    let v = ctx.peek(0, size)?;
    let cpl = u64::from(ctx.cpu.cpl());
    let iopl = (ctx.cpu.rflags & flags::IOPL) >> 12;
    let mut modifiable = flags::STATUS | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    if cpl == 0 {
        modifiable |= flags::IOPL | flags::IF;
    } else if cpl <= iopl {
        modifiable |= flags::IF;
    }
    if size == 2 {
        modifiable &= 0xffff;
    }
    let sa = ctx.stack_addr_size();
    ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(size as u64), sa);
    ctx.cpu.rflags = ((ctx.cpu.rflags & !modifiable) | (v & modifiable) | flags::FIXED) & !flags::RF;
    Ok(())
}

fn enter(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ssize(i).clamp(2, 8);
    let size = match i.code() {
        Code::Enterw_imm16_imm8 => 2,
        Code::Enterd_imm16_imm8 => 4,
        Code::Enterq_imm16_imm8 => 8,
        _ => size,
    };
    let alloc = i.immediate(0) & 0xffff;
    let level = i.immediate(1) & 0x1f;
    let sa = ctx.stack_addr_size();
    let old_sp = ctx.cpu.gpr[4];
    let old_bp = ctx.cpu.gpr[5];
    let r = (|| -> ExResult {
        ctx.push(old_bp & mask(size), size)?;
        let frame = ctx.cpu.gpr[4];
        let mut bp = old_bp;
        for _ in 1..level {
            bp = bp.wrapping_sub(size as u64);
            let v = ctx.read_mem(crate::cpu::SegReg::Ss, bp & mask(sa), size)?;
            ctx.push(v, size)?;
        }
        if level > 0 {
            ctx.push(frame & mask(size), size)?;
        }
        // Check the allocated area's last byte is writable, as hardware does.
        let new_sp = ctx.cpu.gpr[4].wrapping_sub(alloc);
        if alloc > 0 {
            ctx.read_mem_rmw(crate::cpu::SegReg::Ss, new_sp & mask(sa), 1)?;
        }
        let bpreg = match size {
            2 => Register::BP,
            4 => Register::EBP,
            _ => Register::RBP,
        };
        ctx.set_reg(bpreg, frame);
        ctx.set_sp(new_sp, sa);
        Ok(())
    })();
    if r.is_err() {
        ctx.cpu.gpr[4] = old_sp;
        ctx.cpu.gpr[5] = old_bp;
    }
    r
}

fn leave(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = match i.code() {
        Code::Leavew => 2,
        Code::Leaved => 4,
        _ => 8,
    };
    let sa = ctx.stack_addr_size();
    let bp = ctx.cpu.gpr[5];
    let v = ctx.read_mem(crate::cpu::SegReg::Ss, bp & mask(sa), size)?;
    ctx.set_sp(bp.wrapping_add(size as u64), sa);
    let r = match size {
        2 => Register::BP,
        4 => Register::EBP,
        _ => Register::RBP,
    };
    ctx.set_reg(r, v);
    Ok(())
}

/// PUSH r64 (64-bit mode): `push` without the operand decoding.
fn push_r64(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let v = ctx.cpu.gpr[d.r0 & 15];
    ctx.push(v, 8)
}

/// POP r64 (64-bit mode): `pop` without the operand decoding (RSP is incremented before the
/// destination is written, so POP RSP loads the popped value).
fn pop_r64(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let v = ctx.peek(0, 8)?;
    let sa = ctx.stack_addr_size();
    ctx.set_sp(ctx.cpu.gpr[4].wrapping_add(8), sa);
    ctx.cpu.gpr[d.r0 & 15] = v;
    Ok(())
}

/// Fast handlers for PUSH/POP of a 64-bit GPR.
pub(crate) fn specialize(d: &Decoded) -> Option<Handler> {
    if !d.op0_plain_gpr() || d.size != 8 {
        return None;
    }
    match d.code() {
        Code::Push_r64 => Some(push_r64),
        Code::Pop_r64 => Some(pop_r64),
        _ => None,
    }
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Push => push,
        Mnemonic::Pop => pop,
        Mnemonic::Pushf | Mnemonic::Pushfq | Mnemonic::Pushfd => pushf,
        Mnemonic::Popf | Mnemonic::Popfq | Mnemonic::Popfd => popf,
        Mnemonic::Enter => enter,
        Mnemonic::Leave => leave,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::flags;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn push_pop_enter_leave() {
        let (cpu, _) = run_asm(|a| {
            a.mov(rbp, 0x1234u64)?;
            a.mov(r12, rsp)?;
            a.push(0x55)?;
            a.pop(rax)?;
            a.push(-1)?; // sign-extended imm
            a.pop(rbx)?;
            a.enter(0x20, 0)?;
            a.mov(r13, rbp)?;
            a.leave()?;
            a.push(rsp)?;
            a.pop(r14)?;
            a.stc()?;
            a.pushfq()?;
            a.pop(r11)?;
            a.push(0x0)?;
            a.popfq()?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 0x55);
        assert_eq!(cpu.gpr[3], u64::MAX);
        assert_eq!(cpu.gpr[13], cpu.gpr[12] - 8);
        assert_eq!(cpu.gpr[5], 0x1234);
        assert_eq!(cpu.gpr[14], cpu.gpr[12], "push rsp pushes the old value");
        assert_eq!(cpu.gpr[11] & 0xfff, 0x3);
        assert_eq!(cpu.rflags & 0xfff, flags::FIXED);
    }

    #[test]
    fn enter_with_nesting_and_16_bit_push() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rbp, 0x7_0000u64)?;
            a.mov(qword_ptr(rbp - 8), 0x1111)?;
            a.mov(r12, rsp)?;
            a.enter(16, 2)?; // push rbp, copy one frame pointer, push new frame, reserve 16
            a.mov(r13, rsp)?;
            a.mov(r14, rbp)?;
            a.push(ax)?; // 16-bit push moves RSP by 2
            a.mov(r11, rsp)?;
            Ok(())
        });
        let frame = cpu.gpr[12] - 8;
        assert_eq!(cpu.gpr[14], frame);
        assert_eq!(read_u64(&mem, frame), 0x7_0000, "old rbp");
        assert_eq!(read_u64(&mem, frame - 8), 0x1111, "copied outer frame pointer");
        assert_eq!(read_u64(&mem, frame - 16), frame, "new frame pointer");
        assert_eq!(cpu.gpr[13], frame - 16 - 16);
        assert_eq!(cpu.gpr[11], cpu.gpr[13] - 2);
    }
}
