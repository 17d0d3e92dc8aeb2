//! `krr guest build`: build the guest kernel and initramfs through `guest/build.sh`.

use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(_args: GuestArgs) -> anyhow::Result<ExitCode> {
    eprintln!("krr guest: not implemented yet (tracked in issue 4)");
    Ok(ExitCode::from(2))
}
