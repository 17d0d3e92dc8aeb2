//! Booting Linux: everything the VMM writes into guest memory and the first vCPU's registers,
//! computed once as plain data ([`BootPlan`]) so both CPU backends apply the same boot.
//!
//! krr boots the uncompressed `vmlinux` at its ELF entry with the 64-bit boot protocol
//! (Documentation/x86/boot.rst): no decompressor, `boot_params` in RSI, identity page tables,
//! a flat GDT, interrupts off.

pub mod cpio;
mod elf;
mod mptable;
mod params;

use std::path::Path;

pub use elf::{code_matches, function_symbols, load_elf, symbols, FunctionSymbol, KernelImage};
pub use mptable::mptable;
pub use params::{e820_map, E820Entry, E820_RAM, E820_RESERVED};

use crate::layout::*;

/// Why a guest could not be prepared for boot.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("{}: {err}", path.display())]
    Io { path: std::path::PathBuf, err: std::io::Error },
    #[error("{}: not a loadable x86-64 vmlinux: {reason}", path.display())]
    BadKernel { path: std::path::PathBuf, reason: String },
    #[error("guest memory {mem} MiB is too small: the kernel and initramfs need {need} MiB")]
    TooSmall { mem: u64, need: u64 },
    #[error("guest memory {0} MiB is above the supported maximum of 3072 MiB")]
    TooLarge(u64),
    #[error("kernel command line is {0} bytes, above Linux's limit of 2047")]
    CmdlineTooLong(usize),
    #[error("{0} vCPUs requested: krr supports 1 to 8")]
    BadVcpus(u32),
}

/// Segment state for a flat segment, as both backends need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlatSegment {
    pub selector: u16,
    /// Descriptor type field (e.g. 0xb execute/read accessed code, 0x3 read/write accessed data).
    pub typ: u8,
    /// 64-bit code segment (L bit).
    pub long: bool,
    /// Default operand size 32 (D/B bit); must be clear when `long` is set.
    pub db: bool,
}

/// The bootstrap processor's state at the kernel entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    pub rip: u64,
    pub rsi: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: FlatSegment,
    pub ds: FlatSegment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
}

/// Everything the VMM must do to guest memory and the BSP before the first instruction.
#[derive(Debug, Clone)]
pub struct BootPlan {
    /// (guest-physical address, bytes) to copy into RAM, in order.
    pub writes: Vec<(u64, Vec<u8>)>,
    pub entry: EntryState,
    pub e820: Vec<E820Entry>,
    pub kernel: KernelImage,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootConfig<'a> {
    pub vmlinux: &'a Path,
    pub initrd: Option<&'a Path>,
    /// A cpio archive to append to the initramfs (files added with `--add`).
    pub initrd_extra: &'a [u8],
    pub cmdline: &'a str,
    pub mem_bytes: u64,
    pub vcpus: u32,
    /// Ranges to mark reserved in the e820 map (e.g. the recorder's ring).
    pub reserved: Vec<(u64, u64)>,
}

const GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// Identity map of the low 4 GiB with 2 MiB pages.
fn page_tables() -> Vec<(u64, Vec<u8>)> {
    let mut pml4 = vec![0u8; 4096];
    pml4[..8].copy_from_slice(&(PDPT_ADDR | 0x3).to_le_bytes());
    let mut pdpt = vec![0u8; 4096];
    let mut pds = vec![0u8; 4 * 4096];
    for i in 0..4u64 {
        let pd = PD_ADDR + i * 4096;
        pdpt[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&(pd | 0x3).to_le_bytes());
    }
    for i in 0..2048u64 {
        // Present, writable, 2 MiB page.
        let e = (i << 21) | 0x83;
        pds[i as usize * 8..i as usize * 8 + 8].copy_from_slice(&e.to_le_bytes());
    }
    vec![(PML4_ADDR, pml4), (PDPT_ADDR, pdpt), (PD_ADDR, pds)]
}

/// Plan the boot of `cfg`.
pub fn plan(cfg: &BootConfig<'_>) -> Result<BootPlan, BootError> {
    if cfg.vcpus == 0 || cfg.vcpus > 8 {
        return Err(BootError::BadVcpus(cfg.vcpus));
    }
    if cfg.mem_bytes > MAX_MEM {
        return Err(BootError::TooLarge(cfg.mem_bytes >> 20));
    }
    if cfg.cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong(cfg.cmdline.len()));
    }
    let kernel = load_elf(cfg.vmlinux)?;
    let mut writes: Vec<(u64, Vec<u8>)> = Vec::new();
    for seg in &kernel.segments {
        writes.push((seg.paddr, seg.data.clone()));
    }
    let mem = cfg.mem_bytes & !0xfff;
    let mut initrd_at = None;
    if cfg.initrd.is_some() || !cfg.initrd_extra.is_empty() {
        let mut data = match cfg.initrd {
            Some(path) => std::fs::read(path).map_err(|e| BootError::Io { path: path.to_owned(), err: e })?,
            None => Vec::new(),
        };
        if !cfg.initrd_extra.is_empty() {
            data.resize(data.len().next_multiple_of(4), 0);
            data.extend_from_slice(cfg.initrd_extra);
        }
        // Highest 2 MiB-aligned place that fits, above the kernel's image and below any
        // reserved range (the recorder's ring sits at the top of RAM).
        let top = cfg.reserved.iter().map(|r| r.0).filter(|&s| s > kernel.end).fold(mem, u64::min);
        let at = top.saturating_sub(data.len() as u64) & !((2 << 20) - 1);
        if at < kernel.end || data.is_empty() && at == 0 {
            let need = (kernel.end + data.len() as u64 + (4 << 20)) >> 20;
            return Err(BootError::TooSmall { mem: mem >> 20, need });
        }
        initrd_at = Some((at, data.len() as u64));
        writes.push((at, data));
    } else if kernel.end + (16 << 20) > mem {
        return Err(BootError::TooSmall { mem: mem >> 20, need: (kernel.end + (16 << 20)) >> 20 });
    }
    let e820 = e820_map(mem, &cfg.reserved);
    let mut cmdline = cfg.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    writes.push((CMDLINE_ADDR, cmdline));
    writes.push((BOOT_PARAMS_ADDR, params::boot_params(&e820, cfg.cmdline.len(), initrd_at)));
    writes.push((GDT_ADDR, GDT.iter().flat_map(|d| d.to_le_bytes()).collect()));
    writes.extend(page_tables());
    writes.push((MPTABLE_ADDR, mptable(cfg.vcpus)));
    let entry = EntryState {
        rip: kernel.entry,
        rsi: BOOT_PARAMS_ADDR,
        rsp: BOOT_PARAMS_ADDR - 0x10,
        rflags: 0x2,
        cr0: 0x8000_0031, // PG | NE | ET | PE
        cr3: PML4_ADDR,
        cr4: 0x20,   // PAE
        efer: 0x500, // LME | LMA
        cs: FlatSegment { selector: 0x10, typ: 0xb, long: true, db: false },
        ds: FlatSegment { selector: 0x18, typ: 0x3, long: false, db: true },
        gdt_base: GDT_ADDR,
        gdt_limit: (GDT.len() * 8 - 1) as u16,
    };
    Ok(BootPlan { writes, entry, e820, kernel })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_identity_map_4g() {
        let pts = page_tables();
        let pds = &pts[2].1;
        let e = u64::from_le_bytes(pds[8 * 2047..8 * 2048].try_into().unwrap());
        assert_eq!(e, (2047 << 21) | 0x83);
        let pdpt = &pts[1].1;
        let e = u64::from_le_bytes(pdpt[24..32].try_into().unwrap());
        assert_eq!(e, (PD_ADDR + 3 * 4096) | 3);
    }
}
