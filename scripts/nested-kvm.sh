#!/usr/bin/env bash
# The nested-KVM harness: run krr commands on a real KVM (AMD SVM with nested paging) inside a
# Linux "L1" VM that QEMU's TCG emulates with `-cpu max`, and bring their traces and logs back.
# This project's own /dev/kvm cannot run a guest's user space (docs/nested-kvm.md says why and
# what was measured); the KVM that Debian's distribution kernel builds (kvm_amd) inside TCG can.
#
#   scripts/nested-kvm.sh --prepare                  install QEMU and the L1 kernel (cached), exit
#   scripts/nested-kvm.sh -o OUT [options] COMMANDS  run each line of COMMANDS in L1
#
# COMMANDS: one krr invocation per line, `NAME ARGS...` (blank lines and # comments skipped);
# ARGS are split as a shell would (quotes group words). `@TRACE` in ARGS stands for the
# directory OUT/NAME, brought back; `@SHARE` for a directory in L1 that every later command
# sees and that is not brought back (a saved VM to record from, say). ARGS may start with
# `signal=SIG`: krr then gets SIG (INT, TERM, KILL) once OUT/NAME holds a start snapshot and
# 4 KiB of events, as a user's Ctrl-C or kill would come in the middle of a recording. Example:
#     hello   record -o @TRACE --accel kvm --timeout 120 -- /bin/hello
#     doctor  doctor
#     stop    signal=INT record -o @TRACE --accel kvm -- /bin/sh -c 'while :; do /bin/hello; done'
# For each line, OUT/NAME/ holds what it wrote (a trace) and OUT/NAME.log its stdout and stderr;
# OUT/results.tsv has NAME, exit status and seconds per line; OUT/console.log the L1 console.
# Replay the traces on this host (krr-emu is itself emulated in L1): `krr replay OUT/NAME`.
#
# Options:
#   -o DIR            output directory (must not exist or be empty)
#   --smp N           L1 CPUs (default 4: more than the guest's vCPUs, so vCPU threads run in
#                     parallel; see docs/nested-kvm.md)
#   --mem SIZE        L1 memory (default 4G)
#   --command-timeout S
#                     kill one command inside L1 after S seconds (default 300)
#   --deadline S      kill L1 after S seconds in all (default: 120 + the command timeouts); what
#                     the finished commands wrote is kept
#   --tcg-threads single|multi
#                     QEMU's TCG: one host thread per L1 CPU (multi, the default) or one for
#                     all (single: slower, and L2 guests then stall in timer calibration)
#   --stall S         take L1 for stopped when it has printed nothing, not even its 5-second
#                     heartbeat, for S seconds (default 60)
#   --no-kvm-hold     do not hold a KVM VM in L1 for the session (for measuring what the hold
#                     is for: L1 patching its own code each time a VM comes and goes)
#   --krr PATH        the krr binary to run in L1 (default target/release/krr)
#   --keep            keep the L1 initramfs and disk image in OUT
#
# Exit status: 0 when L1 ran every command (whatever their own statuses, which results.tsv has),
# 1 when L1 did not finish (deadline, crash) or a step failed, 2 for bad arguments. Every failure
# is one line saying what the harness saw.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CACHE=${KRR_CACHE_DIR:-$HOME/.cache/krr}/nested
SMP=4
MEM=4G
CMD_TIMEOUT=300
DEADLINE=
STALL=60
HOLD=1
TCG_THREADS=multi
OUT=
KRR=$ROOT/target/release/krr
KEEP=0
PREPARE=0
COMMANDS=
SLOT_MIB=512

die() { echo "nested-kvm: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
t0=$(date +%s.%N)
elapsed() { awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }'; }
step() { printf 'nested-kvm: [%6ss] %s\n' "$(elapsed)" "$*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --prepare) PREPARE=1 ;;
        -o) OUT=${2:?-o needs a directory}; shift ;;
        --smp) SMP=${2:?}; shift ;;
        --mem) MEM=${2:?}; shift ;;
        --command-timeout) CMD_TIMEOUT=${2:?}; shift ;;
        --deadline) DEADLINE=${2:?}; shift ;;
        --stall) STALL=${2:?}; shift ;;
        --no-kvm-hold) HOLD=0 ;;
        --tcg-threads) TCG_THREADS=${2:?}; shift ;;
        --krr) KRR=${2:?}; shift ;;
        --keep) KEEP=1 ;;
        --) shift; COMMANDS=${1:-}; break ;;
        -*) echo "nested-kvm: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) COMMANDS=$1 ;;
    esac
    shift
done

case $TCG_THREADS in single|multi) ;; *) echo "nested-kvm: --tcg-threads $TCG_THREADS: single or multi" >&2; exit 2 ;; esac

# --- The L1 kernel: Debian's distribution kernel, unpacked from its package (cached). ---------
l1_kernel() {
    local pkg ver dir
    if ! command -v qemu-system-x86_64 >/dev/null; then
        [ "$(id -u)" = 0 ] || die "qemu-system-x86_64 is missing: install qemu-system-x86 (needs root)"
        step "installing qemu-system-x86"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null \
            || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null; } \
            || die "cannot install qemu-system-x86"
    fi
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    fi
    if [ -z "$pkg" ]; then
        # Offline: use what is cached.
        dir=$(ls -d "$CACHE"/linux-image-*/ 2>/dev/null | tail -n 1)
        [ -n "$dir" ] || die "cannot find Debian's linux-image-amd64 (apt-cache depends gave nothing) and nothing is cached in $CACHE"
        echo "${dir%/}"
        return
    fi
    dir=$CACHE/$pkg
    if [ ! -f "$dir/done" ]; then
        step "fetching the L1 kernel ($pkg)"
        rm -rf "$dir" && mkdir -p "$dir/deb"
        (cd "$dir/deb" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
        dpkg -x "$dir"/deb/*.deb "$dir/root" || die "dpkg -x of $pkg failed"
        rm -rf "$dir/deb"
        ls "$dir"/root/boot/vmlinuz-* >/dev/null 2>&1 || die "$pkg has no /boot/vmlinuz"
        touch "$dir/done"
    fi
    echo "$dir"
}

KDIR=$(l1_kernel)
VMLINUZ=$(ls "$KDIR"/root/boot/vmlinuz-* | head -n 1)
KVER=$(basename "$VMLINUZ" | sed 's/^vmlinuz-//')
MODS=$KDIR/root/lib/modules/$KVER/kernel
if [ "$PREPARE" = 1 ]; then
    step "L1 kernel $KVER ready in $KDIR"
    exit 0
fi

[ -n "$OUT" ] || { echo "nested-kvm: -o DIR is required (see --help)" >&2; exit 2; }
[ -n "$COMMANDS" ] || { echo "nested-kvm: no COMMANDS file (see --help)" >&2; exit 2; }
[ -f "$COMMANDS" ] || { echo "nested-kvm: $COMMANDS: no such file" >&2; exit 2; }
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT")" ]; then
    echo "nested-kvm: $OUT exists and is not empty" >&2; exit 2
fi
[ -x "$KRR" ] || die "$KRR is not built (cargo build --release)"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 \
    || die "a static $BUSYBOX is missing (guest/build.sh installs busybox-static)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

GUEST=${KRR_GUEST_DIR:-$(guest/build.sh --print-dir)} || die "the krr guest is not built: run guest/build.sh"
[ -f "$GUEST/vmlinux" ] && [ -f "$GUEST/initramfs.cpio" ] || die "$GUEST has no vmlinux/initramfs.cpio"

# The commands, checked and numbered (each gets a slot of the output disk).
names=()
: > "$OUT/commands"
while IFS= read -r line || [ -n "$line" ]; do
    line=${line%%#*}
    [ -n "${line// /}" ] || continue
    name=${line%% *}
    args=${line#"$name"}
    [[ $name =~ ^[A-Za-z0-9._-]+$ ]] || die "$COMMANDS: bad command name '$name'"
    for n in "${names[@]}"; do [ "$n" != "$name" ] || die "$COMMANDS: '$name' twice"; done
    names+=("$name")
    args=${args//@TRACE//out/$name}
    printf '%s %s\n' "$name" "${args//@SHARE//share}" >> "$OUT/commands"
done < "$COMMANDS"
[ ${#names[@]} -gt 0 ] || die "$COMMANDS has no commands"
[ -n "$DEADLINE" ] || DEADLINE=$((120 + ${#names[@]} * CMD_TIMEOUT))

# --- The L1 initramfs: busybox, the modules, krr, the guest build, the commands. ---------------
step "building the L1 initramfs (krr, guest $(basename "$GUEST"), ${#names[@]} commands)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/krr-nested.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/root
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,out,share,guest,modules,lib64,lib/x86_64-linux-gnu}
cp "$BUSYBOX" "$R/bin/busybox"
for m in virt/lib/irqbypass arch/x86/kvm/kvm drivers/crypto/ccp/ccp arch/x86/kvm/kvm-amd \
         drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/block/virtio_blk; do
    f=$(ls "$MODS/$m".ko* 2>/dev/null | head -n 1)
    [ -n "$f" ] || die "module $m is not in $KDIR"
    case "$f" in
        *.xz) xz -dc "$f" > "$R/modules/$(basename "$m").ko" ;;
        *) cp "$f" "$R/modules/$(basename "$m").ko" ;;
    esac
done
objcopy --strip-debug "$KRR" "$R/bin/krr"
for lib in $(ldd "$KRR" | awk '/=> \//{print $3} /^[ \t]*\/lib64/{print $1}'); do
    cp -L "$lib" "$R$lib"
done
cp "$GUEST/vmlinux" "$GUEST/initramfs.cpio" "$R/guest/"
cp "$OUT/commands" "$R/commands"
SLOTS=${#names[@]}
cat > "$R/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin KRR_GUEST_DIR=/guest HOME=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "nested-l1: [\$(up)] \$*" > /dev/ttyS0; }
say "L1 up: \$(uname -r), \$(grep -c ^processor /proc/cpuinfo) CPUs"
for m in irqbypass kvm ccp kvm-amd virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /modules/\$m.ko 2> /tmp/insmod.err || { say "FAILED: insmod \$m: \$(cat /tmp/insmod.err)"; poweroff -f; }
done
[ -c /dev/kvm ] || { say "FAILED: no /dev/kvm after loading kvm-amd: \$(dmesg | grep -i -e kvm -e svm | tail -n 3)"; poweroff -f; }
i=0
for w in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 1; done
[ -b /dev/vda ] || { say "FAILED: no /dev/vda (the output disk)"; poweroff -f; }
say "kvm ready: \$(dmesg | grep -o -e 'Nested Virtualization enabled' -e 'Nested Paging enabled' | tr '\n' ' ')"
# KVM flips a static key in L1 each time a VM comes and goes, and L1 patches its text with INT3
# for it; QEMU's TCG can go on running the stale INT3 (L1 then loops in its INT3 handler with
# interrupts off). A VM held for the whole session keeps the key still (docs/nested-kvm.md).
if [ $HOLD = 1 ]; then
    /bin/krr doctor --hold-kvm > /tmp/hold.log 2>&1 < /dev/null &
    sleep 1
    say "kvm hold: \$(kill -0 \$! 2>/dev/null && echo holding || echo "not holding: \$(cat /tmp/hold.log)")"
fi
# L1's symbols, in the last slot: the harness names the functions L1's CPUs are in at a hang.
cat /proc/kallsyms | grep -e ' [tT] ' > /tmp/l1-kallsyms
# A heartbeat every 5 s: the harness takes a minute without one for L1 having stopped.
(while sleep 5; do echo "nested-l1-alive \$(up)" > /dev/ttyS0; done) &
tar cf - -C /tmp l1-kallsyms | dd of=/dev/vda bs=1M seek=\$(($SLOTS * $SLOT_MIB)) conv=notrunc 2>/dev/null
sync
while read -r name args; do
    say "run \$name: krr \$args"
    t=\$(up)
    eval set -- \$args
    sig=
    case \$1 in signal=*) sig=\${1#signal=}; shift ;; esac
    timeout -s KILL $CMD_TIMEOUT /bin/krr "\$@" > /out/\$name.log 2>&1 < /dev/null &
    pid=\$!
    # (busybox's timeout execs krr in its own process: \$pid is krr's.)
    while [ -n "\$sig" ] && kill -0 \$pid 2>/dev/null; do
        n=\$(stat -c %s /out/\$name/events 2>/dev/null || echo 0)
        if [ -f /out/\$name/snapshot ] && [ "\$n" -gt 4096 ]; then
            say "signal \$name: SIG\$sig to krr (\$n bytes of events written)"
            kill -\$sig \$pid
            break
        fi
        sleep 1
    done
    wait \$pid
    rc=\$?
    echo "\$name	\$rc	\$(awk -v a=\$(up) -v b=\$t 'BEGIN { printf "%.1f", a - b }')" > /out/\$name.result
    say "done \$name: exit \$rc"
    # Each command's results go to its own slot of the disk at once: a hang later loses nothing.
    tar cf - -C /out \$name.log \$name.result \$( [ -d /out/\$name ] && echo \$name ) \
        | dd of=/dev/vda bs=1M seek=\$((i * $SLOT_MIB)) conv=notrunc 2>/dev/null
    sync
    rm -rf /out/\$name
    i=\$((i + 1))
done < /commands
say "all commands ran"
poweroff -f
EOF
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet) > "$WORK/l1.cpio"
truncate -s $(((SLOTS + 1) * SLOT_MIB))M "$WORK/out.img"
step "L1 initramfs $(du -m "$WORK/l1.cpio" | cut -f1) MiB"

# --- Boot L1 under TCG, with a watchdog. -------------------------------------------------------
# What L1's CPUs were doing (QEMU's monitor: each CPU's registers, twice a second apart), for
# a hang: RIPs in L1's kernel (System.map in the L1 kernel directory) or, for a CPU running
# the krr guest, in the guest's.
monitor_dump() {
    local f=$1 syms=$WORK/l1-kallsyms
    { dd if="$WORK/out.img" bs=1M skip=$((SLOTS * SLOT_MIB)) count=$SLOT_MIB 2>/dev/null \
        | tar xf - -C "$WORK" 2>/dev/null; } || true
    {
        for round in 1 2 3; do
            exec 3<>"/dev/tcp/127.0.0.1/$MONPORT" || return 0
            printf 'info registers -a\ninfo lapic 0\ninfo lapic 1\ninfo lapic 2\ninfo lapic 3\n' >&3
            sleep 1
            timeout 2 cat <&3 || true
            exec 3>&-
        done
    } > "$f" 2>&1 || true
    # One line per CPU of the last round: RIP, IF, and the L1 function it is in.
    if [ -s "$syms" ]; then
        grep -a -o 'RIP=[0-9a-f]* RFL=[0-9a-f]*' "$f" | tail -n "$SMP" | while read -r rip rfl; do
            rip=${rip#RIP=}
            sym=$(sort "$syms" | awk -v a="$rip" '$1 <= a { s = $3; b = $1 } END { print s }')
            printf '%s (%s) IF=%d\n' "$rip" "${sym:-?}" $(( (0x${rfl#RFL=} >> 9) & 1 ))
        done > "$f.cpus" || true
    fi
}
step "booting L1 (QEMU TCG -cpu max, $SMP CPUs, $MEM; deadline ${DEADLINE}s)"
MONPORT=$((20000 + RANDOM % 20000))
qemu-system-x86_64 -accel tcg,thread=$TCG_THREADS -cpu max -smp "$SMP" -m "$MEM" -nographic -no-reboot \
    -monitor "tcp:127.0.0.1:$MONPORT,server,nowait" \
    -kernel "$VMLINUZ" -initrd "$WORK/l1.cpio" \
    -append "console=ttyS0 rdinit=/init quiet loglevel=3 panic=-1 nokaslr" \
    -drive "file=$WORK/out.img,if=virtio,format=raw,cache=unsafe" \
    > "$OUT/console.log" 2>&1 < /dev/null &
QPID=$!
last=""
status=running
lines=0
heard=$(date +%s)
while kill -0 "$QPID" 2>/dev/null; do
    sleep 2
    now=$(grep -a '^nested-l1:' "$OUT/console.log" | tail -n 1 || true)
    if [ "$now" != "$last" ]; then
        [ -n "$now" ] && step "${now#nested-l1: }"
        last=$now
    fi
    # Everything L1's init prints (its heartbeat too) says it is alive, from boot on (init
    # speaks within ~15 s); TCG under SVM can stop L1 with every CPU's interrupts off
    # (docs/nested-kvm.md), and waiting out the deadline then would cost minutes.
    n=$(grep -ac '^nested-l1' "$OUT/console.log" || true)
    if [ "$n" != "$lines" ]; then
        lines=$n
        heard=$(date +%s)
    elif [ $(($(date +%s) - heard)) -gt "$STALL" ]; then
        status=stalled
        monitor_dump "$OUT/hang.txt"
        kill -KILL "$QPID" 2>/dev/null || true
        break
    fi
    if awk -v e="$(elapsed)" -v d="$DEADLINE" 'BEGIN { exit !(e > d) }'; then
        status=deadline
        monitor_dump "$OUT/hang.txt"
        kill -KILL "$QPID" 2>/dev/null || true
        break
    fi
done
wait "$QPID" 2>/dev/null || true

# --- Bring the results back. -------------------------------------------------------------------
printf 'name\texit\tseconds\n' > "$OUT/results.tsv"
got=0
for i in "${!names[@]}"; do
    name=${names[$i]}
    # (tar stops at the archive's end, dd then dies of SIGPIPE: only the files tell.)
    { dd if="$WORK/out.img" bs=1M skip=$((i * SLOT_MIB)) count=$SLOT_MIB 2>/dev/null \
        | tar xf - -C "$OUT" 2>/dev/null; } || true
    if [ -f "$OUT/$name.result" ]; then
        cat "$OUT/$name.result" >> "$OUT/results.tsv"
        rm -f "$OUT/$name.result"
        got=$((got + 1))
    else
        printf '%s\t-\t-\n' "$name" >> "$OUT/results.tsv"
    fi
done
if [ "$KEEP" = 1 ]; then cp "$WORK/l1.cpio" "$WORK/out.img" "$OUT/"; fi
step "brought back $got of ${#names[@]} results into $OUT"
column -t "$OUT/results.tsv" 2>/dev/null | sed 's/^/    /' || cat "$OUT/results.tsv"

fail=$(grep -a '^nested-l1: .*FAILED' "$OUT/console.log" | head -n 1 || true)
[ -z "$fail" ] || die "L1 could not start: ${fail#*FAILED: }"
if [ "$status" != running ]; then
    cpus=$(tr '\n' ';' < "$OUT/hang.txt.cpus" 2>/dev/null || true)
    why="did not finish within ${DEADLINE}s"
    [ "$status" = deadline ] || why="stopped (not even its heartbeat for ${STALL}s)"
    die "L1 $why; it last said: ${last#nested-l1: }; its CPUs: ${cpus:-unknown} (details: $OUT/hang.txt, $OUT/console.log)"
fi
grep -aq '^nested-l1: .*all commands ran' "$OUT/console.log" \
    || die "L1 stopped before running every command; it last said: ${last:-nothing} (console: $OUT/console.log)"
exit 0
