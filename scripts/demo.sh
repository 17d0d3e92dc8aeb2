#!/usr/bin/env bash
# The demo of what krr does today (see README "Status"): the guest that krr will record, booted
# under QEMU as a cross-check, and krr's trace tooling on a synthetic trace.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

krr=target/release/krr
[ -x "$krr" ] || cargo build --release -p krr

if [ -x guest/build.sh ]; then
    out="$(guest/build.sh | tail -n 1)"
    step "guest: $out"
    if [ -x guest/qemu-check.sh ]; then
        step "booting the guest under QEMU (cross-check until krr's VMM lands): /bin/hello"
        guest/qemu-check.sh /bin/hello
    fi
    if "$krr" emu-coverage "$out/vmlinux" >/tmp/krr-emu-coverage.txt 2>&1; then
        step "krr-emu static coverage of the guest kernel"
        tail -n 1 /tmp/krr-emu-coverage.txt
    fi
fi

step "a synthetic trace, written by krr-trace and read back by krr dump"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run -q --release -p krr-trace --example sample_trace -- "$tmp/trace"
"$krr" dump "$tmp/trace"
"$krr" dump "$tmp/trace" --stats
