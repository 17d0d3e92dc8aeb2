#!/usr/bin/env bash
# Boot the cached krr guest (guest/build.sh) under QEMU TCG and run one command in it: a
# cross-check for krr's own VMM. Exits with the workload's exit status.
set -euo pipefail
{
GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() {
    cat <<'EOF'
Usage: guest/qemu-check.sh [options] [--] [CMD ARGS...]

Boots the guest built by guest/build.sh (bzImage + initramfs.cpio) under QEMU TCG with the
isa-debug-exit device on port 0xf4 and runs CMD ARGS in it (default: an interactive /bin/sh).
Exits with the workload's exit status (decoded from QEMU's (status<<1)|1 and checked against the
`krr-init: exit status N` console line), or:
  125  the guest kernel panicked (one line quoting the panic is printed)
  124  timeout
  126  QEMU ended without an exit status
Installs qemu-system-x86 from Debian when missing (needs root).

Options:
  --smp N         guest CPUs (default 1)
  --mem SIZE      guest RAM (default 256M)
  --timeout S     kill QEMU after S seconds (default 300)
  --argv-b64      pass the command as krr.argv=<base64> instead of after ` -- `
  --append TEXT   extra kernel command-line text (before the command)
  --dir DIR       guest build directory (default: guest/build.sh --print-dir)
  --quiet         echo only the workload's output, not the kernel's messages (the whole
                  console is still saved to the log file named at the end)
  -h, --help      this help
EOF
}

SMP=1 MEM=256M TIMEOUT=300 B64=0 EXTRA="" DIR="" QUIET=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --smp) SMP=$2; shift 2 ;;
        --mem) MEM=$2; shift 2 ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        --argv-b64) B64=1; shift ;;
        --append) EXTRA=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --quiet) QUIET=1; shift ;;
        --) shift; break ;;
        -*) echo "qemu-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done

if ! command -v qemu-system-x86_64 >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "qemu-check: qemu-system-x86_64 not found; install it: sudo apt-get install --no-install-recommends qemu-system-x86" >&2
        exit 2
    fi
    echo "qemu-check: installing qemu-system-x86" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >&2 \
        || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 >&2; }
fi

if [ -z "$DIR" ]; then
    DIR=$("$GUEST_DIR/build.sh" --print-dir 2>/dev/null) || {
        echo "qemu-check: the guest for the current inputs is not built; run guest/build.sh first${DIR:+ (expected $DIR)}" >&2
        exit 2
    }
fi
for f in bzImage initramfs.cpio done; do
    [ -f "$DIR/$f" ] || { echo "qemu-check: $DIR/$f missing (incomplete guest build)" >&2; exit 2; }
done

# (-smp: one core per socket, because SeaBIOS's MP table lists only the first CPU of a
# multi-core socket, and the guest has no ACPI: with QEMU's default topology Linux sees 1 CPU.)
# The kernel command line krr recommends (guest/README.md), plus QEMU's reboot-on-panic so that
# a panic ends QEMU (-no-reboot) instead of hanging.
CMDLINE="console=ttyS0 earlyprintk=serial,ttyS0,115200 nokaslr panic=-1 ${EXTRA}"
if [ $# -gt 0 ]; then
    need_b64=$B64
    for a in "$@"; do
        case "$a" in ''|*'"'*|*$'\n'*|*$'\t'*|--) need_b64=1 ;; esac
    done
    [ $# -le 30 ] || need_b64=1
    if [ "$need_b64" = 1 ]; then
        CMDLINE+=" krr.argv=$(printf '%s\0' "$@" | base64 -w0)"
    else
        CMDLINE+=" --"
        for a in "$@"; do
            case "$a" in *' '*) CMDLINE+=" \"$a\"" ;; *) CMDLINE+=" $a" ;; esac
        done
    fi
fi

LOG=$(mktemp /tmp/krr-qemu-check.XXXXXX.log)
[ "$QUIET" = 1 ] || echo "qemu-check: $DIR, -smp $SMP, cmdline: $CMDLINE" >&2
T0=$(date +%s.%N)
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -accel tcg -m "$MEM" -smp "$SMP,sockets=$SMP,cores=1,threads=1" -nographic -no-reboot -serial stdio -monitor none \
    -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
    -kernel "$DIR/bzImage" -initrd "$DIR/initramfs.cpio" -append "$CMDLINE" < /dev/null 2>&1 |
    while IFS= read -r line; do
        line=${line%$'\r'}
        case "$line" in *"Run /init as init process"*) echo "__RUN_INIT_WALL $(date +%s.%N)" >> "$LOG.t" ;; esac
        printf '%s\n' "$line" >> "$LOG"
        if [ "$QUIET" = 0 ]; then
            printf '%s\n' "$line"
        elif [ -f "$LOG.t" ] && ! [[ $line =~ ^\[\ *[0-9]+\.[0-9]+\] ]]; then
            printf '%s\n' "$line" # --quiet: the workload's output only, no kernel messages
        fi
    done
rc=${PIPESTATUS[0]}
set -e
T1=$(date +%s.%N)

wall=$(awk -v a="$T0" -v b="$T1" 'BEGIN{printf "%.2f", b-a}')
run_init_wall=""
if [ -f "$LOG.t" ]; then
    run_init_wall=$(awk -v a="$T0" '{printf "%.2f", $2-a; exit}' "$LOG.t")
    rm -f "$LOG.t"
fi
run_init_guest=$(grep -m1 'Run /init as init process' "$LOG" | sed -n 's/^\[ *\([0-9.]*\)\].*/\1/p')
status_line=$(grep -a -m1 '^krr-init: exit status ' "$LOG" || true)
panic_line=$(grep -a -m1 'Kernel panic - not syncing' "$LOG" || true)
echo "qemu-check: wall ${wall}s; Run /init at ${run_init_wall:-?}s wall, ${run_init_guest:-?}s guest time; QEMU rc=$rc; console log $LOG" >&2

if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "qemu-check: timeout after ${TIMEOUT}s" >&2
    exit 124
fi
if [ -n "$panic_line" ]; then
    echo "qemu-check: guest kernel panic: ${panic_line#*\] }" >&2
    exit 125
fi
if [ -n "$status_line" ]; then
    status=${status_line##* }
    if [ $(( ((status << 1) | 1) & 255 )) != "$rc" ]; then
        echo "qemu-check: WARNING: console says exit status $status but QEMU's isa-debug-exit gave rc $rc" >&2
    fi
    exit "$status"
fi
if [ $((rc & 1)) = 1 ]; then
    # isa-debug-exit without a status line: decode (status<<1)|1 (ambiguous above 127).
    exit $(( (rc - 1) / 2 ))
fi
echo "qemu-check: QEMU ended (rc $rc) without an exit status from the guest" >&2
exit 126
}
