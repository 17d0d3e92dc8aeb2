//! Test fixtures: a 64-bit machine with identity paging, a Linux-like GDT, an IDT whose
//! handlers record the vector in R15 and halt, and helpers to run code_asm programs.

use iced_x86::code_asm::{rax, rbx, CodeAssembler};
use iced_x86::IcedError;

use crate::cpu::{Cpu, SegReg, Segment};
use crate::exec::RunExit;
use crate::memory::FlatMemory;
use crate::platform::SimplePlatform;

pub(crate) const PML4: u64 = 0x1000;
pub(crate) const GDT: u64 = 0x4000;
pub(crate) const IDT: u64 = 0x5000;
pub(crate) const TSS: u64 = 0x6000;
pub(crate) const HANDLERS: u64 = 0x7000;
pub(crate) const CODE: u64 = 0x10000;
pub(crate) const STACK_TOP: u64 = 0x80000;
pub(crate) const RSP0: u64 = 0x90000;
pub(crate) const IST1: u64 = 0xa0000;
pub(crate) const DATA: u64 = 0x20_0000;
pub(crate) const MEM_SIZE: u64 = 16 << 20;
/// R15 before running; handlers overwrite it with the vector.
pub(crate) const NO_EXCEPTION: u64 = 0xdead;

pub(crate) fn read_u64(mem: &FlatMemory, a: u64) -> u64 {
    u64::from_le_bytes(mem.dump(a, 8).unwrap().try_into().unwrap())
}

pub(crate) fn write_u64(mem: &mut FlatMemory, a: u64, v: u64) {
    assert!(mem.load(a, &v.to_le_bytes()));
}

/// Writes a 64-bit IDT gate.
pub(crate) fn set_gate(mem: &mut FlatMemory, vector: u8, target: u64, dpl: u8, ist: u8, typ: u8) {
    let lo = (target & 0xffff)
        | (0x10 << 16)
        | (u64::from(ist) << 32)
        | (u64::from(typ) << 40)
        | (u64::from(dpl) << 45)
        | (1 << 47)
        | ((target >> 16) & 0xffff) << 48;
    write_u64(mem, IDT + u64::from(vector) * 16, lo);
    write_u64(mem, IDT + u64::from(vector) * 16 + 8, target >> 32);
}

/// Memory with page tables (2 MiB identity pages, user-accessible), GDT, IDT, TSS, handlers.
pub(crate) fn machine_memory() -> FlatMemory {
    let mut m = FlatMemory::new(MEM_SIZE);
    write_u64(&mut m, PML4, 0x2000 | 7);
    write_u64(&mut m, 0x2000, 0x3000 | 7);
    for i in 0..8u64 {
        write_u64(&mut m, 0x3000 + i * 8, (i << 21) | 0x87);
    }
    let gdt: [u64; 8] = [
        0,
        0x00cf_9b00_0000_ffff, // 0x08 kernel code32
        0x00af_9b00_0000_ffff, // 0x10 kernel code64
        0x00cf_9300_0000_ffff, // 0x18 kernel data
        0x00cf_fb00_0000_ffff, // 0x20 user code32
        0x00cf_f300_0000_ffff, // 0x28 user data
        0x00af_fb00_0000_ffff, // 0x30 user code64
        0,
    ];
    for (i, d) in gdt.iter().enumerate() {
        write_u64(&mut m, GDT + i as u64 * 8, *d);
    }
    // 0x40: 64-bit TSS descriptor, limit 0x67, type 9.
    let tss_lo = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | ((TSS >> 24) & 0xff) << 56;
    write_u64(&mut m, GDT + 0x40, tss_lo);
    write_u64(&mut m, GDT + 0x48, TSS >> 32);
    write_u64(&mut m, TSS + 4, RSP0);
    write_u64(&mut m, TSS + 0x24, IST1);
    // Handlers: mov r15, vector ; hlt
    for v in 0..=255u8 {
        let h = HANDLERS + u64::from(v) * 16;
        let code = [0x49, 0xc7, 0xc7, v, 0, 0, 0, 0xf4];
        assert!(m.load(h, &code));
        set_gate(&mut m, v, h, 3, 0, 0xe);
    }
    m
}

/// A CPU matching `machine_memory`.
pub(crate) fn long_mode_cpu() -> Cpu {
    let mut c = Cpu::new_long_mode(PML4);
    c.gdtr = crate::cpu::DescriptorTable { base: GDT, limit: 0x4f };
    c.idtr = crate::cpu::DescriptorTable { base: IDT, limit: 0xfff };
    c.tr = Segment { selector: 0x40, base: TSS, limit: 0x67, typ: 0xb, present: true, ..Default::default() };
    c.msrs.star = (0x23u64 << 48) | (0x10u64 << 32);
    c.seg[SegReg::Ss as usize].selector = 0x18;
    c.gpr[4] = STACK_TOP;
    c.gpr[15] = NO_EXCEPTION;
    c.rip = CODE;
    c
}

/// Assembles `f` at CODE followed by HLT.
pub(crate) fn assemble(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

/// Runs until HLT; returns the final state.
pub(crate) fn run_raw(
    mut cpu: Cpu,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Cpu, FlatMemory) {
    let mut mem = machine_memory();
    let code = assemble(f);
    assert!(mem.load(CODE, &code));
    let mut p = SimplePlatform::new();
    let r = cpu.run(&mut mem, &mut p, 1_000_000, |_| false).unwrap();
    assert_eq!(r, RunExit::Halted, "program did not reach hlt");
    (cpu, mem)
}

/// Runs a program that must not raise an exception.
pub(crate) fn run_asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> (Cpu, FlatMemory) {
    run_asm_on(long_mode_cpu(), f)
}

/// Like `run_asm` on a prepared CPU.
pub(crate) fn run_asm_on(
    cpu: Cpu,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Cpu, FlatMemory) {
    let (cpu, mem) = run_raw(cpu, f);
    assert_eq!(cpu.gpr[15], NO_EXCEPTION, "unexpected exception, vector {}", cpu.gpr[15]);
    (cpu, mem)
}

/// Runs `f` on `cpu` with the status flags set to `flags_in` before it; returns the status
/// flags (CF PF AF ZF SF OF) it leaves.
pub(crate) fn status_flags_after(
    cpu: Cpu,
    flags_in: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> u64 {
    let (cpu, _) = run_asm_on(cpu, |a| {
        a.mov(rax, flags_in)?;
        a.push(rax)?;
        a.popfq()?;
        f(a)?;
        a.pushfq()?;
        a.pop(rbx)?;
        Ok(())
    });
    cpu.gpr[3] & 0x8d5
}

/// Runs a program that must end in an exception handler (R15 = vector).
pub(crate) fn run_asm_expect_exception(
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> (Cpu, FlatMemory) {
    let (cpu, mem) = run_raw(long_mode_cpu(), f);
    assert_ne!(cpu.gpr[15], NO_EXCEPTION, "expected an exception");
    (cpu, mem)
}

/// PT used by `map_4k` for linear addresses 16 MiB .. 18 MiB.
pub(crate) const PT_4K: u64 = 0x8000;
/// First linear address mapped through `PT_4K`.
pub(crate) const LIN_4K: u64 = 0x100_0000;

/// Maps one 4 KiB page at `lin` (in LIN_4K .. LIN_4K + 2 MiB) to `phys` with PTE `flags`.
pub(crate) fn map_4k(mem: &mut FlatMemory, lin: u64, phys: u64, flags: u64) {
    write_u64(mem, 0x3000 + 8 * 8, PT_4K | 7);
    let idx = (lin - LIN_4K) >> 12;
    write_u64(mem, PT_4K + idx * 8, phys | flags);
}

/// Memory and CPU with `f` assembled at CODE (ending in HLT), not run yet.
pub(crate) fn prepare(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> (Cpu, FlatMemory) {
    let mut mem = machine_memory();
    let code = assemble(f);
    assert!(mem.load(CODE, &code));
    (long_mode_cpu(), mem)
}

/// Runs a prepared machine until HLT with the given platform.
pub(crate) fn run_until_hlt(cpu: &mut Cpu, mem: &mut FlatMemory, p: &mut SimplePlatform) {
    let r = cpu.run(mem, p, 1_000_000, |_| false).unwrap();
    assert_eq!(r, RunExit::Halted, "program did not reach hlt");
}

/// The CS selector of 64-bit user code (Linux __USER_CS).
pub(crate) const USER_CS: u16 = 0x33;
/// Linux __USER_DS.
pub(crate) const USER_DS: u16 = 0x2b;

/// Switches a CPU to CPL3 64-bit user mode with flat user segments.
pub(crate) fn make_user(cpu: &mut Cpu) {
    cpu.seg[SegReg::Cs as usize] = Segment::code64(USER_CS, 3);
    cpu.seg[SegReg::Ss as usize] = Segment::data32(USER_DS, 3);
    cpu.seg[SegReg::Ds as usize] = Segment::data32(USER_DS, 3);
    cpu.seg[SegReg::Es as usize] = Segment::data32(USER_DS, 3);
}
