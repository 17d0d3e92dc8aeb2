//! What the kernel lock costs as vCPUs are added (DESIGN §5, docs/multicore.md): `krr run`
//! against `krr record` of one kernel-heavy multi-core workload at `--smp 1`, `2` and `4`, all
//! in the same run, on the `emu` backend.
//!
//! Prints, per vCPU count: the median wall time of the workload part (from `Run /init` to the
//! end) of N runs and N recordings and their ratio; events and lock hand-offs per second of
//! recording; exact instruction counts of a profiled run and a profiled recording (user and
//! kernel); and the fraction of all executed instructions spent in the kernel lock's acquire
//! spin. On emu, time is instructions, so that fraction is the time vCPUs waited for the lock.
//!
//! `cargo bench -p krr-vmm --bench smp_scaling [-- WORKLOAD ARGS...] [--reps N]` (default
//! `smp-tmpfs`, N = 3). The guest comes from `$KRR_GUEST_DIR` or `guest/build.sh --print-dir`.

use std::path::Path;

use krr_trace::{Event, TraceReader};
use krr_vmm::bench_support::{bench_args, guest_dir, median, pct, run_ok as once, workload_config};
use krr_vmm::emu::Profile;
use krr_vmm::VmConfig;

fn config(dir: &Path, cmd: &[String], smp: u32, record: Option<&Path>, profile: bool) -> VmConfig {
    let mut cfg = workload_config(dir, "unused", record.map(Path::to_path_buf), profile);
    cfg.vcpus = smp;
    cfg.command = cmd.to_vec();
    cfg
}

fn handoffs(trace: &Path) -> u64 {
    let mut r = TraceReader::open(trace).expect("the recording's trace");
    r.events().filter(|e| matches!(e, Ok(x) if matches!(x.event, Event::LockHandoff { .. }))).count() as u64
}

fn main() {
    let (mut args, reps) = bench_args(3);
    if args.is_empty() {
        args.push("smp-tmpfs".into());
    }
    let cmd: Vec<String> =
        std::iter::once(format!("/bin/{}", args[0])).chain(args[1..].iter().cloned()).collect();
    let dir = guest_dir();
    let tmp = tempfile::tempdir().unwrap();
    println!(
        "smp_scaling: emu backend, guest {}, {cmd:?}, {reps} runs and {reps} recordings per vCPU count",
        dir.display()
    );
    println!(
        "{:>4} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} | {:>10} {:>10} {:>10} {:>10} {:>6} {:>7}",
        "smp",
        "run s",
        "rec s",
        "rec/run",
        "events",
        "events/s",
        "hand/s",
        "user run",
        "user rec",
        "kern run",
        "kern rec",
        "kern+",
        "lockwait"
    );
    let mut n = 0;
    for smp in [1u32, 2, 4] {
        let (mut t_run, mut t_rec) = (Vec::new(), Vec::new());
        let mut last = None;
        for _ in 0..reps {
            t_run.push(once(&config(&dir, &cmd, smp, None, false)).after_init.unwrap().as_secs_f64());
            n += 1;
            let trace = tmp.path().join(format!("t{n}"));
            let out = once(&config(&dir, &cmd, smp, Some(&trace), false));
            t_rec.push(out.after_init.unwrap().as_secs_f64());
            last = out.record.map(|r| (r, trace));
        }
        let (rec, trace) = last.expect("at least one recording");
        let hand = handoffs(&trace);
        let p_run: Profile = once(&config(&dir, &cmd, smp, None, true)).profile.unwrap();
        n += 1;
        let p_rec: Profile =
            once(&config(&dir, &cmd, smp, Some(&tmp.path().join(format!("t{n}"))), true)).profile.unwrap();
        let (run_s, rec_s) = (median(t_run), median(t_rec));
        println!(
            "{:>4} {:>7.3} {:>7.3} {:>6.2}x {:>7} {:>8.0} {:>7.0} | {:>10} {:>10} {:>10} {:>10} {:>5.1}% {:>6.1}%",
            smp,
            run_s,
            rec_s,
            rec_s / run_s,
            rec.events,
            rec.events as f64 / rec_s,
            hand as f64 / rec_s,
            p_run.user,
            p_rec.user,
            p_run.kernel,
            p_rec.kernel,
            pct(p_rec.kernel.saturating_sub(p_run.kernel), p_run.kernel),
            pct(p_rec.lock_spin, p_rec.user + p_rec.kernel),
        );
    }
    println!(
        "rec/run: wall-time ratio of the workload part (medians, same run). hand/s: kernel-lock hand-offs \
         logged per second (LockHandoff events; most hand-offs are implicit in the entry that took the lock). \
         kern+: extra kernel instructions when recording (hooks, ring, lock). lockwait: instructions in the \
         lock's acquire spin over all instructions executed while recording (emu time is instructions). The \
         workload does more work with more vCPUs (one worker per vCPU): compare rec/run within a row."
    );
}
