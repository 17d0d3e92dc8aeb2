//! `krr run`: boot the guest and run a workload without recording (the native baseline).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use krr_vmm::devices::Echo;
use krr_vmm::{Accel, ExitReason, VmConfig};

/// Boot a guest and run a workload without recording (the native baseline).
///
/// Boots Linux under krr's VMM and runs CMD in it. Exit status: the workload's own; 124 if
/// --timeout expired; 125 if the guest kernel panicked, the guest reset without reporting a
/// status, or the backend could not run the guest; 130 if interrupted (Ctrl-C, SIGTERM).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Boot, stop where the guest's init asks for its command, save the whole VM to FILE and
    /// exit. Resume it with --from-snapshot.
    #[arg(long, value_name = "FILE", conflicts_with = "from_snapshot")]
    pub save_snapshot: Option<PathBuf>,
    /// Resume a VM saved with --save-snapshot and run CMD in it, skipping the boot (on the
    /// backend that saved it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["add", "add_bin"])]
    pub from_snapshot: Option<PathBuf>,
    /// Testing aid for the kvm backend: save the snapshot when the console shows TEXT instead
    /// of at init (for hosts whose KVM never reaches init).
    #[arg(long, value_name = "TEXT", hide = true, requires = "save_snapshot")]
    pub snapshot_on_console: Option<String>,
    /// The command to run in the guest (none: an interactive shell on the console).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

/// VM options shared by `run` and `record`.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// CPU backend: kvm (hardware virtualization), emu (krr's emulator, runs anywhere), or auto
    /// (kvm when the host's KVM can run a Linux guest, see `krr doctor`).
    #[arg(long, default_value = "auto", value_parser = ["auto", "kvm", "emu"])]
    pub accel: String,
    /// Number of vCPUs (1-8).
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Guest memory, e.g. 256M or 1G.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    pub mem: u64,
    /// Guest kernel (an uncompressed vmlinux). Default: the cached guest build.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initramfs (cpio). Default: the cached guest build.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Put a host file or directory (recursively, modes and symlinks kept) into the guest at
    /// GUEST, by default at /NAME (HOST's last component). Repeatable. The files go into a cpio
    /// archive appended to the initramfs, so they live in guest RAM.
    #[arg(long, value_name = "HOST[:GUEST]")]
    pub add: Vec<String>,
    /// Put a program (a path, or a name looked up in PATH) into the guest at /usr/bin/NAME
    /// (in the guest's PATH), with every shared library it loads and its ELF interpreter at their
    /// host paths, found as ldd finds them. Repeatable.
    #[arg(long, value_name = "PROG")]
    pub add_bin: Vec<String>,
    /// Extra kernel command-line text.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Stop the guest after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Show only the workload's output (the console after the kernel starts /init), not the boot
    /// log.
    #[arg(long, short)]
    pub quiet: bool,
    /// emu backend: give each vCPU turn a pseudo-random length (256 to 32,768 instructions)
    /// drawn from SEED instead of a fixed 4,096, so vCPUs interleave differently for each seed
    /// (still deterministically): to record other interleavings of a race.
    #[arg(long, value_name = "SEED")]
    pub emu_seed: Option<u64>,
    /// Also print the summary as one JSON object, the last line on stdout (the console echo
    /// comes before it; the human summary stays on stderr).
    #[arg(long)]
    pub json: bool,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 256M or 1G"))?;
    n.checked_mul(mul).ok_or_else(|| format!("{s:?} is too large"))
}

pub use krr_vmm::vm::BASE_CMDLINE;

impl VmArgs {
    pub fn config(&self, cmd: &[String]) -> anyhow::Result<VmConfig> {
        let accel = match self.accel.as_str() {
            "kvm" => Accel::Kvm,
            "emu" => Accel::Emu,
            _ => Accel::Auto,
        };
        let (kernel, initrd) = match (&self.kernel, &self.initrd) {
            (Some(k), i) => (k.clone(), i.clone()),
            (None, i) => {
                let dir = super::guest::guest_dir()?;
                (dir.join("vmlinux"), Some(i.clone().unwrap_or_else(|| dir.join("initramfs.cpio"))))
            }
        };
        let initrd_extra = match super::add::archive(initrd.as_deref(), &self.add, &self.add_bin)? {
            Some((archive, summary)) => {
                eprintln!("krr: {summary}");
                archive
            }
            None => Vec::new(),
        };
        // The command reaches the guest's init through the command port, not the kernel command
        // line, so one boot (and one snapshot) serves every command.
        let mut cmdline = BASE_CMDLINE.to_string();
        if !self.append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.append);
        }
        Ok(VmConfig {
            accel,
            vcpus: self.smp,
            mem_bytes: self.mem,
            vmlinux: kernel,
            initrd,
            initrd_extra,
            cmdline,
            echo: if self.quiet { Echo::AfterInit } else { Echo::Everything },
            timeout: self.timeout.map(Duration::from_secs),
            command: cmd.to_vec(),
            save_snapshot: None,
            from_snapshot: None,
            snapshot_on_console: None,
            record: None,
            interrupt: Some(super::interrupt_flag()?),
            profile: false,
            emu_seed: self.emu_seed,
        })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = args.vm.config(&args.cmd)?;
    cfg.save_snapshot = args.save_snapshot.clone();
    cfg.from_snapshot = args.from_snapshot.clone();
    cfg.snapshot_on_console = args.snapshot_on_console.clone();
    let out = krr_vmm::vm::run(&cfg)?;
    let secs = out.elapsed.as_secs_f64();
    let init = out.to_init.map(|d| format!(", Run /init after {:.1} s", d.as_secs_f64())).unwrap_or_default();
    let insns = if out.instructions > 0 {
        format!(
            ", {} guest instructions ({:.1} M/s)",
            out.instructions,
            out.instructions as f64 / secs.max(1e-9) / 1e6
        )
    } else {
        String::new()
    };
    let restored = out
        .restore_time
        .map(|d| format!(", snapshot restored in {:.0} ms", d.as_secs_f64() * 1e3))
        .unwrap_or_default();
    let how = format!("accel {} ({}), {secs:.1} s{init}{restored}{insns}", out.accel.name(), out.accel_why);
    super::print_vcpus_at_end("run", &out, &cfg.vmlinux);
    if args.vm.json {
        super::print_json_summary(&out, &cfg.vmlinux, serde_json::json!({}));
    }
    Ok(match out.reason {
        ExitReason::Exited(code) => {
            eprintln!("krr run: workload exited with status {code}; {how}");
            ExitCode::from(code)
        }
        ExitReason::Panic(line) => {
            eprintln!("krr run: guest kernel panic: {line}");
            ExitCode::from(125)
        }
        ExitReason::Reset => {
            eprintln!("krr run: the guest reset without reporting an exit status; {how}");
            ExitCode::from(125)
        }
        ExitReason::Timeout => {
            eprintln!("krr run: timed out; {how}");
            ExitCode::from(124)
        }
        ExitReason::SnapshotSaved { path, bytes } => {
            eprintln!("krr run: saved the VM to {} ({} KiB); {how}", path.display(), bytes >> 10);
            ExitCode::SUCCESS
        }
        ExitReason::Interrupted => {
            eprintln!("krr run: interrupted; {how}");
            ExitCode::from(130)
        }
        ExitReason::KvmCannotRunUserSpace => {
            eprintln!(
                "krr run: the kernel reached Run /init, but this host's KVM cannot run the guest's user space \
                 (a ring-3 SYSCALL does not enter ring 0; see krr doctor); use --accel emu"
            );
            ExitCode::from(125)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
