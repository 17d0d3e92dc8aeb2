//! `krr guest build` with a kernel developer's inputs: a kconfig fragment and a patch under test
//! (built for real, recorded and replayed), and the refusals of configs that lose what krr needs.
//! The custom build is cached like the default one (~4 minutes the first time on 2 cores).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn krr() -> Command {
    Command::new(env!("CARGO_BIN_EXE_krr"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `krr guest build ARGS`: the output directory (the last stdout line).
fn guest_build(args: &[&str]) -> Result<PathBuf, String> {
    let out = krr().args(["guest", "build"]).args(args).output().unwrap();
    if !out.status.success() {
        return Err(text(&out.stderr));
    }
    Ok(PathBuf::from(text(&out.stdout).lines().last().expect("the output directory").trim()))
}

#[test]
fn a_guest_with_a_config_fragment_and_a_patch_records_and_replays_and_the_patch_prints() {
    let frag = data("sysvipc.config");
    let patch = data("sync-printk.patch");
    let dir = guest_build(&["--config", frag.to_str().unwrap(), "--patch", patch.to_str().unwrap()])
        .unwrap_or_else(|e| panic!("the custom guest did not build:\n{e}"));
    assert_ne!(dir, common::guest_dir(), "a fragment and a patch are part of the cache key");
    let manifest = std::fs::read_to_string(dir.join("manifest")).unwrap();
    assert!(manifest.contains("u01-sync-printk.patch"), "{manifest}");
    let config = std::fs::read_to_string(dir.join("config")).unwrap();
    assert!(config.lines().any(|l| l == "CONFIG_SYSVIPC=y"), "the fragment is in the kernel's .config");
    // `krr guest dir` with the same inputs finds the same build.
    let found =
        krr().args(["guest", "dir", "--config"]).arg(&frag).arg("--patch").arg(&patch).output().unwrap();
    assert!(found.status.success(), "{}", text(&found.stderr));
    assert_eq!(text(&found.stdout).trim(), dir.to_str().unwrap());

    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace");
    let (vmlinux, initrd) = (dir.join("vmlinux"), dir.join("initramfs.cpio"));
    // sync(2) runs the patch's printk; /proc/sysvipc exists only with the fragment's SYSVIPC.
    let rec = krr()
        .args(["record", "--quiet", "--accel", "emu", "--timeout", "600", "--kernel"])
        .arg(&vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("-o")
        .arg(&trace)
        .args(["--", "sh", "-c", "sync && cat /proc/sysvipc/sem > /dev/null && echo sysvipc-ok"])
        .output()
        .unwrap();
    assert!(rec.status.success(), "record: {}", text(&rec.stderr));
    let console = text(&krr().arg("dump").arg(&trace).output().unwrap().stdout);
    assert!(console.contains("krr-test: sync(2) called by sync"), "the patched kernel's printk:\n{console}");
    assert!(console.contains("sysvipc-ok"), "{console}");
    let rep = krr().args(["replay", "--json", "--vmlinux"]).arg(&vmlinux).arg(&trace).output().unwrap();
    assert!(rep.status.success(), "replay: {}{}", text(&rep.stdout), text(&rep.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    assert_eq!(summary["console_match"], true, "{summary}");
    assert_eq!(summary["diverged"], false, "{summary}");
}

/// A changed `--patch` swaps only the user's patch in the cached work tree: krr's agent patches
/// stay applied (re-applying them would touch headers the whole kernel includes), so the build
/// recompiles a handful of files, not the kernel.
#[test]
fn a_changed_patch_keeps_the_agent_applied_and_recompiles_little() {
    let frag = data("sysvipc.config");
    let agent = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest/patches"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".patch"))
        .count();
    let build = |patch: &str| {
        let out = krr()
            .args(["guest", "build", "--force", "--config"])
            .arg(&frag)
            .arg("--patch")
            .arg(data(patch))
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(out.status.success(), "{err}");
        (PathBuf::from(text(&out.stdout).lines().last().expect("the output directory").trim()), err)
    };
    // Whatever the tree carried before, it now carries the agent and the first patch.
    build("sync-printk.patch");
    let (dir, err) = build("sync-printk-v2.patch");
    assert!(
        err.contains(&format!("keeps the first {agent} patch(es) of the series applied")),
        "only the user's patch is swapped:\n{err}"
    );
    let log = std::fs::read_to_string(dir.join("build.log")).unwrap();
    let compiled = log.lines().filter(|l| l.trim_start().starts_with("CC ")).count();
    assert!((1..50).contains(&compiled), "a patch to fs/sync.c recompiled {compiled} files:\n{log}");
}

#[test]
fn a_fragment_that_turns_off_the_agent_is_refused_in_one_line() {
    let err = guest_build(&["--config", data("no-agent.config").to_str().unwrap()])
        .expect_err("a guest without the agent must not build");
    let last = err.lines().last().unwrap();
    assert!(last.contains("turns off what krr needs: CONFIG_KRR=n"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn a_fragment_whose_dependencies_drop_a_required_option_is_refused_naming_it() {
    // Without TTY, kconfig drops the 8250 console krr needs: found after olddefconfig.
    let tmp = tempfile::tempdir().unwrap();
    let frag = tmp.path().join("no-tty.config");
    std::fs::write(&frag, "# CONFIG_TTY is not set\n").unwrap();
    let err = guest_build(&["--config", frag.to_str().unwrap()])
        .expect_err("a kernel without a console must not build");
    let last = err.lines().last().unwrap();
    assert!(last.contains("lacks what krr needs") && last.contains("CONFIG_SERIAL_8250"), "{err}");
}

#[test]
fn a_tree_that_is_not_linux_6_1_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path();
    std::fs::create_dir(tree.join("kernel")).unwrap();
    std::fs::write(tree.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 6\nSUBLEVEL = 30\n").unwrap();
    let err = guest_build(&["--linux", tree.to_str().unwrap()]).expect_err("6.6 is not supported");
    assert!(err.lines().last().unwrap().contains("is Linux 6.6.30"), "{err}");
}

#[test]
fn debug_options_without_the_debug_profile_are_refused_in_one_line() {
    let err = guest_build(&["--kasan"]).expect_err("KASAN needs SLUB, which the default profile lacks");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("need --profile debug"), "{err}");
}
