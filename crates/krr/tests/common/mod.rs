//! Shared by the end-to-end tests: where the guest kernel and initramfs are, and how to record
//! a workload on the `emu` backend.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `$KRR_GUEST_DIR`, else the cached build of the current guest inputs. Panics (the tests fail,
/// they do not skip) when the guest is not built.
pub fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KRR_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
    let out = Command::new(&script).arg("--print-dir").output().expect("run guest/build.sh");
    assert!(out.status.success(), "the guest is not built: run guest/build.sh (scripts/test.sh does)");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `--kernel` and `--initrd` of the guest build.
#[allow(dead_code)]
pub fn kernel_args() -> Vec<PathBuf> {
    let dir = guest_dir();
    vec!["--kernel".into(), dir.join("vmlinux"), "--initrd".into(), dir.join("initramfs.cpio")]
}

/// `krr record --accel emu` of `/bin/WORKLOAD` into `trace` with the guest build (not every test
/// binary records).
#[allow(dead_code)]
pub fn record_emu(trace: &Path, workload: &str) -> Output {
    record_emu_with(trace, &[], &[&format!("/bin/{workload}")])
}

/// `krr record --accel emu` with `extra` options (`--smp 4`, ...) of the guest command `cmd`.
#[allow(dead_code)]
pub fn record_emu_with(trace: &Path, extra: &[&str], cmd: &[&str]) -> Output {
    let timeout: &[&str] = if extra.contains(&"--timeout") { &[] } else { &["--timeout", "600"] };
    Command::new(env!("CARGO_BIN_EXE_krr"))
        .args(["record", "--quiet", "--accel", "emu", "-o"])
        .arg(trace)
        .args(kernel_args())
        .args(timeout)
        .args(extra)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

/// A copy of `trace` at `to` with `change` applied to its events (index, event).
#[allow(dead_code)]
pub fn perturbed(trace: &Path, to: &Path, change: impl Fn(u64, &mut krr_trace::Event)) {
    assert!(copy_trace(trace, to, usize::MAX, change), "no end event");
}

/// A copy of the first `n` events of `trace` at `to`, not sealed: what a recorder killed
/// after writing them leaves.
#[allow(dead_code)]
pub fn cut(trace: &Path, to: &Path, n: usize) {
    assert!(!copy_trace(trace, to, n, |_, _| {}), "the trace has fewer than {n} events");
}

/// Copies the start snapshot and up to `n` events (console bytes with their markers), changed
/// by `change`; seals the copy and returns true if it got to the end event.
fn copy_trace(trace: &Path, to: &Path, n: usize, change: impl Fn(u64, &mut krr_trace::Event)) -> bool {
    let mut r = krr_trace::TraceReader::open(trace).unwrap();
    let header = r.header().clone();
    let console = r.console().unwrap();
    let events: Vec<krr_trace::Event> = r.events().map(|e| e.unwrap().event).collect();
    let mut w =
        krr_trace::TraceWriter::create(to, header.clone(), krr_trace::WriterOptions::default()).unwrap();
    std::fs::copy(trace.join("snapshot"), w.snapshot_path()).unwrap();
    w.set_snapshot(header.snapshot.clone().unwrap()).unwrap();
    let mut at = 0usize;
    for (i, mut e) in events.into_iter().enumerate().take(n) {
        match e {
            krr_trace::Event::Console { vcpu, len } => {
                w.console(vcpu, &console[at..at + len as usize]).unwrap();
                at += len as usize;
            }
            krr_trace::Event::End { vcpu, reason } => {
                w.finish(vcpu, reason, 0).unwrap();
                return true;
            }
            _ => {
                change(i as u64, &mut e);
                w.append(&e).unwrap();
            }
        }
    }
    // Dropped unsealed: the writer keeps what was appended.
    false
}
