//! `krr run` end to end on the `emu` backend: the real guest kernel and initramfs (built by
//! `guest/build.sh`; `scripts/test.sh` builds it first), real workloads, exit statuses, panics,
//! SMP bring-up and determinism. These tests fail, not skip, when the guest is missing.

mod common;

use std::process::Command;

use common::{guest_dir, kernel_args};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn krr_run(extra: &[&str], cmd: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_krr"))
        .arg("run")
        .arg("--quiet")
        .args(kernel_args())
        .args(["--timeout", "600"])
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run krr");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The guest instruction count `krr run` reports on the emu backend.
fn instructions(stderr: &str) -> u64 {
    let i = stderr.find(" guest instructions").expect("instruction count in the summary");
    stderr[..i].rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn hello_runs_and_is_deterministic() {
    let a = krr_run(&["--accel", "emu"], &["/bin/hello"]);
    assert_eq!(a.code, 0, "{}", a.stderr);
    assert!(a.stdout.contains("hello from the krr guest"), "{}", a.stdout);
    // --quiet hides the boot log.
    assert!(!a.stdout.contains("Linux version"), "{}", a.stdout);
    let b = krr_run(&["--accel", "emu"], &["/bin/hello"]);
    assert_eq!(b.code, 0);
    assert_eq!(instructions(&a.stderr), instructions(&b.stderr), "two runs of one workload differ");
}

#[test]
fn exit_status_passes_through() {
    let r = krr_run(&["--accel", "emu"], &["/bin/sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
}

#[test]
fn guest_panic_is_one_line_and_nonzero() {
    let r = krr_run(&["--accel", "emu"], &["/bin/sh", "-c", "echo c > /proc/sysrq-trigger"]);
    assert_eq!(r.code, 125, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("Kernel panic - not syncing: sysrq triggered crash"), "{}", r.stderr);
}

#[test]
fn two_vcpus_come_up() {
    let r = krr_run(&["--accel", "emu", "--smp", "2"], &["/bin/nproc"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.lines().any(|l| l.trim() == "2"), "{}", r.stdout);
}

#[test]
fn boundary_workloads_pass() {
    // Each workload checks its own results and exits non-zero on any failed check.
    for w in [
        "fileio", "pipes", "forkexec", "mmap", "signals", "futex", "timers", "procfs", "ptebits", "epoll",
        "efault",
    ] {
        let r = krr_run(&["--accel", "emu"], &[&format!("/bin/{w}")]);
        assert_eq!(r.code, 0, "{w}: {}\n{}", r.stderr, r.stdout);
    }
}

#[test]
fn missing_kvm_is_one_line_and_auto_falls_back() {
    let dir = guest_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_krr"))
        .env("KRR_KVM_DEVICE", "/nonexistent/kvm")
        .args(["run", "--quiet", "--accel", "kvm", "--kernel"])
        .arg(dir.join("vmlinux"))
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("KVM is not available") && err.contains("--accel emu"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_krr"))
        .env("KRR_KVM_DEVICE", "/nonexistent/kvm")
        .args(["run", "--quiet", "--accel", "auto"])
        .args(kernel_args())
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("accel emu (KVM is not usable"), "{err}");
}

#[test]
fn snapshot_resumes_exactly_where_the_boot_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("init.snap");
    let snap_s = snap.to_str().unwrap();
    let saved = krr_run(&["--accel", "emu", "--save-snapshot", snap_s], &[]);
    assert_eq!(saved.code, 0, "{}", saved.stderr);
    assert!(saved.stderr.contains("saved the VM to"), "{}", saved.stderr);

    let resumed = krr_run(&["--from-snapshot", snap_s], &["/bin/hello"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stdout.contains("hello from the krr guest"), "{}", resumed.stdout);
    assert!(resumed.stderr.contains("snapshot restored in"), "{}", resumed.stderr);

    // Booting and running in one go executes exactly the instructions of the boot up to the
    // snapshot plus those of the resumed run: the snapshot lost no state that mattered.
    let whole = krr_run(&["--accel", "emu"], &["/bin/hello"]);
    assert_eq!(whole.code, 0, "{}", whole.stderr);
    assert_eq!(instructions(&saved.stderr) + instructions(&resumed.stderr), instructions(&whole.stderr));

    let status = krr_run(&["--from-snapshot", snap_s], &["/bin/sh", "-c", "exit 7"]);
    assert_eq!(status.code, 7, "{}", status.stderr);

    // A damaged snapshot is one line and a failure.
    let mut bytes = std::fs::read(&snap).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let bad = krr_run(&["--from-snapshot", snap_s], &["/bin/true"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("corrupt snapshot"), "{}", bad.stderr);
}

/// A run stopped by its timeout says where each vCPU was, by kernel function name.
#[test]
fn a_timeout_says_where_every_vcpu_was() {
    let out = Command::new(env!("CARGO_BIN_EXE_krr"))
        .arg("run")
        .arg("--quiet")
        .args(kernel_args())
        .args([
            "--accel",
            "emu",
            "--smp",
            "2",
            "--timeout",
            "3",
            "--",
            "/bin/sh",
            "-c",
            "while :; do :; done",
        ])
        .output()
        .expect("run krr");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{stderr}");
    let line = stderr.lines().find_map(|l| l.strip_prefix("krr run: where the vCPUs were: ")).expect(&stderr);
    let places: Vec<&str> = line.split("; ").collect();
    assert_eq!(places.len(), 2, "{line}");
    for (i, p) in places.iter().enumerate() {
        assert!(p.starts_with(&format!("vCPU {i} ")), "{line}");
        if let Some(rest) = p.split(" in the kernel at ").nth(1) {
            // A kernel RIP is inside a function of the guest's vmlinux: named, with an offset.
            assert!(rest.contains('+'), "a kernel place without a function name: {line}");
        } else {
            assert!(p.contains(" in user space at 0x"), "{line}");
        }
    }
}

#[test]
fn run_json_summary_is_the_last_stdout_line() {
    let r = krr_run(&["--accel", "emu", "--json"], &["sh", "-c", "echo out; exit 7"]);
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stdout.starts_with("out\n"), "plain \\n line ends on stdout: {:?}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["status"], "exited");
    assert_eq!(v["exit_code"], 7);
    assert_eq!(v["accel"], "emu");
    assert!(v["guest_instructions"].as_u64().unwrap() > 1_000_000, "{v}");
    assert!(v.get("trace").is_none(), "no trace for krr run: {v}");
}
