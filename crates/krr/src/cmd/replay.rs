//! `krr replay`: re-execute a recorded kernel on krr-emu and verify it against the trace.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use krr_replay::{check_kernel, load_snapshot, load_trace, Hooks, Replayer};

/// Re-execute a recorded kernel in the emulator and verify it.
///
/// The guest kernel of the trace runs again, instruction by instruction, on krr's emulator from the
/// trace's start snapshot, fed the recorded inputs; user space is skipped. Every event (kind,
/// port/MSR, registers, positions) and the console are checked against the trace.
///
/// Exit status: 0 when the whole trace (or the valid prefix of a damaged one) replayed without
/// divergence and the console matched; 3 on the first divergence (with a report); 1 on errors
/// (corrupt trace, another kernel, a missing snapshot).
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The trace directory (from `krr record`).
    pub trace: PathBuf,
    /// The kernel the trace was recorded with (default: the cached guest build); it must have
    /// the trace's build-id.
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// Stop after this many events.
    #[arg(long, value_name = "EVENT")]
    pub until: Option<u64>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Serve GDB instead of replaying straight through: wait on ADDR (`HOST:PORT`, `:PORT`, or
    /// a Unix socket path) before the first instruction, then replay as GDB asks, forwards and in
    /// reverse (docs/gdb.md).
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["until", "json"])]
    pub gdb: Option<String>,
    /// Give this vendor's answers (amd or intel) where the manuals leave flags and results
    /// undefined, instead of those of the CPU that recorded the trace (its vendor is in the
    /// header). Needed for traces from CPUs krr-emu has no profile for (e.g. Hygon, Zhaoxin);
    /// where the vendors differ, the replay can then diverge.
    #[arg(long, value_name = "VENDOR")]
    pub cpu_profile: Option<krr_emu::Vendor>,
}

/// The first byte where the replayed console and the trace's differ (`whole`: they must also
/// have the same length; else only the common prefix counts).
fn console_difference(replayed: &[u8], traced: &[u8], whole: bool) -> Option<usize> {
    let n = replayed.len().min(traced.len());
    match replayed[..n].iter().zip(&traced[..n]).position(|(a, b)| a != b) {
        Some(i) => Some(i),
        None if whole && replayed.len() != traced.len() => Some(n),
        None => None,
    }
}

/// The index of the console marker whose output contains byte `at` of the console.
fn console_event(events: &krr_replay::Events, at: usize) -> u64 {
    let mut end = 0usize;
    for (i, e) in events.iter_from(0).enumerate() {
        if let krr_trace::Event::Console { len, .. } = *e {
            end += len as usize;
            if end > at {
                return i as u64;
            }
        }
    }
    events.len() as u64
}

fn excerpt(b: &[u8], at: usize) -> String {
    String::from_utf8_lossy(&b[at.min(b.len())..(at + 40).min(b.len())]).into_owned()
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let trace = load_trace(&args.trace)?;
    let vmlinux = match &args.vmlinux {
        Some(v) => v.clone(),
        None => super::guest::guest_dir()?.join("vmlinux"),
    };
    check_kernel(&trace.header, &vmlinux)?;
    if !trace.complete {
        eprintln!(
            "krr replay: {} is incomplete ({}); replaying its {} valid events",
            args.trace.display(),
            trace.damage.as_deref().unwrap_or("the recorder did not seal it"),
            trace.events.len()
        );
    }
    let profile = krr_replay::cpu_profile(&trace.header, args.cpu_profile)?;
    if args.cpu_profile.is_some()
        && Some(profile) != krr_emu::Vendor::from_cpuid_vendor(&trace.header.vm.cpu_vendor)
    {
        eprintln!(
            "krr replay: the trace was recorded on a {} CPU; replaying with krr-emu's {profile} profile (a divergence can follow where the vendors differ)",
            trace.header.vm.cpu_vendor
        );
    }
    let (cpus, mem, meta) = load_snapshot(&trace, Some(profile))?;
    let hooks = Hooks::from_vmlinux(&vmlinux)?;
    let mut r = Replayer::new(cpus, mem, hooks, &trace.events);
    r.check_status_flags(meta.backend == "emu");
    if let Some(addr) = &args.gdb {
        return super::gdb::serve(r, &trace, &vmlinux, addr);
    }
    if let Some(n) = args.until {
        r.until(n);
    }
    let total = trace.events.len() as u64;
    let tty = std::io::stderr().is_terminal() && !args.json;
    let started = Instant::now();
    let result = r.run(|ev, insns| {
        if tty {
            let secs = started.elapsed().as_secs_f64().max(1e-9);
            // Events are uneven in instructions; the rate so far is still the best guess.
            let eta = if ev > 0 && total > ev { secs * (total - ev) as f64 / ev as f64 } else { 0.0 };
            eprint!(
                "\rkrr replay: event {ev}/{total} ({:.0} %), {insns} instructions, {:.0} M/s, ETA {}   ",
                100.0 * ev as f64 / total.max(1) as f64,
                insns as f64 / secs / 1e6,
                super::duration_text(eta)
            );
            let _ = std::io::stderr().flush();
        }
    });
    if tty {
        eprintln!();
    }
    if let Some(e) = trace.events.error() {
        anyhow::bail!("{}: {e}", args.trace.display());
    }
    let secs = started.elapsed().as_secs_f64();
    let (events, instructions, console_diff, diverged, digest) = match &result {
        Ok(o) => {
            let whole = args.until.is_none() && trace.complete;
            (
                o.events,
                o.instructions,
                console_difference(&o.console, &trace.console, whole),
                false,
                Some(o.digest),
            )
        }
        Err(d) => (d.event_index, d.instructions, None, true, None),
    };
    let console_match = !diverged && console_diff.is_none();
    let mips = instructions as f64 / secs.max(1e-9) / 1e6;
    if args.json {
        let v = serde_json::json!({
            "trace": args.trace.display().to_string(),
            "events": events,
            "instructions": instructions,
            "seconds": secs,
            "mips": mips,
            "console_match": console_match,
            "diverged": diverged,
            "complete": trace.complete,
            "digest": digest.map(|d| format!("{d:08x}")),
        });
        println!("{v}");
    }
    match result {
        Err(d) => {
            eprint!("{d}");
            Ok(ExitCode::from(3))
        }
        Ok(_) if !console_match => {
            let at = console_diff.unwrap_or(0);
            eprintln!(
                "krr replay: diverged: the console written during replay differs from the trace's at byte {at} (written after event #{}): replay {:?}, trace {:?}",
                console_event(&trace.events, at),
                excerpt(&result.as_ref().map(|o| o.console.clone()).unwrap_or_default(), at),
                excerpt(&trace.console, at)
            );
            Ok(ExitCode::from(3))
        }
        Ok(_) => {
            if !args.json {
                eprintln!(
                    "krr replay: {events} events, {instructions} guest-kernel instructions in {secs:.2} s ({mips:.1} M/s), console matches; no divergence"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
