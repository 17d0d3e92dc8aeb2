//! The `kvm` backend on a host whose KVM emulates guest ring 0 and cannot run guest user space
//! (this project's machines, DESIGN §12): boot the kernel, save a snapshot late in boot (when the
//! console shows a line), restore it into a new KVM VM and boot on to `Run /init`, where krr stops
//! with its one-line explanation. Needs /dev/kvm and takes minutes, so it is `#[ignore]`d;
//! `scripts/test.sh` runs it with `--ignored` where /dev/kvm exists.

mod common;

use std::process::Command;

use common::guest_dir;

#[test]
#[ignore = "needs /dev/kvm and several minutes"]
fn kvm_boot_snapshot_restore_reaches_init() {
    let dir = guest_dir();
    let tmp = tempfile::tempdir().unwrap();
    let snap = tmp.path().join("kvm.snap");
    let krr = env!("CARGO_BIN_EXE_krr");
    let (vmlinux, initrd) = (dir.join("vmlinux"), dir.join("initramfs.cpio"));
    let kernel = ["--kernel", vmlinux.to_str().unwrap(), "--initrd", initrd.to_str().unwrap()];
    let out = Command::new(krr)
        .args(["run", "--quiet", "--accel", "kvm", "--timeout", "900"])
        .args(kernel)
        .args([
            "--save-snapshot",
            snap.to_str().unwrap(),
            "--snapshot-on-console",
            "Freeing unused kernel image (initmem)",
        ])
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("saved the VM to"), "{err}");

    let out = Command::new(krr)
        .args([
            "run",
            "--accel",
            "kvm",
            "--timeout",
            "900",
            "--from-snapshot",
            snap.to_str().unwrap(),
            "--",
            "/bin/true",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let console = String::from_utf8_lossy(&out.stdout);
    // The restored kernel continues where it was saved, not from the start.
    assert!(!console.contains("Linux version"), "{console}");
    assert!(console.contains("Run /init as init process"), "{console}");
    if err.contains("cannot run the guest's user space") {
        assert_eq!(out.status.code(), Some(125), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    } else {
        // A host with real hardware virtualization runs the workload.
        assert_eq!(out.status.code(), Some(0), "{err}");
    }
}
