//! x87 subset: FNINIT, FNSTCW/FLDCW, FNSTSW, FNCLEX, FWAIT, EMMS, FXSAVE/FXRSTOR, and the
//! data movement the C library uses (FLD m80/m64/m32/ST(i), FILD, FLDZ/FLD1, FXCH, FFREE,
//! FINCSTP/FDECSTP; the stores are in `x87store.rs`). No x87 arithmetic. Exceptions: masked
//! responses, and unmasked ones recorded with FSW.ES/B (the instruction does not complete)
//! and delivered as #MF by the next waiting instruction.

use iced_x86::{Code, Mnemonic, OpKind, Register};

use super::Decoded;
use crate::cpu::cr;
use crate::error::{vector, EmuError, ExResult, Exception};
use crate::exec::Ctx;

/// #NM when CR0.EM or CR0.TS (x87 instructions).
pub(super) fn check_fpu(ctx: &Ctx<'_>) -> ExResult {
    if ctx.cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Exception::new(vector::NM).into());
    }
    Ok(())
}

/// FSW exception summary (ES) and busy (B) bits, set with an unmasked exception.
pub(super) const ES_B: u16 = 0x8080;

/// A pending unmasked x87 exception (FSW.ES) raises #MF before a waiting instruction executes
/// (CR0.NE; without it the exception is signalled through FERR#, which is not modelled).
fn check_pending(ctx: &Ctx<'_>) -> ExResult {
    if ctx.cpu.fpu.fsw & 0x80 != 0 {
        if ctx.cpu.cr0 & cr::CR0_NE != 0 {
            return Err(Exception::new(vector::MF).into());
        }
        return Err(EmuError::Unsupported {
            rip: ctx.start_rip,
            what: "x87 exception with CR0.NE clear (FERR#)",
        }
        .into());
    }
    Ok(())
}

/// `check_fpu` for a waiting x87 instruction: #MF first if an unmasked exception is pending.
pub(super) fn check_waiting(ctx: &Ctx<'_>) -> ExResult {
    check_fpu(ctx)?;
    check_pending(ctx)
}

/// `check_waiting` for a non-control x87 instruction, which Intel also records as the last x87
/// instruction (FXSAVE's FIP; FCS is deprecated there and stays 0). AMD stores FIP only with an
/// x87 exception pending, which krr-emu does not model: its FIP stays as FXRSTOR/FNINIT left it.
pub(super) fn begin_non_control(ctx: &mut Ctx<'_>) -> ExResult {
    check_waiting(ctx)?;
    if ctx.intel() {
        ctx.cpu.fpu.fip = ctx.start_rip;
    }
    Ok(())
}

/// If one of the exception flags `fl` is unmasked in FCW: records `fl` with ES and B (the
/// instruction then does not complete; #MF comes at the next waiting instruction) and returns
/// true.
pub(super) fn raise_unmasked(ctx: &mut Ctx<'_>, fl: u16) -> bool {
    if fl & !ctx.cpu.fpu.fcw & 0x3f == 0 {
        return false;
    }
    ctx.cpu.fpu.fsw |= fl | ES_B;
    true
}

pub(super) fn top(ctx: &Ctx<'_>) -> usize {
    ctx.cpu.fpu_top()
}

pub(super) fn set_top(ctx: &mut Ctx<'_>, t: usize) {
    ctx.cpu.fpu.fsw = (ctx.cpu.fpu.fsw & !(7 << 11)) | (((t & 7) as u16) << 11);
}

pub(super) fn st_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

/// The real indefinite (negative QNaN) loaded by the masked invalid-operation response.
pub(super) const INDEFINITE: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xc0, 0xff, 0xff];

/// Pushes an 80-bit value. A push onto a valid register is a stack overflow: IE, SF and C1 are
/// set and, with IE masked, the real indefinite is pushed instead; with IE unmasked nothing is
/// pushed (#MF at the next waiting instruction).
fn push(ctx: &mut Ctx<'_>, v: [u8; 10]) -> ExResult {
    let t = (top(ctx) + 7) & 7;
    let v = if ctx.cpu.fpu.ftw & (1 << t) != 0 {
        if raise_unmasked(ctx, 0x241) {
            return Ok(());
        }
        ctx.cpu.fpu.fsw |= 0x241; // C1 | SF | IE
        INDEFINITE
    } else {
        ctx.cpu.fpu.fsw &= !0x200; // C1 = 0
        v
    };
    set_top(ctx, t);
    ctx.cpu.fpu.st[t] = v;
    ctx.cpu.fpu.ftw |= 1 << t;
    Ok(())
}

/// Pops ST0, returning it.
pub(super) fn pop(ctx: &mut Ctx<'_>) -> [u8; 10] {
    let t = top(ctx);
    let v = ctx.cpu.fpu.st[t];
    ctx.cpu.fpu.ftw &= !(1 << t);
    set_top(ctx, (t + 1) & 7);
    v
}

/// Exact conversion of an f64 bit pattern to 80-bit extended precision.
pub(crate) fn f64_to_ext(bits: u64) -> [u8; 10] {
    let sign = (bits >> 63) as u16;
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & ((1 << 52) - 1);
    let (e, m): (u16, u64) = if exp == 0 {
        if frac == 0 {
            (0, 0)
        } else {
            // Denormal: normalise.
            let lz = frac.leading_zeros() as i32; // >= 12
            let m = frac << lz;
            let e = 1 - 1023 + 16383 - (lz - 11);
            (e as u16, m)
        }
    } else if exp == 0x7ff {
        (0x7fff, (1 << 63) | (frac << 11))
    } else {
        ((exp - 1023 + 16383) as u16, (1 << 63) | (frac << 11))
    };
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&m.to_le_bytes());
    out[8..].copy_from_slice(&(e | (sign << 15)).to_le_bytes());
    out
}

/// Exact conversion of an integer to 80-bit extended precision.
pub(crate) fn int_to_ext(v: i64) -> [u8; 10] {
    if v == 0 {
        return [0; 10];
    }
    let sign = u16::from(v < 0);
    let mag = v.unsigned_abs();
    let lz = mag.leading_zeros();
    let m = mag << lz;
    let e = 16383 + 63 - lz as u16;
    let mut out = [0u8; 10];
    out[..8].copy_from_slice(&m.to_le_bytes());
    out[8..].copy_from_slice(&(e | (sign << 15)).to_le_bytes());
    out
}

fn fninit(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    let f = &mut ctx.cpu.fpu;
    f.fcw = 0x037f;
    f.fsw = 0;
    f.ftw = 0;
    f.fop = 0;
    f.fip = 0;
    f.fdp = 0;
    Ok(())
}

fn fnstcw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    let v = u64::from(ctx.cpu.fpu.fcw);
    ctx.write_op(i, 0, v)
}

fn fldcw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_waiting(ctx)?;
    let v = ctx.read_op(i, 0)? as u16;
    if ctx.cpu.fpu.fsw & !v & 0x3f != 0 {
        // A set exception flag becomes unmasked: #MF at the next waiting instruction.
        ctx.cpu.fpu.fsw |= ES_B;
    }
    ctx.cpu.fpu.fcw = v | 0x40;
    Ok(())
}

fn fnstsw(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    let v = u64::from(ctx.cpu.fpu.fsw);
    if i.op_kind(0) == OpKind::Register {
        ctx.set_reg(Register::AX, v);
        Ok(())
    } else {
        ctx.write_op(i, 0, v)
    }
}

fn fnclex(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    ctx.cpu.fpu.fsw &= !0x80ff;
    Ok(())
}

fn fwait(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    if ctx.cpu.cr0 & cr::CR0_TS != 0 && ctx.cpu.cr0 & cr::CR0_MP != 0 {
        return Err(Exception::new(vector::NM).into());
    }
    check_pending(ctx)
}

/// EMMS empties every register and, on the reference CPU (AMD), also sets TOP to 0.
fn emms(ctx: &mut Ctx<'_>, _i: &Decoded) -> ExResult {
    check_waiting(ctx)?;
    ctx.cpu.fpu.ftw = 0;
    set_top(ctx, 0);
    Ok(())
}

/// FLD m32fp/m64fp: the extended value and its flags (SNaN quieted with IE, DE for denormals).
fn load_fp(bits: u64, single: bool) -> ([u8; 10], u16) {
    let (nan, quiet, denormal) = if single {
        let b = bits as u32;
        (b & 0x7fff_ffff > 0x7f80_0000, b & (1 << 22) != 0, b & 0x7f80_0000 == 0 && b & 0x7f_ffff != 0)
    } else {
        let e = bits & 0x7ff0_0000_0000_0000;
        let f = bits & 0x000f_ffff_ffff_ffff;
        (e == 0x7ff0_0000_0000_0000 && f != 0, bits & (1 << 51) != 0, e == 0 && f != 0)
    };
    let as_double = if single {
        let b = bits as u32;
        let (e, f) = ((b >> 23) & 0xff, u64::from(b & 0x7f_ffff));
        if e == 0xff {
            (u64::from(b >> 31) << 63) | 0x7ff0_0000_0000_0000 | (f << 29)
        } else {
            f64::from(f32::from_bits(b)).to_bits()
        }
    } else {
        bits
    };
    let mut v = f64_to_ext(as_double);
    let mut fl = 0;
    if nan && !quiet {
        v[7] |= 0x40;
        fl |= 1;
    }
    if denormal {
        fl |= 2;
    }
    (v, fl)
}

fn fld(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    begin_non_control(ctx)?;
    let v = match i.code() {
        Code::Fld_sti => {
            let j = (top(ctx) + st_index(i.op_register(0))) & 7;
            if ctx.cpu.fpu.ftw & (1 << j) == 0 {
                // Stack underflow (C1 = 0): the masked response loads the indefinite.
                if raise_unmasked(ctx, 0x41) {
                    ctx.cpu.fpu.fsw &= !0x200;
                    return Ok(());
                }
                ctx.cpu.fpu.fsw |= 0x41;
                INDEFINITE
            } else {
                ctx.cpu.fpu.st[j]
            }
        }
        Code::Fld1 => int_to_ext(1),
        Code::Fldz => [0; 10],
        Code::Fld_m64fp | Code::Fld_m32fp => {
            let single = i.code() == Code::Fld_m32fp;
            let (v, fl) = load_fp(ctx.read_op(i, 0)?, single);
            // An unmasked IE (SNaN) aborts the load; an unmasked DE does not (measured).
            if fl & 1 != 0 && raise_unmasked(ctx, fl) {
                return Ok(());
            }
            let es_b = if fl & !ctx.cpu.fpu.fcw & 0x3f != 0 { ES_B } else { 0 };
            ctx.cpu.fpu.fsw |= fl | es_b;
            v
        }
        Code::Fild_m16int => int_to_ext(i64::from(ctx.read_op(i, 0)? as i16)),
        Code::Fild_m32int => int_to_ext(i64::from(ctx.read_op(i, 0)? as i32)),
        Code::Fild_m64int => int_to_ext(ctx.read_op(i, 0)? as i64),
        _ => {
            let ea = ctx.ea(i);
            let seg = ctx.mseg(i);
            let mut b = [0u8; 10];
            ctx.read_bytes(seg, ea, &mut b)?;
            b
        }
    };
    push(ctx, v)
}

fn fxch(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    begin_non_control(ctx)?;
    let t = top(ctx);
    let j = (t + st_index(i.op_register(1))) & 7;
    ctx.cpu.fpu.st.swap(t, j);
    Ok(())
}

fn ffree(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    begin_non_control(ctx)?;
    let j = (top(ctx) + st_index(i.op_register(0))) & 7;
    ctx.cpu.fpu.ftw &= !(1 << j);
    if i.mnemonic() == Mnemonic::Ffreep {
        pop(ctx);
    }
    Ok(())
}

fn fincdec(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    begin_non_control(ctx)?;
    let t = top(ctx);
    set_top(ctx, if i.mnemonic() == Mnemonic::Fincstp { t + 1 } else { t + 7 });
    Ok(())
}

/// FXSAVE/FXSAVE64: the legacy area through the XMM registers the mode has (bytes 416..511,
/// reserved and available, are left untouched).
fn fxsave(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    let ea = ctx.ea(i);
    if ea & 15 != 0 {
        return Err(Exception::gp(0).into());
    }
    let img = ctx.cpu.fpu.to_fxsave();
    let n = if ctx.long64() { 416 } else { 288 };
    let seg = ctx.mseg(i);
    ctx.write_bytes(seg, ea, &img[..n])
}

fn fxrstor(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    check_fpu(ctx)?;
    let ea = ctx.ea(i);
    if ea & 15 != 0 {
        return Err(Exception::gp(0).into());
    }
    let seg = ctx.mseg(i);
    let mut b = [0u8; 512];
    ctx.read_bytes(seg, ea, &mut b[..416])?;
    let n = if ctx.long64() { 16 } else { 8 };
    if !ctx.cpu.fpu.load_fxsave(&b, n) {
        return Err(Exception::gp(0).into());
    }
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    use Mnemonic as M;
    Some(match m {
        M::Fninit => fninit,
        M::Fnstcw => fnstcw,
        M::Fldcw => fldcw,
        M::Fnstsw => fnstsw,
        M::Fnclex => fnclex,
        M::Wait => fwait,
        M::Emms => emms,
        M::Fld | M::Fild | M::Fld1 | M::Fldz => fld,
        M::Fxch => fxch,
        M::Ffree | M::Ffreep => ffree,
        M::Fincstp | M::Fdecstp => fincdec,
        M::Fxsave | M::Fxsave64 => fxsave,
        M::Fxrstor | M::Fxrstor64 => fxrstor,
        _ => return None,
    })
}

use super::Handler;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn conversions_are_exact() {
        // 1.0 = exponent 16383, mantissa 1 << 63.
        let one = f64_to_ext(1.0f64.to_bits());
        assert_eq!(one, int_to_ext(1));
        assert_eq!(u16::from_le_bytes([one[8], one[9]]), 0x3fff);
        let m = int_to_ext(-3);
        assert_eq!(u16::from_le_bytes([m[8], m[9]]), 0xc000);
        assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), 0xc000_0000_0000_0000);
        let d = f64_to_ext(1); // smallest denormal = 2^-1074
        assert_eq!(u16::from_le_bytes([d[8], d[9]]), (16383 - 1074) as u16);
    }

    #[test]
    fn fxsave_fxrstor_round_trip() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.fninit()?;
            a.fld1()?;
            a.mov(eax, 0x1f00)?;
            a.mov(dword_ptr(rdi + 0x300), eax)?;
            a.ldmxcsr(dword_ptr(rdi + 0x300))?;
            a.mov(eax, 7)?;
            a.movd(xmm15, eax)?;
            a.fxsave64(ptr(rdi))?;
            a.fninit()?;
            a.pxor(xmm15, xmm15)?;
            a.fxrstor64(ptr(rdi))?;
            a.fnstcw(word_ptr(rdi + 0x310))?;
            a.fnstsw(ax)?;
            Ok(())
        });
        assert_eq!(read_u64(&mem, DATA) & 0xffff, 0x37f);
        assert_eq!(read_u64(&mem, DATA + 24) & 0xffff_ffff, 0x1f00);
        assert_eq!(mem.dump(DATA + 32, 10).unwrap(), int_to_ext(1).to_vec(), "ST0 = 1.0");
        assert_eq!(read_u64(&mem, DATA + 160 + 15 * 16), 7);
        assert_eq!(cpu.fpu.xmm[15], 7);
        assert_eq!(cpu.fpu.mxcsr, 0x1f00);
        assert_eq!(cpu.fpu_top(), 7);
        assert_eq!((cpu.gpr[0] >> 11) & 7, 7, "FNSTSW AX shows TOP");
    }
}
