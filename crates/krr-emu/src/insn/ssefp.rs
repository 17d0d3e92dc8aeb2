//! SSE/SSE2 scalar floating point: ADD/SUB/MUL/DIV/MIN/MAX/SQRT SS/SD, CMPSS/CMPSD,
//! COMISS/COMISD/UCOMISS/UCOMISD, CVTSI2SS/SD, CVT(T)SS2SI/CVT(T)SD2SI, CVTSS2SD/CVTSD2SS, and
//! the per-lane operations `ssepacked.rs` uses.
//!
//! Results are computed with the host's IEEE arithmetic rounded to nearest (x86 semantics:
//! first-operand NaN propagation and the default QNaN are applied explicitly), the MXCSR flags
//! derived exactly (inexactness and error direction through TwoSum and exact integer products),
//! and then adapted to MXCSR ([`Env`]): rounding mode, DAZ, FTZ, underflow with tininess
//! detected after rounding (measured on the reference CPU). An exception MXCSR leaves unmasked
//! raises #XM (#UD without CR4.OSXMMEXCPT) with the destination unchanged ([`check_xm`]).

use std::cmp::Ordering;

use iced_x86::{Code, Mnemonic};

use super::sse::{check_sse, read_x, xmm_index};
use super::{Decoded, Handler};
use crate::cpu::{cr, flags};
use crate::error::{vector, EmuError, ExResult, Exception};
use crate::exec::Ctx;

const IE: u32 = 1;
const DE: u32 = 2;
const ZE: u32 = 4;
const OE: u32 = 8;
const UE: u32 = 16;
const PE: u32 = 32;

/// x86's default ("indefinite") QNaNs.
const QNAN64: u64 = 0xfff8_0000_0000_0000;
const QNAN32: u64 = 0xffc0_0000;

/// Operand format: double (8 bytes) or single (4 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Fmt {
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
    fn sign_bit(self) -> u64 {
        match self {
            Fmt::D => 1 << 63,
            Fmt::S => 1 << 31,
        }
    }
    fn max_finite(self) -> u64 {
        match self {
            Fmt::D => f64::MAX.to_bits(),
            Fmt::S => u64::from(f32::MAX.to_bits()),
        }
    }
    pub(super) fn mask(self) -> u128 {
        match self {
            Fmt::D => u128::from(u64::MAX),
            Fmt::S => 0xffff_ffff,
        }
    }
}

pub(super) fn unsupported(ctx: &Ctx<'_>, what: &'static str) -> crate::error::Fault {
    EmuError::Unsupported { rip: ctx.start_rip, what }.into()
}

/// The MXCSR environment of an SSE floating-point instruction: operands pass through
/// [`Env::daz`], results rounded to nearest through [`Env::round`]; an exception that MXCSR
/// leaves unmasked raises #XM ([`check_xm`]).
#[derive(Clone, Copy)]
pub(super) struct Env {
    /// Rounding control: 0 to nearest, 1 down, 2 up, 3 toward zero.
    pub(super) rc: u32,
    daz: bool,
    ftz: bool,
    /// Exception mask bits, in the positions of the flags.
    masked: u32,
}

/// #UD/#NM checks and the MXCSR environment.
pub(super) fn env(ctx: &Ctx<'_>) -> ExResult<Env> {
    check_sse(ctx)?;
    let m = ctx.cpu.fpu.mxcsr;
    Ok(Env { rc: (m >> 13) & 3, daz: m & 0x40 != 0, ftz: m & 0x8000 != 0, masked: (m >> 7) & 0x3f })
}

/// The exact value a rounded result stands for, to find the direction of its rounding error.
#[derive(Clone, Copy)]
pub(super) enum Exact {
    /// MIN/MAX: the result is one of the operands.
    None,
    Sum(f64, f64),
    Prod(f64, f64),
    Quot(f64, f64),
    Sqrt(f64),
    Int(i64),
    /// A double narrowed to single.
    Value(f64),
}

impl Env {
    /// An operand as read: with DAZ, denormals read as zero of the same sign.
    pub(super) fn daz(&self, f: Fmt, b: u64) -> u64 {
        if self.daz && f.is_denormal(b) {
            b & f.sign_bit()
        } else {
            b
        }
    }

    /// Turns a result rounded to nearest (with its flags, UE not included) into this
    /// environment's result: directed rounding, overflow thresholds of the directed modes, and
    /// underflow — tininess detected after rounding (as the reference CPU does), UE when tiny
    /// and inexact, FTZ flushing tiny results to zero with UE and PE.
    pub(super) fn round(
        &self,
        f: Fmt,
        (mut r, mut fl): (u64, u32),
        exact: Exact,
    ) -> Result<(u64, u32), &'static str> {
        let (p, emin, emax) = match f {
            Fmt::D => (53, -1022, 1023),
            Fmt::S => (24, -126, 127),
        };
        let min_normal = f.to_f64(bits(f, 2f64.powi(emin)));
        let rv = f.to_f64(r);
        let neg = rv.is_sign_negative();
        let ue_masked = self.masked & UE != 0;
        if fl & PE == 0 {
            // MIN/MAX return an operand: no underflow, FTZ does not apply.
            if f.is_denormal(r) && !matches!(exact, Exact::None) {
                if !ue_masked {
                    // An exact tiny result underflows when UE is unmasked.
                    return Ok((r, fl | UE));
                }
                if self.ftz {
                    return Ok((r & f.sign_bit(), fl | UE | PE));
                }
            }
            return Ok((r, fl));
        }
        // Whether this mode rounds the exact value's magnitude up (away from zero).
        let away = match self.rc {
            0 => None,
            1 => Some(neg),
            2 => Some(!neg),
            _ => Some(false),
        };
        // An unmasked overflow or underflow reports PE only when the result rounded to p bits
        // with an unbounded exponent is inexact.
        let pe_unbounded = |fl: u32| if exact_at(exact, p) { fl & !PE } else { fl | PE };
        if fl & OE != 0 {
            // Overflow to nearest: |v| > MAX. Rounding away gives infinity; toward zero gives
            // MAX, still an overflow when |v| >= 2^(emax+1).
            if away == Some(false) {
                let max = f.max_finite() | if neg { f.sign_bit() } else { 0 };
                let over = exact_cmp(exact, 1, emax + 1) != Ordering::Less;
                if over && self.masked & OE == 0 {
                    return Ok((max, pe_unbounded(fl)));
                }
                return Ok((max, (fl & !OE) | if over { OE } else { 0 }));
            }
            if self.masked & OE == 0 {
                return Ok((r, pe_unbounded(fl)));
            }
            return Ok((r, fl));
        }
        if let Some(away) = away {
            // Direction of the error: is the exact magnitude above or below |r|?
            let above = if rv == 0.0 {
                true
            } else {
                err_dir(exact, rv) == if neg { Ordering::Less } else { Ordering::Greater }
            };
            if above == away {
                // Step |r| one unit away from (above) or toward (below) zero.
                r = if away { r + 1 } else { r - 1 };
                if f.to_f64(r).is_infinite() {
                    fl |= OE;
                }
            }
        }
        // Underflow: tiny iff |v| rounded to p bits with an unbounded exponent is below MIN_NORMAL.
        let rv = f.to_f64(r).abs();
        if rv <= min_normal {
            let tiny = match away {
                // Rounding to nearest reaches MIN_NORMAL from (2^(p+1) - 1) * 2^(emin-p-1) on.
                None => exact_cmp(exact, (1u128 << (p + 1)) - 1, emin - p - 1) == Ordering::Less,
                // Away from zero: tiny up to the largest p-bit value below MIN_NORMAL.
                Some(true) => exact_cmp(exact, (1u128 << p) - 1, emin - p) != Ordering::Greater,
                Some(false) => exact_cmp(exact, 1, emin) == Ordering::Less,
            };
            if tiny {
                if !ue_masked {
                    return Ok((r, pe_unbounded(fl | UE)));
                }
                if self.ftz {
                    return Ok((r & f.sign_bit(), fl | UE | PE));
                }
                fl |= UE;
            }
        }
        Ok((r, fl))
    }

    /// The MXCSR flags an instruction with flags `fl` (the OR of its lanes) reports when it
    /// raises an unmasked exception, `None` when everything it raised is masked. An unmasked
    /// pre-computation exception (IE, DE, ZE) in any lane reports the pre-computation flags of
    /// all lanes only; otherwise every flag is reported.
    pub(super) fn unmasked(&self, fl: u32) -> Option<u32> {
        let pre = fl & (IE | DE | ZE);
        if pre & !self.masked != 0 {
            return Some(pre);
        }
        (fl & !self.masked & 0x3f != 0).then_some(fl)
    }
}

/// Delivers an unmasked SIMD floating-point exception if `fl` raises one: MXCSR gets the
/// reported flags, the destination stays unchanged, and the fault is #XM (CR4.OSXMMEXCPT) or #UD.
pub(super) fn check_xm(ctx: &mut Ctx<'_>, env: &Env, fl: u32) -> ExResult {
    if let Some(f) = env.unmasked(fl) {
        ctx.cpu.fpu.mxcsr |= f;
        let v = if ctx.cpu.cr4 & cr::CR4_OSXMMEXCPT != 0 { vector::XM } else { vector::UD };
        return Err(Exception::new(v).into());
    }
    Ok(())
}

/// Whether the exact value is representable with `p` significant bits (unbounded exponent).
fn exact_at(exact: Exact, p: i32) -> bool {
    let fits = |m: u128| m == 0 || (128 - m.leading_zeros() - m.trailing_zeros()) as i32 <= p;
    match exact {
        Exact::None | Exact::Sqrt(_) => true,
        Exact::Prod(x, y) => fits(decompose(x).0 * decompose(y).0),
        Exact::Quot(x, y) => {
            let (mx, my) = (decompose(x).0, decompose(y).0);
            if mx == 0 || my == 0 {
                return true;
            }
            let (ox, oy) = (mx >> mx.trailing_zeros(), my >> my.trailing_zeros());
            ox % oy == 0 && fits(ox / oy)
        }
        Exact::Int(v) => fits(u128::from(v.unsigned_abs())),
        Exact::Value(x) => fits(decompose(x).0),
        Exact::Sum(x, y) => {
            let ((mx, ex), (my, ey)) = (decompose(x), decompose(y));
            if mx == 0 || my == 0 {
                return fits(mx.max(my));
            }
            let lo = ex.min(ey);
            if ex.max(ey) - lo > 70 {
                return false;
            }
            let sx = (mx << (ex - lo)) as i128;
            let sy = (my << (ey - lo)) as i128;
            let sum =
                if x.is_sign_negative() { -sx } else { sx } + if y.is_sign_negative() { -sy } else { sy };
            fits(sum.unsigned_abs())
        }
    }
}

/// Whether the exact value `exact` is above or below its rounded result `r` (finite, non-zero).
fn err_dir(exact: Exact, r: f64) -> Ordering {
    let signed = |mag: Ordering| if r > 0.0 { mag } else { mag.reverse() };
    match exact {
        Exact::None => Ordering::Equal,
        Exact::Sum(x, y) => {
            let s = x + y;
            if s != r {
                s.partial_cmp(&r).unwrap_or(Ordering::Equal)
            } else {
                two_sum_err(x, y, s).partial_cmp(&0.0).unwrap_or(Ordering::Equal)
            }
        }
        Exact::Prod(x, y) => signed(cmp_product(x, y, r)),
        Exact::Quot(x, y) => signed(cmp_product(r, y, x).reverse()),
        Exact::Sqrt(x) => cmp_product(r, r, x).reverse(),
        Exact::Int(v) => i128::from(v).cmp(&(r as i128)),
        Exact::Value(x) => x.partial_cmp(&r).unwrap_or(Ordering::Equal),
    }
}

/// Integer significand and exponent of a finite non-zero double: |v| = m * 2^e.
fn decompose(v: f64) -> (u128, i32) {
    let b = v.to_bits();
    let (ef, frac) = (((b >> 52) & 0x7ff) as i32, b & 0x000f_ffff_ffff_ffff);
    if ef == 0 {
        (u128::from(frac), -1074)
    } else {
        (u128::from(frac | (1 << 52)), ef - 1075)
    }
}

/// m1 * 2^e1 compared with m2 * 2^e2.
fn cmp_mag((m1, e1): (u128, i32), (m2, e2): (u128, i32)) -> Ordering {
    if m1 == 0 || m2 == 0 {
        return m1.cmp(&m2);
    }
    let top = |m: u128, e: i32| 128 - m.leading_zeros() as i32 + e;
    let (t1, t2) = (top(m1, e1), top(m2, e2));
    if t1 != t2 {
        return t1.cmp(&t2);
    }
    // Same leading bit position: the aligned value is no wider than the other one.
    if e1 >= e2 {
        (m1 << (e1 - e2)).cmp(&m2)
    } else {
        m1.cmp(&(m2 << (e2 - e1)))
    }
}

/// |a * b| compared with |c| (finite, non-zero operands), in integer arithmetic so that no
/// intermediate rounds or underflows.
fn cmp_product(a: f64, b: f64, c: f64) -> Ordering {
    let ((ma, ea), (mb, eb)) = (decompose(a), decompose(b));
    cmp_mag((ma * mb, ea + eb), decompose(c))
}

/// The magnitude of the exact value compared with m * 2^e (m < 2^55).
fn exact_cmp(exact: Exact, m: u128, e: i32) -> Ordering {
    match exact {
        Exact::None => Ordering::Equal,
        Exact::Prod(x, y) => {
            let ((mx, ex), (my, ey)) = (decompose(x), decompose(y));
            cmp_mag((mx * my, ex + ey), (m, e))
        }
        Exact::Quot(x, y) => {
            let ((mx, ex), (my, ey)) = (decompose(x), decompose(y));
            cmp_mag((mx, ex), (m * my, e + ey))
        }
        Exact::Sqrt(x) => cmp_mag(decompose(x), (m * m, 2 * e)),
        Exact::Int(v) => cmp_mag((u128::from(v.unsigned_abs()), 0), (m, e)),
        Exact::Value(x) => cmp_mag(decompose(x), (m, e)),
        Exact::Sum(x, y) => {
            // Halved (exact for the large values this is used for) so that nothing overflows.
            let (hx, hy) = (x / 2.0, y / 2.0);
            let s = hx + hy;
            let t = m as f64 * 2f64.powi(e - 1);
            match s.abs().partial_cmp(&t) {
                Some(Ordering::Equal) | None => {
                    let err = two_sum_err(hx, hy, s);
                    let err = if s < 0.0 { -err } else { err };
                    err.partial_cmp(&0.0).unwrap_or(Ordering::Equal)
                }
                Some(o) => o,
            }
        }
    }
}

/// Whether a * b equals c exactly (finite, non-zero operands). An FMA residual would not do:
/// it can round to zero among denormals.
fn product_is(a: f64, b: f64, c: f64) -> bool {
    (a.is_sign_negative() != b.is_sign_negative()) == c.is_sign_negative()
        && cmp_product(a, b, c) == Ordering::Equal
}

/// Exact error of a + b (TwoSum); zero iff the sum is exact.
fn two_sum_err(a: f64, b: f64, s: f64) -> f64 {
    let bv = s - a;
    let av = s - bv;
    (a - av) + (b - bv)
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Min,
    Max,
}

/// Computes `a op b` in format `f` rounded to nearest: (result bits, MXCSR flags without UE,
/// which [`Env::round`] adds).
pub(super) fn arith(f: Fmt, op: Op, a: u64, b: u64) -> (u64, u32) {
    let (na, nb) = (f.is_nan(a), f.is_nan(b));
    if op == Op::Min || op == Op::Max {
        if na || nb {
            return (b, IE);
        }
        let fl = if f.is_denormal(a) || f.is_denormal(b) { DE } else { 0 };
        let (x, y) = (f.to_f64(a), f.to_f64(b));
        let pick_a = if op == Op::Min { x < y } else { x > y };
        return (if pick_a { a } else { b }, fl);
    }
    if na || nb {
        let fl = if f.is_snan(a) || f.is_snan(b) { IE } else { 0 };
        return (f.quiet(if na { a } else { b }), fl);
    }
    let (x, y) = (f.to_f64(a), f.to_f64(b));
    let invalid = match op {
        Op::Add => x.is_infinite() && y.is_infinite() && x.is_sign_positive() != y.is_sign_positive(),
        Op::Sub => x.is_infinite() && y.is_infinite() && x.is_sign_positive() == y.is_sign_positive(),
        Op::Mul => (x == 0.0 && y.is_infinite()) || (x.is_infinite() && y == 0.0),
        _ => (x == 0.0 && y == 0.0) || (x.is_infinite() && y.is_infinite()),
    };
    if invalid {
        return (f.qnan(), IE);
    }
    if op == Op::Div && y == 0.0 && x.is_finite() {
        let inf =
            if x.is_sign_negative() != y.is_sign_negative() { f64::NEG_INFINITY } else { f64::INFINITY };
        return (bits(f, inf), ZE);
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
            let exact = if p == 0.0 { x == 0.0 || y == 0.0 } else { !p.is_finite() || product_is(x, y, p) };
            (p, exact)
        }
        _ => {
            let q = x / y;
            let exact =
                if q == 0.0 { x == 0.0 || y.is_infinite() } else { !q.is_finite() || product_is(q, y, x) };
            (q, exact)
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
        fl |= PE;
    }
    (bits(f, r), fl)
}

fn bits(f: Fmt, v: f64) -> u64 {
    match f {
        Fmt::D => v.to_bits(),
        Fmt::S => u64::from((v as f32).to_bits()),
    }
}

/// `arith` in the environment `env` (operands a, b; flags of the result included).
pub(super) fn arith_env(env: &Env, f: Fmt, op: Op, a: u64, b: u64) -> Result<(u64, u32), &'static str> {
    let (a, b) = (env.daz(f, a), env.daz(f, b));
    let rn = arith(f, op, a, b);
    let (x, y) = (f.to_f64(a), f.to_f64(b));
    let y = if op == Op::Sub { -y } else { y };
    let exact = match op {
        Op::Add | Op::Sub => Exact::Sum(x, y),
        Op::Mul => Exact::Prod(x, y),
        Op::Div => Exact::Quot(x, y),
        _ => Exact::None,
    };
    // An exact zero sum is -0 when rounding down, unless both addends are +0.
    let pos_zero = |v: f64| v == 0.0 && v.is_sign_positive();
    let zero_sum = matches!(op, Op::Add | Op::Sub) && rn.1 & PE == 0 && f.to_f64(rn.0) == 0.0;
    if env.rc == 1 && zero_sum && !(pos_zero(x) && pos_zero(y)) {
        return Ok((bits(f, -0.0), rn.1));
    }
    env.round(f, rn, exact)
}

/// `sqrt` in the environment `env`.
pub(super) fn sqrt_env(env: &Env, f: Fmt, b: u64) -> Result<(u64, u32), &'static str> {
    let b = env.daz(f, b);
    env.round(f, sqrt(f, b), Exact::Sqrt(f.to_f64(b)))
}

/// `d_to_s` in the environment `env`.
pub(super) fn d_to_s_env(env: &Env, b: u64) -> Result<(u64, u32), &'static str> {
    let b = env.daz(Fmt::D, b);
    env.round(Fmt::S, d_to_s(b), Exact::Value(f64::from_bits(b)))
}

/// `int_to_fp` in the environment `env`.
pub(super) fn int_to_fp_env(env: &Env, f: Fmt, v: i64) -> Result<(u64, u32), &'static str> {
    env.round(f, int_to_fp(f, v), Exact::Int(v))
}

fn scalar_arith(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
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
    let (r, fl) = arith_env(&env, f, op, a, b).map_err(|w| unsupported(ctx, w))?;
    check_xm(ctx, &env, fl)?;
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f.mask()) | u128::from(r);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn compare(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(m, Mnemonic::Comiss | Mnemonic::Ucomiss) { Fmt::S } else { Fmt::D };
    let ordered_signals = matches!(m, Mnemonic::Comiss | Mnemonic::Comisd);
    let a = env.daz(f, (ctx.cpu.fpu.xmm[xmm_index(i.op_register(0))] & f.mask()) as u64);
    let b = env.daz(f, (read_x(ctx, i, 1, false)? & f.mask()) as u64);
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
    check_xm(ctx, &env, fl)?;
    ctx.set_status(zpc);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

/// Square root in format `f`: (result bits, MXCSR flags).
pub(super) fn sqrt(f: Fmt, b: u64) -> (u64, u32) {
    if f.is_nan(b) {
        return (f.quiet(b), if f.is_snan(b) { IE } else { 0 });
    }
    let x = f.to_f64(b);
    if x == 0.0 {
        return (b, 0);
    }
    if x < 0.0 {
        return (f.qnan(), IE);
    }
    let de = if f.is_denormal(b) { DE } else { 0 };
    if x.is_infinite() {
        return (b, 0);
    }
    // Rounding the double square root to single is innocuous (53 >= 2 * 24 + 2).
    let r = match f {
        Fmt::D => x.sqrt(),
        Fmt::S => f64::from(x.sqrt() as f32),
    };
    (bits(f, r), de | if product_is(r, r, x) { 0 } else { PE })
}

/// CMPPS/CMPSS predicate `pred` (0..7: EQ LT LE UNORD NEQ NLT NLE ORD) of a and b.
pub(super) fn cmp_pred(f: Fmt, a: u64, b: u64, pred: u8) -> (bool, u32) {
    let pred = pred & 7;
    let signaling = matches!(pred, 1 | 2 | 5 | 6);
    if f.is_nan(a) || f.is_nan(b) {
        let ie = f.is_snan(a) || f.is_snan(b) || signaling;
        return (matches!(pred, 3..=6), if ie { IE } else { 0 });
    }
    let de = if f.is_denormal(a) || f.is_denormal(b) { DE } else { 0 };
    let (x, y) = (f.to_f64(a), f.to_f64(b));
    let r = match pred {
        0 => x == y,
        1 => x < y,
        2 => x <= y,
        3 => false,
        4 => x != y,
        5 => x >= y,
        6 => x > y,
        _ => true,
    };
    (r, de)
}

/// Signed integer to format `f`, rounded to nearest: (result bits, MXCSR flags).
pub(super) fn int_to_fp(f: Fmt, v: i64) -> (u64, u32) {
    let (r, exact) = match f {
        Fmt::D => {
            let r = v as f64;
            (r.to_bits(), r as i128 == i128::from(v))
        }
        Fmt::S => {
            let r = v as f32;
            (u64::from(r.to_bits()), r as i128 == i128::from(v))
        }
    };
    (r, if exact { 0 } else { PE })
}

/// Format `f` to a signed integer of `size` (4 or 8) bytes, rounded by `rc` (MXCSR.RC; 3
/// truncates); NaN and out-of-range values give the integer indefinite and IE. No denormal flag.
pub(super) fn fp_to_int(f: Fmt, b: u64, rc: u32, size: usize) -> (u64, u32) {
    let (lo, hi) =
        if size == 8 { (-(2f64.powi(63)), 2f64.powi(63)) } else { (-(2f64.powi(31)), 2f64.powi(31)) };
    let indefinite: u64 = if size == 8 { 1 << 63 } else { 1 << 31 };
    let x = f.to_f64(b);
    if x.is_nan() {
        return (indefinite, IE);
    }
    let r = match rc {
        0 => x.round_ties_even(),
        1 => x.floor(),
        2 => x.ceil(),
        _ => x.trunc(),
    };
    if r < lo || r >= hi {
        (indefinite, IE)
    } else {
        let m = if size == 8 { u64::MAX } else { 0xffff_ffff };
        (r as i64 as u64 & m, if r != x { PE } else { 0 })
    }
}

/// Single to double (exact): (result bits, MXCSR flags).
pub(super) fn s_to_d(b: u64) -> (u64, u32) {
    if Fmt::S.is_nan(b) {
        let q = Fmt::S.quiet(b);
        let r = ((q & 0x8000_0000) << 32) | 0x7ff0_0000_0000_0000 | ((q & 0x7f_ffff) << 29);
        (r, if Fmt::S.is_snan(b) { IE } else { 0 })
    } else {
        let fl = if Fmt::S.is_denormal(b) { DE } else { 0 };
        (f64::from(f32::from_bits(b as u32)).to_bits(), fl)
    }
}

/// Double to single rounded to nearest: (result bits, MXCSR flags without UE).
pub(super) fn d_to_s(b: u64) -> (u64, u32) {
    if Fmt::D.is_nan(b) {
        let q = Fmt::D.quiet(b);
        let r = ((q >> 32) & 0x8000_0000) | 0x7f80_0000 | ((q >> 29) & 0x7f_ffff);
        return (r, if Fmt::D.is_snan(b) { IE } else { 0 });
    }
    let x = f64::from_bits(b);
    let r = x as f32;
    let mut fl = if Fmt::D.is_denormal(b) { DE } else { 0 };
    if x.is_finite() && r.is_infinite() {
        fl |= OE | PE;
    } else if f64::from(r) != x {
        fl |= PE;
    }
    (u64::from(r.to_bits()), fl)
}

fn cvt_int_to_fp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let wide = matches!(i.code(), Code::Cvtsi2sd_xmm_rm64 | Code::Cvtsi2ss_xmm_rm64);
    let raw = ctx.read_op(i, 1)?;
    let v: i64 = if wide { raw as i64 } else { i64::from(raw as i32) };
    let f = if i.mnemonic() == Mnemonic::Cvtsi2sd { Fmt::D } else { Fmt::S };
    let (r, fl) = int_to_fp_env(&env, f, v).map_err(|w| unsupported(ctx, w))?;
    check_xm(ctx, &env, fl)?;
    let d = xmm_index(i.op_register(0));
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f.mask()) | u128::from(r);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn cvt_fp_to_int(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(m, Mnemonic::Cvtss2si | Mnemonic::Cvttss2si) { Fmt::S } else { Fmt::D };
    let rc = if matches!(m, Mnemonic::Cvttss2si | Mnemonic::Cvttsd2si) { 3 } else { env.rc };
    let b = env.daz(f, (read_x(ctx, i, 1, false)? & f.mask()) as u64);
    let dst = i.op_register(0);
    let (_, size, _) = super::gpr_info(dst);
    let (v, fl) = fp_to_int(f, b, rc, size);
    check_xm(ctx, &env, fl)?;
    ctx.set_reg(dst, v);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

fn cvt_fp_to_fp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let d = xmm_index(i.op_register(0));
    let (res, f_out) = if i.mnemonic() == Mnemonic::Cvtss2sd {
        let b = (read_x(ctx, i, 1, false)? & 0xffff_ffff) as u64;
        (Ok(s_to_d(env.daz(Fmt::S, b))), Fmt::D)
    } else {
        let b = read_x(ctx, i, 1, false)? as u64;
        (d_to_s_env(&env, b), Fmt::S)
    };
    let (r, fl) = res.map_err(|w| unsupported(ctx, w))?;
    check_xm(ctx, &env, fl)?;
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f_out.mask()) | u128::from(r);
    ctx.cpu.fpu.mxcsr |= fl;
    Ok(())
}

/// SQRTSS/SQRTSD and CMPSS/CMPSD (imm8 predicate): the low lane only.
fn scalar_sqrt_cmp(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let m = i.mnemonic();
    let f = if matches!(m, Mnemonic::Sqrtss | Mnemonic::Cmpss) { Fmt::S } else { Fmt::D };
    let d = xmm_index(i.op_register(0));
    let b = (read_x(ctx, i, 1, false)? & f.mask()) as u64;
    let res = if matches!(m, Mnemonic::Sqrtss | Mnemonic::Sqrtsd) {
        sqrt_env(&env, f, b)
    } else {
        let a = (ctx.cpu.fpu.xmm[d] & f.mask()) as u64;
        let (t, fl) = cmp_pred(f, env.daz(f, a), env.daz(f, b), i.immediate(2) as u8);
        Ok((if t { f.mask() as u64 } else { 0 }, fl))
    };
    let (r, fl) = res.map_err(|w| unsupported(ctx, w))?;
    check_xm(ctx, &env, fl)?;
    ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !f.mask()) | u128::from(r);
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
        M::Sqrtss | M::Sqrtsd | M::Cmpss | M::Cmpsd => scalar_sqrt_cmp,
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
        assert_eq!(arith(Fmt::D, Op::Add, d(1.0), d(2.0)), (d(3.0), 0));
        assert_eq!(arith(Fmt::D, Op::Add, d(1.0), d(1e-30)), (d(1.0), PE));
        assert_eq!(arith(Fmt::D, Op::Div, d(1.0), d(3.0)), (d(1.0 / 3.0), PE));
        assert_eq!(arith(Fmt::D, Op::Div, d(1.0), d(0.0)), (d(f64::INFINITY), ZE));
        assert_eq!(arith(Fmt::D, Op::Div, d(0.0), d(0.0)), (QNAN64, IE));
        assert_eq!(arith(Fmt::D, Op::Mul, d(1e300), d(1e300)), (d(f64::INFINITY), OE | PE));
        assert_eq!(arith(Fmt::D, Op::Sub, d(f64::INFINITY), d(f64::INFINITY)), (QNAN64, IE));
        // First-operand NaN wins; SNaN signals and is quieted.
        let snan = 0x7ff0_0000_0000_0001;
        assert_eq!(arith(Fmt::D, Op::Add, snan, d(f64::NAN)), (snan | (1 << 51), IE));
        assert_eq!(arith(Fmt::D, Op::Min, d(0.0), d(-0.0)), (d(-0.0), 0), "equal: second operand");
        assert_eq!(arith(Fmt::D, Op::Max, d(f64::NAN), d(1.0)), (d(1.0), IE));
        assert_eq!(arith(Fmt::D, Op::Mul, d(1e-200), d(1e-200)), (0, PE), "underflow to zero");
        // Single precision via double: 1/3 rounds, 0.5*4 exact.
        let f = |x: f32| u64::from(x.to_bits());
        assert_eq!(arith(Fmt::S, Op::Div, f(1.0), f(3.0)), (f(1.0 / 3.0), PE));
        assert_eq!(arith(Fmt::S, Op::Mul, f(0.5), f(4.0)), (f(2.0), 0));
        assert_eq!(arith(Fmt::S, Op::Add, f(16_777_216.0), f(1.0)), (f(16_777_216.0), PE));
    }

    #[test]
    fn environment_rounding_and_underflow() {
        let env = |mxcsr: u32| Env {
            rc: (mxcsr >> 13) & 3,
            daz: mxcsr & 0x40 != 0,
            ftz: mxcsr & 0x8000 != 0,
            masked: (mxcsr >> 7) & 0x3f,
        };
        let third = d(1.0 / 3.0);
        // 1/3 rounds down to nearest: up and toward zero differ by one unit.
        assert_eq!(arith_env(&env(0x1f80), Fmt::D, Op::Div, d(1.0), d(3.0)), Ok((third, PE)));
        assert_eq!(arith_env(&env(0x5f80), Fmt::D, Op::Div, d(1.0), d(3.0)), Ok((third + 1, PE)));
        assert_eq!(arith_env(&env(0x7f80), Fmt::D, Op::Div, d(-1.0), d(3.0)), Ok((third | 1 << 63, PE)));
        assert_eq!(arith_env(&env(0x3f80), Fmt::D, Op::Sub, d(1.0), d(1.0)), Ok((d(-0.0), 0)));
        // Measured on the reference CPU: tininess after rounding, UE only when inexact, FTZ.
        let (x, y) = (0x3ff0_0000_0000_0001, 0x000f_ffff_ffff_ffff);
        assert_eq!(arith_env(&env(0x1f80), Fmt::D, Op::Mul, x, y), Ok((0x0010_0000_0000_0000, DE | PE)));
        assert_eq!(arith_env(&env(0x7f80), Fmt::D, Op::Mul, x, y), Ok((y, DE | UE | PE)));
        assert_eq!(arith_env(&env(0x1f80), Fmt::D, Op::Mul, d(0.75), 3), Ok((2, DE | UE | PE)));
        assert_eq!(arith_env(&env(0x1f80), Fmt::D, Op::Mul, d(0.5), 4), Ok((2, DE)));
        assert_eq!(arith_env(&env(0x9f80), Fmt::D, Op::Add, 4, 4), Ok((0, DE | UE | PE)));
        // Overflow toward zero: MAX, OE only from 2^1024 on.
        assert_eq!(
            arith_env(&env(0x7f80), Fmt::D, Op::Mul, d(1e300), d(1e300)),
            Ok((f64::MAX.to_bits(), OE | PE))
        );
        assert_eq!(env(0x0f80).unmasked(PE), Some(PE), "unmasked PE");
        assert_eq!(env(0x1f00).unmasked(IE | PE), Some(IE), "unmasked IE: pre-computation flags only");
        assert_eq!(env(0x1f80).unmasked(IE | PE), None);
        // Unmasked overflow: PE only when the product is inexact at 53 bits.
        let e = env(0x1f80 & !(OE << 7));
        assert_eq!(
            arith_env(&e, Fmt::D, Op::Mul, d(2f64.powi(1000)), d(2f64.powi(1000))).map(|v| v.1),
            Ok(OE)
        );
        assert_eq!(arith_env(&e, Fmt::D, Op::Mul, d(1e300), d(1e300)).map(|v| v.1), Ok(OE | PE));
    }

    #[test]
    fn unmasked_exception_is_xm_or_ud_and_leaves_the_destination() {
        for (osxmmexcpt, vector) in [(true, 19), (false, 6)] {
            let mut cpu = long_mode_cpu();
            if !osxmmexcpt {
                cpu.cr4 &= !crate::cpu::cr::CR4_OSXMMEXCPT;
            }
            let (cpu, _) = run_raw(cpu, |a| {
                a.mov(dword_ptr(rsp - 8), 0x1f80 & !0x200)?; // ZE unmasked
                a.ldmxcsr(dword_ptr(rsp - 8))?;
                a.mov(eax, 1)?;
                a.cvtsi2sd(xmm0, eax)?;
                a.xorpd(xmm1, xmm1)?;
                a.divsd(xmm0, xmm1)?;
                a.mov(r15, 0xbad_u64)
            });
            assert_eq!(cpu.gpr[15], vector, "vector delivered");
            assert_eq!(cpu.fpu.xmm[0] as u64, 1f64.to_bits(), "destination unchanged");
            assert_eq!(cpu.fpu.mxcsr, (0x1f80 & !0x200) | ZE, "ZE reported");
        }
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
