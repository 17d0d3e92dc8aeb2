//! What recording costs on the `emu` backend, per guest workload: `krr run` against
//! `krr record` of the same workload with the same (agent-carrying) kernel.
//!
//! Prints, per workload: the median wall time of the workload part (from the kernel's
//! `Run /init` line to the end) of N runs and N recordings and their ratio; events per second of
//! recording; trace bytes per event; and exact instruction counts from a profiled run of each
//! (user and kernel separately, the position counter's share, the agent's own instructions).
//!
//! Then what the ring's size costs: the first workload recorded with rings of 4 MiB (the
//! default), 256 KiB and 64 KiB (the smallest `krr record --ring` takes): ring-full flushes (each
//! a synchronous exit to the VMM), instructions in the ring's functions, recording wall time.
//!
//! `cargo bench -p krr-vmm --bench record_overhead [-- WORKLOAD... ] [--reps N]` (N = 5)
//! The guest comes from `$KRR_GUEST_DIR` or `guest/build.sh --print-dir`.

use std::path::{Path, PathBuf};

use krr_vmm::bench_support::{
    bench_args, guest_dir, median, pct, run_ok as once, workload_config, WORKLOADS,
};
use krr_vmm::emu::Profile;
use krr_vmm::VmConfig;

fn config(dir: &Path, workload: &str, record: Option<PathBuf>, profile: bool) -> VmConfig {
    workload_config(dir, workload, record, profile)
}

/// A recording of `workload` into `trace` with a ring of `ring` bytes.
fn with_ring(dir: &Path, workload: &str, trace: PathBuf, ring: u64, profile: bool) -> VmConfig {
    let mut cfg = config(dir, workload, Some(trace), profile);
    cfg.record.as_mut().expect("a recording").ring_bytes = ring;
    cfg
}

fn main() {
    let (args, reps) = bench_args(5);
    let workloads: Vec<String> =
        if args.is_empty() { WORKLOADS.iter().map(|s| s.to_string()).collect() } else { args };
    let dir = guest_dir();
    let tmp = tempfile::tempdir().unwrap();
    println!("record_overhead: emu backend, guest {}, {reps} runs and {reps} recordings each", dir.display());
    println!(
        "{:<9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>5} | {:>9} {:>9} {:>9} {:>9} {:>6} {:>6} {:>6} {:>6}",
        "workload",
        "run s",
        "rec s",
        "rec/run",
        "events",
        "events/s",
        "B/ev",
        "user run",
        "user rec",
        "kern run",
        "kern rec",
        "kern+",
        "pos",
        "hooks",
        "ring"
    );
    let mut n = 0;
    for w in &workloads {
        let (mut t_run, mut t_rec) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..reps {
            t_run.push(once(&config(&dir, w, None, false)).after_init.unwrap().as_secs_f64());
            n += 1;
            let out = once(&config(&dir, w, Some(tmp.path().join(format!("t{n}"))), false));
            t_rec.push(out.after_init.unwrap().as_secs_f64());
            last = out.record;
        }
        let rec = last.expect("at least one recording");
        // Exact counts: one profiled run and one profiled recording.
        let p_run: Profile = once(&config(&dir, w, None, true)).profile.unwrap();
        n += 1;
        let p_rec: Profile =
            once(&config(&dir, w, Some(tmp.path().join(format!("t{n}"))), true)).profile.unwrap();
        let (run_s, rec_s) = (median(t_run), median(t_rec));
        println!(
            "{:<9} {:>7.3} {:>7.3} {:>6.2}x {:>7} {:>8.0} {:>5.1} | {:>9} {:>9} {:>9} {:>9} {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}%",
            w,
            run_s,
            rec_s,
            rec_s / run_s,
            rec.events,
            rec.events as f64 / rec_s,
            rec.event_bytes as f64 / rec.events.max(1) as f64,
            p_run.user,
            p_rec.user,
            p_run.kernel,
            p_rec.kernel,
            pct(p_rec.kernel.saturating_sub(p_run.kernel), p_run.kernel),
            pct(p_run.position_counter_cost(), p_run.kernel - p_run.position_counter_cost()),
            pct(p_rec.agent - p_rec.ring, p_run.kernel),
            pct(p_rec.ring, p_run.kernel),
        );
    }
    println!(
        "rec/run: wall-time ratio of the workload part (medians). kern+: extra kernel instructions when \
         recording (hooks and ring). pos: the position counter's instructions (an inline incq per function entry \
         and loop head, or a trace-pc kernel's call+incq+ret per block), relative to the kernel without them \
         (both runs pay it). hooks: instructions inside the agent's \
         krr_* functions other than the ring's while recording; ring: inside krr_ring_* (open a record with \
         interrupts off and the ring locked, publish it, flush a full ring); both relative to the unrecorded \
         kernel."
    );

    let w = workloads.first().expect("a workload");
    println!("\nring size: {w} recorded with each ring ({reps} recordings, median)");
    println!(
        "{:>9} {:>8} {:>8} {:>12} {:>7} {:>8}",
        "ring KiB", "events", "flushes", "ring instr", "ring%", "rec s"
    );
    let mut base = None;
    for ring in [4u64 << 20, 256 << 10, 64 << 10] {
        let mut t = Vec::new();
        let mut last = None;
        for _ in 0..reps {
            n += 1;
            let out = once(&with_ring(&dir, w, tmp.path().join(format!("t{n}")), ring, false));
            t.push(out.after_init.unwrap().as_secs_f64());
            last = out.record;
        }
        n += 1;
        let p: Profile =
            once(&with_ring(&dir, w, tmp.path().join(format!("t{n}")), ring, true)).profile.unwrap();
        let rec = last.expect("at least one recording");
        let rec_s = median(t);
        let base_s = *base.get_or_insert(rec_s);
        println!(
            "{:>9} {:>8} {:>8} {:>12} {:>6.2}% {:>7.3}s ({:.2}x)",
            ring >> 10,
            rec.events,
            rec.ring_flushes,
            p.ring,
            pct(p.ring, p.kernel),
            rec_s,
            rec_s / base_s
        );
    }
    println!(
        "ring instr: instructions in krr_ring_* during the profiled recording; ring%: of all its kernel \
         instructions; (x): recording wall time relative to the 4 MiB ring."
    );
}
