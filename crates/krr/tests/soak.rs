//! The soak suite in its bounded form: each entry of `scripts/soak.sh` with `--quick` (a long
//! recording on emu of loops of workloads or of a stress-ng stressor; 20 K to 1 M events, up to
//! hundreds of ring flushes, the OOM killer, four vCPUs), recorded with this build's `krr` and replayed at once: the script
//! fails an entry whose workload fails, whose replay diverges or whose console differs.
//!
//! Ignored by plain `cargo test` (minutes); `scripts/test.sh` runs it with `--release`.
//! `scripts/soak.sh` without `--quick` is the whole suite (ten times the rounds; churn-long
//! records over 10 M events), outside CI.

use std::path::Path;
use std::process::Command;

/// Run `scripts/soak.sh --quick NAME` and check its row: exit 0, verdict ok, at least
/// `min_events` events and `min_flushes` ring flushes.
fn soak(name: &str, min_events: u64, min_flushes: u64) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempfile::tempdir().unwrap();
    let r = Command::new(repo.join("scripts/soak.sh"))
        .args(["--quick", "-o"])
        .arg(out.path())
        .arg(name)
        .env("KRR_BIN", env!("CARGO_BIN_EXE_krr"))
        .output()
        .expect("run scripts/soak.sh");
    let stdout = String::from_utf8_lossy(&r.stdout);
    let log =
        |f: &str| std::fs::read_to_string(out.path().join(format!("{name}.{f}.log"))).unwrap_or_default();
    let tail = |s: String| {
        s.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    let context = format!(
        "soak.sh output:\n{stdout}\n{}\nrecord log (tail):\n{}\nreplay log (tail):\n{}",
        String::from_utf8_lossy(&r.stderr),
        tail(log("record")),
        tail(log("replay"))
    );
    assert!(r.status.success(), "{name}: soak.sh failed\n{context}");
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name}: no row\n{context}"))
        .split_whitespace()
        .collect();
    // name exit events flushes record_s replay_s rss_MiB verdict
    assert_eq!((row[1], row.last().copied()), ("0", Some("ok")), "{name}\n{context}");
    let events: u64 = row[2].parse().unwrap_or(0);
    let flushes: u64 = row[3].parse().unwrap_or(0);
    assert!(events >= min_events, "{name}: {events} events, expected at least {min_events}\n{context}");
    assert!(flushes >= min_flushes, "{name}: {flushes} flushes, expected at least {min_flushes}\n{context}");
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_procwalk() {
    soak("procwalk", 10_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_ptebits_loop() {
    soak("ptebits-loop", 40_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_churn_with_a_small_ring() {
    soak("churn", 100_000, 40);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_pressure() {
    soak("pressure", 80_000, 20);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_smp2_munmap() {
    soak("smp2-munmap", 30_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_smp4_mix_with_a_large_ring() {
    soak("smp4-mix", 50_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_oom_killer() {
    soak("oom", 100_000, 2);
}

/// stress-ng from Debian (`--add-bin`): the four stressors that diverged when the soak issue
/// was filed (memory mapping, madvise, clone, threads).
#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_stress_ng_mmap() {
    soak("stress-mmap", 10_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_stress_ng_madvise() {
    soak("stress-madvise", 10_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_stress_ng_clone() {
    soak("stress-clone", 10_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_stress_ng_thread() {
    soak("stress-thread", 10_000, 0);
}

#[test]
#[ignore = "minutes: scripts/test.sh runs it"]
fn soak_churn_long() {
    soak("churn-long", 900_000, 400);
}
