//! `krr run`: boot the guest and run a workload without recording (the native baseline).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use krr_vmm::devices::Echo;
use krr_vmm::{Accel, ExitReason, VmConfig};

/// Boot a Linux guest under krr's VMM and run CMD in it; exits with CMD's exit status.
///
/// Exit status: the workload's own; 124 if --timeout expired; 125 if the guest kernel panicked,
/// the guest reset without reporting a status, or the backend could not run the guest.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub vm: VmArgs,
    /// The command to run in the guest (default: an interactive-less /bin/sh -c true).
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
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 256M or 1G"))?;
    n.checked_mul(mul).ok_or_else(|| format!("{s:?} is too large"))
}

/// The kernel command line krr boots with. `noxsave` and `clearcpuid` keep the kernel on code
/// paths krr-emu implements even where a host ignores KVM_SET_CPUID2 (DESIGN §12), so a trace
/// recorded on either backend replays on the emulator.
pub const BASE_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 noxsave \
     clearcpuid=smap,smep,popcnt,rdpid,fsgsbase,pku,umip,avx,xsave";

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
        let mut cmdline = BASE_CMDLINE.to_string();
        if !self.append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.append);
        }
        if !cmd.is_empty() {
            cmdline.push_str(&guest_command(cmd));
        }
        Ok(VmConfig {
            accel,
            vcpus: self.smp,
            mem_bytes: self.mem,
            vmlinux: kernel,
            initrd,
            cmdline,
            echo: if self.quiet { Echo::AfterInit } else { Echo::Everything },
            timeout: self.timeout.map(Duration::from_secs),
        })
    }
}

/// The command-line text that makes the guest's `/init` run `cmd` (guest/README.md): plain
/// ` -- ARGS` when every argument survives the kernel's parsing as is, else `krr.argv=BASE64` of
/// the NUL-terminated arguments, which carries any bytes.
fn guest_command(cmd: &[String]) -> String {
    let plain = cmd.iter().all(|a| {
        !a.is_empty() && a != "--" && !a.contains(|c: char| c.is_whitespace() || c == '"' || c.is_control())
    });
    if plain && cmd.len() < 24 {
        return format!(" -- {}", cmd.join(" "));
    }
    let mut raw = Vec::new();
    for a in cmd {
        raw.extend_from_slice(a.as_bytes());
        raw.push(0);
    }
    format!(" krr.argv={}", base64(&raw))
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.vm.config(&args.cmd)?;
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
    let how = format!("accel {} ({}), {secs:.1} s{init}{insns}", out.accel.name(), out.accel_why);
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
    fn guest_commands() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(guest_command(&v(&["/bin/nproc"])), " -- /bin/nproc");
        assert_eq!(guest_command(&v(&["sh", "-c", "exit 7"])), " krr.argv=c2gALWMAZXhpdCA3AA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }
}
