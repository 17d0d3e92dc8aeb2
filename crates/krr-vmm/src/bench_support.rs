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

/// `$KRR_GUEST_DIR`, else the cached build of the current guest inputs (panics if not built).
pub fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KRR_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../guest/build.sh");
    let out = Command::new(script).arg("--print-dir").output().expect("run guest/build.sh --print-dir");
    assert!(out.status.success(), "the guest is not built: run guest/build.sh first");
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
            from_boot: false,
            producer: "krr bench".into(),
            kernel_version: String::new(),
        }),
        interrupt: None,
        profile,
    }
}
