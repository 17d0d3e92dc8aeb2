//! Shared by the end-to-end tests: where the guest kernel and initramfs are.

use std::path::PathBuf;
use std::process::Command;

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
