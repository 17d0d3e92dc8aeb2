//! `krr emu-coverage`: static instruction coverage of krr-emu over an ELF binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use krr_emu::coverage::Coverage;
use object::{Object, ObjectSection, SectionFlags, SectionKind};

/// Disassemble the text of a vmlinux or ELF program and report, per mnemonic, whether krr-emu
/// implements it.
#[derive(Debug, clap::Args)]
pub struct EmuCoverageArgs {
    /// ELF files (vmlinux, static busybox, ...).
    #[arg(required = true)]
    binaries: Vec<PathBuf>,
}

/// SHF_EXECINSTR: a section holding machine code.
const SHF_EXECINSTR: u64 = 0x4;

pub fn run(args: EmuCoverageArgs) -> anyhow::Result<ExitCode> {
    let mut cov = Coverage::default();
    for path in &args.binaries {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = object::File::parse(&*data)
            .with_context(|| format!("{} is not an object file krr understands", path.display()))?;
        let bitness = if file.is_64() { 64 } else { 32 };
        let mut sections = 0;
        for section in file.sections() {
            let exec = match section.flags() {
                SectionFlags::Elf { sh_flags } => sh_flags & SHF_EXECINSTR != 0,
                _ => section.kind() == SectionKind::Text,
            };
            if !exec {
                continue;
            }
            let bytes = section
                .data()
                .with_context(|| format!("reading section {:?} of {}", section.name(), path.display()))?;
            cov.add_code(bitness, bytes, section.address());
            sections += 1;
        }
        if sections == 0 {
            anyhow::bail!("{} has no executable sections", path.display());
        }
    }
    let mut rows: Vec<_> = cov.by_mnemonic.iter().collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    println!("{:<20} {:>10} implemented", "mnemonic", "count");
    for (name, (n, done)) in rows {
        let state = if done == n {
            "yes".to_string()
        } else if *done == 0 {
            "no".to_string()
        } else {
            format!("partial ({done} of {n})")
        };
        println!("{name:<20} {n:>10} {state}");
    }
    if cov.invalid > 0 {
        println!(
            "{:<20} {:>10} (bytes that do not decode: data or padding in text)",
            "(invalid)", cov.invalid
        );
    }
    let (full, seen, pct) = cov.summary();
    println!("implemented {full} of {seen} mnemonics covering {pct:.1} % of instructions");
    Ok(ExitCode::SUCCESS)
}
