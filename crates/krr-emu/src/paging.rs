//! Linear-to-physical translation: 4-level paging with 4K/2M/1G pages, a hardware-like TLB,
//! A/D bit updates, U/S, R/W with CR0.WP, NX, SMEP/SMAP, and #PF error codes.
//!
//! The TLB is deliberately as stale as hardware's: an entry survives page-table edits until
//! INVLPG, a CR3 write (non-global entries) or a CR4.PGE/CR0.PG change (everything). Like Intel
//! CPUs, a permission fault on a cached entry is raised from the stale entry and then drops it.
//! Large pages are cached as 4 KiB fragments that remember their page size so INVLPG anywhere in
//! a large page drops all of its fragments.

use std::fmt;

use crate::cpu::{cr, flags, SegReg};
use crate::error::{ExResult, Exception};
use crate::exec::Ctx;

/// Number of TLB entries (direct mapped by linear page number).
const TLB_SIZE: usize = 1024;

const T_USER: u8 = 1;
const T_WRITE: u8 = 2;
const T_NX: u8 = 4;
const T_DIRTY: u8 = 8;
const T_GLOBAL: u8 = 16;

/// #PF error code bits.
pub mod pf {
    /// The fault was a protection violation (page present).
    pub const P: u32 = 1;
    /// Write access.
    pub const W: u32 = 2;
    /// User-mode access.
    pub const U: u32 = 4;
    /// Reserved bit set in a paging entry.
    pub const RSVD: u32 = 8;
    /// Instruction fetch.
    pub const ID: u32 = 16;
}

/// True if `a` is canonical for 48-bit linear addresses.
#[inline]
pub fn is_canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

#[derive(Debug, Clone, Copy)]
struct TlbEntry {
    /// Linear page number (lin >> 12), u64::MAX when invalid.
    vpn: u64,
    /// Physical address of this 4 KiB fragment.
    phys: u64,
    bits: u8,
    /// log2 of the page size this fragment belongs to (12, 21, 30).
    shift: u8,
}

const INVALID: TlbEntry = TlbEntry { vpn: u64::MAX, phys: 0, bits: 0, shift: 12 };

/// Translation lookaside buffer.
#[derive(Clone)]
pub(crate) struct Tlb {
    entries: Vec<TlbEntry>,
    /// Last instruction-fetch translation: (key, physical page). The key is the linear page
    /// number with bit 63 set for user fetches; u64::MAX when empty. Like an ITLB, it is
    /// dropped by every TLB invalidation.
    pub(crate) fetch: (u64, u64),
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb { entries: vec![INVALID; TLB_SIZE], fetch: (u64::MAX, 0) }
    }
}

impl fmt::Debug for Tlb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid = self.entries.iter().filter(|e| e.vpn != u64::MAX).count();
        f.debug_struct("Tlb").field("valid_entries", &valid).finish()
    }
}

impl Tlb {
    /// Drops all entries, or only non-global ones.
    pub(crate) fn flush(&mut self, include_global: bool) {
        self.fetch.0 = u64::MAX;
        for e in &mut self.entries {
            if include_global || e.bits & T_GLOBAL == 0 {
                *e = INVALID;
            }
        }
    }

    /// INVLPG: drops every fragment of the page (of any size) containing `lin`.
    pub(crate) fn invlpg(&mut self, lin: u64) {
        self.fetch.0 = u64::MAX;
        for e in &mut self.entries {
            if e.vpn != u64::MAX && (e.vpn << 12) >> e.shift == lin >> e.shift {
                *e = INVALID;
            }
        }
    }

    #[inline]
    fn slot(lin: u64) -> usize {
        ((lin >> 12) as usize) & (TLB_SIZE - 1)
    }

    /// Number of valid entries (tests and statistics).
    pub(crate) fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.vpn != u64::MAX).count()
    }
}

/// Kind of memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
    Exec,
}

/// Privilege of an access: user, supervisor, or implicit supervisor (descriptor tables, TSS,
/// interrupt stack frames) which SMAP checks regardless of RFLAGS.AC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Priv {
    User,
    Sup,
    SupImplicit,
}

impl Ctx<'_> {
    /// Privilege of ordinary data accesses at the current CPL.
    #[inline]
    pub(crate) fn data_priv(&self) -> Priv {
        if self.cpu.cpl() == 3 {
            Priv::User
        } else {
            Priv::Sup
        }
    }

    /// Whether data accesses are alignment-checked: CPL 3 with CR0.AM and RFLAGS.AC.
    #[inline]
    pub(crate) fn ac_active(&self) -> bool {
        self.cpu.rflags & flags::AC != 0 && self.cpu.cr0 & cr::CR0_AM != 0 && self.cpu.cpl() == 3
    }

    /// #AC(0) for a checked access of `len` bytes at a linear address not aligned to its
    /// natural alignment: the size for 2/4/8 bytes, 16 bytes on AMD only (Intel does not check
    /// MOVUPS and the other 16-byte accesses), 8 for 80-bit x87 operands; other sizes are not
    /// checked. It takes precedence over #PF (as on the reference CPU).
    #[inline]
    fn check_align(&self, lin: u64, len: usize) -> ExResult {
        if !self.ac_active() {
            return Ok(());
        }
        let align = match len {
            16 if self.cpu.features.vendor == crate::vendor::Vendor::Intel => return Ok(()),
            2 | 4 | 8 | 16 => len as u64,
            10 => 8,
            _ => return Ok(()),
        };
        if lin & (align - 1) != 0 {
            return Err(Exception::with_code(crate::error::vector::AC, 0).into());
        }
        Ok(())
    }

    /// Translates a linear address, raising #PF as hardware would.
    #[inline]
    pub(crate) fn translate(&mut self, lin: u64, acc: Access, prv: Priv) -> ExResult<u64> {
        let cpu = &*self.cpu;
        if cpu.cr0 & cr::CR0_PG == 0 {
            return Ok(if cpu.efer & cr::EFER_LMA != 0 { lin } else { lin & 0xffff_ffff });
        }
        let slot = Tlb::slot(lin);
        let e = self.cpu.tlb.entries[slot];
        if e.vpn == lin >> 12 {
            match self.check(e.bits, acc, prv) {
                Ok(()) => {
                    if acc != Access::Write || e.bits & T_DIRTY != 0 {
                        return Ok(e.phys | (lin & 0xfff));
                    }
                    // First write through a clean entry: walk again to set D.
                }
                Err(code) => {
                    self.cpu.tlb.entries[slot] = INVALID;
                    self.cpu.tlb.fetch.0 = u64::MAX;
                    return Err(Exception::pf(code | pf::P | self.fault_bits(acc, prv), lin).into());
                }
            }
        }
        self.walk(lin, acc, prv)
    }

    fn fault_bits(&self, acc: Access, prv: Priv) -> u32 {
        let mut c = 0;
        if acc == Access::Write {
            c |= pf::W;
        }
        if prv == Priv::User {
            c |= pf::U;
        }
        if acc == Access::Exec && (self.cpu.efer & cr::EFER_NXE != 0 || self.cpu.cr4 & cr::CR4_SMEP != 0) {
            c |= pf::ID;
        }
        c
    }

    /// Permission check of combined entry bits; Err(0) means "protection fault".
    #[inline]
    fn check(&self, bits: u8, acc: Access, prv: Priv) -> Result<(), u32> {
        let cpu = &*self.cpu;
        let user_page = bits & T_USER != 0;
        match prv {
            Priv::User => {
                if !user_page || (acc == Access::Write && bits & T_WRITE == 0) {
                    return Err(0);
                }
            }
            Priv::Sup | Priv::SupImplicit => {
                if acc == Access::Write && bits & T_WRITE == 0 && cpu.cr0 & cr::CR0_WP != 0 {
                    return Err(0);
                }
                if user_page {
                    if acc == Access::Exec {
                        if cpu.cr4 & cr::CR4_SMEP != 0 {
                            return Err(0);
                        }
                    } else if cpu.cr4 & cr::CR4_SMAP != 0
                        && (prv == Priv::SupImplicit || cpu.rflags & crate::cpu::flags::AC == 0)
                    {
                        return Err(0);
                    }
                }
            }
        }
        if acc == Access::Exec && bits & T_NX != 0 {
            return Err(0);
        }
        Ok(())
    }

    fn read_phys_u64(&mut self, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        if self.mem.read(gpa, &mut b) {
            u64::from_le_bytes(b)
        } else {
            0
        }
    }

    /// Walks the 4-level page tables, fills the TLB.
    fn walk(&mut self, lin: u64, acc: Access, prv: Priv) -> ExResult<u64> {
        if self.cpu.efer & cr::EFER_LMA == 0 {
            return Err(crate::error::EmuError::Unsupported {
                rip: self.start_rip,
                what: "legacy 32-bit/PAE paging",
            }
            .into());
        }
        let nxe = self.cpu.efer & cr::EFER_NXE != 0;
        let maxphy = u32::from(self.cpu.features.maxphyaddr.clamp(32, 52));
        let addr_mask: u64 = ((1u64 << maxphy) - 1) & !0xfff;
        let rsvd_hi: u64 = ((1u64 << 52) - 1) & !((1u64 << maxphy) - 1);
        let pge = self.cpu.cr4 & cr::CR4_PGE != 0;
        let mut table = self.cpu.cr3 & addr_mask;
        let mut bits = T_USER | T_WRITE;
        let fbits = self.fault_bits(acc, prv);
        for level in (0..4u32).rev() {
            let shift = 12 + 9 * level;
            let ea = table + ((lin >> shift) & 0x1ff) * 8;
            let mut e = self.read_phys_u64(ea);
            if e & 1 == 0 {
                return Err(Exception::pf(fbits, lin).into());
            }
            let ps = e & 0x80 != 0;
            let leaf = level == 0 || ((level == 1 || level == 2) && ps);
            let mut rsvd = e & rsvd_hi != 0 || (!nxe && e >> 63 != 0) || (level == 3 && ps);
            if leaf && level > 0 {
                // Large page: bits 12 (PAT) .. shift-1 must be zero except bit 12.
                rsvd |= e & (((1u64 << shift) - 1) & !0x1fff) != 0;
            }
            if rsvd {
                return Err(Exception::pf(fbits | pf::P | pf::RSVD, lin).into());
            }
            if e & 2 == 0 {
                bits &= !T_WRITE;
            }
            if e & 4 == 0 {
                bits &= !T_USER;
            }
            if nxe && e >> 63 != 0 {
                bits |= T_NX;
            }
            if !leaf {
                if e & 0x20 == 0 {
                    e |= 0x20;
                    self.mem_write(ea, &e.to_le_bytes());
                }
                table = e & addr_mask;
                continue;
            }
            if let Err(code) = self.check(bits, acc, prv) {
                return Err(Exception::pf(code | pf::P | fbits, lin).into());
            }
            let mut ne = e | 0x20;
            if acc == Access::Write {
                ne |= 0x40;
            }
            if ne != e {
                self.mem_write(ea, &ne.to_le_bytes());
            }
            if ne & 0x40 != 0 {
                bits |= T_DIRTY;
            }
            if pge && e & 0x100 != 0 {
                bits |= T_GLOBAL;
            }
            let page_mask = (1u64 << shift) - 1;
            let phys = (e & addr_mask & !page_mask) | (lin & page_mask & !0xfff);
            self.cpu.tlb.entries[Tlb::slot(lin)] =
                TlbEntry { vpn: lin >> 12, phys, bits, shift: shift as u8 };
            return Ok(phys | (lin & 0xfff));
        }
        unreachable!("the level-0 entry is always a leaf")
    }

    /// Writes RAM (`GuestMemory::write`), noting that the code epoch may have moved.
    #[inline]
    pub(crate) fn mem_write(&mut self, gpa: u64, data: &[u8]) -> bool {
        self.wrote = true;
        self.mem.write(gpa, data)
    }

    /// Reads guest-physical memory, sending non-RAM to the platform as MMIO.
    #[inline]
    pub(crate) fn phys_read(&mut self, gpa: u64, buf: &mut [u8]) -> ExResult {
        if !self.mem.read(gpa, buf) {
            self.plat.mmio_read(gpa, buf)?;
        }
        Ok(())
    }

    /// Writes guest-physical memory, sending non-RAM to the platform as MMIO.
    #[inline]
    pub(crate) fn phys_write(&mut self, gpa: u64, data: &[u8]) -> ExResult {
        if !self.mem_write(gpa, data) {
            self.plat.mmio_write(gpa, data)?;
        }
        Ok(())
    }

    /// Reads at a linear address; a page-crossing access translates both pages first.
    #[inline]
    pub(crate) fn lin_read(&mut self, lin: u64, buf: &mut [u8], acc: Access, prv: Priv) -> ExResult {
        let first = 4096 - (lin & 0xfff) as usize;
        if buf.len() <= first {
            let p = self.translate(lin, acc, prv)?;
            return self.phys_read(p, buf);
        }
        let p1 = self.translate(lin, acc, prv)?;
        let p2 = self.translate(lin.wrapping_add(first as u64), acc, prv)?;
        let (a, b) = buf.split_at_mut(first);
        self.phys_read(p1, a)?;
        self.phys_read(p2, b)
    }

    /// Writes at a linear address; both pages of a crossing write are checked before any byte
    /// is written.
    #[inline]
    pub(crate) fn lin_write(&mut self, lin: u64, data: &[u8], prv: Priv) -> ExResult {
        let first = 4096 - (lin & 0xfff) as usize;
        if data.len() <= first {
            let p = self.translate(lin, Access::Write, prv)?;
            return self.phys_write(p, data);
        }
        let p1 = self.translate(lin, Access::Write, prv)?;
        let p2 = self.translate(lin.wrapping_add(first as u64), Access::Write, prv)?;
        self.phys_write(p1, &data[..first])?;
        self.phys_write(p2, &data[first..])
    }

    /// Segment-relative offset to linear address, with 64-bit canonical checks or 32-bit
    /// limit checks.
    #[inline]
    pub(crate) fn linear(&self, seg: SegReg, off: u64, len: usize) -> ExResult<u64> {
        let len = len.max(1);
        let cpu = &*self.cpu;
        let s = &cpu.seg[seg as usize];
        let fault = || -> crate::error::Fault {
            if seg == SegReg::Ss {
                Exception::ss(0).into()
            } else {
                Exception::gp(0).into()
            }
        };
        if cpu.efer & cr::EFER_LMA != 0 && cpu.seg[SegReg::Cs as usize].l {
            let lin = if matches!(seg, SegReg::Fs | SegReg::Gs) { off.wrapping_add(s.base) } else { off };
            if !is_canonical(lin) || !is_canonical(lin.wrapping_add(len as u64 - 1)) {
                return Err(fault());
            }
            return Ok(lin);
        }
        if cpu.cr0 & cr::CR0_PE != 0 && s.unusable {
            return Err(fault());
        }
        let end = off.wrapping_add(len as u64 - 1);
        // Expand-down data segments are not used by the code krr runs; treat all as expand-up.
        if end > u64::from(s.limit) || end < off {
            return Err(fault());
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Reads `len` (1..=8) bytes at seg:off as a little-endian integer.
    #[inline]
    pub(crate) fn read_mem(&mut self, seg: SegReg, off: u64, len: usize) -> ExResult<u64> {
        let lin = self.linear(seg, off, len)?;
        self.check_align(lin, len)?;
        let mut b = [0u8; 8];
        let prv = self.data_priv();
        self.lin_read(lin, &mut b[..len], Access::Read, prv)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Like `read_mem`, but checks write permission (the load of a read-modify-write).
    #[inline]
    pub(crate) fn read_mem_rmw(&mut self, seg: SegReg, off: u64, len: usize) -> ExResult<u64> {
        let lin = self.linear(seg, off, len)?;
        self.check_align(lin, len)?;
        let mut b = [0u8; 8];
        let prv = self.data_priv();
        self.lin_read(lin, &mut b[..len], Access::Write, prv)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes the low `len` bytes of `v` at seg:off.
    #[inline]
    pub(crate) fn write_mem(&mut self, seg: SegReg, off: u64, len: usize, v: u64) -> ExResult {
        let lin = self.linear(seg, off, len)?;
        self.check_align(lin, len)?;
        let prv = self.data_priv();
        self.lin_write(lin, &v.to_le_bytes()[..len], prv)
    }

    /// Reads arbitrary-length bytes at seg:off (SSE, FXSAVE, descriptors).
    pub(crate) fn read_bytes(&mut self, seg: SegReg, off: u64, buf: &mut [u8]) -> ExResult {
        let lin = self.linear(seg, off, buf.len())?;
        self.check_align(lin, buf.len())?;
        let prv = self.data_priv();
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(4096);
            self.lin_read(lin.wrapping_add(done as u64), &mut buf[done..done + n], Access::Read, prv)?;
            done += n;
        }
        Ok(())
    }

    /// Writes arbitrary-length bytes at seg:off; checks every page before writing.
    pub(crate) fn write_bytes(&mut self, seg: SegReg, off: u64, data: &[u8]) -> ExResult {
        if data.is_empty() {
            return Ok(());
        }
        let lin = self.linear(seg, off, data.len())?;
        self.check_align(lin, data.len())?;
        let prv = self.data_priv();
        let mut a = lin & !0xfff;
        while a <= lin.wrapping_add(data.len() as u64 - 1) {
            self.translate(a.max(lin), Access::Write, prv)?;
            a += 4096;
        }
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(4096);
            self.lin_write(lin.wrapping_add(done as u64), &data[done..done + n], prv)?;
            done += n;
        }
        Ok(())
    }

    /// Implicit supervisor read of a system structure at a linear address (GDT, IDT, TSS).
    pub(crate) fn sys_read_u64(&mut self, lin: u64) -> ExResult<u64> {
        let mut b = [0u8; 8];
        self.lin_read(lin, &mut b, Access::Read, Priv::SupImplicit)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Implicit supervisor write to a system structure.
    pub(crate) fn sys_write(&mut self, lin: u64, data: &[u8]) -> ExResult {
        self.lin_write(lin, data, Priv::SupImplicit)
    }
}

#[cfg(test)]
mod tests {
    use super::pf;
    use crate::testutil::*;
    use crate::{Cpu, FlatMemory, SimplePlatform};
    use iced_x86::code_asm::*;

    #[test]
    fn alignment_check_at_cpl3() {
        // #AC needs CPL 3, CR0.AM and RFLAGS.AC; otherwise the user program ends in HLT's #GP.
        for (am, ac, addr, vector) in [
            (true, true, DATA + 1, 17),
            (true, true, DATA + 8, 13),
            (false, true, DATA + 1, 13),
            (true, false, DATA + 1, 13),
            (true, true, 0x7fff_0001, 17), // #AC before #PF
        ] {
            let (mut cpu, mut mem) = prepare(|a| {
                a.mov(rbx, addr)?;
                a.mov(rax, qword_ptr(rbx))?;
                Ok(())
            });
            make_user(&mut cpu);
            if am {
                cpu.cr0 |= crate::cpu::cr::CR0_AM;
            }
            if ac {
                cpu.rflags |= crate::cpu::flags::AC;
            }
            run_until_hlt(&mut cpu, &mut mem, &mut SimplePlatform::new());
            assert_eq!(cpu.gpr[15], vector, "am={am} ac={ac} addr={addr:#x}");
        }
    }

    const PAGE_A: u64 = LIN_4K + 0x5000;
    const PAGE_B: u64 = LIN_4K + 0x6000;
    const PHYS_1: u64 = 0x30_0000;
    const PHYS_2: u64 = 0x30_1000;

    fn pte(mem: &FlatMemory, lin: u64) -> u64 {
        read_u64(mem, PT_4K + ((lin - LIN_4K) >> 12) * 8)
    }

    fn run(cpu: &mut Cpu, mem: &mut FlatMemory) {
        run_until_hlt(cpu, mem, &mut SimplePlatform::new());
    }

    /// Error code pushed by the #PF handler stub's frame.
    fn pf_code(cpu: &Cpu, mem: &FlatMemory) -> u64 {
        assert_eq!(cpu.gpr[15], 14, "expected #PF");
        read_u64(mem, cpu.gpr[4])
    }

    #[test]
    fn four_k_mapping_sets_accessed_and_dirty() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rax, qword_ptr(PAGE_A))?;
            a.mov(qword_ptr(PAGE_B + 8), rax)?;
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x3);
        map_4k(&mut mem, PAGE_B, PHYS_2, 0x3);
        write_u64(&mut mem, PHYS_1, 0x1234);
        run(&mut cpu, &mut mem);
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!(read_u64(&mem, PHYS_2 + 8), 0x1234);
        assert_eq!(pte(&mem, PAGE_A) & 0x60, 0x20, "read sets A only");
        assert_eq!(pte(&mem, PAGE_B) & 0x60, 0x60, "write sets A and D");
    }

    #[test]
    fn tlb_is_stale_until_invlpg() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rax, qword_ptr(PAGE_A))?; // fills the TLB: PHYS_1
                                            // Repoint the PTE to PHYS_2 without flushing.
            a.mov(rdi, PT_4K + ((PAGE_A - LIN_4K) >> 12) * 8)?;
            a.mov(rdx, PHYS_2 | 0x3)?;
            a.mov(qword_ptr(rdi), rdx)?;
            a.mov(rbx, qword_ptr(PAGE_A))?; // stale: still PHYS_1
            a.invlpg(byte_ptr(PAGE_A))?;
            a.mov(rcx, qword_ptr(PAGE_A))?; // PHYS_2
            a.mov(rsi, cr3)?;
            a.mov(rdx, PHYS_1 | 0x3)?;
            a.mov(qword_ptr(rdi), rdx)?;
            a.mov(cr3, rsi)?; // flushes the non-global entry
            a.mov(r8, qword_ptr(PAGE_A))?; // PHYS_1 again
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x3);
        write_u64(&mut mem, PHYS_1, 111);
        write_u64(&mut mem, PHYS_2, 222);
        run(&mut cpu, &mut mem);
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!((cpu.gpr[0], cpu.gpr[3], cpu.gpr[1], cpu.gpr[8]), (111, 111, 222, 111));
    }

    #[test]
    fn global_pages_survive_cr3_but_not_pge_toggle() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rax, qword_ptr(PAGE_A))?;
            a.mov(rdi, PT_4K + ((PAGE_A - LIN_4K) >> 12) * 8)?;
            a.mov(rdx, PHYS_2 | 0x103)?;
            a.mov(qword_ptr(rdi), rdx)?;
            a.mov(rsi, cr3)?;
            a.mov(cr3, rsi)?;
            a.mov(rbx, qword_ptr(PAGE_A))?; // global: still PHYS_1
            a.mov(rsi, cr4)?;
            a.btr(rsi, 7)?;
            a.mov(cr4, rsi)?;
            a.bts(rsi, 7)?;
            a.mov(cr4, rsi)?;
            a.mov(rcx, qword_ptr(PAGE_A))?; // PHYS_2
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x103);
        write_u64(&mut mem, PHYS_1, 111);
        write_u64(&mut mem, PHYS_2, 222);
        run(&mut cpu, &mut mem);
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!((cpu.gpr[0], cpu.gpr[3], cpu.gpr[1]), (111, 111, 222));
    }

    fn fault_case(
        flags: u64,
        user: bool,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> (u64, u64) {
        let (mut cpu, mut mem) = prepare(f);
        map_4k(&mut mem, PAGE_A, PHYS_1, flags);
        if user {
            make_user(&mut cpu);
        }
        run(&mut cpu, &mut mem);
        (pf_code(&cpu, &mem), cpu.cr2)
    }

    #[test]
    fn page_fault_error_codes() {
        // Not present, read.
        assert_eq!(fault_case(0, false, |a| a.mov(rax, qword_ptr(PAGE_A + 8))), (0, PAGE_A + 8));
        // Read-only, supervisor write with CR0.WP=1.
        assert_eq!(
            fault_case(0x1, false, |a| a.mov(qword_ptr(PAGE_A), rax)),
            (pf::P | pf::W, PAGE_A).into_u64()
        );
        // Supervisor page, user read.
        assert_eq!(
            fault_case(0x3, true, |a| a.mov(rax, qword_ptr(PAGE_A))),
            (pf::P | pf::U, PAGE_A).into_u64()
        );
        // Reserved bit (bit 51) set.
        assert_eq!(
            fault_case(0x3 | (1 << 51), false, |a| a.mov(rax, qword_ptr(PAGE_A))),
            (pf::P | pf::RSVD, PAGE_A).into_u64()
        );
        // NX: fetch from a no-execute page.
        assert_eq!(
            fault_case(0x3 | (1 << 63), false, |a| {
                a.mov(rax, PAGE_A)?;
                a.call(rax)
            }),
            (pf::P | pf::ID, PAGE_A).into_u64()
        );
    }

    #[test]
    fn crossing_write_checks_both_pages_first() {
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rax, -1i64)?;
            a.mov(qword_ptr(PAGE_B - 4), rax)?;
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x3);
        map_4k(&mut mem, PAGE_B, PHYS_2, 0x1); // read-only second page
        run(&mut cpu, &mut mem);
        assert_eq!(pf_code(&cpu, &mem), u64::from(pf::P | pf::W));
        assert_eq!(cpu.cr2, PAGE_B);
        assert_eq!(read_u64(&mem, PHYS_1 + 0xff8), 0, "nothing written to the first page");
    }

    #[test]
    fn large_pages_and_invlpg_of_any_fragment() {
        // PML4[1] -> PDPT at 0x9000: entry 0 is a 1 GiB page at 0, entry 1 points to a PD at
        // 0xa000 whose entry 0 is a 2 MiB page at 0x40_0000.
        let base: u64 = 1 << 39;
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rsi, base + 0x30_0000)?;
            a.mov(rax, qword_ptr(rsi))?; // 1G page: phys 0x30_0000
            a.mov(rdi, base + (1 << 30) + 0x1_2340)?;
            a.mov(rbx, qword_ptr(rdi))?; // 2M page: phys 0x41_2340
                                         // Repoint the 2M page to 0x60_0000 and flush through a different 4K fragment.
            a.mov(rdx, 0x60_0000u64 | 0x83)?;
            a.mov(rcx, 0xa000u64)?;
            a.mov(qword_ptr(rcx), rdx)?;
            a.mov(r8, qword_ptr(rdi))?; // stale
            a.mov(r9, base + (1 << 30) + 0x1f_f000)?;
            a.invlpg(byte_ptr(r9))?;
            a.mov(r10, qword_ptr(rdi))?; // fresh: phys 0x61_2340
            Ok(())
        });
        write_u64(&mut mem, PML4 + 8, 0x9000 | 3);
        write_u64(&mut mem, 0x9000, 0x83);
        write_u64(&mut mem, 0x9008, 0xa000 | 3);
        write_u64(&mut mem, 0xa000, 0x40_0000 | 0x83);
        write_u64(&mut mem, 0x30_0000, 11);
        write_u64(&mut mem, 0x41_2340, 22);
        write_u64(&mut mem, 0x61_2340, 33);
        run(&mut cpu, &mut mem);
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!((cpu.gpr[0], cpu.gpr[3], cpu.gpr[8], cpu.gpr[10]), (11, 22, 22, 33));
        assert_eq!(read_u64(&mem, 0x9000) & 0x20, 0x20, "A set on the 1G leaf");
    }

    #[test]
    fn smep_and_smap() {
        // User page executed by the kernel with SMEP: #PF with I/D.
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(rax, PAGE_A)?;
            a.call(rax)
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x7);
        write_u64(&mut mem, 0x3000, 0x83); // kernel code, stack and handlers: supervisor
        cpu.cr4 |= crate::cpu::cr::CR4_SMEP;
        cpu.flush_tlb_all();
        run(&mut cpu, &mut mem);
        assert_eq!(pf_code(&cpu, &mem), u64::from(pf::P | pf::ID));
        // User page read by the kernel with SMAP: #PF unless RFLAGS.AC (STAC).
        let (mut cpu, mut mem) = prepare(|a| {
            a.stac()?;
            a.mov(rbx, qword_ptr(PAGE_A))?;
            a.clac()?;
            a.mov(rcx, qword_ptr(PAGE_A))?;
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, PHYS_1, 0x7);
        write_u64(&mut mem, PHYS_1, 5);
        write_u64(&mut mem, 0x3000, 0x83);
        cpu.cr4 |= crate::cpu::cr::CR4_SMAP;
        cpu.flush_tlb_all();
        run(&mut cpu, &mut mem);
        assert_eq!(cpu.gpr[3], 5);
        assert_eq!(pf_code(&cpu, &mem), u64::from(pf::P));
    }

    #[test]
    fn non_ram_goes_to_the_platform_as_mmio() {
        // LAPIC-like page above RAM (16 MiB), mapped uncached at PAGE_A.
        let (mut cpu, mut mem) = prepare(|a| {
            a.mov(dword_ptr(PAGE_A + 0xb0), 0x1234)?; // EOI-style write
            a.mov(eax, dword_ptr(PAGE_A + 0x20))?; // ID-style read
            a.mov(rbx, qword_ptr(PAGE_A - 4))?; // straddles RAM and MMIO
            Ok(())
        });
        map_4k(&mut mem, PAGE_A, 0xfee0_0000, 0x13);
        map_4k(&mut mem, PAGE_A - 0x1000, PHYS_1, 0x3);
        write_u64(&mut mem, PHYS_1 + 0xff8, 0x1122_3344_5566_7788);
        let mut p = SimplePlatform::new();
        run_until_hlt(&mut cpu, &mut mem, &mut p);
        assert_eq!(cpu.gpr[15], NO_EXCEPTION);
        assert_eq!(p.mmio_writes, vec![(0xfee0_00b0, vec![0x34, 0x12, 0, 0])]);
        assert_eq!(cpu.gpr[0], 0xffff_ffff, "SimplePlatform MMIO reads as all-ones");
        assert_eq!(cpu.gpr[3], 0xffff_ffff_1122_3344, "low half from RAM, high half from MMIO");
    }

    trait IntoU64 {
        fn into_u64(self) -> (u64, u64);
    }
    impl IntoU64 for (u32, u64) {
        fn into_u64(self) -> (u64, u64) {
            (u64::from(self.0), self.1)
        }
    }
}
