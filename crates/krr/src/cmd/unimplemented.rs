//! Subcommands that exist in the design but are not built yet: they say so and exit 2.

use std::process::ExitCode;

/// Accepts any arguments so that `--help` and typical invocations reach the message.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(name: &str, issue: u32, _args: Args) -> anyhow::Result<ExitCode> {
    eprintln!("krr {name}: not implemented yet (tracked in issue {issue})");
    Ok(ExitCode::from(2))
}
