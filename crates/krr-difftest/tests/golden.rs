//! krr-emu against the stored results of each vendor's CPU (`golden/`): runs on any host, so
//! the profile of the vendor this machine is not is checked too.

use std::path::PathBuf;
use std::process::Command;

fn golden(vendor: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("golden/{vendor}-seed1.golden.zst"))
}

/// Runs `krr-difftest --golden FILE [args]`; returns (exit code, passed, failed, stdout).
fn run(vendor: &str, args: &[&str]) -> (Option<i32>, u64, u64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_krr-difftest"))
        .arg("--golden")
        .arg(golden(vendor))
        .args(["--max-report", "5"])
        .args(args)
        .output()
        .expect("run krr-difftest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = stdout.lines().last().unwrap_or("").to_string();
    let nums: Vec<u64> = last.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert_eq!(nums.len(), 2, "closing line: {last}\n{stdout}");
    (out.status.code(), nums[0], nums[1], stdout)
}

fn agrees(vendor: &str) {
    let (code, passed, failed, out) = run(vendor, &[]);
    assert_eq!(failed, 0, "{out}");
    assert_eq!(code, Some(0), "{out}");
    // 42,515 cases: all but the ~110 that the reference host's KVM could not compare.
    assert!(passed >= 42_400, "{out}");
}

#[test]
fn emu_in_the_amd_profile_agrees_with_the_amd_cpu() {
    agrees("amd");
}

#[test]
fn emu_in_the_intel_profile_agrees_with_the_intel_cpu() {
    agrees("intel");
}

/// The check can fail: the other vendor's profile differs in thousands of undefined flags.
#[test]
fn the_wrong_profile_is_caught() {
    let (code, _, failed, out) = run("intel", &["--vendor", "amd", "--family", "muldiv,shift"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(failed > 1000, "{out}");
    assert!(out.contains("MISMATCH shift/") && out.contains("(differ: OF)"), "{out}");
}

#[test]
fn a_golden_file_for_other_random_cases_is_refused() {
    let (code, _, _, out) = {
        let out = Command::new(env!("CARGO_BIN_EXE_krr-difftest"))
            .arg("--golden")
            .arg(golden("amd"))
            .args(["--seed", "2"])
            .output()
            .expect("run");
        (out.status.code(), 0, 0, String::from_utf8_lossy(&out.stdout).into_owned())
    };
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("--seed 1 --count 5000"), "{out}");
}

#[test]
fn a_damaged_golden_file_is_one_line() {
    let dir = std::env::temp_dir().join(format!("krr-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.golden.zst");
    std::fs::write(&f, b"not zstd").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_krr-difftest")).arg("--golden").arg(&f).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("bad.golden.zst"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
