#!/usr/bin/env bash
# The project's test command (README "Quick start"; CI runs it through .ci/run):
# format, lints, every crate's tests, the KVM differential tests where /dev/kvm exists, kvm
# recordings on a real KVM inside QEMU (the nested harness, a bounded list; scripts/nested-suite.sh
# runs the whole one), an installed krr run from another directory (scripts/install-check.sh),
# the soak suite with --quick (scripts/soak.sh runs the whole one), three bugs of the bug corpus
# (scripts/bugs.sh runs all of them), and a bounded fuzz run of every fuzz target where cargo-fuzz
# is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "guest kernel and initramfs (cached; the end-to-end tests boot them)"
KRR_GUEST_DIR="$(guest/build.sh | tail -n 1)"
export KRR_GUEST_DIR

step "cargo test"
cargo test --workspace

if [ "$(id -u)" = 0 ]; then
    step "recording onto a full disk (mounts a small tmpfs: root only)"
    cargo test -p krr --test record -- --ignored a_full_disk
else
    echo "note: not root: the full-disk recording test did not run"
fi

if [ -e /dev/kvm ]; then
    step "differential tests against the CPU through KVM"
    cargo test --release -p krr-difftest -- --ignored
    step "kvm backend: boot, snapshot, restore (minutes on hosts whose KVM emulates ring 0)"
    cargo test --release -p krr --test kvm -- --ignored
else
    echo "note: /dev/kvm is missing: the KVM differential and kvm-backend tests did not run"
fi

if command -v qemu-system-x86_64 >/dev/null; then
    step "kvm backend on a real KVM: the nested-KVM harness (QEMU TCG, kvm_amd inside), CI list"
    cargo test --release -p krr --test nested -- --ignored --nocapture
else
    echo "note: qemu-system-x86_64 is missing: the nested-KVM recordings did not run (scripts/setup.sh installs it)"
fi

step "an installed krr: cargo install into a temporary root, run from another directory"
scripts/install-check.sh

step "soak, bounded: every scripts/soak.sh entry with --quick (long emu recordings, each replayed)"
cargo test --release -p krr --test soak -- --ignored --test-threads 1

# A deterministic use-after-free and two of the races; the rest of bugs/ takes ~1.5 min a bug more
# (a cold debug+KASAN kernel build adds ~10 min to the first).
ci_bugs="${KRR_CI_BUGS:-cgroup-fsconfig-source gsm-cleanup-race mq-notify-retry}"
step "bug corpus, bounded: $ci_bugs (scripts/bugs.sh runs the whole corpus)"
bugs_out="$(mktemp -d /tmp/krr-ci-bugs.XXXXXX)"
# shellcheck disable=SC2086
scripts/bugs.sh -o "$bugs_out" $ci_bugs
rm -rf "$bugs_out"

step "fuzzing (bounded)"
scripts/fuzz.sh "${KRR_FUZZ_SECONDS:-60}"
