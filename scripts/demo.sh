#!/usr/bin/env bash
# The demo (README "Quick start"): what this host offers, a recording of a workload and what is in
# it, a snapshot of the booted guest resumed with a workload, and last a Linux guest booting under
# krr's VMM and running /bin/hello (the demo's exit status is the workload's).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

krr=target/release/krr
cargo build --release --quiet -p krr   # up to date (a stale binary would not match the guest)

step "krr doctor: what this host offers"
"$krr" doctor

step "krr guest build (cached)"
"$krr" guest build | tail -n 1

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
step "krr run --accel emu --save-snapshot: boot once, save the VM where init asks for its command"
"$krr" run --quiet --accel emu --save-snapshot "$tmp/init.snap"
step "krr run --from-snapshot ... -- /bin/forkexec   (no boot)"
"$krr" run --quiet --from-snapshot "$tmp/init.snap" -- /bin/forkexec

step "krr record -o TRACE -- /bin/forkexec   (boot, record every input the guest kernel receives)"
"$krr" record --quiet -o "$tmp/trace" -- /bin/forkexec
step "krr dump TRACE --stats; krr dump TRACE 0-12"
"$krr" dump "$tmp/trace" --stats
"$krr" dump "$tmp/trace" 0-12
step "krr replay TRACE   (the kernel re-executed on krr's emulator, every event checked)"
"$krr" replay "$tmp/trace"

step "krr record --smp 2 -- /bin/smp-pipes; krr replay   (two vCPUs under the kernel lock, docs/multicore.md)"
"$krr" record --quiet --smp 2 -o "$tmp/trace-smp" -- /bin/smp-pipes
"$krr" dump "$tmp/trace-smp" --stats | tail -3
"$krr" replay "$tmp/trace-smp"

step "krr run -- /bin/hello   (boots Linux 6.1 on the backend krr doctor chose)"
"$krr" run -- /bin/hello
