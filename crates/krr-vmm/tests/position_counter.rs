//! The default guest kernel counts positions with the krr_pos plugin's inline increments
//! (guest/patches/0003): a profiled run finds them executed, never the trace-pc callback, and
//! at a rate of a few per hundred kernel instructions. Needs the built guest (`$KRR_GUEST_DIR` or
//! `guest/build.sh --print-dir`), as the end-to-end tests do.

use krr_vmm::bench_support::{guest_dir, run_ok, workload_config};

#[test]
fn the_default_kernel_counts_positions_inline() {
    let dir = guest_dir();
    let p = run_ok(&workload_config(&dir, "hello", None, true)).profile.expect("a profiled run");
    assert_eq!(p.trace_pc_calls, 0, "the default kernel never calls the trace-pc callback");
    assert!(p.inline_increments > 20_000, "inline increments executed: {}", p.inline_increments);
    let rate = p.increments() as f64 / p.kernel as f64;
    assert!(
        (0.01..0.08).contains(&rate),
        "increments per kernel instruction {rate:.4} (function entries and loop heads: about 0.05)"
    );
    assert_eq!(p.position_counter_cost(), p.inline_increments, "one incq each");
}
