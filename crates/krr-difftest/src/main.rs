//! `krr-difftest`: runs the differential corpus on KVM (the real CPU, guest ring 3) and on krr-emu.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use krr_difftest::case::Case;
use krr_difftest::compare::{check, describe, flag_names, Report, Runner, Verdict};
use krr_difftest::emu::EmuRunner;
use krr_difftest::kvm::{KvmError, KvmRunner};
use krr_difftest::{corpus, gen};

const HELP: &str = "\
krr-difftest: compare krr-emu with the real CPU (KVM guest ring 3)

USAGE: krr-difftest [OPTIONS]

OPTIONS:
  --seed N          seed of the random sequences (default 1)
  --count N         number of random sequences (default 5000; 0 = none)
  --family NAME     run only this family (repeatable; `random` = the random sequences);
                    families: alu unary shift shiftd muldiv bit bitext string cmov_setcc jcc stack
                    xchg misc sse x87 exc forms random
  --case NAME       run only the case NAME (repeatable; names as printed in reports)
  --prefixes        compare after every instruction of each sequence, not only at its end
  --max-report N    print at most N mismatch reports (default 30)
  --no-decode-cache run krr-emu with its decoded-instruction cache off
  --full-reset      restore krr-emu's whole memory and flush its decode cache before every case
                    (default: like the KVM guest, memory persists and only code and window are rewritten)
  --kvm-only        run the cases on KVM only (checks the corpus and the host; compares nothing)
  --strict          also fail (exit 1) when krr-emu reports an instruction unimplemented
  --list            print the case names and exit
  -h, --help        this text

Exit status: 0 all compared cases agree, 1 a mismatch (or an emulator error), 2 /dev/kvm unusable
or bad arguments. The last line is `N passed, N failed`.";

struct Args {
    seed: u64,
    count: u64,
    families: Vec<String>,
    names: Vec<String>,
    prefixes: bool,
    max_report: usize,
    decode_cache: bool,
    full_reset: bool,
    kvm_only: bool,
    strict: bool,
    list: bool,
}

fn parse_args() -> Result<Option<Args>, String> {
    let mut a = Args {
        seed: 1,
        count: 5000,
        families: Vec::new(),
        names: Vec::new(),
        prefixes: false,
        max_report: 30,
        decode_cache: true,
        full_reset: false,
        kvm_only: false,
        strict: false,
        list: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            let parsed =
                if let Some(h) = v.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { v.parse() };
            parsed.map_err(|_| format!("{name}: not a number: {v}"))
        };
        match arg.as_str() {
            "--seed" => a.seed = num("--seed")?,
            "--count" => a.count = num("--count")?,
            "--max-report" => a.max_report = num("--max-report")? as usize,
            "--family" => {
                let f = it.next().ok_or("--family needs a value")?;
                for f in f.split(',') {
                    if f != "random" && !corpus::FAMILIES.contains(&f) {
                        return Err(format!("unknown family {f}"));
                    }
                    a.families.push(f.to_string());
                }
            }
            "--case" => a.names.push(it.next().ok_or("--case needs a value")?),
            "--prefixes" => a.prefixes = true,
            "--no-decode-cache" => a.decode_cache = false,
            "--full-reset" => a.full_reset = true,
            "--kvm-only" => a.kvm_only = true,
            "--strict" => a.strict = true,
            "--list" => a.list = true,
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    Ok(Some(a))
}

fn cases(a: &Args) -> Vec<Case> {
    let want = |f: &str| a.families.is_empty() || a.families.iter().any(|x| x == f);
    let mut v = Vec::new();
    for f in corpus::FAMILIES {
        if want(f) {
            v.extend(corpus::family(f));
        }
    }
    if want("random") {
        v.extend(gen::random_cases(a.seed, a.count));
    }
    if !a.names.is_empty() {
        v.retain(|c| a.names.contains(&c.name));
    }
    v
}

/// The KVM side alone: every case must run (no timeout, no unexpected exit).
fn kvm_only(all: &[Case], kvm: &mut KvmRunner) -> ExitCode {
    let mut per: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut bad = 0u64;
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for c in all {
        let e = per.entry(c.family.as_str()).or_default();
        e.0 += 1;
        match kvm.run(c) {
            Ok(o) => {
                let k = match o.end {
                    krr_difftest::case::End::Done => "done".to_string(),
                    krr_difftest::case::End::Exception { vector, .. } => {
                        format!("#{}", krr_difftest::compare::vector_name(vector))
                    }
                };
                *ends.entry(k).or_default() += 1;
            }
            Err(err) => {
                e.1 += 1;
                bad += 1;
                if bad <= 20 {
                    println!("KVM could not run {}: {err:?}", c.name);
                }
            }
        }
    }
    for (f, (n, b)) in &per {
        println!("{f:<12} {n:6} cases {b:4} not runnable");
    }
    println!("outcomes: {ends:?}");
    println!("{} passed, {} failed", all.len() as u64 - bad, bad);
    if bad > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let a = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("krr-difftest: {e}");
            return ExitCode::from(2);
        }
    };
    if a.list {
        for c in &cases(&a) {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    let mut kvm = match KvmRunner::new() {
        Ok(k) => k,
        Err(e) => {
            let why = match e {
                KvmError::NoKvm(m) | KvmError::Setup(m) => m,
            };
            println!("krr-difftest: cannot use KVM ({why}); nothing was compared");
            return ExitCode::from(2);
        }
    };
    let all = cases(&a);
    let start = Instant::now();
    if a.kvm_only {
        let code = kvm_only(&all, &mut kvm);
        let t = start.elapsed().as_secs_f64();
        println!("# {} cases in {t:.2}s ({:.0} cases/s)", all.len(), all.len() as f64 / t);
        return code;
    }
    let mut emu = EmuRunner::new();
    emu.set_decode_cache(a.decode_cache);
    emu.set_full_reset(a.full_reset);
    let mut report = Report::default();
    let mut reported = 0usize;
    for c in &all {
        let v = check(c, &mut kvm as &mut dyn Runner, &mut emu, a.prefixes);
        if matches!(v, Verdict::Mismatch { .. } | Verdict::EmuError { .. }) {
            if reported < a.max_report {
                print!("{}", describe(c, &v));
            }
            reported += 1;
        }
        report.record(c, &v);
    }
    let secs = start.elapsed().as_secs_f64();
    if reported > a.max_report {
        println!("({} more mismatches not shown; --max-report N)", reported - a.max_report);
    }
    println!();
    println!(
        "{:<12} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6}",
        "family", "cases", "pass", "mism", "(undef)", "emuerr", "unimpl", "host"
    );
    let row = |name: &str, t: &krr_difftest::compare::Tally| {
        println!(
            "{name:<12} {:>6} {:>6} {:>6} {:>7} {:>6} {:>6} {:>6}",
            t.cases, t.passed, t.mismatched, t.undefined_only, t.emu_errors, t.unimplemented, t.host_errors
        );
    };
    for (f, t) in &report.families {
        row(f, t);
    }
    let t = report.total();
    row("total", &t);
    println!(
        "(undef): mismatches only in flags the manuals leave undefined; host: not comparable on this host"
    );
    if !report.signatures.is_empty() {
        println!("mismatch signatures (first diverging instruction: what differs — cases, example):");
        let mut sig: Vec<_> = report.signatures.iter().collect();
        sig.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
        for (k, (n, ex, fl)) in sig {
            let flags = if *fl != 0 { format!(" [{}]", flag_names(*fl)) } else { String::new() };
            println!("  {n:6}  {k}{flags}  e.g. {ex}");
        }
    }
    if !report.unimplemented.is_empty() {
        let (unsup, unimpl): (BTreeMap<String, u64>, BTreeMap<String, u64>) = report
            .unimplemented
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .partition(|(k, _)| k.contains("(unsupported"));
        if !unimpl.is_empty() {
            println!("unimplemented in krr-emu (cases): {}", fmt_map(&unimpl));
        }
        if !unsup.is_empty() {
            println!("declared unsupported by krr-emu (cases):");
            for (k, n) in &unsup {
                println!("  {n:6}  {k}");
            }
        }
    }
    if !report.host_errors.is_empty() {
        println!("not compared (host limitation or KVM failure):");
        for (k, n) in &report.host_errors {
            println!("  {n:6}  {k}");
        }
    }
    println!("# {} cases in {secs:.2}s ({:.0} cases/s), seed {}", t.cases, t.cases as f64 / secs, a.seed);
    let failed = t.failed() + if a.strict { t.unimplemented } else { 0 };
    println!("{} passed, {} failed", t.passed, failed);
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k} ({v})")).collect::<Vec<_>>().join(", ")
}
