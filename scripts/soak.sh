#!/usr/bin/env bash
# Soak: long, heavy recordings on the emu backend, each replayed at once; prints events, ring
# flushes, record and replay seconds and the replay's peak RSS per recording, and fails if any
# recording diverges, its console differs or its workload fails. CI runs every entry with
# --quick (crates/krr/tests/soak.rs, about 10 minutes); the whole run takes about an hour
# (churn-long alone records over 10 M events). The stress-* entries run stress-ng from Debian
# (scripts/setup.sh installs it), put into the guest with --add-bin.
#
#   scripts/soak.sh [-o DIR] [--quick] [NAME...]    (NAME: run only these entries)
#
# Uses $KRR_BIN, else target/release/krr (built if missing), and the cached guest build
# (guest/build.sh). Traces and logs stay in DIR (default: a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."

out="" quick=0 only=()
while [ $# -gt 0 ]; do
    case "$1" in
        -o) out="$2"; shift 2 ;;
        --quick) quick=1; shift ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
        *) only+=("$1"); shift ;;
    esac
done
[ -n "$out" ] || out="$(mktemp -d /tmp/krr-soak.XXXXXX)"
mkdir -p "$out"
if [ -n "${KRR_BIN:-}" ]; then
    krr="$KRR_BIN"
else
    [ -x target/release/krr ] || cargo build --release -p krr
    krr="$PWD/target/release/krr"
fi
KRR_GUEST_DIR="$(guest/build.sh | tail -n 1)"
export KRR_GUEST_DIR

# Rounds per loop, and stress-ng's run time in guest seconds (on emu a guest second is 10^9
# instructions, about a minute of the host): --quick keeps each recording to a minute or two of
# the 2-core machine.
# stress-ng --mmap maps 256 MiB per round by default: 32 MiB with --quick.
if [ "$quick" = 1 ]; then n=3 st=1 mmb="--mmap-bytes 32M"; else n=30 st=8 mmb=""; fi
sng="--timeout 900 --mem 512M --add-bin stress-ng"

# name | krr record options | guest command (run by /bin/sh -c)
entries=(
    "procwalk|--timeout 900|find /proc -maxdepth 2 ! -name kmsg ! -name kcore ! -name pagemap -type f | xargs cat >/dev/null 2>&1; echo walked"
    "ptebits-loop|--timeout 900|for i in \$(seq $n); do /bin/ptebits >/dev/null || exit 1; done; echo ptebits ok"
    "churn|--timeout 900 --ring 256K|for i in \$(seq $n); do /bin/mmap >/dev/null && /bin/forkexec >/dev/null && /bin/signals >/dev/null || exit 1; done; echo churn ok"
    "pressure|--timeout 900 --mem 96M|for i in \$(seq $n); do dd if=/dev/zero of=/tmp/f bs=1M count=40 2>/dev/null && /bin/mmap >/dev/null && rm /tmp/f || exit 1; done; echo pressure ok"
    "smp2-munmap|--timeout 900 --smp 2|for i in \$(seq $n); do /bin/smp-munmap >/dev/null || exit 1; done; echo munmap ok"
    "smp4-mix|--timeout 900 --smp 4 --ring 64M|for i in \$(seq $n); do /bin/smp-mix >/dev/null || exit 1; done; echo mix ok"
    "oom|--timeout 900 --mem 64M|for i in \$(seq $n); do /bin/oom >/dev/null || exit 1; done; echo oom ok"
    "stress-mmap|$sng|stress-ng --mmap 1 $mmb -t $st --metrics-brief"
    "stress-madvise|$sng|stress-ng --madvise 1 -t $st --metrics-brief"
    "stress-clone|$sng|stress-ng --clone 1 -t $st --metrics-brief"
    "stress-thread|$sng|stress-ng --pthread 1 -t $st --metrics-brief"
    "churn-long|--timeout 3600 --ring 256K|for i in \$(seq $((9 * n))); do /bin/mmap >/dev/null && /bin/forkexec >/dev/null && /bin/signals >/dev/null || exit 1; done; echo churn ok"
)

printf '%-14s %6s %9s %8s %9s %9s %8s %9s %7s %9s  %s\n' name exit events flushes record_s replay_s rss_MiB \
    events/s ring_MB/s stall_ms verdict
fail=0
for e in "${entries[@]}"; do
    IFS='|' read -r name opts cmd <<<"$e"
    if [ ${#only[@]} -gt 0 ] && ! printf '%s\n' "${only[@]}" | grep -qx "$name"; then continue; fi
    t="$out/$name"
    rm -rf "$t"
    s=$(date +%s.%N)
    set +e
    # shellcheck disable=SC2086 # $opts holds several options
    "$krr" record --accel emu --quiet -o "$t" $opts -- /bin/sh -c "$cmd" >"$t.record.log" 2>&1
    rc=$?
    set -e
    rec_s=$(echo "$(date +%s.%N) - $s" | bc)
    events=$(grep -o 'emu): [0-9]* events' "$t.record.log" | grep -o '[0-9]*' | head -n 1)
    flushes=$(grep -o '[0-9]* ring flushes' "$t.record.log" | grep -o '^[0-9]*' | head -n 1)
    # "throughput N events/s, M MB/s of ring records (...); ring flushes stalled the guest S ms in all"
    tput=$(grep -m1 '^krr record: throughput' "$t.record.log" || true)
    evs=$(sed -n 's/.*throughput \([0-9]*\) events\/s.*/\1/p' <<<"$tput")
    mbs=$(sed -n 's/.* \([0-9.]*\) MB\/s of ring.*/\1/p' <<<"$tput")
    stall=$(sed -n 's/.*stalled the guest \([0-9.]*\) ms in all.*/\1/p' <<<"$tput")
    s=$(date +%s.%N)
    set +e
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%M' -o "$t.rss" "$krr" replay "$t" >"$t.replay.log" 2>&1
    else
        "$krr" replay "$t" >"$t.replay.log" 2>&1
    fi
    rrc=$?
    set -e
    rep_s=$(echo "$(date +%s.%N) - $s" | bc)
    rss="?"
    [ -s "$t.rss" ] && rss=$(( $(tail -n 1 "$t.rss") / 1024 ))
    verdict=ok
    if [ "$rc" != 0 ]; then verdict="workload exit $rc (see $t.record.log)"; fail=1; fi
    if [ "$rrc" != 0 ]; then verdict="replay exit $rrc: $(grep -m1 -e diverged -e 'krr:' "$t.replay.log" | cut -c1-120)"; fail=1; fi
    printf '%-14s %6s %9s %8s %9.1f %9.1f %8s %9s %7s %9s  %s\n' "$name" "$rc" "${events:-?}" "${flushes:-?}" \
        "$rec_s" "$rep_s" "$rss" "${evs:-?}" "${mbs:-?}" "${stall:-?}" "$verdict"
done
echo "soak: traces and logs in $out"
exit "$fail"
