//! Data movement and flag-register instructions: MOV/MOVZX/MOVSX/MOVSXD/LEA, XCHG/XADD/
//! CMPXCHG/CMPXCHG8B/CMPXCHG16B, BSWAP, CBW..CQO, CMOVcc/SETcc, LAHF/SAHF, CLC/STC/CMC/CLD/
//! STD, NOPs.

use iced_x86::{Code, Mnemonic, OpKind, Register};

use super::alu::{add_flags, sub_flags};
use super::{cond, mask, sext, system, Decoded, Handler};
use crate::cpu::flags::{CF, DF, ZF};
use crate::error::{ExResult, Exception};
use crate::exec::Ctx;

fn mov(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let v = ctx.read_op(i, 1)?;
    ctx.write_op(i, 0, v)
}

fn movzx(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let ssize = ctx.op_size(i, 1);
    let v = ctx.read_op(i, 1)? & mask(ssize);
    ctx.write_op(i, 0, v)
}

fn movsx(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let ssize = ctx.op_size(i, 1);
    let v = sext(ctx.read_op(i, 1)?, ssize);
    ctx.write_op(i, 0, v)
}

fn lea(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let a = ctx.ea(i);
    ctx.write_op(i, 0, a)
}

fn xchg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let a = ctx.read_op_rmw(i, 0)?;
    let b = ctx.read_op_rmw(i, 1)?;
    // Memory operand (if any) first so a fault leaves registers untouched.
    if i.op_kind(1) == OpKind::Memory {
        ctx.write_op(i, 1, a)?;
        ctx.write_op(i, 0, b)
    } else {
        ctx.write_op(i, 0, b)?;
        ctx.write_op(i, 1, a)
    }
}

fn xadd(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let d = ctx.read_op_rmw(i, 0)?;
    let s = ctx.read_op(i, 1)?;
    let (res, f) = add_flags(d, s, 0, size);
    if i.op0_kind() == OpKind::Register {
        // Source first, so that `xadd r, r` with one register leaves the sum, as the CPU does.
        ctx.write_op(i, 1, d)?;
        ctx.write_op(i, 0, res)?;
    } else {
        // Memory first: a faulting store must leave the register untouched.
        ctx.write_op(i, 0, res)?;
        ctx.write_op(i, 1, d)?;
    }
    ctx.set_status(f);
    Ok(())
}

fn cmpxchg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let d = ctx.read_op_rmw(i, 0)?;
    let s = ctx.read_op(i, 1)?;
    let a = ctx.cpu.gpr[0] & mask(size);
    let (_, f) = sub_flags(a, d, 0, size);
    if a == d {
        ctx.write_op(i, 0, s)?;
    } else {
        // A memory destination is written back even on failure (a locked RMW always stores); a
        // register destination is left alone (the CPU keeps a 32-bit register's upper half).
        if i.op0_kind() != OpKind::Register {
            ctx.write_op(i, 0, d)?;
        }
        ctx.set_reg(super::acc_reg(size), d);
    }
    ctx.set_status(f);
    Ok(())
}

fn cmpxchg8b16b(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let wide = i.code() == Code::Cmpxchg16b_m128;
    let ea = ctx.ea(i);
    let seg = ctx.mseg(i);
    if wide {
        if !ctx.cpu.features.cx16 {
            return Err(Exception::ud().into());
        }
        if ea & 15 != 0 {
            return Err(Exception::gp(0).into());
        }
        let mut b = [0u8; 16];
        ctx.read_bytes(seg, ea, &mut b)?;
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let hi = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        let (rax, rdx) = (ctx.cpu.gpr[0], ctx.cpu.gpr[2]);
        let eq = lo == rax && hi == rdx;
        let (nlo, nhi) = if eq { (ctx.cpu.gpr[3], ctx.cpu.gpr[1]) } else { (lo, hi) };
        let mut o = [0u8; 16];
        o[..8].copy_from_slice(&nlo.to_le_bytes());
        o[8..].copy_from_slice(&nhi.to_le_bytes());
        ctx.write_bytes(seg, ea, &o)?;
        if !eq {
            ctx.cpu.gpr[0] = lo;
            ctx.cpu.gpr[2] = hi;
        }
        ctx.cpu.rflags = (ctx.cpu.rflags & !ZF) | if eq { ZF } else { 0 };
    } else {
        let m = ctx.read_mem_rmw(seg, ea, 8)?;
        let cur = (ctx.cpu.gpr[0] & 0xffff_ffff) | (ctx.cpu.gpr[2] << 32);
        let eq = m == cur;
        let new = if eq { (ctx.cpu.gpr[3] & 0xffff_ffff) | (ctx.cpu.gpr[1] << 32) } else { m };
        ctx.write_mem(seg, ea, 8, new)?;
        if !eq {
            ctx.cpu.gpr[0] = m & 0xffff_ffff;
            ctx.cpu.gpr[2] = m >> 32;
        }
        ctx.cpu.rflags = (ctx.cpu.rflags & !ZF) | if eq { ZF } else { 0 };
    }
    Ok(())
}

fn bswap(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let r = i.op_register(0);
    let v = ctx.reg(r);
    let nv = match super::gpr_info(r).1 {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        // BSWAP r16 is undefined; Intel zeroes the low word.
        _ => 0,
    };
    ctx.set_reg(r, nv);
    Ok(())
}

fn convert(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let a = ctx.cpu.gpr[0];
    match i.mnemonic() {
        Mnemonic::Cbw => ctx.set_reg(Register::AX, sext(a, 1)),
        Mnemonic::Cwde => ctx.set_reg(Register::EAX, sext(a, 2)),
        Mnemonic::Cdqe => ctx.cpu.gpr[0] = sext(a, 4),
        Mnemonic::Cwd => ctx.set_reg(Register::DX, sext(a, 2) >> 16),
        Mnemonic::Cdq => ctx.set_reg(Register::EDX, sext(a, 4) >> 32),
        _ => ctx.cpu.gpr[2] = ((a as i64) >> 63) as u64,
    }
    Ok(())
}

fn cmov(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let v = ctx.read_op(i, 1)?;
    if cond(ctx.cpu.rflags, i.condition_code()) {
        ctx.write_op(i, 0, v)
    } else {
        // A 32-bit destination is zero-extended even when the move does not happen.
        let cur = ctx.read_op(i, 0)?;
        ctx.write_op(i, 0, cur)
    }
}

fn setcc(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let v = u64::from(cond(ctx.cpu.rflags, i.condition_code()));
    ctx.write_op(i, 0, v)
}

fn lahf(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    let f = (ctx.cpu.rflags & 0xd5) | 2;
    ctx.set_reg(Register::AH, f);
    Ok(())
}

fn sahf(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    let ah = (ctx.cpu.gpr[0] >> 8) & 0xd5;
    ctx.cpu.rflags = (ctx.cpu.rflags & !0xd5) | ah;
    Ok(())
}

fn flag_op(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let f = &mut ctx.cpu.rflags;
    match i.mnemonic() {
        Mnemonic::Clc => *f &= !CF,
        Mnemonic::Stc => *f |= CF,
        Mnemonic::Cmc => *f ^= CF,
        Mnemonic::Cld => *f &= !DF,
        _ => *f |= DF,
    }
    Ok(())
}

fn xlat(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    // XLATB: AL = [seg:(R/E)BX + AL]; the address size follows the memory operand's base.
    let base = i.memory_base();
    let off = ctx.reg(base).wrapping_add(ctx.cpu.gpr[0] & 0xff) & mask(super::gpr_info(base).1.max(2));
    let v = ctx.read_mem(ctx.mseg(i), off, 1)?;
    ctx.set_reg(Register::AL, v);
    Ok(())
}

fn nop(_ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    Ok(())
}

/// A spin-loop hint: architecturally a NOP; counted so a VMM can end the vCPU's time slice
/// (pause-loop exiting).
fn pause(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    ctx.cpu.pauses += 1;
    Ok(())
}

fn mov_rr(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let v = ctx.cpu.gpr[d.r1];
    ctx.set_gpr(d.r0, d.size, v);
    Ok(())
}

fn mov_ri(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    ctx.set_gpr(d.r0, d.size, d.imm);
    Ok(())
}

/// Fast handlers for register/immediate MOV.
pub(crate) fn specialize(d: &Decoded) -> Option<Handler> {
    if d.mnemonic() != Mnemonic::Mov || d.op_count() != 2 {
        return None;
    }
    // MOV [m], r32/r64.
    if d.op_kind(0) == OpKind::Memory && d.op_kind(1) == OpKind::Register {
        return match super::gpr_info(d.op_register(1)) {
            (_, 8, false) if d.memory_size().size() == 8 => Some(mov_store as Handler),
            (_, 4, false) if d.memory_size().size() == 4 => Some(mov_store as Handler),
            _ => None,
        };
    }
    // Segment/control/debug register forms fail the plain-GPR/immediate tests below.
    if !d.op0_plain_gpr() {
        return None;
    }
    if d.op1_plain_gpr() {
        Some(mov_rr)
    } else if d.op1_imm() {
        Some(mov_ri)
    } else if d.op_kind(1) == OpKind::Memory && d.memory_size().size() == d.size {
        match d.size {
            8 => Some(mov_load::<8>),
            4 => Some(mov_load::<4>),
            _ => None,
        }
    } else {
        None
    }
}

/// MOV r32/r64, [m]: `mov` without the operand-kind dispatch.
fn mov_load<const SIZE: usize>(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let v = ctx.read_op_mem(d, false)?;
    ctx.set_gpr(d.r0, SIZE, v);
    Ok(())
}

/// MOV [m], r32/r64 (memory operand of the register's size).
fn mov_store(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let (r, _, _) = super::gpr_info(d.op_register(1));
    let v = ctx.cpu.gpr[r & 15];
    ctx.write_op_mem(d, v)
}

/// MOV to/from segment, control and debug registers are system instructions.
fn mov_special(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Mov_rm16_Sreg | Code::Mov_r32m16_Sreg | Code::Mov_r64m16_Sreg => system::mov_from_sreg,
        Code::Mov_Sreg_rm16 | Code::Mov_Sreg_r32m16 | Code::Mov_Sreg_r64m16 => system::mov_to_sreg,
        Code::Mov_r32_cr | Code::Mov_r64_cr => system::mov_from_cr,
        Code::Mov_cr_r32 | Code::Mov_cr_r64 => system::mov_to_cr,
        Code::Mov_r32_dr | Code::Mov_r64_dr => system::mov_from_dr,
        Code::Mov_dr_r32 | Code::Mov_dr_r64 => system::mov_to_dr,
        Code::Mov_r32_tr | Code::Mov_tr_r32 => return None,
        _ => mov,
    })
}

/// Dispatch for this family.
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Mov => return mov_special(code),
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Xchg => xchg,
        Mnemonic::Xadd => xadd,
        Mnemonic::Cmpxchg => cmpxchg,
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b => cmpxchg8b16b,
        Mnemonic::Bswap => bswap,
        Mnemonic::Cbw | Mnemonic::Cwde | Mnemonic::Cdqe | Mnemonic::Cwd | Mnemonic::Cdq | Mnemonic::Cqo => {
            convert
        }
        Mnemonic::Cmovo
        | Mnemonic::Cmovno
        | Mnemonic::Cmovb
        | Mnemonic::Cmovae
        | Mnemonic::Cmove
        | Mnemonic::Cmovne
        | Mnemonic::Cmovbe
        | Mnemonic::Cmova
        | Mnemonic::Cmovs
        | Mnemonic::Cmovns
        | Mnemonic::Cmovp
        | Mnemonic::Cmovnp
        | Mnemonic::Cmovl
        | Mnemonic::Cmovge
        | Mnemonic::Cmovle
        | Mnemonic::Cmovg => cmov,
        Mnemonic::Seto
        | Mnemonic::Setno
        | Mnemonic::Setb
        | Mnemonic::Setae
        | Mnemonic::Sete
        | Mnemonic::Setne
        | Mnemonic::Setbe
        | Mnemonic::Seta
        | Mnemonic::Sets
        | Mnemonic::Setns
        | Mnemonic::Setp
        | Mnemonic::Setnp
        | Mnemonic::Setl
        | Mnemonic::Setge
        | Mnemonic::Setle
        | Mnemonic::Setg => setcc,
        Mnemonic::Lahf => lahf,
        Mnemonic::Xlatb => xlat,
        Mnemonic::Sahf => sahf,
        Mnemonic::Clc | Mnemonic::Stc | Mnemonic::Cmc | Mnemonic::Cld | Mnemonic::Std => flag_op,
        // ENDBR is a NOP while CET is off (krr's CPUID offers no CET).
        Mnemonic::Nop | Mnemonic::Endbr64 | Mnemonic::Endbr32 => nop,
        Mnemonic::Pause => pause,
        // Prefetches are hints.
        Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw => nop,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::flags::ZF;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn moves_and_extensions() {
        let (cpu, _) = run_asm(|a| {
            a.mov(rax, -1i64)?;
            a.mov(eax, 0x80)?;
            a.movsx(rbx, al)?;
            a.movzx(ecx, al)?;
            a.mov(edx, 0xffff_fff0u32)?;
            a.movsxd(rsi, edx)?;
            a.lea(rdi, qword_ptr(rsi + rcx * 2 + 0x10))?;
            a.mov(r8d, 0x1122_3344)?;
            a.bswap(r8d)?;
            a.mov(eax, 0xffff_8000u32)?;
            a.cwde()?;
            a.cdqe()?;
            a.cqo()?;
            Ok(())
        });
        assert_eq!(cpu.gpr[3], 0xffff_ffff_ffff_ff80);
        assert_eq!(cpu.gpr[1], 0x80);
        assert_eq!(cpu.gpr[6], 0xffff_ffff_ffff_fff0);
        assert_eq!(cpu.gpr[7], 0xffff_ffff_ffff_fff0u64.wrapping_add(0x110));
        assert_eq!(cpu.gpr[8], 0x4433_2211);
        assert_eq!(cpu.gpr[0], 0xffff_ffff_ffff_8000);
        assert_eq!(cpu.gpr[2], u64::MAX);
    }

    #[test]
    fn cmpxchg_xadd_xchg_cmov_setcc() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(qword_ptr(rdi), 5)?;
            a.mov(eax, 5)?;
            a.mov(ecx, 9)?;
            a.lock().cmpxchg(qword_ptr(rdi), rcx)?; // succeeds -> 9
            a.setz(r8b)?;
            a.mov(eax, 1)?;
            a.cmpxchg(qword_ptr(rdi), rcx)?; // fails -> rax = 9
            a.mov(r9, rax)?;
            a.mov(edx, 3)?;
            a.xadd(qword_ptr(rdi), rdx)?; // mem 12, rdx 9
            a.mov(r10, -1i64)?;
            a.xchg(r10d, edx)?;
            a.cmp(edx, edx)?;
            a.mov(r11, -1i64)?;
            a.cmovne(r11d, edx)?; // not taken, still zero-extends
            a.mov(qword_ptr(rdi + 8), 0x10)?;
            a.mov(eax, 0x10)?;
            a.xor(edx, edx)?;
            a.mov(ebx, 0x77)?;
            a.xor(ecx, ecx)?;
            a.cmpxchg8b(qword_ptr(rdi + 8))?;
            a.setz(r12b)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[8] & 0xff, 1);
        assert_eq!(cpu.gpr[9], 9);
        assert_eq!(read_u64(&mem, DATA), 12);
        assert_eq!(cpu.gpr[10], 9);
        assert_eq!(cpu.gpr[11], 0xffff_ffff);
        assert_eq!(read_u64(&mem, DATA + 8), 0x77);
        assert_eq!(cpu.gpr[12] & 0xff, 1);
        assert_ne!(cpu.rflags & ZF, 0);
    }

    #[test]
    fn flags_register_and_misc() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(eax, 0x1234_5680)?;
            a.add(al, 0x80)?; // CF=1, ZF=1, PF=1, OF=1
            a.lahf()?;
            a.mov(r10d, eax)?;
            a.mov(ah, 0x00)?;
            a.sahf()?; // clears CF/ZF/PF/SF/AF (OF stays)
            a.setc(byte_ptr(rdi))?;
            a.seto(byte_ptr(rdi + 1))?;
            a.cmc()?;
            a.setb(byte_ptr(rdi + 2))?;
            a.mov(ax, -2i32)?;
            a.cbw()?; // al=0xfe -> ax=0xfffe
            a.cwd()?; // dx = 0xffff
            a.mov(qword_ptr(rdi + 8), 5)?;
            a.mov(ecx, 7)?;
            a.xchg(qword_ptr(rdi + 8), rcx)?;
            a.lea(rsi, ptr(rdi + 0x40))?;
            a.mov(al, 3)?;
            a.mov(byte_ptr(rdi + 0x43), 0x99u32)?;
            a.mov(rbx, rsi)?;
            a.xlatb()?;
            Ok(())
        });
        assert_eq!((cpu.gpr[10] >> 8) & 0xff, 0x47, "LAHF: SF=0 ZF=1 AF=0 PF=1 CF=1 + bit 1");
        assert_eq!(mem.dump(DATA, 3).unwrap(), vec![0, 1, 1]);
        assert_eq!(cpu.gpr[2] & 0xffff, 0xffff);
        assert_eq!(read_u64(&mem, DATA + 8), 7);
        assert_eq!(cpu.gpr[1], 5);
        assert_eq!(cpu.gpr[0] & 0xff, 0x99);
    }

    #[test]
    fn cmpxchg16b_and_alignment() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(qword_ptr(rdi), 1)?;
            a.mov(qword_ptr(rdi + 8), 2)?;
            a.mov(eax, 1)?;
            a.mov(edx, 2)?;
            a.mov(ebx, 3)?;
            a.mov(ecx, 4)?;
            a.lock().cmpxchg16b(xmmword_ptr(rdi))?; // equal: stores rcx:rbx
            a.setz(r8b)?;
            a.lock().cmpxchg16b(xmmword_ptr(rdi))?; // not equal now: loads rdx:rax
            a.setz(r9b)?;
            Ok(())
        });
        assert_eq!((read_u64(&mem, DATA), read_u64(&mem, DATA + 8)), (3, 4));
        assert_eq!((cpu.gpr[8] & 0xff, cpu.gpr[9] & 0xff), (1, 0));
        assert_eq!((cpu.gpr[0], cpu.gpr[2]), (3, 4));
        let (cpu, _) = run_asm_expect_exception(|a| {
            a.mov(rdi, DATA + 8)?;
            a.cmpxchg16b(xmmword_ptr(rdi))
        });
        assert_eq!(cpu.gpr[15], 13, "misaligned CMPXCHG16B is #GP");
    }
}
