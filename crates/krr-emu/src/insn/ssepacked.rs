//! SSE/SSE2 packed floating point: ADD/SUB/MUL/DIV/MIN/MAX/SQRT PS/PD, CMPPS/CMPPD, and the
//! packed conversions CVTDQ2PS/PD, CVT(T)PS2DQ, CVT(T)PD2DQ, CVTPS2PD, CVTPD2PS.
//!
//! Each lane is computed like the scalar instruction of `ssefp.rs`, in the same MXCSR
//! environment with the same limits (`ssefp::Env`); the MXCSR flags are the OR of the lanes'
//! flags; an unmasked exception in any lane raises #XM with no lane written (`ssefp::check_xm`).
//! 128-bit memory operands must be 16-byte aligned (#GP(0)); the m64 forms need no alignment.

use iced_x86::{Code, Mnemonic};

use super::sse::{read_x, xmm_index};
use super::ssefp::{
    arith_env, check_xm, cmp_pred, d_to_s_env, env, fp_to_int, int_to_fp_env, s_to_d, sqrt_env, unsupported,
    Fmt, Op,
};
use super::{Decoded, Handler};
use crate::error::ExResult;
use crate::exec::Ctx;

/// Lane format of a packed arithmetic mnemonic.
fn fmt_of(m: Mnemonic) -> Fmt {
    use Mnemonic as M;
    match m {
        M::Addps | M::Subps | M::Mulps | M::Divps | M::Minps | M::Maxps | M::Sqrtps | M::Cmpps => Fmt::S,
        _ => Fmt::D,
    }
}

fn lane(v: u128, k: u32, w: u32) -> u64 {
    ((v >> (k * w * 8)) & if w == 8 { u128::from(u64::MAX) } else { 0xffff_ffff }) as u64
}

fn finish(ctx: &mut Ctx<'_>, d: usize, r: u128, fl: u32) {
    ctx.cpu.fpu.xmm[d] = r;
    ctx.cpu.fpu.mxcsr |= fl;
}

/// ADD/SUB/MUL/DIV/MIN/MAX/SQRT PS/PD and CMPPS/CMPPD.
fn packed_arith(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let m = i.mnemonic();
    let f = fmt_of(m);
    let w = if f == Fmt::S { 4 } else { 8 };
    let d = xmm_index(i.op_register(0));
    let a = ctx.cpu.fpu.xmm[d];
    let b = read_x(ctx, i, 1, true)?;
    let op = match m {
        Mnemonic::Addps | Mnemonic::Addpd => Some(Op::Add),
        Mnemonic::Subps | Mnemonic::Subpd => Some(Op::Sub),
        Mnemonic::Mulps | Mnemonic::Mulpd => Some(Op::Mul),
        Mnemonic::Divps | Mnemonic::Divpd => Some(Op::Div),
        Mnemonic::Minps | Mnemonic::Minpd => Some(Op::Min),
        Mnemonic::Maxps | Mnemonic::Maxpd => Some(Op::Max),
        _ => None,
    };
    let (mut r, mut fl) = (0u128, 0u32);
    for k in 0..16 / w {
        let (x, y) = (lane(a, k, w), lane(b, k, w));
        let res = match (op, m) {
            (Some(op), _) => arith_env(&env, f, op, x, y),
            (None, Mnemonic::Sqrtps | Mnemonic::Sqrtpd) => sqrt_env(&env, f, y),
            _ => {
                let (t, f2) = cmp_pred(f, env.daz(f, x), env.daz(f, y), i.immediate(2) as u8);
                Ok((if t { f.mask() as u64 } else { 0 }, f2))
            }
        };
        let (v, f2) = res.map_err(|w| unsupported(ctx, w))?;
        r |= u128::from(v) << (k * w * 8);
        fl |= f2;
    }
    check_xm(ctx, &env, fl)?;
    finish(ctx, d, r, fl);
    Ok(())
}

/// One lane's result and flags, or why it is not modelled.
type Lane = Result<(u64, u32), &'static str>;

/// The packed conversions.
fn packed_cvt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let env = env(ctx)?;
    let m = i.mnemonic();
    let d = xmm_index(i.op_register(0));
    // CVTDQ2PD and CVTPS2PD read m64 (no alignment), the others m128.
    let narrow_src = matches!(m, Mnemonic::Cvtdq2pd | Mnemonic::Cvtps2pd);
    let b = read_x(ctx, i, 1, !narrow_src)?;
    // (lane width of the result, lane results)
    let (w, lanes): (u32, Vec<Lane>) = match m {
        Mnemonic::Cvtdq2pd => {
            (8, (0..2).map(|k| int_to_fp_env(&env, Fmt::D, i64::from(lane(b, k, 4) as i32))).collect())
        }
        Mnemonic::Cvtdq2ps => {
            (4, (0..4).map(|k| int_to_fp_env(&env, Fmt::S, i64::from(lane(b, k, 4) as i32))).collect())
        }
        Mnemonic::Cvtps2dq | Mnemonic::Cvttps2dq => {
            let rc = if m == Mnemonic::Cvttps2dq { 3 } else { env.rc };
            let one = |k| Ok(fp_to_int(Fmt::S, env.daz(Fmt::S, lane(b, k, 4)), rc, 4));
            (4, (0..4).map(one).collect())
        }
        Mnemonic::Cvtpd2dq | Mnemonic::Cvttpd2dq => {
            let rc = if m == Mnemonic::Cvttpd2dq { 3 } else { env.rc };
            let one = |k| Ok(fp_to_int(Fmt::D, env.daz(Fmt::D, lane(b, k, 8)), rc, 4));
            (4, (0..2).map(one).collect())
        }
        Mnemonic::Cvtps2pd => (8, (0..2).map(|k| Ok(s_to_d(env.daz(Fmt::S, lane(b, k, 4))))).collect()),
        _ => (4, (0..2).map(|k| d_to_s_env(&env, lane(b, k, 8))).collect()),
    };
    let (mut r, mut fl) = (0u128, 0u32);
    for (k, res) in lanes.into_iter().enumerate() {
        let (v, f2) = res.map_err(|w| unsupported(ctx, w))?;
        r |= u128::from(v) << (k as u32 * w * 8);
        fl |= f2;
    }
    check_xm(ctx, &env, fl)?;
    finish(ctx, d, r, fl);
    Ok(())
}

/// Dispatch for this family (XMM forms only).
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    use Mnemonic as M;
    if !format!("{code:?}").contains("xmm") {
        return None;
    }
    Some(match m {
        M::Addps
        | M::Addpd
        | M::Subps
        | M::Subpd
        | M::Mulps
        | M::Mulpd
        | M::Divps
        | M::Divpd
        | M::Minps
        | M::Minpd
        | M::Maxps
        | M::Maxpd
        | M::Sqrtps
        | M::Sqrtpd
        | M::Cmpps
        | M::Cmppd => packed_arith,
        M::Cvtdq2pd
        | M::Cvtdq2ps
        | M::Cvtps2dq
        | M::Cvttps2dq
        | M::Cvtpd2dq
        | M::Cvttpd2dq
        | M::Cvtps2pd
        | M::Cvtpd2ps => packed_cvt,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn packed_arithmetic_and_conversions() {
        let (cpu, _) = run_asm(|a| {
            a.mov(eax, 3)?;
            a.movd(xmm0, eax)?;
            a.pshufd(xmm0, xmm0, 0)?; // 3,3,3,3 (int)
            a.cvtdq2ps(xmm1, xmm0)?; // 3.0f x4
            a.mov(eax, 2)?;
            a.movd(xmm2, eax)?;
            a.pshufd(xmm2, xmm2, 0)?;
            a.cvtdq2ps(xmm2, xmm2)?; // 2.0f x4
            a.divps(xmm1, xmm2)?; // 1.5f x4
            a.cvtps2pd(xmm3, xmm1)?; // 1.5, 1.5
            a.addpd(xmm3, xmm3)?; // 3.0, 3.0
            a.sqrtpd(xmm4, xmm3)?; // sqrt(3): PE
            a.cvttpd2dq(xmm5, xmm4)?; // 1, 1
            a.cmpps(xmm2, xmm1, 1)?; // 2 < 1.5: false
            Ok(())
        });
        assert_eq!(cpu.fpu.xmm[1], u128::from(1.5f32.to_bits()) * 0x0000_0001_0000_0001_0000_0001_0000_0001);
        assert_eq!(cpu.fpu.xmm[3], u128::from(3.0f64.to_bits()) * ((1u128 << 64) | 1));
        assert_eq!(cpu.fpu.xmm[4] as u64, 3f64.sqrt().to_bits());
        assert_eq!(cpu.fpu.xmm[5], 0x0000_0001_0000_0001);
        assert_eq!(cpu.fpu.xmm[2], 0);
        assert_eq!(cpu.fpu.mxcsr, 0x1f80 | 0x20);
    }
}
