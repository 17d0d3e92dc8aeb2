//! The guest machine both sides start from: one physical-memory image (identity-mapped 4-level page
//! tables, a GDT with 64-bit ring-0 and ring-3 segments, an IDT whose gates 0..31 lead to tiny ring-0
//! stubs, a TSS) plus the control-register and segment values that go with it.
//!
//! Physical address = virtual address everywhere. Layout:
//!
//! | range                   | what                                  | paging                     |
//! |-------------------------|---------------------------------------|----------------------------|
//! | `0x0000`                | unused                                | not present (null page)    |
//! | `0x1000`                | GDT                                   | supervisor RW              |
//! | `0x2000`                | IDT (256 gates, 0..31 present)        | supervisor RW              |
//! | `0x4000..0x9000`        | PML4, PDPT, PD, PT0, PT1              | supervisor RW              |
//! | `0x9000`                | exception stubs, [`STUB_SIZE`] each   | supervisor RW              |
//! | `0xc000..0xe069`        | TSS (RSP0 = [`RING0_STACK_TOP`])      | supervisor RW              |
//! | `0x10000..0x12000`      | ring-0 stack                          | supervisor RW              |
//! | [`CODE_BASE`]           | user code ([`CODE_SIZE`])             | user, read-only, executable|
//! | `CODE_BASE + CODE_SIZE` | guard                                 | not present                |
//! | `DATA_BASE - 0x1000`    | guard                                 | not present                |
//! | [`DATA_BASE`]           | data window ([`DATA_SIZE`])           | user RW, NX                |
//! | `DATA_BASE + DATA_SIZE` | guard                                 | not present                |
//! | [`RO_PAGE`]             | read-only user page (fixed contents)  | user, read-only, NX        |
//!
//! A user sequence ends with `out DONE_PORT, al` (the TSS I/O bitmap allows every port at CPL 3). An exception raised in
//! ring 3 goes through the IDT to the ring-0 stub of its vector, which is `out (EXC_PORT_BASE + vector), al;
//! hlt`: neither changes a general register, so the GPRs at the exit are those at the fault, and the frame
//! the CPU pushed (RIP, CS, RFLAGS, RSP, SS and maybe an error code) sits at the top of the ring-0 stack.

/// Size of guest physical memory.
pub const RAM_SIZE: usize = 0x40_0000;

pub const GDT_BASE: u64 = 0x1000;
pub const IDT_BASE: u64 = 0x2000;
pub const TSS_BASE: u64 = 0xc000;
/// TSS limit (covers an all-zero I/O permission bitmap plus its terminating byte).
pub const TSS_LIMIT: u32 = 104 + 8192;
pub const PML4_BASE: u64 = 0x4000;
const PDPT_BASE: u64 = 0x5000;
const PD_BASE: u64 = 0x6000;
const PT0_BASE: u64 = 0x7000;
const PT1_BASE: u64 = 0x8000;
pub const STUB_BASE: u64 = 0x9000;
/// Bytes per exception stub.
pub const STUB_SIZE: u64 = 8;
pub const RING0_STACK_TOP: u64 = 0x12000;

/// Where user code starts (each case's code is written here).
pub const CODE_BASE: u64 = 0x10_0000;
pub const CODE_SIZE: usize = 0x4000;
/// Filler of the code area outside the current sequence (`hlt`: #GP(0) at CPL 3).
pub const CODE_FILL: u8 = 0xf4;
/// The data window: the only user-writable memory; compared after each run.
pub const DATA_BASE: u64 = 0x20_0000;
pub const DATA_SIZE: usize = 0x4000;
/// A user read-only page (writes to it raise #PF with the protection bit set).
pub const RO_PAGE: u64 = 0x20_6000;
/// Byte `i` of the read-only page is `RO_FILL ^ i as u8`.
pub const RO_FILL: u8 = 0x5a;

/// FS and GS bases (segment overrides hit the data window).
pub const FS_BASE: u64 = DATA_BASE + 0x1000;
pub const GS_BASE: u64 = DATA_BASE + 0x2000;

/// Selectors as Linux lays them out: this host's KVM shows ring-3 code the host's own CS (0x33) and SS (0x2b)
/// whatever the guest loaded, and null DS/ES/FS/GS, so the guest uses the same values.
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER_CS32: u16 = 0x20 | 3;
pub const USER_DS: u16 = 0x28 | 3;
pub const USER_CS: u16 = 0x30 | 3;
pub const TSS_SEL: u16 = 0x40;
pub const GDT_LIMIT: u16 = 0x4f;
pub const IDT_LIMIT: u16 = 0xfff;

/// Port a user sequence writes to when it is done.
pub const DONE_PORT: u16 = 0x10;
/// Exception vector `v` (0..31) is reported on port `EXC_PORT_BASE + v`.
pub const EXC_PORT_BASE: u16 = 0x20;
/// Number of vectors with present gates.
pub const EXC_VECTORS: u8 = 32;

/// PG | AM | WP | NE | ET | MP | PE. AM is set because this host's KVM runs ring 3 with alignment checking
/// on whatever the guest's CR0 says (RFLAGS.AC=1 + a misaligned access raises #AC).
pub const CR0: u64 = 0x8005_0033;
pub const CR4: u64 = 0x620; // OSXMMEXCPT | OSFXSR | PAE
pub const EFER: u64 = 0xd00; // NXE | LMA | LME

/// RFLAGS bits a case may choose (CF PF AF ZF SF DF OF AC ID); bit 1 and IF are forced on; IOPL, TF, NT,
/// RF, VM, VIF, VIP stay 0. This host's KVM runs guest ring 3 with IOPL 0 and IF 1 whatever the guest asks
/// (PUSHF shows so), so IOPL stays 0 (the final `out` is allowed by the TSS I/O permission bitmap) and IF 1.
pub const RFLAGS_CASE_MASK: u64 = 0x0024_0cd5;
/// IF and the reserved bit 1.
pub const RFLAGS_FORCED: u64 = 0x202;

/// The RFLAGS a run starts with for a case that asked for `rflags`.
pub fn start_rflags(rflags: u64) -> u64 {
    (rflags & RFLAGS_CASE_MASK) | RFLAGS_FORCED
}

/// `out DONE_PORT, al`: the instruction appended to every sequence.
pub const DONE_INSN: [u8; 2] = [0xe6, DONE_PORT as u8];

/// Exceptions whose delivery pushes an error code.
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

fn put_u64(mem: &mut [u8], addr: u64, v: u64) {
    let a = addr as usize;
    mem[a..a + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u16(mem: &mut [u8], addr: u64, v: u16) {
    let a = addr as usize;
    mem[a..a + 2].copy_from_slice(&v.to_le_bytes());
}

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_NX: u64 = 1 << 63;

/// Page-table entry flags of the page at `va` (0 = not present).
fn page_flags(va: u64) -> u64 {
    if (0x1000..0x2_0000).contains(&va) {
        PTE_P | PTE_RW
    } else if (CODE_BASE..CODE_BASE + CODE_SIZE as u64).contains(&va) {
        PTE_P | PTE_US
    } else if (DATA_BASE..DATA_BASE + DATA_SIZE as u64).contains(&va) {
        PTE_P | PTE_RW | PTE_US | PTE_NX
    } else if va == RO_PAGE {
        PTE_P | PTE_US | PTE_NX
    } else {
        0
    }
}

/// Builds the initial physical memory image (GDT, IDT, TSS, page tables, stubs; user areas zero).
pub fn build_image() -> Vec<u8> {
    let mut m = vec![0u8; RAM_SIZE];
    // GDT.
    put_u64(&mut m, GDT_BASE, 0);
    put_u64(&mut m, GDT_BASE + 0x10, 0x00af_9b00_0000_ffff); // kernel code64
    put_u64(&mut m, GDT_BASE + 0x18, 0x00cf_9300_0000_ffff); // kernel data
    put_u64(&mut m, GDT_BASE + 0x20, 0x00cf_fb00_0000_ffff); // user code32
    put_u64(&mut m, GDT_BASE + 0x28, 0x00cf_f300_0000_ffff); // user data
    put_u64(&mut m, GDT_BASE + 0x30, 0x00af_fb00_0000_ffff); // user code64
    let tss_lo = u64::from(TSS_LIMIT & 0xffff)
        | (u64::from(TSS_LIMIT >> 16) << 48)
        | ((TSS_BASE & 0xff_ffff) << 16)
        | (0xbu64 << 40)
        | (1u64 << 47)
        | (((TSS_BASE >> 24) & 0xff) << 56);
    put_u64(&mut m, GDT_BASE + u64::from(TSS_SEL), tss_lo);
    put_u64(&mut m, GDT_BASE + u64::from(TSS_SEL) + 8, TSS_BASE >> 32);
    // TSS: RSP0 and an all-zero I/O permission bitmap. This host's KVM runs ring 3 with IOPL 0 whatever
    // RFLAGS says, so `out` at CPL 3 is allowed by the bitmap, not by IOPL.
    put_u64(&mut m, TSS_BASE + 4, RING0_STACK_TOP);
    put_u16(&mut m, TSS_BASE + 102, 104);
    m[(TSS_BASE + 104 + 8192) as usize] = 0xff;
    // IDT and stubs.
    for v in 0..EXC_VECTORS {
        let handler = STUB_BASE + u64::from(v) * STUB_SIZE;
        // int3 may be raised from ring 3 (DPL 3 gate, like Linux); every other gate is DPL 0, so `int n`
        // from ring 3 raises #GP.
        let attr: u64 = if v == 3 { 0xee } else { 0x8e };
        let lo = (handler & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (attr << 40)
            | (((handler >> 16) & 0xffff) << 48);
        let gate = IDT_BASE + u64::from(v) * 16;
        put_u64(&mut m, gate, lo);
        put_u64(&mut m, gate + 8, handler >> 32);
        let s = handler as usize;
        // out imm8, al; hlt; jmp $-3 (back to hlt)
        m[s..s + 5].copy_from_slice(&[0xe6, (EXC_PORT_BASE + u16::from(v)) as u8, 0xf4, 0xeb, 0xfd]);
    }
    // Page tables: PML4[0] -> PDPT[0] -> PD[0..2] -> PT0 (0..2 MiB), PT1 (2..4 MiB).
    let dir = PTE_P | PTE_RW | PTE_US;
    put_u64(&mut m, PML4_BASE, PDPT_BASE | dir);
    put_u64(&mut m, PDPT_BASE, PD_BASE | dir);
    put_u64(&mut m, PD_BASE, PT0_BASE | dir);
    put_u64(&mut m, PD_BASE + 8, PT1_BASE | dir);
    for page in 0..1024u64 {
        let va = page << 12;
        let flags = page_flags(va);
        if flags != 0 {
            let pt = if page < 512 { PT0_BASE } else { PT1_BASE };
            put_u64(&mut m, pt + (page % 512) * 8, va | flags);
        }
    }
    for i in 0..0x1000usize {
        m[RO_PAGE as usize + i] = RO_FILL ^ i as u8;
    }
    // Code area: `hlt` everywhere (#GP at CPL 3) until a case writes its sequence.
    m[CODE_BASE as usize..CODE_BASE as usize + CODE_SIZE].fill(CODE_FILL);
    m
}

/// Where the stub of `vector` starts.
pub fn stub_addr(vector: u8) -> u64 {
    STUB_BASE + u64::from(vector) * STUB_SIZE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pte(m: &[u8], va: u64) -> u64 {
        let pt = if va < 0x20_0000 { PT0_BASE } else { PT1_BASE };
        let a = (pt + ((va >> 12) % 512) * 8) as usize;
        u64::from_le_bytes(m[a..a + 8].try_into().unwrap())
    }

    #[test]
    fn image_maps_what_the_table_says() {
        let m = build_image();
        assert_eq!(m.len(), RAM_SIZE);
        assert_eq!(pte(&m, DATA_BASE) & 7, 7, "window: present, writable, user");
        assert_ne!(pte(&m, DATA_BASE) & PTE_NX, 0);
        assert_eq!(pte(&m, DATA_BASE + DATA_SIZE as u64), 0, "guard above the window");
        assert_eq!(pte(&m, DATA_BASE - 0x1000), 0, "guard below the window");
        assert_eq!(pte(&m, CODE_BASE) & 7, 5, "code: present, read-only, user");
        assert_eq!(pte(&m, RO_PAGE) & 7, 5);
        assert_eq!(pte(&m, IDT_BASE) & 7, 3, "system pages: supervisor");
        assert_eq!(pte(&m, 0), 0);
        assert_eq!(m[CODE_BASE as usize], CODE_FILL);
        let s = stub_addr(14) as usize;
        assert_eq!(&m[s..s + 3], &[0xe6, (EXC_PORT_BASE + 14) as u8, 0xf4]);
    }

    #[test]
    fn flags_forced() {
        assert_eq!(start_rflags(0), 0x202);
        assert_eq!(start_rflags(u64::MAX) & 0x3100, 0, "no IOPL, no TF");
        assert!(has_error_code(14) && !has_error_code(6));
    }
}
