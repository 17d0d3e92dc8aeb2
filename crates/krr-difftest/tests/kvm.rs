//! Tests that need /dev/kvm are `#[ignore]`d: run them with `cargo test -p krr-difftest -- --ignored`
//! on a host that has it.

use std::process::Command;

use krr_difftest::case::{Case, End, RAX, RBX, RCX};
use krr_difftest::compare::{check, Runner, Verdict};
use krr_difftest::emu::EmuRunner;
use krr_difftest::kvm::KvmRunner;
use krr_difftest::layout::{CODE_BASE, DATA_BASE, RO_PAGE};
use krr_difftest::{corpus, gen};

#[test]
fn without_kvm_the_binary_says_so_and_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_krr-difftest"))
        .env("KRR_DIFFTEST_KVM", "/nonexistent/kvm")
        .output()
        .expect("run krr-difftest");
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("cannot use KVM"), "{stdout}");
}

#[test]
fn help() {
    let out = Command::new(env!("CARGO_BIN_EXE_krr-difftest")).arg("--help").output().expect("run");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--prefixes"));
}

fn add_case() -> Case {
    let mut c = Case::new("t", "add");
    c.gprs[RAX] = 5;
    c.gprs[RCX] = u64::MAX;
    c.insns = vec![vec![0x48, 0x01, 0xc8]]; // add rax, rcx
    c
}

#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_runs_a_sequence() {
    let mut k = KvmRunner::new().expect("KVM");
    let o = k.run(&add_case()).expect("runs");
    assert_eq!(o.end, End::Done);
    assert_eq!(o.gprs[RAX], 4);
    assert_eq!(o.rflags & 0x8d5, 0x11, "CF and AF");
    assert_eq!(o.rip, CODE_BASE + 3, "rip of the final out");
}

#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_reports_exceptions() {
    let mut k = KvmRunner::new().expect("KVM");
    let mut c = Case::new("t", "pf");
    c.gprs[RBX] = RO_PAGE + 8;
    c.insns = vec![vec![0x48, 0x89, 0x03]]; // mov [rbx], rax
    let o = k.run(&c).expect("runs");
    assert_eq!(o.end, End::Exception { vector: 14, error_code: Some(7), cr2: Some(RO_PAGE + 8) });
    assert_eq!(o.rip, CODE_BASE);
    let mut c = Case::new("t", "de");
    c.insns = vec![vec![0x31, 0xc9], vec![0x48, 0xf7, 0xf1]]; // xor ecx,ecx; div rcx
    let o = k.run(&c).expect("runs");
    assert_eq!(o.end, End::Exception { vector: 0, error_code: None, cr2: None });
    assert_eq!(o.rip, CODE_BASE + 2);
    // Stores land in the window.
    let mut c = Case::new("t", "store");
    c.gprs[RBX] = DATA_BASE + 0x10;
    c.gprs[RAX] = 0x1122_3344_5566_7788;
    c.insns = vec![vec![0x48, 0x89, 0x03]];
    let o = k.run(&c).expect("runs");
    assert_eq!(&o.mem[0x10..0x18], &0x1122_3344_5566_7788u64.to_le_bytes());
}

#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_times_out_on_a_loop_and_recovers() {
    let mut k = KvmRunner::new().expect("KVM");
    k.timeout = std::time::Duration::from_millis(300);
    let mut c = Case::new("t", "loop");
    c.insns = vec![vec![0xeb, 0xfe]];
    assert!(k.run(&c).is_err());
    assert_eq!(k.run(&add_case()).expect("runs after a timeout").gprs[RAX], 4);
}

#[test]
#[ignore = "needs /dev/kvm"]
fn kvm_runs_every_corpus_case() {
    let mut k = KvmRunner::new().expect("KVM");
    let mut cases = corpus::all();
    cases.extend(gen::random_cases(1, 2000));
    let start = std::time::Instant::now();
    for c in &cases {
        if let Err(e) = k.run(c) {
            panic!("{}: {e:?}", c.name);
        }
    }
    let rate = cases.len() as f64 / start.elapsed().as_secs_f64();
    eprintln!("{} cases, {rate:.0} cases/s", cases.len());
}

/// Families on which krr-emu agreed with the CPU when the harness was written (regression guard).
#[test]
#[ignore = "needs /dev/kvm"]
fn emu_agrees_on_clean_families() {
    let mut k = KvmRunner::new().expect("KVM");
    let mut e = EmuRunner::new();
    let mut bad = Vec::new();
    for f in [
        "alu",
        "unary",
        "cmov_setcc",
        "bit",
        "bitext",
        "muldiv",
        "shift",
        "shiftd",
        "string",
        "jcc",
        "stack",
        "xchg",
        "misc",
        "exc",
        "x87store",
    ] {
        for c in corpus::family(f) {
            match check(&c, &mut k as &mut dyn Runner, &mut e, false) {
                Verdict::Pass => {}
                Verdict::ImplementationChoice(why) => eprintln!("not compared: {}: {why}", c.name),
                v => bad.push((c, v)),
            }
        }
    }
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), summary(&bad));
}

/// A failure message that says what differs (CI shows only the panic): the mismatch signatures
/// with counts, then the first cases.
fn summary(bad: &[(krr_difftest::case::Case, Verdict)]) -> String {
    let mut sigs = std::collections::BTreeMap::<String, (usize, &str)>::new();
    for (c, v) in bad {
        sigs.entry(krr_difftest::compare::signature(c, v)).or_insert((0, &c.name)).0 += 1;
    }
    let mut s = format!("cpu: {}\n", krr_difftest::emu::host_cpu_description());
    for (sig, (n, example)) in &sigs {
        s += &format!("  {n:5} {sig} (e.g. {example})\n");
    }
    for (c, v) in bad.iter().take(8) {
        s += &format!("  {}: {v:?}\n", c.name);
    }
    s
}

/// The stored golden results of this host's vendor (`golden/`) are what this CPU does: every
/// case both can compare agrees. On an Intel host this checks the file seeded from a report;
/// on a mismatch, regenerate the file here with `--write-golden` (crates/krr-difftest/README.md).
#[test]
#[ignore = "needs /dev/kvm"]
fn the_stored_golden_results_of_this_vendor_are_this_cpu() {
    use krr_difftest::golden::{Golden, Lookup};
    let Some(vendor) = krr_emu::Vendor::host() else {
        panic!("krr-emu has no profile for this host's vendor {}", krr_emu::Vendor::host_cpuid_vendor());
    };
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("golden/{}-seed1.golden.zst", vendor.name()));
    let g = Golden::read(&file).expect("golden file");
    assert_eq!((g.seed, g.count), (1, 5000));
    let mut k = KvmRunner::new().expect("KVM");
    let mut cases = corpus::all();
    cases.extend(gen::random_cases(1, 5000));
    let (mut compared, mut bad) = (0, Vec::new());
    for c in &cases {
        let Lookup::Found(n, stored) = g.get(c) else { panic!("{}: not in {}", c.name, file.display()) };
        let Ok(stored) = *stored else { continue };
        let host = k.run_prefix(c, n);
        if host.is_err() {
            continue;
        }
        match krr_difftest::compare::compare_one(&host, &Ok(stored), &c.code(n)) {
            None => compared += 1,
            Some(Verdict::HostError(_)) => {}
            Some(Verdict::ImplementationChoice(why)) => eprintln!("not compared: {}: {why}", c.name),
            Some(v) => {
                compared += 1;
                bad.push((c.clone(), v));
            }
        }
    }
    assert!(compared > 42_000, "only {compared} cases compared");
    assert!(
        bad.is_empty(),
        "{} of {compared} stored results (written on: {}) differ from this CPU (regenerate {} with --write-golden):\n{}",
        bad.len(),
        g.cpu,
        file.display(),
        summary(&bad)
    );
}
