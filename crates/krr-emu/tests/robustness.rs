//! Arbitrary bytes as an instruction stream must never panic the emulator, in any mode and
//! at any privilege level: every outcome is a retired instruction, a delivered exception, or
//! an `EmuError`.

use krr_emu::{Cpu, FlatMemory, SegReg, Segment, SimplePlatform};
use proptest::prelude::*;

const CODE: u64 = 0x10_0000;

fn w64(m: &mut FlatMemory, a: u64, v: u64) {
    assert!(m.load(a, &v.to_le_bytes()));
}

/// 4 MiB identity-mapped RAM with IDT entries all pointing at the code page.
fn machine(code: &[u8], user: bool, mode: u8) -> (Cpu, FlatMemory) {
    let mut m = FlatMemory::new(4 << 20);
    w64(&mut m, 0x1000, 0x2000 | 7);
    w64(&mut m, 0x2000, 0x3000 | 7);
    w64(&mut m, 0x3000, 0x87);
    w64(&mut m, 0x3008, (1 << 21) | 0x87);
    // GDT: null, code64, data, user code32, user data, user code64.
    let gdt = [
        0u64,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00cf_fb00_0000_ffff,
        0x00cf_f300_0000_ffff,
        0x00af_fb00_0000_ffff,
    ];
    for (k, d) in gdt.iter().enumerate() {
        w64(&mut m, 0x4000 + k as u64 * 8, *d);
    }
    for v in 0..256u64 {
        let lo = (CODE & 0xffff)
            | (0x08 << 16)
            | (0xeu64 << 40)
            | (3 << 45)
            | (1 << 47)
            | ((CODE >> 16) & 0xffff) << 48;
        w64(&mut m, 0x5000 + v * 16, lo);
    }
    assert!(m.load(CODE, code));
    let mut c = match mode {
        0 => Cpu::new_long_mode(0x1000),
        2 => {
            // 32-bit protected mode without paging; the IDT holds 64-bit gates, which read as
            // garbage 8-byte gates: delivery faults must still never panic.
            let mut c = Cpu::new();
            c.cr0 |= 1;
            c.seg[SegReg::Cs as usize] = Segment { db: true, l: false, ..Segment::code64(0x08, 0) };
            for s in [SegReg::Ss, SegReg::Ds, SegReg::Es] {
                c.seg[s as usize] = Segment::data32(0x10, 0);
            }
            c.gdtr = krr_emu::DescriptorTable { base: 0x4000, limit: 0x2f };
            c.idtr = krr_emu::DescriptorTable { base: 0x5000, limit: 0xfff };
            c.rip = CODE;
            c.gpr[4] = 0x8_0000;
            return (c, m);
        }
        _ => {
            let mut c = Cpu::new();
            c.seg[SegReg::Cs as usize] = Segment::real(0, 0xb);
            c
        }
    };
    if mode == 0 {
        c.seg[SegReg::Cs as usize] = Segment::code64(0x08, 0);
        c.gdtr = krr_emu::DescriptorTable { base: 0x4000, limit: 0x2f };
        c.idtr = krr_emu::DescriptorTable { base: 0x5000, limit: 0xfff };
        c.tr = Segment { base: 0x6000, limit: 0x67, typ: 0xb, present: true, ..Default::default() };
        if user {
            c.seg[SegReg::Cs as usize] = Segment::code64(0x2b, 3);
            c.seg[SegReg::Ss as usize] = Segment::data32(0x23, 3);
        }
        c.rip = CODE;
    } else {
        c.rip = CODE & 0xffff;
        c.seg[SegReg::Cs as usize] = Segment::real((CODE >> 4) as u16, 0xb);
    }
    c.gpr =
        [0x1000, 0x20_0000, 0x3, 0x30_0000, 0x8_0000, 0x8_0000, 0x30_0000, 0x31_0000, 0, 1, 2, 3, 4, 5, 6, 7];
    (c, m)
}

/// The test platform, with port/MMIO accesses bounded (a REP OUTS with a 32-bit count is 4 G
/// accesses in one step).
fn platform() -> SimplePlatform {
    SimplePlatform { access_limit: 1 << 16, ..SimplePlatform::new() }
}

/// A program the random tests once drew: `or ecx, -1; rep outsb` in 32-bit protected mode runs
/// 4 G iterations in one step. The platform's access limit ends it with an error after 64 Ki.
#[test]
fn a_rep_outs_with_a_32_bit_count_stops_at_the_access_limit() {
    let (mut cpu, mut mem) = machine(&[0x83, 0xc9, 0xff, 0xf3, 0x6e], false, 2);
    let mut p = platform();
    cpu.step(&mut mem, &mut p).unwrap();
    assert_eq!(cpu.gpr[1], 0xffff_ffff);
    let err = cpu.step(&mut mem, &mut p).unwrap_err();
    assert!(err.to_string().contains("port/MMIO accesses"), "{err}");
    assert_eq!(p.outs.len(), 1 << 16);
    // Every completed iteration is architectural: ECX counted them down.
    assert_eq!(cpu.gpr[1], 0xffff_ffff - (1 << 16));
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("KRR_EMU_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]
    #[test]
    fn random_bytes_never_panic(code in proptest::collection::vec(any::<u8>(), 1..96), user in any::<bool>(), mode in 0u8..3) {
        let (mut cpu, mut mem) = machine(&code, user, mode);
        let mut p = platform();
        p.pending_irqs.extend([0x20, 0x21]);
        for _ in 0..64 {
            if cpu.step(&mut mem, &mut p).is_err() {
                break;
            }
        }
    }

    /// Random bytes behind common prefix/escape sequences, so two-byte opcodes with REX.W,
    /// operand-size and REP prefixes (SHLD, CMPXCHG16B, SSE, string ops...) are reached often.
    #[test]
    fn prefixed_random_bytes_never_panic(
        prefix in proptest::sample::select(vec![
            vec![0x48u8, 0x0f], vec![0x0f], vec![0x66, 0x0f], vec![0xf3, 0x0f], vec![0xf2, 0x0f],
            vec![0xf3, 0x48, 0x0f], vec![0x66, 0x48, 0x0f], vec![0x48], vec![0x66], vec![0xf3],
            vec![0xf3, 0x48], vec![0x67], vec![0x64, 0x48], vec![0xf0, 0x48, 0x0f], vec![0x41, 0x0f],
        ]),
        tail in proptest::collection::vec(any::<u8>(), 1..24),
        user in any::<bool>(),
    ) {
        let mut code = prefix.clone();
        code.extend_from_slice(&tail);
        code.extend_from_slice(&prefix);
        code.extend_from_slice(&tail);
        let (mut cpu, mut mem) = machine(&code, user, 0);
        let mut p = platform();
        for _ in 0..8 {
            if cpu.step(&mut mem, &mut p).is_err() {
                break;
            }
        }
    }

    /// The decode cache is invisible: random code gives the same final state with it on or off.
    #[test]
    fn decode_cache_is_transparent(code in proptest::collection::vec(any::<u8>(), 1..64), user in any::<bool>()) {
        let mut results = Vec::new();
        for cache in [true, false] {
            let (mut cpu, mut mem) = machine(&code, user, 0);
            cpu.set_decode_cache(cache);
            let mut p = platform();
            let mut events = Vec::new();
            for _ in 0..48 {
                match cpu.step(&mut mem, &mut p) {
                    Ok(e) => events.push(format!("{e:?}")),
                    Err(e) => {
                        events.push(format!("{e}"));
                        break;
                    }
                }
            }
            results.push((events, cpu.gpr, cpu.rip, cpu.rflags, cpu.icount, mem.dump(0, 4 << 20).unwrap()));
        }
        prop_assert!(results[0] == results[1]);
    }
}
