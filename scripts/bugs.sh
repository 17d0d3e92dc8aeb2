#!/usr/bin/env bash
# krr's corpus of real kernel bugs (bugs/NAME/, docs/bugs.md): for each bug, build the debug
# kernel with the bug's fix reverted (`krr guest build ... --patch bugs/NAME/revert.patch`,
# cached and incremental), compile its trigger, record the trigger until the kernel reports the
# bug (races: retried with --emu-seed values, counting tries), replay the trace on krr-emu (it must
# reach the same panic: the replay checks the console byte for byte), and run the bug's scripted
# gdb session on the replay, which goes backwards from the report to its cause. Prints a table.
#
#   scripts/bugs.sh [-o DIR] [--list] [--rate] [NAME...]      (default: every bug)
#
# --rate: record every one of a race's TRIES seeds instead of stopping at the first report, and
# print the reproduction rate (reports/TRIES) in the tries column.
#
# CI (scripts/test.sh) runs three bugs; a cold KASAN kernel takes ~10 minutes to build on 2 cores
# and each recording boots it on the emulator. Uses $KRR_BIN, else target/release/krr (or builds it).
# Traces, logs and gdb transcripts stay in DIR (default: a new directory under /tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
out="" list=0 rate=0
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        -o) out="$2"; shift 2 ;;
        --list) list=1; shift ;;
        --rate) rate=1; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "bugs.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) names+=("$1"); shift ;;
    esac
done
if [ ${#names[@]} = 0 ]; then
    while IFS= read -r d; do names+=("$(basename "$d")"); done < <(find bugs -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort)
fi
for n in "${names[@]}"; do
    [ -f "bugs/$n/bug.conf" ] || { echo "bugs.sh: no bug '$n' (bugs/$n/bug.conf is missing)" >&2; exit 2; }
done
if [ "$list" = 1 ]; then
    for n in "${names[@]}"; do
        ( . "bugs/$n/bug.conf"; printf '%-28s %-11s %s\n' "$n" "$KIND" "$ORIGIN" )
    done
    exit 0
fi
command -v gdb >/dev/null || { echo "bugs.sh: gdb is missing (scripts/setup.sh installs it)" >&2; exit 1; }
[ -n "$out" ] || out="$(mktemp -d /tmp/krr-bugs.XXXXXX)"
mkdir -p "$out"
if [ -n "${KRR_BIN:-}" ]; then krr="$KRR_BIN"; else
    [ -x target/release/krr ] || cargo build --release -p krr
    krr="$PWD/target/release/krr"
fi
echo "bugs.sh: ${#names[@]} bug(s); traces and logs in $out" >&2

rows=()
fail=0
for n in "${names[@]}"; do
    # Defaults, then the bug's own settings.
    KIND= ORIGIN= TITLE= SMP=1 TRIES=1 BUILD="--profile debug --kasan" CFLAGS="" TIMEOUT=600 GDB_EXPECT=
    # shellcheck disable=SC1090
    . "bugs/$n/bug.conf"
    d="$out/$n"
    mkdir -p "$d"
    verdict=ok tries=- size=- rec_s=- rep_s=- reverse=-
    note() { [ "$verdict" != ok ] || verdict="$1"; }

    s=$(date +%s)
    # shellcheck disable=SC2086
    if ! guest=$("$krr" guest build $BUILD --patch "bugs/$n/revert.patch" 2>"$d/build.log" | tail -n 1) || [ -z "$guest" ]; then
        note "FAIL: kernel build (see $d/build.log)"
    fi
    echo "bugs.sh: $n: kernel $guest ready after $(( $(date +%s) - s )) s" >&2
    # shellcheck disable=SC2086
    if [ "$verdict" = ok ] && ! gcc -static -O2 -Wall $CFLAGS -o "$d/trigger" "bugs/$n/trigger.c" 2>"$d/cc.log"; then
        note "FAIL: the trigger does not compile (see $d/cc.log)"
    fi

    # Record until the report appears: one try for a deterministic bug, seeds 1..TRIES for a race
    # (with --rate, every seed, counting the reports).
    trace= hits=0
    if [ "$verdict" = ok ]; then
        for seed in $(seq 1 "$TRIES"); do
            t="$d/trace-$seed"
            rm -rf "$t"
            s=$(date +%s.%N)
            set +e
            KRR_GUEST_DIR=$guest "$krr" record --accel emu --smp "$SMP" --emu-seed "$seed" --timeout "$TIMEOUT" \
                -o "$t" --add-bin "$d/trigger" -- /bin/trigger >"$t.log" 2>&1
            rc=$?
            set -e
            rec_s=$(echo "$(date +%s.%N) - $s" | bc)
            if [ "$rc" = 125 ] && grep -qF "$TITLE" "$t.log"; then
                hits=$((hits + 1))
                [ -n "$trace" ] || trace=$t tries=$seed
                [ "$rate" = 1 ] || break
                echo "bugs.sh: $n: try $seed: reported" >&2
                continue
            fi
            echo "bugs.sh: $n: try $seed: exit $rc, no \"$TITLE\"" >&2
        done
        [ "$rate" = 0 ] || tries="$hits/$TRIES"
        [ -n "$trace" ] || note "FAIL: no report in $TRIES tries (last: $t.log)"
    fi

    # Replay to the same panic (the replayer compares the console byte for byte).
    if [ -n "$trace" ]; then
        size=$(du -sk "$trace" | cut -f1)K
        s=$(date +%s.%N)
        if ! KRR_GUEST_DIR=$guest "$krr" replay "$trace" >"$trace.replay.log" 2>&1; then
            note "FAIL: replay: $(tail -n 1 "$trace.replay.log" | cut -c1-120)"
        elif ! grep -q "console matches" "$trace.replay.log"; then
            note "FAIL: the replay's console differs (see $trace.replay.log)"
        fi
        rep_s=$(echo "$(date +%s.%N) - $s" | bc)
    fi

    # Backwards from the report to its cause, in gdb on the replay.
    if [ -n "$trace" ] && [ "$verdict" = ok ]; then
        sock="$d/gdb.sock"
        rm -f "$sock"
        KRR_GUEST_DIR=$guest "$krr" replay "$trace" --gdb "$sock" >"$d/gdb-server.log" 2>&1 &
        server=$!
        for _ in $(seq 600); do [ -S "$sock" ] && break; sleep 0.1; done
        {
            printf 'set pagination off\nset confirm off\nset width 0\ntarget remote %s\n' "$sock"
            cat "bugs/$n/gdb.cmd"
        } >"$d/gdb.script"
        timeout 1800 gdb -batch -nx -iex 'set auto-load no' -x "$d/gdb.script" "$guest/vmlinux" >"$d/gdb.log" 2>&1 || true
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        if grep -qE "$GDB_EXPECT" "$d/gdb.log"; then
            reverse=ok
        else
            reverse=FAIL
            note "FAIL: the gdb check did not print /$GDB_EXPECT/ (see $d/gdb.log)"
        fi
    fi

    [ "$verdict" = ok ] || fail=1
    # Where the report says it happened (function+offset/size), as the recording's console has it.
    at=$(grep -m1 -F "$TITLE" "${trace:-/dev/null}.log" 2>/dev/null | grep -m1 -oE '[^ ]+\+0x[0-9a-f]+/0x[0-9a-f]+' || true)
    [ "$rec_s" = - ] || rec_s=$(printf '%.1f' "$rec_s")
    [ "$rep_s" = - ] || rep_s=$(printf '%.1f' "$rep_s")
    rows+=("$(printf '%-28s %-11s %5s %-52s %-42s %7s %7s %8s %8s  %s' "$n" "$KIND" "$tries" "$TITLE" "${at:--}" \
        "$reverse" "$size" "$rec_s" "$rep_s" "$verdict")")
done

printf '\n%-28s %-11s %5s %-52s %-42s %7s %7s %8s %8s  %s\n' bug kind tries "report (recorded; replayed to the same console)" \
    "at" reverse trace record_s replay_s verdict
printf '%s\n' "${rows[@]}"
exit $fail
