//! `krr bench`: recording overhead, replay speed and trace size of krr, side by side with QEMU's
//! whole-VM record/replay (`-icount shift=auto,rr=record|replay`) on the same kernel, initramfs
//! and workloads; on the emu backend or on KVM, at one or more vCPU counts. The method and the
//! latest results are in docs/performance.md.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use krr_vmm::bench_support::{dir_bytes, run_measured, Measured};
use krr_vmm::devices::Echo;
use krr_vmm::recorder::DEFAULT_RING_BYTES;
use krr_vmm::vm::BASE_CMDLINE;
use krr_vmm::ExitReason;
use serde_json::{json, Value};

use super::run::VmArgs;

/// The fixed set: kernel-heavy (fork/exec, small files on tmpfs, pipes), mixed (no existing
/// workload is CPU-bound in user space; timers has the largest user share, 22 %, after pipes and
/// fileio), multi-threaded.
const WORKLOADS: [(&str, &str); 5] = [
    ("forkexec", "kernel-heavy"),
    ("fileio", "kernel-heavy"),
    ("pipes", "kernel-heavy"),
    ("timers", "mixed"),
    ("futex", "multi-threaded"),
];

/// `--quick`: one repetition of a kernel-heavy and the multi-threaded workload.
const QUICK_WORKLOADS: [&str; 2] = ["forkexec", "futex"];

/// The line a `--child` run prints its result on.
const CHILD_PREFIX: &str = "krr-bench-child: ";

/// Measure krr's recording overhead, replay speed and trace size next to QEMU's record/replay.
///
/// Runs a fixed set of guest workloads (forkexec, fileio, pipes: kernel-heavy; timers: mixed, the
/// most user-heavy of the others, a vDSO clock loop between sleeps and timers; futex: two
/// threads) under `krr run` (no recording), `krr record` and `krr replay` of that recording, and,
/// on the emu backend at one vCPU, under QEMU TCG with `-icount shift=auto,sleep=off` plain,
/// `rr=record` and `rr=replay`, with the same kernel, initramfs and command. Every measured run
/// is its own process (peak RSS from wait4). Prints tables on stdout, progress on stderr, writes
/// JSON with --json; exits 1 if any run failed (a workload that did not exit 0, a replay that
/// diverged or whose console differs). 5 workloads x 3 repetitions take about 13 minutes on a
/// shared 2-core machine. See docs/performance.md.
///
/// --accel kvm measures recording on hardware virtualization (run vs record wall time, events/s,
/// trace bytes; no QEMU rows and no instruction counts, which need the emulator); --smp 1,2,4
/// repeats everything at each vCPU count (QEMU rows only at one vCPU).
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Repetitions of every measured run (the tables give the median, min and max).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub reps: u32,
    /// Smoke run: one repetition of forkexec and futex (unless --reps or --workloads say more).
    #[arg(long)]
    pub quick: bool,
    /// Write every result (each sample, the medians, the ratios) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run these workloads (comma-separated names of /bin/ programs in the guest) instead of the
    /// fixed set.
    #[arg(long, value_delimiter = ',', value_name = "W,...")]
    pub workloads: Vec<String>,
    /// Measure krr only.
    #[arg(long)]
    pub no_qemu: bool,
    /// The backend krr runs and records on (kvm: QEMU is not measured).
    #[arg(long, default_value = "emu", value_parser = ["emu", "kvm"])]
    pub accel: String,
    /// Measure at each of these vCPU counts (comma-separated, 1-8).
    #[arg(long, value_delimiter = ',', default_value = "1", value_name = "N,...",
          value_parser = clap::value_parser!(u32).range(1..=8))]
    pub smp: Vec<u32>,
    /// Do not replay the recordings (e.g. on a host where krr-emu is itself emulated, as in the
    /// nested-KVM harness; keep them with --keep and replay them elsewhere).
    #[arg(long)]
    pub no_replay: bool,
    /// The QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64", value_name = "PATH")]
    pub qemu: String,
    /// QEMU's -icount options, to which `,rr=record|replay,rrfile=F` is added for the recording
    /// and its replay. The default lets virtual time jump over idle periods, as krr's emu backend
    /// does; `shift=auto` alone sleeps through them in real time (and logs every such warp).
    #[arg(long, default_value = "shift=auto,sleep=off", value_name = "OPTS")]
    pub qemu_icount: String,
    /// Keep the last krr trace, QEMU rr log and QEMU consoles of every workload in DIR/WORKLOAD
    /// (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Per-run time limit in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Internal: run one workload in this process (`run` or `record`) and print the outcome.
    #[arg(long, hide = true, value_parser = ["run", "record"])]
    pub child: Option<String>,
    #[arg(long, hide = true)]
    pub child_workload: Option<String>,
    #[arg(long, hide = true)]
    pub child_trace: Option<PathBuf>,
    #[arg(long, hide = true, default_value_t = 1)]
    pub child_smp: u32,
    #[arg(long, hide = true)]
    pub child_profile: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.child.is_some() {
        return child(&args);
    }
    Bench::new(args)?.run()
}

// ---------------------------------------------------------------------------------------------
// The child: one `krr run` or `krr record` of a workload, with the same configuration those
// commands build (VmArgs::config, --accel and --smp as given, --mem 256M, the default ring).

fn child(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let w = args.child_workload.as_deref().context("--child-workload")?;
    let vm = VmArgs {
        accel: args.accel.clone(),
        smp: args.child_smp,
        mem: 256 << 20,
        kernel: None,
        initrd: None,
        add: Vec::new(),
        add_bin: Vec::new(),
        append: String::new(),
        timeout: Some(args.timeout),
        quiet: true,
        emu_seed: None,
        json: false,
    };
    let mut cfg = vm.config(&[format!("/bin/{w}")])?;
    cfg.echo = Echo::Nothing;
    cfg.profile = args.child_profile;
    if args.child.as_deref() == Some("record") {
        let dir = args.child_trace.clone().context("--child-trace")?;
        cfg.record = Some(super::record::record_config(
            &cfg,
            dir,
            DEFAULT_RING_BYTES,
            krr_vmm::recorder::StartPoint::Init,
        ));
    }
    let out = krr_vmm::vm::run(&cfg)?;
    let exit = match &out.reason {
        ExitReason::Exited(c) => i64::from(*c),
        _ => -1,
    };
    let v = json!({
        "reason": format!("{:?}", out.reason),
        "exit": exit,
        "elapsed": out.elapsed.as_secs_f64(),
        "to_init": out.to_init.map(|d| d.as_secs_f64()),
        "after_init": out.after_init.map(|d| d.as_secs_f64()),
        "instructions": out.instructions,
        "instructions_before_record": out.instructions_before_record,
        "record": out.record.as_ref().map(|r| json!({
            "events": r.events,
            "event_bytes": r.event_bytes,
            "console_bytes": r.console_bytes,
            "ring_flushes": r.ring_flushes,
            "snapshot_bytes": r.snapshot_bytes,
            "end_reason": r.end_reason.to_string(),
        })),
        "profile": out.profile.as_ref().map(|p| json!({
            "user": p.user,
            "kernel": p.kernel,
            "trace_pc_calls": p.trace_pc_calls,
            "inline_increments": p.inline_increments,
            "agent": p.agent,
            "ring": p.ring,
        })),
    });
    println!("{CHILD_PREFIX}{v}");
    Ok(if exit == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

// ---------------------------------------------------------------------------------------------
// The parent.

/// One measured run: the workload part (from the kernel's `Run /init` line to the end; for
/// krr replay the replay loop), the whole process, its peak RSS.
#[derive(Debug, Clone, Copy)]
struct Sample {
    part: f64,
    total: f64,
    rss_kib: u64,
}

#[derive(Debug, Default)]
struct Series(Vec<Sample>);

impl Series {
    fn parts(&self) -> Vec<f64> {
        self.0.iter().map(|s| s.part).collect()
    }
    fn totals(&self) -> Vec<f64> {
        self.0.iter().map(|s| s.total).collect()
    }
    fn median(&self) -> Option<f64> {
        median(self.parts())
    }
    fn rss_mib(&self) -> Option<f64> {
        self.0.iter().map(|s| s.rss_kib).max().map(|k| k as f64 / 1024.0)
    }
    fn json(&self) -> Value {
        let (p, t) = (self.parts(), self.totals());
        json!({
            "samples": self.0.iter().map(|s| json!({"part_s": s.part, "total_s": s.total, "peak_rss_kib": s.rss_kib})).collect::<Vec<_>>(),
            "part_s": {"median": median(p.clone()), "min": min(&p), "max": max(&p)},
            "total_s": {"median": median(t.clone()), "min": min(&t), "max": max(&t)},
            "peak_rss_kib": self.0.iter().map(|s| s.rss_kib).max(),
        })
    }
    fn cell(&self) -> String {
        let p = self.parts();
        match (median(p.clone()), min(&p), max(&p)) {
            (Some(m), Some(lo), Some(hi)) if p.len() > 1 => format!("{m:.2} [{lo:.2}-{hi:.2}]"),
            (Some(m), _, _) => format!("{m:.2}"),
            _ => "-".into(),
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn min(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::min)
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map(|v| format!("{v:.prec$}")).unwrap_or_else(|| "-".into())
}

/// Everything measured for one workload.
#[derive(Debug, Default)]
struct Workload {
    name: String,
    class: String,
    smp: u32,
    run: Series,
    record: Series,
    replay: Series,
    qemu_run: Series,
    qemu_record: Series,
    qemu_replay: Series,
    /// From the last recording.
    events: u64,
    event_bytes: u64,
    trace_bytes: u64,
    snapshot_bytes: u64,
    ring_flushes: u64,
    /// Guest instructions (user and kernel) of the recorded part, last recording.
    recorded_instructions: u64,
    /// Kernel instructions the last replay executed.
    replayed_instructions: u64,
    /// Median of the replays' own instructions/second.
    replay_events: u64,
    /// Profiled run and recording: user, kernel, trace_pc_calls, agent, ring.
    profile_run: Option<Value>,
    profile_record: Option<Value>,
    /// QEMU rr log of the last recording: whole file, and bytes written by the time the
    /// console showed `Run /init` (approximate: QEMU buffers the file).
    qemu_rr_bytes: Option<u64>,
    qemu_rr_bytes_at_init: Option<u64>,
    qemu_replay_console_match: Option<bool>,
    replays_verified: u32,
    problems: Vec<String>,
}

struct Bench {
    args: BenchArgs,
    exe: PathBuf,
    guest: PathBuf,
    work: PathBuf,
    reps: u32,
    workloads: Vec<(String, String)>,
}

/// QEMU's record/replay is measured on the emu backend only, beside its one-vCPU rows.
fn qemu_measured(args: &BenchArgs) -> bool {
    !args.no_qemu && args.accel == "emu" && args.smp.contains(&1)
}

impl Workload {
    /// The workload's name, with its vCPU count after `sep` when that is not one.
    fn name_with_smp(&self, sep: &str) -> String {
        if self.smp == 1 {
            self.name.clone()
        } else {
            format!("{}{sep}{}", self.name, self.smp)
        }
    }

    /// Its name in tables and progress lines.
    fn label(&self) -> String {
        self.name_with_smp("/")
    }

    /// Its directory under the work directory (--keep).
    fn dir_name(&self) -> String {
        self.name_with_smp("-smp")
    }
}

fn pu(p: &Option<Value>, key: &str) -> Option<u64> {
    p.as_ref().and_then(|p| p[key].as_u64())
}

impl Bench {
    fn new(args: BenchArgs) -> anyhow::Result<Self> {
        let guest = super::guest::guest_dir()?;
        // bzImage is what QEMU boots.
        let files: &[&str] = if qemu_measured(&args) {
            &["vmlinux", "bzImage", "initramfs.cpio"]
        } else {
            &["vmlinux", "initramfs.cpio"]
        };
        for f in files {
            if !guest.join(f).is_file() {
                bail!("{}: missing (run `krr guest build`)", guest.join(f).display());
            }
        }
        let exe = std::env::current_exe().context("finding the krr executable")?;
        let work = match &args.keep {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("krr-bench-{}", std::process::id())),
        };
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let explicit_reps = std::env::args().any(|a| a == "--reps" || a.starts_with("--reps="));
        let reps = if args.quick && !explicit_reps { 1 } else { args.reps };
        let workloads: Vec<(String, String)> = if !args.workloads.is_empty() {
            args.workloads
                .iter()
                .map(|w| {
                    let class = WORKLOADS.iter().find(|(n, _)| n == w).map(|(_, c)| *c).unwrap_or("other");
                    (w.clone(), class.to_string())
                })
                .collect()
        } else if args.quick {
            QUICK_WORKLOADS
                .iter()
                .map(|w| (w.to_string(), WORKLOADS.iter().find(|(n, _)| n == w).unwrap().1.to_string()))
                .collect()
        } else {
            WORKLOADS.iter().map(|(w, c)| (w.to_string(), c.to_string())).collect()
        };
        if qemu_measured(&args) {
            let ok = Command::new(&args.qemu)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!(
                    "{} not found (scripts/setup.sh installs qemu-system-x86; or pass --no-qemu)",
                    args.qemu
                );
            }
        }
        Ok(Bench { args, exe, guest, work, reps, workloads })
    }

    fn run(self) -> anyhow::Result<ExitCode> {
        let started = Instant::now();
        eprintln!(
            "krr bench: guest {}, workloads {}, {} repetition(s), {} backend, --smp {}, work dir {}",
            self.guest.display(),
            self.workloads.iter().map(|w| w.0.as_str()).collect::<Vec<_>>().join(" "),
            self.reps,
            self.args.accel,
            self.smp_list(),
            self.work.display()
        );
        let mut results = Vec::new();
        for &smp in &self.args.smp {
            for (name, class) in &self.workloads {
                let mut w = Workload { name: name.clone(), class: class.clone(), smp, ..Default::default() };
                self.workload(&mut w);
                results.push(w);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let text = self.tables(&results, elapsed);
        println!("{text}");
        if let Some(path) = &self.args.json {
            let v = self.json(&results, elapsed);
            std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("krr bench: wrote {}", path.display());
        }
        if self.args.keep.is_none() {
            let _ = std::fs::remove_dir_all(&self.work);
        }
        let failed = results.iter().any(|w| !w.problems.is_empty());
        Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
    }

    /// One progress line for a measured run (its sample, and whatever else it returned).
    fn progress<T>(&self, w: &str, what: &str, r: &anyhow::Result<(Sample, T)>) {
        match r {
            Ok((s, _)) => eprintln!(
                "krr bench: {w:<11} {what:<15} {:7.2} s workload part, {:7.2} s total, {:5} MiB peak RSS",
                s.part,
                s.total,
                s.rss_kib >> 10
            ),
            Err(e) => eprintln!("krr bench: {w:<11} {what:<15} FAILED: {e:#}"),
        }
    }

    fn smp_list(&self) -> String {
        self.args.smp.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
    }

    fn workload(&self, w: &mut Workload) {
        let (name, smp) = (w.label(), w.smp);
        let dir = self.work.join(w.dir_name());
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            w.problems.push(format!("creating {}: {e}", dir.display()));
            return;
        }
        for rep in 0..self.reps {
            let last = rep + 1 == self.reps;
            // krr run
            let r = self.krr_child(&w.name, smp, None, false);
            self.progress(&name, "krr run", &r);
            match r {
                Ok((s, _)) => w.run.0.push(s),
                Err(e) => w.problems.push(format!("krr run: {e:#}")),
            }
            // krr record, then replay that recording
            let trace = dir.join(format!("trace{rep}"));
            let r = self.krr_child(&w.name, smp, Some(&trace), false);
            self.progress(&name, "krr record", &r);
            match r {
                Ok((s, v)) => {
                    w.record.0.push(s);
                    let rec = &v["record"];
                    w.events = rec["events"].as_u64().unwrap_or(0);
                    w.event_bytes = rec["event_bytes"].as_u64().unwrap_or(0);
                    w.snapshot_bytes = rec["snapshot_bytes"].as_u64().unwrap_or(0);
                    w.ring_flushes = rec["ring_flushes"].as_u64().unwrap_or(0);
                    w.trace_bytes = dir_bytes(&trace);
                    w.recorded_instructions = v["instructions"].as_u64().unwrap_or(0)
                        - v["instructions_before_record"].as_u64().unwrap_or(0);
                    if self.args.no_replay {
                        if last {
                            eprintln!(
                                "krr bench: {name:<11} krr replay      not run (--no-replay): {}",
                                trace.display()
                            );
                        }
                    } else {
                        let r = self.krr_replay(&trace);
                        self.progress(&name, "krr replay", &r);
                        match r {
                            Ok((s, v)) => {
                                w.replay.0.push(s);
                                w.replayed_instructions = v["instructions"].as_u64().unwrap_or(0);
                                w.replay_events = v["events"].as_u64().unwrap_or(0);
                                w.replays_verified += 1;
                            }
                            Err(e) => w.problems.push(format!("krr replay: {e:#}")),
                        }
                    }
                }
                Err(e) => w.problems.push(format!("krr record: {e:#}")),
            }
            if !last {
                let _ = std::fs::remove_dir_all(&trace);
            }
            if !qemu_measured(&self.args) || smp != 1 {
                continue;
            }
            // QEMU: plain icount run, rr record, rr replay of that log.
            let rr = dir.join("qemu-rr.bin");
            let r = self.qemu(&name, Qemu::Run, &rr, &dir.join("qemu-run.console"));
            self.progress(&name, "qemu run", &r);
            match r {
                Ok((s, _)) => w.qemu_run.0.push(s),
                Err(e) => w.problems.push(format!("qemu run: {e:#}")),
            }
            let rec_console = dir.join("qemu-record.console");
            let r = self.qemu(&name, Qemu::Record, &rr, &rec_console);
            self.progress(&name, "qemu rr record", &r);
            match r {
                Ok((s, at_init)) => {
                    w.qemu_record.0.push(s);
                    w.qemu_rr_bytes = std::fs::metadata(&rr).ok().map(|m| m.len());
                    w.qemu_rr_bytes_at_init = at_init;
                    let rep_console = dir.join("qemu-replay.console");
                    let r = self.qemu(&name, Qemu::Replay, &rr, &rep_console);
                    self.progress(&name, "qemu rr replay", &r);
                    match r {
                        Ok((s, _)) => {
                            w.qemu_replay.0.push(s);
                            let same = std::fs::read(&rec_console).ok() == std::fs::read(&rep_console).ok();
                            if !same {
                                w.problems.push(format!(
                                    "qemu rr replay: its console differs from the recording's ({} vs {})",
                                    rep_console.display(),
                                    rec_console.display()
                                ));
                            }
                            w.qemu_replay_console_match =
                                Some(same && w.qemu_replay_console_match != Some(false));
                        }
                        Err(e) => {
                            w.qemu_replay_console_match = Some(false);
                            w.problems.push(format!("qemu rr replay: {e:#}"));
                        }
                    }
                }
                Err(e) => w.problems.push(format!("qemu rr record: {e:#}")),
            }
        }
        // Exact instruction counts: one profiled run and one profiled recording (slower: not
        // timed). Only the emulator counts instructions.
        if self.args.accel != "emu" {
            return;
        }
        match self.krr_child(&w.name, smp, None, true) {
            Ok((_, v)) => w.profile_run = Some(v["profile"].clone()),
            Err(e) => w.problems.push(format!("krr run --profile: {e:#}")),
        }
        let ptrace = dir.join("trace-profiled");
        match self.krr_child(&w.name, smp, Some(&ptrace), true) {
            Ok((_, v)) => w.profile_record = Some(v["profile"].clone()),
            Err(e) => w.problems.push(format!("krr record --profile: {e:#}")),
        }
        let _ = std::fs::remove_dir_all(&ptrace);
        eprintln!(
            "krr bench: {name:<11} profile: user {} / kernel {} instructions run, user {} / kernel {} recorded",
            pu(&w.profile_run, "user").unwrap_or(0),
            pu(&w.profile_run, "kernel").unwrap_or(0),
            pu(&w.profile_record, "user").unwrap_or(0),
            pu(&w.profile_record, "kernel").unwrap_or(0),
        );
    }

    /// One `krr run` (trace None) or `krr record` in a child process.
    fn krr_child(
        &self,
        w: &str,
        smp: u32,
        trace: Option<&Path>,
        profile: bool,
    ) -> anyhow::Result<(Sample, Value)> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["bench", "--child", if trace.is_some() { "record" } else { "run" }, "--child-workload", w])
            .args(["--accel", &self.args.accel, "--child-smp", &smp.to_string()])
            .args(["--timeout", &self.args.timeout.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .env("KRR_GUEST_DIR", &self.guest);
        if let Some(t) = trace {
            cmd.arg("--child-trace").arg(t);
        }
        if profile {
            cmd.arg("--child-profile");
        }
        let m = run_measured(&mut cmd, |_| {})?;
        let out = String::from_utf8_lossy(&m.stdout);
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(CHILD_PREFIX))
            .with_context(|| format!("the child printed no result (exit status {})", m.status))?;
        let v: Value = serde_json::from_str(line)?;
        if m.status != 0 || v["exit"].as_i64() != Some(0) {
            bail!("the workload did not exit 0: {} (status {})", v["reason"], m.status);
        }
        let part = v["after_init"].as_f64().context("no Run /init line")?;
        Ok((Sample { part, total: m.wall.as_secs_f64(), rss_kib: m.max_rss_kib }, v))
    }

    /// `krr replay TRACE --json` in a child process; the workload part is the replay loop.
    fn krr_replay(&self, trace: &Path) -> anyhow::Result<(Sample, Value)> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("replay")
            .arg(trace)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("KRR_GUEST_DIR", &self.guest);
        let m: Measured = run_measured(&mut cmd, |_| {})?;
        let out = String::from_utf8_lossy(&m.stdout);
        let v: Value = out
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| format!("krr replay printed no summary (exit status {})", m.status))?;
        if m.status != 0 || v["diverged"] != json!(false) || v["console_match"] != json!(true) {
            bail!("krr replay exit status {}: {v}", m.status);
        }
        let part = v["seconds"].as_f64().context("no seconds")?;
        Ok((Sample { part, total: m.wall.as_secs_f64(), rss_kib: m.max_rss_kib }, v))
    }

    /// One QEMU run. Returns the sample and, for a recording, the rr log's size when the
    /// console showed `Run /init`.
    fn qemu(&self, w: &str, mode: Qemu, rr: &Path, console: &Path) -> anyhow::Result<(Sample, Option<u64>)> {
        let _ = std::fs::remove_file(console);
        if mode == Qemu::Record {
            let _ = std::fs::remove_file(rr);
        }
        let base = &self.args.qemu_icount;
        let icount = match mode {
            Qemu::Run => base.clone(),
            Qemu::Record => format!("{base},rr=record,rrfile={}", rr.display()),
            Qemu::Replay => format!("{base},rr=replay,rrfile={}", rr.display()),
        };
        let append = format!("{BASE_CMDLINE} -- /bin/{w}");
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &self.args.timeout.to_string(), &self.args.qemu])
            .args(["-nodefaults", "-accel", "tcg", "-icount", &icount])
            .args(["-machine", "pc", "-cpu", "qemu64", "-m", "256M", "-smp", "1"])
            .args(["-display", "none", "-no-reboot", "-monitor", "none"])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
            .arg("-kernel")
            .arg(self.guest.join("bzImage"))
            .arg("-initrd")
            .arg(self.guest.join("initramfs.cpio"))
            .args(["-append", &append])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Watch the console file for the kernel's `Run /init` line: the workload part starts
        // there, as in krr's `after_init`.
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (done, console, rr) = (done.clone(), console.to_path_buf(), rr.to_path_buf());
            std::thread::spawn(move || -> Option<(Instant, Option<u64>)> {
                while !done.load(Ordering::Relaxed) {
                    if let Ok(b) = std::fs::read(&console) {
                        if b.windows(25).any(|x| x == b"Run /init as init process".as_slice()) {
                            let at = Instant::now();
                            return Some((at, std::fs::metadata(&rr).ok().map(|m| m.len())));
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                None
            })
        };
        let t0 = Instant::now();
        let m = run_measured(&mut cmd, |_| {});
        done.store(true, Ordering::Relaxed);
        let seen = watcher.join().ok().flatten();
        let m = m.context("starting timeout/QEMU")?;
        let text = std::fs::read(console).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        // isa-debug-exit: QEMU exits with (status << 1) | 1.
        if m.status == 124 || m.status == 137 {
            bail!("QEMU timed out after {} s", self.args.timeout);
        }
        if m.status != 1 || !text.contains("krr-init: exit status 0") {
            let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!(
                "QEMU exit status {} (want 1: status 0 through isa-debug-exit); last console line {last:?}",
                m.status
            );
        }
        let Some((at, rr_at_init)) = seen else { bail!("no `Run /init` line on the console") };
        let total = m.wall.as_secs_f64();
        let part = total - at.duration_since(t0).as_secs_f64();
        Ok((
            Sample { part, total, rss_kib: m.max_rss_kib },
            if mode == Qemu::Record { rr_at_init } else { None },
        ))
    }

    fn tables(&self, ws: &[Workload], elapsed: f64) -> String {
        if self.args.accel != "emu" {
            return self.hardware_table(ws, elapsed);
        }
        use std::fmt::Write;
        let mut s = String::new();
        let n = self.reps;
        let _ = writeln!(
            s,
            "\nkrr bench: {} backend (krr) and {}, {} vCPU(s), 256 MiB; {n} repetition(s); {:.0} s in all",
            self.args.accel,
            if self.args.no_qemu {
                "QEMU not measured (--no-qemu)".to_string()
            } else if !qemu_measured(&self.args) {
                "QEMU not measured (its record/replay is measured on the emu backend at one vCPU)".to_string()
            } else {
                format!("QEMU {} TCG -icount {}", qemu_version(&self.args.qemu), self.args.qemu_icount)
            },
            self.smp_list(),
            elapsed
        );
        let _ = writeln!(
            s,
            "\nWall time of the workload part, seconds: median [min-max] of {n} (from the kernel's `Run /init` line to the \
             end; krr replay: the replay loop)"
        );
        let _ = writeln!(
            s,
            "{:<11} {:<14} | {:>18} {:>18} {:>18} | {:>18} {:>18} {:>18}",
            "workload",
            "class",
            "krr run",
            "krr record",
            "krr replay",
            "qemu run",
            "qemu rr record",
            "qemu rr replay"
        );
        for w in ws {
            let _ = writeln!(
                s,
                "{:<11} {:<14} | {:>18} {:>18} {:>18} | {:>18} {:>18} {:>18}",
                w.label(),
                w.class,
                w.run.cell(),
                w.record.cell(),
                w.replay.cell(),
                w.qemu_run.cell(),
                w.qemu_record.cell(),
                w.qemu_replay.cell()
            );
        }
        let _ = writeln!(s, "\nRatios of medians (workload part)");
        let _ = writeln!(
            s,
            "{:<11} | {:>7} {:>10} | {:>7} {:>10} {:>10} | {:>8} | {:>16}",
            "workload",
            "rec/run",
            "replay/rec",
            "rec/run",
            "replay/rec",
            "(whole VM)",
            "krr/qemu",
            "boot s: krr/qemu"
        );
        let _ = writeln!(s, "{:<11} | {:>18} | {:>29} | {:>8} | {:>16}", "", "krr", "qemu", "record", "");
        for w in ws {
            let boot = |x: &Series| median(x.0.iter().map(|s| s.total - s.part).collect());
            let total = |x: &Series| median(x.totals());
            let _ = writeln!(
                s,
                "{:<11} | {:>7} {:>10} | {:>7} {:>10} {:>10} | {:>8} | {:>16}",
                w.label(),
                fmt_opt(ratio(w.record.median(), w.run.median()), 2),
                fmt_opt(ratio(w.replay.median(), w.record.median()), 2),
                fmt_opt(ratio(w.qemu_record.median(), w.qemu_run.median()), 2),
                fmt_opt(ratio(w.qemu_replay.median(), w.qemu_record.median()), 2),
                fmt_opt(ratio(total(&w.qemu_replay), total(&w.qemu_record)), 2),
                fmt_opt(ratio(w.record.median(), w.qemu_record.median()), 2),
                format!("{} / {}", fmt_opt(boot(&w.run), 1), fmt_opt(boot(&w.qemu_run), 1)),
            );
        }
        let _ = writeln!(
            s,
            "(whole VM): QEMU replay over record including the boot, which QEMU replays too (krr replays from \
             the start snapshot at /init only). krr/qemu record: krr's recording time over QEMU's."
        );
        let _ = writeln!(s, "\nGuest instructions (krr, exact, profiled run and recording) and events");
        let _ = writeln!(
            s,
            "{:<11} | {:>10} {:>11} {:>11} {:>6} {:>6} {:>6} {:>6} {:>8} | {:>7} {:>8} {:>9} {:>9} {:>7}",
            "workload",
            "user",
            "kernel run",
            "kernel rec",
            "kern+%",
            "agent%",
            "ring%",
            "pos%",
            "+ins/ev",
            "events",
            "ev/s rec",
            "ev/s repl",
            "repl Mk/s",
            "flushes"
        );
        for w in ws {
            let (ur, kr, kc, ag, ring, pc, inl) = (
                pu(&w.profile_run, "user"),
                pu(&w.profile_run, "kernel"),
                pu(&w.profile_record, "kernel"),
                pu(&w.profile_record, "agent"),
                pu(&w.profile_record, "ring"),
                pu(&w.profile_run, "trace_pc_calls"),
                pu(&w.profile_run, "inline_increments"),
            );
            let (urec,) = (pu(&w.profile_record, "user"),);
            let pct = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) if b > 0 => Some(100.0 * a as f64 / b as f64),
                _ => None,
            };
            let extra = match (ur, kr, urec, kc) {
                (Some(ur), Some(kr), Some(urec), Some(kc)) => Some((urec + kc) as i64 - (ur + kr) as i64),
                _ => None,
            };
            let kern_plus = match (kr, kc) {
                (Some(kr), Some(kc)) if kr > 0 => Some(100.0 * (kc as f64 - kr as f64) / kr as f64),
                _ => None,
            };
            // The counter's instructions: the trace-pc callback's call, incq and ret, or the
            // plugin's inline incq.
            let cost = pc.map(|pc| 3 * pc + inl.unwrap_or(0));
            let pos = match (cost, kr) {
                (Some(cost), Some(kr)) if kr > cost => Some(100.0 * cost as f64 / (kr - cost) as f64),
                _ => None,
            };
            let per_ev = extra.filter(|_| w.events > 0).map(|e| e as f64 / w.events as f64);
            let rep = w.replay.median();
            let _ = writeln!(
                s,
                "{:<11} | {:>10} {:>11} {:>11} {:>6} {:>6} {:>6} {:>6} {:>8} | {:>7} {:>8} {:>9} {:>9} {:>7}",
                w.label(),
                ur.map(|v| v.to_string()).unwrap_or("-".into()),
                kr.map(|v| v.to_string()).unwrap_or("-".into()),
                kc.map(|v| v.to_string()).unwrap_or("-".into()),
                fmt_opt(kern_plus, 1),
                fmt_opt(pct(ag, kr), 1),
                fmt_opt(pct(ring, kr), 1),
                fmt_opt(pos, 1),
                fmt_opt(per_ev, 0),
                w.events,
                fmt_opt(w.record.median().map(|t| w.events as f64 / t), 0),
                fmt_opt(rep.map(|t| w.replay_events as f64 / t), 0),
                fmt_opt(rep.map(|t| w.replayed_instructions as f64 / t / 1e6), 1),
                w.ring_flushes,
            );
        }
        let _ = writeln!(s, "\nTrace size and peak RSS");
        let _ = writeln!(
            s,
            "{:<11} | {:>9} {:>5} {:>7} {:>9} | {:>10} {:>10} {:>8} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "workload",
            "events B",
            "B/ev",
            "KB/s",
            "trace B",
            "qemu rr B",
            "rr B wkld",
            "rr/krr",
            "run MB",
            "rec MB",
            "rep MB",
            "qrun",
            "qrec",
            "qrep"
        );
        for w in ws {
            let rr_wkld = match (w.qemu_rr_bytes, w.qemu_rr_bytes_at_init) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            };
            let _ = writeln!(
                s,
                "{:<11} | {:>9} {:>5} {:>7} {:>9} | {:>10} {:>10} {:>8} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
                w.label(),
                w.event_bytes,
                fmt_opt((w.events > 0).then(|| w.event_bytes as f64 / w.events as f64), 1),
                fmt_opt(w.record.median().map(|t| w.event_bytes as f64 / t / 1e3), 1),
                w.trace_bytes,
                w.qemu_rr_bytes.map(|v| v.to_string()).unwrap_or("-".into()),
                rr_wkld.map(|v| v.to_string()).unwrap_or("-".into()),
                fmt_opt(rr_wkld.filter(|_| w.event_bytes > 0).map(|r| r as f64 / w.event_bytes as f64), 1),
                fmt_opt(w.run.rss_mib(), 0),
                fmt_opt(w.record.rss_mib(), 0),
                fmt_opt(w.replay.rss_mib(), 0),
                fmt_opt(w.qemu_run.rss_mib(), 0),
                fmt_opt(w.qemu_record.rss_mib(), 0),
                fmt_opt(w.qemu_replay.rss_mib(), 0),
            );
        }
        let _ = writeln!(
            s,
            "\nuser, kernel run/rec: instructions from the kernel's krr_start_init to the end (profiled run, profiled \
             recording). kern+%: extra kernel instructions when recording. agent%: instructions in the agent's krr_* \
             functions while recording, of the unrecorded kernel's; ring%: the part of them in the ring's \
             krr_ring_* functions (the rest is the hooks'). pos%: the position counter (an inline incq per \
             function entry and loop head, or call+incq+ret per block on a trace-pc kernel; krr run pays it too) \
             relative to the kernel without it. +ins/ev: extra guest \
             instructions per recorded event. repl Mk/s: kernel instructions replayed per second. flushes: ring-full \
             exits. events B: the compressed event stream; trace B: the whole trace directory (start snapshot, \
             console, header). qemu rr B: the whole rr log (from power-on); rr B wkld: the part written after the \
             console showed Run /init (QEMU buffers the file: approximate). rr/krr: rr B wkld / events B. Peak RSS: \
             largest of the runs (wait4)."
        );
        if self.args.smp == [1] {
            let _ = writeln!(
                s,
                "Multi-core: this table is one vCPU; `cargo bench -p krr-vmm --bench smp_scaling` compares krr run \
                 and krr record at --smp 1, 2 and 4 (docs/multicore.md), as does --smp 1,2,4 here."
            );
        }
        for w in ws {
            if w.replays_verified > 0 {
                let _ = writeln!(
                    s,
                    "{}: {} krr replay(s) verified (no divergence, console matches){}",
                    w.label(),
                    w.replays_verified,
                    match w.qemu_replay_console_match {
                        Some(true) => "; QEMU rr replay completed, console identical to the recording's",
                        Some(false) => "; QEMU rr replay FAILED (see below)",
                        None => "",
                    }
                );
            }
            for p in &w.problems {
                let _ = writeln!(s, "{}: PROBLEM: {p}", w.label());
            }
        }
        s
    }

    /// On hardware virtualization: no QEMU and no instruction counts, so one table of what
    /// recording costs there (wall time, events/s, trace bytes) per workload and vCPU count.
    fn hardware_table(&self, ws: &[Workload], elapsed: f64) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let n = self.reps;
        let _ = writeln!(
            s,
            "\nkrr bench: {} backend, {} vCPU(s), 256 MiB; {n} repetition(s); {:.0} s in all",
            self.args.accel,
            self.smp_list(),
            elapsed
        );
        let _ = writeln!(
            s,
            "\n{:<11} {:>5} | {:>18} {:>18} {:>7} | {:>7} {:>8} {:>9} {:>5} {:>9} {:>7} | {:>6} {:>6} | {:>14}",
            "workload",
            "vCPUs",
            "krr run s",
            "krr record s",
            "rec/run",
            "events",
            "ev/s rec",
            "events B",
            "B/ev",
            "trace B",
            "flushes",
            "run MB",
            "rec MB",
            "krr replay s"
        );
        for w in ws {
            let _ = writeln!(
                s,
                "{:<11} {:>5} | {:>18} {:>18} {:>7} | {:>7} {:>8} {:>9} {:>5} {:>9} {:>7} | {:>6} {:>6} | {:>14}",
                w.name,
                w.smp,
                w.run.cell(),
                w.record.cell(),
                fmt_opt(ratio(w.record.median(), w.run.median()), 2),
                w.events,
                fmt_opt(w.record.median().map(|t| w.events as f64 / t), 0),
                w.event_bytes,
                fmt_opt((w.events > 0).then(|| w.event_bytes as f64 / w.events as f64), 1),
                w.trace_bytes,
                w.ring_flushes,
                fmt_opt(w.run.rss_mib(), 0),
                fmt_opt(w.record.rss_mib(), 0),
                if self.args.no_replay { "not run".to_string() } else { w.replay.cell() },
            );
        }
        let _ = writeln!(
            s,
            "\nrun, record: wall time of the workload part (the kernel's `Run /init` line to the end), median \
             [min-max]; rec/run: ratio of the medians. events, events B (compressed), trace B (the whole \
             directory: start snapshot, console, header), flushes (ring-full exits): the last recording. \
             Peak RSS: largest of the runs (wait4). No QEMU rows and no instruction counts: those need the emu \
             backend (`krr bench` without --accel)."
        );
        for w in ws {
            for p in &w.problems {
                let _ = writeln!(s, "{}: PROBLEM: {p}", w.label());
            }
        }
        s
    }

    fn json(&self, ws: &[Workload], elapsed: f64) -> Value {
        let items: Vec<Value> = ws
            .iter()
            .map(|w| {
                json!({
                    "workload": w.name,
                    "smp": w.smp,
                    "class": w.class,
                    "krr_run": w.run.json(),
                    "krr_record": w.record.json(),
                    "krr_replay": w.replay.json(),
                    "qemu_run": w.qemu_run.json(),
                    "qemu_record": w.qemu_record.json(),
                    "qemu_replay": w.qemu_replay.json(),
                    "ratios": {
                        "krr_record_over_run": ratio(w.record.median(), w.run.median()),
                        "krr_replay_over_record": ratio(w.replay.median(), w.record.median()),
                        "qemu_record_over_run": ratio(w.qemu_record.median(), w.qemu_run.median()),
                        "qemu_replay_over_record": ratio(w.qemu_replay.median(), w.qemu_record.median()),
                        "qemu_replay_over_record_whole_vm": ratio(median(w.qemu_replay.totals()), median(w.qemu_record.totals())),
                        "krr_record_over_qemu_record": ratio(w.record.median(), w.qemu_record.median()),
                    },
                    "events": w.events,
                    "event_bytes": w.event_bytes,
                    "trace_dir_bytes": w.trace_bytes,
                    "snapshot_bytes": w.snapshot_bytes,
                    "ring_flushes": w.ring_flushes,
                    "recorded_instructions": w.recorded_instructions,
                    "replayed_kernel_instructions": w.replayed_instructions,
                    "replayed_events": w.replay_events,
                    "events_per_s_record": w.record.median().map(|t| w.events as f64 / t),
                    "events_per_s_replay": w.replay.median().map(|t| w.replay_events as f64 / t),
                    "replay_kernel_mips": w.replay.median().map(|t| w.replayed_instructions as f64 / t / 1e6),
                    "bytes_per_event": (w.events > 0).then(|| w.event_bytes as f64 / w.events as f64),
                    "event_bytes_per_s_record": w.record.median().map(|t| w.event_bytes as f64 / t),
                    "profile_run": w.profile_run,
                    "profile_record": w.profile_record,
                    "qemu_rr_bytes": w.qemu_rr_bytes,
                    "qemu_rr_bytes_at_init": w.qemu_rr_bytes_at_init,
                    "qemu_replay_console_match": w.qemu_replay_console_match,
                    "krr_replays_verified": w.replays_verified,
                    "problems": w.problems,
                })
            })
            .collect();
        json!({
            "krr_version": env!("CARGO_PKG_VERSION"),
            "qemu_version": qemu_version(&self.args.qemu),
            "qemu_icount": self.args.qemu_icount,
            "guest_dir": self.guest.display().to_string(),
            "backend": self.args.accel,
            "smp": self.args.smp,
            "replayed": !self.args.no_replay,
            "reps": self.reps,
            "seconds": elapsed,
            "workloads": items,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qemu {
    Run,
    Record,
    Replay,
}

fn qemu_version(qemu: &str) -> String {
    Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("QEMU emulator version "))
                .map(|v| v.split_whitespace().next().unwrap_or(v).to_string())
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
    }
}
