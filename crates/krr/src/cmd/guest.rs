//! `krr guest build`: build the guest kernel and initramfs (guest/build.sh), and find them.
//!
//! The guest sources are embedded in the binary (build.rs) and unpacked into the cache on first
//! use, so an installed krr needs no source tree; `$KRR_GUEST_SRC` points at a guest/ directory
//! to use instead (a checkout being edited).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};
use sha2::Digest;

include!(concat!(env!("OUT_DIR"), "/guest_files.rs"));

/// Build or locate the guest kernel and initramfs.
#[derive(Debug, clap::Args)]
pub struct GuestArgs {
    #[command(subcommand)]
    action: GuestAction,
}

/// What to build: krr's default guest, or a kernel developer's tree, config and patches.
#[derive(Debug, Clone, Default, clap::Args)]
struct Inputs {
    /// default: krr's small, fast kernel; debug: a kernel like the ones bugs are found on (SLUB,
    /// voluntary preemption, ext4, loop, IPv4/IPv6, packet sockets, nf_tables, qdiscs, TLS,
    /// io_uring, BPF, namespaces, cgroups, n_gsm, watch_queue; panic_on_warn, panic on oops).
    #[arg(long, value_enum, default_value_t = Profile::Default)]
    profile: Profile,
    /// (debug profile) Generic KASAN; a report panics the kernel (kasan.fault=panic).
    #[arg(long)]
    kasan: bool,
    /// (debug profile) Lockdep (PROVE_LOCKING) and sleep-in-atomic checks.
    #[arg(long)]
    lockdep: bool,
    /// (debug profile) Preemption model: voluntary (default) or full.
    #[arg(long, value_enum)]
    preempt: Option<Preempt>,
    /// The position counter: plugin (inline increments at function entries and loop heads, a
    /// few percent of kernel instructions) or trace-pc (a callback in every basic block, about a
    /// third of them; the counter krr had before, for comparison).
    #[arg(long, value_enum, default_value_t = Counter::Plugin)]
    counter: Counter,
    /// A Linux 6.1.y source tree to build instead of Debian's linux-source-6.1 (copied, never
    /// modified; its git HEAD and uncommitted changes, or its files' sizes and mtimes, are part of
    /// the cache key).
    #[arg(long, value_name = "DIR")]
    linux: Option<PathBuf>,
    /// A kconfig fragment merged over krr's (guest/config), or a whole .config used as the base
    /// with krr's required options (guest/config.required) forced over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A patch (-p1) applied after krr's agent, e.g. a bug under test; repeatable, in order.
    #[arg(long, value_name = "FILE")]
    patch: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum Profile {
    #[default]
    Default,
    Debug,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
enum Counter {
    #[default]
    Plugin,
    TracePc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Preempt {
    Voluntary,
    Full,
}

impl Inputs {
    fn script_args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        if self.profile == Profile::Debug {
            args.push("--profile=debug".into());
        }
        if self.kasan {
            args.push("--kasan".into());
        }
        if self.lockdep {
            args.push("--lockdep".into());
        }
        match self.preempt {
            Some(Preempt::Voluntary) => args.push("--preempt=voluntary".into()),
            Some(Preempt::Full) => args.push("--preempt=full".into()),
            None => {}
        }
        if self.counter == Counter::TracePc {
            args.push("--counter=trace-pc".into());
        }
        let mut push = |flag: &str, value: &Path| {
            args.push(flag.into());
            args.push(value.as_os_str().to_owned());
        };
        if let Some(d) = &self.linux {
            push("--linux", d);
        }
        if let Some(c) = &self.config {
            push("--config", c);
        }
        for p in &self.patch {
            push("--patch", p);
        }
        args
    }
}

#[derive(Debug, clap::Subcommand)]
enum GuestAction {
    /// Build the guest: vmlinux, bzImage and an initramfs with busybox, krr's /init and the
    /// workloads. Cached by a hash of every input (~4 minutes for a new kernel config on 2 cores,
    /// seconds for a patch change, instant when built). Progress goes to stderr; the output
    /// directory is the last line on stdout, e.g.
    /// `export KRR_GUEST_DIR=$(krr guest build --patch fix.patch)`.
    Build {
        #[command(flatten)]
        inputs: Inputs,
        /// Rebuild even if the build is cached.
        #[arg(long)]
        force: bool,
        /// Also discard the cached kernel work tree (re-extract the source).
        #[arg(long)]
        clean: bool,
        /// Parallel make jobs (default: the number of CPUs).
        #[arg(long, value_name = "N")]
        jobs: Option<u32>,
    },
    /// Print the directory of a guest build (exit 1 if it is not built).
    Dir {
        #[command(flatten)]
        inputs: Inputs,
        /// Print instead where the guest's sources (build.sh, config, the agent patches, the
        /// workloads) are: this krr's embedded copy, unpacked into the cache.
        #[arg(long, conflicts_with_all = ["linux", "config", "patch", "kasan", "lockdep", "preempt", "counter"])]
        sources: bool,
    },
}

/// The cache root: `$KRR_CACHE_DIR`, else `$HOME/.cache/krr` (as guest/build.sh has it).
fn cache_root() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KRR_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("neither KRR_CACHE_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/krr"))
}

/// The guest sources' directory: `$KRR_GUEST_SRC`, else the embedded copy unpacked under
/// `<cache>/guest/src/<hash>/` (once; the directory appears complete or not at all).
fn guest_sources() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KRR_GUEST_SRC") {
        return Ok(PathBuf::from(d));
    }
    let mut hash = sha2::Sha256::new();
    for (path, data, exec) in GUEST_FILES {
        hash.update(format!("{path}\0{}\0{exec}\0", data.len()));
        hash.update(data);
    }
    let key = krr_trace::to_hex(&hash.finalize()[..8]);
    let base = cache_root()?.join("guest/src");
    let dir = base.join(&key);
    if dir.join(".complete").exists() {
        return Ok(dir);
    }
    let tmp = base.join(format!(".{key}.{}", std::process::id()));
    let unpack = || -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for (path, data, exec) in GUEST_FILES {
            let to = tmp.join(path);
            std::fs::create_dir_all(to.parent().unwrap())?;
            std::fs::write(&to, data)?;
            if *exec {
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))?;
            }
        }
        std::fs::write(tmp.join(".complete"), "")?;
        match std::fs::rename(&tmp, &dir) {
            // Another krr unpacked the same sources meanwhile.
            Err(_) if dir.join(".complete").exists() => std::fs::remove_dir_all(&tmp),
            r => r,
        }
    };
    unpack().with_context(|| format!("unpacking krr's guest sources into {}", dir.display()))?;
    Ok(dir)
}

fn build_script() -> anyhow::Result<PathBuf> {
    Ok(guest_sources()?.join("build.sh"))
}

fn guest_dir_for(inputs: &Inputs) -> anyhow::Result<PathBuf> {
    let script = build_script()?;
    let out = Command::new(&script)
        .arg("--print-dir")
        .args(inputs.script_args())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().last().unwrap_or("").trim();
        bail!(
            "the guest is not built for these inputs: run `krr guest build` with them (or pass --kernel and --initrd){}",
            if why.is_empty() { String::new() } else { format!(" [{why}]") }
        );
    }
    Ok(PathBuf::from(dir))
}

/// The directory holding `vmlinux` and `initramfs.cpio`: `$KRR_GUEST_DIR`, else the cached build
/// of krr's default guest.
pub fn guest_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("KRR_GUEST_DIR") {
        return Ok(PathBuf::from(d));
    }
    guest_dir_for(&Inputs::default())
}

pub fn run(args: GuestArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        GuestAction::Build { inputs, force, clean, jobs } => {
            let script = build_script()?;
            let mut cmd = Command::new(&script);
            cmd.args(inputs.script_args());
            if force {
                cmd.arg("--force");
            }
            if clean {
                cmd.arg("--clean");
            }
            if let Some(j) = jobs {
                cmd.arg(format!("--jobs={j}"));
            }
            let status = cmd.status().with_context(|| format!("running {}", script.display()))?;
            // build.sh said why on stderr.
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8)
            })
        }
        GuestAction::Dir { inputs, sources } => {
            let dir = if sources { guest_sources()? } else { guest_dir_for(&inputs)? };
            println!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_guest_sources_hold_the_build_script_and_the_agent() {
        let names: Vec<&str> = GUEST_FILES.iter().map(|(p, _, _)| *p).collect();
        for want in ["build.sh", "config", "config.required", "init/init.c", "workloads/hello.c"] {
            assert!(names.contains(&want), "{want} is not embedded: {names:?}");
        }
        assert!(names.iter().any(|n| n.starts_with("patches/") && n.contains("guest-agent")));
        let build = GUEST_FILES.iter().find(|(p, _, _)| *p == "build.sh").unwrap();
        assert!(build.2, "build.sh must be unpacked executable");
        // The embedded copy is the checkout's guest/ as it is now.
        let on_disk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest/build.sh")).unwrap();
        assert_eq!(build.1, &on_disk[..]);
    }
}
