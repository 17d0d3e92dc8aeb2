//! Recording on a real KVM: `scripts/nested-kvm.sh` boots Debian's kernel under QEMU's TCG
//! (`-cpu max`: AMD SVM with nested paging), loads kvm_amd there, runs `krr record --accel kvm`
//! of the workloads inside, and brings the traces back; each is replayed here, on krr-emu, and
//! must replay with zero divergence, every event consumed and the same console.
//!
//! Ignored by plain `cargo test` (it needs QEMU and takes minutes); `scripts/test.sh` runs the
//! bounded CI list, `scripts/nested-suite.sh` the whole list of issue 15 (KRR_NESTED_SUITE=full).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// (name, vCPUs, workload) recorded in CI: every kind of workload once, two vCPUs where the
/// kernel lock and TLB shootdowns matter, bounded to a few minutes in all.
const CI: &[(&str, u32, &str)] = &[
    ("hello", 1, "hello"),
    ("forkexec", 1, "forkexec"),
    ("futex", 1, "futex"),
    ("mmap", 1, "mmap"),
    ("smp-futex-2", 2, "smp-futex"),
    ("smp-munmap-2", 2, "smp-munmap"),
    ("smp-mix-2", 2, "smp-mix"),
];

const ONE_VCPU: &[&str] = &[
    "hello", "fileio", "pipes", "forkexec", "mmap", "signals", "futex", "timers", "procfs", "epoll", "efault",
];
const SMP: &[&str] = &["smp-futex", "smp-tmpfs", "smp-pipes", "smp-munmap", "smp-affinity", "smp-mix"];

/// The whole list: the 11 one-vCPU workloads, the six multi-core ones at two vCPUs, smp-mix at
/// four, and 20 recordings of smp-mix at two and four vCPUs.
fn full() -> Vec<(String, u32, String)> {
    let mut v: Vec<(String, u32, String)> =
        ONE_VCPU.iter().map(|w| (w.to_string(), 1, w.to_string())).collect();
    v.extend(SMP.iter().map(|w| (format!("{w}-2"), 2, w.to_string())));
    v.push(("smp-mix-4".into(), 4, "smp-mix".into()));
    for i in 0..20 {
        let smp = if i % 2 == 0 { 2 } else { 4 };
        v.push((format!("smp-mix-{smp}-run{i}"), smp, "smp-mix".into()));
    }
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the harness on `list`; returns the output directory.
fn run_harness(out: &Path, list: &[(String, u32, String)]) {
    let cmds = out.with_extension("commands");
    let mut s = String::from("doctor doctor\n");
    for (name, smp, w) in list {
        s.push_str(&format!("{name} record -o @TRACE --accel kvm --smp {smp} --timeout 150 -- /bin/{w}\n"));
    }
    std::fs::write(&cmds, s).unwrap();
    let krr = env!("CARGO_BIN_EXE_krr");
    let status = Command::new(repo().join("scripts/nested-kvm.sh"))
        .arg("-o")
        .arg(out)
        .args(["--command-timeout", "240", "--krr", krr])
        .arg(&cmds)
        .env("KRR_GUEST_DIR", common::guest_dir())
        .status()
        .expect("run scripts/nested-kvm.sh");
    assert!(status.success(), "the nested harness failed (see {}/console.log)", out.display());
}

#[test]
#[ignore = "needs QEMU and minutes: scripts/test.sh and scripts/nested-suite.sh run it"]
fn kvm_recordings_made_on_a_real_kvm_replay() {
    let list: Vec<(String, u32, String)> = match std::env::var("KRR_NESTED_SUITE").as_deref() {
        Ok("full") => full(),
        _ => CI.iter().map(|(n, s, w)| (n.to_string(), *s, w.to_string())).collect(),
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("nested");
    run_harness(&out, &list);
    let doctor = std::fs::read_to_string(out.join("doctor.log")).unwrap_or_default();
    assert!(doctor.contains("SYSCALL"), "krr doctor in L1: {doctor}");
    let results = std::fs::read_to_string(out.join("results.tsv")).unwrap();
    let mut failures = Vec::new();
    for (name, _, w) in &list {
        let row = results.lines().find(|l| l.split('\t').next() == Some(name.as_str())).unwrap_or("");
        let log = std::fs::read_to_string(out.join(format!("{name}.log"))).unwrap_or_default();
        if row.split('\t').nth(1) != Some("0") {
            failures.push(format!("{name}: recording in L1 did not exit 0 ({row}): {}", log.trim_end()));
            continue;
        }
        let trace = out.join(name);
        let replay = Command::new(env!("CARGO_BIN_EXE_krr"))
            .arg("replay")
            .arg(&trace)
            .arg("--json")
            .env("KRR_GUEST_DIR", common::guest_dir())
            .output()
            .unwrap();
        let v: serde_json::Value = match serde_json::from_slice(&replay.stdout) {
            Ok(v) => v,
            Err(_) => {
                failures.push(format!("{name}: replay: {}", text(&replay.stderr).trim_end()));
                continue;
            }
        };
        let events = krr_trace::TraceReader::open(&trace).map(|mut t| t.events().count() as u64).unwrap_or(0);
        let ok = v["diverged"] == false
            && v["console_match"] == true
            && v["complete"] == true
            && v["events"].as_u64() == Some(events);
        let secs = row.split('\t').nth(2).unwrap_or("?");
        eprintln!("{name} ({w}): recorded in L1 in {secs} s, {events} events; replay {v}");
        if !ok {
            failures.push(format!("{name}: {v} / {} events; {}", events, text(&replay.stderr).trim_end()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} kvm recordings failed:\n{}",
        failures.len(),
        list.len(),
        failures.join("\n")
    );
}
