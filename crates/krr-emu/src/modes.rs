//! Processor modes and segmentation: real mode, 16/32-bit protected mode, compatibility and
//! 64-bit mode; descriptor table reads, segment register loads with their protected-mode
//! checks, and far control transfers.
//!
//! The decoder bitness follows `Cpu::mode()`; linear address formation (canonical checks in
//! 64-bit mode, limits otherwise) is `Ctx::linear` in `paging.rs`. Real mode covers what
//! Linux's SMP trampoline and `verify_cpu` execute; interrupts are delivered in real mode
//! (IVT), legacy protected mode (32-bit gates) and long mode. Virtual-8086 mode, task
//! switches, task/16-bit gates and call gates stop with `EmuError::Unsupported`.

use crate::cpu::{flags, Mode, SegReg, Segment};
use crate::error::{EmuError, ExResult, Exception};
use crate::exec::Ctx;
use crate::insn::mask;
use crate::paging::is_canonical;

impl Ctx<'_> {
    /// Reads a GDT/LDT descriptor for `sel` (8 bytes; `wide` reads the 16-byte system form).
    pub(crate) fn read_descriptor(&mut self, sel: u16, ext: u32) -> ExResult<u64> {
        let (base, limit) = if sel & 4 != 0 {
            if self.cpu.ldtr.unusable || !self.cpu.ldtr.present {
                return Err(Exception::gp(u32::from(sel & 0xfffc) | ext).into());
            }
            (self.cpu.ldtr.base, self.cpu.ldtr.limit)
        } else {
            (self.cpu.gdtr.base, u32::from(self.cpu.gdtr.limit))
        };
        let off = u64::from(sel & 0xfff8);
        if off + 7 > u64::from(limit) {
            return Err(Exception::gp(u32::from(sel & 0xfffc) | ext).into());
        }
        self.sys_read_u64(base.wrapping_add(off))
    }

    /// Reads the 16-byte system descriptor (TSS/LDT in long mode) for `sel` in the GDT.
    pub(crate) fn read_system_descriptor(&mut self, sel: u16) -> ExResult<(u64, u64)> {
        let off = u64::from(sel & 0xfff8);
        if sel & 4 != 0 || off + 15 > u64::from(self.cpu.gdtr.limit) {
            return Err(Exception::gp(u32::from(sel & 0xfffc)).into());
        }
        let lo = self.sys_read_u64(self.cpu.gdtr.base.wrapping_add(off))?;
        let hi = self.sys_read_u64(self.cpu.gdtr.base.wrapping_add(off + 8))?;
        Ok((lo, hi))
    }
}

/// Loads a data/stack segment register (MOV/POP Sreg), with protected-mode checks.
pub(crate) fn load_segment(ctx: &mut Ctx<'_>, s: SegReg, sel: u16) -> ExResult {
    if s == SegReg::Cs {
        return Err(Exception::ud().into());
    }
    let mode = ctx.cpu.mode();
    if mode == Mode::Real || ctx.cpu.rflags & flags::VM != 0 {
        let old = ctx.cpu.seg[s as usize];
        ctx.cpu.seg[s as usize] = Segment { selector: sel, base: u64::from(sel) << 4, ..old };
        return Ok(());
    }
    let cpl = ctx.cpu.cpl();
    let long = mode == Mode::Long64;
    if sel & 0xfffc == 0 {
        if s == SegReg::Ss && !(long && cpl != 3 && (sel & 3) as u8 == cpl) {
            return Err(Exception::gp(0).into());
        }
        let old = ctx.cpu.seg[s as usize];
        // Intel clears the base when a null selector is loaded into FS/GS.
        ctx.cpu.seg[s as usize] = Segment { selector: sel, base: 0, unusable: true, dpl: cpl, ..old };
        return Ok(());
    }
    let d = ctx.read_descriptor(sel, 0)?;
    let desc = Segment::from_descriptor(sel, d);
    let rpl = (sel & 3) as u8;
    let err = u32::from(sel & 0xfffc);
    if s == SegReg::Ss {
        let writable_data = desc.s && desc.typ & 0xa == 0x2;
        if rpl != cpl || desc.dpl != cpl || !writable_data {
            return Err(Exception::gp(err).into());
        }
        if !desc.present {
            return Err(Exception::ss(err).into());
        }
    } else {
        let readable = desc.s && (desc.typ & 8 == 0 || desc.typ & 2 != 0);
        let conforming_code = desc.typ & 0xc == 0xc;
        if !readable || (!conforming_code && (rpl > desc.dpl || cpl > desc.dpl)) {
            return Err(Exception::gp(err).into());
        }
        if !desc.present {
            return Err(Exception::np(err).into());
        }
    }
    // Set the accessed bit in the descriptor, as hardware does.
    if d & (1 << 40) == 0 {
        let table = if sel & 4 != 0 { ctx.cpu.ldtr.base } else { ctx.cpu.gdtr.base };
        let addr = table.wrapping_add(u64::from(sel & 0xfff8) + 5);
        ctx.sys_write(addr, &[((d >> 40) as u8) | 1])?;
    }
    ctx.cpu.seg[s as usize] = Segment { typ: desc.typ | 1, ..desc };
    Ok(())
}

/// Loads CS for a far JMP/CALL/RET to the same privilege level.
pub(crate) fn load_cs_far(ctx: &mut Ctx<'_>, sel: u16, off: u64, size: usize) -> ExResult {
    let mode = ctx.cpu.mode();
    if mode == Mode::Real || ctx.cpu.rflags & flags::VM != 0 {
        ctx.cpu.seg[SegReg::Cs as usize] = Segment::real(sel, 0xb);
        ctx.cpu.rip = off & mask(size.min(4));
        return Ok(());
    }
    if sel & 0xfffc == 0 {
        return Err(Exception::gp(0).into());
    }
    let d = ctx.read_descriptor(sel, 0)?;
    let s = Segment::from_descriptor(sel, d);
    let cpl = ctx.cpu.cpl();
    if !s.s {
        return Err(
            EmuError::Unsupported { rip: ctx.start_rip, what: "far transfer through a gate or TSS" }.into()
        );
    }
    let conforming = s.typ & 4 != 0;
    let rpl = (sel & 3) as u8;
    if !s.is_code() || (!conforming && (s.dpl != cpl || rpl > cpl)) || (conforming && s.dpl > cpl) {
        return Err(Exception::gp(u32::from(sel & 0xfffc)).into());
    }
    if !s.present {
        return Err(Exception::np(u32::from(sel & 0xfffc)).into());
    }
    let long = ctx.cpu.efer & crate::cpu::cr::EFER_LMA != 0 && s.l;
    if long && !is_canonical(off) {
        return Err(Exception::gp(0).into());
    }
    ctx.cpu.seg[SegReg::Cs as usize] = Segment { selector: (sel & 0xfffc) | u16::from(cpl), dpl: cpl, ..s };
    ctx.cpu.rip = if long { off } else { off & 0xffff_ffff };
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::cpu::{cr, Mode, SegReg};
    use crate::testutil::*;
    use crate::{Cpu, SimplePlatform};
    use iced_x86::code_asm::*;

    fn asm(bits: u32, at: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
        let mut a = CodeAssembler::new(bits).unwrap();
        f(&mut a).unwrap();
        a.assemble(at).unwrap()
    }

    /// Real mode → 32-bit protected mode → long mode, the way Linux's trampoline_64.S does it.
    #[test]
    fn smp_trampoline_path() {
        let mut mem = machine_memory();
        // Real-mode part at 0x9000 (CS=0x0900, IP=0); GDTR pseudo-descriptor at 0x9800.
        let rm = asm(16, 0, |a| {
            a.cli()?;
            a.mov(ax, cs)?;
            a.mov(ds, ax)?;
            a.mov(ss, ax)?;
            a.mov(sp, 0x700)?;
            a.pushfd()?;
            a.pop(ebx)?;
            a.lgdt(ptr(0x800))?;
            a.mov(edx, 0x18)?;
            a.mov(eax, cr0)?;
            a.or(eax, 1)?;
            a.mov(cr0, eax)?;
            // ljmpl $0x08, $0xa000
            a.db(&[0x66, 0xea, 0x00, 0xa0, 0x00, 0x00, 0x08, 0x00])
        });
        assert!(mem.load(0x9000, &rm));
        let mut gdtr = [0u8; 6];
        gdtr[..2].copy_from_slice(&0x4fu16.to_le_bytes());
        gdtr[2..].copy_from_slice(&(GDT as u32).to_le_bytes());
        assert!(mem.load(0x9800, &gdtr));
        let pm = asm(32, 0xa000, |a| {
            a.mov(ss, dx)?;
            a.mov(ds, dx)?;
            a.mov(es, dx)?;
            a.mov(esp, 0x70000)?;
            a.mov(eax, cr4)?;
            a.or(eax, 0x20)?;
            a.mov(cr4, eax)?;
            a.mov(eax, PML4 as u32)?;
            a.mov(cr3, eax)?;
            a.mov(ecx, 0xc000_0080u32)?;
            a.rdmsr()?;
            a.or(eax, 0x100)?;
            a.wrmsr()?;
            a.mov(eax, cr0)?;
            a.or(eax, 0x8000_0000u32)?;
            a.mov(cr0, eax)?;
            a.mov(esi, dword_ptr(0x9800 + 2))?; // compatibility mode: paging is on
                                                // ljmpl $0x10, $0xb000
            a.db(&[0xea, 0x00, 0xb0, 0x00, 0x00, 0x10, 0x00])
        });
        assert!(mem.load(0xa000, &pm));
        let lm = asm(64, 0xb000, |a| {
            a.mov(rax, 0x1234_5678_9abcu64)?;
            a.push(rax)?;
            a.hlt()
        });
        assert!(mem.load(0xb000, &lm));
        let mut cpu = Cpu::new_sipi(0x09);
        assert_eq!(cpu.mode(), Mode::Real);
        let mut p = SimplePlatform::new();
        run_until_hlt(&mut cpu, &mut mem, &mut p);
        assert_eq!(cpu.mode(), Mode::Long64);
        assert_eq!(cpu.gpr[0], 0x1234_5678_9abc);
        assert_eq!(cpu.gpr[4], 0x70000 - 8);
        assert_eq!(cpu.gpr[6], GDT, "32-bit load through the data segment");
        assert_eq!(cpu.gpr[3] & 2, 2, "pushfd in real mode");
        assert_ne!(cpu.efer & cr::EFER_LMA, 0);
        assert_eq!(cpu.seg[SegReg::Cs as usize].selector, 0x10);
        assert_eq!(cpu.seg[SegReg::Ss as usize].selector, 0x18);
        assert_eq!(cpu.cpl(), 0);
    }

    #[test]
    fn real_mode_interrupts_use_the_ivt() {
        let mut mem = machine_memory();
        // IVT entry for vector 0x10 → 0x0000:0x0600: mov bx, 0x55; iret
        assert!(mem.load(0x10 * 4, &[0x00, 0x06, 0x00, 0x00]));
        let h = asm(16, 0x600, |a| {
            a.mov(bx, 0x55)?;
            a.iret()
        });
        assert!(mem.load(0x600, &h));
        let code = asm(16, 0, |a| {
            a.mov(sp, 0x800)?;
            a.int(0x10)?;
            a.mov(cx, bx)?;
            a.hlt()
        });
        assert!(mem.load(0x9000, &code));
        let mut cpu = Cpu::new_sipi(0x09);
        cpu.idtr = crate::cpu::DescriptorTable { base: 0, limit: 0x3ff };
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[1] & 0xffff, 0x55);
        assert_eq!(cpu.gpr[4] & 0xffff, 0x800);
    }

    #[test]
    fn protected_mode_interrupts_and_iret() {
        let mut mem = machine_memory();
        // 32-bit IDT at 0x9000: vector 0x40 -> 0x08:0xa100, vector 0 (#DE) -> 0x08:0xa200.
        let gate = |off: u64| (off & 0xffff) | (0x08 << 16) | (0x8eu64 << 40) | ((off >> 16) << 48);
        write_u64(&mut mem, 0x9000 + 0x40 * 8, gate(0xa100));
        write_u64(&mut mem, 0x9000, gate(0xa200));
        let main = asm(32, 0xa000, |a| {
            a.mov(esp, 0x7_0000)?;
            a.int(0x40)?;
            a.mov(ecx, ebx)?;
            a.xor(esi, esi)?;
            a.div(esi)?; // #DE: handler skips the 2-byte DIV
            a.hlt()
        });
        let h40 = asm(32, 0xa100, |a| {
            a.mov(ebx, 0x77)?;
            a.iretd()
        });
        let hde = asm(32, 0xa200, |a| {
            a.mov(edx, dword_ptr(esp))?; // saved EIP
            a.add(dword_ptr(esp), 2)?;
            a.mov(edi, 0xde)?;
            a.iretd()
        });
        assert!(mem.load(0xa000, &main) && mem.load(0xa100, &h40) && mem.load(0xa200, &hde));
        let mut cpu = Cpu::new();
        cpu.cr0 |= cr::CR0_PE;
        cpu.gdtr = crate::cpu::DescriptorTable { base: GDT, limit: 0x4f };
        cpu.idtr = crate::cpu::DescriptorTable { base: 0x9000, limit: 0x7ff };
        cpu.seg[SegReg::Cs as usize] = crate::Segment::from_descriptor(0x08, 0x00cf_9b00_0000_ffff);
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es] {
            cpu.seg[s as usize] = crate::Segment::from_descriptor(0x18, 0x00cf_9300_0000_ffff);
        }
        cpu.rip = 0xa000;
        assert_eq!(cpu.mode(), Mode::Protected32);
        run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
        assert_eq!(cpu.gpr[1], 0x77, "INT 0x40 handler ran and IRETD returned");
        assert_eq!(cpu.gpr[7], 0xde);
        assert_eq!(cpu.gpr[2], 0xa000 + 5 + 2 + 2 + 2, "#DE pushed the EIP of the DIV");
        assert_eq!(cpu.gpr[4], 0x7_0000);
    }
}
