#!/usr/bin/env bash
# krr's benchmark against QEMU record/replay (docs/performance.md): builds krr (release) and the
# guest (cached), then runs `krr bench` with the given options.
#
#   scripts/bench.sh                      5 workloads x 3 repetitions (about 13 minutes here)
#   scripts/bench.sh --quick              smoke run: forkexec and futex, once each (about 2 minutes)
#   scripts/bench.sh --reps 5 --json F    more repetitions; every sample, median and ratio as JSON
#   scripts/bench.sh --no-qemu            krr only
#   scripts/bench.sh --smp 1,2,4          at each vCPU count (QEMU rows at one vCPU only)
#   krr bench --accel kvm --smp 1,2,4     on hardware virtualization (in the nested harness:
#                                         docs/performance.md); no QEMU, no instruction counts
#
# `krr bench --help` lists every option. It prints tables on stdout, progress on stderr, and exits
# 1 if any run failed (a workload that did not exit 0, a replay that diverged, a QEMU replay that
# did not complete or whose console differs from the recording's).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h|--help) sed -n '2,16p' "$0"; exit 0 ;; esac

cargo build --release -q -p krr
krr=${CARGO_TARGET_DIR:-target}/release/krr
if [ -z "${KRR_GUEST_DIR:-}" ]; then
    guest/build.sh >&2
    KRR_GUEST_DIR=$(guest/build.sh --print-dir)
    export KRR_GUEST_DIR
fi
exec "$krr" bench "$@"
