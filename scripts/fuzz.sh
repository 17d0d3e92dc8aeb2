#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 60):  scripts/fuzz.sh [SECONDS] [TARGET...]
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
shift || true
if ! command -v cargo-fuzz >/dev/null; then
    echo "fuzz.sh: cargo-fuzz is not installed (scripts/setup.sh installs it)" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
for t in "${targets[@]}"; do
    echo "fuzzing $t for ${secs}s"
    mkdir -p "corpus/$t"
    log="$(mktemp)"
    rc=0
    # seeds/TARGET (in git, where a target has some): inputs that reach deep into its parser.
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    cargo fuzz run "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -max_len=65536 >"$log" 2>&1 || rc=$?
    # libFuzzer's closing line states how many inputs ran.
    grep -E '^Done [0-9]+ runs' "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $t failed (exit $rc); any failing input is in fuzz/artifacts/$t" >&2
        exit 1
    fi
    rm -f "$log"
done
