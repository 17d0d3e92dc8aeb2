//! `krr emu-coverage`: static instruction coverage of krr-emu over an ELF binary.

use std::path::PathBuf;
use std::process::ExitCode;

/// Disassemble the text of a vmlinux or ELF program and report, per mnemonic, whether krr-emu
/// implements it.
#[derive(Debug, clap::Args)]
pub struct EmuCoverageArgs {
    /// ELF files (vmlinux, static busybox, ...).
    #[arg(required = true)]
    binaries: Vec<PathBuf>,
}

pub fn run(_args: EmuCoverageArgs) -> anyhow::Result<ExitCode> {
    eprintln!("krr emu-coverage: not implemented yet (tracked in issue 2)");
    Ok(ExitCode::from(2))
}
