#!/usr/bin/env bash
# The whole nested-KVM suite of issue 15 (not in CI: about ten minutes, 570 s in session 7): every one-vCPU
# workload, the six multi-core ones at two vCPUs, smp-mix at four, and 20 recordings of smp-mix
# at two and four vCPUs, each recorded with `krr record --accel kvm` on the real KVM inside the
# nested harness (scripts/nested-kvm.sh) and replayed here. scripts/test.sh runs a bounded list.
set -euo pipefail
cd "$(dirname "$0")/.."
KRR_GUEST_DIR="$(guest/build.sh | tail -n 1)"
export KRR_GUEST_DIR KRR_NESTED_SUITE=full
cargo test --release -p krr --test nested -- --ignored --nocapture
