//! Integer arithmetic and logic: ADD/ADC/SUB/SBB/CMP/AND/OR/XOR/TEST/INC/DEC/NEG/NOT, and the
//! flag computations shared by other families.

use iced_x86::{Code, Mnemonic};

use super::{mask, sign_bit, Decoded, Handler};
use crate::cpu::flags::{AF, CF, OF, PF, SF, ZF};
use crate::error::ExResult;
use crate::exec::Ctx;

/// PF for the low byte of `v` (set when the number of one bits is even).
#[inline(always)]
pub(crate) fn pf(v: u64) -> u64 {
    PARITY[(v & 0xff) as usize]
}

/// PF value for each byte.
static PARITY: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        if (i as u8).count_ones() % 2 == 0 {
            t[i] = PF;
        }
        i += 1;
    }
    t
};

/// ZF, SF and PF of a `size`-byte result.
#[inline(always)]
pub(crate) fn szp(res: u64, size: usize) -> u64 {
    let mut f = pf(res);
    if res & mask(size) == 0 {
        f |= ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= SF;
    }
    f
}

/// a + b + carry: (result, status flags).
#[inline(always)]
pub(crate) fn add_flags(a: u64, b: u64, c: u64, size: usize) -> (u64, u64) {
    let m = mask(size);
    let wide = u128::from(a & m) + u128::from(b & m) + u128::from(c);
    let res = (wide as u64) & m;
    let mut f = szp(res, size);
    if wide > u128::from(m) {
        f |= CF;
    }
    if (a ^ res) & (b ^ res) & sign_bit(size) != 0 {
        f |= OF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= AF;
    }
    (res, f)
}

/// a - b - borrow: (result, status flags).
#[inline(always)]
pub(crate) fn sub_flags(a: u64, b: u64, c: u64, size: usize) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let res = a.wrapping_sub(b).wrapping_sub(c) & m;
    let mut f = szp(res, size);
    if u128::from(a) < u128::from(b) + u128::from(c) {
        f |= CF;
    }
    if (a ^ b) & (a ^ res) & sign_bit(size) != 0 {
        f |= OF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= AF;
    }
    (res, f)
}

/// Flags of a logical result: CF=OF=0; AF is undefined, Intel clears it.
#[inline(always)]
pub(crate) fn logic_flags(res: u64, size: usize) -> u64 {
    szp(res, size)
}

const ADD: u8 = 0;
const OR: u8 = 1;
const ADC: u8 = 2;
const SBB: u8 = 3;
const AND: u8 = 4;
const SUB: u8 = 5;
const XOR: u8 = 6;
const CMP: u8 = 7;
const TEST: u8 = 8;

/// Two-operand ALU op; CMP and TEST only set flags.
fn binop<const OP: u8>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let writes = OP != CMP && OP != TEST;
    let a = if writes { ctx.read_op_rmw(i, 0)? } else { ctx.read_op(i, 0)? };
    let b = ctx.read_op(i, 1)? & mask(size);
    let cf = ctx.cpu.rflags & CF;
    let (res, f) = match OP {
        ADD => add_flags(a, b, 0, size),
        ADC => add_flags(a, b, cf, size),
        SUB | CMP => sub_flags(a, b, 0, size),
        SBB => sub_flags(a, b, cf, size),
        OR => {
            let r = a | b;
            (r, logic_flags(r, size))
        }
        XOR => {
            let r = (a ^ b) & mask(size);
            (r, logic_flags(r, size))
        }
        _ => {
            let r = a & b;
            (r, logic_flags(r, size))
        }
    };
    if writes {
        ctx.write_op(i, 0, res)?;
    }
    ctx.set_status(f);
    Ok(())
}

fn inc_dec<const DEC: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    let (res, f) = if DEC { sub_flags(a, 1, 0, size) } else { add_flags(a, 1, 0, size) };
    ctx.write_op(i, 0, res)?;
    let cf = ctx.cpu.rflags & CF;
    ctx.set_status((f & !CF) | cf);
    Ok(())
}

fn neg(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    // 0 - a: sub_flags gives CF = (a != 0), as NEG defines it.
    let (res, f) = sub_flags(0, a, 0, size);
    ctx.write_op(i, 0, res)?;
    ctx.set_status(f);
    Ok(())
}

fn not(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let a = ctx.read_op_rmw(i, 0)?;
    ctx.write_op(i, 0, !a)
}

/// Register-register form of `binop` (SIZE is the operand size, a constant so masks fold).
fn binop_rr<const OP: u8, const SIZE: usize>(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let size = SIZE;
    let a = ctx.cpu.gpr[d.r0 & 15] & mask(size);
    let b = ctx.cpu.gpr[d.r1 & 15] & mask(size);
    binop_finish::<OP>(ctx, d, a, b, size);
    Ok(())
}

/// Register-immediate form of `binop`.
fn binop_ri<const OP: u8, const SIZE: usize>(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let size = SIZE;
    let a = ctx.cpu.gpr[d.r0 & 15] & mask(size);
    let b = d.imm & mask(size);
    binop_finish::<OP>(ctx, d, a, b, size);
    Ok(())
}

#[inline(always)]
fn binop_finish<const OP: u8>(ctx: &mut Ctx<'_>, d: &Decoded, a: u64, b: u64, size: usize) {
    let cf = ctx.cpu.rflags & CF;
    let (res, f) = match OP {
        ADD => add_flags(a, b, 0, size),
        ADC => add_flags(a, b, cf, size),
        SUB | CMP => sub_flags(a, b, 0, size),
        SBB => sub_flags(a, b, cf, size),
        OR => (a | b, logic_flags(a | b, size)),
        XOR => (a ^ b, logic_flags(a ^ b, size)),
        _ => (a & b, logic_flags(a & b, size)),
    };
    if OP != CMP && OP != TEST {
        ctx.set_gpr(d.r0, size, res);
    }
    ctx.set_status(f);
}

fn inc_dec_r<const DEC: bool, const SIZE: usize>(ctx: &mut Ctx<'_>, d: &Decoded) -> ExResult {
    let size = SIZE;
    let a = ctx.cpu.gpr[d.r0 & 15] & mask(size);
    let (res, f) = if DEC { sub_flags(a, 1, 0, size) } else { add_flags(a, 1, 0, size) };
    ctx.set_gpr(d.r0, size, res);
    let cf = ctx.cpu.rflags & CF;
    ctx.set_status((f & !CF) | cf);
    Ok(())
}

/// Fast handlers for register and immediate forms.
pub(crate) fn specialize(d: &Decoded) -> Option<Handler> {
    if !d.op0_plain_gpr() {
        return None;
    }
    let rr = d.op1_plain_gpr();
    let ri = d.op1_imm();
    macro_rules! sized {
        ($f:ident, $op:expr) => {
            match d.size {
                8 => $f::<$op, 8> as Handler,
                4 => $f::<$op, 4> as Handler,
                2 => $f::<$op, 2> as Handler,
                _ => $f::<$op, 1> as Handler,
            }
        };
    }
    macro_rules! pick {
        ($op:expr) => {
            if rr {
                Some(sized!(binop_rr, $op))
            } else if ri {
                Some(sized!(binop_ri, $op))
            } else {
                None
            }
        };
    }
    match d.mnemonic() {
        Mnemonic::Add => pick!(ADD),
        Mnemonic::Or => pick!(OR),
        Mnemonic::Adc => pick!(ADC),
        Mnemonic::Sbb => pick!(SBB),
        Mnemonic::And => pick!(AND),
        Mnemonic::Sub => pick!(SUB),
        Mnemonic::Xor => pick!(XOR),
        Mnemonic::Cmp => pick!(CMP),
        Mnemonic::Test => pick!(TEST),
        Mnemonic::Inc if d.op_count() == 1 => Some(sized!(inc_dec_r, false)),
        Mnemonic::Dec if d.op_count() == 1 => Some(sized!(inc_dec_r, true)),
        _ => None,
    }
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Add => binop::<ADD>,
        Mnemonic::Or => binop::<OR>,
        Mnemonic::Adc => binop::<ADC>,
        Mnemonic::Sbb => binop::<SBB>,
        Mnemonic::And => binop::<AND>,
        Mnemonic::Sub => binop::<SUB>,
        Mnemonic::Xor => binop::<XOR>,
        Mnemonic::Cmp => binop::<CMP>,
        Mnemonic::Test => binop::<TEST>,
        Mnemonic::Inc => inc_dec::<false>,
        Mnemonic::Dec => inc_dec::<true>,
        Mnemonic::Neg => neg,
        Mnemonic::Not => not,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn flag_helpers() {
        assert_eq!(add_flags(0x7f, 1, 0, 1), (0x80, SF | OF | AF));
        assert_eq!(add_flags(0xff, 1, 0, 1), (0, ZF | CF | PF | AF));
        assert_eq!(sub_flags(0, 1, 0, 4), (0xffff_ffff, CF | SF | PF | AF));
        assert_eq!(sub_flags(0x80, 1, 0, 1), (0x7f, OF | AF));
        assert_eq!(add_flags(u64::MAX, 0, 1, 8), (0, CF | ZF | PF | AF));
        assert_eq!(sub_flags(5, 5, 0, 8), (0, ZF | PF));
    }

    #[test]
    fn add_sub_adc_sbb_registers() {
        let (cpu, _) = run_asm(|a| {
            a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
            a.add(rax, 1)?; // CF=1, ZF=1
            a.mov(ebx, 5)?;
            a.adc(ebx, 10)?; // 16
            a.mov(cl, 0x80u32)?;
            a.sub(cl, 1)?; // 0x7f OF
            a.mov(rdx, 0u64)?;
            a.stc()?;
            a.sbb(rdx, 0)?; // -1, CF
            a.mov(rsi, 0x1234_5678_9abc_def0u64)?;
            a.xor(esi, esi)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 0);
        assert_eq!(cpu.gpr[3], 16);
        assert_eq!(cpu.gpr[1] & 0xff, 0x7f);
        assert_eq!(cpu.gpr[2], u64::MAX);
        assert_eq!(cpu.gpr[6], 0);
        assert_eq!(cpu.rflags & 0xfff, 0x2 | ZF | PF);
    }

    #[test]
    fn memory_rmw_and_partial_registers() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(qword_ptr(rdi), 0x10)?;
            a.add(qword_ptr(rdi), 0x20)?;
            a.mov(rax, 0x1122_3344_5566_7788u64)?;
            a.mov(ah, 0x99u32)?;
            a.inc(al)?;
            a.mov(ebx, 0xffff_ffffu32)?;
            a.mov(bx, 0)?;
            a.neg(qword_ptr(rdi))?;
            a.not(dword_ptr(rdi + 8))?;
            Ok(())
        });
        assert_eq!(read_u64(&mem, DATA), 0u64.wrapping_sub(0x30));
        assert_eq!(read_u64(&mem, DATA + 8), 0xffff_ffff);
        assert_eq!(cpu.gpr[0], 0x1122_3344_5566_9989);
        assert_eq!(cpu.gpr[3], 0xffff_0000);
        assert_ne!(cpu.rflags & CF, 0, "neg of nonzero sets CF");
    }

    #[test]
    fn inc_keeps_cf() {
        let (cpu, _) = run_asm(|a| {
            a.stc()?;
            a.mov(eax, 0x7fff_ffffu32)?;
            a.inc(eax)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 0x8000_0000);
        assert_eq!(cpu.rflags & (CF | OF | SF | AF), CF | OF | SF | AF);
    }

    /// Applies ALU op `k` to (dst, src) in the assembler.
    macro_rules! alu_op {
        ($a:expr, $k:expr, $d:expr, $s:expr) => {
            match $k {
                0 => $a.add($d, $s),
                1 => $a.or($d, $s),
                2 => $a.adc($d, $s),
                3 => $a.sbb($d, $s),
                4 => $a.and($d, $s),
                5 => $a.sub($d, $s),
                6 => $a.xor($d, $s),
                7 => $a.cmp($d, $s),
                _ => $a.test($d, $s),
            }
        };
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
        /// The fast register/immediate handlers agree with the generic memory-operand path.
        #[test]
        fn fast_paths_match_generic(
            k in 0u8..9,
            x in proptest::prelude::any::<u64>(),
            y in proptest::prelude::any::<u64>(),
            cf in proptest::prelude::any::<bool>(),
            imm in proptest::prelude::any::<i32>(),
        ) {
            let forms = [(true, false), (false, false), (true, true)];
            let (_, mem) = run_asm(|a| {
                a.mov(rdi, DATA)?;
                for (n, (wide, use_imm)) in forms.iter().enumerate() {
                    let out = (0x100 + n * 32) as i32;
                    a.mov(rax, x)?;
                    a.mov(rbx, y)?;
                    a.mov(qword_ptr(rdi + 8), rax)?;
                    if cf { a.stc()?; } else { a.clc()?; }
                    match (wide, use_imm) {
                        (true, false) => alu_op!(a, k, rax, rbx)?,
                        (false, false) => alu_op!(a, k, eax, ebx)?,
                        _ => alu_op!(a, k, rax, imm)?,
                    }
                    a.pushfq()?;
                    a.pop(qword_ptr(rdi + out))?;
                    a.mov(qword_ptr(rdi + out + 8), rax)?;
                    if cf { a.stc()?; } else { a.clc()?; }
                    match (wide, use_imm) {
                        (true, false) => alu_op!(a, k, qword_ptr(rdi + 8), rbx)?,
                        (false, false) => alu_op!(a, k, dword_ptr(rdi + 8), ebx)?,
                        _ => alu_op!(a, k, qword_ptr(rdi + 8), imm)?,
                    }
                    a.pushfq()?;
                    a.pop(qword_ptr(rdi + out + 16))?;
                    a.mov(rax, qword_ptr(rdi + 8))?;
                    a.mov(qword_ptr(rdi + out + 24), rax)?;
                }
                Ok(())
            });
            for (n, (wide, _)) in forms.iter().enumerate() {
                let o = DATA + 0x100 + n as u64 * 32;
                let m = if *wide { u64::MAX } else { 0xffff_ffff };
                proptest::prop_assert_eq!(read_u64(&mem, o), read_u64(&mem, o + 16), "flags, form {}", n);
                proptest::prop_assert_eq!(read_u64(&mem, o + 8) & m, read_u64(&mem, o + 24) & m, "result, form {}", n);
            }
        }
    }
}
