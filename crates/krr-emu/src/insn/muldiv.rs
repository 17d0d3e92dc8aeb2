//! MUL/IMUL/DIV/IDIV. Division by zero or a quotient that does not fit raises #DE.
//!
//! Undefined flags follow the CPU's vendor profile (`crate::vendor`, measured with
//! krr-difftest): after MUL/IMUL, AMD keeps SF/ZF/AF/PF, Intel sets SF from the low half's MSB
//! and PF from its low byte and clears ZF/AF; after DIV/IDIV, AMD keeps CF/OF, sets AF and
//! clears SF/ZF/PF, Intel changes no flag.

use iced_x86::{Code, Mnemonic, Register};

use super::alu::pf;
use super::{mask, sext, Decoded, Handler};
use crate::cpu::flags::{AF, CF, OF, PF, SF, ZF};

/// The flags MUL and IMUL leave as they were.
const KEPT: u64 = SF | ZF | AF | PF;
/// The flags DIV and IDIV leave as they were; of the others only AF ends up set.
const DIV_KEPT: u64 = CF | OF;
use crate::error::{ExResult, Exception};
use crate::exec::Ctx;

/// Reads the implicit accumulator pair (AL/AX/EAX/RAX and AH/DX/EDX/RDX).
fn acc(ctx: &Ctx<'_>, size: usize) -> (u64, u64) {
    match size {
        1 => (ctx.cpu.gpr[0] & 0xff, (ctx.cpu.gpr[0] >> 8) & 0xff),
        _ => (ctx.cpu.gpr[0] & mask(size), ctx.cpu.gpr[2] & mask(size)),
    }
}

fn set_acc(ctx: &mut Ctx<'_>, size: usize, lo: u64, hi: u64) {
    match size {
        1 => ctx.set_reg(Register::AX, (lo & 0xff) | ((hi & 0xff) << 8)),
        2 => {
            ctx.set_reg(Register::AX, lo);
            ctx.set_reg(Register::DX, hi);
        }
        4 => {
            ctx.set_reg(Register::EAX, lo);
            ctx.set_reg(Register::EDX, hi);
        }
        _ => {
            ctx.cpu.gpr[0] = lo;
            ctx.cpu.gpr[2] = hi;
        }
    }
}

/// The flags MUL/IMUL leave besides CF/OF (`overflow`), with `lo` the low half of the product.
fn mul_flags(ctx: &Ctx<'_>, lo: u64, size: usize, overflow: bool) -> u64 {
    let f = if ctx.intel() {
        pf(lo) | if (lo >> (size * 8 - 1)) & 1 != 0 { SF } else { 0 }
    } else {
        ctx.cpu.rflags & KEPT
    };
    f | if overflow { CF | OF } else { 0 }
}

fn mul(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let b = ctx.read_op(i, 0)? & mask(size);
    let (a, _) = acc(ctx, size);
    let p = u128::from(a) * u128::from(b);
    let bits = size * 8;
    let lo = (p as u64) & mask(size);
    let hi = ((p >> bits) as u64) & mask(size);
    set_acc(ctx, size, lo, hi);
    let f = mul_flags(ctx, lo, size, hi != 0);
    ctx.set_status(f);
    Ok(())
}

fn imul(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let bits = size * 8;
    let (a, b, one_op) = match i.op_count() {
        1 => (acc(ctx, size).0, ctx.read_op(i, 0)?, true),
        2 => (ctx.read_op(i, 0)?, ctx.read_op(i, 1)?, false),
        _ => (ctx.read_op(i, 1)?, ctx.read_op(i, 2)?, false),
    };
    let p = i128::from(sext(a & mask(size), size) as i64) * i128::from(sext(b & mask(size), size) as i64);
    let lo = (p as u64) & mask(size);
    let hi = ((p >> bits) as u64) & mask(size);
    let fits = i128::from(sext(lo, size) as i64) == p;
    if one_op {
        set_acc(ctx, size, lo, hi);
    } else {
        ctx.write_op(i, 0, lo)?;
    }
    let f = mul_flags(ctx, lo, size, !fits);
    ctx.set_status(f);
    Ok(())
}

fn div<const SIGNED: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let bits = size * 8;
    let d = ctx.read_op(i, 0)? & mask(size);
    if d == 0 {
        return Err(Exception::de().into());
    }
    let (lo, hi) = acc(ctx, size);
    let n = (u128::from(hi) << bits) | u128::from(lo);
    if SIGNED {
        let sh = 128 - 2 * bits as u32;
        let n = ((n << sh) as i128) >> sh;
        let d = i128::from(sext(d, size) as i64);
        let (Some(q), Some(r)) = (n.checked_div(d), n.checked_rem(d)) else {
            return Err(Exception::de().into());
        };
        let lim = 1i128 << (bits - 1);
        if q >= lim || q < -lim {
            return Err(Exception::de().into());
        }
        set_acc(ctx, size, (q as u64) & mask(size), (r as u64) & mask(size));
    } else {
        let q = n / u128::from(d);
        let r = n % u128::from(d);
        if q > u128::from(mask(size)) {
            return Err(Exception::de().into());
        }
        set_acc(ctx, size, q as u64, r as u64);
    }
    if !ctx.intel() {
        ctx.set_status((ctx.cpu.rflags & DIV_KEPT) | AF);
    }
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Mul => mul,
        Mnemonic::Imul => imul,
        Mnemonic::Div => div::<false>,
        Mnemonic::Idiv => div::<true>,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn mul_imul_div_idiv() {
        let (cpu, _) = run_asm(|a| {
            a.mov(rax, 0xffff_ffff_ffff_ffffu64)?;
            a.mov(rcx, 2u64)?;
            a.mul(rcx)?; // rdx:rax = 1:fffffffffffffffe
            a.mov(rbx, rdx)?;
            a.mov(rsi, rax)?;
            a.mov(eax, -7i32)?;
            a.cdq()?;
            a.mov(ecx, 2)?;
            a.idiv(ecx)?; // q=-3, r=-1
            a.mov(r8, rax)?;
            a.mov(r9, rdx)?;
            a.imul_3(r10, rcx, -5)?;
            a.mov(al, 200u32)?;
            a.mov(cl, 3)?;
            a.mul(cl)?; // ax = 600
            Ok(())
        });
        assert_eq!(cpu.gpr[3], 1);
        assert_eq!(cpu.gpr[6], 0xffff_ffff_ffff_fffe);
        assert_eq!(cpu.gpr[8], 0xffff_fffd);
        assert_eq!(cpu.gpr[9], 0xffff_ffff);
        assert_eq!(cpu.gpr[10], (-10i64) as u64);
        assert_eq!(cpu.gpr[0] & 0xffff, 600);
    }

    #[test]
    fn div_flags_as_the_reference_cpu() {
        // CF/OF kept, AF set, SF/ZF/PF cleared.
        let (cpu, _) = run_asm(|a| {
            a.mov(eax, 0x8c5)?; // CF PF ZF SF OF
            a.push(rax)?;
            a.popfq()?;
            a.mov(eax, 100)?;
            a.mov(edx, 0)?;
            a.mov(ecx, 7)?;
            a.div(ecx)?;
            a.pushfq()?;
            a.pop(rbx)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[3] & 0x8d5, 0x811);
    }

    #[test]
    fn divide_error_goes_through_idt() {
        let (cpu, _) = run_asm_expect_exception(|a| {
            a.xor(ecx, ecx)?;
            a.div(ecx)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[15], 0, "handler for vector 0 ran (r15 = vector)");
    }

    #[test]
    fn idiv_overflow_is_de() {
        let (cpu, _) = run_asm_expect_exception(|a| {
            a.mov(eax, 0x8000_0000u32)?;
            a.cdq()?;
            a.mov(ecx, -1i32)?;
            a.idiv(ecx)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[15], 0);
    }
}
