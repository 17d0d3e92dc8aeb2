//! String instructions MOVS/STOS/LODS/CMPS/SCAS/INS/OUTS, with REP/REPE/REPNE.
//!
//! Every iteration is a unit: a fault in iteration k leaves RCX/RSI/RDI as updated by the
//! k-1 before it and RIP on the instruction; a pending interrupt between iterations stops it
//! the same way (the step reports `Interrupted`), so the interrupt is delivered with RIP on
//! the string instruction, exactly like hardware. Where the vendors differ (fault order of
//! CMPS, flags of a REP CMPS/SCAS that faults) the CPU's profile decides (`crate::vendor`).

use iced_x86::{Code, Instruction, Mnemonic, OpKind};

use super::alu::sub_flags;
use super::{mask, system, Decoded, Handler};
use crate::cpu::flags::{DF, IF, ZF};
use crate::cpu::SegReg;
use crate::error::ExResult;
use crate::exec::Ctx;
use crate::paging::Access;

const MOVS: u8 = 0;
const STOS: u8 = 1;
const LODS: u8 = 2;
const CMPS: u8 = 3;
const SCAS: u8 = 4;
const INS: u8 = 5;
const OUTS: u8 = 6;

/// Address size in bytes from the string operand kinds.
fn addr_size(i: &Instruction) -> usize {
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::MemorySegRSI | OpKind::MemoryESRDI => return 8,
            OpKind::MemorySegESI | OpKind::MemoryESEDI => return 4,
            OpKind::MemorySegSI | OpKind::MemoryESDI => return 2,
            _ => {}
        }
    }
    8
}

fn bump(ctx: &mut Ctx<'_>, reg: usize, delta: u64, asz: usize) {
    let old = ctx.cpu.gpr[reg];
    let v = old.wrapping_add(delta);
    ctx.cpu.gpr[reg] = match asz {
        8 => v,
        4 => v & 0xffff_ffff,
        _ => (old & !0xffff) | (v & 0xffff),
    };
}

fn string<const OP: u8>(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let asz = addr_size(i);
    let am = mask(asz);
    let esz = match OP {
        INS | OUTS | STOS | SCAS | LODS | MOVS | CMPS => i.memory_size().size().max(1),
        _ => 1,
    };
    let repe = i.has_rep_prefix();
    let repne = i.has_repne_prefix();
    let rep = repe || repne;
    let delta = if ctx.cpu.rflags & DF != 0 { (esz as u64).wrapping_neg() } else { esz as u64 };
    let src_seg = super::seg_of(i.memory_segment());
    let port = (ctx.cpu.gpr[2] & 0xffff) as u16;
    if OP == INS || OP == OUTS {
        system::check_io(ctx, port, esz)?;
    }
    if (OP == MOVS || OP == STOS)
        && rep
        && asz == 8
        && delta == esz as u64
        && !ctx.ac_active()
        && fast_forward::<OP>(ctx, src_seg, esz)?
    {
        return Ok(());
    }
    // Intel commits a REP CMPS/SCAS's flags only when it ends: a fault in a later iteration
    // reports the flags from before the instruction (AMD: those of the last compare).
    let flags_before = ctx.cpu.rflags;
    let intel = ctx.intel();
    let iterate = |ctx: &mut Ctx<'_>| -> ExResult {
        loop {
            if rep && ctx.cpu.gpr[1] & am == 0 {
                break;
            }
            let si = ctx.cpu.gpr[6] & am;
            let di = ctx.cpu.gpr[7] & am;
            match OP {
                MOVS => {
                    let v = ctx.read_mem(src_seg, si, esz)?;
                    ctx.write_mem(SegReg::Es, di, esz, v)?;
                    bump(ctx, 6, delta, asz);
                    bump(ctx, 7, delta, asz);
                }
                STOS => {
                    let v = ctx.cpu.gpr[0] & mask(esz);
                    ctx.write_mem(SegReg::Es, di, esz, v)?;
                    bump(ctx, 7, delta, asz);
                }
                LODS => {
                    let v = ctx.read_mem(src_seg, si, esz)?;
                    ctx.set_reg(super::acc_reg(esz), v);
                    bump(ctx, 6, delta, asz);
                }
                CMPS => {
                    // When both operands fault, ES:[RDI] is reported first, except for AMD's
                    // REPE CMPSB, which reads [RSI] first (krr-difftest; `crate::vendor`).
                    let (a, b) = if repe && !repne && esz == 1 && !intel {
                        let a = ctx.read_mem(src_seg, si, esz)?;
                        (a, ctx.read_mem(SegReg::Es, di, esz)?)
                    } else {
                        let b = ctx.read_mem(SegReg::Es, di, esz)?;
                        (ctx.read_mem(src_seg, si, esz)?, b)
                    };
                    let (_, f) = sub_flags(a, b, 0, esz);
                    ctx.set_status(f);
                    bump(ctx, 6, delta, asz);
                    bump(ctx, 7, delta, asz);
                }
                SCAS => {
                    let b = ctx.read_mem(SegReg::Es, di, esz)?;
                    let (_, f) = sub_flags(ctx.cpu.gpr[0], b, 0, esz);
                    ctx.set_status(f);
                    bump(ctx, 7, delta, asz);
                }
                INS => {
                    // Check the destination before the port read has side effects.
                    ctx.read_mem_rmw(SegReg::Es, di, esz)?;
                    let v = ctx.plat.io_in(port, esz as u8)?;
                    ctx.write_mem(SegReg::Es, di, esz, u64::from(v))?;
                    bump(ctx, 7, delta, asz);
                }
                _ => {
                    let v = ctx.read_mem(src_seg, si, esz)?;
                    ctx.plat.io_out(port, esz as u8, v as u32)?;
                    bump(ctx, 6, delta, asz);
                }
            }
            if !rep {
                break;
            }
            bump(ctx, 1, u64::MAX, asz);
            if ctx.cpu.gpr[1] & am == 0 {
                break;
            }
            if OP == CMPS || OP == SCAS {
                let zf = ctx.cpu.rflags & ZF != 0;
                if (repe && !zf) || (repne && zf) {
                    break;
                }
            }
            if ctx.cpu.rflags & IF != 0 && ctx.plat.interrupt_pending() {
                ctx.cpu.rip = ctx.start_rip;
                ctx.rep_interrupted = true;
                return Ok(());
            }
        }
        Ok(())
    };
    let r = iterate(ctx);
    if r.is_err() && rep && (OP == CMPS || OP == SCAS) && ctx.intel() {
        ctx.set_status(flags_before);
    }
    r
}

/// Bulk REP MOVS/STOS (64-bit addressing, DF=0): whole runs of elements that stay inside
/// one source and one destination page, all RAM, are done with one translation each. Stops
/// (returning `false`) to let the element loop finish when a run would touch MMIO; returns
/// `true` when done or interrupted. Faults leave RCX/RSI/RDI at the completed elements.
fn fast_forward<const OP: u8>(ctx: &mut Ctx<'_>, src_seg: SegReg, esz: usize) -> ExResult<bool> {
    let mut buf = [0u8; 4096];
    loop {
        let rcx = ctx.cpu.gpr[1];
        if rcx == 0 {
            return Ok(true);
        }
        let di = ctx.cpu.gpr[7];
        let si = ctx.cpu.gpr[6];
        let prv = ctx.data_priv();
        let dst_lin = ctx.linear(SegReg::Es, di, esz)?;
        let room_d = 4096 - (dst_lin & 0xfff) as usize;
        let mut n = room_d / esz;
        let mut src_lin = 0;
        if OP == MOVS {
            src_lin = ctx.linear(src_seg, si, esz)?;
            n = n.min((4096 - (src_lin & 0xfff) as usize) / esz);
            // A destination just above the source re-reads bytes this copy writes (element
            // semantics, e.g. a repeating pattern): copy at most that distance at a time.
            let dist = dst_lin.wrapping_sub(src_lin);
            if dist != 0 && dist < 4096 {
                n = n.min(dist as usize / esz);
            }
        }
        let n = n.min(usize::try_from(rcx).unwrap_or(usize::MAX));
        if n == 0 {
            // An element straddles a page: let the element loop do it.
            return Ok(false);
        }
        let bytes = n * esz;
        let chunk = &mut buf[..bytes];
        if OP == MOVS {
            let sp = ctx.translate(src_lin, Access::Read, prv)?;
            if !ctx.mem.read(sp, chunk) {
                return Ok(false);
            }
        } else {
            let v = ctx.cpu.gpr[0].to_le_bytes();
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = v[k % esz];
            }
        }
        let dp = ctx.translate(dst_lin, Access::Write, prv)?;
        if !ctx.mem_write(dp, chunk) {
            return Ok(false);
        }
        ctx.cpu.gpr[7] = di.wrapping_add(bytes as u64);
        if OP == MOVS {
            ctx.cpu.gpr[6] = si.wrapping_add(bytes as u64);
        }
        ctx.cpu.gpr[1] = rcx - n as u64;
        if ctx.cpu.gpr[1] != 0 && ctx.cpu.rflags & IF != 0 && ctx.plat.interrupt_pending() {
            ctx.cpu.rip = ctx.start_rip;
            ctx.rep_interrupted = true;
            return Ok(true);
        }
    }
}

/// Dispatch for this family.
pub(crate) fn handler(code: Code, m: Mnemonic) -> Option<Handler> {
    Some(match m {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsq => string::<MOVS>,
        // MOVSD is also the SSE2 scalar move; only the string form is legacy-encoded without
        // operands of XMM kind.
        Mnemonic::Movsd if code == Code::Movsd_m32_m32 => string::<MOVS>,
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => string::<STOS>,
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => string::<LODS>,
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsq => string::<CMPS>,
        Mnemonic::Cmpsd if code == Code::Cmpsd_m32_m32 => string::<CMPS>,
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => string::<SCAS>,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => string::<INS>,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => string::<OUTS>,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::flags::ZF;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    #[test]
    fn bulk_rep_movs_fault_leaves_progress() {
        // Copy 3 pages' worth into a destination whose third page is unmapped (beyond the
        // 16 MiB identity map): the fault leaves RCX/RSI/RDI after the completed elements.
        let (cpu, mem) = run_asm_expect_exception(|a| {
            a.mov(rsi, DATA)?;
            a.mov(rdi, 0x100_0000u64 - 0x2000)?;
            a.mov(ecx, 0x3000)?;
            a.rep().movsb()?;
            Ok(())
        });
        assert_eq!(cpu.gpr[15], 14);
        assert_eq!(cpu.gpr[1], 0x1000);
        assert_eq!(cpu.gpr[7], 0x100_0000);
        assert_eq!(cpu.gpr[6], DATA + 0x2000);
        assert_eq!(cpu.cr2, 0x100_0000);
        assert_eq!(read_u64(&mem, cpu.gpr[4] + 8), CODE + 25, "RIP on the rep movsb");
    }

    #[test]
    fn overlapping_rep_movs_repeats_the_pattern() {
        // Element semantics: a destination 3 bytes above the source repeats "abc".
        let (_, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(dword_ptr(rdi), 0x0063_6261)?;
            a.mov(rsi, DATA)?;
            a.add(rdi, 3)?;
            a.mov(ecx, 9)?;
            a.rep().movsb()?;
            a.mov(rsi, DATA)?;
            a.mov(rdi, DATA + 0x105)?;
            a.mov(rdx, 0x0102_0304_0506_0708u64)?;
            a.mov(qword_ptr(rsi + 0x100), rdx)?;
            a.add(rsi, 0x100)?;
            a.mov(ecx, 2)?;
            a.rep().movsq()?; // distance 5 < 8: element by element
            Ok(())
        });
        assert_eq!(mem.dump(DATA, 12).unwrap(), b"abcabcabcabc".to_vec());
        let q = u64::from_le_bytes(mem.dump(DATA + 0x105, 8).unwrap().try_into().unwrap());
        assert_eq!(q, 0x0102_0304_0506_0708);
        let q2 = u64::from_le_bytes(mem.dump(DATA + 0x10d, 8).unwrap().try_into().unwrap());
        // The second element is read after the first was written (source 0x108 is inside it).
        assert_eq!(q2, 0x0000_0001_0203_0405);
    }

    #[test]
    fn rep_movs_stos_scas_cmps() {
        let (cpu, mem) = run_asm(|a| {
            a.mov(rdi, DATA)?;
            a.mov(eax, 0x41)?;
            a.mov(ecx, 100)?;
            a.rep().stosb()?;
            a.mov(rsi, DATA)?;
            a.mov(rdi, DATA + 0x1000 - 8)?; // crosses a page
            a.mov(ecx, 4)?;
            a.rep().movsd()?;
            a.mov(rdi, DATA)?;
            a.mov(al, 0x42)?;
            a.mov(ecx, 50)?;
            a.repne().scasb()?; // not found: rcx = 0
            a.mov(r8, rcx)?;
            a.mov(rsi, DATA)?;
            a.mov(rdi, DATA + 0x1000 - 8)?;
            a.mov(ecx, 16)?;
            a.repe().cmpsb()?; // all equal
            a.mov(r9, rcx)?;
            a.std()?;
            a.mov(rsi, DATA + 3)?;
            a.lodsb()?;
            a.mov(r10, rsi)?;
            a.cld()?;
            Ok(())
        });
        assert_eq!(mem.dump(DATA + 0x1000 - 8, 16).unwrap(), vec![0x41; 16]);
        assert_eq!(mem.dump(DATA + 100, 1).unwrap(), vec![0]);
        assert_eq!(cpu.gpr[8], 0);
        assert_eq!(cpu.gpr[9], 0);
        assert_ne!(cpu.rflags & ZF, 0);
        assert_eq!(cpu.gpr[10], DATA + 2);
        assert_eq!(cpu.gpr[0] & 0xff, 0x41);
    }
}
