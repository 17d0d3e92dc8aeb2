//! Instruction encoding helpers and the seeded random sequence generator.
//!
//! Random sequences draw from [`FORMS`] (user-mode instruction forms) with random registers, immediates and
//! memory operands. Memory operands are `[r15 + disp]` with `r15` = [`WINDOW_PTR`] and `disp` chosen so
//! the whole access stays inside the data window; `r15` and `rsp` are never chosen as operands, so every
//! memory access of a random sequence stays in the window (stack pushes use the stack part of it).

use iced_x86::code_asm::CodeAssembler;
use iced_x86::{Code, Decoder, DecoderOptions, Encoder, Instruction, MemoryOperand, Register};

use crate::case::{Case, RSP};
use crate::layout::{CODE_BASE, DATA_BASE, DATA_SIZE};

/// Value of `r15` in random cases: memory operands are relative to it.
pub const WINDOW_PTR: u64 = DATA_BASE + 0x800;
/// Memory operands of random cases stay in `DATA_BASE .. DATA_BASE + RANDOM_MEM_END`; the rest of the
/// window is the stack.
pub const RANDOM_MEM_END: u64 = 0x2800;
/// RSP at the start of every case: the stack grows down inside the window.
pub const STACK_TOP: u64 = DATA_BASE + 0x3800;

/// A small deterministic PRNG (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Values at the edges of signed and unsigned ranges of every operand size.
pub const EDGE_VALUES: [u64; 24] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    0xffff_ffff_ffff_ffff,
    0xffff_ffff_ffff_fffe,
    0xffff_ffff_ffff_ff80,
    0x3f,
    0x40,
    0x1f,
    0x20,
];

/// A random register value: an edge value, a small number or random bits of a random width.
pub fn random_value(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0..=2 => *rng.pick(&EDGE_VALUES),
        3 => rng.below(70),
        4 => rng.next_u64() & 0xff,
        5 => rng.next_u64() & 0xffff_ffff,
        6 => (rng.next_u64() as i8) as u64,
        _ => rng.next_u64(),
    }
}

/// A random 128-bit value with byte patterns string functions care about (zero bytes, equal bytes).
pub fn random_xmm(rng: &mut Rng) -> u128 {
    match rng.below(4) {
        0 => (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()),
        1 => 0,
        _ => {
            let pool = [0u8, 0xff, 0x80, 0x7f, b'a', b'b', 0x01, rng.next_u64() as u8];
            let mut b = [0u8; 16];
            for x in &mut b {
                *x = *rng.pick(&pool);
            }
            u128::from_le_bytes(b)
        }
    }
}

/// Random arithmetic flags (CF PF AF ZF SF OF) and DF, IF set.
pub fn random_flags(rng: &mut Rng) -> u64 {
    (rng.next_u64() & 0x0cd5) | 0x202
}

/// An operand for [`make`].
#[derive(Clone, Copy, Debug)]
pub enum Opnd {
    Reg(Register),
    Mem(MemoryOperand),
    Imm(i64),
    /// An unsigned 64-bit immediate (`mov r64, imm64`).
    Imm64(u64),
}

/// Builds an instruction from a code and operands (iced checks that they fit the code).
pub fn make(code: Code, ops: &[Opnd]) -> Result<Instruction, String> {
    use Opnd::*;
    let r = match *ops {
        [] => Ok(Instruction::with(code)),
        [Reg(a)] => Instruction::with1(code, a),
        [Mem(a)] => Instruction::with1(code, a),
        [Imm(a)] => Instruction::with1(code, a as i32),
        [Reg(a), Reg(b)] => Instruction::with2(code, a, b),
        [Reg(a), Mem(b)] => Instruction::with2(code, a, b),
        [Mem(a), Reg(b)] => Instruction::with2(code, a, b),
        [Reg(a), Imm(b)] => Instruction::with2(code, a, b as i32),
        [Reg(a), Imm64(b)] => Instruction::with2(code, a, b),
        [Mem(a), Imm(b)] => Instruction::with2(code, a, b as i32),
        [Reg(a), Reg(b), Reg(c)] => Instruction::with3(code, a, b, c),
        [Reg(a), Reg(b), Imm(c)] => Instruction::with3(code, a, b, c as i32),
        [Reg(a), Mem(b), Imm(c)] => Instruction::with3(code, a, b, c as i32),
        [Mem(a), Reg(b), Imm(c)] => Instruction::with3(code, a, b, c as i32),
        [Mem(a), Reg(b), Reg(c)] => Instruction::with3(code, a, b, c),
        _ => return Err(format!("{code:?}: unsupported operand combination {ops:?}")),
    };
    r.map_err(|e| format!("{code:?} {ops:?}: {e}"))
}

/// Encodes one instruction (position-independent forms only: no branches, no RIP-relative operands).
pub fn encode(instr: &Instruction) -> Result<Vec<u8>, String> {
    let mut enc = Encoder::new(64);
    enc.encode(instr, CODE_BASE).map_err(|e| format!("encode {:?}: {e}", instr.code()))?;
    Ok(enc.take_buffer())
}

/// Assembles with iced's code assembler at [`CODE_BASE`] and splits the result into instructions.
/// Panics on an assembler error: hand-written cases are fixed text, so an error is a bug in the corpus.
pub fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<Vec<u8>> {
    let mut a = CodeAssembler::new(64).expect("64-bit assembler");
    f(&mut a).expect("corpus assembly");
    let bytes = a.assemble(CODE_BASE).expect("corpus assembly");
    split(&bytes)
}

/// Splits code bytes into instruction encodings.
pub fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut d = Decoder::with_ip(64, bytes, CODE_BASE, DecoderOptions::NONE);
    let mut out = Vec::new();
    let mut pos = 0usize;
    while d.can_decode() {
        let i = d.decode();
        out.push(bytes[pos..pos + i.len()].to_vec());
        pos += i.len();
    }
    out
}

/// Disassembles one instruction (Intel syntax) for reports.
pub fn disasm(bytes: &[u8], ip: u64) -> String {
    use iced_x86::{Formatter, IntelFormatter};
    let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    let i = d.decode();
    let mut s = String::new();
    IntelFormatter::new().format(&i, &mut s);
    s
}

/// Operand kinds of a form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum K {
    R8,
    R16,
    R32,
    R64,
    Rm8,
    Rm16,
    Rm32,
    Rm64,
    /// Memory of any size (LEA).
    M,
    M64,
    M128,
    /// Sign-extended imm8 (-128..=127).
    S8,
    /// imm8 0..=255 (shift counts and selectors, biased to edges).
    U8,
    I16,
    I32,
    I64,
    /// The CL register.
    Cl,
    /// The implicit count 1 of the `_1` shift forms.
    One,
    X,
    /// XMM register or 16-byte-aligned m128 (occasionally misaligned: #GP).
    Xm128,
    /// XMM register or any m128 (MOVDQU).
    Xmu128,
    /// XMM register or m64.
    Xm64,
    /// XMM register or m32.
    Xm32,
}

/// An instruction form the random generator uses.
#[derive(Clone, Copy, Debug)]
pub struct Form {
    pub code: Code,
    pub ops: &'static [K],
}

impl Form {
    /// Whether the form has an XMM operand.
    pub fn is_sse(&self) -> bool {
        self.ops.iter().any(|k| matches!(k, X | Xm128 | Xmu128 | Xm64 | Xm32))
    }
}

const fn f(code: Code, ops: &'static [K]) -> Form {
    Form { code, ops }
}

use K::*;

/// User-mode forms of random sequences (every family of the list that needs no branch target).
pub const FORMS: &[Form] = &[
    // ALU
    f(Code::Add_rm8_r8, &[Rm8, R8]),
    f(Code::Add_rm16_r16, &[Rm16, R16]),
    f(Code::Add_rm32_r32, &[Rm32, R32]),
    f(Code::Add_rm64_r64, &[Rm64, R64]),
    f(Code::Add_r64_rm64, &[R64, Rm64]),
    f(Code::Add_rm64_imm8, &[Rm64, S8]),
    f(Code::Add_rm32_imm32, &[Rm32, I32]),
    f(Code::Add_rm16_imm16, &[Rm16, I16]),
    f(Code::Add_rm8_imm8, &[Rm8, U8]),
    f(Code::Or_rm64_r64, &[Rm64, R64]),
    f(Code::Or_rm8_r8, &[Rm8, R8]),
    f(Code::Or_rm32_imm8, &[Rm32, S8]),
    f(Code::Adc_rm64_r64, &[Rm64, R64]),
    f(Code::Adc_rm8_r8, &[Rm8, R8]),
    f(Code::Adc_rm32_imm32, &[Rm32, I32]),
    f(Code::Adc_rm16_r16, &[Rm16, R16]),
    f(Code::Sbb_rm64_r64, &[Rm64, R64]),
    f(Code::Sbb_rm8_r8, &[Rm8, R8]),
    f(Code::Sbb_r32_rm32, &[R32, Rm32]),
    f(Code::Sbb_rm16_imm8, &[Rm16, S8]),
    f(Code::And_rm64_r64, &[Rm64, R64]),
    f(Code::And_rm32_imm32, &[Rm32, I32]),
    f(Code::And_rm8_r8, &[Rm8, R8]),
    f(Code::Sub_rm64_r64, &[Rm64, R64]),
    f(Code::Sub_rm32_r32, &[Rm32, R32]),
    f(Code::Sub_rm16_r16, &[Rm16, R16]),
    f(Code::Sub_rm8_imm8, &[Rm8, U8]),
    f(Code::Sub_rm64_imm32, &[Rm64, I32]),
    f(Code::Xor_rm64_r64, &[Rm64, R64]),
    f(Code::Xor_rm32_r32, &[Rm32, R32]),
    f(Code::Xor_rm8_imm8, &[Rm8, U8]),
    f(Code::Cmp_rm64_r64, &[Rm64, R64]),
    f(Code::Cmp_rm32_imm8, &[Rm32, S8]),
    f(Code::Cmp_rm8_r8, &[Rm8, R8]),
    f(Code::Cmp_rm16_r16, &[Rm16, R16]),
    f(Code::Test_rm64_r64, &[Rm64, R64]),
    f(Code::Test_rm32_imm32, &[Rm32, I32]),
    f(Code::Test_rm8_r8, &[Rm8, R8]),
    f(Code::Inc_rm64, &[Rm64]),
    f(Code::Inc_rm8, &[Rm8]),
    f(Code::Dec_rm32, &[Rm32]),
    f(Code::Dec_rm16, &[Rm16]),
    f(Code::Neg_rm64, &[Rm64]),
    f(Code::Neg_rm8, &[Rm8]),
    f(Code::Not_rm32, &[Rm32]),
    f(Code::Not_rm64, &[Rm64]),
    // shifts and rotates
    f(Code::Shl_rm64_imm8, &[Rm64, U8]),
    f(Code::Shl_rm32_CL, &[Rm32, Cl]),
    f(Code::Shl_rm8_1, &[Rm8, One]),
    f(Code::Shr_rm64_CL, &[Rm64, Cl]),
    f(Code::Shr_rm16_imm8, &[Rm16, U8]),
    f(Code::Shr_rm32_1, &[Rm32, One]),
    f(Code::Sar_rm64_imm8, &[Rm64, U8]),
    f(Code::Sar_rm8_CL, &[Rm8, Cl]),
    f(Code::Sar_rm32_1, &[Rm32, One]),
    f(Code::Rol_rm64_CL, &[Rm64, Cl]),
    f(Code::Rol_rm8_imm8, &[Rm8, U8]),
    f(Code::Rol_rm16_1, &[Rm16, One]),
    f(Code::Ror_rm32_imm8, &[Rm32, U8]),
    f(Code::Ror_rm64_1, &[Rm64, One]),
    f(Code::Rcl_rm64_CL, &[Rm64, Cl]),
    f(Code::Rcl_rm8_imm8, &[Rm8, U8]),
    f(Code::Rcl_rm16_CL, &[Rm16, Cl]),
    f(Code::Rcr_rm32_CL, &[Rm32, Cl]),
    f(Code::Rcr_rm64_imm8, &[Rm64, U8]),
    f(Code::Rcr_rm8_1, &[Rm8, One]),
    f(Code::Shld_rm64_r64_imm8, &[Rm64, R64, U8]),
    f(Code::Shld_rm32_r32_CL, &[Rm32, R32, Cl]),
    f(Code::Shld_rm16_r16_CL, &[Rm16, R16, Cl]),
    f(Code::Shrd_rm64_r64_CL, &[Rm64, R64, Cl]),
    f(Code::Shrd_rm32_r32_imm8, &[Rm32, R32, U8]),
    f(Code::Shrd_rm16_r16_imm8, &[Rm16, R16, U8]),
    // multiply / divide
    f(Code::Mul_rm64, &[Rm64]),
    f(Code::Mul_rm32, &[Rm32]),
    f(Code::Mul_rm8, &[Rm8]),
    f(Code::Mul_rm16, &[Rm16]),
    f(Code::Imul_rm64, &[Rm64]),
    f(Code::Imul_rm8, &[Rm8]),
    f(Code::Imul_r64_rm64, &[R64, Rm64]),
    f(Code::Imul_r32_rm32, &[R32, Rm32]),
    f(Code::Imul_r16_rm16, &[R16, Rm16]),
    f(Code::Imul_r64_rm64_imm32, &[R64, Rm64, I32]),
    f(Code::Imul_r32_rm32_imm8, &[R32, Rm32, S8]),
    f(Code::Div_rm64, &[Rm64]),
    f(Code::Div_rm32, &[Rm32]),
    f(Code::Div_rm8, &[Rm8]),
    f(Code::Div_rm16, &[Rm16]),
    f(Code::Idiv_rm64, &[Rm64]),
    f(Code::Idiv_rm32, &[Rm32]),
    f(Code::Idiv_rm8, &[Rm8]),
    // bit operations
    f(Code::Bt_rm64_r64, &[Rm64, R64]),
    f(Code::Bt_rm32_imm8, &[Rm32, U8]),
    f(Code::Bts_rm64_imm8, &[Rm64, U8]),
    f(Code::Bts_rm32_r32, &[Rm32, R32]),
    f(Code::Btr_rm64_r64, &[Rm64, R64]),
    f(Code::Btr_rm16_imm8, &[Rm16, U8]),
    f(Code::Btc_rm32_imm8, &[Rm32, U8]),
    f(Code::Btc_rm64_r64, &[Rm64, R64]),
    f(Code::Bsf_r64_rm64, &[R64, Rm64]),
    f(Code::Bsf_r32_rm32, &[R32, Rm32]),
    f(Code::Bsr_r64_rm64, &[R64, Rm64]),
    f(Code::Bsr_r16_rm16, &[R16, Rm16]),
    // moves and conversions
    f(Code::Mov_rm64_r64, &[Rm64, R64]),
    f(Code::Mov_r32_rm32, &[R32, Rm32]),
    f(Code::Mov_rm8_r8, &[Rm8, R8]),
    f(Code::Mov_r16_rm16, &[R16, Rm16]),
    f(Code::Mov_r64_imm64, &[R64, I64]),
    f(Code::Mov_rm64_imm32, &[Rm64, I32]),
    f(Code::Mov_r8_imm8, &[R8, U8]),
    f(Code::Movsx_r64_rm8, &[R64, Rm8]),
    f(Code::Movsx_r32_rm16, &[R32, Rm16]),
    f(Code::Movsx_r16_rm8, &[R16, Rm8]),
    f(Code::Movsxd_r64_rm32, &[R64, Rm32]),
    f(Code::Movzx_r64_rm8, &[R64, Rm8]),
    f(Code::Movzx_r32_rm16, &[R32, Rm16]),
    f(Code::Movzx_r16_rm8, &[R16, Rm8]),
    f(Code::Lea_r64_m, &[R64, M]),
    f(Code::Lea_r32_m, &[R32, M]),
    f(Code::Lea_r16_m, &[R16, M]),
    f(Code::Cbw, &[]),
    f(Code::Cwde, &[]),
    f(Code::Cdqe, &[]),
    f(Code::Cwd, &[]),
    f(Code::Cdq, &[]),
    f(Code::Cqo, &[]),
    f(Code::Lahf, &[]),
    f(Code::Sahf, &[]),
    f(Code::Clc, &[]),
    f(Code::Stc, &[]),
    f(Code::Cmc, &[]),
    f(Code::Bswap_r64, &[R64]),
    f(Code::Bswap_r32, &[R32]),
    // exchange
    f(Code::Xchg_rm64_r64, &[Rm64, R64]),
    f(Code::Xchg_rm8_r8, &[Rm8, R8]),
    f(Code::Xchg_rm32_r32, &[Rm32, R32]),
    f(Code::Cmpxchg_rm64_r64, &[Rm64, R64]),
    f(Code::Cmpxchg_rm32_r32, &[Rm32, R32]),
    f(Code::Cmpxchg_rm8_r8, &[Rm8, R8]),
    f(Code::Xadd_rm64_r64, &[Rm64, R64]),
    f(Code::Xadd_rm16_r16, &[Rm16, R16]),
    f(Code::Xadd_rm8_r8, &[Rm8, R8]),
    // conditional moves / sets
    f(Code::Cmovo_r64_rm64, &[R64, Rm64]),
    f(Code::Cmovb_r64_rm64, &[R64, Rm64]),
    f(Code::Cmove_r32_rm32, &[R32, Rm32]),
    f(Code::Cmovbe_r64_rm64, &[R64, Rm64]),
    f(Code::Cmovs_r16_rm16, &[R16, Rm16]),
    f(Code::Cmovp_r64_rm64, &[R64, Rm64]),
    f(Code::Cmovl_r32_rm32, &[R32, Rm32]),
    f(Code::Cmovle_r64_rm64, &[R64, Rm64]),
    f(Code::Cmovne_r32_rm32, &[R32, Rm32]),
    f(Code::Cmovg_r64_rm64, &[R64, Rm64]),
    f(Code::Seto_rm8, &[Rm8]),
    f(Code::Setb_rm8, &[Rm8]),
    f(Code::Sete_rm8, &[Rm8]),
    f(Code::Seta_rm8, &[Rm8]),
    f(Code::Sets_rm8, &[Rm8]),
    f(Code::Setnp_rm8, &[Rm8]),
    f(Code::Setl_rm8, &[Rm8]),
    f(Code::Setg_rm8, &[Rm8]),
    // stack (within the window)
    f(Code::Push_r64, &[R64]),
    f(Code::Pop_r64, &[R64]),
    f(Code::Push_rm64, &[Rm64]),
    f(Code::Pushq_imm8, &[S8]),
    f(Code::Pushfq, &[]),
    // SSE/SSE2 integer (glibc string functions)
    f(Code::Pcmpeqb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pcmpeqw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pcmpeqd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pcmpgtb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmovmskb_r32_xmm, &[R32, X]),
    f(Code::Pminub_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmaxub_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movdqa_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movdqa_xmmm128_xmm, &[Xm128, X]),
    f(Code::Movdqu_xmm_xmmm128, &[X, Xmu128]),
    f(Code::Movdqu_xmmm128_xmm, &[Xmu128, X]),
    f(Code::Movaps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movups_xmm_xmmm128, &[X, Xmu128]),
    f(Code::Pxor_xmm_xmmm128, &[X, Xm128]),
    f(Code::Por_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pand_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pandn_xmm_xmmm128, &[X, Xm128]),
    f(Code::Xorps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pshufd_xmm_xmmm128_imm8, &[X, Xm128, U8]),
    f(Code::Punpcklbw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpcklwd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpckldq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpcklqdq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpckhbw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpckhqdq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movd_xmm_rm32, &[X, Rm32]),
    f(Code::Movd_rm32_xmm, &[Rm32, X]),
    f(Code::Movq_xmm_rm64, &[X, Rm64]),
    f(Code::Movq_rm64_xmm, &[Rm64, X]),
    f(Code::Movq_xmm_xmmm64, &[X, Xm64]),
    f(Code::Movq_xmmm64_xmm, &[Xm64, X]),
    f(Code::Psubb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Paddb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Paddq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pslldq_xmm_imm8, &[X, U8]),
    f(Code::Psrldq_xmm_imm8, &[X, U8]),
    f(Code::Psllq_xmm_imm8, &[X, U8]),
    f(Code::Psrlw_xmm_imm8, &[X, U8]),
    f(Code::Psubusb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movhps_xmm_m64, &[X, M64]),
    f(Code::Movlpd_xmm_m64, &[X, M64]),
    f(Code::Movss_xmm_xmmm32, &[X, Xm32]),
    // more SSE2 integer
    f(Code::Pshuflw_xmm_xmmm128_imm8, &[X, Xm128, U8]),
    f(Code::Pshufhw_xmm_xmmm128_imm8, &[X, Xm128, U8]),
    f(Code::Pslld_xmm_imm8, &[X, U8]),
    f(Code::Psrld_xmm_imm8, &[X, U8]),
    f(Code::Psrlq_xmm_imm8, &[X, U8]),
    f(Code::Psraw_xmm_imm8, &[X, U8]),
    f(Code::Psrad_xmm_imm8, &[X, U8]),
    f(Code::Psllw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Paddd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Paddw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Psubd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Psubw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Psubq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pcmpgtd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pcmpgtw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpckhwd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Punpckhdq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Packuswb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Packsswb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmullw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmulhw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmuludq_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pavgb_xmm_xmmm128, &[X, Xm128]),
    f(Code::Psadbw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pminsw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Pmaxsw_xmm_xmmm128, &[X, Xm128]),
    f(Code::Movntdq_m128_xmm, &[M128, X]),
    f(Code::Movaps_xmmm128_xmm, &[Xm128, X]),
    f(Code::Movhlps_xmm_xmm, &[X, X]),
    f(Code::Movlhps_xmm_xmm, &[X, X]),
    f(Code::Andps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Orps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Andnps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Andpd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Shufps_xmm_xmmm128_imm8, &[X, Xm128, U8]),
    f(Code::Unpcklps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Unpcklpd_xmm_xmmm128, &[X, Xm128]),
    // SSE/SSE2 floating point (printf, awk, strtod)
    f(Code::Movsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Movsd_xmmm64_xmm, &[Xm64, X]),
    f(Code::Movapd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Addsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Subsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Mulsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Divsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Sqrtsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Minsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Maxsd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Addss_xmm_xmmm32, &[X, Xm32]),
    f(Code::Mulss_xmm_xmmm32, &[X, Xm32]),
    f(Code::Divss_xmm_xmmm32, &[X, Xm32]),
    f(Code::Addpd_xmm_xmmm128, &[X, Xm128]),
    f(Code::Mulps_xmm_xmmm128, &[X, Xm128]),
    f(Code::Ucomisd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Comisd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Ucomiss_xmm_xmmm32, &[X, Xm32]),
    f(Code::Cvtsi2sd_xmm_rm64, &[X, Rm64]),
    f(Code::Cvtsi2sd_xmm_rm32, &[X, Rm32]),
    f(Code::Cvtsi2ss_xmm_rm32, &[X, Rm32]),
    f(Code::Cvttsd2si_r64_xmmm64, &[R64, Xm64]),
    f(Code::Cvttsd2si_r32_xmmm64, &[R32, Xm64]),
    f(Code::Cvtsd2si_r64_xmmm64, &[R64, Xm64]),
    f(Code::Cvttss2si_r32_xmmm32, &[R32, Xm32]),
    f(Code::Cvtsd2ss_xmm_xmmm64, &[X, Xm64]),
    f(Code::Cvtss2sd_xmm_xmmm32, &[X, Xm32]),
    f(Code::Cvtdq2pd_xmm_xmmm64, &[X, Xm64]),
    f(Code::Cvttpd2dq_xmm_xmmm128, &[X, Xm128]),
    // more integer forms
    f(Code::Cmovae_r64_rm64, &[R64, Rm64]),
    f(Code::Cmova_r32_rm32, &[R32, Rm32]),
    f(Code::Cmovno_r16_rm16, &[R16, Rm16]),
    f(Code::Cmovns_r64_rm64, &[R64, Rm64]),
    f(Code::Cmovnp_r32_rm32, &[R32, Rm32]),
    f(Code::Cmovge_r64_rm64, &[R64, Rm64]),
    f(Code::Setno_rm8, &[Rm8]),
    f(Code::Setae_rm8, &[Rm8]),
    f(Code::Setne_rm8, &[Rm8]),
    f(Code::Setbe_rm8, &[Rm8]),
    f(Code::Setns_rm8, &[Rm8]),
    f(Code::Setp_rm8, &[Rm8]),
    f(Code::Setge_rm8, &[Rm8]),
    f(Code::Setle_rm8, &[Rm8]),
    f(Code::Adc_rm64_imm8, &[Rm64, S8]),
    f(Code::Sbb_rm8_imm8, &[Rm8, U8]),
    f(Code::Test_rm8_imm8, &[Rm8, U8]),
    f(Code::Test_rm16_r16, &[Rm16, R16]),
    f(Code::Neg_rm16, &[Rm16]),
    f(Code::Not_rm8, &[Rm8]),
    f(Code::Inc_rm32, &[Rm32]),
    f(Code::Dec_rm64, &[Rm64]),
    f(Code::Imul_r16_rm16_imm16, &[R16, Rm16, I16]),
    f(Code::Idiv_rm16, &[Rm16]),
    f(Code::Movzx_r64_rm16, &[R64, Rm16]),
    f(Code::Movsx_r64_rm16, &[R64, Rm16]),
    f(Code::Xchg_rm16_r16, &[Rm16, R16]),
    f(Code::Cmpxchg_rm16_r16, &[Rm16, R16]),
    f(Code::Xadd_rm32_r32, &[Rm32, R32]),
    f(Code::Bt_rm16_r16, &[Rm16, R16]),
    f(Code::Bts_rm16_imm8, &[Rm16, U8]),
    f(Code::Pop_rm64, &[Rm64]),
];

const GPR64: [Register; 14] = [
    Register::RAX,
    Register::RCX,
    Register::RDX,
    Register::RBX,
    Register::RBP,
    Register::RSI,
    Register::RDI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
    Register::R12,
    Register::R13,
    Register::R14,
];

/// The register of `size` bytes that aliases the 64-bit register `r` (SPL/BPL/SIL/DIL, never AH..BH).
pub fn sized(r: Register, size: u32) -> Register {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static TABLE: OnceLock<HashMap<(Register, usize), Register>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        Register::values()
            .filter(|x| x.is_gpr() && !matches!(x, Register::AH | Register::CH | Register::DH | Register::BH))
            .map(|x| ((x.full_register(), x.size()), x))
            .collect()
    });
    let full = r.full_register();
    table.get(&(full, size as usize)).copied().unwrap_or(full)
}

fn gpr(rng: &mut Rng, size: u32) -> Register {
    sized(*rng.pick(&GPR64), size)
}

fn xmm(rng: &mut Rng) -> Register {
    const XMM: [Register; 16] = [
        Register::XMM0,
        Register::XMM1,
        Register::XMM2,
        Register::XMM3,
        Register::XMM4,
        Register::XMM5,
        Register::XMM6,
        Register::XMM7,
        Register::XMM8,
        Register::XMM9,
        Register::XMM10,
        Register::XMM11,
        Register::XMM12,
        Register::XMM13,
        Register::XMM14,
        Register::XMM15,
    ];
    XMM[rng.below(16) as usize]
}

/// A memory operand `[r15 + disp]` of `size` bytes inside the random-memory part of the window, aligned to
/// `align` unless `misalign` is set.
fn mem(rng: &mut Rng, size: u64, align: u64, misalign: bool) -> MemoryOperand {
    let lo = DATA_BASE as i64 - WINDOW_PTR as i64;
    let hi = (DATA_BASE + RANDOM_MEM_END - size) as i64 - WINDOW_PTR as i64;
    let mut d = lo + rng.below((hi - lo + 1) as u64) as i64;
    if rng.chance(1, 3) {
        // Near a page boundary (accesses that cross it).
        let page = (DATA_BASE + 0x1000 * (1 + rng.below(2))) as i64 - WINDOW_PTR as i64;
        d = page - rng.below(size + 1) as i64;
    }
    if !misalign {
        d -= (d + WINDOW_PTR as i64).rem_euclid(align as i64);
        if d < lo {
            d += align as i64;
        }
    }
    MemoryOperand::with_base_displ(Register::R15, d)
}

fn shift_count(rng: &mut Rng) -> i64 {
    let r = rng.below(256) as i64;
    *rng.pick(&[0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 255, r])
}

/// Chooses operands for `form`; `None` if the form cannot be built (a corpus bug, reported by tests).
pub fn random_instruction(rng: &mut Rng, form: &Form) -> Result<Vec<u8>, String> {
    let mut ops = Vec::new();
    for k in form.ops {
        let o = match k {
            R8 => Opnd::Reg(gpr(rng, 1)),
            R16 => Opnd::Reg(gpr(rng, 2)),
            R32 => Opnd::Reg(gpr(rng, 4)),
            R64 => Opnd::Reg(gpr(rng, 8)),
            Rm8 | Rm16 | Rm32 | Rm64 => {
                let size = match k {
                    Rm8 => 1,
                    Rm16 => 2,
                    Rm32 => 4,
                    _ => 8,
                };
                if rng.chance(1, 3) {
                    Opnd::Mem(mem(rng, size, 1, true))
                } else {
                    Opnd::Reg(gpr(rng, size as u32))
                }
            }
            M => Opnd::Mem(mem(rng, 8, 1, true)),
            M64 => Opnd::Mem(mem(rng, 8, 1, true)),
            M128 => Opnd::Mem(mem(rng, 16, 16, false)),
            S8 => Opnd::Imm(i64::from(rng.next_u64() as i8)),
            U8 => Opnd::Imm(shift_count(rng)),
            I16 => Opnd::Imm(i64::from(random_value(rng) as i16)),
            I32 => Opnd::Imm(i64::from(random_value(rng) as i32)),
            I64 => Opnd::Imm64(random_value(rng)),
            Cl => Opnd::Reg(Register::CL),
            One => Opnd::Imm(1),
            X => Opnd::Reg(xmm(rng)),
            Xm128 => {
                if rng.chance(1, 3) {
                    let mis = rng.chance(1, 16);
                    Opnd::Mem(mem(rng, 16, 16, mis))
                } else {
                    Opnd::Reg(xmm(rng))
                }
            }
            Xmu128 => {
                if rng.chance(1, 2) {
                    Opnd::Mem(mem(rng, 16, 1, true))
                } else {
                    Opnd::Reg(xmm(rng))
                }
            }
            Xm64 | Xm32 => {
                if rng.chance(1, 3) {
                    Opnd::Mem(mem(rng, if *k == Xm64 { 8 } else { 4 }, 1, true))
                } else {
                    Opnd::Reg(xmm(rng))
                }
            }
        };
        ops.push(o);
    }
    let instr = make(form.code, &ops)?;
    encode(&instr)
}

/// Random initial state: random GPRs (r15 = [`WINDOW_PTR`], rsp = [`STACK_TOP`]), flags, XMM and window.
pub fn random_state(rng: &mut Rng, case: &mut Case) {
    for (i, g) in case.gprs.iter_mut().enumerate() {
        *g = match i {
            RSP => STACK_TOP,
            15 => WINDOW_PTR,
            _ => random_value(rng),
        };
    }
    // String instructions use rsi/rdi: often inside the window (else they fault on a guard or a
    // protected page, which is compared too).
    for r in [crate::case::RSI, crate::case::RDI] {
        if rng.chance(1, 2) {
            case.gprs[r] = DATA_BASE + 0x100 + rng.below(0x2400);
        }
    }
    // CL is a shift count in many forms: make the interesting counts common.
    if rng.chance(1, 2) {
        case.gprs[1] = (case.gprs[1] & !0xff) | shift_count(rng) as u64;
    }
    case.rflags = random_flags(rng);
    // MXCSR: usually the default; sometimes another rounding mode, FTZ/DAZ, or an unmasked exception
    // (raises #XM).
    case.mxcsr = match rng.below(8) {
        0 => 0x1f80 | ((rng.below(4) as u32) << 13),
        1 => 0x1f80 | 0x8000 | 0x40,
        2 if rng.chance(1, 4) => 0x1f80 & !(1u32 << (7 + rng.below(6))),
        _ => 0x1f80,
    };
    for x in case.xmm.iter_mut() {
        *x = random_xmm(rng);
    }
    for chunk in case.mem.chunks_mut(8) {
        let v = if rng.chance(1, 4) { random_value(rng) } else { rng.next_u64() };
        let n = chunk.len();
        chunk.copy_from_slice(&v.to_le_bytes()[..n]);
    }
}

/// A random string instruction: MOVS/STOS/LODS/CMPS/SCAS of a random size, maybe with a REP prefix
/// (RCX is then made small most of the time).
fn random_string(rng: &mut Rng, case: &mut Case) -> Vec<u8> {
    let op = *rng.pick(&[0xa4u8, 0xa6, 0xaa, 0xac, 0xae]);
    let size = *rng.pick(&[1u32, 2, 4, 8]);
    let mut b = Vec::new();
    match rng.below(3) {
        0 => {}
        1 => b.push(0xf3),
        _ => b.push(if op == 0xa6 || op == 0xae { 0xf2 } else { 0xf3 }),
    }
    if !b.is_empty() && rng.chance(3, 4) {
        case.gprs[crate::case::RCX] = rng.below(40);
    }
    if size == 2 {
        b.push(0x66);
    }
    if size == 8 {
        b.push(0x48);
    }
    b.push(if size == 1 { op } else { op + 1 });
    b
}

/// Random case number `index` of `seed`: 1..=8 instructions drawn from [`FORMS`], now and then a string
/// instruction or a forward conditional jump over the next instruction.
pub fn random_case(seed: u64, index: u64) -> Case {
    let mut rng = Rng::new(seed.wrapping_mul(0x1000_0000_01b3) ^ index);
    let mut case = Case::new("random", &format!("{seed}/{index}"));
    random_state(&mut rng, &mut case);
    let n = 1 + rng.below(8);
    let mut pending_jcc: Option<u8> = None;
    while (case.insns.len() as u64) < n {
        if pending_jcc.is_none() && case.insns.len() as u64 + 2 <= n && rng.chance(1, 12) {
            pending_jcc = Some(rng.below(16) as u8);
            continue;
        }
        let bytes = if rng.chance(1, 16) {
            random_string(&mut rng, &mut case)
        } else {
            // Encoding failures (an operand combination iced refuses) are skipped; unit tests check that
            // every form encodes.
            // One instruction in four is SSE (so integer sequences stay long enough to matter while
            // krr-emu lacks some SSE forms).
            let sse = rng.chance(1, 4);
            let form = loop {
                let f = rng.pick(FORMS);
                if f.is_sse() == sse {
                    break f;
                }
            };
            match random_instruction(&mut rng, form) {
                Ok(b) => b,
                Err(_) => continue,
            }
        };
        if let Some(cc) = pending_jcc.take() {
            // jcc rel8 over the instruction that follows.
            case.insns.push(vec![0x70 + cc, bytes.len() as u8]);
        }
        case.insns.push(bytes);
    }
    case
}

/// `count` random cases of `seed`.
pub fn random_cases(seed: u64, count: u64) -> Vec<Case> {
    (0..count).map(|i| random_case(seed, i)).collect()
}

/// Sanity bound used by tests: the window size.
pub const WINDOW: std::ops::Range<u64> = DATA_BASE..DATA_BASE + DATA_SIZE as u64;

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{InstructionInfoFactory, OpAccess, OpKind};

    #[test]
    fn deterministic_by_seed() {
        for i in 0..200 {
            assert_eq!(random_case(7, i), random_case(7, i));
        }
        let a: Vec<_> = (0..50).map(|i| random_case(1, i).insns).collect();
        let b: Vec<_> = (0..50).map(|i| random_case(2, i).insns).collect();
        assert_ne!(a, b, "different seeds give different sequences");
        assert_eq!(random_cases(3, 10), random_cases(3, 10));
    }

    #[test]
    fn every_form_encodes() {
        let mut rng = Rng::new(11);
        for form in FORMS {
            for _ in 0..32 {
                let b = random_instruction(&mut rng, form).unwrap_or_else(|e| panic!("{:?}: {e}", form.code));
                let mut d = Decoder::with_ip(64, &b, CODE_BASE, DecoderOptions::NONE);
                let i = d.decode();
                assert_eq!(i.code(), form.code, "{:02x?} decodes as {:?}", b, i.code());
                assert_eq!(i.len(), b.len());
            }
        }
    }

    /// Every explicit memory operand of a random sequence is `[r15 + disp]` inside the window's random
    /// part, and no instruction writes r15 (the base) or names rsp explicitly.
    #[test]
    fn memory_operands_inside_window() {
        let mut info = InstructionInfoFactory::new();
        for i in 0..3000 {
            let case = random_case(42, i);
            assert_eq!(case.gprs[15], WINDOW_PTR);
            assert_eq!(case.gprs[RSP], STACK_TOP);
            assert!(!case.insns.is_empty() && case.insns.len() <= 8);
            for b in &case.insns {
                let mut d = Decoder::with_ip(64, b, CODE_BASE, DecoderOptions::NONE);
                let ins = d.decode();
                for op in 0..ins.op_count() {
                    if ins.op_kind(op) == OpKind::Memory {
                        assert_eq!(ins.memory_base(), Register::R15, "{ins}");
                        assert_eq!(ins.memory_index(), Register::None, "{ins}");
                        let size = ins.memory_size().size().max(1) as u64;
                        let addr = WINDOW_PTR.wrapping_add(ins.memory_displacement64());
                        assert!(
                            addr >= DATA_BASE && addr + size <= DATA_BASE + RANDOM_MEM_END,
                            "{ins}: {addr:#x}+{size} outside the window"
                        );
                    }
                    if ins.op_kind(op) == OpKind::Register {
                        let r = ins.op_register(op).full_register();
                        assert!(r != Register::RSP && r != Register::R15, "{ins} names {r:?}");
                    }
                }
                for u in info.info(&ins).used_registers() {
                    if u.register().full_register() == Register::R15 {
                        assert!(matches!(u.access(), OpAccess::Read), "{ins} writes r15");
                    }
                }
            }
        }
    }

    #[test]
    fn stack_stays_in_window() {
        // At most 8 pushes of 8 bytes below STACK_TOP, which leaves the random-memory part alone.
        const { assert!(STACK_TOP - 8 * 8 >= DATA_BASE + RANDOM_MEM_END) };
        const { assert!(STACK_TOP <= DATA_BASE + DATA_SIZE as u64) };
    }

    #[test]
    fn sized_registers() {
        assert_eq!(sized(Register::RAX, 1), Register::AL);
        assert_eq!(sized(Register::RSI, 1), Register::SIL);
        assert_eq!(sized(Register::R8, 1), Register::R8L);
        assert_eq!(sized(Register::R14, 2), Register::R14W);
        assert_eq!(sized(Register::RBP, 4), Register::EBP);
        assert_eq!(sized(Register::R9, 8), Register::R9);
    }

    #[test]
    fn split_and_disasm() {
        let code = asm(|a| {
            use iced_x86::code_asm::*;
            a.add(rax, rcx)?;
            a.pcmpeqb(xmm0, xmm1)
        });
        assert_eq!(code, vec![vec![0x48, 0x01, 0xc8], vec![0x66, 0x0f, 0x74, 0xc1]]);
        assert_eq!(disasm(&code[0], CODE_BASE), "add rax,rcx");
    }
}
