//! `krr record`: boot the guest, run a workload, and record its kernel's inputs into a trace.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use krr_vmm::recorder::{ProgressSink, RecordProgress, StartPoint};
use krr_vmm::vm::RecordConfig;
use krr_vmm::ExitReason;

use super::run::{parse_size, VmArgs};

/// Boot a guest, run a workload, record its kernel's inputs into a trace directory.
///
/// The guest kernel (it must carry the krr agent, as `krr guest build` makes it) logs every input
/// it receives — system calls, exceptions, interrupts with their exact position, user memory it
/// reads, port/MMIO reads, RDTSC, RDMSR, CPUID — and krr writes them into the trace directory DIR.
///
/// Recording starts just before the kernel runs /init (--start late: after the last initcall;
/// --start boot or --from-boot: early in boot) with a snapshot of the whole machine, and ends
/// when the workload exits, the guest kernel panics, or krr is interrupted (Ctrl-C, SIGTERM);
/// in every case the trace is sealed and `krr dump` reads it. A recorder killed outright leaves
/// a trace readable up to its last written block.
///
/// Boot once, record many times: --save-snapshot FILE --snapshot-on-console TEXT boots a
/// recording-ready guest (its ring reserved and named on the kernel command line), saves the VM
/// when the console shows TEXT — which must come before the agent starts, e.g. with --start late
/// — and exits without a trace; --from-snapshot FILE resumes it and records from there.
///
/// With --smp N (up to 8) the guest kernel runs under the agent's kernel lock: one vCPU at a
/// time in the kernel, user space in parallel, every hand-off in the trace (docs/multicore.md).
/// Bugs that need two CPUs inside the kernel at the same instant cannot be recorded. On the emu
/// backend --emu-seed SEED records another interleaving of the vCPUs for each seed.
///
/// Exit status: the workload's own; 125 if the guest kernel panicked or reset, or the backend
/// could not run the guest; 124 if --timeout expired; 130 if interrupted; 1 on errors.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {
    /// The trace directory to create (it must not exist, or be empty).
    #[arg(short, long, value_name = "DIR", required_unless_present = "save_snapshot")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub vm: VmArgs,
    /// When the guest agent starts recording: init (just before the kernel runs /init), late
    /// (after the last initcall: the end of the boot, then the workload), or boot (as early as
    /// the agent can run: the kernel alone).
    #[arg(long, value_name = "WHEN", default_value = "init", value_parser = ["init", "late", "boot"])]
    pub start: String,
    /// Same as --start boot.
    #[arg(long, conflicts_with = "start")]
    pub from_boot: bool,
    /// Boot a recording-ready guest, save it to FILE when the console shows the
    /// --snapshot-on-console text (before the agent starts), and exit. No trace is written.
    #[arg(long, value_name = "FILE", requires = "snapshot_on_console", conflicts_with_all = ["from_snapshot", "output"])]
    pub save_snapshot: Option<PathBuf>,
    /// The console text at which --save-snapshot saves the VM.
    #[arg(long, value_name = "TEXT", requires = "save_snapshot")]
    pub snapshot_on_console: Option<String>,
    /// Resume a VM saved by `krr record --save-snapshot` and record from there (its backend,
    /// vCPUs, memory, ring and start point are the snapshot's; --accel is not looked at).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["start", "from_boot", "ring", "smp", "mem", "add", "add_bin"])]
    pub from_snapshot: Option<PathBuf>,
    /// Guest memory reserved for the agent's log ring; the guest stops to hand it over when it
    /// is full.
    #[arg(long, default_value = "4M", value_parser = parse_size, value_name = "SIZE")]
    pub ring: u64,
    /// The command to run in the guest.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    if !(1..=8).contains(&args.vm.smp) {
        bail!("--smp {}: krr records 1 to 8 vCPUs", args.vm.smp);
    }
    if !(64 << 10..=256 << 20).contains(&args.ring) || args.ring % 4096 != 0 {
        bail!("--ring {}: the ring must be 64K to 256M, a multiple of 4K", args.ring);
    }
    let start =
        if args.from_boot { StartPoint::Boot } else { StartPoint::parse(&args.start).unwrap_or_default() };
    let mut cfg = args.vm.config(&args.cmd)?;
    if let Some(snap) = &args.save_snapshot {
        cfg.save_snapshot = Some(snap.clone());
        cfg.snapshot_on_console = args.snapshot_on_console.clone();
        cfg.record = Some(record_config(&cfg, PathBuf::new(), args.ring, start));
        let out = krr_vmm::vm::run(&cfg).with_context(|| format!("saving {}", snap.display()))?;
        return Ok(match out.reason {
            ExitReason::SnapshotSaved { path, bytes } => {
                eprintln!(
                    "krr record: saved the recording-ready VM to {} ({} MiB, accel {}); record from it with \
                     `krr record --from-snapshot {} -o DIR -- CMD`",
                    path.display(),
                    bytes >> 20,
                    out.accel.name(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            other => bail!(
                "nothing saved: the guest ended ({other:?}) before its console showed {:?}",
                args.snapshot_on_console.as_deref().unwrap_or_default()
            ),
        });
    }
    let output = args.output.clone().context("-o DIR")?;
    if output.exists() && std::fs::read_dir(&output).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!(
            "{}: exists and is not an empty directory (krr record never overwrites a trace)",
            output.display()
        );
    }
    cfg.from_snapshot = args.from_snapshot.clone();
    let mut rc = record_config(&cfg, output.clone(), args.ring, start);
    // A progress line on a terminal, redrawn about once a second, when the guest's console does
    // not share that terminal (stdout redirected); nothing in pipes and logs.
    let tty = std::io::stderr().is_terminal() && !std::io::stdout().is_terminal();
    if tty {
        rc.progress = Some(ProgressSink(std::sync::Arc::new(|p: &RecordProgress| {
            let secs = p.elapsed.as_secs_f64().max(1e-9);
            eprint!(
                "\r\x1b[Kkrr record: {} events ({:.0}/s), {} ring flushes, {:.1} MB of ring records, {}",
                p.events,
                p.events as f64 / secs,
                p.ring_flushes,
                p.ring_bytes as f64 / 1e6,
                super::duration_text(secs)
            );
            let _ = std::io::stderr().flush();
        })));
    }
    cfg.record = Some(rc);
    let out = krr_vmm::vm::run(&cfg).with_context(|| format!("recording into {}", output.display()));
    if tty {
        // End the progress line (if one was drawn) before the summary.
        eprint!("\r\x1b[K");
    }
    let out = out?;
    let secs = out.elapsed.as_secs_f64();
    let Some(rec) = &out.record else { bail!("the run ended without a trace") };
    if rec.snapshot_bytes == 0 {
        eprintln!(
            "krr record: warning: the guest agent never started recording (is the kernel built with the krr \
             patch? `krr guest build` makes one); the trace holds no events"
        );
    }
    let per_event = if rec.events > 0 { rec.event_bytes as f64 / rec.events as f64 } else { 0.0 };
    let insns = if out.instructions > 0 {
        format!(
            ", {} guest instructions ({} recorded)",
            out.instructions,
            out.instructions - out.instructions_before_record
        )
    } else {
        String::new()
    };
    eprintln!(
        "krr record: trace {} (accel {}): {} events, {} bytes ({per_event:.1} B/event), console {} bytes, \
         snapshot {} KiB, {} ring flushes; end reason {}; {secs:.1} s{insns}",
        rec.dir.display(),
        out.accel.name(),
        rec.events,
        rec.event_bytes,
        rec.console_bytes,
        rec.snapshot_bytes >> 10,
        rec.ring_flushes,
        rec.end_reason,
    );
    if rec.events > 0 && secs > 0.0 {
        let (stall, longest) = rec.flush_stall;
        eprintln!(
            "krr record: throughput {:.0} events/s, {:.1} MB/s of ring records ({} bytes); ring flushes stalled the guest {:.1} ms in all, {:.2} ms at most",
            rec.events as f64 / secs,
            rec.ring_bytes as f64 / secs / 1e6,
            rec.ring_bytes,
            stall.as_secs_f64() * 1e3,
            longest.as_secs_f64() * 1e3
        );
    }
    if rec.unfinished_inputs > 0 {
        eprintln!(
            "krr record: {} inputs were still being read when the recording ended",
            rec.unfinished_inputs
        );
    }
    super::print_vcpus_at_end("record", &out, &cfg.vmlinux);
    if args.vm.json {
        let (stall, longest) = rec.flush_stall;
        let trace = serde_json::json!({
            "trace": {
                "dir": rec.dir,
                "events": rec.events,
                "event_bytes": rec.event_bytes,
                "console_bytes": rec.console_bytes,
                "snapshot_bytes": rec.snapshot_bytes,
                "ring_flushes": rec.ring_flushes,
                "ring_bytes": rec.ring_bytes,
                "flush_stall_ms": stall.as_secs_f64() * 1e3,
                "longest_flush_stall_ms": longest.as_secs_f64() * 1e3,
                "unfinished_inputs": rec.unfinished_inputs,
                "end_reason": rec.end_reason.to_string(),
                "instructions_recorded": out.instructions - out.instructions_before_record,
            }
        });
        super::print_json_summary(&out, &cfg.vmlinux, trace);
    }
    Ok(match out.reason {
        ExitReason::Exited(code) => {
            eprintln!("krr record: workload exited with status {code}");
            ExitCode::from(code)
        }
        ExitReason::Panic(line) => {
            eprintln!("krr record: guest kernel panic: {line}");
            ExitCode::from(125)
        }
        ExitReason::Reset => {
            eprintln!("krr record: the guest reset without reporting an exit status");
            ExitCode::from(125)
        }
        ExitReason::Timeout => {
            eprintln!("krr record: timed out; the trace is sealed");
            ExitCode::from(124)
        }
        ExitReason::Interrupted => {
            eprintln!("krr record: interrupted; the trace is sealed");
            ExitCode::from(130)
        }
        ExitReason::KvmCannotRunUserSpace if rec.start != StartPoint::Init => {
            eprintln!(
                "krr record: recorded the kernel up to Run /init (this host's KVM cannot run the guest's user space)"
            );
            ExitCode::SUCCESS
        }
        ExitReason::KvmCannotRunUserSpace => {
            eprintln!(
                "krr record: the kernel reached Run /init, but this host's KVM cannot run the guest's user space \
                 (see krr doctor); use --accel emu, or --start boot or late to record the kernel alone"
            );
            ExitCode::from(125)
        }
        ExitReason::SnapshotSaved { .. } => ExitCode::SUCCESS,
    })
}

/// The recorder's configuration for a VM: the trace names this krr and the guest kernel's version
/// (from the guest build's `linux-version` file beside the vmlinux).
pub fn record_config(
    cfg: &krr_vmm::VmConfig,
    dir: PathBuf,
    ring_bytes: u64,
    start: StartPoint,
) -> RecordConfig {
    let kernel_version = cfg
        .vmlinux
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join("linux-version")).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    RecordConfig {
        dir,
        ring_bytes,
        start,
        producer: format!("krr {}", env!("CARGO_PKG_VERSION")),
        kernel_version,
        progress: None,
    }
}
