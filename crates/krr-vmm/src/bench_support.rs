//! Shared by the benchmarks that boot the real guest (`record_overhead` here, `replay_speed` in
//! krr-replay): where the guest build is and how a workload run is configured.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::devices::Echo;
use crate::vm::{RecordConfig, BASE_CMDLINE};
use crate::{Accel, VmConfig};

/// The guest workloads that exit 0 (every one but `panic`).
pub const WORKLOADS: [&str; 11] = [
    "hello", "fileio", "pipes", "forkexec", "mmap", "signals", "futex", "timers", "procfs", "epoll", "efault",
];

/// The benchmark's arguments (cargo's `--bench` left out) and the value of `--reps N`
/// (`default` without it).
pub fn bench_args(default_reps: usize) -> (Vec<String>, usize) {
    let mut args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut reps = default_reps;
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args.get(i + 1).and_then(|n| n.parse().ok()).expect("--reps N");
        args.drain(i..i + 2);
    }
    (args, reps)
}

/// Run `cfg`; the guest's workload must exit 0.
pub fn run_ok(cfg: &VmConfig) -> crate::vm::RunOutcome {
    let out = crate::vm::run(cfg).unwrap_or_else(|e| panic!("{:?} --smp {}: {e}", cfg.command, cfg.vcpus));
    assert_eq!(
        out.reason,
        crate::ExitReason::Exited(0),
        "{:?} --smp {}: {:?}",
        cfg.command,
        cfg.vcpus,
        out.reason
    );
    out
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `part` as a percentage of `whole`.
pub fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// `$KRR_GUEST_DIR`, else the cached build of the current guest inputs (panics if not built).
pub fn guest_dir() -> PathBuf {
    built_guest("KRR_GUEST_DIR", &[])
}

/// `$env`, else the cached build of the current guest inputs with `guest/build.sh` options
/// `build_args` (panics if not built).
pub fn built_guest(env: &str, build_args: &[&str]) -> PathBuf {
    if let Some(d) = std::env::var_os(env) {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
    let out = Command::new(script)
        .args(build_args)
        .arg("--print-dir")
        .output()
        .expect("run guest/build.sh --print-dir");
    assert!(
        out.status.success(),
        "the guest is not built: run guest/build.sh {} first",
        build_args.join(" ")
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap_or_default().trim())
}

/// `/bin/WORKLOAD` on one emulated vCPU with 256 MiB, recorded into `record` if given.
pub fn workload_config(dir: &Path, workload: &str, record: Option<PathBuf>, profile: bool) -> VmConfig {
    VmConfig {
        accel: Accel::Emu,
        vcpus: 1,
        mem_bytes: 256 << 20,
        vmlinux: dir.join("vmlinux"),
        initrd: Some(dir.join("initramfs.cpio")),
        initrd_extra: Vec::new(),
        cmdline: BASE_CMDLINE.into(),
        echo: Echo::Nothing,
        timeout: Some(Duration::from_secs(600)),
        command: vec![format!("/bin/{workload}")],
        save_snapshot: None,
        from_snapshot: None,
        snapshot_on_console: None,
        record: record.map(|d| RecordConfig {
            dir: d,
            ring_bytes: crate::recorder::DEFAULT_RING_BYTES,
            start: crate::recorder::StartPoint::Init,
            producer: "krr bench".into(),
            kernel_version: String::new(),
            progress: None,
        }),
        interrupt: None,
        profile,
        emu_seed: None,
    }
}

/// A child process run to completion by [`run_measured`].
#[derive(Debug, Clone)]
pub struct Measured {
    /// The exit status, or 128 + the signal that ended it.
    pub status: i32,
    /// Wall time from spawn to exit.
    pub wall: Duration,
    /// The child's peak resident set size in KiB (`ru_maxrss` from `wait4`).
    pub max_rss_kib: u64,
    /// Everything it wrote to stdout (when `Stdio::piped()` was set; empty otherwise).
    pub stdout: Vec<u8>,
}

/// Spawn `cmd`, collect its stdout if piped, and reap it with `wait4` for its own peak RSS
/// (unlike `getrusage(RUSAGE_CHILDREN)`, which keeps the largest child seen so far). `started`
/// is called right after the spawn with the child's pid.
pub fn run_measured(cmd: &mut Command, started: impl FnOnce(u32)) -> std::io::Result<Measured> {
    use std::io::Read;
    let t0 = std::time::Instant::now();
    let mut child = cmd.spawn()?;
    let pid = child.id();
    started(pid);
    let mut stdout = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    let mut wstatus: libc::c_int = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child `pid`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; the pointers are to live locals.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut wstatus, 0, &mut ru) };
        if r == pid as libc::pid_t {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    let wall = t0.elapsed();
    let status = if libc::WIFEXITED(wstatus) {
        libc::WEXITSTATUS(wstatus)
    } else if libc::WIFSIGNALED(wstatus) {
        128 + libc::WTERMSIG(wstatus)
    } else {
        -1
    };
    // `child` was reaped by wait4; dropping it neither waits nor kills.
    drop(child);
    Ok(Measured { status, wall, max_rss_kib: ru.ru_maxrss.max(0) as u64, stdout })
}

/// Bytes of every file under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn measured_child() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; exit 3"]).stdout(Stdio::piped());
        let mut pid = 0;
        let m = run_measured(&mut cmd, |p| pid = p).unwrap();
        assert!(pid > 0);
        assert_eq!(m.status, 3);
        assert_eq!(m.stdout, b"out\n");
        assert!(m.max_rss_kib > 0);
        let m = run_measured(Command::new("sh").args(["-c", "kill -9 $$"]), |_| {}).unwrap();
        assert_eq!(m.status, 128 + 9);
    }

    #[test]
    fn bytes_of_a_tree() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(d.path().join("s")).unwrap();
        std::fs::write(d.path().join("s/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_bytes(d.path()), 15);
        assert_eq!(dir_bytes(&d.path().join("missing")), 0);
    }
}
