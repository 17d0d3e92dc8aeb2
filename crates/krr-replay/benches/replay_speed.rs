//! Replay speed per guest workload, next to recording the same workload in the same run: each
//! workload is recorded once on the `emu` backend (wall time of the part after the kernel's
//! `Run /init` line), then the trace is replayed N times (median wall time).
//!
//! `cargo bench -p krr-replay --bench replay_speed [-- WORKLOAD...] [--reps N]` (N = 3)
//! The guest comes from `$KRR_GUEST_DIR` or `guest/build.sh --print-dir`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use krr_replay::{load_snapshot, load_trace, Hooks, Replayer};
use krr_vmm::bench_support::{bench_args, guest_dir, median, run_ok, workload_config, WORKLOADS};

fn record(dir: &Path, workload: &str, trace: PathBuf) -> f64 {
    run_ok(&workload_config(dir, workload, Some(trace), false)).after_init.unwrap().as_secs_f64()
}

fn main() {
    let (args, reps) = bench_args(3);
    let workloads: Vec<String> =
        if args.is_empty() { WORKLOADS.iter().map(|s| s.to_string()).collect() } else { args };
    let dir = guest_dir();
    let hooks = Hooks::from_vmlinux(&dir.join("vmlinux")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    println!("replay_speed: guest {}, replay median of {reps}", dir.display());
    println!(
        "{:<9} {:>8} {:>10} {:>9} {:>9} {:>9}",
        "workload", "events", "kernel ins", "record s", "replay s", "replay M/s"
    );
    for w in &workloads {
        let trace_dir = tmp.path().join(w);
        let rec_s = record(&dir, w, trace_dir.clone());
        let trace = load_trace(&trace_dir).unwrap();
        let mut times = Vec::new();
        let mut insns = 0;
        for _ in 0..reps {
            let (cpus, mem, _) = load_snapshot(&trace, None).unwrap();
            let t = Instant::now();
            let out = Replayer::new(cpus, mem, hooks.clone(), &trace.events)
                .run(|_, _| {})
                .unwrap_or_else(|d| panic!("{w}: {d}"));
            times.push(t.elapsed().as_secs_f64());
            insns = out.instructions;
        }
        let rep_s = median(times);
        println!(
            "{:<9} {:>8} {:>10} {:>9.3} {:>9.3} {:>9.1}",
            w,
            trace.events.len(),
            insns,
            rec_s,
            rep_s,
            insns as f64 / rep_s / 1e6
        );
    }
    println!("record s: the workload part of the recording (from Run /init), which runs user space too.");
}
