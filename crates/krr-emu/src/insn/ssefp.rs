//! SSE/SSE2 scalar floating point: ADD/SUB/MUL/DIV/MIN/MAX SS/SD, COMISS/COMISD/UCOMISS/
//! UCOMISD, CVTSI2SS/SD, CVT(T)SS2SI/CVT(T)SD2SI, CVTSS2SD/CVTSD2SS.
//!
//! Results are computed with the host's IEEE arithmetic (x86 semantics: first-operand NaN
//! propagation and the default QNaN are applied explicitly) and the MXCSR flags are derived
//! exactly: inexactness through error-free transformations (TwoSum, FMA residuals, exact
//! products). Only the default environment is supported — all exceptions masked,
//! round-to-nearest, no FTZ/DAZ — and the one case whose flags depend on the tininess rule
//! (an inexact result below 2^-968 from MUL/DIV/CVTSD2SS, i.e. a possible underflow) stops with
//! `EmuError::Unsupported` rather than guess.

use iced_x86::{Code, Mnemonic};

use super::sse::{check_sse, read_x, xmm_index};
use super::{Decoded, Handler};
use crate::cpu::flags;
use crate::error::{EmuError, ExResult};
use crate::exec::Ctx;

const IE: u32 = 1;
const DE: u32 = 2;
const ZE: u32 = 4;
const OE: u32 = 8;
const PE: u32 = 32;

/// x86's default ("indefinite") QNaNs.
const QNAN64: u64 = 0xfff8_0000_0000_0000;
const QNAN32: u64 = 0xffc0_0000;

/// Below this magnitude an inexact MUL/DIV result may underflow (UE depends on tininess rules).
const TINY: f64 = 1.0e-291; // ~2^-966

/// Operand format: double (8 bytes) or single (4 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fmt {
    D,
    S,
}

impl Fmt {
    fn is_nan(self, b: u64) -> bool {
        match self {
            Fmt::D => f64::from_bits(b).is_nan(),
            Fmt::S => f32::from_bits(b as u32).is_nan(),
        }
    }
    fn is_snan(self, b: u64) -> bool {
        self.is_nan(b)
            && match self {
                Fmt::D => b & (1 << 51) == 0,
                Fmt::S => b & (1 << 22) == 0,
            }
    }
    fn quiet(self, b: u64) -> u64 {
        match self {
            Fmt::D => b | (1 << 51),
            Fmt::S => b | (1 << 22),
        }
    }
    fn is_denormal(self, b: u64) -> bool {
        match self {
            Fmt::D => b & 0x7ff0_0000_0000_0000 == 0 && b & 0x000f_ffff_ffff_ffff != 0,
            Fmt::S => b & 0x7f80_0000 == 0 && b & 0x007f_ffff != 0,
        }
    }
    fn to_f64(self, b: u64) -> f64 {
        match self {
            Fmt::D => f64::from_bits(b),
            Fmt::S => f64::from(f32::from_bits(b as u32)),
        }
    }
    fn qnan(self) -> u64 {
        match self {
            Fmt::D => QNAN64,
            Fmt::S => QNAN32,
        }
    }
    fn mask(self) -> u128 {
        match self {
            Fmt::D => u128::from(u64::MAX),
            Fmt::S => 0xffff_ffff,
        }
    }
}

fn unsupported(ctx: &Ctx<'_>, what: &'static str) -> crate::error::Fault {
    EmuError::Unsupported { rip: ctx.start_rip, what }.into()
}

/// Only the default MXCSR environment is modelled.
fn check_env(ctx: &Ctx<'_>) -> ExResult {
    check_sse(ctx)?;
    if ctx.cpu.fpu.mxcsr & 0xffc0 != 0x1f80 {
        return Err(unsupported(ctx, "SSE floating point outside the default MXCSR environment"));
    }
    Ok(())
}

/// Exact error of a + b (TwoSum); zero iff the sum is exact.
fn two_sum_err(a: f64, b: f64, s: f64) -> f64 {
    let bv = s - a;
    let av = s - bv;
    (a - av) + (b - bv)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// Computes `a op b` in format `f`: Ok((result bits, MXCSR flags)) or Err(()) for the
/// tininess-dependent case.
fn arith(f: Fmt, op: Op, a: u64, b: u64) -> Result<(u64, u32), ()> {
    let (na, nb) = (f.is_nan(a), f.is_nan(b));
    if op == Op::Min || op == Op::Max {
        if na || nb {
            return Ok((b, IE));
        }
        let fl = if f.is_denormal(a) || f.is_denormal(b) { DE } else { 0 };
        let (x, y) = (f.to_f64(a), f.to_f64(b));
        let pick_a = if op == Op::Min { x < y } else { x > y };
        return Ok((if pick_a { a } else { b }, fl));
    }
    if na || nb {
        let fl = if f.is_snan(a) || f.is_snan(b) { IE } else { 0 };
        return Ok((f.quiet(if na { a } else { b }), fl));
    }
    let (x, y) = (f.to_f64(a), f.to_f64(b));
    let invalid = match op {
        Op::Add => x.is_infinite() && y.is_infinite() && x.is_sign_positive() != y.is_sign_positive(),
        Op::Sub => x.is_infinite() && y.is_infinite() && x.is_sign_positive() == y.is_sign_positive(),
        Op::Mul => (x == 0.0 && y.is_infinite()) || (x.is_infinite() && y == 0.0),
        _ => (x == 0.0 && y == 0.0) || (x.is_infinite() && y.is_infinite()),
    };
    if invalid {
        return Ok((f.qnan(), IE));
    }
    if op == Op::Div && y == 0.0 && x.is_finite() {
        let inf =
            if x.is_sign_negative() != y.is_sign_negative() { f64::NEG_INFINITY } else { f64::INFINITY };
        return Ok((bits(f, inf), ZE));
    }
    let mut fl = if f.is_denormal(a) || f.is_denormal(b) { DE } else { 0 };
    let finite_in = x.is_finite() && y.is_finite();
    // Exact (or, for single, correctly rounded via double: innocuous double rounding) value.
    let (r64, exact64) = match op {
        Op::Add | Op::Sub => {
            let y = if op == Op::Sub { -y } else { y };
            let s = x + y;
            (s, !s.is_finite() || two_sum_err(x, y, s) == 0.0)
        }
        Op::Mul => {
            let p = x * y;
            let tiny = p != 0.0 && p.abs() < TINY || (p == 0.0 && x != 0.0 && y != 0.0);
            if tiny && f == Fmt::D {
                return Err(());
            }
            (p, !p.is_finite() || p == 0.0 || x.mul_add(y, -p) == 0.0)
        }
        _ => {
            let q = x / y;
            if f == Fmt::D && finite_in && (q != 0.0 && q.abs() < TINY || (q == 0.0 && x != 0.0)) {
                return Err(());
            }
            (q, !q.is_finite() || q == 0.0 || (-q).mul_add(y, x) == 0.0)
        }
    };
    let r = match f {
        Fmt::D => r64,
        Fmt::S => f64::from(r64 as f32),
    };
    let exact = exact64 && r == r64;
    if finite_in && r.is_infinite() {
        fl |= OE | PE;
    } else if !exact {
        if f == Fmt::S && r.abs() < f64::from(f32::MIN_POSITIVE) {
            return Err(());
        }
        fl |= PE;
    }
    Ok((bits(f, r), fl))
}

fn bits(f: Fmt, v: f64) -> u64 {
    match f {
        Fmt::D => v.to_bits(),
        Fmt::S => u64::from((v as f32).to_bits()),
    }
}

fn scalar_arith(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(
        m,
        Mnemonic::Addss
            | Mnemonic::Subss
            | Mnemonic::Mulss
            | Mnemonic::Divss
            | Mnemonic::Minss
            | Mnemonic::Maxss
    ) {
        Fmt::S
    } else {
        Fmt::D
    };
    let op = match m {
        Mnemonic::Addss | Mnemonic::Addsd => Op::Add,
        Mnemonic::Subss | Mnemonic::Subsd => Op::Sub,
        Mnemonic::Mulss | Mnemonic::Mulsd => Op::Mul,
        Mnemonic::Divss | Mnemonic::Divsd => Op::Div,
        Mnemonic::Minss | Mnemonic::Minsd => Op::Min,
        _ => Op::Max,
    };
    let d = xmm_index(i.op_register(0));
    let a = (ctx.cpu.fpu.xmm[d] & f.mask()) as u64;
    let b = (read_x(ctx, i, 1, false)? & f.mask()) as u64;
    let (r, fl) = arith(f, op, a, b).map_err(|()| unsupported(ctx, "possibly underflowing SSE result"))?;
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f.mask()) | u128::from(r);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn compare(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(m, Mnemonic::Comiss | Mnemonic::Ucomiss) { Fmt::S } else { Fmt::D };
    let ordered_signals = matches!(m, Mnemonic::Comiss | Mnemonic::Comisd);
    let a = (ctx.cpu.fpu.xmm[xmm_index(i.op_register(0))] & f.mask()) as u64;
    let b = (read_x(ctx, i, 1, false)? & f.mask()) as u64;
    let (zpc, fl) = if f.is_nan(a) || f.is_nan(b) {
        let ie = f.is_snan(a) || f.is_snan(b) || ordered_signals;
        (flags::ZF | flags::PF | flags::CF, if ie { IE } else { 0 })
    } else {
        let (x, y) = (f.to_f64(a), f.to_f64(b));
        let de = if f.is_denormal(a) || f.is_denormal(b) { DE } else { 0 };
        let z = if x > y {
            0
        } else if x < y {
            flags::CF
        } else {
            flags::ZF
        };
        (z, de)
    };
    ctx.set_status(zpc);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn cvt_int_to_fp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_env(ctx)?;
    let wide = matches!(i.code(), Code::Cvtsi2sd_xmm_rm64 | Code::Cvtsi2ss_xmm_rm64);
    let raw = ctx.read_op(i, 1)?;
    let v: i64 = if wide { raw as i64 } else { i64::from(raw as i32) };
    let (r, exact, f) = if i.mnemonic() == Mnemonic::Cvtsi2sd {
        let r = v as f64;
        (r.to_bits(), r as i128 == i128::from(v), Fmt::D)
    } else {
        let r = v as f32;
        (u64::from(r.to_bits()), r as i128 == i128::from(v), Fmt::S)
    };
    let d = xmm_index(i.op_register(0));
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f.mask()) | u128::from(r);
    if !exact {
        ctx.cpu.fpu.mxcsr |= PE;
    }
    Ok(())
}

fn cvt_fp_to_int(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(m, Mnemonic::Cvtss2si | Mnemonic::Cvttss2si) { Fmt::S } else { Fmt::D };
    let truncate = matches!(m, Mnemonic::Cvttss2si | Mnemonic::Cvttsd2si);
    let b = (read_x(ctx, i, 1, false)? & f.mask()) as u64;
    let dst = i.op_register(0);
    let (_, size, _) = super::gpr_info(dst);
    let (lo, hi) =
        if size == 8 { (-(2f64.powi(63)), 2f64.powi(63)) } else { (-(2f64.powi(31)), 2f64.powi(31)) };
    let indefinite: u64 = if size == 8 { 1 << 63 } else { 1 << 31 };
    let x = f.to_f64(b);
    let (v, fl) = if x.is_nan() {
        (indefinite, IE)
    } else {
        let r = if truncate { x.trunc() } else { x.round_ties_even() };
        if r < lo || r >= hi {
            (indefinite, IE)
        } else {
            // CVT(T)S*2SI report only invalid and precision (no denormal flag).
            (r as i64 as u64, if r != x { PE } else { 0 })
        }
    };
    ctx.set_reg(dst, v);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn cvt_fp_to_fp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_env(ctx)?;
    let d = xmm_index(i.op_register(0));
    let (r, fl, f_out) = if i.mnemonic() == Mnemonic::Cvtss2sd {
        let b = (read_x(ctx, i, 1, false)? & 0xffff_ffff) as u64;
        if Fmt::S.is_nan(b) {
            let q = Fmt::S.quiet(b);
            let r = ((q & 0x8000_0000) << 32) | 0x7ff0_0000_0000_0000 | ((q & 0x7f_ffff) << 29);
            (r, if Fmt::S.is_snan(b) { IE } else { 0 }, Fmt::D)
        } else {
            let fl = if Fmt::S.is_denormal(b) { DE } else { 0 };
            (f64::from(f32::from_bits(b as u32)).to_bits(), fl, Fmt::D)
        }
    } else {
        let b = read_x(ctx, i, 1, false)? as u64;
        if Fmt::D.is_nan(b) {
            let q = Fmt::D.quiet(b);
            let r = ((q >> 32) & 0x8000_0000) | 0x7f80_0000 | ((q >> 29) & 0x7f_ffff);
            (r, if Fmt::D.is_snan(b) { IE } else { 0 }, Fmt::S)
        } else {
            let x = f64::from_bits(b);
            let r = x as f32;
            let mut fl = if Fmt::D.is_denormal(b) { DE } else { 0 };
            if x.is_finite() && r.is_infinite() {
                fl |= OE | PE;
            } else if f64::from(r) != x {
                if r.abs() < f32::MIN_POSITIVE {
                    return Err(unsupported(ctx, "possibly underflowing SSE result"));
                }
                fl |= PE;
            }
            (u64::from(r.to_bits()), fl, Fmt::S)
        }
    };
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f_out.mask()) | u128::from(r);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

/// Dispatch for this family (XMM forms only).
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    use Mnemonic as M;
    if !format!("{code:?}").contains("xmm") {
        return None;
    }
    Some(match m {
        M::Addss
        | M::Addsd
        | M::Subss
        | M::Subsd
        | M::Mulss
        | M::Mulsd
        | M::Divss
        | M::Divsd
        | M::Minss
        | M::Minsd
        | M::Maxss
        | M::Maxsd => scalar_arith,
        M::Comiss | M::Comisd | M::Ucomiss | M::Ucomisd => compare,
        M::Cvtsi2sd | M::Cvtsi2ss => cvt_int_to_fp,
        M::Cvtss2si | M::Cvtsd2si | M::Cvttss2si | M::Cvttsd2si => cvt_fp_to_int,
        M::Cvtss2sd | M::Cvtsd2ss => cvt_fp_to_fp,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    fn d(x: f64) -> u64 {
        x.to_bits()
    }

    #[test]
    fn arithmetic_flags() {
        assert_eq!(arith(Fmt::D, Op::Add, d(1.0), d(2.0)), Ok((d(3.0), 0)));
        assert_eq!(arith(Fmt::D, Op::Add, d(1.0), d(1e-30)), Ok((d(1.0), PE)));
        assert_eq!(arith(Fmt::D, Op::Div, d(1.0), d(3.0)), Ok((d(1.0 / 3.0), PE)));
        assert_eq!(arith(Fmt::D, Op::Div, d(1.0), d(0.0)), Ok((d(f64::INFINITY), ZE)));
        assert_eq!(arith(Fmt::D, Op::Div, d(0.0), d(0.0)), Ok((QNAN64, IE)));
        assert_eq!(arith(Fmt::D, Op::Mul, d(1e300), d(1e300)), Ok((d(f64::INFINITY), OE | PE)));
        assert_eq!(arith(Fmt::D, Op::Sub, d(f64::INFINITY), d(f64::INFINITY)), Ok((QNAN64, IE)));
        // First-operand NaN wins; SNaN signals and is quieted.
        let snan = 0x7ff0_0000_0000_0001;
        assert_eq!(arith(Fmt::D, Op::Add, snan, d(f64::NAN)), Ok((snan | (1 << 51), IE)));
        assert_eq!(arith(Fmt::D, Op::Min, d(0.0), d(-0.0)), Ok((d(-0.0), 0)), "equal: second operand");
        assert_eq!(arith(Fmt::D, Op::Max, d(f64::NAN), d(1.0)), Ok((d(1.0), IE)));
        assert_eq!(arith(Fmt::D, Op::Mul, d(1e-200), d(1e-200)), Err(()), "underflow is not guessed");
        // Single precision via double: 1/3 rounds, 0.5*4 exact.
        let f = |x: f32| u64::from(x.to_bits());
        assert_eq!(arith(Fmt::S, Op::Div, f(1.0), f(3.0)), Ok((f(1.0 / 3.0), PE)));
        assert_eq!(arith(Fmt::S, Op::Mul, f(0.5), f(4.0)), Ok((f(2.0), 0)));
        assert_eq!(arith(Fmt::S, Op::Add, f(16_777_216.0), f(1.0)), Ok((f(16_777_216.0), PE)));
    }

    #[test]
    fn conversions_and_compare_in_program() {
        let (cpu, _) = run_asm(|a| {
            a.mov(eax, 7)?;
            a.cvtsi2sd(xmm0, eax)?;
            a.mov(ecx, 2)?;
            a.cvtsi2sd(xmm1, ecx)?;
            a.divsd(xmm0, xmm1)?; // 3.5
            a.cvttsd2si(ebx, xmm0)?; // 3, PE
            a.cvtsd2si(edx, xmm0)?; // 4 (ties to even)
            a.comisd(xmm0, xmm1)?; // 3.5 > 2: ZF=PF=CF=0
            a.setbe(r8b)?;
            a.cvtsd2ss(xmm2, xmm0)?;
            a.cvtss2sd(xmm3, xmm2)?;
            Ok(())
        });
        assert_eq!(cpu.fpu.xmm[0] as u64, 3.5f64.to_bits());
        assert_eq!(cpu.gpr[3], 3);
        assert_eq!(cpu.gpr[2], 4);
        assert_eq!(cpu.gpr[8] & 0xff, 0);
        assert_eq!(cpu.fpu.xmm[3] as u64, 3.5f64.to_bits());
        assert_eq!(cpu.fpu.mxcsr, 0x1f80 | PE);
    }
}
