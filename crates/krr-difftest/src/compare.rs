//! Comparing the two sides and reporting.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::case::{Case, End, Failure, Outcome, RunResult, GPR_NAMES};
use crate::gen::disasm;
use crate::layout::{CODE_BASE, DATA_BASE};

/// Something that runs a prefix of a case (the KVM vCPU or krr-emu).
pub trait Runner {
    /// Runs the first `k` instructions of `case` followed by the final `out`.
    fn run_prefix(&mut self, case: &Case, k: usize) -> RunResult;
}

impl Runner for crate::kvm::KvmRunner {
    fn run_prefix(&mut self, case: &Case, k: usize) -> RunResult {
        crate::kvm::KvmRunner::run_prefix(self, case, k)
    }
}

/// Differences between two outcomes, one line each (empty: they agree).
pub fn diff(kvm: &Outcome, emu: &Outcome) -> Vec<String> {
    let mut d = Vec::new();
    if kvm.end != emu.end {
        d.push(format!("end: kvm {} | emu {}", end_str(&kvm.end), end_str(&emu.end)));
    }
    if kvm.rip != emu.rip {
        d.push(format!("rip: kvm {:#x} | emu {:#x}", kvm.rip, emu.rip));
    }
    if kvm.rflags != emu.rflags {
        d.push(format!(
            "rflags: kvm {:#x} [{}] | emu {:#x} [{}] (differ: {})",
            kvm.rflags,
            flag_names(kvm.rflags),
            emu.rflags,
            flag_names(emu.rflags),
            flag_names(kvm.rflags ^ emu.rflags)
        ));
    }
    for (i, name) in GPR_NAMES.iter().enumerate() {
        if kvm.gprs[i] != emu.gprs[i] {
            d.push(format!("{name}: kvm {:#018x} | emu {:#018x}", kvm.gprs[i], emu.gprs[i]));
        }
    }
    for i in 0..16 {
        if kvm.xmm[i] != emu.xmm[i] {
            d.push(format!("xmm{i}: kvm {:#034x} | emu {:#034x}", kvm.xmm[i], emu.xmm[i]));
        }
    }
    if kvm.mxcsr != emu.mxcsr {
        d.push(format!("mxcsr: kvm {:#x} | emu {:#x}", kvm.mxcsr, emu.mxcsr));
    }
    let (a, b) = (&kvm.x87, &emu.x87);
    if a.fcw != b.fcw {
        d.push(format!("fcw: kvm {:#06x} | emu {:#06x}", a.fcw, b.fcw));
    }
    if a.fsw != b.fsw {
        d.push(format!("fsw: kvm {:#06x} | emu {:#06x}", a.fsw, b.fsw));
    }
    if a.ftw != b.ftw {
        d.push(format!("ftw: kvm {:#04x} | emu {:#04x}", a.ftw, b.ftw));
    }
    for i in 0..8 {
        if a.st[i] != b.st[i] {
            d.push(format!("st{i}: kvm {:02x?} | emu {:02x?}", a.st[i], b.st[i]));
        }
    }
    let mut shown = 0;
    let mut i = 0;
    while i < kvm.mem.len().min(emu.mem.len()) {
        if kvm.mem[i] != emu.mem[i] {
            let end = (i + 16).min(kvm.mem.len());
            if shown < 4 {
                d.push(format!(
                    "mem {:#x}: kvm {:02x?} | emu {:02x?}",
                    DATA_BASE + i as u64,
                    &kvm.mem[i..end],
                    &emu.mem[i..end]
                ));
            }
            shown += 1;
            i = end;
        } else {
            i += 1;
        }
    }
    if shown > 4 {
        d.push(format!("mem: {} more differing 16-byte runs", shown - 4));
    }
    d
}

fn end_str(e: &End) -> String {
    match e {
        End::Done => "done".into(),
        End::Exception { vector, error_code, cr2 } => {
            let mut s = format!("#{}", vector_name(*vector));
            if let Some(ec) = error_code {
                let _ = write!(s, "({ec:#x})");
            }
            if let Some(a) = cr2 {
                let _ = write!(s, " cr2={a:#x}");
            }
            s
        }
    }
}

/// Mnemonic of an exception vector.
pub fn vector_name(v: u8) -> String {
    const N: [&str; 22] = [
        "DE", "DB", "NMI", "BP", "OF", "BR", "UD", "NM", "DF", "CSO", "TS", "NP", "SS", "GP", "PF", "15",
        "MF", "AC", "MC", "XM", "VE", "CP",
    ];
    N.get(usize::from(v)).map_or_else(|| v.to_string(), |s| s.to_string())
}

/// Names of the set status/control flags of `f`.
pub fn flag_names(f: u64) -> String {
    const BITS: [(u64, &str); 13] = [
        (0x1, "CF"),
        (0x4, "PF"),
        (0x10, "AF"),
        (0x40, "ZF"),
        (0x80, "SF"),
        (0x100, "TF"),
        (0x200, "IF"),
        (0x400, "DF"),
        (0x800, "OF"),
        (0x3000, "IOPL"),
        (0x1_0000, "RF"),
        (0x4_0000, "AC"),
        (0x20_0000, "ID"),
    ];
    let v: Vec<&str> = BITS.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    v.join(" ")
}

/// The verdict on one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    /// The two sides disagree: after the first `insn` instructions (the first prefix that differs).
    Mismatch {
        insn: usize,
        diffs: Vec<String>,
    },
    /// krr-emu does not implement an instruction of the case.
    Unimplemented {
        mnemonic: String,
    },
    /// krr-emu failed otherwise (triple fault, instruction limit, ...) while KVM completed.
    EmuError {
        insn: usize,
        msg: String,
    },
    /// The KVM side could not run the case (host limitation or timeout): not compared.
    HostError(String),
    /// Both sides are right: they made different choices the architecture leaves to the CPU (which
    /// of two faulting operands is reported). Not compared; counted with the host column.
    ImplementationChoice(String),
}

/// On this host a #GP raised in ring 3 is handed to KVM's instruction emulator (that is how PVM emulates
/// `in`/`out`), which turns it into #UD when it cannot emulate the instruction (e.g. a misaligned SSE
/// operand, LDMXCSR with reserved bits). So "KVM #UD, krr-emu #GP" on a validly encoded instruction is not
/// a comparison with silicon: returns a description if `a`/`b` are that case.
fn gp_reported_as_ud(a: &Outcome, b: &Outcome, code: &[u8]) -> Option<String> {
    let ud = matches!(a.end, End::Exception { vector: 6, .. });
    let gp = matches!(b.end, End::Exception { vector: 13, .. });
    if !(ud && gp && a.rip == b.rip) {
        return None;
    }
    let i = insn_at(code, a.rip)?;
    use iced_x86::Mnemonic;
    if matches!(i.mnemonic(), Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2) {
        return None;
    }
    Some(format!("#GP reported as #UD by this host's KVM emulator ({})", mnemonic(&i)))
}

/// The instruction at `rip` in `code` (None outside the code or if it does not decode).
fn insn_at(code: &[u8], rip: u64) -> Option<iced_x86::Instruction> {
    let off = usize::try_from(rip.checked_sub(CODE_BASE)?).ok()?;
    let bytes = code.get(off..)?;
    let i = iced_x86::Decoder::with_ip(64, bytes, rip, iced_x86::DecoderOptions::NONE).decode();
    (!i.is_invalid()).then_some(i)
}

fn mnemonic(i: &iced_x86::Instruction) -> String {
    format!("{:?}", i.mnemonic()).to_lowercase()
}

/// The memory operands of `i` as (base register name, linear address), computed with `gprs` and this
/// layout's segment bases.
fn memory_operands(i: &iced_x86::Instruction, gprs: &[u64; 16]) -> Vec<(String, u64)> {
    use iced_x86::{OpKind, Register as R};
    let reg = |r: R, _: usize, _: usize| -> Option<u64> {
        match r {
            R::ES | R::CS | R::SS | R::DS => Some(0),
            R::FS => Some(crate::layout::FS_BASE),
            R::GS => Some(crate::layout::GS_BASE),
            _ if r.is_gpr() => {
                let v = gprs[r.full_register().number()];
                Some(if r.size() >= 8 { v } else { v & ((1u64 << (8 * r.size())) - 1) })
            }
            _ => None,
        }
    };
    (0..i.op_count())
        .filter_map(|op| {
            let name = match i.op_kind(op) {
                OpKind::MemorySegRSI | OpKind::MemorySegESI => "rsi".to_string(),
                OpKind::MemoryESRDI | OpKind::MemoryESEDI | OpKind::MemorySegRDI => "rdi".to_string(),
                OpKind::Memory => format!("{:?}", i.memory_base()).to_lowercase(),
                _ => return None,
            };
            Some((name, i.virtual_address(op, 0, reg)?))
        })
        .collect()
}

fn canonical(x: u64) -> bool {
    (x as i64) >> 47 == 0 || (x as i64) >> 47 == -1
}

/// When the CPU raises #GP in ring 3 on this host, KVM's instruction emulator re-executes the instruction
/// and reports what *it* finds, e.g. a #PF on the other operand of a string instruction whose first
/// operand is non-canonical. So "krr-emu #GP, KVM another exception" on an instruction with a
/// non-canonical memory operand (addresses from KVM's registers at the fault) is not a comparison with
/// silicon: returns a description if `a`/`b` are that case.
fn gp_rederived(a: &Outcome, b: &Outcome, code: &[u8]) -> Option<String> {
    let kvm_exc = matches!(a.end, End::Exception { vector, .. } if vector != 13);
    let gp = matches!(b.end, End::Exception { vector: 13, .. });
    if !(kvm_exc && gp && a.rip == b.rip) {
        return None;
    }
    let i = insn_at(code, a.rip)?;
    let noncanonical = memory_operands(&i, &a.gprs).iter().any(|&(_, va)| !canonical(va));
    noncanonical.then(|| {
        format!("#GP re-derived by this host's KVM emulator ({}, non-canonical operand)", mnemonic(&i))
    })
}

/// When both memory operands of an instruction fault (CMPS, MOVS), which fault the CPU reports is
/// the implementation's choice, and CPUs differ: the AMD EPYC that krr-emu's AMD profile was
/// measured on reports [RSI] for REPE CMPSB and [RDI] for the other CMPS forms, while the AMD EPYC
/// host of one of this project's CI runs reported [RSI] for every CMPS form. So when `a` and `b`
/// differ only in that they blame different memory operands of the faulting instruction (a #PF
/// inside one operand, or #GP(0)/#SS(0) for the one non-canonical operand), returns a
/// description: the architecture allows both.
fn fault_order(a: &Outcome, b: &Outcome, code: &[u8]) -> Option<String> {
    if a.end == b.end || (Outcome { end: b.end.clone(), ..a.clone() }) != *b {
        return None;
    }
    let i = insn_at(code, a.rip)?;
    let ops = memory_operands(&i, &a.gprs);
    if ops.len() != 2 {
        return None;
    }
    let size = u64::try_from(i.memory_size().size()).unwrap_or(1).max(1);
    let blamed = |end: &End| -> Option<usize> {
        match *end {
            End::Exception { vector: 14, cr2: Some(cr2), .. } => {
                ops.iter().position(|&(_, va)| cr2.wrapping_sub(va) < size)
            }
            End::Exception { vector: 12 | 13, error_code: Some(0), .. } => {
                let mut bad = ops.iter().enumerate().filter(|(_, &(_, va))| !canonical(va));
                match (bad.next(), bad.next()) {
                    (Some((n, _)), None) => Some(n),
                    _ => None,
                }
            }
            _ => None,
        }
    };
    let (x, y) = (blamed(&a.end)?, blamed(&b.end)?);
    (x != y).then(|| {
        format!(
            "both memory operands of {} fault: the CPU reports [{}], the other side [{}] (the order is implementation-specific)",
            mnemonic(&i),
            ops[x].0,
            ops[y].0
        )
    })
}

/// MXCSR_MASK in an FXSAVE image is implementation-specific: this host's AMD CPU stores 0x2ffff
/// (bit 17: MM, misaligned SSE mode), krr-emu 0xffff in both vendor profiles (it implements no
/// MM). Returns a description if that dword is the only difference of `a`/`b`.
fn mxcsr_mask_only(a: &Outcome, b: &Outcome, code: &[u8]) -> Option<String> {
    let mut d = iced_x86::Decoder::with_ip(64, code, CODE_BASE, iced_x86::DecoderOptions::NONE);
    let fxsave =
        d.iter().any(|i| matches!(i.mnemonic(), iced_x86::Mnemonic::Fxsave | iced_x86::Mnemonic::Fxsave64));
    let same_but_mem = Outcome { mem: b.mem.clone(), ..a.clone() } == *b;
    if !fxsave || !same_but_mem || a.mem.len() != b.mem.len() {
        return None;
    }
    let dword = |m: &[u8], o: usize| u32::from_le_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
    let mut found = false;
    for o in (0..a.mem.len()).step_by(4) {
        if a.mem[o..o + 4] == b.mem[o..o + 4] {
            continue;
        }
        // MXCSR_MASK is at offset 28 of the 16-byte aligned image.
        if o % 16 != 12 || dword(&a.mem, o) != 0x2_ffff || dword(&b.mem, o) != 0xffff {
            return None;
        }
        found = true;
    }
    found.then(|| "FXSAVE MXCSR_MASK: AMD 0x2ffff, krr-emu 0xffff (no misaligned-SSE mode)".to_string())
}

/// Compares the reference's and krr-emu's results of one run of `code`: None when they agree,
/// else the verdict (cases this host cannot compare are `HostError`).
pub fn compare_one(kvm: &RunResult, emu: &RunResult, code: &[u8]) -> Option<Verdict> {
    match (kvm, emu) {
        (Err(Failure::Other(m)) | Err(Failure::Unimplemented { mnemonic: m, .. }), _) => {
            Some(Verdict::HostError(m.clone()))
        }
        (Ok(_), Err(Failure::Unimplemented { mnemonic, .. })) => {
            Some(Verdict::Unimplemented { mnemonic: mnemonic.clone() })
        }
        (Ok(_), Err(Failure::Other(m))) => Some(Verdict::EmuError { insn: 0, msg: m.clone() }),
        (Ok(a), Ok(b)) => {
            let d = diff(a, b);
            if d.is_empty() {
                None
            } else if let Some(why) = gp_reported_as_ud(a, b, code)
                .or_else(|| gp_rederived(a, b, code))
                .or_else(|| mxcsr_mask_only(a, b, code))
            {
                Some(Verdict::HostError(why))
            } else if let Some(why) = fault_order(a, b, code) {
                Some(Verdict::ImplementationChoice(why))
            } else {
                Some(Verdict::Mismatch { insn: 0, diffs: d })
            }
        }
    }
}

/// Runs `case` on both sides. With `prefixes`, every prefix is compared (catching differences that a
/// later instruction hides); otherwise only the whole sequence, and on a mismatch the prefixes are run to
/// find the first instruction after which the states differ.
pub fn check(case: &Case, kvm: &mut dyn Runner, emu: &mut dyn Runner, prefixes: bool) -> Verdict {
    let n = case.insns.len();
    let first_bad = |kvm: &mut dyn Runner, emu: &mut dyn Runner, upto: usize| -> Option<(usize, Verdict)> {
        for k in 1..=upto {
            if let Some(v) = compare_one(&kvm.run_prefix(case, k), &emu.run_prefix(case, k), &case.code(k)) {
                return Some((k, v));
            }
        }
        None
    };
    let with_insn = |k: usize, v: Verdict| match v {
        Verdict::Mismatch { diffs, .. } => Verdict::Mismatch { insn: k, diffs },
        Verdict::EmuError { msg, .. } => Verdict::EmuError { insn: k, msg },
        other => other,
    };
    if prefixes {
        return match first_bad(kvm, emu, n) {
            Some((k, v)) => with_insn(k, v),
            None => Verdict::Pass,
        };
    }
    match compare_one(&kvm.run_prefix(case, n), &emu.run_prefix(case, n), &case.code(n)) {
        None => Verdict::Pass,
        Some(v @ (Verdict::Mismatch { .. } | Verdict::EmuError { .. })) => match first_bad(kvm, emu, n) {
            Some((k, v2)) => with_insn(k, v2),
            None => with_insn(n, v),
        },
        Some(v) => v,
    }
}

/// Per-family tallies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub cases: u64,
    pub passed: u64,
    pub mismatched: u64,
    /// Mismatches whose only difference is in RFLAGS bits the manuals leave undefined (subset of
    /// `mismatched`).
    pub undefined_only: u64,
    pub emu_errors: u64,
    pub unimplemented: u64,
    pub host_errors: u64,
}

impl Tally {
    pub fn add(&mut self, v: &Verdict) {
        self.cases += 1;
        match v {
            Verdict::Pass => self.passed += 1,
            Verdict::Mismatch { .. } => self.mismatched += 1,
            Verdict::EmuError { .. } => self.emu_errors += 1,
            Verdict::Unimplemented { .. } => self.unimplemented += 1,
            Verdict::HostError(_) | Verdict::ImplementationChoice(_) => self.host_errors += 1,
        }
    }

    /// Cases counted as failed: mismatches and emulator errors.
    pub fn failed(&self) -> u64 {
        self.mismatched + self.emu_errors
    }
}

/// Everything a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub families: BTreeMap<String, Tally>,
    /// Unimplemented mnemonics -> number of cases that hit them.
    pub unimplemented: BTreeMap<String, u64>,
    /// Host errors (message -> count).
    pub host_errors: BTreeMap<String, u64>,
    /// Mismatch signatures (mnemonic of the first diverging instruction + what differs) -> (count, example,
    /// union of the RFLAGS bits that differed).
    pub signatures: BTreeMap<String, (u64, String, u64)>,
}

impl Report {
    pub fn record(&mut self, case: &Case, v: &Verdict) {
        self.families.entry(case.family.clone()).or_default().add(v);
        match v {
            Verdict::Unimplemented { mnemonic } => {
                // Keep the mnemonic (with a rep/lock prefix), drop operands: "pcmpistri xmm1,..." -> "pcmpistri".
                let mut w = mnemonic.split_whitespace();
                let mut m = w.next().unwrap_or(mnemonic).to_string();
                if matches!(m.as_str(), "rep" | "repe" | "repne" | "lock") {
                    if let Some(next) = w.next() {
                        m = format!("{m} {next}");
                    }
                }
                if let Some(i) = mnemonic.find(" (unsupported") {
                    m.push_str(&mnemonic[i..]);
                }
                *self.unimplemented.entry(m).or_default() += 1;
            }
            Verdict::HostError(m) | Verdict::ImplementationChoice(m) => {
                let key: String = m.chars().take(80).collect();
                *self.host_errors.entry(key).or_default() += 1;
            }
            Verdict::Mismatch { .. } | Verdict::EmuError { .. } => {
                let sig = signature(case, v);
                if sig.ends_with(UNDEFINED_NOTE) {
                    self.families.entry(case.family.clone()).or_default().undefined_only += 1;
                }
                let e = self.signatures.entry(sig).or_insert((0, case.name.clone(), 0));
                e.0 += 1;
                e.2 |= flag_diff(v);
            }
            Verdict::Pass => {}
        }
    }

    pub fn total(&self) -> Tally {
        let mut t = Tally::default();
        for f in self.families.values() {
            t.cases += f.cases;
            t.passed += f.passed;
            t.mismatched += f.mismatched;
            t.undefined_only += f.undefined_only;
            t.emu_errors += f.emu_errors;
            t.unimplemented += f.unimplemented;
            t.host_errors += f.host_errors;
        }
        t
    }
}

/// The RFLAGS bits that differ in a mismatch (0 if RFLAGS agree).
pub fn flag_diff(v: &Verdict) -> u64 {
    match v {
        Verdict::Mismatch { diffs, .. } => diffs
            .iter()
            .find(|d| d.starts_with("rflags:"))
            .and_then(|d| {
                let mut it = d.split_whitespace().filter(|w| w.starts_with("0x"));
                let a = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
                let b = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
                Some(a ^ b)
            })
            .unwrap_or(0),
        _ => 0,
    }
}

/// A short key grouping mismatches that are likely one bug: the diverging instruction's mnemonic (with
/// operand size) and what differs (`rflags(OF)`, `rax`, `end(#GP vs done)`, ...).
pub fn signature(case: &Case, v: &Verdict) -> String {
    let (insn, what) = match v {
        Verdict::Mismatch { insn, diffs } => {
            let parts: Vec<String> = diffs
                .iter()
                .map(|d| {
                    let field = d.split(':').next().unwrap_or(d).trim().to_string();
                    if field == "rflags" {
                        "rflags".to_string()
                    } else if field.starts_with("mem") {
                        "mem".to_string()
                    } else if GPR_NAMES.contains(&field.as_str()) {
                        "gpr".to_string()
                    } else if field.starts_with("xmm") {
                        "xmm".to_string()
                    } else if field.starts_with("st") && field.len() == 3 {
                        "st".to_string()
                    } else if field == "end" {
                        // Vectors only: error codes and CR2 values would make every case its own group.
                        let kinds: Vec<&str> = d
                            .trim_start_matches("end: ")
                            .split(" | ")
                            .map(|side| side.split(['(', ' ']).take(2).last().unwrap_or(side))
                            .collect();
                        format!(
                            "end(kvm {} | emu {})",
                            kinds.first().unwrap_or(&"?"),
                            kinds.get(1).unwrap_or(&"?")
                        )
                    } else {
                        field
                    }
                })
                .collect();
            let mut parts = parts;
            parts.dedup();
            // Mismatch diffs come in a fixed order (end, rip, rflags, GPRs, XMM, MXCSR, memory), so
            // equal kinds are adjacent.
            (*insn, parts.join(" "))
        }
        Verdict::EmuError { insn, msg } => {
            (*insn, format!("error: {}", msg.chars().take(60).collect::<String>()))
        }
        _ => (0, String::new()),
    };
    let mut undefined = 0u64;
    let mnem = if insn >= 1 && insn <= case.insns.len() {
        let mut ip = CODE_BASE;
        for b in &case.insns[..insn - 1] {
            ip += b.len() as u64;
        }
        undefined = undefined_flags(&case.insns[insn - 1], ip);
        let text = disasm(&case.insns[insn - 1], ip);
        let mut w = text.split_whitespace().peekable();
        let mut m = w.next().unwrap_or("?").to_string();
        while matches!(m.as_str(), "rep" | "repe" | "repne" | "lock" | "xacquire" | "xrelease") {
            match w.next() {
                Some(next) => m = format!("{m} {next}"),
                None => break,
            }
            if !matches!(m.rsplit(' ').next(), Some("rep" | "repe" | "repne" | "lock")) {
                break;
            }
        }
        let first_op = w.next().unwrap_or("").split(',').next().unwrap_or("").to_string();
        format!("{m} {}", operand_shape(&first_op))
    } else {
        "?".into()
    };
    let fl = flag_diff(v);
    let note = if what != "rflags" {
        ""
    } else if fl == 0x1_0000 {
        " (RF pushed for a fault)"
    } else if fl & !undefined == 0 {
        UNDEFINED_NOTE
    } else {
        ""
    };
    format!("{mnem}: {what}{note}")
}

/// Signature suffix of mismatches only in flags the manuals leave undefined.
pub const UNDEFINED_NOTE: &str = " (flags the manuals leave undefined)";

/// The RFLAGS bits the manuals leave undefined after the instruction `bytes` (iced-x86's table).
pub fn undefined_flags(bytes: &[u8], ip: u64) -> u64 {
    use iced_x86::RflagsBits as R;
    let mut d = iced_x86::Decoder::with_ip(64, bytes, ip, iced_x86::DecoderOptions::NONE);
    let u = d.decode().rflags_undefined();
    [(R::CF, 0x1), (R::PF, 0x4), (R::AF, 0x10), (R::ZF, 0x40), (R::SF, 0x80), (R::OF, 0x800)]
        .iter()
        .filter(|(b, _)| u & b != 0)
        .map(|(_, f)| f)
        .sum()
}

/// Size class of an operand text (`al` -> r8, `qword` -> m64) so signatures group sizes, not registers.
fn operand_shape(op: &str) -> &'static str {
    const R8: [&str; 20] = [
        "al", "cl", "dl", "bl", "ah", "ch", "dh", "bh", "spl", "bpl", "sil", "dil", "r8b", "r9b", "r10b",
        "r11b", "r12b", "r13b", "r14b", "r15b",
    ];
    const R16: [&str; 8] = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"];
    if op.is_empty() {
        ""
    } else if op.starts_with("byte") {
        "m8"
    } else if op.starts_with("word") {
        "m16"
    } else if op.starts_with("dword") {
        "m32"
    } else if op.starts_with("qword") {
        "m64"
    } else if op.starts_with("xmmword") || op.contains('[') {
        "m"
    } else if op.starts_with("xmm") {
        "xmm"
    } else if R8.contains(&op) {
        "r8"
    } else if R16.contains(&op) || (op.starts_with('r') && op.ends_with('w')) {
        "r16"
    } else if op.starts_with('e') || (op.starts_with('r') && op.ends_with('d')) {
        "r32"
    } else if op.starts_with('r') {
        "r64"
    } else {
        "imm"
    }
}

/// A compact multi-line description of a failing case.
pub fn describe(case: &Case, v: &Verdict) -> String {
    let mut s = String::new();
    let (insn, body): (usize, Vec<String>) = match v {
        Verdict::Mismatch { insn, diffs } => (*insn, diffs.clone()),
        Verdict::EmuError { insn, msg } => (*insn, vec![format!("krr-emu error: {msg}")]),
        Verdict::Unimplemented { mnemonic } => (0, vec![format!("unimplemented: {mnemonic}")]),
        Verdict::HostError(m) => (0, vec![format!("host: {m}")]),
        Verdict::ImplementationChoice(m) => (0, vec![format!("implementation-specific: {m}")]),
        Verdict::Pass => (0, Vec::new()),
    };
    let _ = writeln!(s, "MISMATCH {} ({} instructions)", case.name, case.insns.len());
    let mut ip = CODE_BASE;
    for (i, b) in case.insns.iter().enumerate() {
        let mark = if i + 1 == insn { "=>" } else { "  " };
        let _ = writeln!(s, "  {mark} {:2} {:#x} {:<36} {}", i + 1, ip, disasm(b, ip), hex(b));
        ip += b.len() as u64;
    }
    if insn > 0 {
        let _ = writeln!(s, "  states differ after instruction {insn}:");
    }
    for l in body {
        let _ = writeln!(s, "    {l}");
    }
    let init: Vec<String> = GPR_NAMES
        .iter()
        .zip(case.gprs.iter())
        .filter(|(_, v)| **v != 0)
        .map(|(n, v)| format!("{n}={v:#x}"))
        .collect();
    let _ = writeln!(s, "  initial: {} rflags={:#x}", init.join(" "), case.start_rflags());
    s
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::DATA_SIZE;

    fn outcome() -> Outcome {
        Outcome {
            end: End::Done,
            gprs: [0; 16],
            rip: CODE_BASE,
            rflags: 0x202,
            xmm: [0; 16],
            mxcsr: 0x1f80,
            x87: Default::default(),
            mem: vec![0; DATA_SIZE],
        }
    }

    #[test]
    fn diff_reports_each_field() {
        let a = outcome();
        assert!(diff(&a, &a).is_empty());
        let mut b = a.clone();
        b.gprs[1] = 5;
        b.rflags |= 0x800;
        b.mem[0x10] = 1;
        b.xmm[3] = 7;
        let d = diff(&a, &b);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("rcx:")));
        assert!(d.iter().any(|l| l.contains("differ: OF")));
        let v = Verdict::Mismatch { insn: 1, diffs: d };
        assert_eq!(flag_diff(&v), 0x800);
        let mut c = Case::new("t", "x");
        c.insns = vec![vec![0x48, 0x01, 0xc8]];
        assert_eq!(signature(&c, &v), "add r64: rflags gpr xmm mem");
    }

    #[test]
    fn verdicts() {
        let ok: RunResult = Ok(outcome());
        let unimpl: RunResult =
            Err(Failure::Unimplemented { rip: 0, mnemonic: "pxor xmm0,xmm0".into(), bytes: vec![] });
        let host: RunResult = Err(Failure::Other("timeout".into()));
        assert_eq!(compare_one(&ok, &ok, &[]), None);
        assert!(matches!(compare_one(&ok, &unimpl, &[]), Some(Verdict::Unimplemented { .. })));
        assert!(matches!(compare_one(&host, &ok, &[]), Some(Verdict::HostError(_))));
        // KVM #UD vs krr-emu #GP on a valid instruction: not comparable here.
        let exc = |vector, error_code| {
            let mut o = outcome();
            o.end = End::Exception { vector, error_code, cr2: None };
            Ok(o)
        };
        let xorps = [0x0f, 0x57, 0x03];
        assert!(matches!(compare_one(&exc(6, None), &exc(13, Some(0)), &xorps), Some(Verdict::HostError(_))));
        // KVM #PF vs krr-emu #GP on a CMPS with a non-canonical RSI: KVM's emulator re-derived the #GP.
        let mut pf = outcome();
        pf.end = End::Exception { vector: 14, error_code: Some(4), cr2: Some(0x10) };
        pf.gprs[6] = 0x8000_0000_0000_0000;
        pf.gprs[7] = 0x10;
        let cmpsb = [0xa6];
        assert!(matches!(
            compare_one(&Ok(pf.clone()), &exc(13, Some(0)), &cmpsb),
            Some(Verdict::HostError(_))
        ));
        pf.gprs[6] = 0x20_0000;
        assert!(matches!(compare_one(&Ok(pf), &exc(13, Some(0)), &cmpsb), Some(Verdict::Mismatch { .. })));
        let ud2 = [0x0f, 0x0b];
        assert!(matches!(
            compare_one(&exc(6, None), &exc(13, Some(0)), &ud2),
            Some(Verdict::Mismatch { .. })
        ));
        let mut r = Report::default();
        let c = Case::new("fam", "a");
        r.record(&c, &Verdict::ImplementationChoice("x".into()));
        assert_eq!(r.total().host_errors, 1);
        let mut r = Report::default();
        r.record(&c, &Verdict::Unimplemented { mnemonic: "pxor xmm0,xmm0".into() });
        r.record(&c, &Verdict::Pass);
        assert_eq!(r.unimplemented.get("pxor"), Some(&1));
        let t = r.total();
        assert_eq!((t.cases, t.passed, t.unimplemented, t.failed()), (2, 1, 1, 0));
    }

    /// Both CMPS operands fault: either report is right, anything else still is a mismatch.
    #[test]
    fn which_of_two_faulting_operands_is_reported_is_not_a_mismatch() {
        let fault = |vector, error_code, cr2| {
            let mut o = outcome();
            o.end = End::Exception { vector, error_code: Some(error_code), cr2 };
            o.gprs[6] = 0x1b;
            o.gprs[7] = 0x3000;
            o
        };
        let (rsi, rdi) = (fault(14, 4, Some(0x1b)), fault(14, 5, Some(0x3000)));
        let choice =
            |a: &Outcome, b: &Outcome, code: &[u8]| compare_one(&Ok(a.clone()), &Ok(b.clone()), code);
        let cmpsb = [0xa6];
        let repe_cmpsq = [0xf3, 0x48, 0xa7];
        for code in [&cmpsb[..], &repe_cmpsq[..], &[0xa4]] {
            let v = choice(&rsi, &rdi, code);
            assert!(matches!(&v, Some(Verdict::ImplementationChoice(m)) if m.contains("[rsi]")), "{v:?}");
            assert!(matches!(choice(&rdi, &rsi, code), Some(Verdict::ImplementationChoice(_))));
        }
        // Inside the element (a quadword at 0x1b reaches 0x22), not past it.
        assert!(matches!(
            choice(&fault(14, 4, Some(0x22)), &rdi, &repe_cmpsq),
            Some(Verdict::ImplementationChoice(_))
        ));
        assert!(matches!(
            choice(&fault(14, 4, Some(0x23)), &rdi, &repe_cmpsq),
            Some(Verdict::Mismatch { .. })
        ));
        assert!(matches!(choice(&fault(14, 4, Some(0x1c)), &rdi, &cmpsb), Some(Verdict::Mismatch { .. })));
        // Another address, another register state, one memory operand, the same operand twice: mismatches.
        assert!(matches!(choice(&fault(14, 4, Some(0x5000)), &rdi, &cmpsb), Some(Verdict::Mismatch { .. })));
        let mut moved = rsi.clone();
        moved.gprs[1] = 1;
        assert!(matches!(choice(&moved, &rdi, &cmpsb), Some(Verdict::Mismatch { .. })));
        let mov_rax_rsi = [0x48, 0x8b, 0x06];
        assert!(matches!(choice(&rsi, &rdi, &mov_rax_rsi), Some(Verdict::Mismatch { .. })));
        assert!(matches!(choice(&rsi, &fault(14, 5, Some(0x1b)), &cmpsb), Some(Verdict::Mismatch { .. })));
        // #GP(0) for a non-canonical [RSI] against a #PF on [RDI].
        let mut gp = fault(13, 0, None);
        gp.gprs[6] = 0x8000_0000_0000_0000;
        let mut pf = fault(14, 5, Some(0x3000));
        pf.gprs[6] = gp.gprs[6];
        assert!(matches!(choice(&gp, &pf, &cmpsb), Some(Verdict::ImplementationChoice(_))));
        assert!(matches!(choice(&fault(13, 0, None), &rdi, &cmpsb), Some(Verdict::Mismatch { .. })));
    }
}
