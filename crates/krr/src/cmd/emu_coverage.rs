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
    let cov = coverage_of(&args.binaries)?;
    print!("{}", render(&cov));
    Ok(ExitCode::SUCCESS)
}

/// Decodes the executable sections of every file into one coverage table.
fn coverage_of(paths: &[PathBuf]) -> anyhow::Result<Coverage> {
    let mut cov = Coverage::default();
    for path in paths {
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
    Ok(cov)
}

/// The report: one line per mnemonic (most frequent first), then the summary line.
fn render(cov: &Coverage) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut rows: Vec<_> = cov.by_mnemonic.iter().collect();
    rows.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    let _ = writeln!(out, "{:<20} {:>10} implemented", "mnemonic", "count");
    for (name, (n, done)) in rows {
        let state = if done == n {
            "yes".to_string()
        } else if *done == 0 {
            "no".to_string()
        } else {
            format!("partial ({done} of {n})")
        };
        let _ = writeln!(out, "{name:<20} {n:>10} {state}");
    }
    if cov.invalid > 0 {
        let _ = writeln!(
            out,
            "{:<20} {:>10} (bytes that do not decode: data or padding in text)",
            "(invalid)", cov.invalid
        );
    }
    let (full, seen, pct) = cov.summary();
    let _ = writeln!(out, "implemented {full} of {seen} mnemonics covering {pct:.1} % of instructions");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_on_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let cov = coverage_of(&[exe]).unwrap();
        assert!(cov.by_mnemonic.get("mov").is_some_and(|(n, done)| *n > 100 && n == done));
        let text = render(&cov);
        let last = text.lines().last().unwrap();
        assert!(last.starts_with("implemented ") && last.ends_with(" % of instructions"), "{last}");
    }

    #[test]
    fn rejects_non_elf() {
        let dir = std::env::temp_dir().join(format!("krr-emu-cov-{}", std::process::id()));
        std::fs::write(&dir, b"not an elf").unwrap();
        let err = coverage_of(std::slice::from_ref(&dir)).unwrap_err();
        std::fs::remove_file(&dir).unwrap();
        assert!(format!("{err:#}").contains("not an object file"), "{err:#}");
    }
}
