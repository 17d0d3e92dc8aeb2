//! Shifts and rotates: SHL/SAL/SHR/SAR/ROL/ROR/RCL/RCR/SHLD/SHRD.
//!
//! Counts are masked to 5 bits (6 for 64-bit operands); a masked count of 0 changes no flags
//! (but still writes a 32-bit register, zero-extending it, as Intel does). Flags that the SDM
//! leaves undefined follow the reference CPU of krr-difftest (this project's AMD hosts): OF is
//! computed with the count-1 formula for every count (also for an RCL/RCR count that is a multiple
//! of the width + 1), AF is set when SHL/SHR/SAR/SHLD/SHRD write flags.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::alu::szp;
use super::{mask, sext, Decoded, Handler};
use crate::cpu::flags::{AF, CF, OF};

/// AF after SHL/SHR/SAR with a non-zero count: this project's AMD hosts set it.
const SHIFT_AF: u64 = AF;
use crate::error::ExResult;
use crate::exec::Ctx;

const SHL: u8 = 0;
const SHR: u8 = 1;
const SAR: u8 = 2;
const ROL: u8 = 3;
const ROR: u8 = 4;
const RCL: u8 = 5;
const RCR: u8 = 6;

/// Count operand: CL or an immediate, or 1 for the D0/D1 forms (iced gives an immediate 1).
fn count(ctx: &Ctx<'_>, i: &Instruction, n: u32) -> u64 {
    match i.op_kind(n) {
        OpKind::Register => ctx.reg(i.op_register(n)),
        _ => i.immediate(n),
    }
}

/// Computes (result, Some(status flags)) or (a, None) when flags stay.
#[inline]
pub(crate) fn shift_op(op: u8, a: u64, cnt: u64, cf_in: bool, size: usize) -> (u64, Option<u64>) {
    let bits = (size * 8) as u32;
    let m = mask(size);
    let a = a & m;
    let c = (cnt & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if c == 0 {
        return (a, None);
    }
    let msb = |v: u64| (v >> (bits - 1)) & 1;
    match op {
        SHL => {
            let res = if c >= 64 { 0 } else { (a << c) & m };
            let cf = if c > bits { 0 } else { (a >> (bits - c)) & 1 };
            let mut f = szp(res, size) | if cf != 0 { CF } else { 0 };
            if msb(res) ^ cf != 0 {
                f |= OF;
            }
            (res, Some(f))
        }
        SHR => {
            let res = if c >= 64 { 0 } else { a >> c };
            let cf = if c > 64 { 0 } else { (a >> (c - 1)) & 1 };
            let mut f = szp(res, size) | if cf != 0 { CF } else { 0 };
            if ((res << 1) ^ res) >> (bits - 1) & 1 != 0 {
                f |= OF;
            }
            (res, Some(f))
        }
        SAR => {
            let s = sext(a, size) as i64;
            let res = (s >> c.min(63)) as u64 & m;
            let cf = ((s >> (c - 1).min(63)) & 1) as u64;
            let f = szp(res, size) | if cf != 0 { CF } else { 0 };
            (res, Some(f))
        }
        ROL | ROR => {
            let r = c % bits;
            let res = if r == 0 {
                a
            } else if op == ROL {
                ((a << r) | (a >> (bits - r))) & m
            } else {
                ((a >> r) | (a << (bits - r))) & m
            };
            // Only CF and OF change.
            let (cf, of) = if op == ROL {
                let cf = res & 1;
                (cf, msb(res) ^ cf)
            } else {
                (msb(res), ((res << 1) ^ res) >> (bits - 1) & 1)
            };
            (res, Some((if cf != 0 { CF } else { 0 }) | if of != 0 { OF } else { 0 }))
        }
        _ => {
            // RCL/RCR rotate through CF: a (bits+1)-bit rotation.
            // A masked count that is a multiple of bits+1 rotates nothing but still sets OF (from
            // the unchanged value and CF, as the reference CPU does).
            let r = if size < 4 { c % (bits + 1) } else { c };
            let w = bits + 1;
            let v = u128::from(a) | (u128::from(cf_in) << bits);
            let wm = (1u128 << w) - 1;
            let rot = if r == 0 {
                v
            } else if op == RCL {
                ((v << r) | (v >> (w - r))) & wm
            } else {
                ((v >> r) | (v << (w - r))) & wm
            };
            let res = (rot as u64) & m;
            let cf = ((rot >> bits) & 1) as u64;
            let of = if op == RCL { msb(res) ^ cf } else { ((res << 1) ^ res) >> (bits - 1) & 1 };
            (res, Some((if cf != 0 { CF } else { 0 }) | if of != 0 { OF } else { 0 }))
        }
    }
}

fn shift<const OP: u8>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    let c = count(ctx, i, 1);
    let cf_in = ctx.cpu.rflags & CF != 0;
    let (res, f) = shift_op(OP, a, c, cf_in, size);
    ctx.write_op(i, 0, res)?;
    if let Some(f) = f {
        if OP >= ROL {
            ctx.cpu.rflags = (ctx.cpu.rflags & !(CF | OF)) | f;
        } else {
            // AF (undefined) as the reference CPU of krr-difftest produces it.
            ctx.set_status(f | SHIFT_AF);
        }
    }
    Ok(())
}

/// `shift` with a plain GPR destination (SIZE its size) and an immediate count (CL if
/// `CL_COUNT`): the same semantics with the operand decoding folded away.
fn shift_r<const OP: u8, const SIZE: usize, const CL_COUNT: bool>(
    ctx: &mut Ctx<'_>,
    d: &Decoded,
) -> ExResult {
    let a = ctx.cpu.gpr[d.r0 & 15] & mask(SIZE);
    let c = if CL_COUNT { ctx.cpu.gpr[1] & 0xff } else { d.imm };
    let cf_in = ctx.cpu.rflags & CF != 0;
    let (res, f) = shift_op(OP, a, c, cf_in, SIZE);
    ctx.set_gpr(d.r0, SIZE, res);
    if let Some(f) = f {
        if OP >= ROL {
            ctx.cpu.rflags = (ctx.cpu.rflags & !(CF | OF)) | f;
        } else {
            ctx.set_status(f | SHIFT_AF);
        }
    }
    Ok(())
}

/// Fast handlers for shifts and rotates of a register by an immediate or CL.
pub(crate) fn specialize(d: &Decoded) -> Option<Handler> {
    if d.op_count() != 2 || !d.op0_plain_gpr() {
        return None;
    }
    let cl = match d.op_kind(1) {
        OpKind::Register if d.op_register(1) == iced_x86::Register::CL => true,
        OpKind::Immediate8 => false,
        _ => return None,
    };
    macro_rules! sized {
        ($op:expr) => {
            match (d.size, cl) {
                (8, false) => shift_r::<$op, 8, false> as Handler,
                (4, false) => shift_r::<$op, 4, false> as Handler,
                (2, false) => shift_r::<$op, 2, false> as Handler,
                (_, false) => shift_r::<$op, 1, false> as Handler,
                (8, true) => shift_r::<$op, 8, true> as Handler,
                (4, true) => shift_r::<$op, 4, true> as Handler,
                (2, true) => shift_r::<$op, 2, true> as Handler,
                (_, true) => shift_r::<$op, 1, true> as Handler,
            }
        };
    }
    Some(match d.mnemonic() {
        Mnemonic::Shl | Mnemonic::Sal => sized!(SHL),
        Mnemonic::Shr => sized!(SHR),
        Mnemonic::Sar => sized!(SAR),
        Mnemonic::Rol => sized!(ROL),
        Mnemonic::Ror => sized!(ROR),
        Mnemonic::Rcl => sized!(RCL),
        Mnemonic::Rcr => sized!(RCR),
        _ => return None,
    })
}

/// SHLD/SHRD on a 3×size concatenation, which also gives Intel's results for 16-bit counts
/// above 16.
pub(crate) fn double_shift(left: bool, dst: u64, src: u64, cnt: u64, size: usize) -> (u64, Option<u64>) {
    let bits = (size * 8) as u32;
    let m = mask(size);
    let (dst, src) = (dst & m, src & m);
    let c = (cnt & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if c == 0 {
        return (dst, None);
    }
    let res;
    let cf;
    // 64-bit counts never exceed 63, so two words suffice there; 16-bit counts up to 31
    // need the third word (which also fits: 3 × 32 < 128).
    let words = if size == 8 { 2 } else { 3 };
    let v = if words == 2 {
        if left {
            (u128::from(dst) << bits) | u128::from(src)
        } else {
            (u128::from(src) << bits) | u128::from(dst)
        }
    } else if left {
        // 16-bit counts above 16 are undefined in the manuals; the reference CPU (AMD, checked
        // by krr-difftest) keeps shifting in SRC: DEST:SRC:SRC.
        (u128::from(dst) << (2 * bits)) | (u128::from(src) << bits) | u128::from(src)
    } else {
        (u128::from(src) << (2 * bits)) | (u128::from(src) << bits) | u128::from(dst)
    };
    let total = words * bits;
    if left {
        res = ((v << c) >> (total - bits)) as u64 & m;
        cf = ((v >> (total - c)) & 1) as u64;
    } else {
        res = ((v >> c) as u64) & m;
        cf = ((v >> (c - 1)) & 1) as u64;
    }
    // Undefined flags as the reference CPU (AMD) sets them: AF always; OF = MSB(res) ^ CF for
    // SHLD and the top two result bits differing for SHRD, for every count; 16-bit counts above
    // 16 clear CF (and OF for SHLD), a 16-bit SHLD by 16 sets OF = CF.
    let msb = |x: u64| (x >> (bits - 1)) & 1;
    let (cf, of) = if size == 2 && c > 16 {
        (0, if left { 0 } else { msb(res) ^ msb(res << 1) })
    } else if left {
        (cf, if size == 2 && c == 16 { cf } else { msb(res) ^ cf })
    } else {
        (cf, msb(res) ^ msb(res << 1))
    };
    let mut f = szp(res, size) | AF | if cf != 0 { CF } else { 0 };
    if of != 0 {
        f |= OF;
    }
    (res, Some(f))
}

fn shld_shrd<const LEFT: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    let b = ctx.read_op(i, 1)?;
    let c = count(ctx, i, 2);
    let (res, f) = double_shift(LEFT, a, b, c, size);
    ctx.write_op(i, 0, res)?;
    if let Some(f) = f {
        ctx.set_status(f);
    }
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Shl | Mnemonic::Sal => shift::<SHL>,
        Mnemonic::Shr => shift::<SHR>,
        Mnemonic::Sar => shift::<SAR>,
        Mnemonic::Rol => shift::<ROL>,
        Mnemonic::Ror => shift::<ROR>,
        Mnemonic::Rcl => shift::<RCL>,
        Mnemonic::Rcr => shift::<RCR>,
        Mnemonic::Shld => shld_shrd::<true>,
        Mnemonic::Shrd => shld_shrd::<false>,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::flags::{PF, SF, ZF};
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn shift_counts_and_flags() {
        assert_eq!(shift_op(SHL, 0x81, 1, false, 1), (0x02, Some(CF | OF)));
        assert_eq!(shift_op(SHL, 0x81, 0, false, 1), (0x81, None));
        assert_eq!(shift_op(SHL, 1, 32, false, 4), (1, None), "count masked to 0");
        assert_eq!(shift_op(SHL, 1, 32, false, 8), (1 << 32, Some(PF)));
        assert_eq!(shift_op(SHR, 0x80, 1, false, 1), (0x40, Some(OF)));
        assert_eq!(shift_op(SAR, 0x80, 7, false, 1), (0xff, Some(SF | PF)));
        assert_eq!(shift_op(SAR, 0x80, 31, false, 1), (0xff, Some(SF | PF | CF)));
        assert_eq!(shift_op(SHL, 0xff, 9, false, 1), (0, Some(ZF | PF)));
        assert_eq!(shift_op(ROL, 0x80, 1, false, 1), (0x01, Some(CF | OF)));
        assert_eq!(shift_op(ROR, 0x01, 1, false, 1), (0x80, Some(CF | OF)));
        assert_eq!(shift_op(RCL, 0x80, 1, false, 1), (0x00, Some(CF | OF)));
        assert_eq!(shift_op(RCR, 0x00, 1, true, 1), (0x80, Some(OF)));
        assert_eq!(shift_op(RCL, 0x12, 9, true, 1), (0x12, Some(CF | OF)), "rcl by 9: identity, OF set");
        assert_eq!(double_shift(true, 0x1234, 0xabcd, 4, 2), (0x234a, Some(CF | AF | OF)));
        assert_eq!(double_shift(false, 0x1234, 0xabcd, 4, 2), (0xd123, Some(SF | AF)));
        assert_eq!(double_shift(true, 0x8001, 0x8000, 16, 2), (0x8000, Some(SF | PF | AF | CF | OF)));
        assert_eq!(double_shift(true, 0x81bd, 0x8000, 17, 2), (0x0001, Some(AF)));
        assert_eq!(double_shift(false, 0x0000, 0x8000, 17, 2), (0x4000, Some(PF | AF | OF)));
    }

    #[test]
    fn shifts_in_program() {
        let (cpu, _) = run_asm(|a| {
            a.mov(eax, 1)?;
            a.mov(cl, 65)?;
            a.shl(rax, cl)?; // count 1
            a.mov(rbx, 0xffff_ffff_0000_0001u64)?;
            a.shl(ebx, 0)?; // zero-extends, flags unchanged
            a.mov(rdx, 0x8000_0000_0000_0000u64)?;
            a.sar(rdx, 63)?;
            a.mov(rsi, 0x0123_4567_89ab_cdefu64)?;
            a.rol(rsi, 8)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 2);
        assert_eq!(cpu.gpr[3], 1);
        assert_eq!(cpu.gpr[2], u64::MAX);
        assert_eq!(cpu.gpr[6], 0x2345_6789_abcd_ef01);
    }

    #[test]
    fn memory_and_double_shifts() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(qword_ptr(rdi), 0x81)?;
            a.mov(cl, 4)?;
            a.shl(qword_ptr(rdi), cl)?;
            a.sar(byte_ptr(rdi), 1)?; // 0x10 -> 0x08
            a.mov(rax, 0x1234_5678_9abc_def0u64)?;
            a.mov(rdx, 0xffff_0000_0000_0000u64)?;
            a.shld(rax, rdx, 16)?;
            a.mov(ebx, 1)?;
            a.stc()?;
            a.rcr(ebx, 1)?; // 0x8000_0000, CF=1
            a.setc(r8b)?;
            Ok(())
        });
        assert_eq!(read_u64(&mem, DATA), 0x808);
        assert_eq!(cpu.gpr[0], 0x5678_9abc_def0_ffff);
        assert_eq!(cpu.gpr[3], 0x8000_0000);
        assert_eq!(cpu.gpr[8] & 0xff, 1);
    }

    /// Applies shift/rotate `k` to (dst, count) in the assembler.
    macro_rules! shift_op_asm {
        ($a:expr, $k:expr, $d:expr, $c:expr) => {
            match $k {
                0 => $a.shl($d, $c),
                1 => $a.shr($d, $c),
                2 => $a.sar($d, $c),
                3 => $a.rol($d, $c),
                4 => $a.ror($d, $c),
                5 => $a.rcl($d, $c),
                _ => $a.rcr($d, $c),
            }
        };
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(150))]
        /// The fast register handlers (immediate and CL counts, all sizes) agree with the
        /// generic memory-operand path.
        #[test]
        fn fast_paths_match_generic(
            k in 0u8..7,
            x in proptest::prelude::any::<u64>(),
            n in 0u32..80,
            cf in proptest::prelude::any::<bool>(),
            flags_in in proptest::prelude::any::<bool>(),
        ) {
            let n8 = n & 0xff;
            let (_, mem) = run_asm(|a| {
                a.mov(rdi, DATA)?;
                for form in 0..8usize {
                    let out = (0x100 + form * 32) as i32;
                    for (slot, mem_form) in [(0, false), (16, true)] {
                        a.mov(rax, x)?;
                        a.mov(qword_ptr(rdi + 8), rax)?;
                        a.mov(ecx, n8)?;
                        // Start from known status flags (all set or all clear) plus CF.
                        if flags_in { a.mov(rdx, 0x8d5u64)?; } else { a.mov(rdx, 0u64)?; }
                        a.push(rdx)?;
                        a.popfq()?;
                        if cf { a.stc()?; } else { a.clc()?; }
                        match (form, mem_form) {
                            (0, false) => shift_op_asm!(a, k, rax, n8)?,
                            (1, false) => shift_op_asm!(a, k, eax, n8)?,
                            (2, false) => shift_op_asm!(a, k, ax, n8)?,
                            (3, false) => shift_op_asm!(a, k, al, n8)?,
                            (4, false) => shift_op_asm!(a, k, rax, cl)?,
                            (5, false) => shift_op_asm!(a, k, eax, cl)?,
                            (6, false) => shift_op_asm!(a, k, ax, cl)?,
                            (_, false) => shift_op_asm!(a, k, al, cl)?,
                            (0, true) => shift_op_asm!(a, k, qword_ptr(rdi + 8), n8)?,
                            (1, true) => shift_op_asm!(a, k, dword_ptr(rdi + 8), n8)?,
                            (2, true) => shift_op_asm!(a, k, word_ptr(rdi + 8), n8)?,
                            (3, true) => shift_op_asm!(a, k, byte_ptr(rdi + 8), n8)?,
                            (4, true) => shift_op_asm!(a, k, qword_ptr(rdi + 8), cl)?,
                            (5, true) => shift_op_asm!(a, k, dword_ptr(rdi + 8), cl)?,
                            (6, true) => shift_op_asm!(a, k, word_ptr(rdi + 8), cl)?,
                            (_, true) => shift_op_asm!(a, k, byte_ptr(rdi + 8), cl)?,
                        }
                        a.pushfq()?;
                        a.pop(qword_ptr(rdi + out + slot))?;
                        if mem_form {
                            a.mov(rax, qword_ptr(rdi + 8))?;
                        }
                        a.mov(qword_ptr(rdi + out + slot + 8), rax)?;
                    }
                }
                Ok(())
            });
            for form in 0..8u64 {
                let o = DATA + 0x100 + form * 32;
                let m = [u64::MAX, 0xffff_ffff, 0xffff, 0xff][(form % 4) as usize];
                proptest::prop_assert_eq!(read_u64(&mem, o), read_u64(&mem, o + 16), "flags, form {}", form);
                // A 32-bit register destination is zero-extended; memory keeps the upper bytes.
                proptest::prop_assert_eq!(read_u64(&mem, o + 8) & m, read_u64(&mem, o + 24) & m, "result, form {}", form);
            }
        }
    }
}
