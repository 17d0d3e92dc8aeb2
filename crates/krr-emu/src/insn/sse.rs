//! SSE/SSE2 subset used by static glibc and busybox at baseline x86-64: 128-bit moves,
//! MOVD/MOVQ, logic, byte/word/dword/qword add/sub/compare, PMOVMSKB, PMINUB/PMAXUB, shuffles,
//! unpacks, shifts, LDMXCSR/STMXCSR. Only XMM forms (MMX forms are not implemented).
//!
//! Scalar floating point is in `ssefp.rs`, packed floating-point arithmetic in `ssepacked.rs`.

use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

use super::{gpr_info, Decoded, Handler};
use crate::cpu::cr;
use crate::error::{vector, ExResult, Exception};
use crate::exec::Ctx;

/// #UD without CR4.OSFXSR or with CR0.EM; #NM with CR0.TS.
pub(crate) fn check_sse(ctx: &Ctx<'_>) -> ExResult {
    if ctx.cpu.cr4 & cr::CR4_OSFXSR == 0 || ctx.cpu.cr0 & cr::CR0_EM != 0 {
        return Err(Exception::ud().into());
    }
    if ctx.cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Exception::new(vector::NM).into());
    }
    Ok(())
}

pub(crate) fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// Reads operand `n` as a 128-bit value (memory: the operand's size, zero-extended).
pub(crate) fn read_x(ctx: &mut Ctx<'_>, i: &Instruction, n: u32, align: bool) -> ExResult<u128> {
    match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            if r.is_xmm() {
                Ok(ctx.cpu.fpu.xmm[xmm_index(r)])
            } else {
                Ok(u128::from(ctx.reg(r)))
            }
        }
        OpKind::Memory => {
            let size = i.memory_size().size().min(16);
            let ea = ctx.ea(i);
            if align && size == 16 && ea & 15 != 0 {
                return Err(Exception::gp(0).into());
            }
            let mut b = [0u8; 16];
            let seg = ctx.mseg(i);
            ctx.read_bytes(seg, ea, &mut b[..size])?;
            Ok(u128::from_le_bytes(b))
        }
        _ => Ok(u128::from(i.immediate(n))),
    }
}

/// Writes operand `n`: XMM register (whole), GPR, or memory of the operand's size.
fn write_x(ctx: &mut Ctx<'_>, i: &Instruction, n: u32, v: u128, align: bool) -> ExResult {
    match i.op_kind(n) {
        OpKind::Register => {
            let r = i.op_register(n);
            if r.is_xmm() {
                ctx.cpu.fpu.xmm[xmm_index(r)] = v;
            } else {
                ctx.set_reg(r, v as u64);
            }
            Ok(())
        }
        _ => {
            let size = i.memory_size().size().min(16);
            let ea = ctx.ea(i);
            if align && size == 16 && ea & 15 != 0 {
                return Err(Exception::gp(0).into());
            }
            let seg = ctx.mseg(i);
            ctx.write_bytes(seg, ea, &v.to_le_bytes()[..size])
        }
    }
}

fn mov_aligned(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let v = read_x(ctx, i, 1, true)?;
    write_x(ctx, i, 0, v, true)
}

fn mov_unaligned(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let v = read_x(ctx, i, 1, false)?;
    write_x(ctx, i, 0, v, false)
}

/// MOVD/MOVQ: to an XMM register zero-extends; to a GPR or memory stores the low part.
fn movd_movq(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let v = read_x(ctx, i, 1, false)?;
    let is64 = matches!(
        i.code(),
        Code::Movq_xmm_rm64 | Code::Movq_rm64_xmm | Code::Movq_xmm_xmmm64 | Code::Movq_xmmm64_xmm
    );
    let v = if is64 { v & u128::from(u64::MAX) } else { v & 0xffff_ffff };
    write_x(ctx, i, 0, v, false)
}

/// MOVSS/MOVSD (scalar): a load from memory zeroes the rest; reg-reg merges the low element.
fn mov_scalar(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let m: u128 = if i.mnemonic() == Mnemonic::Movss { 0xffff_ffff } else { u128::from(u64::MAX) };
    let v = read_x(ctx, i, 1, false)? & m;
    if i.op_kind(0) == OpKind::Register && i.op_kind(1) == OpKind::Register {
        let d = xmm_index(i.op_register(0));
        ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !m) | v;
        Ok(())
    } else {
        write_x(ctx, i, 0, v, false)
    }
}

/// MOVLPS/MOVLPD/MOVHPS/MOVHPD/MOVLHPS/MOVHLPS.
fn mov_half(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let lo = u128::from(u64::MAX);
    match i.code() {
        Code::Movlps_xmm_m64 | Code::Movlpd_xmm_m64 => {
            let v = read_x(ctx, i, 1, false)?;
            let d = xmm_index(i.op_register(0));
            ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !lo) | (v & lo);
        }
        Code::Movhps_xmm_m64 | Code::Movhpd_xmm_m64 => {
            let v = read_x(ctx, i, 1, false)?;
            let d = xmm_index(i.op_register(0));
            ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & lo) | (v << 64);
        }
        Code::Movlps_m64_xmm | Code::Movlpd_m64_xmm => {
            let v = ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))];
            write_x(ctx, i, 0, v & lo, false)?;
        }
        Code::Movhps_m64_xmm | Code::Movhpd_m64_xmm => {
            let v = ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))];
            write_x(ctx, i, 0, v >> 64, false)?;
        }
        Code::Movlhps_xmm_xmm => {
            let s = ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))];
            let d = xmm_index(i.op_register(0));
            ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & lo) | (s << 64);
        }
        _ => {
            // MOVHLPS
            let s = ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))];
            let d = xmm_index(i.op_register(0));
            ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !lo) | (s >> 64);
        }
    }
    Ok(())
}

/// Applies `f` to each `w`-byte lane of a and b.
#[inline]
fn lanes(a: u128, b: u128, w: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let bits = w * 8;
    let m: u128 = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
    let mut r = 0u128;
    for k in 0..(16 / w) {
        let sh = k * bits;
        let x = ((a >> sh) & m) as u64;
        let y = ((b >> sh) & m) as u64;
        r |= (u128::from(f(x, y)) & m) << sh;
    }
    r
}

fn sx(v: u64, w: u32) -> i64 {
    let sh = 64 - w * 8;
    ((v << sh) as i64) >> sh
}

/// Two-operand packed integer op on XMM dst, XMM/m128 src (16-byte alignment required).
fn packed<const OP: u8, const W: u32>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let a = read_x(ctx, i, 0, true)?;
    let b = read_x(ctx, i, 1, true)?;
    let ones = |c: bool| if c { u64::MAX } else { 0 };
    let r = match OP {
        P_XOR => a ^ b,
        P_OR => a | b,
        P_AND => a & b,
        P_ANDN => !a & b,
        P_ADD => lanes(a, b, W, |x, y| x.wrapping_add(y)),
        P_SUB => lanes(a, b, W, |x, y| x.wrapping_sub(y)),
        P_CMPEQ => lanes(a, b, W, |x, y| ones(x == y)),
        P_CMPGT => lanes(a, b, W, |x, y| ones(sx(x, W) > sx(y, W))),
        P_MINU => lanes(a, b, W, |x, y| x.min(y)),
        P_MAXU => lanes(a, b, W, |x, y| x.max(y)),
        P_UNPCKL | P_UNPCKH => {
            let n = 16 / W;
            let bits = W * 8;
            let m: u128 = (1u128 << bits) - 1;
            let base = if OP == P_UNPCKH { n / 2 } else { 0 };
            let mut r = 0u128;
            for k in 0..n / 2 {
                let x = (a >> ((base + k) * bits)) & m;
                let y = (b >> ((base + k) * bits)) & m;
                r |= x << (2 * k * bits);
                r |= y << ((2 * k + 1) * bits);
            }
            r
        }
        P_ADDUS => lanes(a, b, W, |x, y| sat_u(x as i64 + y as i64, W)),
        P_SUBUS => lanes(a, b, W, |x, y| sat_u(x as i64 - y as i64, W)),
        P_ADDS => lanes(a, b, W, |x, y| sat_s(sx(x, W) + sx(y, W), W)),
        P_SUBS => lanes(a, b, W, |x, y| sat_s(sx(x, W) - sx(y, W), W)),
        P_AVG => lanes(a, b, W, |x, y| (x + y + 1) >> 1),
        P_MULL => lanes(a, b, W, |x, y| (sx(x, W).wrapping_mul(sx(y, W))) as u64),
        P_MULH => lanes(a, b, W, |x, y| ((sx(x, W) * sx(y, W)) >> (W * 8)) as u64),
        P_MULHU => lanes(a, b, W, |x, y| (x * y) >> (W * 8)),
        P_MAXS => lanes(a, b, W, |x, y| if sx(x, W) >= sx(y, W) { x } else { y }),
        P_MINS => lanes(a, b, W, |x, y| if sx(x, W) <= sx(y, W) { x } else { y }),
        P_MULUDQ => lanes(a, b, 8, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        P_MADDWD => lanes(a, b, 4, |x, y| {
            let lo = sx(x & 0xffff, 2) * sx(y & 0xffff, 2);
            let hi = sx(x >> 16, 2) * sx(y >> 16, 2);
            (lo + hi) as u64
        }),
        P_SADBW => lanes(a, b, 8, |x, y| {
            (0..8).map(|k| ((x >> (8 * k)) & 0xff).abs_diff((y >> (8 * k)) & 0xff)).sum()
        }),
        P_PACKSS => pack(a, b, W, true),
        P_PACKUS => pack(a, b, W, false),
        _ => {
            // Shift by the low 64 bits of the source.
            let c = b as u64;
            shift_lanes(a, c, W, OP)
        }
    };
    let d = xmm_index(i.op_register(0));
    ctx.cpu.fpu.xmm[d] = r;
    Ok(())
}

const P_XOR: u8 = 0;
const P_OR: u8 = 1;
const P_AND: u8 = 2;
const P_ANDN: u8 = 3;
const P_ADD: u8 = 4;
const P_SUB: u8 = 5;
const P_CMPEQ: u8 = 6;
const P_CMPGT: u8 = 7;
const P_MINU: u8 = 8;
const P_MAXU: u8 = 9;
const P_UNPCKL: u8 = 10;
const P_UNPCKH: u8 = 11;
const P_SLL: u8 = 12;
const P_SRL: u8 = 13;
const P_SRA: u8 = 14;
const P_ADDUS: u8 = 15;
const P_SUBUS: u8 = 16;
const P_ADDS: u8 = 17;
const P_SUBS: u8 = 18;
const P_AVG: u8 = 19;
const P_MULL: u8 = 20;
const P_MULH: u8 = 21;
const P_MULHU: u8 = 22;
const P_MAXS: u8 = 23;
const P_MINS: u8 = 24;
const P_MULUDQ: u8 = 25;
const P_MADDWD: u8 = 26;
const P_SADBW: u8 = 27;
const P_PACKSS: u8 = 28;
const P_PACKUS: u8 = 29;

/// Saturates `v` to a signed `w`-byte lane.
fn sat_s(v: i64, w: u32) -> u64 {
    let max = (1i64 << (w * 8 - 1)) - 1;
    v.clamp(-max - 1, max) as u64
}

/// Saturates `v` to an unsigned `w`-byte lane.
fn sat_u(v: i64, w: u32) -> u64 {
    v.clamp(0, (1i64 << (w * 8)) - 1) as u64
}

/// Packs the `w`-byte lanes of a then b into lanes of half the width, saturating.
fn pack(a: u128, b: u128, w: u32, signed_dst: bool) -> u128 {
    let n = 16 / w;
    let half = w / 2;
    let mut r = 0u128;
    for (j, src) in [a, b].iter().enumerate() {
        for k in 0..n {
            let x = sx(((src >> (k * w * 8)) & ((1u128 << (w * 8)) - 1)) as u64, w);
            let v = if signed_dst { sat_s(x, half) } else { sat_u(x, half) };
            let m = (1u128 << (half * 8)) - 1;
            r |= (u128::from(v) & m) << ((j as u32 * n + k) * half * 8);
        }
    }
    r
}

fn shift_lanes(a: u128, c: u64, w: u32, op: u8) -> u128 {
    let bits = u64::from(w * 8);
    lanes(a, 0, w, |x, _| match op {
        P_SLL if c < bits => x << c,
        P_SRL if c < bits => x >> c,
        P_SRA => (sx(x, w) >> c.min(bits - 1)) as u64,
        _ => 0,
    })
}

/// Shift by immediate: PSLLW/D/Q, PSRLW/D/Q, PSRAW/D, PSLLDQ/PSRLDQ.
fn shift_imm<const OP: u8, const W: u32>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let d = xmm_index(i.op_register(0));
    let a = ctx.cpu.fpu.xmm[d];
    let c = i.immediate(1) & 0xff;
    ctx.cpu.fpu.xmm[d] = if W == 16 {
        // Byte shifts of the whole register.
        if c > 15 {
            0
        } else if OP == P_SLL {
            a << (c * 8)
        } else {
            a >> (c * 8)
        }
    } else {
        shift_lanes(a, c, W, OP)
    };
    Ok(())
}

fn pmovmskb(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let a = ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))];
    let w: u32 = match i.mnemonic() {
        Mnemonic::Movmskps => 4,
        Mnemonic::Movmskpd => 8,
        _ => 1,
    };
    let mut m = 0u64;
    for k in 0..(16 / w) {
        if (a >> (k * w * 8 + w * 8 - 1)) & 1 != 0 {
            m |= 1 << k;
        }
    }
    let r = i.op_register(0);
    let (idx, _, _) = gpr_info(r);
    ctx.cpu.gpr[idx] = m;
    Ok(())
}

fn pshuf(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let s = read_x(ctx, i, 1, true)?;
    let imm = i.immediate(2) as u32;
    let sel = |v: u128, w: u32, base: u32, k: u32| -> u128 {
        let idx = (imm >> (2 * k)) & 3;
        (v >> ((base + idx) * w * 8)) & ((1u128 << (w * 8)) - 1)
    };
    let r = match i.mnemonic() {
        Mnemonic::Pshufd => (0..4).fold(0, |r, k| r | (sel(s, 4, 0, k) << (32 * k))),
        Mnemonic::Pshuflw => {
            (s & !0xffff_ffff_ffff_ffffu128) | (0..4).fold(0, |r, k| r | (sel(s, 2, 0, k) << (16 * k)))
        }
        _ => (s & 0xffff_ffff_ffff_ffff) | (0..4).fold(0, |r, k| r | (sel(s, 2, 4, k) << (64 + 16 * k))),
    };
    ctx.cpu.fpu.xmm[xmm_index(i.op_register(0))] = r;
    Ok(())
}

fn shufps(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let d = xmm_index(i.op_register(0));
    let a = ctx.cpu.fpu.xmm[d];
    let b = read_x(ctx, i, 1, true)?;
    let imm = i.immediate(2) as u32;
    let r = if i.mnemonic() == Mnemonic::Shufps {
        let pick = |v: u128, k: u32| (v >> (((imm >> (2 * k)) & 3) * 32)) & 0xffff_ffff;
        pick(a, 0) | (pick(a, 1) << 32) | (pick(b, 2) << 64) | (pick(b, 3) << 96)
    } else {
        let lo = (a >> ((imm & 1) * 64)) & u128::from(u64::MAX);
        let hi = (b >> (((imm >> 1) & 1) * 64)) & u128::from(u64::MAX);
        lo | (hi << 64)
    };
    ctx.cpu.fpu.xmm[d] = r;
    Ok(())
}

/// PEXTRW r32, xmm, imm8 and PINSRW xmm, r32/m16, imm8.
fn pextrw_pinsrw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let k = (i.immediate(2) & 7) as u32;
    if i.mnemonic() == Mnemonic::Pextrw {
        let v = (ctx.cpu.fpu.xmm[xmm_index(i.op_register(1))] >> (16 * k)) & 0xffff;
        if i.op_kind(0) == OpKind::Register {
            let (idx, _, _) = gpr_info(i.op_register(0));
            ctx.cpu.gpr[idx] = v as u64;
            Ok(())
        } else {
            ctx.write_op(i, 0, v as u64)
        }
    } else {
        let v = u128::from(ctx.read_op(i, 1)? & 0xffff);
        let d = xmm_index(i.op_register(0));
        let m = 0xffffu128 << (16 * k);
        ctx.cpu.fpu.xmm[d] = (ctx.cpu.fpu.xmm[d] & !m) | (v << (16 * k));
        Ok(())
    }
}

fn ldmxcsr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let v = ctx.read_op(i, 0)? as u32;
    if v & !0xffff != 0 {
        return Err(Exception::gp(0).into());
    }
    ctx.cpu.fpu.mxcsr = v;
    Ok(())
}

fn stmxcsr(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_sse(ctx)?;
    let v = u64::from(ctx.cpu.fpu.mxcsr);
    ctx.write_op(i, 0, v)
}

fn movnti(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let v = ctx.read_op(i, 1)?;
    ctx.write_op(i, 0, v)
}

/// Dispatch for this family (XMM forms only).
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    use Mnemonic as M;
    if matches!(m, M::Ldmxcsr) {
        return Some(ldmxcsr);
    }
    if matches!(m, M::Stmxcsr) {
        return Some(stmxcsr);
    }
    if matches!(m, M::Movnti) {
        return Some(movnti);
    }
    let name = format!("{code:?}");
    if !name.contains("xmm") {
        return None;
    }
    Some(match m {
        M::Movdqa | M::Movaps | M::Movapd | M::Movntdq | M::Movntps | M::Movntpd => mov_aligned,
        M::Movdqu | M::Movups | M::Movupd => mov_unaligned,
        M::Movd | M::Movq => movd_movq,
        M::Movss | M::Movsd => mov_scalar,
        M::Movlps | M::Movlpd | M::Movhps | M::Movhpd | M::Movlhps | M::Movhlps => mov_half,
        M::Pxor | M::Xorps | M::Xorpd => packed::<P_XOR, 16>,
        M::Por | M::Orps | M::Orpd => packed::<P_OR, 16>,
        M::Pand | M::Andps | M::Andpd => packed::<P_AND, 16>,
        M::Pandn | M::Andnps | M::Andnpd => packed::<P_ANDN, 16>,
        M::Paddb => packed::<P_ADD, 1>,
        M::Paddw => packed::<P_ADD, 2>,
        M::Paddd => packed::<P_ADD, 4>,
        M::Paddq => packed::<P_ADD, 8>,
        M::Psubb => packed::<P_SUB, 1>,
        M::Psubw => packed::<P_SUB, 2>,
        M::Psubd => packed::<P_SUB, 4>,
        M::Psubq => packed::<P_SUB, 8>,
        M::Pcmpeqb => packed::<P_CMPEQ, 1>,
        M::Pcmpeqw => packed::<P_CMPEQ, 2>,
        M::Pcmpeqd => packed::<P_CMPEQ, 4>,
        M::Pcmpgtb => packed::<P_CMPGT, 1>,
        M::Pcmpgtw => packed::<P_CMPGT, 2>,
        M::Pcmpgtd => packed::<P_CMPGT, 4>,
        M::Pminub => packed::<P_MINU, 1>,
        M::Pmaxub => packed::<P_MAXU, 1>,
        M::Punpcklbw => packed::<P_UNPCKL, 1>,
        M::Punpcklwd => packed::<P_UNPCKL, 2>,
        M::Punpckldq => packed::<P_UNPCKL, 4>,
        M::Punpcklqdq => packed::<P_UNPCKL, 8>,
        M::Unpcklps => packed::<P_UNPCKL, 4>,
        M::Unpcklpd => packed::<P_UNPCKL, 8>,
        M::Unpckhps => packed::<P_UNPCKH, 4>,
        M::Unpckhpd => packed::<P_UNPCKH, 8>,
        M::Punpckhbw => packed::<P_UNPCKH, 1>,
        M::Punpckhwd => packed::<P_UNPCKH, 2>,
        M::Punpckhdq => packed::<P_UNPCKH, 4>,
        M::Punpckhqdq => packed::<P_UNPCKH, 8>,
        M::Psllw | M::Pslld | M::Psllq | M::Psrlw | M::Psrld | M::Psrlq | M::Psraw | M::Psrad
            if name.ends_with("imm8") =>
        {
            match m {
                M::Psllw => shift_imm::<P_SLL, 2>,
                M::Pslld => shift_imm::<P_SLL, 4>,
                M::Psllq => shift_imm::<P_SLL, 8>,
                M::Psrlw => shift_imm::<P_SRL, 2>,
                M::Psrld => shift_imm::<P_SRL, 4>,
                M::Psrlq => shift_imm::<P_SRL, 8>,
                M::Psraw => shift_imm::<P_SRA, 2>,
                _ => shift_imm::<P_SRA, 4>,
            }
        }
        M::Psllw => packed::<P_SLL, 2>,
        M::Pslld => packed::<P_SLL, 4>,
        M::Psllq => packed::<P_SLL, 8>,
        M::Psrlw => packed::<P_SRL, 2>,
        M::Psrld => packed::<P_SRL, 4>,
        M::Psrlq => packed::<P_SRL, 8>,
        M::Psraw => packed::<P_SRA, 2>,
        M::Psrad => packed::<P_SRA, 4>,
        M::Pslldq => shift_imm::<P_SLL, 16>,
        M::Psrldq => shift_imm::<P_SRL, 16>,
        M::Pmovmskb | M::Movmskps | M::Movmskpd => pmovmskb,
        M::Paddusb => packed::<P_ADDUS, 1>,
        M::Paddusw => packed::<P_ADDUS, 2>,
        M::Psubusb => packed::<P_SUBUS, 1>,
        M::Psubusw => packed::<P_SUBUS, 2>,
        M::Paddsb => packed::<P_ADDS, 1>,
        M::Paddsw => packed::<P_ADDS, 2>,
        M::Psubsb => packed::<P_SUBS, 1>,
        M::Psubsw => packed::<P_SUBS, 2>,
        M::Pavgb => packed::<P_AVG, 1>,
        M::Pavgw => packed::<P_AVG, 2>,
        M::Pmullw => packed::<P_MULL, 2>,
        M::Pmulhw => packed::<P_MULH, 2>,
        M::Pmulhuw => packed::<P_MULHU, 2>,
        M::Pmaxsw => packed::<P_MAXS, 2>,
        M::Pminsw => packed::<P_MINS, 2>,
        M::Pmuludq => packed::<P_MULUDQ, 8>,
        M::Pmaddwd => packed::<P_MADDWD, 4>,
        M::Psadbw => packed::<P_SADBW, 8>,
        M::Packsswb => packed::<P_PACKSS, 2>,
        M::Packssdw => packed::<P_PACKSS, 4>,
        M::Packuswb => packed::<P_PACKUS, 2>,
        M::Pextrw | M::Pinsrw => pextrw_pinsrw,
        M::Pshufd | M::Pshuflw | M::Pshufhw => pshuf,
        M::Shufps | M::Shufpd => shufps,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn strlen_style_sequence() {
        // The core of glibc's SSE2 strlen: compare 16 bytes with zero, take the mask.
        let (cpu, mem) = {
            let (mut cpu, mut mem) = prepare(|a| {
                a.mov(rdi, DATA)?;
                a.pxor(xmm0, xmm0)?;
                a.movdqa(xmm1, xmmword_ptr(rdi))?;
                a.pcmpeqb(xmm1, xmm0)?;
                a.pmovmskb(eax, xmm1)?;
                a.bsf(eax, eax)?;
                a.movdqu(xmm2, xmmword_ptr(rdi + 1))?;
                a.movdqu(xmmword_ptr(rdi + 0x21), xmm2)?;
                a.movq(rbx, xmm2)?;
                a.movd(xmm3, ecx)?;
                a.pminub(xmm2, xmm1)?;
                a.pshufd(xmm4, xmm2, 0x1b)?;
                a.punpcklbw(xmm5, xmm0)?;
                a.pslldq(xmm2, 3)?;
                a.psubb(xmm0, xmm1)?;
                Ok(())
            });
            assert!(mem.load(DATA, b"hello, world!\0\0\0"));
            cpu.gpr[1] = 0xdead_beef_1234_5678;
            run_until_hlt(&mut cpu, &mut mem, &mut crate::SimplePlatform::new());
            (cpu, mem)
        };
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!(cpu.gpr[0], 13);
        assert_eq!(&mem.dump(DATA + 0x21, 15).unwrap()[..], b"ello, world!\0\0\0");
        assert_eq!(cpu.gpr[3], u64::from_le_bytes(*b"ello, w\x6f"));
        assert_eq!(cpu.fpu.xmm[3], 0x1234_5678);
        // xmm0 = 0 - (0xff at the three zero bytes) = 0x01 there.
        assert_eq!(cpu.fpu.xmm[0], 0x0101_0100_0000_0000_0000_0000_0000_0000);
    }

    #[test]
    fn saturating_multiply_and_pack() {
        assert_eq!(super::sat_s(200, 1), 127);
        assert_eq!(super::sat_u(-5, 1), 0);
        // packuswb of words [0x0100, 0xfff0, 0x0042, ...] -> bytes [0xff, 0x00, 0x42, ...]
        let a: u128 = 0x0042_fff0_0100;
        let r = super::pack(a, 0, 2, false);
        assert_eq!(r & 0xff_ffff, 0x42_00ff);
        let (cpu, _) = run_asm(|a| {
            a.mov(eax, 0x7fff_8000u32)?;
            a.movd(xmm0, eax)?;
            a.movd(xmm1, eax)?;
            a.paddsw(xmm0, xmm1)?; // saturates both words
            a.mov(ecx, 0x0003_0002)?;
            a.movd(xmm2, ecx)?;
            a.pmaddwd(xmm2, xmm2)?; // 2*2 + 3*3 = 13
            a.pextrw(ebx, xmm0, 1)?;
            a.pinsrw(xmm3, ecx, 7)?;
            Ok(())
        });
        assert_eq!(cpu.fpu.xmm[0] & 0xffff_ffff, 0x7fff_8000);
        assert_eq!(cpu.fpu.xmm[2], 13);
        assert_eq!(cpu.gpr[3], 0x7fff);
        assert_eq!(cpu.fpu.xmm[3] >> 112, 2);
    }

    #[test]
    fn misaligned_movdqa_is_gp() {
        let (cpu, _) = run_asm_expect_exception(|a| {
            a.mov(rdi, DATA + 8)?;
            a.movdqa(xmm1, xmmword_ptr(rdi))?;
            Ok(())
        });
        assert_eq!(cpu.gpr[15], 13);
    }
}
