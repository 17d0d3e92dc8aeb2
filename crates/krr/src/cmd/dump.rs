//! `krr dump`: print a trace's events, console lines and statistics.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct DumpArgs {
    /// Trace directory.
    trace: PathBuf,
}

pub fn run(_args: DumpArgs) -> anyhow::Result<ExitCode> {
    eprintln!("krr dump: not implemented yet (tracked in issue 3)");
    Ok(ExitCode::from(2))
}
