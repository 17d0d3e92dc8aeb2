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

/// `krr record --accel emu` of `/bin/WORKLOAD` into `trace` with the guest build (not every test
/// binary records).
#[allow(dead_code)]
pub fn record_emu(trace: &Path, workload: &str) -> Output {
    let dir = guest_dir();
    Command::new(env!("CARGO_BIN_EXE_krr"))
        .args(["record", "--quiet", "--accel", "emu", "--timeout", "600", "-o"])
        .arg(trace)
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .arg("--")
        .arg(format!("/bin/{workload}"))
        .output()
        .unwrap()
}
