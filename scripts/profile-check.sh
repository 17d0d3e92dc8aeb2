#!/usr/bin/env bash
# Every workload on another guest profile: builds it (`krr guest build ARGS`, cached), then records
# each workload of guest/workloads on the emu backend (the smp-* ones at --smp 2; `panic` must end
# in a kernel panic, exit 125) and replays it, printing one line per workload and failing if any
# recording fails or its replay diverges. Not part of the default CI: a debug build takes ~10-25
# minutes on 2 cores (KASAN and lockdep more) and its recordings ~10 minutes.
#
#   scripts/profile-check.sh [-o DIR] [--only NAME,...] -- --profile debug [--kasan] [--lockdep] [--preempt full]
#
# Uses $KRR_BIN, else target/release/krr (built if missing). Traces and logs stay in DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
out="" only=""
while [ $# -gt 0 ]; do
    case "$1" in
        -o) out="$2"; shift 2 ;;
        --only) only=",$2,"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "profile-check.sh: unknown option $1 (guest build options go after --)" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "profile-check.sh: give the guest build options after --, e.g. -- --profile debug --kasan" >&2; exit 2; }
[ -n "$out" ] || out="$(mktemp -d /tmp/krr-profile.XXXXXX)"
mkdir -p "$out"
if [ -n "${KRR_BIN:-}" ]; then krr="$KRR_BIN"; else
    [ -x target/release/krr ] || cargo build --release -p krr
    krr="$PWD/target/release/krr"
fi
s=$(date +%s)
guest=$("$krr" guest build "$@" | tail -n 1)
echo "profile-check: guest $guest ($*), ready after $(( $(date +%s) - s )) s; traces in $out" >&2
export KRR_GUEST_DIR=$guest
read -r -a workloads <<<"$(sed -n 's/^workloads=//p' "$guest/manifest")"

printf '%-14s %5s %8s %9s %9s  %s\n' workload exit events record_s replay_s verdict
fail=0
for w in "${workloads[@]}"; do
    [ -z "$only" ] || [[ $only == *",$w,"* ]] || continue
    opts=(--accel emu --quiet --timeout 1800)
    want=0
    # oom: small, so the OOM killer comes soon, but room for a KASAN kernel's shadow memory.
    case $w in smp-*) opts+=(--smp 2) ;; oom) opts+=(--mem 128M) ;; panic) want=125 ;; esac
    t="$out/$w"
    rm -rf "$t"
    s=$(date +%s.%N)
    set +e
    "$krr" record "${opts[@]}" -o "$t" -- "/bin/$w" >"$t.record.log" 2>&1
    rc=$?
    set -e
    rec_s=$(echo "$(date +%s.%N) - $s" | bc)
    events=$(grep -o 'emu): [0-9]* events' "$t.record.log" | grep -o '[0-9]*' | head -n 1 || true)
    verdict=ok
    rep_s=-
    if [ "$rc" != "$want" ]; then
        verdict="FAIL: record exited $rc (want $want), see $t.record.log"
    else
        s=$(date +%s.%N)
        if "$krr" replay "$t" >"$t.replay.log" 2>&1; then
            rep_s=$(echo "$(date +%s.%N) - $s" | bc)
        else
            rep_s=$(echo "$(date +%s.%N) - $s" | bc)
            verdict="FAIL: replay: $(tail -n 1 "$t.replay.log" | cut -c1-160)"
        fi
    fi
    [ "$verdict" = ok ] || fail=1
    printf '%-14s %5s %8s %9.1f %9.1f  %s\n' "$w" "$rc" "${events:-?}" "$rec_s" "${rep_s/-/0}" "$verdict"
done
exit $fail
