//! Hand-written cases per instruction family.
//!
//! Register operands use rax/rcx/rdx (values set per case) with garbage in the bits above the operand
//! size, so zero- and sign-extension rules are checked too. Memory operands use `rbx` = [`MEM_PTR`]
//! (inside the data window), string instructions `rsi`/`rdi` inside the window.

use std::collections::HashMap;
use std::sync::OnceLock;

use iced_x86::code_asm::*;
use iced_x86::{Code, MemoryOperand, Register};

use crate::case::{Case, RAX, RBX, RCX, RDI, RDX, RSI};
use crate::gen::{self, encode, make, Opnd, Rng, FORMS};
use crate::layout::{DATA_BASE, RO_PAGE};

/// Value of `rbx` in hand-written cases: their memory operands are relative to it.
pub const MEM_PTR: u64 = DATA_BASE + 0x1000;

/// Every family name, in the order they are generated.
pub const FAMILIES: &[&str] = &[
    "alu",
    "unary",
    "shift",
    "shiftd",
    "muldiv",
    "bit",
    "bitext",
    "string",
    "cmov_setcc",
    "jcc",
    "stack",
    "xchg",
    "misc",
    "sse",
    "x87",
    "x87store",
    "exc",
    "forms",
    "ssefp",
    "ssexm",
];

/// Looks up an iced `Code` by its Rust name (`"Add_rm64_r64"`).
pub fn code(name: &str) -> Code {
    static MAP: OnceLock<HashMap<String, Code>> = OnceLock::new();
    let map = MAP.get_or_init(|| Code::values().map(|c| (format!("{c:?}"), c)).collect());
    *map.get(name).unwrap_or_else(|| panic!("no iced Code named {name}"))
}

fn bits(size: u32) -> u32 {
    size * 8
}

fn mask(size: u32) -> u64 {
    if size == 8 {
        u64::MAX
    } else {
        (1u64 << bits(size)) - 1
    }
}

/// Edge operand values for an operand of `size` bytes.
fn edges(size: u32) -> Vec<u64> {
    let m = mask(size);
    let smin = 1u64 << (bits(size) - 1);
    vec![0, 1, 2, smin - 1, smin, smin + 1, m, m - 1, 0x5555_5555_5555_5555 & m, 0x0f0f_0f0f_0f0f_0f0f & m]
}

/// `v` placed in the low `size` bytes with garbage above.
fn with_garbage(v: u64, size: u32) -> u64 {
    if size == 8 {
        v
    } else {
        (0xdead_beef_cafe_babe & !mask(size)) | (v & mask(size))
    }
}

fn reg(r: Register, size: u32) -> Opnd {
    Opnd::Reg(gen::sized(r, size))
}

fn insn(c: Code, ops: &[Opnd]) -> Vec<u8> {
    let i = make(c, ops).unwrap_or_else(|e| panic!("corpus: {e}"));
    encode(&i).unwrap_or_else(|e| panic!("corpus: {e}"))
}

fn base(family: &str, name: String) -> Case {
    let mut c = Case::new(family, &name);
    c.gprs[RBX] = MEM_PTR;
    // Recognisable window contents.
    static PATTERN: OnceLock<Vec<u8>> = OnceLock::new();
    let p = PATTERN.get_or_init(|| (0..c.mem.len()).map(|i| (i as u8).wrapping_mul(0x3b) ^ 0xa5).collect());
    c.mem.copy_from_slice(p);
    c
}

const CF: u64 = 0x1;
const PF: u64 = 0x4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const DF: u64 = 0x400;
const OF: u64 = 0x800;

fn alu() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Add", "Or", "Adc", "Sbb", "And", "Sub", "Xor", "Cmp", "Test"] {
        for size in [1u32, 2, 4, 8] {
            let b = bits(size);
            let c = code(&format!("{op}_rm{b}_r{b}"));
            let carries: &[u64] = if op == "Adc" || op == "Sbb" { &[0, CF] } else { &[0] };
            for (ia, &a) in edges(size).iter().enumerate() {
                for (ib, &bv) in edges(size).iter().enumerate() {
                    for &cf in carries {
                        let mut k = base("alu", format!("{op}{b}/{ia}-{ib}-cf{cf}"));
                        k.gprs[RAX] = with_garbage(a, size);
                        k.gprs[RCX] = with_garbage(bv, size) ^ 0x1111_0000_0000_0000;
                        k.rflags = 0x202 | cf | if cf == 0 { AF | ZF } else { PF | SF | OF };
                        k.insns = vec![insn(c, &[reg(Register::RAX, size), reg(Register::RCX, size)])];
                        v.push(k);
                    }
                }
            }
            // Memory destination and immediate forms on one operand pair each.
            let mut k = base("alu", format!("{op}{b}/mem"));
            k.gprs[RCX] = with_garbage(edges(size)[4], size);
            k.insns = vec![insn(
                c,
                &[Opnd::Mem(MemoryOperand::with_base_displ(Register::RBX, 8)), reg(Register::RCX, size)],
            )];
            v.push(k);
        }
    }
    v
}

fn unary() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Inc", "Dec", "Neg", "Not"] {
        for size in [1u32, 2, 4, 8] {
            let c = code(&format!("{op}_rm{}", bits(size)));
            for (ia, &a) in edges(size).iter().enumerate() {
                for cf in [0, CF] {
                    let mut k = base("unary", format!("{op}{}/{ia}-cf{cf}", bits(size)));
                    k.gprs[RAX] = with_garbage(a, size);
                    k.rflags = 0x202 | cf;
                    k.insns = vec![insn(c, &[reg(Register::RAX, size)])];
                    v.push(k);
                }
            }
        }
    }
    v
}

fn shift_values(size: u32) -> Vec<u64> {
    let m = mask(size);
    let smin = 1u64 << (bits(size) - 1);
    vec![0, 1, smin, smin | 1, 0x8765_4321_fedc_ba98 & m, m]
}

fn shift_counts(size: u32) -> Vec<u64> {
    let b = u64::from(bits(size));
    let mut c = vec![0, 1, 2, 3, 7, 8, 9, b - 1, b, b + 1, 31, 32, 33, 63, 64, 65, 255];
    c.sort_unstable();
    c.dedup();
    c
}

fn shift() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Rol", "Ror", "Rcl", "Rcr", "Shl", "Shr", "Sar"] {
        for size in [1u32, 2, 4, 8] {
            let b = bits(size);
            let by_cl = code(&format!("{op}_rm{b}_CL"));
            let by_1 = code(&format!("{op}_rm{b}_1"));
            let by_imm = code(&format!("{op}_rm{b}_imm8"));
            for (ia, &a) in shift_values(size).iter().enumerate() {
                for cf in [0, CF] {
                    for &n in &shift_counts(size) {
                        let mut k = base("shift", format!("{op}{b}/cl{n}-{ia}-cf{cf}"));
                        k.gprs[RAX] = with_garbage(a, size);
                        k.gprs[RCX] = 0x1234_5600 | n;
                        k.rflags = 0x202 | cf | if cf == 0 { OF | AF } else { ZF | PF };
                        k.insns = vec![insn(by_cl, &[reg(Register::RAX, size), Opnd::Reg(Register::CL)])];
                        v.push(k);
                    }
                    let mut k = base("shift", format!("{op}{b}/one-{ia}-cf{cf}"));
                    k.gprs[RAX] = with_garbage(a, size);
                    k.rflags = 0x202 | cf;
                    k.insns = vec![insn(by_1, &[reg(Register::RAX, size), Opnd::Imm(1)])];
                    v.push(k);
                    for n in [0i64, 1, 5, i64::from(b) - 1, 200] {
                        let mut k = base("shift", format!("{op}{b}/imm{n}-{ia}-cf{cf}"));
                        k.gprs[RAX] = with_garbage(a, size);
                        k.rflags = 0x202 | cf | OF;
                        k.insns = vec![insn(by_imm, &[reg(Register::RAX, size), Opnd::Imm(n)])];
                        v.push(k);
                    }
                }
            }
        }
    }
    v
}

fn shiftd() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Shld", "Shrd"] {
        for size in [2u32, 4, 8] {
            let b = bits(size);
            let by_cl = code(&format!("{op}_rm{b}_r{b}_CL"));
            let by_imm = code(&format!("{op}_rm{b}_r{b}_imm8"));
            for (ia, &a) in shift_values(size).iter().enumerate() {
                for &n in &shift_counts(size) {
                    let mut k = base("shiftd", format!("{op}{b}/cl{n}-{ia}"));
                    k.gprs[RAX] = with_garbage(a, size);
                    k.gprs[RDX] = with_garbage(0x8421_0fed_cba9_8765, size);
                    k.gprs[RCX] = n;
                    k.rflags = 0x202 | CF | OF;
                    k.insns = vec![insn(
                        by_cl,
                        &[reg(Register::RAX, size), reg(Register::RDX, size), Opnd::Reg(Register::CL)],
                    )];
                    v.push(k);
                }
                for n in [1i64, 4, i64::from(b) - 1, 40] {
                    let mut k = base("shiftd", format!("{op}{b}/imm{n}-{ia}"));
                    k.gprs[RAX] = with_garbage(a, size);
                    k.gprs[RDX] = with_garbage(0x0123_4567_89ab_cdef, size);
                    k.insns = vec![insn(
                        by_imm,
                        &[reg(Register::RAX, size), reg(Register::RDX, size), Opnd::Imm(n)],
                    )];
                    v.push(k);
                }
            }
        }
    }
    v
}

fn muldiv() -> Vec<Case> {
    let mut v = Vec::new();
    for size in [1u32, 2, 4, 8] {
        let b = bits(size);
        for op in ["Mul", "Imul"] {
            let c = code(&format!("{op}_rm{b}"));
            for (ia, &a) in edges(size).iter().enumerate() {
                for (ib, &bv) in edges(size).iter().enumerate() {
                    // Two sets of incoming flags, to tell "left unchanged" from "computed".
                    for (fi, fl) in [ZF | PF | AF, SF | CF | OF].into_iter().enumerate() {
                        let name = if fi == 0 {
                            format!("{op}{b}/{ia}-{ib}")
                        } else {
                            format!("{op}{b}/{ia}-{ib}-f{fi}")
                        };
                        let mut k = base("muldiv", name);
                        k.gprs[RAX] = with_garbage(a, size);
                        k.gprs[RCX] = with_garbage(bv, size);
                        k.gprs[RDX] = 0x5a5a_5a5a_5a5a_5a5a;
                        k.rflags = 0x202 | fl;
                        k.insns = vec![insn(c, &[reg(Register::RCX, size)])];
                        v.push(k);
                    }
                }
            }
        }
        if size >= 2 {
            let c2 = code(&format!("Imul_r{b}_rm{b}"));
            let c3 = code(&format!("Imul_r{b}_rm{b}_imm8"));
            for (ia, &a) in edges(size).iter().enumerate() {
                for (ib, &bv) in edges(size).iter().enumerate() {
                    let mut k = base("muldiv", format!("Imul2_{b}/{ia}-{ib}"));
                    k.gprs[RAX] = with_garbage(a, size);
                    k.gprs[RCX] = with_garbage(bv, size);
                    k.insns = vec![insn(c2, &[reg(Register::RAX, size), reg(Register::RCX, size)])];
                    v.push(k);
                }
                for imm in [-128i64, -1, 0, 1, 3, 127] {
                    let mut k = base("muldiv", format!("Imul3_{b}/{ia}-{imm}"));
                    k.gprs[RCX] = with_garbage(a, size);
                    k.insns =
                        vec![insn(c3, &[reg(Register::RAX, size), reg(Register::RCX, size), Opnd::Imm(imm)])];
                    v.push(k);
                }
            }
        }
        // Division: (high, low, divisor) triples including #DE (zero divisor, quotient overflow).
        let m = mask(size);
        let smin = 1u64 << (b - 1);
        let triples = [
            (0, 100, 7),
            (0, 0, 1),
            (0, m, 1),
            (0, m, m),
            (0, 5, 0),
            (1, 0, 1),
            (1, 0, 2),
            (m, m, m),
            (m, m.wrapping_sub(6), 3),
            (0, smin, m),
            (m, smin, m),
            (0, smin - 1, m),
            (smin - 1, m, m),
            (3, 0x1234 & m, 0x11 & m),
            (m, 1, 2),
        ];
        for op in ["Div", "Idiv"] {
            let c = code(&format!("{op}_rm{b}"));
            for (i, &(hi, lo, d)) in triples.iter().enumerate() {
                for (fi, fl) in [CF | SF, ZF | PF | AF | OF].into_iter().enumerate() {
                    let name = if fi == 0 { format!("{op}{b}/{i}") } else { format!("{op}{b}/{i}-f{fi}") };
                    let mut k = base("muldiv", name);
                    if size == 1 {
                        k.gprs[RAX] = 0xdead_beef_cafe_0000 | ((hi & 0xff) << 8) | (lo & 0xff);
                    } else {
                        k.gprs[RAX] = with_garbage(lo, size);
                        k.gprs[RDX] = with_garbage(hi, size);
                    }
                    k.gprs[RCX] = with_garbage(d, size);
                    k.rflags = 0x202 | fl;
                    k.insns = vec![insn(c, &[reg(Register::RCX, size)])];
                    v.push(k);
                }
            }
        }
    }
    v
}

fn bit() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Bt", "Bts", "Btr", "Btc"] {
        for size in [2u32, 4, 8] {
            let b = bits(size);
            let rr = code(&format!("{op}_rm{b}_r{b}"));
            let ri = code(&format!("{op}_rm{b}_imm8"));
            for off in [0u64, 1, 7, 15, 16, 31, 32, 63, 64, 100, 0xffff_ffff_ffff_ffff, 0xffff_ffff_ffff_ffc1]
            {
                let mut k = base("bit", format!("{op}{b}/reg{off:#x}"));
                k.gprs[RAX] = 0x8000_0000_5555_aaaa;
                k.gprs[RCX] = off;
                k.rflags = 0x202 | OF | SF | ZF | AF | PF;
                k.insns = vec![insn(rr, &[reg(Register::RAX, size), reg(Register::RCX, size)])];
                v.push(k);
                // Memory form with a register bit offset: the offset addresses beyond the operand.
                let mut k = base("bit", format!("{op}{b}/mem{off:#x}"));
                k.gprs[RCX] =
                    off & 0x3fff | if off > 0x8000_0000_0000_0000 { 0xffff_ffff_ffff_c000 } else { 0 };
                k.insns = vec![insn(
                    rr,
                    &[Opnd::Mem(MemoryOperand::with_base_displ(Register::RBX, 0)), reg(Register::RCX, size)],
                )];
                v.push(k);
                let mut k = base("bit", format!("{op}{b}/imm{off:#x}"));
                k.gprs[RAX] = 0x8000_0000_5555_aaaa;
                k.insns = vec![insn(ri, &[reg(Register::RAX, size), Opnd::Imm((off & 0xff) as i64)])];
                v.push(k);
            }
        }
    }
    for op in ["Bsf", "Bsr"] {
        for size in [2u32, 4, 8] {
            let b = bits(size);
            let c = code(&format!("{op}_r{b}_rm{b}"));
            for (ia, a) in [
                0u64,
                1,
                2,
                0x80,
                0x8000,
                0x8000_0000,
                0x8000_0000_0000_0000,
                0x0001_0000_0100_1000,
                0xffff_ffff_ffff_ffff,
            ]
            .iter()
            .enumerate()
            {
                let mut k = base("bit", format!("{op}{b}/{ia}"));
                k.gprs[RAX] = 0x1122_3344_5566_7788;
                k.gprs[RCX] = *a;
                k.rflags = 0x202 | CF | OF | SF | AF | PF;
                k.insns = vec![insn(c, &[reg(Register::RAX, size), reg(Register::RCX, size)])];
                v.push(k);
            }
        }
    }
    v
}

/// POPCNT/LZCNT/TZCNT: present on this host's CPU; krr-emu runs them per its `CpuFeatures`.
fn bitext() -> Vec<Case> {
    let mut v = Vec::new();
    for op in ["Popcnt", "Lzcnt", "Tzcnt"] {
        for size in [2u32, 4, 8] {
            let b = bits(size);
            let c = code(&format!("{op}_r{b}_rm{b}"));
            for (ia, a) in
                [0u64, 1, 0x80, 0x8000, 0x8000_0000, 0x8000_0000_0000_0000, 0x0f0f_0000_ff00_1000, u64::MAX]
                    .iter()
                    .enumerate()
            {
                let mut k = base("bitext", format!("{op}{b}/{ia}"));
                k.gprs[RAX] = 0x1122_3344_5566_7788;
                k.gprs[RCX] = *a;
                k.rflags = 0x202 | CF | OF | SF | AF | PF | ZF;
                k.insns = vec![insn(c, &[reg(Register::RAX, size), reg(Register::RCX, size)])];
                v.push(k);
            }
        }
    }
    v
}

fn string() -> Vec<Case> {
    let mut v = Vec::new();
    // (name, code per size suffix, rep variants)
    let ops: [(&str, &[&str]); 5] = [
        ("Movs", &["", "Rep"]),
        ("Stos", &["", "Rep"]),
        ("Lods", &["", "Rep"]),
        ("Cmps", &["", "Repe", "Repne"]),
        ("Scas", &["", "Repe", "Repne"]),
    ];
    for (op, reps) in ops {
        for (size, sfx) in [(1u32, "b"), (2, "w"), (4, "d"), (8, "q")] {
            for rep in reps.iter() {
                for df in [0, DF] {
                    for count in [0u64, 1, 7] {
                        let mut k = base("string", format!("{rep}{op}{sfx}/df{}-n{count}", df >> 10));
                        // Sources and destinations in the middle of the window, equal for 3 elements.
                        k.gprs[RSI] = DATA_BASE + 0x1800;
                        k.gprs[RDI] = DATA_BASE + 0x2800;
                        k.gprs[RCX] = count;
                        k.gprs[RAX] = 0x4142_4344_4546_4748;
                        let s = size as usize;
                        for i in 0..(12 * s) {
                            let j = i as i64 * if df != 0 { -1 } else { 1 };
                            let src = (0x1800 + j) as usize;
                            let dst = (0x2800 + j) as usize;
                            k.mem[src] = 0x41 + (i % 8) as u8;
                            k.mem[dst] = if i < 3 * s { k.mem[src] } else { 0x30 };
                        }
                        // scas compares against rax: make the first element equal to it.
                        k.mem[0x2800..0x2800 + s].copy_from_slice(&k.gprs[RAX].to_le_bytes()[..s]);
                        k.rflags = 0x202 | df | ZF;
                        k.insns = vec![string_insn(op, rep, size)];
                        v.push(k);
                    }
                }
            }
        }
    }
    // A REP MOVSB running into the guard page: #PF with RCX/RSI/RDI showing the progress made.
    let mut k = base("string", "rep-movsb-into-guard".into());
    k.gprs[RSI] = DATA_BASE + 0x100;
    k.gprs[RDI] = DATA_BASE + 0x3ff0;
    k.gprs[RCX] = 0x40;
    k.insns = vec![string_insn("Movs", "Rep", 1)];
    v.push(k);
    let mut k = base("string", "rep-stosq-from-ro".into());
    k.gprs[RDI] = RO_PAGE - 0x20;
    k.gprs[RCX] = 0x10;
    k.insns = vec![string_insn("Stos", "Rep", 8)];
    v.push(k);
    // Overlapping forward copies (destination a little above the source): element semantics
    // repeat the pattern; distances below and above the element size.
    for (size, sfx) in [(1u32, "b"), (8, "q")] {
        for dist in [1u64, 3, 5, 8, 13, 100] {
            let mut k = base("string", format!("rep-movs{sfx}-overlap-{dist}"));
            k.gprs[RSI] = DATA_BASE + 0x1800;
            k.gprs[RDI] = DATA_BASE + 0x1800 + dist;
            k.gprs[RCX] = 300 / u64::from(size);
            k.insns = vec![string_insn("Movs", "Rep", size)];
            v.push(k);
        }
    }
    v
}

/// Encodes a string instruction by hand (prefix + opcode): iced's `with` needs explicit operands.
fn string_insn(op: &str, rep: &str, size: u32) -> Vec<u8> {
    let mut b = Vec::new();
    match rep {
        "Rep" | "Repe" => b.push(0xf3),
        "Repne" => b.push(0xf2),
        _ => {}
    }
    if size == 2 {
        b.push(0x66);
    }
    if size == 8 {
        b.push(0x48);
    }
    let byte_op: u8 = match op {
        "Movs" => 0xa4,
        "Cmps" => 0xa6,
        "Stos" => 0xaa,
        "Lods" => 0xac,
        _ => 0xae, // Scas
    };
    b.push(if size == 1 { byte_op } else { byte_op + 1 });
    b
}

/// Flag combinations for condition codes.
const FLAG_COMBOS: [u64; 12] =
    [0, CF, ZF, SF, OF, PF, CF | ZF, SF | OF, ZF | SF, ZF | OF, CF | PF | SF, CF | ZF | SF | OF | PF];

const CCS: [&str; 16] =
    ["o", "no", "b", "ae", "e", "ne", "be", "a", "s", "ns", "p", "np", "l", "ge", "le", "g"];

fn cmov_setcc() -> Vec<Case> {
    let mut v = Vec::new();
    for cc in CCS {
        for (i, &fl) in FLAG_COMBOS.iter().enumerate() {
            let mut k = base("cmov_setcc", format!("cmov{cc}/{i}"));
            k.gprs[RAX] = 0xffff_ffff_0000_1111;
            k.gprs[RCX] = 0x2222_3333_4444_5555;
            k.gprs[RDX] = 0xffff_ffff_0000_6666;
            k.rflags = 0x202 | fl;
            k.insns = vec![
                insn(code(&format!("Cmov{cc}_r64_rm64")), &[reg(Register::RAX, 8), reg(Register::RCX, 8)]),
                // 32-bit CMOV zero-extends even when the condition is false.
                insn(code(&format!("Cmov{cc}_r32_rm32")), &[reg(Register::RDX, 4), reg(Register::RCX, 4)]),
                insn(code(&format!("Set{cc}_rm8")), &[reg(Register::RBX, 1)]),
                insn(
                    code(&format!("Set{cc}_rm8")),
                    &[Opnd::Mem(MemoryOperand::with_base_displ(Register::RBX, 0x10))],
                ),
            ];
            k.gprs[RBX] = MEM_PTR;
            // setcc bl changes rbx's low byte, so the memory form goes first.
            k.insns.swap(2, 3);
            v.push(k);
        }
    }
    v
}

fn jcc() -> Vec<Case> {
    let mut v = Vec::new();
    for (ci, _) in CCS.iter().enumerate() {
        for (i, &fl) in FLAG_COMBOS.iter().enumerate().step_by(2) {
            let mut k = base("jcc", format!("j{}/{i}", CCS[ci]));
            k.rflags = 0x202 | fl;
            // jcc +3 over `mov eax, 1` (5 bytes short form: 0x70+cc, rel8 = 5); then `inc ecx`.
            k.insns = vec![vec![0x70 + ci as u8, 5], vec![0xb8, 1, 0, 0, 0], vec![0xff, 0xc1]];
            v.push(k);
            let mut k = base("jcc", format!("j{}-near/{i}", CCS[ci]));
            k.rflags = 0x202 | fl;
            k.insns = vec![vec![0x0f, 0x80 + ci as u8, 5, 0, 0, 0], vec![0xb8, 1, 0, 0, 0], vec![0xff, 0xc1]];
            v.push(k);
        }
    }
    // loop/loope/loopne/jrcxz with a few counts: forward targets only (the loop body is unrolled).
    for (name, op) in [("loop", 0xe2u8), ("loope", 0xe1), ("loopne", 0xe0), ("jrcxz", 0xe3)] {
        for count in [0u64, 1, 2, 0x1_0000_0000] {
            for fl in [0, ZF] {
                let mut k = base("jcc", format!("{name}/rcx{count:#x}-zf{}", fl >> 6));
                k.gprs[RCX] = count;
                k.rflags = 0x202 | fl;
                k.insns = vec![vec![op, 5], vec![0xb8, 1, 0, 0, 0], vec![0xff, 0xc2]];
                v.push(k);
            }
        }
    }
    // Backward loop: count down rcx from 5 (dec edx; loop back).
    let mut k = base("jcc", "loop-back".into());
    k.gprs[RCX] = 5;
    k.insns = vec![vec![0xff, 0xca], vec![0xe2, 0xfc]];
    v.push(k);
    // Indirect jumps: jmp rax (to the next instruction) and jmp [rbx].
    let mut k = base("jcc", "jmp-reg".into());
    k.gprs[RAX] = crate::layout::CODE_BASE + 2 + 5;
    k.insns = vec![vec![0xff, 0xe0], vec![0xb9, 9, 0, 0, 0], vec![0xff, 0xc2]];
    v.push(k);
    let mut k = base("jcc", "jmp-mem".into());
    let tgt = crate::layout::CODE_BASE + 2 + 5;
    k.mem[0x1000..0x1008].copy_from_slice(&tgt.to_le_bytes());
    k.insns = vec![vec![0xff, 0x23], vec![0xb9, 9, 0, 0, 0], vec![0xff, 0xc2]];
    v.push(k);
    v
}

fn stack() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: &str, insns: Vec<Vec<u8>>, setup: &dyn Fn(&mut Case)| {
        let mut k = base("stack", name.to_string());
        k.gprs[RAX] = 0x1122_3344_5566_7788;
        k.gprs[RCX] = 0x99aa_bbcc_ddee_ff00;
        setup(&mut k);
        k.insns = insns;
        v.push(k);
    };
    let none = |_: &mut Case| {};
    add(
        "push-pop",
        asm(|a| {
            a.push(rax)?;
            a.push(rcx)?;
            a.pop(rdx)?;
            a.pop(rsi)?;
            a.push(ax)?;
            a.pop(di)
        }),
        &none,
    );
    add(
        "push-imm",
        asm(|a| {
            a.push(-5i32)?;
            a.push(0x1234_5678i32)?;
            a.pop(rdx)?;
            a.pop(rsi)
        }),
        &none,
    );
    add(
        "push-pop-mem",
        asm(|a| {
            a.push(qword_ptr(rbx + 8))?;
            a.pop(qword_ptr(rbx + 0x20))?;
            a.push(word_ptr(rbx + 3))?;
            a.pop(word_ptr(rbx + 0x31))
        }),
        &none,
    );
    add(
        "pop-rsp",
        asm(|a| {
            a.push(rax)?;
            a.pop(rsp)
        }),
        &|k| k.gprs[RAX] = DATA_BASE + 0x2000,
    );
    add(
        "push-rsp",
        asm(|a| {
            a.push(rsp)?;
            a.pop(rax)
        }),
        &none,
    );
    add(
        "pop-mem-rsp-relative",
        asm(|a| {
            a.push(rax)?;
            a.push(rcx)?;
            a.pop(qword_ptr(rsp))
        }),
        &none,
    );
    add(
        "call-ret",
        asm(|a| {
            let mut f = a.create_label();
            let mut end = a.create_label();
            a.call(f)?;
            a.jmp(end)?;
            a.set_label(&mut f)?;
            a.mov(rdx, rsp)?;
            a.ret()?;
            a.set_label(&mut end)?;
            a.nop()
        }),
        &none,
    );
    add(
        "call-ret-imm",
        asm(|a| {
            let mut f = a.create_label();
            let mut end = a.create_label();
            a.push(rax)?;
            a.push(rax)?;
            a.call(f)?;
            a.jmp(end)?;
            a.set_label(&mut f)?;
            a.ret_1(16)?;
            a.set_label(&mut end)?;
            a.nop()
        }),
        &none,
    );
    add(
        "call-reg",
        asm(|a| {
            a.call(rax)?;
            a.nop()
        }),
        &|k| k.gprs[RAX] = crate::layout::CODE_BASE + 2,
    );
    add(
        "call-mem",
        asm(|a| {
            a.call(qword_ptr(rbx))?;
            a.nop()
        }),
        &|k| {
            let t = crate::layout::CODE_BASE + 2;
            k.mem[0x1000..0x1008].copy_from_slice(&t.to_le_bytes());
        },
    );
    for level in [0u32, 1, 2, 5] {
        add(
            &format!("enter-leave-{level}"),
            asm(|a| {
                a.enter(0x20u32, level)?;
                a.mov(qword_ptr(rbp - 8), rax)?;
                a.mov(rdx, rsp)?;
                a.leave()
            }),
            &|k| k.gprs[crate::case::RBP] = DATA_BASE + 0x3900,
        );
    }
    for fl in [0x202u64, 0x2d7 | 0x400, 0x242 | 0x800, 0x40202, 0x200202] {
        add(
            &format!("popf-{fl:#x}"),
            asm(|a| {
                a.push(rax)?;
                a.popfq()?;
                a.pushfq()?;
                a.pop(rdx)
            }),
            &|k| k.gprs[RAX] = fl,
        );
    }
    add(
        "pushf-popf-16",
        asm(|a| {
            a.pushf()?;
            a.pop(dx)?;
            a.push(ax)?;
            a.popf()
        }),
        &|k| k.gprs[RAX] = 0x08d5,
    );
    add(
        "stack-underflow-guard",
        asm(|a| {
            a.mov(rsp, rax)?;
            a.pop(rcx)
        }),
        &|k| k.gprs[RAX] = DATA_BASE + 0x4000,
    );
    add(
        "push-into-guard",
        asm(|a| {
            a.mov(rsp, rax)?;
            a.push(rcx)
        }),
        &|k| k.gprs[RAX] = DATA_BASE,
    );
    v
}

fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<Vec<u8>> {
    gen::asm(f)
}

fn xchg() -> Vec<Case> {
    let mut v = Vec::new();
    for size in [1u32, 2, 4, 8] {
        let b = bits(size);
        for op in ["Xchg", "Xadd", "Cmpxchg"] {
            for (form, mem_dst) in [("reg", false), ("mem", true)] {
                for equal in [false, true] {
                    if op != "Cmpxchg" && equal {
                        continue;
                    }
                    let mut k = base("xchg", format!("{op}{b}/{form}-eq{}", u8::from(equal)));
                    k.gprs[RAX] = with_garbage(0x8899_aabb_ccdd_eeff, size);
                    k.gprs[RCX] = with_garbage(0x7766_5544_3322_1100, size);
                    k.gprs[RDX] =
                        with_garbage(if equal { 0x8899_aabb_ccdd_eeff } else { 0x0102_0304_0506_0708 }, size);
                    if equal {
                        k.mem[0x1000..0x1008].copy_from_slice(&k.gprs[RAX].to_le_bytes());
                    }
                    let c = code(&format!("{op}_rm{b}_r{b}"));
                    let dst = if mem_dst {
                        Opnd::Mem(MemoryOperand::with_base_displ(Register::RBX, 0))
                    } else {
                        reg(Register::RDX, size)
                    };
                    let mut bytes = insn(c, &[dst, reg(Register::RCX, size)]);
                    if mem_dst && op != "Xchg" {
                        bytes.insert(0, 0xf0); // LOCK
                    }
                    k.insns = vec![bytes];
                    v.push(k);
                }
            }
        }
    }
    for (name, wide) in [("cmpxchg8b", false), ("cmpxchg16b", true)] {
        for equal in [false, true] {
            for misalign in [false, true] {
                if misalign && !wide {
                    continue;
                }
                let mut k = base("xchg", format!("{name}/eq{}-mis{}", u8::from(equal), u8::from(misalign)));
                k.gprs[RAX] = 0x1111_1111_2222_2222;
                k.gprs[RDX] = 0x3333_3333_4444_4444;
                k.gprs[RBX] = 0x5555_5555_6666_6666;
                k.gprs[RCX] = 0x7777_7777_8888_8888;
                k.gprs[RDI] = DATA_BASE + 0x1000 + u64::from(misalign) * 8;
                if equal {
                    let off = 0x1000 + usize::from(misalign) * 8;
                    if wide {
                        k.mem[off..off + 8].copy_from_slice(&k.gprs[RAX].to_le_bytes());
                        k.mem[off + 8..off + 16].copy_from_slice(&k.gprs[RDX].to_le_bytes());
                    } else {
                        k.mem[off..off + 4].copy_from_slice(&(k.gprs[RAX] as u32).to_le_bytes());
                        k.mem[off + 4..off + 8].copy_from_slice(&(k.gprs[RDX] as u32).to_le_bytes());
                    }
                }
                // lock cmpxchg8b [rdi] / lock cmpxchg16b [rdi]
                k.insns = vec![if wide {
                    vec![0xf0, 0x48, 0x0f, 0xc7, 0x0f]
                } else {
                    vec![0xf0, 0x0f, 0xc7, 0x0f]
                }];
                v.push(k);
            }
        }
    }
    v
}

fn misc() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: &str, insns: Vec<Vec<u8>>, rax_v: u64, fl: u64| {
        let mut k = base("misc", name.to_string());
        k.gprs[RAX] = rax_v;
        k.gprs[RCX] = 0x8081_8283_8485_8687;
        k.gprs[RDX] = 0xfedc_ba98_7654_3210;
        k.gprs[RSI] = 3;
        k.rflags = 0x202 | fl;
        k.insns = insns;
        v.push(k);
    };
    for (i, x) in [0u64, 0x80, 0x8000, 0x8000_0000, 0x7fff_ffff, 0x1234_5678_9abc_def0].iter().enumerate() {
        add(
            &format!("bswap/{i}"),
            asm(|a| {
                a.bswap(rax)?;
                a.bswap(edx)
            }),
            *x,
            0,
        );
        add(
            &format!("movsx-movzx/{i}"),
            asm(|a| {
                a.movsx(rdx, al)?;
                a.movsx(edi, ax)?;
                a.movsxd(rsi, eax)?;
                a.movzx(r8, al)?;
                a.movzx(r9d, ax)?;
                a.movsx(r10w, al)?;
                a.movzx(r11w, byte_ptr(rbx + 1))?;
                a.movsx(r12, word_ptr(rbx + 3))?;
                a.movsxd(r13, dword_ptr(rbx + 5))
            }),
            *x | 0x5500_0000_0000_0000,
            0,
        );
        add(
            &format!("convert/{i}"),
            asm(|a| {
                a.mov(rdx, rax)?;
                a.cbw()?;
                a.mov(r8, rax)?;
                a.mov(rax, rdx)?;
                a.cwde()?;
                a.mov(r9, rax)?;
                a.mov(rax, rdx)?;
                a.cdqe()?;
                a.mov(r10, rax)?;
                a.mov(rax, rdx)?;
                a.cwd()?;
                a.mov(r11, rdx)?;
                a.cdq()?;
                a.mov(r12, rdx)?;
                a.cqo()
            }),
            *x,
            0,
        );
    }
    add(
        "lea",
        asm(|a| {
            a.lea(rax, ptr(rbx + rcx * 4 + 0x10))?;
            a.lea(edx, ptr(rbx + rcx * 8 - 1))?;
            a.lea(si, ptr(rbx + rsi * 2 + 0x7fff))?;
            a.lea(rdi, ptr(0x1234i64))?;
            a.lea(r8, ptr(rcx + rcx * 2))?;
            a.lea(r9d, ptr(ecx + edx * 2 + 5))
        }),
        0,
        0,
    );
    for fl in [0u64, 0xd5, CF | ZF, SF | AF | PF] {
        add(
            &format!("lahf-sahf/{fl:#x}"),
            asm(|a| {
                a.lahf()?;
                a.mov(dl, ah)?;
                a.mov(ah, 0xd5u32 ^ 0x10)?;
                a.sahf()
            }),
            0x1234,
            fl,
        );
        add(
            &format!("flagops/{fl:#x}"),
            asm(|a| {
                a.cmc()?;
                a.setc(dl)?;
                a.stc()?;
                a.setc(dh)?;
                a.clc()?;
                a.std()?;
                a.pushfq()?;
                a.cld()?;
                a.pop(rsi)
            }),
            0,
            fl,
        );
    }
    add("xlat", asm(|a| a.xlatb()), 0x1234_5678_9abc_de05, 0);
    add(
        "nops",
        asm(|a| {
            a.nop()?;
            a.db(&[0x0f, 0x1f, 0x44, 0x00, 0x00])?;
            a.db(&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0])?;
            a.pause()?;
            a.lfence()?;
            a.mfence()?;
            a.sfence()
        }),
        0,
        0,
    );
    add(
        "mov-forms",
        asm(|a| {
            a.mov(rax, 0x1122_3344_5566_7788u64)?;
            a.mov(eax, 0xffff_ffffu32)?;
            a.mov(ax, 0x1234)?;
            a.mov(al, 0x56)?;
            a.mov(ah, 0x78)?;
            a.mov(ecx, edx)?;
            a.mov(cx, dx)?;
            a.mov(cl, dh)?;
            a.mov(qword_ptr(rbx), -2i32)?;
            a.mov(dword_ptr(rbx + 8), eax)?;
            a.mov(byte_ptr(rbx + 15), ah)?;
            a.mov(rsi, qword_ptr(rbx + 4))
        }),
        0,
        0,
    );
    add(
        "seg-override",
        asm(|a| {
            a.mov(rax, qword_ptr(0).fs())?;
            a.mov(rcx, qword_ptr(8).gs())?;
            a.mov(qword_ptr(0x10).fs(), rdx)
        }),
        0,
        0,
    );
    add(
        "movabs",
        vec![vec![0x48, 0xa1, 0x08, 0x10, 0x20, 0, 0, 0, 0, 0], vec![0xa2, 0x20, 0x10, 0x20, 0, 0, 0, 0, 0]],
        0,
        0,
    );
    add(
        "xchg-eax-eax-zero-extends",
        vec![vec![0x87, 0xc0], vec![0x90], vec![0x48, 0x87, 0xd1]],
        0xffff_ffff_1234_5678,
        0,
    );
    add("xchg-eax-ecx-short", vec![vec![0x91], vec![0x66, 0x92]], 0xffff_ffff_1234_5678, 0);
    add(
        "user-cache-ops",
        asm(|a| {
            a.clflush(byte_ptr(rbx))?;
            a.prefetchnta(byte_ptr(rbx + 0x40))?;
            a.prefetcht0(byte_ptr(rbx + 0x80))?;
            a.movnti(qword_ptr(rbx + 0x10), rcx)?;
            a.sfence()
        }),
        0,
        0,
    );
    add("fs-string", vec![vec![0x64, 0xf3, 0xa4]], 0, 0);
    add(
        "mov-imm-zero-extend",
        asm(|a| {
            a.mov(ecx, -1i32)?;
            a.mov(edx, 0x8000_0000u32)?;
            a.add(esi, 0)?;
            a.or(di, 0)
        }),
        0,
        0,
    );
    add(
        "addr32",
        asm(|a| {
            a.mov(eax, dword_ptr(ebx))?;
            a.lea(ecx, ptr(ebx + 0x10))
        }),
        0,
        0,
    );
    v
}

fn sse() -> Vec<Case> {
    let mut v = Vec::new();
    // Every SSE form of the random generator, with random operands (deterministic).
    let mut rng = Rng::new(0x55e);
    for form in FORMS.iter().filter(|f| f.is_sse()) {
        for i in 0..16 {
            let mut k = base("sse", format!("{:?}/{i}", form.code));
            gen::random_state(&mut rng, &mut k);
            let mut one = || gen::random_instruction(&mut rng, form);
            k.insns = vec![one().unwrap_or_else(|e| panic!("corpus: {e}"))];
            v.push(k);
        }
    }
    // glibc-style idioms: strlen and memchr inner steps.
    for (i, s) in
        [&b"hello, world\0xxxx"[..], b"\0", b"0123456789abcdefgh\0", b"abcdefghijklmnop"].iter().enumerate()
    {
        let mut k = base("sse", format!("strlen-step/{i}"));
        k.gprs[RDI] = DATA_BASE + 0x1000;
        k.mem[0x1000..0x1020].fill(b'z');
        k.mem[0x1000..0x1000 + s.len()].copy_from_slice(s);
        k.insns = asm(|a| {
            a.pxor(xmm0, xmm0)?;
            a.movdqu(xmm1, xmmword_ptr(rdi))?;
            a.pcmpeqb(xmm1, xmm0)?;
            a.pmovmskb(eax, xmm1)?;
            a.bsf(eax, eax)?;
            a.movdqa(xmm2, xmmword_ptr(rdi))?;
            a.pminub(xmm2, xmmword_ptr(rdi + 16))?;
            a.pcmpeqb(xmm2, xmm0)?;
            a.pmovmskb(ecx, xmm2)
        });
        v.push(k);
        let mut k = base("sse", format!("memchr-step/{i}"));
        k.gprs[RDI] = DATA_BASE + 0x1000;
        k.gprs[RSI] = u64::from(b'l');
        k.mem[0x1000..0x1000 + s.len()].copy_from_slice(s);
        k.insns = asm(|a| {
            a.movd(xmm1, esi)?;
            a.punpcklbw(xmm1, xmm1)?;
            a.punpcklwd(xmm1, xmm1)?;
            a.pshufd(xmm1, xmm1, 0)?;
            a.movdqu(xmm0, xmmword_ptr(rdi))?;
            a.pcmpeqb(xmm0, xmm1)?;
            a.pmovmskb(eax, xmm0)?;
            a.movq(rdx, xmm1)?;
            a.pslldq(xmm0, 3)?;
            a.psrldq(xmm1, 5)
        });
        v.push(k);
    }
    let mut k = base("sse", "mxcsr".into());
    k.mxcsr = 0x9fc0;
    k.insns = asm(|a| {
        a.stmxcsr(dword_ptr(rbx))?;
        a.mov(dword_ptr(rbx + 4), 0x1f80 | 0x6000)?;
        a.ldmxcsr(dword_ptr(rbx + 4))?;
        a.stmxcsr(dword_ptr(rbx + 8))
    });
    v.push(k);
    let mut k = base("sse", "ldmxcsr-reserved".into());
    k.insns = asm(|a| {
        a.mov(dword_ptr(rbx + 4), 0x1_0000)?;
        a.ldmxcsr(dword_ptr(rbx + 4))
    });
    v.push(k);
    v
}

fn x87() -> Vec<Case> {
    let mut v = Vec::new();
    let mut k = base("x87", "load-store".into());
    k.mem[0x1000..0x1008].copy_from_slice(&1.5f64.to_bits().to_le_bytes());
    k.mem[0x1008..0x100c].copy_from_slice(&(-3i32).to_le_bytes());
    k.insns = asm(|a| {
        a.fninit()?;
        a.fld1()?;
        a.fldz()?;
        a.fld(qword_ptr(rbx))?;
        a.fild(dword_ptr(rbx + 8))?;
        a.fstp(qword_ptr(rbx + 0x10))?;
        a.fistp(dword_ptr(rbx + 0x18))?;
        a.fstp(tword_ptr(rbx + 0x20))?;
        a.fnstcw(word_ptr(rbx + 0x30))?;
        a.fnstsw(ax)
    });
    v.push(k);
    for (i, (f, int)) in [(2.5f64, 7i32), (-0.5, -1), (1e300, i32::MIN), (f64::NAN, 12345)].iter().enumerate()
    {
        let mut k = base("x87", format!("sizes/{i}"));
        k.mem[0x1000..0x1008].copy_from_slice(&f.to_bits().to_le_bytes());
        k.mem[0x1008..0x100c].copy_from_slice(&int.to_le_bytes());
        k.mem[0x100c..0x1010].copy_from_slice(&(*f as f32).to_bits().to_le_bytes());
        k.insns = asm(|a| {
            a.fninit()?;
            a.fld(qword_ptr(rbx))?;
            a.fst(dword_ptr(rbx + 0x10))?;
            a.fld(dword_ptr(rbx + 0xc))?;
            a.fxch(st0, st1)?;
            a.fild(dword_ptr(rbx + 8))?;
            a.fist(word_ptr(rbx + 0x14))?;
            a.fistp(qword_ptr(rbx + 0x18))?;
            a.fistp(dword_ptr(rbx + 0x20))?;
            a.fld(st0)?;
            a.fstp(qword_ptr(rbx + 0x28))?;
            a.fnstsw(word_ptr(rbx + 0x30))
        });
        v.push(k);
    }
    for rc in [0u16, 1, 2, 3] {
        let mut k = base("x87", format!("rounding/{rc}"));
        k.mem[0x1000..0x1008].copy_from_slice(&(-2.5f64).to_bits().to_le_bytes());
        k.mem[0x1008..0x100a].copy_from_slice(&(0x037f | (rc << 10)).to_le_bytes());
        k.insns = asm(|a| {
            a.fninit()?;
            a.fldcw(word_ptr(rbx + 8))?;
            a.fld(qword_ptr(rbx))?;
            a.fistp(dword_ptr(rbx + 0x10))?;
            a.fld1()?;
            a.fldz()?;
            a.fstp(st1)
        });
        v.push(k);
    }
    let mut k = base("x87", "stack-overflow-tags".into());
    k.insns = asm(|a| {
        a.fninit()?;
        for _ in 0..9 {
            a.fld1()?;
        }
        a.fnstsw(ax)?;
        a.fnclex()?;
        a.emms()
    });
    v.push(k);
    let mut k = base("x87", "fxsave-fxrstor".into());
    k.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
    k.gprs[RDI] = DATA_BASE + 0x2000;
    k.insns = asm(|a| {
        a.fninit()?;
        a.fld1()?;
        a.fxsave(ptr(rdi))?;
        a.pxor(xmm3, xmm3)?;
        a.fxrstor(ptr(rdi))
    });
    v.push(k);
    v
}

/// 80-bit value from its sign/exponent word and significand.
fn ext80(se: u16, m: u64) -> [u8; 10] {
    let mut v = [0u8; 10];
    v[..8].copy_from_slice(&m.to_le_bytes());
    v[8..].copy_from_slice(&se.to_le_bytes());
    v
}

/// 80-bit value of a double (exact).
fn ext_of(x: f64) -> [u8; 10] {
    let b = x.to_bits();
    let sign = ((b >> 63) as u16) << 15;
    let (e, f) = (((b >> 52) & 0x7ff) as i32, b & ((1 << 52) - 1));
    if x == 0.0 {
        return ext80(sign, 0);
    }
    if e == 0 {
        let lz = f.leading_zeros() as i32;
        return ext80(sign | (16383 - 1022 - (lz - 11)) as u16, f << lz);
    }
    if e == 0x7ff {
        return ext80(sign | 0x7fff, (1 << 63) | (f << 11));
    }
    ext80(sign | (e - 1023 + 16383) as u16, (1 << 63) | (f << 11))
}

/// Edge values of the x87 stores: rounding ties and carries at single, double and integer
/// precision, overflow and underflow boundaries (tininess before/after rounding), extended
/// denormals, pseudo-denormals, unsupported formats, NaNs, infinities, integer limits.
fn x87store_values() -> Vec<[u8; 10]> {
    let mut v: Vec<[u8; 10]> = [
        0.0f64,
        -0.0,
        1.0,
        -1.5,
        2.5,
        -2.5,
        0.5,
        -0.5,
        1.5,
        3.5,
        0.25,
        0.75,
        -0.75,
        1e-5,
        -1e-5,
        0.499_999_999,
        1e300,
        -1e300,
        f64::from(f32::MAX),
        f64::MAX,
        f64::MIN_POSITIVE,
        1e-310,
        -1e-310,
        f64::from(f32::MIN_POSITIVE),
        f64::from(f32::from_bits(1)),
        1.5 * f64::from(f32::from_bits(1)),
        1.0 / 3.0,
        65535.9,
        32767.0,
        32767.5,
        32768.0,
        -32768.0,
        -32768.5,
        -32769.0,
        2147483647.0,
        2147483647.5,
        2147483648.0,
        -2147483648.0,
        -2147483648.5,
        -2147483649.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
    ]
    .iter()
    .map(|&x| ext_of(x))
    .collect();
    v.extend([
        ext80(0x3ffd, 0xaaaa_aaaa_aaaa_aaab),
        ext80(0xbffd, 0xaaaa_aaaa_aaaa_aaab),
        ext80(0x3fff, 0x8000_0000_0000_0400),
        ext80(0x3fff, 0x8000_0000_0000_0c00),
        ext80(0x3fff, 0x8000_0000_0000_0401),
        ext80(0xbfff, 0x8000_0000_0000_03ff),
        ext80(0x3fff, 0x8000_0080_0000_0000),
        ext80(0xbfff, 0x8000_0180_0000_0000),
        ext80(0x3fff, 0x8000_0080_0000_0001),
        ext80(0x3fff, u64::MAX),
        ext80(0xbfff, u64::MAX),
        ext80(0x43fe, u64::MAX),
        ext80(0x43fe, 0xffff_ffff_ffff_f800),
        ext80(0xc3fe, 0xffff_ffff_ffff_fc00),
        ext80(0x407e, u64::MAX),
        ext80(0xc07e, 0xffff_ff80_0000_0000),
        ext80(0x43ff, 1 << 63),
        ext80(0xfffe, 1 << 63),
        ext80(0x407f, 1 << 63),
        ext80(0x3f80, u64::MAX),
        ext80(0xbf80, u64::MAX),
        ext80(0x3f80, 0xffff_ff00_0000_0000),
        ext80(0x3f80, 0xffff_fe00_0000_0000),
        ext80(0x3f80, 0xffff_ff80_0000_0000),
        ext80(0xbf80, 0xffff_ff80_0000_0000),
        ext80(0x3f6a, 1 << 63),
        ext80(0x3f69, 1 << 63),
        ext80(0xbf69, 0xc000_0000_0000_0000),
        ext80(0x3f60, 1 << 63),
        ext80(0x3c00, u64::MAX),
        ext80(0x3c00, 0xffff_ffff_ffff_f800),
        ext80(0x3c00, 0xffff_ffff_ffff_fc00),
        ext80(0xbc00, 0xffff_ffff_ffff_fc00),
        ext80(0x3c00, 0xffff_ffff_ffff_f000),
        ext80(0x3bcd, 1 << 63),
        ext80(0x3bcc, 1 << 63),
        ext80(0xbbcc, 0xc000_0000_0000_0000),
        ext80(0x0001, 1 << 63),
        ext80(0x0000, 1),
        ext80(0x0000, 1 << 63),
        ext80(0x8000, 0x4000_0000_0000_0000),
        ext80(0x7fff, 0xc000_0000_0000_0001),
        ext80(0x7fff, 0x8000_0000_0000_0001),
        ext80(0xffff, 0xa123_4567_89ab_cdef),
        ext80(0xffff, 0xc000_0000_0000_0000),
        ext80(0x7fff, 0x4000_0000_0000_0001),
        ext80(0x7fff, 0),
        ext80(0x3fff, 0x4000_0000_0000_0000),
        ext80(0x3fff, 0),
        ext80(0x403e, 1 << 63),
        ext80(0xc03e, 1 << 63),
        ext80(0xc03e, 0x8000_0000_0000_0001),
        ext80(0x403d, u64::MAX),
        ext80(0xc03d, u64::MAX),
        ext80(0x403d, 0xffff_ffff_ffff_fffe),
        ext80(0x401d, 0xffff_fffe_0000_0000),
        ext80(0x400d, 0xffff_0000_0000_0001),
    ]);
    let mut rng = Rng::new(0x87);
    for k in 0..24 {
        let exp = if k % 2 == 0 { 0x3f00 + rng.below(0x200) } else { 0x3ffe + rng.below(0x42) };
        let sign = if rng.chance(1, 2) { 0x8000 } else { 0 };
        v.push(ext80((exp as u16) | sign, rng.next_u64() | (1 << 63)));
    }
    v
}

/// x87 stores (FST/FSTP m32/m64, FSTP m80, FIST/FISTP/FISTTP) of edge values in every rounding
/// mode; stack underflow of every store form; FLD of SNaNs and denormals.
fn x87store() -> Vec<Case> {
    type Store = fn(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>;
    let forms: [(&str, Store); 10] = [
        ("fst32", |a| a.fst(dword_ptr(rbx + 0x10))),
        ("fstp32", |a| a.fstp(dword_ptr(rbx + 0x10))),
        ("fst64", |a| a.fst(qword_ptr(rbx + 0x10))),
        ("fstp80", |a| a.fstp(tword_ptr(rbx + 0x10))),
        ("fist16", |a| a.fist(word_ptr(rbx + 0x10))),
        ("fistp32", |a| a.fistp(dword_ptr(rbx + 0x10))),
        ("fistp64", |a| a.fistp(qword_ptr(rbx + 0x10))),
        ("fisttp16", |a| a.fisttp(word_ptr(rbx + 0x10))),
        ("fisttp32", |a| a.fisttp(dword_ptr(rbx + 0x10))),
        ("fisttp64", |a| a.fisttp(qword_ptr(rbx + 0x10))),
    ];
    let mut v = Vec::new();
    for (vi, val) in x87store_values().iter().enumerate() {
        for (name, store) in forms {
            let rcs: &[u16] =
                if name == "fstp80" || name.starts_with("fisttp") { &[0] } else { &[0, 1, 2, 3] };
            for &rc in rcs {
                let mut k = base("x87store", format!("{name}/{vi}/rc{rc}"));
                k.mem[0x1000..0x100a].copy_from_slice(val);
                // Precision control single in odd values: it does not apply to stores.
                let pc: u16 = if vi % 2 == 1 { 0 } else { 0x300 };
                k.mem[0x1020..0x1022].copy_from_slice(&(0x7f | pc | (rc << 10)).to_le_bytes());
                k.insns = asm(|a| {
                    a.fninit()?;
                    a.fldcw(word_ptr(rbx + 0x20))?;
                    a.fld(tword_ptr(rbx))?;
                    store(a)?;
                    a.fnstsw(word_ptr(rbx + 0x30))
                });
                v.push(k);
            }
        }
    }
    // Unmasked exceptions: the store aborts or completes, FSW.ES/B, #MF at the FWAIT.
    let unmasks: [(&str, u16); 6] =
        [("im", 0x3e), ("dm", 0x3d), ("om", 0x37), ("um", 0x2f), ("pm", 0x1f), ("all", 0)];
    for (vi, val) in x87store_values().iter().enumerate() {
        for (name, store) in forms {
            for (mname, masks) in unmasks {
                for rc in [0u16, 2] {
                    if rc == 2 && mname != "pm" && mname != "all" {
                        continue;
                    }
                    let mut k = base("x87store", format!("unmasked/{name}/{vi}/{mname}/rc{rc}"));
                    k.mem[0x1000..0x100a].copy_from_slice(val);
                    k.mem[0x1020..0x1022].copy_from_slice(&(0x340 | masks | (rc << 10)).to_le_bytes());
                    k.insns = asm(|a| {
                        a.fninit()?;
                        a.fldcw(word_ptr(rbx + 0x20))?;
                        a.fld(tword_ptr(rbx))?;
                        store(a)?;
                        a.fnstsw(word_ptr(rbx + 0x30))?;
                        a.wait()
                    });
                    v.push(k);
                }
            }
        }
    }
    // Unmasked stack faults and loads; FLDCW unmasking a flag already set.
    let mf_cases: [(&str, Store); 5] = [
        ("overflow", |a| {
            for _ in 0..9 {
                a.fld1()?;
            }
            Ok(())
        }),
        ("underflow-fld-sti", |a| a.fld(st3)),
        ("underflow-fstp", |a| a.fstp(qword_ptr(rbx + 0x10))),
        ("fld32-snan", |a| a.fld(dword_ptr(rbx + 0x40))),
        ("fld64-denormal", |a| a.fld(qword_ptr(rbx + 0x48))),
    ];
    for (name, body) in mf_cases {
        for cw in [0x037eu16, 0x037d, 0x0340] {
            let mut k = base("x87store", format!("unmasked/{name}/{cw:#x}"));
            k.mem[0x1020..0x1022].copy_from_slice(&cw.to_le_bytes());
            k.mem[0x1040..0x1044].copy_from_slice(&0x7f80_0001u32.to_le_bytes());
            k.mem[0x1048..0x1050].copy_from_slice(&1u64.to_le_bytes());
            k.insns = asm(|a| {
                a.fninit()?;
                a.fldcw(word_ptr(rbx + 0x20))?;
                body(a)?;
                a.fnstsw(word_ptr(rbx + 0x30))?;
                a.wait()
            });
            v.push(k);
        }
    }
    let mut k = base("x87store", "unmasked/fldcw-pending".into());
    k.mem[0x1000..0x100a].copy_from_slice(&ext80(0x3ffd, 0xaaaa_aaaa_aaaa_aaab));
    k.mem[0x1020..0x1022].copy_from_slice(&0x035fu16.to_le_bytes());
    k.insns = asm(|a| {
        a.fninit()?;
        a.fld(tword_ptr(rbx))?;
        a.fst(dword_ptr(rbx + 0x10))?;
        a.fldcw(word_ptr(rbx + 0x20))?;
        a.fnstsw(word_ptr(rbx + 0x30))?;
        a.fld1()
    });
    v.push(k);
    let mut k = base("x87store", "unmasked/fnclex-clears".into());
    k.mem[0x1000..0x100a].copy_from_slice(&ext80(0x3ffd, 0xaaaa_aaaa_aaaa_aaab));
    k.mem[0x1020..0x1022].copy_from_slice(&0x035fu16.to_le_bytes());
    k.insns = asm(|a| {
        a.fninit()?;
        a.fldcw(word_ptr(rbx + 0x20))?;
        a.fld(tword_ptr(rbx))?;
        a.fst(dword_ptr(rbx + 0x10))?;
        a.fnstsw(word_ptr(rbx + 0x30))?;
        a.fnclex()?;
        a.wait()?;
        a.fld1()
    });
    v.push(k);
    // Stack underflow: every store form, FST/FSTP ST(i), FLD ST(i) of an empty register.
    for (name, store) in forms {
        let mut k = base("x87store", format!("underflow/{name}"));
        k.insns = asm(|a| {
            a.fninit()?;
            a.fld1()?;
            a.ffree(st0)?;
            store(a)?;
            a.fnstsw(word_ptr(rbx + 0x30))
        });
        v.push(k);
    }
    let mut k = base("x87store", "underflow/fst-sti".into());
    k.insns = asm(|a| {
        a.fninit()?;
        a.fld1()?;
        a.fincstp()?;
        a.fst(st2)?;
        a.fstp(st1)?;
        a.fld(st5)?;
        a.fnstsw(word_ptr(rbx + 0x30))
    });
    v.push(k);
    // FLD m32/m64 of NaNs, denormals and ordinary values: IE/DE and quieting.
    let singles =
        [0x7f80_0001u32, 0xffa0_0000, 0x7fc0_0001, 0x0000_0001, 0x8040_0000, 0x3f80_0000, 0x7f80_0000];
    for (j, s) in singles.iter().enumerate() {
        let mut k = base("x87store", format!("fld32/{j}"));
        k.mem[0x1000..0x1004].copy_from_slice(&s.to_le_bytes());
        k.insns = asm(|a| {
            a.fninit()?;
            a.fld(dword_ptr(rbx))?;
            a.fstp(tword_ptr(rbx + 0x10))?;
            a.fnstsw(word_ptr(rbx + 0x30))
        });
        v.push(k);
    }
    let doubles =
        [0x7ff0_0000_0000_0001u64, 0xfff4_0000_0000_0000, 0x7ff8_0000_0000_0001, 1, 0x800f_ffff_ffff_ffff];
    for (j, d) in doubles.iter().enumerate() {
        let mut k = base("x87store", format!("fld64/{j}"));
        k.mem[0x1000..0x1008].copy_from_slice(&d.to_le_bytes());
        k.insns = asm(|a| {
            a.fninit()?;
            a.fld(qword_ptr(rbx))?;
            a.fst(qword_ptr(rbx + 0x10))?;
            a.fnstsw(word_ptr(rbx + 0x30))
        });
        v.push(k);
    }
    v
}

fn exc() -> Vec<Case> {
    let mut v = Vec::new();
    let mut add = |name: &str, insns: Vec<Vec<u8>>, setup: &dyn Fn(&mut Case)| {
        let mut k = base("exc", name.to_string());
        k.gprs[RAX] = 0x1234;
        setup(&mut k);
        k.insns = insns;
        v.push(k);
    };
    let none = |_: &mut Case| {};
    add("ud2", asm(|a| a.ud2()), &none);
    add("int3", asm(|a| a.int3()), &none);
    add("hlt", asm(|a| a.hlt()), &none);
    add("cli", asm(|a| a.cli()), &none);
    add("sti", asm(|a| a.sti()), &none);
    add("in-ok", asm(|a| a.in_(al, 0x10)), &none);
    add("mov-cr0", asm(|a| a.mov(rax, cr0)), &none);
    add("lgdt", asm(|a| a.lgdt(ptr(rbx))), &none);
    add("wrmsr", asm(|a| a.wrmsr()), &none);
    add("rdmsr", asm(|a| a.rdmsr()), &none);
    add("invlpg", asm(|a| a.invlpg(ptr(rbx))), &none);
    add("swapgs", asm(|a| a.swapgs()), &none);
    add(
        "div0",
        asm(|a| {
            a.xor(ecx, ecx)?;
            a.div(rcx)
        }),
        &none,
    );
    add("pf-read-guard", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = DATA_BASE + 0x4000);
    add("pf-read-below", asm(|a| a.mov(rax, qword_ptr(rbx - 1))), &|k| k.gprs[RBX] = DATA_BASE);
    add("pf-write-ro", asm(|a| a.mov(qword_ptr(rbx), rax)), &|k| k.gprs[RBX] = RO_PAGE + 0x10);
    add("ro-read", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = RO_PAGE + 0x10);
    add("pf-supervisor", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = 0x1000);
    add("pf-null", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = 0);
    add("pf-nx", asm(|a| a.jmp(rbx)), &|k| k.gprs[RBX] = DATA_BASE);
    add("pf-split-write", asm(|a| a.mov(qword_ptr(rbx), rax)), &|k| k.gprs[RBX] = DATA_BASE + 0x3ffc);
    add("pf-split-read", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = DATA_BASE + 0x3ffd);
    add("pf-fetch-past-code", asm(|a| a.jmp(rbx)), &|k| {
        k.gprs[RBX] = crate::layout::CODE_BASE + crate::layout::CODE_SIZE as u64
    });
    add("gp-noncanonical", asm(|a| a.mov(rax, qword_ptr(rbx))), &|k| k.gprs[RBX] = 0x8000_0000_0000_0000);
    add("ss-noncanonical", asm(|a| a.mov(rax, qword_ptr(rbp))), &|k| {
        k.gprs[crate::case::RBP] = 0x0000_8000_0000_0000
    });
    add("gp-movdqa-misaligned", asm(|a| a.movdqa(xmm0, xmmword_ptr(rbx + 8))), &none);
    add("ac-misaligned", asm(|a| a.mov(rax, qword_ptr(rbx + 1))), &|k| k.rflags |= 0x40000);
    add("ac-aligned", asm(|a| a.mov(rax, qword_ptr(rbx + 8))), &|k| k.rflags |= 0x40000);
    let ac = |k: &mut Case| k.rflags |= 0x40000;
    add("ac-word", asm(|a| a.mov(ax, word_ptr(rbx + 1))), &ac);
    add("ac-dword-store", asm(|a| a.mov(dword_ptr(rbx + 2), eax)), &ac);
    add("ac-rmw", asm(|a| a.add(dword_ptr(rbx + 1), eax)), &ac);
    add("ac-movups-8", asm(|a| a.movups(xmm0, xmmword_ptr(rbx + 8))), &ac);
    add("ac-movq-4", asm(|a| a.movq(xmm0, qword_ptr(rbx + 4))), &ac);
    add("ac-fld-m80-8", asm(|a| a.fld(tword_ptr(rbx + 8))), &ac);
    add("ac-fld-m80-4", asm(|a| a.fld(tword_ptr(rbx + 4))), &ac);
    add("ac-push", asm(|a| a.push(rax)), &|k| {
        k.rflags |= 0x40000;
        k.gprs[crate::case::RSP] -= 1;
    });
    add("ac-before-pf", asm(|a| a.mov(rax, qword_ptr(rbx + 1))), &|k| {
        k.rflags |= 0x40000;
        k.gprs[RBX] = 0x1000;
    });
    add("ac-rep-movsq", asm(|a| a.rep().movsq()), &|k| {
        k.rflags |= 0x40000;
        k.gprs[RCX] = 2;
        k.gprs[RSI] = MEM_PTR + 1;
        k.gprs[RDI] = MEM_PTR + 0x100;
    });
    // Both CMPS operands fault: REPE CMPSB reports [RSI], the other forms [RDI].
    for (name, insn) in [
        ("cmpsb", vec![0xa6]),
        ("repe-cmpsb", vec![0xf3, 0xa6]),
        ("repne-cmpsb", vec![0xf2, 0xa6]),
        ("repe-cmpsw", vec![0xf3, 0x66, 0xa7]),
        ("repe-cmpsq", vec![0xf3, 0x48, 0xa7]),
    ] {
        add(&format!("{name}-both-fault"), vec![insn], &|k| {
            k.gprs[RCX] = 3;
            k.gprs[RSI] = 0x1b;
            k.gprs[RDI] = 0x3000;
        });
    }
    add("ud-lock-nop", vec![vec![0xf0, 0x90]], &none);
    add("ud-lock-reg", vec![vec![0xf0, 0x48, 0x01, 0xc8]], &none);
    add("into-invalid", vec![vec![0xce]], &none);
    add("bound-invalid", vec![vec![0x62, 0x03]], &none);
    add("cmov-false-still-reads", asm(|a| a.cmove(rax, qword_ptr(rbx))), &|k| {
        k.gprs[RBX] = DATA_BASE + 0x4000;
        k.rflags = 0x202;
    });
    add("cmov-false-32-zero-extends", asm(|a| a.cmove(eax, dword_ptr(rbx))), &|k| {
        k.gprs[RAX] = 0xffff_ffff_0000_1234;
    });
    add("setcc-to-ro", asm(|a| a.setne(byte_ptr(rbx))), &|k| k.gprs[RBX] = RO_PAGE);
    add("ud-daa", vec![vec![0x27]], &none);
    add("ud-aam", vec![vec![0xd4, 0x0a]], &none);
    add("ud-push-es", vec![vec![0x06]], &none);
    add("ud1", vec![vec![0x0f, 0xb9, 0xc0]], &none);
    add("ud-lea-reg", vec![vec![0x48, 0x8d, 0xc0]], &none);
    add("ud-cmpxchg8b-reg", vec![vec![0x0f, 0xc7, 0xc8]], &none);
    add("xadd-to-ro", asm(|a| a.xadd(qword_ptr(rbx), rcx)), &|k| k.gprs[RBX] = RO_PAGE + 8);
    add("rep-stosb-rcx0-guard", vec![vec![0xf3, 0xaa]], &|k| {
        k.gprs[RDI] = DATA_BASE + 0x4000;
        k.gprs[RCX] = 0;
    });
    add(
        "pf-after-progress",
        asm(|a| {
            a.mov(rcx, 5i64)?;
            a.add(rax, rcx)?;
            a.mov(qword_ptr(rbx), rax)
        }),
        &|k| k.gprs[RBX] = DATA_BASE + 0x4000,
    );
    v
}

/// One single-instruction case per random-generator form and a few operand draws.
fn forms() -> Vec<Case> {
    let mut v = Vec::new();
    let mut rng = Rng::new(0xf0_5eed);
    for form in FORMS {
        for i in 0..8 {
            let mut k = Case::new("forms", &format!("{:?}/{i}", form.code));
            gen::random_state(&mut rng, &mut k);
            let mut one = || gen::random_instruction(&mut rng, form);
            k.insns = vec![one().unwrap_or_else(|e| panic!("corpus: {e}"))];
            v.push(k);
        }
    }
    v
}

/// Floating-point forms of `ssefp` (packed and scalar), with operands of FP edge values.
const FP_FORMS: &[(&str, &[gen::K])] = {
    use gen::K::{Xm128, Xm32, Xm64, U8, X};
    &[
        ("Addps_xmm_xmmm128", &[X, Xm128]),
        ("Addpd_xmm_xmmm128", &[X, Xm128]),
        ("Subps_xmm_xmmm128", &[X, Xm128]),
        ("Subpd_xmm_xmmm128", &[X, Xm128]),
        ("Mulps_xmm_xmmm128", &[X, Xm128]),
        ("Mulpd_xmm_xmmm128", &[X, Xm128]),
        ("Divps_xmm_xmmm128", &[X, Xm128]),
        ("Divpd_xmm_xmmm128", &[X, Xm128]),
        ("Minps_xmm_xmmm128", &[X, Xm128]),
        ("Minpd_xmm_xmmm128", &[X, Xm128]),
        ("Maxps_xmm_xmmm128", &[X, Xm128]),
        ("Maxpd_xmm_xmmm128", &[X, Xm128]),
        ("Sqrtps_xmm_xmmm128", &[X, Xm128]),
        ("Sqrtpd_xmm_xmmm128", &[X, Xm128]),
        ("Sqrtss_xmm_xmmm32", &[X, Xm32]),
        ("Sqrtsd_xmm_xmmm64", &[X, Xm64]),
        ("Cmpps_xmm_xmmm128_imm8", &[X, Xm128, U8]),
        ("Cmppd_xmm_xmmm128_imm8", &[X, Xm128, U8]),
        ("Cmpss_xmm_xmmm32_imm8", &[X, Xm32, U8]),
        ("Cmpsd_xmm_xmmm64_imm8", &[X, Xm64, U8]),
        ("Cvtdq2ps_xmm_xmmm128", &[X, Xm128]),
        ("Cvtdq2pd_xmm_xmmm64", &[X, Xm64]),
        ("Cvtps2dq_xmm_xmmm128", &[X, Xm128]),
        ("Cvttps2dq_xmm_xmmm128", &[X, Xm128]),
        ("Cvtpd2dq_xmm_xmmm128", &[X, Xm128]),
        ("Cvttpd2dq_xmm_xmmm128", &[X, Xm128]),
        ("Cvtps2pd_xmm_xmmm64", &[X, Xm64]),
        ("Cvtpd2ps_xmm_xmmm128", &[X, Xm128]),
        ("Unpcklps_xmm_xmmm128", &[X, Xm128]),
        ("Unpckhps_xmm_xmmm128", &[X, Xm128]),
        ("Unpcklpd_xmm_xmmm128", &[X, Xm128]),
        ("Unpckhpd_xmm_xmmm128", &[X, Xm128]),
        ("Shufpd_xmm_xmmm128_imm8", &[X, Xm128, U8]),
        ("Subss_xmm_xmmm32", &[X, Xm32]),
        ("Minss_xmm_xmmm32", &[X, Xm32]),
        ("Maxsd_xmm_xmmm64", &[X, Xm64]),
        ("Comiss_xmm_xmmm32", &[X, Xm32]),
        ("Ucomisd_xmm_xmmm64", &[X, Xm64]),
    ]
};

/// A random float (`single`) or double with edge values: zeros, ones, infinities, NaNs (quiet and
/// signalling), denormals, the extremes, integer-conversion limits, inexact fractions.
fn fp_value(rng: &mut Rng, single: bool) -> u64 {
    let r = rng.next_u64();
    if single {
        let v: u32 = match rng.below(20) {
            0 => 0,
            1 => 0x8000_0000,
            2 => 1.0f32.to_bits(),
            3 => (-1.5f32).to_bits(),
            4 => 0x7f80_0000,
            5 => 0xff80_0000,
            6 => 0x7fc0_0000 | (r as u32 & 0xff),
            7 => 0x7f80_0001 | (r as u32 & 0x3f_ffff),
            8 => r as u32 & 0x807f_ffff,
            9 => 0x0080_0000,
            10 => 0x7f7f_ffff,
            11 => 2_147_483_648f32.to_bits(),
            12 => (-2_147_483_648f32).to_bits(),
            13 => 0.1f32.to_bits(),
            14 => (1.0f32 / 3.0).to_bits(),
            15 => 2.5f32.to_bits(),
            16 => 4.0f32.to_bits(),
            _ => (r as u32 & 0x8fff_ffff) | 0x3000_0000,
        };
        u64::from(v)
    } else {
        match rng.below(20) {
            0 => 0,
            1 => 1 << 63,
            2 => 1.0f64.to_bits(),
            3 => (-1.5f64).to_bits(),
            4 => 0x7ff0_0000_0000_0000,
            5 => 0xfff0_0000_0000_0000,
            6 => 0x7ff8_0000_0000_0000 | (r & 0xffff),
            7 => 0x7ff0_0000_0000_0001 | (r & 0x3_ffff_ffff_ffff),
            8 => r & 0x800f_ffff_ffff_ffff,
            9 => 0x0010_0000_0000_0000,
            10 => 0x7fef_ffff_ffff_ffff,
            11 => 2_147_483_647.5f64.to_bits(),
            12 => (-2_147_483_648.5f64).to_bits(),
            13 => 0.1f64.to_bits(),
            14 => (1.0f64 / 3.0).to_bits(),
            15 => 2.5f64.to_bits(),
            16 => 1e300f64.to_bits(),
            _ => (r & 0x8fff_ffff_ffff_ffff) | 0x3000_0000_0000_0000,
        }
    }
}

/// A 128-bit value of FP edge lanes (`single`: four floats, else two doubles).
fn fp_xmm(rng: &mut Rng, single: bool) -> u128 {
    if single {
        (0..4).fold(0u128, |acc, k| acc | (u128::from(fp_value(rng, true)) << (32 * k)))
    } else {
        u128::from(fp_value(rng, false)) | (u128::from(fp_value(rng, false)) << 64)
    }
}

/// Packed and scalar SSE floating point with FP edge operands (registers and window), in every
/// rounding mode.
fn ssefp() -> Vec<Case> {
    let mut v = Vec::new();
    let mut rng = Rng::new(0xf10a7);
    for (name, ops) in FP_FORMS {
        for i in 0..48u32 {
            // Every rounding mode, exceptions masked, some cases with FTZ and/or DAZ.
            v.push(fp_case(&mut rng, "ssefp", name, ops, i, |_| {
                0x1f80 | (((i / 2) % 4) << 13) | [0u32, 0, 0x8000, 0x40, 0x8040][(i % 5) as usize]
            }));
        }
    }
    v
}

/// One random case of an SSE floating-point form: random state, then MXCSR from `mxcsr` (which
/// may draw from the generator), XMM registers and memory full of FP values of the form's width,
/// the instruction (comparison predicates 0..7 in its imm8).
fn fp_case(
    rng: &mut Rng,
    family: &str,
    name: &str,
    ops: &'static [gen::K],
    i: u32,
    mxcsr: impl FnOnce(&mut Rng) -> u32,
) -> Case {
    let form = gen::Form { code: code(name), ops };
    let single = name.contains("ps_")
        || name.contains("ss_")
        || name.starts_with("Cvtps")
        || name.starts_with("Cvttps")
        || name.starts_with("Comiss");
    let mut k = base(family, format!("{name}/{i}"));
    gen::random_state(rng, &mut k);
    k.mxcsr = mxcsr(rng);
    for x in k.xmm.iter_mut() {
        *x = fp_xmm(rng, single);
    }
    for chunk in k.mem.chunks_mut(16) {
        chunk.copy_from_slice(&fp_xmm(rng, single).to_le_bytes());
    }
    let mut insn = gen::random_instruction(rng, &form).unwrap_or_else(|e| panic!("corpus: {e}"));
    if ops.contains(&gen::K::U8) {
        // Comparison predicates 0..7 (the imm8 is the last byte).
        *insn.last_mut().unwrap() = (i % 8) as u8;
    }
    k.insns = vec![insn];
    k
}

/// The `ssefp` forms with exceptions unmasked in MXCSR: one mask bit, all, or a random subset
/// cleared (sometimes with flags already set), in every rounding mode, with FTZ/DAZ: #XM with
/// the destination unchanged and the flags the CPU reports, or a normal result.
fn ssexm() -> Vec<Case> {
    let mut v = Vec::new();
    let mut rng = Rng::new(0x19);
    for (name, ops) in FP_FORMS {
        for i in 0..36u32 {
            v.push(fp_case(&mut rng, "ssexm", name, ops, i, |rng| {
                let masks = match i % 9 {
                    b @ 0..=5 => 0x1f80 & !(0x80 << b),
                    6 => 0,
                    7 => 0x1f80 & (rng.next_u64() as u32),
                    _ => (0x1f80 & !(0x80 << (i % 6))) | 0x3f,
                };
                masks | (((i / 9) % 4) << 13) | [0u32, 0, 0x8000, 0x40, 0x8040][(i % 5) as usize]
            }));
        }
    }
    // Overflow and underflow with OE/UE (and PE) unmasked: results exact or inexact at the
    // format's precision with an unbounded exponent, tiny before or only after rounding.
    let p2 = exact_pow2;
    let dd: [(&str, f64, f64); 16] = [
        ("mulsd", p2(1000), p2(1000)),
        ("mulsd", 1e300, 1e300),
        ("mulsd", p2(-1000), p2(-50)),
        ("mulsd", p2(-1000), p2(-100)),
        ("mulsd", 3.0 * p2(-1074), 0.5),
        ("mulsd", (1.0 + p2(-52)) * p2(-1022), 1.0 - p2(-53)),
        ("mulsd", -p2(-1022), 1.0 - p2(-53)),
        ("divsd", p2(1000), p2(-100)),
        ("divsd", 1e300, 1e-300),
        ("divsd", p2(-1000), p2(100)),
        ("divsd", p2(-1000), 3.0),
        ("addsd", f64::MAX, f64::MAX),
        ("addsd", f64::MAX, p2(970)),
        ("addsd", p2(-1074), 3.0 * p2(-1074)),
        ("subsd", p2(-1022), p2(-1074)),
        ("cvtsd2ss", 0.0, 0.0),
    ];
    let cvt: [f64; 6] = [p2(200), 1e200, p2(-140), 1e-40, p2(-160), -(1.0 + p2(-30)) * p2(-126)];
    let singles: [(&str, f32, f32); 5] = [
        ("mulss", p2(100) as f32, p2(100) as f32),
        ("mulss", 1e30, 1e30),
        ("mulss", p2(-100) as f32, p2(-40) as f32),
        ("divss", p2(-100) as f32, 3.0),
        ("addss", f32::MAX, f32::MAX),
    ];
    let mut ops: Vec<(&str, u64, u64)> = Vec::new();
    for (op, a, b) in dd.iter().filter(|t| t.0 != "cvtsd2ss") {
        ops.push((op, a.to_bits(), b.to_bits()));
    }
    for x in cvt {
        ops.push(("cvtsd2ss", 0, x.to_bits()));
    }
    for (op, a, b) in singles {
        ops.push((op, u64::from(a.to_bits()), u64::from(b.to_bits())));
    }
    let unmask: [(&str, u32); 6] =
        [("om", 0x400), ("um", 0x800), ("om-pm", 0x1400), ("um-pm", 0x1800), ("all", 0x1f80), ("pm", 0x1000)];
    for (j, (op, a, b)) in ops.iter().enumerate() {
        for (mname, bits) in unmask {
            for rc in 0..4u32 {
                let ftz =
                    if rc == 0 && mname == "um" { [0u32, 0x8000].as_slice() } else { [0u32].as_slice() };
                for &f in ftz {
                    let mut k = base("ssexm", format!("limits/{j}-{op}/{mname}/rc{rc}/ftz{}", f >> 15));
                    k.mxcsr = (0x1f80 & !bits) | (rc << 13) | f;
                    k.xmm[0] = u128::from(*a) | (0x5555 << 64);
                    k.xmm[1] = u128::from(*b) | (0xaaaa << 64);
                    k.insns = asm(|x| match *op {
                        "mulsd" => x.mulsd(xmm0, xmm1),
                        "divsd" => x.divsd(xmm0, xmm1),
                        "addsd" => x.addsd(xmm0, xmm1),
                        "subsd" => x.subsd(xmm0, xmm1),
                        "cvtsd2ss" => x.cvtsd2ss(xmm0, xmm1),
                        "mulss" => x.mulss(xmm0, xmm1),
                        "divss" => x.divss(xmm0, xmm1),
                        _ => x.addss(xmm0, xmm1),
                    });
                    v.push(k);
                }
            }
        }
    }
    v
}

/// The hand-written cases of `family`.
pub fn family(name: &str) -> Vec<Case> {
    match name {
        "alu" => alu(),
        "unary" => unary(),
        "shift" => shift(),
        "shiftd" => shiftd(),
        "muldiv" => muldiv(),
        "bit" => bit(),
        "bitext" => bitext(),
        "string" => string(),
        "cmov_setcc" => cmov_setcc(),
        "jcc" => jcc(),
        "stack" => stack(),
        "xchg" => xchg(),
        "misc" => misc(),
        "sse" => sse(),
        "x87" => x87(),
        "x87store" => x87store(),
        "exc" => exc(),
        "forms" => forms(),
        "ssefp" => ssefp(),
        "ssexm" => ssexm(),
        _ => Vec::new(),
    }
}

/// All hand-written cases.
pub fn all() -> Vec<Case> {
    FAMILIES.iter().flat_map(|f| family(f)).collect()
}

/// 2^e for -1074 <= e <= 1023, built from its bits: `powi` is exact only when the compiler
/// folds it (a debug build computes 2^-1074 as 1 / 2^1074 = 0), and the corpus must not depend
/// on the build profile.
fn exact_pow2(e: i32) -> f64 {
    assert!((-1074..=1023).contains(&e), "2^{e} is not a finite f64");
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{CODE_SIZE, DATA_SIZE};
    use std::collections::HashSet;

    #[test]
    fn powers_of_two_are_exact_in_every_build() {
        assert_eq!(exact_pow2(0), 1.0);
        assert_eq!(exact_pow2(-1074).to_bits(), 1, "the smallest denormal");
        assert_eq!(exact_pow2(-1022), f64::MIN_POSITIVE);
        assert_eq!(exact_pow2(1023) * 2.0, f64::INFINITY);
        assert_eq!(exact_pow2(-100) as f32, f32::from_bits(27 << 23));
    }

    #[test]
    fn corpus_builds_with_unique_names() {
        let all = all();
        assert!(all.len() > 10_000, "{} hand-written cases", all.len());
        let mut names = HashSet::new();
        for c in &all {
            assert!(names.insert(c.name.clone()), "duplicate case {}", c.name);
            assert!(FAMILIES.contains(&c.family.as_str()));
            assert!(!c.insns.is_empty(), "{} is empty", c.name);
            assert!(c.code(c.insns.len()).len() <= CODE_SIZE);
            assert_eq!(c.mem.len(), DATA_SIZE);
        }
        for f in FAMILIES {
            assert!(!family(f).is_empty(), "family {f} is empty");
        }
    }

    #[test]
    fn corpus_is_deterministic() {
        assert_eq!(family("sse"), family("sse"));
        assert_eq!(family("forms"), family("forms"));
    }

    #[test]
    fn code_lookup() {
        assert_eq!(code("Add_rm64_r64"), Code::Add_rm64_r64);
    }
}
