//! Bit test and scan: BT/BTS/BTR/BTC, BSF/BSR, TZCNT/LZCNT (only when the CPU features offer
//! them; otherwise they execute as BSF/BSR like on CPUs that ignore the F3 prefix), POPCNT.
//!
//! Undefined flags follow the reference CPU of krr-difftest (this project's AMD hosts): BT* change
//! only CF; BSF/BSR clear CF/OF/SF/AF and set PF from the result (ZF|PF for a zero source);
//! TZCNT/LZCNT clear SF/AF/PF and keep OF (AMD) or clear it (Intel; `crate::vendor`). Intel
//! agrees with AMD on BT* and BSF/BSR (difftest: no vendor difference in those families).

use iced_x86::{Code, Mnemonic, OpKind};

use super::alu::pf;
use super::{mask, sext, Decoded, Handler};
use crate::cpu::flags::{CF, OF, PF, ZF};
use crate::error::{ExResult, Exception};
use crate::exec::Ctx;

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

fn bt<const OP: u8>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let bits = (size * 8) as u64;
    let off = ctx.read_op(i, 1)?;
    let (value, bit) = if i.op_kind(0) == OpKind::Memory && i.op_kind(1) == OpKind::Register {
        // Register bit offsets address memory beyond the operand (signed).
        let soff = sext(off & mask(size), size) as i64;
        let byte_off = (soff >> bits.trailing_zeros()) * size as i64;
        let ea = ctx.ea(i).wrapping_add(byte_off as u64);
        let seg = ctx.mseg(i);
        let v = if OP == BT { ctx.read_mem(seg, ea, size)? } else { ctx.read_mem_rmw(seg, ea, size)? };
        let bit = (off & (bits - 1)) as u32;
        let cf = (v >> bit) & 1;
        let nv = match OP {
            BTS => v | (1 << bit),
            BTR => v & !(1 << bit),
            BTC => v ^ (1 << bit),
            _ => v,
        };
        if OP != BT {
            ctx.write_mem(seg, ea, size, nv)?;
        }
        ctx.cpu.rflags = (ctx.cpu.rflags & !CF) | cf;
        return Ok(());
    } else {
        let v = if OP == BT { ctx.read_op(i, 0)? } else { ctx.read_op_rmw(i, 0)? };
        (v, (off & (bits - 1)) as u32)
    };
    let cf = (value >> bit) & 1;
    let nv = match OP {
        BTS => value | (1 << bit),
        BTR => value & !(1 << bit),
        BTC => value ^ (1 << bit),
        _ => value,
    };
    if OP != BT {
        ctx.write_op(i, 0, nv)?;
    }
    ctx.cpu.rflags = (ctx.cpu.rflags & !CF) | cf;
    Ok(())
}

fn bsf_bsr<const REV: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let size = ctx.op_size(i, 0);
    let v = ctx.read_op(i, 1)? & mask(size);
    if v == 0 {
        // Destination unchanged (Intel and AMD both leave it).
        ctx.set_status(ZF | PF);
        return Ok(());
    }
    let r = if REV { 63 - u64::from(v.leading_zeros()) } else { u64::from(v.trailing_zeros()) };
    ctx.write_op(i, 0, r)?;
    ctx.set_status(pf(r));
    Ok(())
}

fn tzcnt_lzcnt<const LZ: bool>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let enabled = if LZ { ctx.cpu.features.lzcnt } else { ctx.cpu.features.bmi1 };
    if !enabled {
        return bsf_bsr::<LZ>(ctx, i);
    }
    let size = ctx.op_size(i, 0);
    let bits = (size * 8) as u32;
    let v = ctx.read_op(i, 1)? & mask(size);
    let r = if v == 0 {
        bits
    } else if LZ {
        v.leading_zeros() - (64 - bits)
    } else {
        v.trailing_zeros()
    };
    ctx.write_op(i, 0, u64::from(r))?;
    let mut f = if ctx.intel() { 0 } else { ctx.cpu.rflags & OF };
    if v == 0 {
        f |= CF;
    }
    if r == 0 {
        f |= ZF;
    }
    ctx.set_status(f);
    Ok(())
}

fn popcnt(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    if !ctx.cpu.features.popcnt {
        return Err(Exception::ud().into());
    }
    let size = ctx.op_size(i, 0);
    let v = ctx.read_op(i, 1)? & mask(size);
    ctx.write_op(i, 0, u64::from(v.count_ones()))?;
    ctx.set_status(if v == 0 { ZF } else { 0 });
    Ok(())
}

/// Dispatch for this family.
pub(crate) fn handler(_code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Bt => bt::<BT>,
        Mnemonic::Bts => bt::<BTS>,
        Mnemonic::Btr => bt::<BTR>,
        Mnemonic::Btc => bt::<BTC>,
        Mnemonic::Bsf => bsf_bsr::<false>,
        Mnemonic::Bsr => bsf_bsr::<true>,
        Mnemonic::Tzcnt => tzcnt_lzcnt::<false>,
        Mnemonic::Lzcnt => tzcnt_lzcnt::<true>,
        Mnemonic::Popcnt => popcnt,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn bit_ops() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(eax, 0x80)?;
            a.bt(eax, 7)?;
            a.setc(bl)?;
            a.mov(rcx, 100u64)?;
            a.bts(qword_ptr(rdi), rcx)?; // sets bit 36 of qword at DATA+8
            a.mov(rdx, -28i64)?;
            a.btr(qword_ptr(rdi + 16), rdx)?; // bit 36 of the qword at DATA+8
            a.setc(cl)?;
            a.mov(esi, 0x10)?;
            a.bsf(r8d, esi)?;
            a.bsr(r9, rsi)?;
            a.mov(r10, 77u64)?;
            a.xor(r11, r11)?;
            a.bsf(r10, r11)?; // ZF=1, r10 unchanged
            a.tzcnt(r12d, r11d)?; // 32, CF=1
            a.lzcnt(r13w, si)?; // 11
            Ok(())
        });
        assert_eq!(cpu.gpr[3] & 0xff, 1);
        assert_eq!(read_u64(&mem, DATA + 8), 0);
        assert_eq!(cpu.gpr[1], 1, "btr saw the bit bts set");
        assert_eq!(cpu.gpr[8], 4);
        assert_eq!(cpu.gpr[9], 4);
        assert_eq!(cpu.gpr[10], 77);
        assert_eq!(cpu.gpr[12], 32);
        assert_eq!(cpu.gpr[13], 11);
    }

    #[test]
    fn bsf_tzcnt_flags_as_the_reference_cpu() {
        // From all status flags set.
        let flags_after = |f: &dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>| {
            status_flags_after(long_mode_cpu(), 0x8d5, f)
        };
        // BSF: PF from the index (3: even parity), the rest clear; zero source: ZF|PF.
        assert_eq!(
            flags_after(&|a| {
                a.mov(ecx, 8)?;
                a.bsf(eax, ecx)
            }),
            0x04
        );
        assert_eq!(
            flags_after(&|a| {
                a.mov(ecx, 2)?;
                a.bsr(eax, ecx)
            }),
            0
        );
        assert_eq!(
            flags_after(&|a| {
                a.mov(ecx, 0)?;
                a.bsf(eax, ecx)
            }),
            0x44
        );
        // TZCNT: OF kept, CF for a zero source, SF/AF/PF clear.
        assert_eq!(
            flags_after(&|a| {
                a.mov(ecx, 0)?;
                a.tzcnt(eax, ecx)
            }),
            0x801
        );
    }

    #[test]
    fn lzcnt_without_feature_is_bsr() {
        let mut cpu = long_mode_cpu();
        cpu.features.lzcnt = false;
        let (cpu, _) = run_asm_on(cpu, |a| {
            a.mov(esi, 0x10)?;
            a.lzcnt(eax, esi)?;
            Ok(())
        });
        assert_eq!(cpu.gpr[0], 4);
    }
}
