//! `krr-difftest`: runs the differential corpus on KVM (the real CPU, guest ring 3) and on krr-emu.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use std::path::PathBuf;

use krr_difftest::case::Case;
use krr_difftest::compare::{check, compare_one, describe, flag_names, Report, Runner, Verdict};
use krr_difftest::emu::{host_cpu_description, EmuRunner};
use krr_difftest::golden::{self, Golden};
use krr_difftest::kvm::{KvmError, KvmRunner};
use krr_difftest::{corpus, gen};
use krr_emu::Vendor;

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
  --vendor V        krr-emu's vendor profile, amd or intel (default: the host CPU's vendor; with
                    --golden, the file's)
  --golden FILE     compare krr-emu with the results stored in FILE instead of the host CPU
                    (no KVM needed; golden/ has one file per vendor)
  --write-golden FILE
                    also store the host CPU's results for the selected cases in FILE
  --golden-from-report REPORT
                    with --write-golden and --vendor: seed FILE from the stdout of a difftest run
                    on a host of that vendor whose emulator side was krr-emu's AMD profile
                    (krr-emu's AMD outcomes patched with the report's values; uses this host's
                    KVM to know which cases cannot be compared)
  --strict          also fail (exit 1) when krr-emu reports an instruction unimplemented
  --list            print the case names and exit
  -h, --help        this text

Exit status: 0 all compared cases agree, 1 a mismatch (or an emulator error), 2 /dev/kvm unusable,
a host CPU vendor krr-emu has no profile for (use --vendor), or bad arguments. The last line is
`N passed, N failed`.";

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
    vendor: Option<Vendor>,
    golden: Option<PathBuf>,
    write_golden: Option<PathBuf>,
    from_report: Option<PathBuf>,
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
        vendor: None,
        golden: None,
        write_golden: None,
        from_report: None,
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
            "--vendor" => a.vendor = Some(it.next().ok_or("--vendor needs a value")?.parse()?),
            "--golden" => a.golden = Some(it.next().ok_or("--golden needs a file")?.into()),
            "--write-golden" => a.write_golden = Some(it.next().ok_or("--write-golden needs a file")?.into()),
            "--golden-from-report" => {
                a.from_report = Some(it.next().ok_or("--golden-from-report needs a file")?.into())
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other} (see --help)")),
        }
    }
    if a.golden.is_some() && (a.write_golden.is_some() || a.kvm_only || a.prefixes) {
        return Err(
            "--golden compares with stored results: not with --write-golden, --kvm-only or --prefixes".into(),
        );
    }
    if a.from_report.is_some() && (a.write_golden.is_none() || a.vendor.is_none()) {
        return Err("--golden-from-report needs --write-golden FILE and --vendor".into());
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
    let all = cases(&a);
    if a.list {
        for c in &all {
            println!("{}", c.name);
        }
        return ExitCode::SUCCESS;
    }
    if let Some(path) = &a.golden {
        return golden_check(&a, &all, path);
    }
    let Some(vendor) = a.vendor.or_else(Vendor::host) else {
        println!(
            "krr-difftest: krr-emu has no profile for this host's CPU vendor ({}); choose one with --vendor amd|intel",
            Vendor::host_cpuid_vendor()
        );
        return ExitCode::from(2);
    };
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
    let start = Instant::now();
    if a.kvm_only {
        let code = kvm_only(&all, &mut kvm);
        let t = start.elapsed().as_secs_f64();
        println!("# {} cases in {t:.2}s ({:.0} cases/s)", all.len(), all.len() as f64 / t);
        return code;
    }
    // Seeding from a report compares this host's CPU with krr-emu's AMD profile (the report's
    // emulator side) to learn which cases cannot be compared; otherwise krr-emu runs as `vendor`.
    let seeding = match &a.from_report {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some((golden::parse_report(&t), t.lines().next().unwrap_or("").to_string())),
            Err(e) => {
                println!("krr-difftest: {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let mut emu = EmuRunner::new();
    emu.set_decode_cache(a.decode_cache);
    emu.set_full_reset(a.full_reset);
    emu.set_vendor(if seeding.is_some() { Vendor::Amd } else { vendor });
    // Seeding: krr-emu in the target vendor's profile stands in for the report's CPU.
    let mut target = seeding.as_ref().map(|_| {
        let mut t = EmuRunner::new();
        t.set_vendor(vendor);
        t
    });
    let mut out = a.write_golden.as_ref().map(|_| {
        let cpu = match &seeding {
            Some((_, first)) => format!("seeded from a report: {}", first.trim_start_matches("# ")),
            None => host_cpu_description(),
        };
        Golden::new(
            vendor,
            a.seed,
            if a.families.is_empty() || a.families.iter().any(|f| f == "random") { a.count } else { 0 },
            &cpu,
        )
    });
    if seeding.is_none() && out.is_some() && Vendor::host() != Some(vendor) {
        println!(
            "krr-difftest: --write-golden stores this host's CPU ({}): --vendor must be its vendor",
            Vendor::host_cpuid_vendor()
        );
        return ExitCode::from(2);
    }
    let mut report = Report::default();
    let mut reported = 0usize;
    let mut seeded = 0usize;
    for c in &all {
        let v = check(c, &mut kvm as &mut dyn Runner, &mut emu, a.prefixes);
        if let Some(g) = &mut out {
            // A case the report compared is seeded even where this host cannot compare it.
            let reported_case = seeding.as_ref().and_then(|(rep, _)| rep.get(&c.name));
            if let (Verdict::HostError(why), None) = (&v, reported_case) {
                g.put_unavailable(c, why);
            } else if seeding.is_some() {
                let r = reported_case;
                let k = r.map_or(c.insns.len(), |r| if r.k == 0 { c.insns.len() } else { r.k });
                // The report's host filtered out what its KVM could not compare, judging its CPU
                // against the AMD profile; with the target profile standing in for that CPU, the
                // same filter finds those cases (e.g. a fault its KVM emulator re-derived).
                let emu_amd = emu.run_prefix(c, k);
                let target = target.as_mut().expect("made when seeding");
                let unseen = r.is_none().then(|| compare_one(&target.run_prefix(c, k), &emu_amd, &c.code(k)));
                match (unseen, emu_amd) {
                    (Some(Some(Verdict::HostError(why))), _) => {
                        g.put_unavailable(c, &format!("{why} (on the report's host)"))
                    }
                    (_, emu_amd) => match emu_amd {
                        Ok(mut o) => {
                            if let Some(r) = r {
                                if let Err(e) = golden::apply_reported(&mut o, r) {
                                    println!("krr-difftest: {}: {e}", c.name);
                                    return ExitCode::from(1);
                                }
                                seeded += 1;
                            }
                            g.put(c, k, &o);
                        }
                        Err(e) => g.put_unavailable(c, &format!("krr-emu: {e:?}")),
                    },
                }
            } else {
                match kvm.run_prefix(c, c.insns.len()) {
                    Ok(o) => g.put(c, c.insns.len(), &o),
                    Err(e) => g.put_unavailable(c, &format!("{e:?}")),
                }
            }
        }
        if matches!(v, Verdict::Mismatch { .. } | Verdict::EmuError { .. }) {
            if reported < a.max_report {
                print!("{}", describe(c, &v));
            }
            reported += 1;
        }
        report.record(c, &v);
    }
    if let (Some(g), Some(path)) = (&out, &a.write_golden) {
        if let Some((rep, _)) = &seeding {
            println!("seeded {seeded} of the report's {} cases into the golden results", rep.len());
            if seeded != rep.len() {
                println!(
                    "krr-difftest: the report names cases this corpus does not have (another seed or count?)"
                );
                return ExitCode::from(1);
            }
        }
        if let Err(e) = g.write(path) {
            println!("krr-difftest: {e}");
            return ExitCode::from(1);
        }
        println!("wrote {} {} results to {}", g.entries.len(), g.vendor, path.display());
    }
    let code = print_report(&report, start.elapsed().as_secs_f64(), a.seed, a.strict, reported, a.max_report);
    // Writing golden results is about the host CPU: mismatches of krr-emu do not fail it.
    if out.is_some() {
        ExitCode::SUCCESS
    } else {
        code
    }
}

/// `--golden`: krr-emu against stored results.
fn golden_check(a: &Args, all: &[Case], path: &std::path::Path) -> ExitCode {
    let g = match Golden::read(path) {
        Ok(g) => g,
        Err(e) => {
            println!("krr-difftest: {e}");
            return ExitCode::from(2);
        }
    };
    let random = a.families.is_empty() || a.families.iter().any(|f| f == "random");
    if random && a.count > 0 && (g.seed != a.seed || g.count != a.count) {
        println!(
            "krr-difftest: {} holds the random cases of --seed {} --count {} (asked: --seed {} --count {})",
            path.display(),
            g.seed,
            g.count,
            a.seed,
            a.count
        );
        return ExitCode::from(2);
    }
    let vendor = a.vendor.unwrap_or(g.vendor);
    println!(
        "# krr-emu ({vendor} profile) against {} ({} results of {}: {})",
        path.display(),
        g.entries.len(),
        g.vendor,
        g.cpu
    );
    let start = Instant::now();
    let mut emu = EmuRunner::new();
    emu.set_decode_cache(a.decode_cache);
    emu.set_full_reset(a.full_reset);
    emu.set_vendor(vendor);
    let mut report = Report::default();
    let mut reported = 0usize;
    for c in all {
        let v = match g.get(c) {
            golden::Lookup::Missing => Verdict::HostError("no stored result".into()),
            golden::Lookup::OtherCase => Verdict::Mismatch {
                insn: 0,
                diffs: vec![format!(
                    "case: the corpus builds it differently from when {} was written (regenerate the file)",
                    path.display()
                )],
            },
            golden::Lookup::Found(k, stored) => {
                let reference = (*stored).map_err(krr_difftest::case::Failure::Other);
                match compare_one(&reference, &emu.run_prefix(c, k), &c.code(k)) {
                    None => Verdict::Pass,
                    Some(Verdict::Mismatch { diffs, .. }) => Verdict::Mismatch { insn: k, diffs },
                    Some(Verdict::EmuError { msg, .. }) => Verdict::EmuError { insn: k, msg },
                    Some(other) => other,
                }
            }
        };
        if matches!(v, Verdict::Mismatch { .. } | Verdict::EmuError { .. }) {
            if reported < a.max_report {
                print!("{}", describe(c, &v));
            }
            reported += 1;
        }
        report.record(c, &v);
    }
    print_report(&report, start.elapsed().as_secs_f64(), a.seed, a.strict, reported, a.max_report)
}

/// The per-family table, signatures, unimplemented and not-compared lists, and the closing line.
fn print_report(
    report: &Report,
    secs: f64,
    seed: u64,
    strict: bool,
    reported: usize,
    max_report: usize,
) -> ExitCode {
    if reported > max_report {
        println!("({} more mismatches not shown; --max-report N)", reported - max_report);
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
    println!("# {} cases in {secs:.2}s ({:.0} cases/s), seed {seed}", t.cases, t.cases as f64 / secs);
    let failed = t.failed() + if strict { t.unimplemented } else { 0 };
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
