//! Emulator throughput in guest instructions per second, with and without the decode cache.
//!
//! `cargo bench -p krr-emu --bench emu_speed` (release profile). Workloads:
//! (a) register-only loop, (b) load/store loop, (c) kernel-like mix with 4 KiB paging,
//! calls and stack traffic over several code pages, (d) user-mode (CPL3) string mix; (e) the
//! cost of a fresh `Cpu` running a few instructions.

use std::time::Instant;

use iced_x86::code_asm::*;
use krr_emu::{Cpu, FlatMemory, SegReg, Segment, SimplePlatform};

const PML4: u64 = 0x1000;
const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x80_0000;

fn w64(m: &mut FlatMemory, a: u64, v: u64) {
    assert!(m.load(a, &v.to_le_bytes()));
}

/// 32 MiB RAM; identity map of the first 16 MiB with 4 KiB pages (user, writable).
fn memory() -> FlatMemory {
    let mut m = FlatMemory::new(32 << 20);
    w64(&mut m, PML4, 0x2000 | 7);
    w64(&mut m, 0x2000, 0x3000 | 7);
    for pd in 0..8u64 {
        let pt = 0x10_0000 + pd * 0x1000;
        w64(&mut m, 0x3000 + pd * 8, pt | 7);
        for i in 0..512u64 {
            w64(&mut m, pt + i * 8, ((pd << 21) | (i << 12)) | 7);
        }
    }
    m
}

fn cpu(user: bool) -> Cpu {
    let mut c = Cpu::new_long_mode(PML4);
    c.rip = CODE;
    c.gpr[4] = 0x30_0000;
    if user {
        c.seg[SegReg::Cs as usize] = Segment::code64(0x33, 3);
        c.seg[SegReg::Ss as usize] = Segment::data32(0x2b, 3);
    }
    c
}

fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(CODE).unwrap()
}

fn reg_loop(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(rbx, 3u64)?;
    a.set_label(&mut top)?;
    a.add(rax, rbx)?;
    a.xor(rdx, rax)?;
    a.shl(rdx, 1)?;
    a.sub(rsi, rdx)?;
    a.inc(rcx)?;
    a.cmp(rcx, rsi)?;
    a.jmp(top)?;
    Ok(())
}

fn load_store(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(rdi, DATA)?;
    a.set_label(&mut top)?;
    a.mov(rax, rcx)?;
    a.and(eax, 0xfff8)?;
    a.mov(rdx, qword_ptr(rdi + rax))?;
    a.add(rdx, rcx)?;
    a.mov(qword_ptr(rdi + rax), rdx)?;
    a.add(rcx, 8)?;
    a.jmp(top)?;
    Ok(())
}

fn kernel_mix(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut top = a.create_label();
    let mut funcs = Vec::new();
    for _ in 0..8 {
        funcs.push(a.create_label());
    }
    a.mov(rdi, DATA)?;
    a.set_label(&mut top)?;
    for f in &funcs {
        a.call(*f)?;
    }
    a.inc(rcx)?;
    a.jmp(top)?;
    for (k, f) in funcs.iter_mut().enumerate() {
        // Spread functions over pages so fetches cross the TLB.
        for _ in 0..(1000 + k * 37) {
            a.nop()?;
        }
        a.set_label(f)?;
        a.push(rbp)?;
        a.mov(rbp, rsp)?;
        a.push(rbx)?;
        a.mov(rax, rcx)?;
        a.and(eax, 0x3ff8)?;
        a.mov(rbx, qword_ptr(rdi + rax + (k as i32) * 0x4000))?;
        a.add(rbx, 1)?;
        a.mov(qword_ptr(rdi + rax + (k as i32) * 0x4000), rbx)?;
        a.test(ebx, 1)?;
        a.cmovne(rdx, rbx)?;
        a.pop(rbx)?;
        a.pop(rbp)?;
        a.ret()?;
    }
    Ok(())
}

fn user_strings(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.mov(rsi, DATA)?;
    a.mov(rdi, DATA + 0x2000)?;
    a.mov(ecx, 64)?;
    a.rep().movsb()?;
    a.mov(rdi, DATA + 0x4000)?;
    a.mov(ecx, 16)?;
    a.xor(eax, eax)?;
    a.rep().stosq()?;
    a.mov(rdi, DATA)?;
    a.mov(ecx, 32)?;
    a.mov(al, 1)?;
    a.repne().scasb()?;
    a.jmp(top)?;
    Ok(())
}

fn bench(name: &str, user: bool, code: &[u8], instructions: u64, cache: bool) {
    let mut mem = memory();
    assert!(mem.load(CODE, code));
    let mut c = cpu(user);
    c.set_decode_cache(cache);
    let mut p = SimplePlatform::new();
    let t = Instant::now();
    c.run(&mut mem, &mut p, instructions, |_| false).expect("benchmark program failed");
    let dt = t.elapsed().as_secs_f64();
    // REP string instructions retire once for many iterations; count retirements.
    println!(
        "{name:<28} cache={:<5} {:>8.1} M instr/s ({} instructions in {:.3} s)",
        cache,
        c.icount as f64 / dt / 1e6,
        c.icount,
        dt
    );
}

/// Cost of a fresh CPU that runs a few instructions (what a fuzz target does per input).
fn bench_fresh_cpus(code: &[u8], count: u32) {
    let mut mem = memory();
    assert!(mem.load(CODE, code));
    let mut p = SimplePlatform::new();
    let t = Instant::now();
    for _ in 0..count {
        let mut c = cpu(false);
        c.run(&mut mem, &mut p, 10, |_| false).expect("benchmark program failed");
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "(e) fresh Cpu + 10 instructions {:>8.1} us per CPU ({count} CPUs)",
        dt / f64::from(count) * 1e6
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 2_000_000 } else { 50_000_000 };
    let progs: [(&str, bool, Vec<u8>); 4] = [
        ("(a) register loop", false, asm(reg_loop)),
        ("(b) load/store loop", false, asm(load_store)),
        ("(c) kernel-like mix, paging", false, asm(kernel_mix)),
        ("(d) user string mix", true, asm(user_strings)),
    ];
    let only: Option<String> = std::env::args().skip(1).find(|a| a.starts_with('('));
    if only.as_ref().is_none_or(|o| o.starts_with("(e)")) {
        bench_fresh_cpus(&progs[0].2, if quick { 100 } else { 2000 });
    }
    for (name, user, code) in &progs {
        if only.as_ref().is_some_and(|o| !name.starts_with(o.as_str())) {
            continue;
        }
        let cached_only = std::env::args().any(|a| a == "--cached-only");
        for cache in [true, false] {
            if cached_only && !cache {
                continue;
            }
            let count = if cache { n } else { n / 5 };
            bench(name, *user, code, count, cache);
        }
    }
}
