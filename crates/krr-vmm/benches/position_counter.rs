//! What the position counter costs, per guest workload: the krr_pos plugin's inline increments
//! (function entries and loop heads, the default kernel) against the trace-pc callback in every
//! basic block (`guest/build.sh --counter trace-pc`), with exact instruction counts of profiled
//! runs and recordings on the `emu` backend (deterministic: one of each is the answer).
//!
//! Prints, per workload, vCPU count and counter: kernel instructions of an unrecorded run,
//! position-counter increments per kernel instruction, the counter's cost (an `incq`, or the
//! callback's call + `incq` + `ret`) relative to the kernel's other instructions, kernel
//! instructions added by recording (kern+), and recorded / unrecorded guest instructions (user +
//! kernel).
//!
//! `cargo bench -p krr-vmm --bench position_counter [-- WORKLOAD...] [--smp 1,2]`
//! The plugin kernel comes from `$KRR_GUEST_DIR` or `guest/build.sh --print-dir`; the trace-pc one
//! from `$KRR_GUEST_DIR_TRACE_PC` or `guest/build.sh --counter trace-pc --print-dir`.

use std::path::{Path, PathBuf};

use krr_vmm::bench_support::{bench_args, built_guest, guest_dir, pct, run_ok, workload_config, WORKLOADS};
use krr_vmm::emu::Profile;

/// A profiled run (or recording into `trace`) of `workload` on `vcpus` emulated vCPUs.
fn profile(dir: &Path, workload: &str, vcpus: u32, trace: Option<PathBuf>) -> Profile {
    let mut cfg = workload_config(dir, workload, trace, true);
    cfg.vcpus = vcpus;
    run_ok(&cfg).profile.expect("a profiled run")
}

fn main() {
    let (mut args, _) = bench_args(1);
    let mut smps = vec![1u32, 2];
    if let Some(i) = args.iter().position(|a| a == "--smp") {
        let list = args.get(i + 1).expect("--smp N[,N...]").clone();
        smps = list.split(',').map(|n| n.parse().expect("--smp N[,N...]")).collect();
        args.drain(i..i + 2);
    }
    let workloads: Vec<String> =
        if args.is_empty() { WORKLOADS.iter().map(|s| s.to_string()).collect() } else { args };
    let kernels = [
        ("plugin", guest_dir()),
        ("trace-pc", built_guest("KRR_GUEST_DIR_TRACE_PC", &["--counter", "trace-pc"])),
    ];
    for (name, dir) in &kernels {
        println!("position_counter: {name} kernel {}", dir.display());
    }
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "{:<9} {:>3} {:<8} | {:>11} {:>11} {:>8} {:>6} | {:>6} {:>8}",
        "workload", "cpu", "counter", "kernel run", "increments", "inc/kins", "pos%", "kern+", "rec/run"
    );
    let mut n = 0;
    for w in &workloads {
        for &smp in &smps {
            for (name, dir) in &kernels {
                n += 1;
                let run = profile(dir, w, smp, None);
                let rec = profile(dir, w, smp, Some(tmp.path().join(format!("t{n}"))));
                let cost = run.position_counter_cost();
                println!(
                    "{:<9} {:>3} {:<8} | {:>11} {:>11} {:>8.4} {:>5.1}% | {:>5.1}% {:>7.3}x",
                    w,
                    smp,
                    name,
                    run.kernel,
                    run.increments(),
                    run.increments() as f64 / run.kernel.max(1) as f64,
                    pct(cost, run.kernel - cost),
                    pct(rec.kernel.saturating_sub(run.kernel), run.kernel),
                    (rec.user + rec.kernel) as f64 / (run.user + run.kernel).max(1) as f64,
                );
            }
        }
    }
    println!(
        "inc/kins: position-counter increments per kernel instruction (unrecorded run). pos%: the \
         instructions the counter adds (plugin: one incq per increment; trace-pc: call + incq + ret), \
         relative to the kernel's instructions without them. kern+: extra kernel instructions when recording (the agent's \
         hooks and ring). rec/run: recorded over unrecorded guest instructions, user + kernel."
    );
}
