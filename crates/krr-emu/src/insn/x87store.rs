//! x87 stores: FST/FSTP m32fp/m64fp/ST(i), FSTP m80fp, FIST/FISTP m16int/m32int, FISTP m64int
//! and FISTTP m16/m32/m64int.
//!
//! The 80-bit value is converted in integer arithmetic: rounded by FCW.RC (FISTTP truncates;
//! FCW.PC does not apply to stores), with the status word as the reference CPU sets it: PE and
//! C1 = "rounded up" (the magnitude was incremented), OE with the RC-dependent overflow result,
//! UE for a tiny inexact result, IE for SNaN (stored quieted), unsupported formats (pseudo-NaN,
//! pseudo-infinity, unnormals) and integer conversions out of range or of NaN/infinity (integer
//! indefinite), and the masked stack underflow of an empty ST0 (IE, SF, C1 = 0, the indefinite
//! stored). An unmasked exception other than PE aborts the store (nothing written, no pop);
//! every unmasked one sets FSW.ES and B, and the next waiting instruction raises #MF.

use iced_x86::{Code, Mnemonic, OpKind};

use super::x87::{begin_non_control, pop, st_index, top, ES_B, INDEFINITE};
use super::{Decoded, Handler};
use crate::error::ExResult;
use crate::exec::Ctx;

const IE: u16 = 1;
const OE: u16 = 8;
const UE: u16 = 0x10;
const PE: u16 = 0x20;
const SF: u16 = 0x40;
const C1: u16 = 0x200;

/// Whether tininess is detected after rounding (with an unbounded exponent) rather than before.
const TINY_AFTER_ROUNDING: bool = true;

/// An 80-bit operand, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ext {
    Zero {
        neg: bool,
    },
    /// |value| = m * 2^e, m != 0.
    Finite {
        neg: bool,
        m: u64,
        e: i32,
    },
    Inf {
        neg: bool,
    },
    /// `m` is the 64-bit significand (explicit integer bit set).
    Nan {
        neg: bool,
        m: u64,
        quiet: bool,
    },
    /// Pseudo-NaN, pseudo-infinity, unnormal: invalid operands.
    Unsupported,
}

pub(crate) fn classify(v: &[u8; 10]) -> Ext {
    let m = u64::from_le_bytes(v[..8].try_into().unwrap_or([0; 8]));
    let se = u16::from_le_bytes([v[8], v[9]]);
    let neg = se & 0x8000 != 0;
    let exp = i32::from(se & 0x7fff);
    let int_bit = m >> 63 != 0;
    match exp {
        0 if m == 0 => Ext::Zero { neg },
        // Denormals and pseudo-denormals: the exponent of the smallest normal.
        0 => Ext::Finite { neg, m, e: 1 - 16383 - 63 },
        0x7fff if !int_bit => Ext::Unsupported,
        0x7fff if m << 1 == 0 => Ext::Inf { neg },
        0x7fff => Ext::Nan { neg, m, quiet: m & (1 << 62) != 0 },
        _ if !int_bit => Ext::Unsupported,
        _ => Ext::Finite { neg, m, e: exp - 16383 - 63 },
    }
}

/// Rounds m / 2^shift (shift > 0) to an integer by `rc` for a value of sign `neg`:
/// (quotient, inexact, magnitude incremented).
fn round_shift(m: u64, shift: i32, rc: u16, neg: bool) -> (u128, bool, bool) {
    let m = u128::from(m);
    if shift <= 0 {
        return (m << (-shift).min(64), false, false);
    }
    let shift = shift.min(66) as u32;
    let q = m >> shift;
    let rem = m & ((1u128 << shift) - 1);
    let half = 1u128 << (shift - 1);
    let inexact = rem != 0;
    let up = match rc {
        0 => rem > half || (rem == half && q & 1 == 1),
        1 => neg && inexact,
        2 => !neg && inexact,
        _ => false,
    };
    (q + u128::from(up), inexact, up)
}

/// Binary floating-point format of a store: precision (with the integer bit), minimum and
/// maximum unbiased exponent.
#[derive(Clone, Copy)]
pub(crate) struct Format {
    p: i32,
    emin: i32,
    emax: i32,
}

pub(crate) const SINGLE: Format = Format { p: 24, emin: -126, emax: 127 };
pub(crate) const DOUBLE: Format = Format { p: 53, emin: -1022, emax: 1023 };

impl Format {
    fn frac_bits(self) -> u32 {
        (self.p - 1) as u32
    }
    fn exp_all(self) -> u64 {
        (((self.emax + 1) * 2 - 1) as u64) << self.frac_bits()
    }
    fn sign(self, neg: bool) -> u64 {
        u64::from(neg) << (self.frac_bits() + if self.p == 24 { 8 } else { 11 })
    }
    fn indefinite(self) -> u64 {
        self.sign(true) | self.exp_all() | (1 << (self.frac_bits() - 1))
    }
}

/// (result bits, FSW exception flags, C1) of converting `v` to format `f` rounded by `rc`, with
/// the FCW exception masks `masks`: an unmasked overflow or underflow reports OE or UE alone (UE
/// for every tiny result, exact or not) and C1 = 0; nothing is stored then.
pub(crate) fn to_float(v: &[u8; 10], f: Format, rc: u16, masks: u16) -> (u64, u16, bool) {
    let fb = f.frac_bits();
    match classify(v) {
        Ext::Zero { neg } => (f.sign(neg), 0, false),
        Ext::Inf { neg } => (f.sign(neg) | f.exp_all(), 0, false),
        Ext::Unsupported => (f.indefinite(), IE, false),
        Ext::Nan { neg, m, quiet } => {
            let frac = ((m << 1) >> (64 - fb)) | (1 << (fb - 1));
            (f.sign(neg) | f.exp_all() | frac, if quiet { 0 } else { IE }, false)
        }
        Ext::Finite { neg, m, e } => {
            let top_exp = e + 63 - m.leading_zeros() as i32;
            // Rounded to p bits with an unbounded exponent.
            let (q_unb, _, _) = round_shift(m, top_exp - (f.p - 1) - e, rc, neg);
            // Tiny: below 2^emin after rounding with an unbounded exponent (or before).
            let tiny =
                top_exp < f.emin && (!TINY_AFTER_ROUNDING || top_exp < f.emin - 1 || q_unb >> f.p == 0);
            // An unmasked underflow or overflow of a memory store reports UE or OE alone, C1 = 0
            // (measured).
            if tiny && masks & UE == 0 {
                return (0, UE, false);
            }
            if top_exp + (q_unb >> f.p) as i32 > f.emax && masks & OE == 0 {
                return (0, OE, false);
            }
            let mut lsb = top_exp.max(f.emin) - (f.p - 1);
            let (mut q, inexact, up) = round_shift(m, lsb - e, rc, neg);
            if q >> f.p != 0 {
                q >>= 1;
                lsb += 1;
            }
            let mut fl = if inexact { PE } else { 0 };
            if q == 0 {
                let fl = if inexact { fl | UE } else { fl };
                return (f.sign(neg), fl, up);
            }
            let rexp = lsb + 127 - q.leading_zeros() as i32;
            if rexp > f.emax {
                // Overflow: infinity or the largest finite value, as the rounding mode points.
                let to_inf = match rc {
                    0 => true,
                    1 => neg,
                    2 => !neg,
                    _ => false,
                };
                let mag = if to_inf { f.exp_all() } else { f.exp_all() - 1 };
                return (f.sign(neg) | mag, OE | PE, to_inf);
            }
            if tiny && inexact {
                fl |= UE;
            }
            let bits = if q >> fb == 0 {
                q as u64
            } else {
                (((rexp + f.emax) as u64) << fb) | (q as u64 & ((1 << fb) - 1))
            };
            (f.sign(neg) | bits, fl, up)
        }
    }
}

/// (result bits of `size` bytes, FSW flags, C1) of converting `v` to a signed integer, rounded
/// by `rc` (3 truncates); NaN, infinity, unsupported formats and values out of range give the
/// integer indefinite and IE.
pub(crate) fn to_int(v: &[u8; 10], size: usize, rc: u16) -> (u64, u16, bool) {
    let bits = size as u32 * 8;
    let indefinite = 1u64 << (bits - 1);
    let mask = if size == 8 { u64::MAX } else { (1u64 << bits) - 1 };
    match classify(v) {
        Ext::Zero { .. } => (0, 0, false),
        Ext::Finite { neg, m, e } => {
            if e >= 64 {
                return (indefinite, IE, false);
            }
            let (q, inexact, up) = round_shift(m, -e, rc, neg);
            let limit = (1u128 << (bits - 1)) - u128::from(!neg);
            if q > limit {
                return (indefinite, IE, false);
            }
            let r = if neg { (q as u64).wrapping_neg() } else { q as u64 };
            (r & mask, if inexact { PE } else { 0 }, up)
        }
        _ => (indefinite, IE, false),
    }
}

/// Commits a store's status: the sticky flags and C1.
fn set_status(ctx: &mut Ctx<'_>, fl: u16, c1: bool) {
    let f = &mut ctx.cpu.fpu;
    f.fsw = (f.fsw & !C1) | fl | if c1 { C1 } else { 0 };
}

/// An exception FCW leaves unmasked, other than PE: the store does not complete (nothing
/// written, no pop); the flags are recorded with ES and B (C1 = 0 for a stack underflow, else the
/// rounding direction) for #MF at the next waiting instruction. Returns true in that case.
fn aborts(ctx: &mut Ctx<'_>, fl: u16, c1: bool) -> bool {
    if fl & !ctx.cpu.fpu.fcw & 0x3f & !PE == 0 {
        return false;
    }
    set_status(ctx, fl | ES_B, c1 && fl & SF == 0);
    true
}

/// ES and B when the (completed) store raised an unmasked PE.
fn es_b(ctx: &Ctx<'_>, fl: u16) -> u16 {
    if fl & !ctx.cpu.fpu.fcw & 0x3f != 0 {
        ES_B
    } else {
        0
    }
}

/// ST0, or `None` when it is empty (stack underflow).
fn st0(ctx: &Ctx<'_>) -> Option<[u8; 10]> {
    let t = top(ctx);
    (ctx.cpu.fpu.ftw & (1 << t) != 0).then(|| ctx.cpu.fpu.st[t])
}

/// The conversion of a store form: `None` for the exact 80-bit copies, else a float format or
/// an integer size with its rounding control override (FISTTP truncates).
enum Conv {
    Copy,
    Float(Format),
    Int(usize, Option<u16>),
}

fn conv_of(code: Code) -> Conv {
    match code {
        Code::Fst_m32fp | Code::Fstp_m32fp => Conv::Float(SINGLE),
        Code::Fst_m64fp | Code::Fstp_m64fp => Conv::Float(DOUBLE),
        Code::Fist_m16int | Code::Fistp_m16int => Conv::Int(2, None),
        Code::Fist_m32int | Code::Fistp_m32int => Conv::Int(4, None),
        Code::Fistp_m64int => Conv::Int(8, None),
        Code::Fisttp_m16int => Conv::Int(2, Some(3)),
        Code::Fisttp_m32int => Conv::Int(4, Some(3)),
        Code::Fisttp_m64int => Conv::Int(8, Some(3)),
        _ => Conv::Copy,
    }
}

/// Writes a converted value and commits its status; false if an unmasked exception aborted it.
fn store_converted(ctx: &mut Ctx<'_>, i: &Decoded, (r, fl, c1): (u64, u16, bool)) -> ExResult<bool> {
    if aborts(ctx, fl, c1) {
        return Ok(false);
    }
    ctx.write_op(i, 0, r)?;
    set_status(ctx, fl | es_b(ctx, fl), c1);
    Ok(true)
}

fn fst(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    begin_non_control(ctx)?;
    let code = i.code();
    let popping = matches!(i.mnemonic(), Mnemonic::Fstp | Mnemonic::Fistp | Mnemonic::Fisttp);
    let rc = (ctx.cpu.fpu.fcw >> 10) & 3;
    let src = st0(ctx);
    match conv_of(code) {
        Conv::Copy => {
            let (v, fl) = match src {
                Some(v) => (v, 0),
                None => (INDEFINITE, IE | SF),
            };
            if aborts(ctx, fl, false) {
                return Ok(());
            }
            if i.op_kind(0) == OpKind::Register {
                let d = (top(ctx) + st_index(i.op_register(0))) & 7;
                ctx.cpu.fpu.st[d] = v;
                ctx.cpu.fpu.ftw |= 1 << d;
            } else {
                let (seg, ea) = (ctx.mseg(i), ctx.ea(i));
                ctx.write_bytes(seg, ea, &v)?;
            }
            set_status(ctx, fl, false);
        }
        Conv::Float(f) => {
            let masks = ctx.cpu.fpu.fcw & 0x3f;
            let res = src.map_or((f.indefinite(), IE | SF, false), |v| to_float(&v, f, rc, masks));
            if !store_converted(ctx, i, res)? {
                return Ok(());
            }
        }
        Conv::Int(size, rc2) => {
            let res =
                src.map_or((1u64 << (size * 8 - 1), IE | SF, false), |v| to_int(&v, size, rc2.unwrap_or(rc)));
            if !store_converted(ctx, i, res)? {
                return Ok(());
            }
        }
    }
    if popping {
        pop(ctx);
    }
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    use Mnemonic as M;
    match m {
        M::Fst | M::Fstp | M::Fist | M::Fistp | M::Fisttp => {}
        _ => return None,
    }
    match code {
        Code::Fst_m32fp
        | Code::Fst_m64fp
        | Code::Fst_sti
        | Code::Fstp_m32fp
        | Code::Fstp_m64fp
        | Code::Fstp_m80fp
        | Code::Fstp_sti
        | Code::Fist_m16int
        | Code::Fist_m32int
        | Code::Fistp_m16int
        | Code::Fistp_m32int
        | Code::Fistp_m64int
        | Code::Fisttp_m16int
        | Code::Fisttp_m32int
        | Code::Fisttp_m64int => Some(fst),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::insn::x87::{f64_to_ext, int_to_ext};

    fn ext(sign_exp: u16, m: u64) -> [u8; 10] {
        let mut v = [0u8; 10];
        v[..8].copy_from_slice(&m.to_le_bytes());
        v[8..].copy_from_slice(&sign_exp.to_le_bytes());
        v
    }

    #[test]
    fn float_stores_round_by_rc() {
        let third = ext(0x3ffd, 0xaaaa_aaaa_aaaa_aaab);
        let (r, fl, c1) = to_float(&third, DOUBLE, 0, 0x3f);
        assert_eq!((f64::from_bits(r), fl, c1), (1.0 / 3.0, PE, false));
        let (r, _, c1) = to_float(&third, DOUBLE, 2, 0x3f);
        assert_eq!((r, c1), ((1.0f64 / 3.0).to_bits() + 1, true));
        let (r, fl, c1) = to_float(&third, SINGLE, 0, 0x3f);
        assert_eq!((f32::from_bits(r as u32), fl, c1), (1.0f32 / 3.0, PE, true));
        for x in [1.5f64, -2.5, 1e-310, f64::MAX, f64::MIN_POSITIVE, -0.0, f64::INFINITY] {
            assert_eq!(to_float(&f64_to_ext(x.to_bits()), DOUBLE, 0, 0x3f), (x.to_bits(), 0, false), "{x}");
        }
        // 1e300 overflows single: infinity to nearest, MAX toward zero.
        let big = f64_to_ext(1e300f64.to_bits());
        assert_eq!(to_float(&big, SINGLE, 0, 0x3f), (0x7f80_0000, OE | PE, true));
        assert_eq!(to_float(&big, SINGLE, 3, 0x3f), (0x7f7f_ffff, OE | PE, false));
        // A tiny inexact value underflows; a denormal that fits is exact.
        assert_eq!(to_float(&f64_to_ext(1e-310f64.to_bits()), SINGLE, 0, 0x3f), (0, UE | PE, false));
        let d = f64::from(f32::from_bits(1));
        assert_eq!(to_float(&f64_to_ext(d.to_bits()), SINGLE, 0, 0x3f), (1, 0, false));
        // SNaN: IE, quieted.
        assert_eq!(to_float(&ext(0x7fff, 0x8000_0000_0000_0001), DOUBLE, 0, 0x3f).1, IE);
        assert_eq!(to_float(&ext(0xffff, 0xc000_0000_0000_0000), SINGLE, 0, 0x3f), (0xffc0_0000, 0, false));
        assert_eq!(
            to_float(&ext(0x3fff, 0x4000_0000_0000_0000), DOUBLE, 0, 0x3f),
            (DOUBLE.indefinite(), IE, false)
        );
    }

    #[test]
    fn stores_in_program() {
        use crate::testutil::*;
        use iced_x86::code_asm::*;
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(rax, (1.0f64 / 3.0).to_bits())?;
            a.mov(qword_ptr(rdi), rax)?;
            a.fninit()?;
            a.fld(qword_ptr(rdi))?;
            a.fst(dword_ptr(rdi + 8))?; // rounds up: PE, C1
            a.fistp(word_ptr(rdi + 12))?; // 0, PE; pops
            a.fstp(qword_ptr(rdi + 16))?; // empty: stack underflow, indefinite
            a.fnstsw(ax)
        });
        assert_eq!(read_u64(&mem, DATA + 8) as u32, (1.0f32 / 3.0).to_bits());
        assert_eq!(read_u64(&mem, DATA + 12) as u16, 0);
        assert_eq!(read_u64(&mem, DATA + 16), DOUBLE.indefinite());
        // IE | SF | PE, C1 = 0 after the underflow; the underflowing FSTP popped too: TOP = 1.
        assert_eq!(cpu.gpr[0] as u16, IE | SF | PE | (1 << 11));
        assert_eq!(cpu.fpu_top(), 1);
    }

    #[test]
    fn unmasked_exceptions_raise_mf_at_the_next_waiting_instruction() {
        use crate::testutil::*;
        use iced_x86::code_asm::*;
        let (cpu, mem) = run_asm_expect_exception(|a| {
            a.mov(rdi, DATA)?;
            a.mov(rax, 1e300f64.to_bits())?;
            a.mov(qword_ptr(rdi), rax)?;
            a.mov(word_ptr(rdi + 8), 0x0377)?; // OE unmasked
            a.fninit()?;
            a.fldcw(word_ptr(rdi + 8))?;
            a.fld(qword_ptr(rdi))?;
            a.fstp(dword_ptr(rdi + 16))?; // overflow: aborted, nothing stored, no pop
            a.fnstsw(word_ptr(rdi + 24))?; // not waiting: no #MF
            a.wait()?; // #MF
            a.mov(r15, 0xbad_u64)
        });
        assert_eq!(cpu.gpr[15], 16, "#MF");
        assert_eq!(read_u64(&mem, DATA + 16) as u32, 0, "nothing stored");
        assert_eq!(read_u64(&mem, DATA + 24) as u16, 0x8080 | OE | (7 << 11), "B, ES, OE; TOP = 7");
        assert_eq!(cpu.fpu_top(), 7, "not popped");
    }

    #[test]
    fn integer_stores() {
        let v = |x: f64| f64_to_ext(x.to_bits());
        assert_eq!(to_int(&v(2.5), 4, 0), (2, PE, false));
        assert_eq!(to_int(&v(-2.5), 4, 1), (-3i32 as u32 as u64, PE, true));
        assert_eq!(to_int(&v(-2.5), 4, 3), (-2i32 as u32 as u64, PE, false));
        assert_eq!(to_int(&v(32767.5), 2, 0), (0x8000, IE, false));
        assert_eq!(to_int(&v(-32768.0), 2, 0), (0x8000, 0, false));
        assert_eq!(to_int(&int_to_ext(i64::MIN), 8, 0), (1 << 63, 0, false));
        assert_eq!(to_int(&v(9.3e18), 8, 0), (1 << 63, IE, false));
        assert_eq!(to_int(&v(f64::NAN), 2, 0), (0x8000, IE, false));
        assert_eq!(to_int(&v(0.25), 8, 2), (1, PE, true));
    }
}
