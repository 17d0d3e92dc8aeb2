//! Static coverage: does krr-emu implement a decoded instruction?
//!
//! Answered by the executor's own dispatch table (`insn::handler_for`), so it cannot drift from
//! what `Cpu::step` runs.

use iced_x86::Instruction;

/// True if `Cpu::step` has a handler for this instruction's code (it may still raise #UD or
/// #GP at run time, as hardware would, e.g. LZCNT without the feature runs as BSR).
pub fn is_implemented(instr: &Instruction) -> bool {
    !instr.is_invalid() && crate::insn::handler_for(instr.code()).is_some()
}

/// Per-mnemonic static coverage of a stream of instructions.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    /// mnemonic (lower case) -> (occurrences, occurrences implemented)
    pub by_mnemonic: std::collections::BTreeMap<String, (u64, u64)>,
    /// Byte sequences that do not decode.
    pub invalid: u64,
}

impl Coverage {
    /// Decodes `code` (loaded at `ip`) linearly and counts every instruction.
    pub fn add_code(&mut self, bitness: u32, code: &[u8], ip: u64) {
        let mut dec = iced_x86::Decoder::with_ip(bitness, code, ip, iced_x86::DecoderOptions::NONE);
        let mut instr = Instruction::default();
        while dec.can_decode() {
            dec.decode_out(&mut instr);
            if instr.is_invalid() {
                self.invalid += 1;
                continue;
            }
            let name = format!("{:?}", instr.mnemonic()).to_lowercase();
            let e = self.by_mnemonic.entry(name).or_default();
            e.0 += 1;
            if is_implemented(&instr) {
                e.1 += 1;
            }
        }
    }

    /// (mnemonics fully implemented, mnemonics seen, % of instructions implemented).
    pub fn summary(&self) -> (usize, usize, f64) {
        let full = self.by_mnemonic.values().filter(|(n, k)| n == k).count();
        let total: u64 = self.by_mnemonic.values().map(|v| v.0).sum();
        let done: u64 = self.by_mnemonic.values().map(|v| v.1).sum();
        let pct = if total == 0 { 100.0 } else { done as f64 * 100.0 / total as f64 };
        (full, self.by_mnemonic.len(), pct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE).decode()
    }

    #[test]
    fn coverage_counts() {
        let mut c = Coverage::default();
        // add rax, rbx; add rax, rbx; xgetbv; (truncated) 0x48
        c.add_code(64, &[0x48, 0x01, 0xd8, 0x48, 0x01, 0xd8, 0x0f, 0x01, 0xd0, 0x48], 0);
        assert_eq!(c.by_mnemonic["add"], (2, 2));
        assert_eq!(c.by_mnemonic["xgetbv"], (1, 0));
        assert_eq!(c.invalid, 1);
        let (full, seen, pct) = c.summary();
        assert_eq!((full, seen), (1, 2));
        assert!((pct - 200.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn known_and_unknown() {
        assert!(is_implemented(&decode(&[0x48, 0x01, 0xd8]))); // add rax, rbx
        assert!(is_implemented(&decode(&[0x0f, 0x05]))); // syscall
        assert!(!is_implemented(&decode(&[0xc5, 0xfd, 0x6f, 0x00]))); // vmovdqa ymm0, [rax]
        assert!(!is_implemented(&decode(&[0x0f, 0x01, 0xd0]))); // xgetbv (no XSAVE offered)
        assert!(!is_implemented(&decode(&[0x06]))); // invalid in 64-bit mode
    }
}
