//! What the debugger's operations cost on a real trace (forkexec recorded on the `emu`
//! backend): forward replay through a session with periodic checkpoints, stepi, reverse-stepi,
//! reverse-continue to a breakpoint, and the memory the checkpoints keep.
//!
//! `cargo bench -p krr-gdb --bench gdb_ops [-- WORKLOAD]` (default forkexec). The guest comes
//! from `$KRR_GUEST_DIR` or `guest/build.sh --print-dir`.

use std::time::Instant;

use krr_gdb::Timeline;
use krr_replay::{load_snapshot, load_trace, Hooks, Replayer, Session};
use krr_vmm::bench_support::{guest_dir, workload_config};
use krr_vmm::vm::run;
use krr_vmm::ExitReason;

/// The server's settings (crates/krr/src/cmd/gdb.rs).
const INTERVAL: u64 = 1 << 20;
const MAX: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let workload = args.first().map_or("forkexec", String::as_str);
    let dir = guest_dir();
    let tmp = tempfile::tempdir().unwrap();
    let trace_dir = tmp.path().join("t");
    let out = run(&workload_config(&dir, workload, Some(trace_dir.clone()), false)).unwrap();
    assert_eq!(out.reason, ExitReason::Exited(0));
    let trace = load_trace(&trace_dir).unwrap();
    let hooks = Hooks::from_vmlinux(&dir.join("vmlinux")).unwrap();
    let syms = krr_vmm::boot::symbols(&dir.join("vmlinux"), false).unwrap();
    let kernel_clone = syms.iter().find(|s| s.name == "kernel_clone").unwrap().addr;

    let (cpus, mem, _) = load_snapshot(&trace, None).unwrap();
    let t = Instant::now();
    let plain = Replayer::new(cpus, mem, hooks.clone(), &trace.events).run(|_, _| {}).unwrap();
    let plain_s = t.elapsed().as_secs_f64();

    let (cpus, mem, _) = load_snapshot(&trace, None).unwrap();
    let session = Session::new(Replayer::new(cpus, mem, hooks, &trace.events)).unwrap();
    let mut tl = Timeline::new(session, INTERVAL, MAX);
    let t = Instant::now();
    while tl.run(u64::MAX, &[], |_, _| false).unwrap() != krr_replay::Stop::End {}
    let fwd_s = t.elapsed().as_secs_f64();
    let end = tl.session.steps();
    println!(
        "gdb_ops: {workload}, {} events, {} kernel instructions, {end} steps",
        trace.events.len(),
        plain.instructions
    );
    println!(
        "  forward: plain replay {plain_s:.2} s ({:.1} M/s), session with checkpoints every {INTERVAL} steps {fwd_s:.2} s ({:.1} M/s)",
        plain.instructions as f64 / plain_s / 1e6,
        end as f64 / fwd_s / 1e6
    );
    let (n, pages, tables) = tl.checkpoint_memory();
    println!(
        "  checkpoints over the whole trace: {n}, {:.1} MiB of copied pages + {:.1} MiB of page tables ({:.0} KiB a checkpoint)",
        pages as f64 * 4096.0 / 1048576.0,
        tables as f64 / 1048576.0,
        (pages * 4096 + tables) as f64 / n as f64 / 1024.0
    );

    // From the middle of the trace: stepi, then reverse-stepi back over the same steps.
    let mid = end / 2 + 12_345;
    let t = Instant::now();
    tl.goto(mid);
    println!("  goto the middle (step {mid}): {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    const N: u32 = 1000;
    let t = Instant::now();
    for _ in 0..N {
        tl.run(1, &[], |_, _| false).unwrap();
    }
    println!("  stepi: {:.2} us each (mean of {N})", t.elapsed().as_secs_f64() * 1e6 / f64::from(N));
    let mut worst = 0f64;
    let t = Instant::now();
    for _ in 0..N {
        let s = Instant::now();
        assert!(tl.step_back());
        worst = worst.max(s.elapsed().as_secs_f64());
    }
    println!(
        "  reverse-stepi: {:.2} ms each (mean of {N}), first/worst {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3 / f64::from(N),
        worst * 1e3
    );
    assert_eq!(tl.session.steps(), mid);
    let t = Instant::now();
    let found = tl.search_back(&[], |cpu| cpu.rip == kernel_clone);
    println!(
        "  reverse-continue to the previous kernel_clone ({found:?}, {} steps back): {:.1} ms",
        mid - tl.session.steps(),
        t.elapsed().as_secs_f64() * 1e3
    );
    // Issue 8's yardstick: reverse-continue to a breakpoint one second of replay back, from the
    // end of the trace (the breakpoint: the instruction count there, hit exactly once, so the
    // search has to scan every interval in between).
    let back = ((end as f64 / fwd_s) as u64).min(end);
    tl.goto(end - back);
    let target = tl.session.cpu().icount;
    tl.goto(end);
    let t = Instant::now();
    let found = tl.search_back(&[], |cpu| cpu.icount == target);
    println!(
        "  reverse-continue to a breakpoint 1 s of replay back ({found:?}, {} steps back): {:.1} ms",
        end - tl.session.steps(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let (n, pages, tables) = tl.checkpoint_memory();
    println!(
        "  checkpoints now: {n}, {:.1} MiB of copied pages + {:.1} MiB of page tables",
        pages as f64 * 4096.0 / 1048576.0,
        tables as f64 / 1048576.0
    );
}
