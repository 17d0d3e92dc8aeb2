//! The guest-physical memory map krr presents (both backends).

/// Boot GDT (null, null, 64-bit code at 0x10, data at 0x18: Linux's __BOOT_CS/__BOOT_DS).
pub const GDT_ADDR: u64 = 0x500;
/// The zero page (`struct boot_params`).
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// Identity page tables for the 64-bit entry: PML4, PDPT, then four page directories (4 GiB).
pub const PML4_ADDR: u64 = 0x9000;
pub const PDPT_ADDR: u64 = 0xa000;
pub const PD_ADDR: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_ADDR: u64 = 0x20000;
/// Linux's x86 COMMAND_LINE_SIZE.
pub const CMDLINE_MAX: usize = 2048;
/// End of conventional low memory; the rest up to 1 MiB is reserved.
pub const LOW_RAM_END: u64 = 0x9fc00;
/// The MP tables live in the BIOS area Linux scans (0xf0000..0x100000).
pub const MPTABLE_ADDR: u64 = 0xf0000;
pub const BIOS_END: u64 = 0x10_0000;
/// Start of the 32-bit device hole (I/O APIC, local APIC); RAM stops below it.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;
/// Largest guest RAM krr supports (below the device hole).
pub const MAX_MEM: u64 = MMIO_HOLE_START;
