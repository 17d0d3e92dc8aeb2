//! Arbitrary bytes as an instruction stream, from an arbitrary register state, in 64-bit mode at
//! CPL 0 or 3 with paging on: krr-emu must never panic. Every outcome is a retired instruction, a
//! delivered exception, `Unimplemented`, a triple fault or a platform stop.
#![no_main]

use krr_emu::{Cpu, FlatMemory, GuestMemory, Segment, SegReg, SimplePlatform};
use libfuzzer_sys::fuzz_target;

const CODE: u64 = 0x10000;
const STEPS: usize = 256;

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (state, code) = data.split_at(24);
    let mut mem = FlatMemory::new(1 << 20);
    // Identity-map the first 2 MiB, user-accessible and writable.
    mem.write(0x1000, &(0x2000u64 | 7).to_le_bytes());
    mem.write(0x2000, &(0x3000u64 | 7).to_le_bytes());
    mem.write(0x3000, &0x87u64.to_le_bytes());
    for (i, chunk) in code.chunks(4096).take(8).enumerate() {
        mem.write(CODE + i as u64 * 4096, chunk);
    }
    let mut cpu = Cpu::new_long_mode(0x1000);
    cpu.rip = CODE;
    let word = |i: usize| u64::from_le_bytes(state[i * 8..i * 8 + 8].try_into().unwrap());
    // Registers point into memory or are arbitrary; flags and CPL come from the input.
    for (g, r) in cpu.gpr.iter_mut().enumerate() {
        *r = if g % 2 == 0 { word(0).rotate_left(g as u32 * 7) } else { 0x8000 + (word(1) >> (g * 3)) % 0x70000 };
    }
    cpu.rflags = (word(2) & 0xcd5) | 0x2;
    if word(2) >> 63 == 1 {
        cpu.seg[SegReg::Cs as usize] = Segment::code64(0x23, 3);
    }
    let mut platform = SimplePlatform { access_limit: 1 << 16, ..SimplePlatform::new() };
    for _ in 0..STEPS {
        if cpu.step(&mut mem, &mut platform).is_err() {
            break;
        }
    }
});
