//! Shifts and rotates: SHL/SAL/SHR/SAR/ROL/ROR/RCL/RCR/SHLD/SHRD.
//!
//! Counts are masked to 5 bits (6 for 64-bit operands); a masked count of 0 changes no flags
//! (but still writes a 32-bit register, zero-extending it, as Intel does). Flags the SDM leaves
//! undefined (OF for counts above 1, AF, CF and the result of 16-bit SHLD/SHRD by more than 16)
//! follow the CPU's [`Vendor`] profile; `crate::vendor` has the table. Broadly, AMD computes OF
//! from the result (the last step) and sets AF; Intel computes OF from the operand (the first
//! step), clears AF and leaves OF alone for ROL/ROR by an immediate.

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::alu::szp;
use super::{mask, sext, Decoded, Handler};
use crate::cpu::flags::{AF, CF, OF, STATUS};
use crate::error::ExResult;
use crate::exec::Ctx;
use crate::vendor::Vendor;

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

/// Whether the count operand is an immediate (C0/C1/D0/D1 forms) rather than CL.
fn imm_count(i: &Instruction, n: u32) -> bool {
    i.op_kind(n) != OpKind::Register
}

fn bit(b: bool, f: u64) -> u64 {
    if b {
        f
    } else {
        0
    }
}

/// Shift or rotate `a` (`size` bytes) by `cnt`, with `flags` the RFLAGS before. Returns the
/// result and the new status flags (all six), or None when no flag changes. `imm` says the
/// count came from an immediate, which matters for Intel's OF after ROL/ROR.
#[inline]
pub(crate) fn shift_op(
    op: u8,
    a: u64,
    cnt: u64,
    flags: u64,
    size: usize,
    vendor: Vendor,
    imm: bool,
) -> (u64, Option<u64>) {
    let bits = (size * 8) as u32;
    let m = mask(size);
    let a = a & m;
    let c = (cnt & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if c == 0 {
        return (a, None);
    }
    let intel = vendor == Vendor::Intel;
    let msb = |v: u64| (v >> (bits - 1)) & 1 != 0;
    // The top two bits of `v` differ: OF of a one-bit left shift/rotate of `v`, and OF of a
    // right shift/rotate whose result is `v`.
    let top2 = |v: u64| msb(v) != msb(v << 1);
    let cf_in = flags & CF != 0;
    match op {
        SHL | SHR | SAR => {
            let (res, cf, of) = match op {
                SHL => {
                    let res = if c >= 64 { 0 } else { (a << c) & m };
                    let cf = c <= bits && (a >> (bits - c)) & 1 != 0;
                    (res, cf, if intel { top2(a) } else { msb(res) != cf })
                }
                SHR => {
                    let res = if c >= 64 { 0 } else { a >> c };
                    let cf = c <= 64 && (a >> (c - 1)) & 1 != 0;
                    (res, cf, if intel { msb(a) } else { top2(res) })
                }
                _ => {
                    let s = sext(a, size) as i64;
                    let res = (s >> c.min(63)) as u64 & m;
                    (res, (s >> (c - 1).min(63)) & 1 != 0, false)
                }
            };
            (res, Some(szp(res, size) | bit(cf, CF) | bit(of, OF) | bit(!intel, AF)))
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
            let cf = if op == ROL { res & 1 != 0 } else { msb(res) };
            let of = if intel && c > 1 {
                if imm {
                    flags & OF != 0
                } else if op == ROL {
                    top2(a)
                } else {
                    (a & 1 != 0) != msb(a)
                }
            } else if op == ROL {
                msb(res) != cf
            } else {
                top2(res)
            };
            (res, Some((flags & STATUS & !(CF | OF)) | bit(cf, CF) | bit(of, OF)))
        }
        _ => {
            // RCL/RCR rotate through CF: a (bits+1)-bit rotation.
            let r = if size < 4 { c % (bits + 1) } else { c };
            if r == 0 && intel {
                // A count that is a multiple of bits+1 rotates nothing; Intel changes no flag.
                return (a, None);
            }
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
            let cf = (rot >> bits) & 1 != 0;
            let of = match (intel && c > 1, op == RCL) {
                (true, true) => top2(a),
                (true, false) => msb(a) != cf_in,
                // AMD: from the result, also when nothing rotated.
                (false, true) => msb(res) != cf,
                (false, false) => top2(res),
            };
            (res, Some((flags & STATUS & !(CF | OF)) | bit(cf, CF) | bit(of, OF)))
        }
    }
}

fn shift<const OP: u8>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    let c = count(ctx, i, 1);
    // Intel keeps OF for a rotate by an immediate of a register only (memory: as by CL).
    let imm = imm_count(i, 1) && i.op_kind(0) == OpKind::Register;
    let (res, f) = shift_op(OP, a, c, ctx.cpu.rflags, size, ctx.cpu.features.vendor, imm);
    ctx.write_op(i, 0, res)?;
    if let Some(f) = f {
        ctx.set_status(f);
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
    let (res, f) = shift_op(OP, a, c, ctx.cpu.rflags, SIZE, ctx.cpu.features.vendor, !CL_COUNT);
    ctx.set_gpr(d.r0, SIZE, res);
    if let Some(f) = f {
        ctx.set_status(f);
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

/// SHLD/SHRD on a 3×size concatenation, which also gives the results for 16-bit counts above
/// 16 (undefined in the manuals): AMD keeps shifting in SRC (DEST:SRC:SRC), Intel shifts in
/// DEST again (DEST:SRC:DEST, a 32-bit rotate of DEST:SRC).
pub(crate) fn double_shift(
    left: bool,
    dst: u64,
    src: u64,
    cnt: u64,
    size: usize,
    vendor: Vendor,
) -> (u64, Option<u64>) {
    let bits = (size * 8) as u32;
    let m = mask(size);
    let (dst, src) = (dst & m, src & m);
    let c = (cnt & if size == 8 { 0x3f } else { 0x1f }) as u32;
    if c == 0 {
        return (dst, None);
    }
    let intel = vendor == Vendor::Intel;
    let res;
    let cf;
    // 64-bit counts never exceed 63, so two words suffice there; 16-bit counts up to 31
    // need the third word (which also fits: 3 × 32 < 128).
    let words = if size == 8 { 2 } else { 3 };
    let third = if intel { dst } else { src };
    let v = if words == 2 {
        if left {
            (u128::from(dst) << bits) | u128::from(src)
        } else {
            (u128::from(src) << bits) | u128::from(dst)
        }
    } else if left {
        (u128::from(dst) << (2 * bits)) | (u128::from(src) << bits) | u128::from(third)
    } else {
        (u128::from(third) << (2 * bits)) | (u128::from(src) << bits) | u128::from(dst)
    };
    let total = words * bits;
    if left {
        res = ((v << c) >> (total - bits)) as u64 & m;
        cf = ((v >> (total - c)) & 1) as u64;
    } else {
        res = ((v >> c) as u64) & m;
        cf = ((v >> (c - 1)) & 1) as u64;
    }
    let msb = |x: u64| (x >> (bits - 1)) & 1;
    let (cf, of) = if intel {
        // OF of the first one-bit step; AF clear.
        (cf, if left { msb(dst) ^ msb(dst << 1) } else { msb(dst) ^ (src & 1) })
    } else if size == 2 && c > 16 {
        // AMD: AF always; OF = MSB(res) ^ CF for SHLD and the top two result bits differing
        // for SHRD, for every count; 16-bit counts above 16 clear CF (and OF for SHLD), a
        // 16-bit SHLD by 16 sets OF = CF.
        (0, if left { 0 } else { msb(res) ^ msb(res << 1) })
    } else if left {
        (cf, if size == 2 && c == 16 { cf } else { msb(res) ^ cf })
    } else {
        (cf, msb(res) ^ msb(res << 1))
    };
    let f = szp(res, size) | bit(!intel, AF) | bit(cf != 0, CF) | bit(of != 0, OF);
    (res, Some(f))
}

fn shld_shrd<const LEFT: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let a = ctx.read_op_rmw(i, 0)?;
    let b = ctx.read_op(i, 1)?;
    let c = count(ctx, i, 2);
    let (res, f) = double_shift(LEFT, a, b, c, size, ctx.cpu.features.vendor);
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

    /// AMD profile, CL count, CF in as given.
    fn amd(op: u8, a: u64, c: u64, cf: bool, size: usize) -> (u64, Option<u64>) {
        shift_op(op, a, c, if cf { CF } else { 0 }, size, Vendor::Amd, false)
    }

    fn intel(op: u8, a: u64, c: u64, flags: u64, size: usize, imm: bool) -> (u64, Option<u64>) {
        shift_op(op, a, c, flags, size, Vendor::Intel, imm)
    }

    #[test]
    fn shift_counts_and_flags() {
        assert_eq!(amd(SHL, 0x81, 1, false, 1), (0x02, Some(CF | OF | AF)));
        assert_eq!(amd(SHL, 0x81, 0, false, 1), (0x81, None));
        assert_eq!(amd(SHL, 1, 32, false, 4), (1, None), "count masked to 0");
        assert_eq!(amd(SHL, 1, 32, false, 8), (1 << 32, Some(PF | AF)));
        assert_eq!(amd(SHR, 0x80, 1, false, 1), (0x40, Some(OF | AF)));
        assert_eq!(amd(SAR, 0x80, 7, false, 1), (0xff, Some(SF | PF | AF)));
        assert_eq!(amd(SAR, 0x80, 31, false, 1), (0xff, Some(SF | PF | CF | AF)));
        assert_eq!(amd(SHL, 0xff, 9, false, 1), (0, Some(ZF | PF | AF)));
        assert_eq!(amd(ROL, 0x80, 1, false, 1), (0x01, Some(CF | OF)));
        assert_eq!(amd(ROR, 0x01, 1, false, 1), (0x80, Some(CF | OF)));
        assert_eq!(amd(RCL, 0x80, 1, false, 1), (0x00, Some(CF | OF)));
        assert_eq!(amd(RCR, 0x00, 1, true, 1), (0x80, Some(OF)));
        assert_eq!(amd(RCL, 0x12, 9, true, 1), (0x12, Some(CF | OF)), "rcl by 9: identity, OF set");
        let v = Vendor::Amd;
        assert_eq!(double_shift(true, 0x1234, 0xabcd, 4, 2, v), (0x234a, Some(CF | AF | OF)));
        assert_eq!(double_shift(false, 0x1234, 0xabcd, 4, 2, v), (0xd123, Some(SF | AF)));
        assert_eq!(double_shift(true, 0x8001, 0x8000, 16, 2, v), (0x8000, Some(SF | PF | AF | CF | OF)));
        assert_eq!(double_shift(true, 0x81bd, 0x8000, 17, 2, v), (0x0001, Some(AF)));
        assert_eq!(double_shift(false, 0x0000, 0x8000, 17, 2, v), (0x4000, Some(PF | AF | OF)));
    }

    /// Intel's answers, as the Intel Xeon of the difftest report gave them (cases named).
    #[test]
    fn intel_profile() {
        // shift/Shl8/...: AF clear; OF from the operand's top two bits, whatever the count.
        assert_eq!(intel(SHL, 0x40, 3, 0, 1, false), (0x00, Some(ZF | PF | OF)));
        assert_eq!(intel(SHL, 0x81, 1, 0, 1, false), (0x02, Some(CF | OF)), "count 1 as defined");
        // SHR: OF = the operand's MSB; SAR: OF = 0.
        assert_eq!(intel(SHR, 0x80, 3, 0, 1, false), (0x10, Some(OF)));
        assert_eq!(intel(SAR, 0x80, 3, OF, 1, false), (0xf0, Some(SF | PF)));
        // shift/Rol8/imm5-0-cf0: ROL by an immediate keeps OF.
        assert_eq!(intel(ROL, 0, 5, OF, 1, true), (0, Some(OF)));
        // shift/Rol8/cl7-1-cf0: ROL by CL: OF of the first one-bit rotate.
        assert_eq!(intel(ROL, 1, 7, OF | AF, 1, false), (0x80, Some(AF)));
        assert_eq!(intel(ROR, 0x81, 2, 0, 1, false), (0x60, Some(0)));
        // RCL/RCR: first step; 8-bit by 9 changes nothing.
        assert_eq!(intel(RCL, 0x40, 2, 0, 1, true), (0x00, Some(CF | OF)));
        assert_eq!(intel(RCR, 0x80, 2, CF, 1, false), (0x60, Some(0)));
        assert_eq!(intel(RCL, 0x12, 9, CF | OF, 1, false), (0x12, None));
        // SHLD/SHRD r16 by more than 16 rotate DEST:SRC; AF clear, OF of the first step.
        let v = Vendor::Intel;
        assert_eq!(double_shift(true, 0x81bd, 0x8000, 17, 2, v), (0x0001, Some(CF | OF)));
        assert_eq!(double_shift(false, 0x0000, 0x8000, 17, 2, v), (0x4000, Some(PF)));
        assert_eq!(double_shift(true, 0x1234, 0xabcd, 4, 2, v), (0x234a, Some(CF)));
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
