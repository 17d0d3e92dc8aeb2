//! `krr bench` on the emu backend at two vCPU counts: a result for each, and each recording
//! replays (QEMU is left out: `scripts/bench.sh` measures it; the kvm side runs in the nested
//! harness, crates/krr/tests/nested.rs).

mod common;

use std::process::Command;

#[test]
fn bench_measures_each_vcpu_count_and_replays_what_it_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_krr"))
        .args(["bench", "--no-qemu", "--workloads", "hello", "--reps", "1", "--smp", "1,2", "--json"])
        .arg(&json)
        .env("KRR_GUEST_DIR", common::guest_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello/2"), "the two-vCPU row is named so: {stdout}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["backend"], "emu");
    assert_eq!(v["smp"], serde_json::json!([1, 2]));
    let ws = v["workloads"].as_array().unwrap();
    assert_eq!(ws.len(), 2, "{v}");
    for (w, smp) in ws.iter().zip([1, 2]) {
        assert_eq!(w["smp"], smp, "{w}");
        assert_eq!(w["krr_replays_verified"], 1, "{w}");
        assert!(w["events"].as_u64().unwrap() > 0, "{w}");
        assert!(w["ratios"]["krr_record_over_run"].as_f64().unwrap() > 0.0, "{w}");
        // The emulator counts instructions, at every vCPU count.
        assert!(w["profile_run"]["kernel"].as_u64().unwrap() > 0, "{w}");
        assert!(w["problems"].as_array().unwrap().is_empty(), "{w}");
    }
    // Only one-vCPU rows would carry QEMU figures, and --no-qemu left them out.
    assert!(ws.iter().all(|w| w["qemu_record"]["samples"].as_array().unwrap().is_empty()));
}
