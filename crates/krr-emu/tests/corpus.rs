//! Executes every instruction of a real binary once (kernel and user mode, random-ish register
//! state) to check that no encoding found in the wild panics the emulator.
//!
//! Needs a file: `KRR_EMU_CORPUS=/path/to/vmlinux cargo test -p krr-emu --test corpus -- --ignored`
//! (optionally `KRR_EMU_CORPUS_OFFSET=200000 KRR_EMU_CORPUS_LEN=400000`, hex, to pick .text).

use krr_emu::iced_x86::{Decoder, DecoderOptions, Instruction};
use krr_emu::{Cpu, FlatMemory, SegReg, Segment, SimplePlatform};

const CODE: u64 = 0x10_0000;

fn w64(m: &mut FlatMemory, a: u64, v: u64) {
    assert!(m.load(a, &v.to_le_bytes()));
}

#[test]
#[ignore = "needs KRR_EMU_CORPUS pointing at a binary"]
fn every_instruction_of_a_binary() {
    let path = std::env::var("KRR_EMU_CORPUS").expect("set KRR_EMU_CORPUS");
    let file = std::fs::read(path).unwrap();
    // Optional window (e.g. the .text of a vmlinux): KRR_EMU_CORPUS_OFFSET / _LEN, hex or decimal.
    let num = |k: &str| {
        std::env::var(k).ok().map(|v| {
            let v = v.trim_start_matches("0x");
            u64::from_str_radix(v, 16).unwrap() as usize
        })
    };
    let start = num("KRR_EMU_CORPUS_OFFSET").unwrap_or(0).min(file.len());
    let end = num("KRR_EMU_CORPUS_LEN").map_or(file.len(), |l| (start + l).min(file.len()));
    let data = &file[start..end];
    let mut base = FlatMemory::new(4 << 20);
    w64(&mut base, 0x1000, 0x2000 | 7);
    w64(&mut base, 0x2000, 0x3000 | 7);
    w64(&mut base, 0x3000, 0x87);
    w64(&mut base, 0x3008, (1 << 21) | 0x87);
    for v in 0..256u64 {
        let h = 0x8000u64;
        let lo = (h & 0xffff) | (0x08 << 16) | (0xeu64 << 40) | (3 << 45) | (1 << 47);
        w64(&mut base, 0x5000 + v * 16, lo);
    }
    w64(&mut base, 0x4008, 0x00af_9b00_0000_ffff);
    let mut dec = Decoder::with_ip(64, data, CODE, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut executed = 0u64;
    let mut offset = 0usize;
    while dec.can_decode() {
        dec.decode_out(&mut instr);
        let len = instr.len();
        let start = offset;
        offset += len;
        if !krr_emu::coverage::is_implemented(&instr) {
            continue;
        }
        for user in [false, true] {
            let mut mem = base.clone();
            assert!(mem.load(CODE, &data[start..start + len]));
            let mut c = Cpu::new_long_mode(0x1000);
            c.seg[SegReg::Cs as usize] = Segment::code64(0x08, 0);
            c.gdtr = krr_emu::DescriptorTable { base: 0x4000, limit: 0x0f };
            c.idtr = krr_emu::DescriptorTable { base: 0x5000, limit: 0xfff };
            if user {
                c.seg[SegReg::Cs as usize] = Segment::code64(0x33, 3);
                c.seg[SegReg::Ss as usize] = Segment::data32(0x2b, 3);
            }
            c.rip = CODE;
            // One instruction per CPU: the 4 MiB decode cache would cost more than the step.
            c.set_decode_cache(false);
            for (k, r) in c.gpr.iter_mut().enumerate() {
                *r = 0x20_0000 + (k as u64) * 0x1111 + (start as u64 % 61);
            }
            c.gpr[1] = 3 + (start as u64 % 70);
            let _ = c.step(&mut mem, &mut SimplePlatform::new());
            executed += 1;
        }
    }
    assert!(executed > 0);
    eprintln!("executed {executed} instruction instances");
}
