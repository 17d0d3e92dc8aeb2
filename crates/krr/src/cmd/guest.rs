//! `krr guest build`: build the guest kernel and initramfs (guest/build.sh), and find them.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

/// Build or locate the guest kernel and initramfs.
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    action: GuestAction,
}

#[derive(Debug, clap::Subcommand)]
enum GuestAction {
    /// Build the guest (cached outside the repository by a hash of every input; ~4 minutes the
    /// first time, instant afterwards). Prints the output directory last.
    Build {
        /// Extra arguments for guest/build.sh (see `guest/build.sh --help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print the directory of the current guest build (exit 1 if it is not built).
    Dir,
}

/// guest/build.sh in the source tree krr was built from.
fn build_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh")
}

/// The directory holding `vmlinux` and `initramfs.cpio`: `$KRR_GUEST_DIR`, else the cached build
/// of the current guest inputs.
pub fn guest_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KRR_GUEST_DIR") {
        return Ok(PathBuf::from(d));
    }
    let script = build_script();
    let out = Command::new(&script)
        .arg("--print-dir")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        bail!("the guest is not built for the current sources: run `krr guest build` (or pass --kernel and --initrd)");
    }
    Ok(PathBuf::from(dir))
}

pub fn run(args: GuestArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        GuestAction::Build { args } => {
            let script = build_script();
            let status = Command::new(&script)
                .args(&args)
                .status()
                .with_context(|| format!("running {}", script.display()))?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        GuestAction::Dir => {
            println!("{}", guest_dir()?.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
