//! Instruction families and the dispatch table that maps an iced-x86 `Code` to its handler.
//!
//! `handler_for` is the single source of truth for what is implemented: the executor caches
//! its result per decoded instruction and `coverage::is_implemented` asks the same function.

use iced_x86::{Code, ConditionCode, EncodingKind, Instruction, OpKind, Register};

use crate::cpu::{flags, SegReg};
use crate::error::{EmuError, ExResult};
use crate::exec::Ctx;

pub(crate) mod alu;
pub(crate) mod bit;
pub(crate) mod control;
pub(crate) mod data;
pub(crate) mod muldiv;
pub(crate) mod shift;
pub(crate) mod sse;
pub(crate) mod ssefp;
pub(crate) mod ssepacked;
pub(crate) mod stack;
pub(crate) mod string;
pub(crate) mod system;
pub(crate) mod x87;
pub(crate) mod x87store;

/// Executes one decoded instruction. RIP already points at the next instruction.
pub(crate) type Handler = fn(&mut Ctx<'_>, &Decoded) -> ExResult;

/// A decoded instruction plus operand facts precomputed once per decode for the fast
/// handlers. Derefs to the iced `Instruction`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decoded {
    pub(crate) instr: Instruction,
    /// GPR index of operand 0 when it is a register.
    pub(crate) r0: usize,
    /// GPR index of operand 1 when it is a register.
    pub(crate) r1: usize,
    /// Operand size in bytes of operand 0 when it is a GPR.
    pub(crate) size: usize,
    /// Immediate of operand 1, or the near branch target of operand 0.
    pub(crate) imm: u64,
    /// RIP of the next instruction, wrapped to the code size.
    pub(crate) next: u64,
}

impl std::ops::Deref for Decoded {
    type Target = Instruction;
    #[inline(always)]
    fn deref(&self) -> &Instruction {
        &self.instr
    }
}

/// True for immediate operand kinds.
fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

impl Decoded {
    pub(crate) fn new(instr: Instruction) -> Self {
        let next = match instr.code_size() {
            iced_x86::CodeSize::Code16 => instr.next_ip() & 0xffff,
            iced_x86::CodeSize::Code32 => instr.next_ip() & 0xffff_ffff,
            _ => instr.next_ip(),
        };
        let mut d = Decoded { instr, r0: 0, r1: 0, size: 0, imm: 0, next };
        if instr.op_count() >= 1 {
            match instr.op_kind(0) {
                OpKind::Register => {
                    let (idx, size, high) = gpr_info(instr.op_register(0));
                    if !high {
                        d.r0 = idx;
                        d.size = size;
                    }
                }
                OpKind::NearBranch64 => d.imm = instr.near_branch64(),
                _ => {}
            }
        }
        if instr.op_count() >= 2 {
            let k = instr.op_kind(1);
            if k == OpKind::Register {
                let (idx, size, high) = gpr_info(instr.op_register(1));
                if !high && size == d.size {
                    d.r1 = idx;
                }
            } else if is_imm(k) {
                d.imm = instr.immediate(1);
            }
        }
        d
    }

    /// Operand 0 is a GPR other than AH..BH.
    pub(crate) fn op0_plain_gpr(&self) -> bool {
        self.instr.op_count() >= 1
            && self.instr.op_kind(0) == OpKind::Register
            && matches!(gpr_info(self.instr.op_register(0)), (_, 1..=8, false))
    }

    /// Operand 1 is a GPR other than AH..BH, of operand 0's size.
    pub(crate) fn op1_plain_gpr(&self) -> bool {
        self.instr.op_count() >= 2
            && self.instr.op_kind(1) == OpKind::Register
            && matches!(gpr_info(self.instr.op_register(1)), (_, s, false) if s == self.size && s > 0)
    }

    /// Operand 1 is an immediate.
    pub(crate) fn op1_imm(&self) -> bool {
        self.instr.op_count() >= 2 && is_imm(self.instr.op_kind(1))
    }
}

/// Swaps in a fast handler for common register/immediate forms; same semantics as `h`.
pub(crate) fn specialize(d: &Decoded, h: Handler) -> Handler {
    alu::specialize(d)
        .or_else(|| shift::specialize(d))
        .or_else(|| stack::specialize(d))
        .or_else(|| data::specialize(d))
        .or_else(|| control::specialize(d))
        .unwrap_or(h)
}

impl Ctx<'_> {
    /// Writes a GPR by index with x86 size rules (not AH..BH).
    #[inline(always)]
    pub(crate) fn set_gpr(&mut self, idx: usize, size: usize, v: u64) {
        let old = self.cpu.gpr[idx & 15];
        self.cpu.gpr[idx & 15] = match size {
            8 => v,
            4 => v & 0xffff_ffff,
            2 => (old & !0xffff) | (v & 0xffff),
            _ => (old & !0xff) | (v & 0xff),
        };
    }
}

/// True if the instruction can neither change what the fetch depends on (CS, CPL, EFER, CR0,
/// CR3, CR4, the TLB) nor deliver an event when it retires: general-purpose arithmetic, data
/// movement between GPRs, memory and immediates, near branches, calls and returns. The
/// executor keeps its fetch context across such instructions (a fault drops it anyway).
pub(crate) fn is_plain(d: &Decoded) -> bool {
    use iced_x86::Mnemonic as M;
    let m = d.mnemonic();
    let listed = matches!(
        m,
        M::Add
            | M::Or
            | M::Adc
            | M::Sbb
            | M::And
            | M::Sub
            | M::Xor
            | M::Cmp
            | M::Test
            | M::Inc
            | M::Dec
            | M::Neg
            | M::Not
            | M::Lea
            | M::Mov
            | M::Movzx
            | M::Movsx
            | M::Movsxd
            | M::Shl
            | M::Shr
            | M::Sar
            | M::Sal
            | M::Rol
            | M::Ror
            | M::Rcl
            | M::Rcr
            | M::Shld
            | M::Shrd
            | M::Imul
            | M::Mul
            | M::Div
            | M::Idiv
            | M::Jmp
            | M::Call
            | M::Ret
            | M::Push
            | M::Pop
            | M::Nop
            | M::Xchg
            | M::Xadd
            | M::Cmpxchg
            | M::Bt
            | M::Bts
            | M::Btr
            | M::Btc
            | M::Bsf
            | M::Bsr
            | M::Bswap
            | M::Cbw
            | M::Cwde
            | M::Cdqe
            | M::Cwd
            | M::Cdq
            | M::Cqo
            | M::Leave
    ) || d.condition_code() != iced_x86::ConditionCode::None
        && !matches!(m, M::Loope | M::Loopne);
    if !listed
        || matches!(
            d.code(),
            Code::Jmp_m1616
                | Code::Jmp_m1632
                | Code::Jmp_m1664
                | Code::Call_m1616
                | Code::Call_m1632
                | Code::Call_m1664
                | Code::Jmp_ptr1616
                | Code::Jmp_ptr1632
                | Code::Call_ptr1616
                | Code::Call_ptr1632
        )
    {
        return false;
    }
    (0..d.op_count()).all(|n| match d.op_kind(n) {
        OpKind::Register => d.op_register(n).is_gpr(),
        OpKind::FarBranch16 | OpKind::FarBranch32 => false,
        _ => true,
    })
}

/// The handler of anything `handler_for` does not know: a precise error, never a skip.
pub(crate) fn unimplemented_handler(ctx: &mut Ctx<'_>, i: &Decoded) -> ExResult {
    let i: &Instruction = i;
    let mut text = String::new();
    let mut f = iced_x86::IntelFormatter::new();
    iced_x86::Formatter::format(&mut f, i, &mut text);
    let bytes = ctx.instr_bytes(i.len());
    Err(EmuError::Unimplemented { rip: ctx.start_rip, bytes, mnemonic: text }.into())
}

/// Maps an instruction code to its handler, `None` if krr-emu does not implement it.
pub(crate) fn handler_for(code: Code) -> Option<Handler> {
    if code.encoding() != EncodingKind::Legacy {
        return None;
    }
    let m = code.mnemonic();
    alu::handler(code, m)
        .or_else(|| shift::handler(code, m))
        .or_else(|| bit::handler(code, m))
        .or_else(|| muldiv::handler(code, m))
        .or_else(|| data::handler(code, m))
        .or_else(|| stack::handler(code, m))
        .or_else(|| control::handler(code, m))
        .or_else(|| string::handler(code, m))
        .or_else(|| system::handler(code, m))
        .or_else(|| sse::handler(code, m))
        .or_else(|| ssefp::handler(code, m))
        .or_else(|| ssepacked::handler(code, m))
        .or_else(|| x87::handler(code, m))
        .or_else(|| x87store::handler(code, m))
}

/// Mask of the low `size` bytes.
#[inline(always)]
pub(crate) fn mask(size: usize) -> u64 {
    u64::MAX >> (64 - size * 8)
}

/// Sign bit of a `size`-byte value.
#[inline(always)]
pub(crate) fn sign_bit(size: usize) -> u64 {
    1u64 << (size * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v`.
#[inline]
pub(crate) fn sext(v: u64, size: usize) -> u64 {
    let sh = 64 - size * 8;
    (((v << sh) as i64) >> sh) as u64
}

/// (index, size in bytes, is AH/CH/DH/BH) of a general purpose register.
#[inline(always)]
pub(crate) fn gpr_info(r: Register) -> (usize, usize, bool) {
    let e = GPR_TABLE[(r as usize) & 0xff];
    (usize::from(e.0), usize::from(e.1), e.2)
}

/// `gpr_info` as a table indexed by the iced `Register` value (size 0 = not a GPR).
static GPR_TABLE: [(u8, u8, bool); 256] = {
    let mut t = [(0u8, 0u8, false); 256];
    let mut n = 1;
    while n <= 68 {
        t[n] = match n {
            1..=4 => ((n - 1) as u8, 1, false),
            5..=8 => ((n - 5) as u8, 1, true),
            9..=20 => ((n - 5) as u8, 1, false),
            21..=36 => ((n - 21) as u8, 2, false),
            37..=52 => ((n - 37) as u8, 4, false),
            _ => ((n - 53) as u8, 8, false),
        };
        n += 1;
    }
    t
};

/// The accumulator of `size` bytes: AL, AX, EAX or RAX.
#[inline]
pub(crate) fn acc_reg(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// Segment register enum for an iced segment register.
#[inline]
pub(crate) fn seg_of(r: Register) -> SegReg {
    match r {
        Register::ES => SegReg::Es,
        Register::CS => SegReg::Cs,
        Register::SS => SegReg::Ss,
        Register::FS => SegReg::Fs,
        Register::GS => SegReg::Gs,
        _ => SegReg::Ds,
    }
}

/// Evaluates a condition code against RFLAGS.
#[inline]
pub(crate) fn cond(rf: u64, cc: ConditionCode) -> bool {
    let cf = rf & flags::CF != 0;
    let zf = rf & flags::ZF != 0;
    let sf = rf & flags::SF != 0;
    let of = rf & flags::OF != 0;
    let pf = rf & flags::PF != 0;
    match cc {
        ConditionCode::None => true,
        ConditionCode::o => of,
        ConditionCode::no => !of,
        ConditionCode::b => cf,
        ConditionCode::ae => !cf,
        ConditionCode::e => zf,
        ConditionCode::ne => !zf,
        ConditionCode::be => cf || zf,
        ConditionCode::a => !cf && !zf,
        ConditionCode::s => sf,
        ConditionCode::ns => !sf,
        ConditionCode::p => pf,
        ConditionCode::np => !pf,
        ConditionCode::l => sf != of,
        ConditionCode::ge => sf == of,
        ConditionCode::le => zf || sf != of,
        ConditionCode::g => !zf && sf == of,
    }
}

impl Ctx<'_> {
    /// Reads a GPR (any width; AH..BH included), zero-extended.
    #[inline]
    pub(crate) fn reg(&self, r: Register) -> u64 {
        let (i, size, high) = gpr_info(r);
        let v = self.cpu.gpr[i];
        match size {
            1 if high => (v >> 8) & 0xff,
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }
    }

    /// Writes a GPR with x86 merge rules (8/16-bit merge, 32-bit zero-extends).
    #[inline]
    pub(crate) fn set_reg(&mut self, r: Register, v: u64) {
        let (i, size, high) = gpr_info(r);
        let old = self.cpu.gpr[i];
        self.cpu.gpr[i] = match size {
            1 if high => (old & !0xff00) | ((v & 0xff) << 8),
            1 => (old & !0xff) | (v & 0xff),
            2 => (old & !0xffff) | (v & 0xffff),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Effective address (segment offset) of the memory operand.
    #[inline]
    pub(crate) fn ea(&self, i: &Instruction) -> u64 {
        let base = i.memory_base();
        if base == Register::RIP {
            return i.memory_displacement64();
        }
        if base == Register::EIP {
            return i.memory_displacement64() & 0xffff_ffff;
        }
        let mut a = i.memory_displacement64();
        let mut asize = 0;
        if base != Register::None {
            let (_, s, _) = gpr_info(base);
            asize = s;
            a = a.wrapping_add(self.reg(base));
        }
        let idx = i.memory_index();
        if idx != Register::None {
            let (_, s, _) = gpr_info(idx);
            asize = s;
            a = a.wrapping_add(self.reg(idx).wrapping_mul(u64::from(i.memory_index_scale())));
        }
        if asize == 0 {
            asize = match self.cpu.bitness() {
                64 => 8,
                32 => 4,
                _ => 2,
            };
            if i.memory_displ_size() == 4 && asize == 8 && i.memory_displacement64() >> 32 == 0 {
                asize = 4;
            }
        }
        match asize {
            2 => a & 0xffff,
            4 => a & 0xffff_ffff,
            _ => a,
        }
    }

    /// Segment of the memory operand.
    #[inline]
    pub(crate) fn mseg(&self, i: &Instruction) -> SegReg {
        seg_of(i.memory_segment())
    }

    /// Size in bytes of operand `n` (register or memory; immediates take operand 0's size).
    #[inline]
    pub(crate) fn op_size(&self, i: &Instruction, n: u32) -> usize {
        // Clamped so odd operand kinds can never make `mask`/`sext` shift out of range.
        match i.op_kind(n) {
            OpKind::Register => gpr_info(i.op_register(n)).1.clamp(1, 8),
            OpKind::Memory => i.memory_size().size().clamp(1, 8),
            _ if n > 0 => self.op_size(i, 0),
            _ => 8,
        }
    }

    /// Reads operand `n`, zero-extended (immediates are already sign-extended by the decoder
    /// to the operand size; callers mask).
    #[inline(always)]
    pub(crate) fn read_op(&mut self, i: &Instruction, n: u32) -> ExResult<u64> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg(i.op_register(n))),
            OpKind::Memory => self.read_op_mem(i, false),
            _ => Ok(i.immediate(n)),
        }
    }

    /// Reads operand `n` that will be written back (memory: checks write permission).
    #[inline(always)]
    pub(crate) fn read_op_rmw(&mut self, i: &Instruction, n: u32) -> ExResult<u64> {
        match i.op_kind(n) {
            OpKind::Register => Ok(self.reg(i.op_register(n))),
            OpKind::Memory => self.read_op_mem(i, true),
            _ => Ok(i.immediate(n)),
        }
    }

    #[inline(never)]
    pub(crate) fn read_op_mem(&mut self, i: &Instruction, rmw: bool) -> ExResult<u64> {
        let size = i.memory_size().size().clamp(1, 8);
        let off = self.ea(i);
        if rmw {
            self.read_mem_rmw(self.mseg(i), off, size)
        } else {
            self.read_mem(self.mseg(i), off, size)
        }
    }

    /// Writes operand `n` (register or memory).
    #[inline(always)]
    pub(crate) fn write_op(&mut self, i: &Instruction, n: u32, v: u64) -> ExResult {
        match i.op_kind(n) {
            OpKind::Register => {
                self.set_reg(i.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => self.write_op_mem(i, v),
            _ => Err(crate::error::Exception::ud().into()),
        }
    }

    #[inline(never)]
    pub(crate) fn write_op_mem(&mut self, i: &Instruction, v: u64) -> ExResult {
        let size = i.memory_size().size().clamp(1, 8);
        let off = self.ea(i);
        self.write_mem(self.mseg(i), off, size, v)
    }

    /// Sets the six status flags from `f` (only bits in STATUS are used).
    #[inline]
    pub(crate) fn set_status(&mut self, f: u64) {
        self.cpu.rflags = (self.cpu.rflags & !flags::STATUS) | (f & flags::STATUS);
    }

    /// Whether the CPU gives Intel's answers where the vendors differ ([`crate::vendor`]).
    #[inline]
    pub(crate) fn intel(&self) -> bool {
        self.cpu.features.vendor == crate::vendor::Vendor::Intel
    }

    /// Effective operand size for stack operations: 8 in 64-bit mode unless 16-bit forms.
    #[inline]
    pub(crate) fn stack_addr_size(&self) -> usize {
        if self.cpu.mode() == crate::cpu::Mode::Long64 {
            8
        } else if self.cpu.seg[SegReg::Ss as usize].db {
            4
        } else {
            2
        }
    }

    /// Pushes `size` bytes.
    pub(crate) fn push(&mut self, v: u64, size: usize) -> ExResult {
        let sa = self.stack_addr_size();
        let sp = self.cpu.gpr[4].wrapping_sub(size as u64);
        let off = sp & mask(sa);
        self.write_mem(SegReg::Ss, off, size, v)?;
        self.set_sp(sp, sa);
        Ok(())
    }

    /// Reads the stack at RSP+`delta` without popping.
    pub(crate) fn peek(&mut self, delta: u64, size: usize) -> ExResult<u64> {
        let sa = self.stack_addr_size();
        let sp = self.cpu.gpr[4].wrapping_add(delta);
        self.read_mem(SegReg::Ss, sp & mask(sa), size)
    }

    /// Sets RSP/ESP/SP according to the stack address size.
    #[inline]
    pub(crate) fn set_sp(&mut self, sp: u64, sa: usize) {
        let old = self.cpu.gpr[4];
        self.cpu.gpr[4] = match sa {
            8 => sp,
            4 => sp & 0xffff_ffff,
            _ => (old & !0xffff) | (sp & 0xffff),
        };
    }

    /// Is the code running in 64-bit mode?
    #[inline]
    pub(crate) fn long64(&self) -> bool {
        self.cpu.mode() == crate::cpu::Mode::Long64
    }
}
