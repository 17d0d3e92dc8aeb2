#!/usr/bin/env bash
# Build krr's guest: a minimal Linux 6.1 (Debian's linux-source-6.1) plus an initramfs with
# busybox, krr's /init and the static workloads. Outputs are cached outside the repository,
# keyed by a hash of every input; see guest/README.md.
set -euo pipefail
# The whole script is one brace group, parsed before it runs: editing this file while a build
# is running cannot change what the running build executes.
{

GUEST_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_BASE=${KRR_CACHE_DIR:-$HOME/.cache/krr}/guest
JOBS=$(nproc)
MODE=build
FORCE=0
PKGS=(linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev gcc-12-plugin-dev busybox-static cpio xz-utils)

usage() {
    cat <<EOF
Usage: guest/build.sh [--profile default|debug [--kasan] [--lockdep] [--preempt voluntary|full]]
                      [--counter plugin|trace-pc] [--linux DIR] [--config FILE] [--patch FILE]... [--print-dir] [--force]
                      [--clean] [--jobs N]

Builds the krr guest kernel (vmlinux with debug info, bzImage) and initramfs, caching the result in
  \${KRR_CACHE_DIR:-\$HOME/.cache/krr}/guest/<key>/
where <key> is a sha256 over every input (kernel source, tool versions, guest/config,
guest/patches/*, guest/init/*, guest/workloads/*, this script, and the options below). When that
directory is complete the script prints it and exits 0 at once. The last line on stdout is always
the output directory.

Profiles (guest/profiles/):
  --profile P   default: krr's small, fast kernel (tinyconfig + guest/config); debug: a kernel
                like the ones bugs are found on (SLUB, voluntary preemption, ext4 and loop
                devices, IPv4/IPv6, packet sockets, nf_tables, qdiscs, TLS, io_uring, BPF,
                namespaces, cgroups, n_gsm, watch_queue; panic_on_warn, panic on oops)
  --kasan       (debug) generic KASAN, reports panic (kasan.fault=panic)
  --lockdep     (debug) lockdep (PROVE_LOCKING) and sleep-in-atomic checks
  --preempt M   (debug) voluntary (the default) or full (CONFIG_PREEMPT)
  --counter C   the position counter: plugin (the default; inline increments at function entries
                and loop heads, guest/patches/0003) or trace-pc (a callback in every basic block,
                the old counter, for comparison: guest/profiles/trace-pc.config)

Your kernel:
  --linux DIR   build this Linux 6.1.y source tree instead of Debian's linux-source-6.1. DIR is
                copied (never modified); its identity in the key is git HEAD plus uncommitted
                changes, or, outside git, every file's size and mtime
  --config FILE a whole .config (it has the "Automatically generated file" header) used as the
                base, with krr's required options (guest/config.required) forced over it; or a
                fragment merged over tinyconfig + guest/config. Options a fragment sets must survive
                olddefconfig; a fragment that turns off a required option is refused
  --patch FILE  a patch (-p1) applied after krr's agent patches, e.g. a bug under test;
                repeatable, applied in the order given

  --print-dir   print the output directory for the current inputs without building;
                exit 0 if it is built, 1 if not
  --force       rebuild even if the output directory is complete
  --clean       also discard the cached kernel work tree (re-extract the source)
  --jobs N      parallel make jobs (default: nproc = $JOBS)
  -h, --help    this help

Missing Debian packages (${PKGS[*]}) are installed with apt-get (needs root).
Environment: KRR_CACHE_DIR (cache root, default \$HOME/.cache/krr).
EOF
}

CLEAN=0
PROFILE=default
KASAN=0
LOCKDEP=0
PREEMPT=
COUNTER=plugin
LINUX_DIR=
USER_CONFIG=
USER_PATCHES=()
abs_file() { # abs_file OPTION PATH: the absolute path of an existing readable file
    [ -f "$2" ] && [ -r "$2" ] || { echo "build.sh: $1 $2: no such readable file" >&2; exit 2; }
    realpath "$2"
}
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --profile=*) PROFILE=${1#--profile=} ;;
        --kasan) KASAN=1 ;;
        --lockdep) LOCKDEP=1 ;;
        --preempt=*) PREEMPT=${1#--preempt=} ;;
        --counter=*) COUNTER=${1#--counter=} ;;
        --linux|--config|--patch|--profile|--preempt|--counter)
            [ $# -ge 2 ] || { echo "build.sh: $1 needs a value" >&2; exit 2; }
            set -- "$1=$2" "${@:3}"; continue ;;
        --linux=*)
            LINUX_DIR=${1#--linux=}
            [ -f "$LINUX_DIR/Makefile" ] && [ -d "$LINUX_DIR/kernel" ] \
                || { echo "build.sh: --linux $LINUX_DIR: not a Linux source tree (no Makefile and kernel/)" >&2; exit 2; }
            LINUX_DIR=$(realpath "$LINUX_DIR") ;;
        --config=*) USER_CONFIG=$(abs_file --config "${1#--config=}") || exit 2 ;;
        --patch=*) USER_PATCHES+=("$(abs_file --patch "${1#--patch=}")") || exit 2 ;;
        --print-dir) MODE=print ;;
        --force) FORCE=1 ;;
        --clean) CLEAN=1; FORCE=1 ;;
        --jobs) [ $# -ge 2 ] || { echo "build.sh: --jobs needs a value" >&2; exit 2; }; JOBS=$2; shift ;;
        --jobs=*) JOBS=${1#--jobs=} ;;
        *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

pkg_version() { dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null | awk '$3=="installed"{print $4}'; }

install_missing() {
    local missing=() p installed
    # One dpkg-query for all packages keeps the cached case fast.
    # dpkg-query exits 1 when a package is unknown to dpkg (never installed): that is the
    # answer we want, not an error (under pipefail it would end the script silently).
    installed=" $({ dpkg-query -W -f='${Package} ${Status}\n' "${PKGS[@]}" 2>/dev/null || true; } | awk '$4=="installed"{printf "%s ", $1}') "
    for p in "${PKGS[@]}"; do
        [[ $installed == *" $p "* ]] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing Debian packages: ${missing[*]}
  install them as root:  sudo apt-get install --no-install-recommends ${missing[*]}
  (or run guest/build.sh as root)"
    fi
    log "installing missing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
        log "apt-get install failed; running apt-get update and retrying"
        apt-get update >&2
        apt-get install -y --no-install-recommends "${missing[@]}" >&2 \
            || die "apt-get install ${missing[*]} failed"
    fi
}

# --- the cache key: every input of the build -------------------------------------------------
input_files() {
    # Relative paths, sorted, so the key does not depend on where the repository is.
    (cd "$GUEST_DIR" && {
        echo build.sh
        echo config
        echo config.required
        find patches init workloads profiles -type f ! -name '*~' ! -name '.*' 2>/dev/null
    } | LC_ALL=C sort)
}

compute_key_text() {
    local src bb libc gccv f
    local versions
    versions=$(dpkg-query -W -f='${Package} ${Status} ${Version}\n' linux-source-6.1 busybox-static libc6-dev 2>/dev/null | awk '$4=="installed"')
    src=$(awk '$1=="linux-source-6.1"{print $5}' <<<"$versions")
    bb=$(awk '$1=="busybox-static"{print $5}' <<<"$versions")
    libc=$(awk '$1=="libc6-dev"{print $5}' <<<"$versions")
    [ -n "$src" ] || [ -n "$LINUX_DIR" ] || return 1
    [ -n "$bb" ] || return 1
    gccv=$(gcc --version 2>/dev/null | sed -n 1p) || return 1
    [ -n "$LINUX_DIR" ] || echo "linux-source-6.1=$src"
    echo "busybox-static=$bb"
    echo "libc6-dev=$libc"
    echo "gcc=$gccv"
    echo "binutils=$(ld --version 2>/dev/null | sed -n 1p)"
    echo "arch=$(uname -m)"
    while read -r f; do
        echo "file $f $(sha256sum < "$GUEST_DIR/$f" | cut -d' ' -f1)"
    done < <(input_files)
    # The profile and the user's inputs (absent for the default guest, so its key does not change).
    [ "$PROFILE" = default ] || echo "profile $PROFILE kasan=$KASAN lockdep=$LOCKDEP preempt=${PREEMPT:-voluntary}"
    [ "$COUNTER" = plugin ] || echo "counter $COUNTER"
    if [ -n "$LINUX_DIR" ]; then
        echo "linux-tree=$(tree_version "$LINUX_DIR") $(tree_id "$LINUX_DIR")" || return 1
    fi
    [ -z "$USER_CONFIG" ] || echo "user-config $(config_kind "$USER_CONFIG") $(sha256sum < "$USER_CONFIG" | cut -d' ' -f1)"
    local i=0 p
    for p in "${USER_PATCHES[@]}"; do
        i=$((i + 1))
        echo "user-patch $i $(basename "$p") $(sha256sum < "$p" | cut -d' ' -f1)"
    done
}

# --- a user's kernel tree (--linux) ------------------------------------------------------------------
# What a kernel build leaves in a source tree: neither part of its identity nor copied.
BUILT_RE='(^|/)(\.git|include/generated|include/config|arch/[^/]+/include/generated)(/|$)|\.(o|a|ko|cmd|mod|mod\.c|order|symvers|dwo)$|(^|/)\.tmp_[^/]*$|^(vmlinux|vmlinux\.[ao]|vmlinux-gdb\.py|System\.map|\.config|\.config\.old|\.version|modules\.[^/]*|arch/x86/boot/bzImage|arch/x86/kernel/vmlinux\.lds)$'
is_git_top() { [ "$(git -C "$1" rev-parse --show-toplevel 2>/dev/null)" = "$1" ]; }
tree_files() { # NUL-separated paths of DIR's source files, relative to DIR
    if is_git_top "$1"; then
        git -C "$1" ls-files -z -co --exclude-standard
    else
        (cd "$1" && find . -path ./.git -prune -o -type f -printf '%P\0')
    fi | { grep -zEv "$BUILT_RE" || true; }
}
tree_id() { # identity of DIR's sources: git HEAD + uncommitted changes, else sizes and mtimes
    local d=$1
    if is_git_top "$d"; then
        echo "git $(git -C "$d" rev-parse HEAD) changes $({ git -C "$d" diff HEAD --binary
            git -C "$d" ls-files -z -o --exclude-standard | { grep -zEv "$BUILT_RE" || true; } | (cd "$d" && xargs -0r sha256sum); } | sha256sum | cut -c1-16)"
    else
        echo "files $(tree_files "$d" | (cd "$d" && xargs -0r stat -c '%n %s %Y') | LC_ALL=C sort | sha256sum | cut -c1-16)"
    fi
}
tree_version() { # VERSION.PATCHLEVEL.SUBLEVEL from DIR/Makefile
    awk -F' *= *' '$1=="VERSION"{v=$2} $1=="PATCHLEVEL"{p=$2} $1=="SUBLEVEL"{s=$2} END{printf "%s.%s.%s", v, p, s}' "$1/Makefile"
}
config_kind() { # whole (a .config written by kconfig) or fragment
    if grep -q '^# Automatically generated file; DO NOT EDIT' "$1"; then echo whole; else echo fragment; fi
}

case $PROFILE in
    default)
        [ "$KASAN$LOCKDEP" = 00 ] && [ -z "$PREEMPT" ] \
            || die "--kasan, --lockdep and --preempt need --profile debug (the default kernel has SLOB and no preemption)" ;;
    debug) ;;
    *) die "--profile $PROFILE: the profiles are default and debug" ;;
esac
case ${PREEMPT:-voluntary} in voluntary|full) ;; *) die "--preempt $PREEMPT: voluntary or full" ;; esac
case $COUNTER in plugin|trace-pc) ;; *) die "--counter $COUNTER: plugin or trace-pc" ;; esac
# The profile's fragments, merged after guest/config and before a --config fragment.
PROFILE_FRAGS=()
if [ "$PROFILE" = debug ]; then
    PROFILE_FRAGS+=("$GUEST_DIR/profiles/debug.config")
    [ "$KASAN" = 0 ] || PROFILE_FRAGS+=("$GUEST_DIR/profiles/kasan.config")
    [ "$LOCKDEP" = 0 ] || PROFILE_FRAGS+=("$GUEST_DIR/profiles/lockdep.config")
    [ "$PREEMPT" != full ] || PROFILE_FRAGS+=("$GUEST_DIR/profiles/preempt-full.config")
fi
[ "$COUNTER" = plugin ] || PROFILE_FRAGS+=("$GUEST_DIR/profiles/$COUNTER.config")

LINUX_VER=
if [ -n "$LINUX_DIR" ]; then
    LINUX_VER=$(tree_version "$LINUX_DIR")
    case $LINUX_VER in
        6.1.*) ;;
        *) die "--linux $LINUX_DIR is Linux $LINUX_VER: krr's guest agent is written for 6.1.y (6.6 LTS and others are not supported yet)" ;;
    esac
fi

if [ -n "$USER_CONFIG" ] && [ "$PROFILE" != default ] && [ "$(config_kind "$USER_CONFIG")" = whole ]; then
    die "--config $USER_CONFIG is a whole .config: it already says everything a profile would; drop --profile or pass a fragment"
fi
if [ -n "$USER_CONFIG" ] && [ "$COUNTER" != plugin ] && [ "$(config_kind "$USER_CONFIG")" = whole ]; then
    die "--config $USER_CONFIG is a whole .config: choose the counter in it (CONFIG_KRR_POS_TRACE_PC=y) instead of --counter"
fi

# A --config fragment is written for krr: one that turns off what krr needs is a mistake to refuse
# (before any work), not to override.
if [ -n "$USER_CONFIG" ] && [ "$(config_kind "$USER_CONFIG")" = fragment ]; then
    clash=$(awk '
        function parse(line) {
            if (match(line, /^CONFIG_[A-Za-z0-9_]+=/)) { opt = substr(line, 1, RLENGTH - 1); val = substr(line, RLENGTH + 1); return 1 }
            if (match(line, /^# CONFIG_[A-Za-z0-9_]+ is not set/)) { opt = $2; val = "n"; return 1 }
            return 0
        }
        FNR == NR { if (parse($0)) req[opt] = val; next }
        parse($0) && (opt in req) && req[opt] != val { printf "%s%s=%s (krr needs %s)", sep, opt, val, req[opt]; sep = ", " }
    ' "$GUEST_DIR/config.required" "$USER_CONFIG")
    [ -z "$clash" ] || die "--config $USER_CONFIG turns off what krr needs: $clash (guest/config.required)"
fi

if [ "$MODE" = print ]; then
    key_text=$(compute_key_text) || { log "cannot compute the key: linux-source-6.1, busybox-static or gcc is not installed (run guest/build.sh)"; exit 1; }
    key=$(printf '%s\n' "$key_text" | sha256sum | cut -c1-16)
    echo "$CACHE_BASE/$key"
    [ -f "$CACHE_BASE/$key/done" ] && exit 0
    exit 1
fi

install_missing
key_text=$(compute_key_text) || die "cannot compute the cache key (package versions missing after install?)"
key_full=$(printf '%s\n' "$key_text" | sha256sum | cut -d' ' -f1)
key=${key_full:0:16}
OUT=$CACHE_BASE/$key

if [ "$FORCE" = 0 ] && [ -f "$OUT/done" ]; then
    log "up to date (cache key $key)"
    echo "$OUT"
    exit 0
fi

# --- from here on: a real build ----------------------------------------------------------------
T0=$(date +%s)
[ "$(uname -m)" = x86_64 ] || die "the krr guest is built natively on x86-64 (this is $(uname -m))"
# Nothing from the caller's environment may change the kernel build without changing the key.
unset KCFLAGS KCPPFLAGS KAFLAGS KBUILD_OUTPUT CROSS_COMPILE LLVM CC LD O W C V KBUILD_EXTRA_SYMBOLS
export ARCH=x86_64 LC_ALL=C
SRC_VER=$(pkg_version linux-source-6.1)
BB_VER=$(pkg_version busybox-static)
LIBC_VER=$(pkg_version libc6-dev)
GCC_VER=$(gcc --version | sed -n 1p)
TARBALL=/usr/src/linux-source-6.1.tar.xz
if [ -n "$LINUX_DIR" ]; then
    SRC_DESC="tree $LINUX_DIR (Linux $LINUX_VER, $(tree_id "$LINUX_DIR"))"
else
    [ -f "$TARBALL" ] || die "$TARBALL not found although linux-source-6.1 $SRC_VER is installed"
    SRC_DESC="Debian linux-source-6.1 $SRC_VER"
fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found although busybox-static is installed"
command -v cpio >/dev/null || true

mkdir -p "$CACHE_BASE/work"
# One build at a time per cache (the kernel work tree is shared between keys).
exec 9>"$CACHE_BASE/work/lock"
if ! flock -n 9; then
    log "another guest build holds $CACHE_BASE/work/lock; waiting"
    flock 9
fi
# Another build may have produced our output while we waited.
if [ "$FORCE" = 0 ] && [ -f "$OUT/done" ]; then
    log "up to date (built concurrently, cache key $key)"
    echo "$OUT"
    exit 0
fi

# The kernel tree is kept per source (Debian's version, or the path of a --linux tree) and per kind
# of config (krr's, or a --config), so that a patch or config change rebuilds incrementally: the
# previously applied series is reverse-applied, the new one applied.
if [ -n "$LINUX_DIR" ]; then
    TREE=$CACHE_BASE/work/tree-$(printf '%s' "$LINUX_DIR" | sha256sum | cut -c1-12)
    # What was copied depends on BUILT_RE too: a changed filter copies again.
    SOURCE_ID="$LINUX_DIR $(tree_id "$LINUX_DIR") filter $(printf '%s' "$BUILT_RE" | sha256sum | cut -c1-8)"
else
    TREE=$CACHE_BASE/work/linux-$SRC_VER
    SOURCE_ID="debian linux-source-6.1 $SRC_VER"
fi
[ "$PROFILE" = default ] || TREE=$TREE-$PROFILE
[ "$COUNTER" = plugin ] || TREE=$TREE-$COUNTER
[ -z "$USER_CONFIG" ] || TREE=$TREE-custom
if [ "$CLEAN" = 1 ] && [ -d "$TREE" ]; then
    log "--clean: removing $TREE"
    rm -rf "$TREE"
fi

# The names of the patches applied to the tree, in the order they were applied (none if none).
applied_series() {
    [ -d "$TREE/.krr-applied" ] || return 0
    find "$TREE/.krr-applied" -maxdepth 1 -name '*.patch' -printf '%f\n' | LC_ALL=C sort
}

# unapply_old_series [KEEP]: reverse-apply the series applied to the tree, last patch first, all
# but its first KEEP patches (default 0: all of them).
unapply_old_series() {
    local applied=$TREE/.krr-applied p i keep=${1:-0}
    [ -d "$applied" ] || return 0
    local list=()
    mapfile -t list < <(applied_series)
    for ((i = ${#list[@]} - 1; i >= keep; i--)); do
        p=${list[$i]}
        if ! (cd "$TREE" && patch -p1 -R -s --no-backup-if-mismatch -r - < "$applied/$p" >/dev/null); then
            log "could not reverse-apply the previously applied $p; re-extracting the source"
            return 1
        fi
        rm -f "$applied/$p"
    done
    [ "$keep" -gt 0 ] || rm -rf "$applied"
}

extract_tree() {
    rm -rf "$TREE" "$TREE.tmp"
    mkdir -p "$TREE.tmp"
    if [ -n "$LINUX_DIR" ]; then
        log "copying the sources of $LINUX_DIR into $TREE (your tree is not modified)"
        tree_files "$LINUX_DIR" | (cd "$LINUX_DIR" && tar --null -T - -cf -) | tar -xf - -C "$TREE.tmp"
    else
        log "extracting $TARBALL (linux-source-6.1 $SRC_VER) into $TREE"
        tar -xf "$TARBALL" -C "$TREE.tmp" --strip-components=1
    fi
    printf '%s\n' "$SOURCE_ID" > "$TREE.tmp/.krr-source-id"
    mv "$TREE.tmp" "$TREE"
}

# The series: krr's patches (guest/patches, lexical order), then the user's (--patch, in the
# order given) under the names uNN-<name> so that they sort after krr's.
PATCH_NAMES=()
PATCH_FILES=()
while IFS= read -r p; do
    PATCH_NAMES+=("$p")
    PATCH_FILES+=("$GUEST_DIR/patches/$p")
done < <(cd "$GUEST_DIR/patches" 2>/dev/null && find . -maxdepth 1 -name '*.patch' -printf '%f\n' | LC_ALL=C sort)
AGENT_PATCHES=${#PATCH_NAMES[@]}
for i in "${!USER_PATCHES[@]}"; do
    PATCH_NAMES+=("$(printf 'u%02d-%s' $((i + 1)) "$(basename "${USER_PATCHES[$i]}")")")
    PATCH_FILES+=("${USER_PATCHES[$i]}")
done

# How many leading patches of the applied series are the current series' first ones, unchanged.
common_prefix() {
    local applied=$TREE/.krr-applied list=() i=0
    mapfile -t list < <(applied_series)
    while [ "$i" -lt "${#list[@]}" ] && [ "$i" -lt "${#PATCH_NAMES[@]}" ] \
        && [ "${list[$i]}" = "${PATCH_NAMES[$i]}" ] && cmp -s "$applied/${list[$i]}" "${PATCH_FILES[$i]}"; do
        i=$((i + 1))
    done
    echo "$i"
}

APPLY=("${!PATCH_NAMES[@]}")
# What the old and new series share at their start (krr's agent, typically) stays applied and
# only the rest is swapped, so that a new --patch rebuilds the files it and its predecessor
# touch, not everything the agent's headers reach. When the series is the same throughout the
# tree is left alone and make rebuilds nothing.
keep=$(common_prefix)
if [ ! -f "$TREE/Makefile" ] || [ "$(cat "$TREE/.krr-source-id" 2>/dev/null || echo "debian linux-source-6.1 $SRC_VER")" != "$SOURCE_ID" ]; then
    extract_tree
elif [ "$keep" = "${#PATCH_NAMES[@]}" ] && [ "$(applied_series | wc -l)" = "$keep" ]; then
    log "the kernel tree already carries the patch series as it is"
    APPLY=()
elif unapply_old_series "$keep"; then
    APPLY=("${APPLY[@]:$keep}")
    [ "$keep" = 0 ] || log "the kernel tree keeps the first $keep patch(es) of the series applied"
else
    extract_tree
fi

mkdir -p "$TREE/.krr-applied"
for i in "${APPLY[@]}"; do
    name=${PATCH_NAMES[$i]} file=${PATCH_FILES[$i]}
    # krr's own patches apply exactly (no fuzz); a user's may carry the usual fuzz of 2.
    fuzz=-F2
    [ "$i" -ge "$AGENT_PATCHES" ] || fuzz=-F0
    if ! (cd "$TREE" && patch -p1 --dry-run -s "$fuzz" -N -r - < "$file" > "$TREE/.krr-patch.log" 2>&1); then
        sed 's/^/  /' "$TREE/.krr-patch.log" >&2
        # Leave the tree consistent: reverse what we applied so far.
        unapply_old_series || rm -rf "$TREE"
        if [ "$i" -lt "$AGENT_PATCHES" ] && [ -n "$LINUX_DIR" ]; then
            die "krr's agent patch guest/patches/$name does not apply to Linux $LINUX_VER at $LINUX_DIR (the hunks above; it is maintained against Debian's linux-source-6.1 $SRC_VER)"
        elif [ "$i" -lt "$AGENT_PATCHES" ]; then
            die "patch guest/patches/$name does not apply to linux-source-6.1 $SRC_VER
  (Debian updates linux-source over time; refresh the patch against this version)"
        else
            die "--patch $file does not apply to $SRC_DESC after krr's agent patches (the hunks above)"
        fi
    fi
    (cd "$TREE" && patch -p1 -s "$fuzz" -N --no-backup-if-mismatch -r - < "$file")
    cp "$file" "$TREE/.krr-applied/$name"
    if [ "$i" -lt "$AGENT_PATCHES" ]; then log "applied guest/patches/$name"; else log "applied --patch $file"; fi
done

# --- kernel configuration ----------------------------------------------------------------------
export KBUILD_BUILD_USER=krr KBUILD_BUILD_HOST=krr KBUILD_BUILD_VERSION=1
export KBUILD_BUILD_TIMESTAMP="${LINUX_DIR:+linux $LINUX_VER}${LINUX_DIR:-linux-source-6.1 $SRC_VER}"
MAKE=(make -C "$TREE" -j"$JOBS")
BUILD_LOG=$CACHE_BASE/work/build-$key.log
: > "$BUILD_LOG"

# verify_options FILE...: print "CONFIG_X: wanted W, got G" for every option the files set (a later
# file's line for an option replaces an earlier one's) that .config does not hold as set.
verify_options() {
    local line opt want got
    declare -A wanted=()
    local order=()
    while IFS= read -r line; do
        line=${line%%[[:space:]]}
        if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
            opt=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
        elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            opt=${BASH_REMATCH[1]} want=n
        else
            continue
        fi
        [ -n "${wanted[$opt]+x}" ] || order+=("$opt")
        wanted[$opt]=$want
    done < <(cat "$@")
    for opt in "${order[@]}"; do
        want=${wanted[$opt]}
        got=$(grep -m1 -E "^$opt=" "$TREE/.config" | cut -d= -f2- || true)
        if [ "$want" = n ]; then
            [ -z "$got" ] || echo "$opt: wanted not set, got $got"
            continue
        fi
        [ -n "$got" ] || { grep -qx "# $opt is not set" "$TREE/.config" && got="n (is not set)" || got="(absent: unknown option or unmet dependency)"; }
        [ "$got" = "$want" ] || echo "$opt: wanted $want, got $got"
    done
}
REQUIRED=$GUEST_DIR/config.required
[ -f "$REQUIRED" ] || die "$REQUIRED is missing"

if [ -z "$USER_CONFIG" ]; then
    log "configuring: tinyconfig + guest/config${PROFILE_FRAGS[*]:+ + ${PROFILE_FRAGS[*]##*/}}"
    "${MAKE[@]}" tinyconfig >> "$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make tinyconfig failed (log: $BUILD_LOG)"; }
    (cd "$TREE" && scripts/kconfig/merge_config.sh -m .config "$GUEST_DIR/config" "${PROFILE_FRAGS[@]}") >> "$BUILD_LOG" 2>&1 \
        || { tail -n 30 "$BUILD_LOG" >&2; die "merge_config.sh failed (log: $BUILD_LOG)"; }
    VERIFY=("$GUEST_DIR/config" "${PROFILE_FRAGS[@]}")
elif [ "$(config_kind "$USER_CONFIG")" = whole ]; then
    # A whole .config comes from elsewhere and cannot know krr: krr's required options are forced
    # over it, each change said.
    log "configuring: $USER_CONFIG (a whole .config) + guest/config.required"
    cp "$USER_CONFIG" "$TREE/.config"
    verify_options "$REQUIRED" | sed 's/^/build.sh:   krr changes /' >&2 || true
    (cd "$TREE" && scripts/kconfig/merge_config.sh -m .config "$REQUIRED") >> "$BUILD_LOG" 2>&1 \
        || { tail -n 30 "$BUILD_LOG" >&2; die "merge_config.sh failed (log: $BUILD_LOG)"; }
    VERIFY=()
else
    log "configuring: tinyconfig + guest/config${PROFILE_FRAGS[*]:+ + ${PROFILE_FRAGS[*]##*/}} + $USER_CONFIG"
    "${MAKE[@]}" tinyconfig >> "$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make tinyconfig failed (log: $BUILD_LOG)"; }
    (cd "$TREE" && scripts/kconfig/merge_config.sh -m .config "$GUEST_DIR/config" "${PROFILE_FRAGS[@]}" "$USER_CONFIG") >> "$BUILD_LOG" 2>&1 \
        || { tail -n 30 "$BUILD_LOG" >&2; die "merge_config.sh failed (log: $BUILD_LOG)"; }
    VERIFY=("$GUEST_DIR/config" "${PROFILE_FRAGS[@]}" "$USER_CONFIG")
fi
"${MAKE[@]}" olddefconfig >> "$BUILD_LOG" 2>&1 || { tail -n 30 "$BUILD_LOG" >&2; die "make olddefconfig failed (log: $BUILD_LOG)"; }

# What krr needs from any kernel, checked first: one line naming what is missing.
missing=$(verify_options "$REQUIRED" | paste -sd';' | sed 's/;/; /g')
[ -z "$missing" ] || die "the kernel config lacks what krr needs (guest/config.required) after olddefconfig: $missing"
# Then every option asked for (guest/config, a --config fragment) ended up as requested.
if [ ${#VERIFY[@]} -gt 0 ]; then
    mapfile -t bad < <(verify_options "${VERIFY[@]}")
    if [ ${#bad[@]} -gt 0 ]; then
        printf '  %s\n' "${bad[@]}" >&2
        die "${#bad[@]} option(s) of ${VERIFY[*]##*/} did not survive olddefconfig (missing dependency or renamed option)"
    fi
fi
log "config verified: krr's required options${VERIFY:+ and every option of ${VERIFY[*]##*/}} are set as requested"

# --- kernel build --------------------------------------------------------------------------------
log "building vmlinux, bzImage and the gdb scripts with -j$JOBS (log: $BUILD_LOG)"
TB0=$(date +%s)
"${MAKE[@]}" vmlinux bzImage scripts_gdb >> "$BUILD_LOG" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
    for _ in $(seq 15); do
        sleep 1
        kill -0 "$make_pid" 2>/dev/null || break
    done
    kill -0 "$make_pid" 2>/dev/null || break
    last=$(grep -E '^  [A-Z]+[A-Z0-9_]* ' "$BUILD_LOG" | tail -n1 | sed 's/^ *//' || true)
    log "  $(( $(date +%s) - TB0 ))s: ${last:-...}"
done
if ! wait "$make_pid"; then
    grep -E 'error|Error' "$BUILD_LOG" | tail -n 20 >&2 || true
    tail -n 20 "$BUILD_LOG" >&2
    die "kernel build failed (full log: $BUILD_LOG)"
fi
KBUILD_SECS=$(( $(date +%s) - TB0 ))
log "kernel built in ${KBUILD_SECS}s"

# --- user space: init, helpers, workloads ----------------------------------------------------------
TMP_OUT=$CACHE_BASE/.tmp-$key-$$
rm -rf "$TMP_OUT"
mkdir -p "$TMP_OUT/initramfs"
trap 'rm -rf "$TMP_OUT"' EXIT

# All guest programs (init, krr-exit, every workload) are linked into ONE static multi-call binary,
# /bin/krr-guest, dispatching on argv[0]; /init and /bin/<name> are symlinks to it. Each static
# glibc program is ~700 KB, and the initramfs is unpacked by the guest kernel (slow when ring 0
# is emulated), so this keeps the initramfs at ~3 MB instead of ~12 MB. Each program is still its
# own .c file with its own main() (renamed at compile time to krr_main_<name>).
CFLAGS=(-O2 -g -Wall -Wextra -Werror -std=gnu11 -pthread -I"$GUEST_DIR/init" -I"$GUEST_DIR/workloads")
OBJ=$TMP_OUT/obj
mkdir -p "$OBJ"
PROGS=()
cc_obj() { # cc_obj NAME SOURCE
    local sym=${1//-/_}
    gcc "${CFLAGS[@]}" -Dmain="krr_main_$sym" -c -o "$OBJ/$1.o" "$2" 2>&1 | sed 's/^/  /' >&2
    [ "${PIPESTATUS[0]}" = 0 ] || die "compiling $2 failed"
    PROGS+=("$1")
}
cc_obj init "$GUEST_DIR/init/init.c"
cc_obj krr-exit "$GUEST_DIR/init/krr-exit.c"
WORKLOADS=()
for src in "$GUEST_DIR"/workloads/*.c; do
    name=$(basename "$src" .c)
    [[ $name =~ ^[a-z0-9][a-z0-9_-]*$ ]] || die "workload file name $name.c: use [a-z0-9_-] only"
    cc_obj "$name" "$src"
    WORKLOADS+=("$name")
done
{
    echo '/* generated by guest/build.sh: argv[0] dispatcher of the krr-guest multi-call binary */'
    echo '#include <stdio.h>'
    echo '#include <string.h>'
    for n in "${PROGS[@]}"; do echo "int krr_main_${n//-/_}(int, char **);"; done
    echo 'static const struct { const char *name; int (*main)(int, char **); } progs[] = {'
    for n in "${PROGS[@]}"; do echo "    {\"$n\", krr_main_${n//-/_}},"; done
    echo '};'
    cat <<'CEOF'
int main(int argc, char **argv)
{
    const char *base = argc > 0 ? strrchr(argv[0], '/') : NULL;
    base = base ? base + 1 : (argc > 0 ? argv[0] : "");
    if (strcmp(base, "krr-guest") == 0 && argc > 1) {
        argv++;
        argc--;
        base = argv[0];
    }
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++)
        if (strcmp(base, progs[i].name) == 0)
            return progs[i].main(argc, argv);
    fprintf(stderr, "krr-guest: unknown program '%s'; available:", base);
    for (size_t i = 0; i < sizeof progs / sizeof progs[0]; i++)
        fprintf(stderr, " %s", progs[i].name);
    fprintf(stderr, "\n");
    return 127;
}
CEOF
} > "$OBJ/multicall.c"
gcc "${CFLAGS[@]}" -c -o "$OBJ/multicall.o" "$OBJ/multicall.c"
gcc -static -pthread -o "$TMP_OUT/krr-guest" "$OBJ"/*.o
strip -o "$TMP_OUT/initramfs/krr-guest" "$TMP_OUT/krr-guest"
rm -rf "$OBJ"
log "compiled /bin/krr-guest (init, krr-exit and ${#WORKLOADS[@]} workloads: ${WORKLOADS[*]})"

# --- initramfs: gen_init_cpio from the kernel tree (device nodes without root, fixed mtimes) -----
GEN=$CACHE_BASE/work/gen_init_cpio
gcc -O2 -o "$GEN" "$TREE/usr/gen_init_cpio.c"
LIST=$TMP_OUT/initramfs.list
{
    echo "dir /dev 0755 0 0"
    echo "nod /dev/console 0600 0 0 c 5 1"
    echo "nod /dev/null 0666 0 0 c 1 3"
    echo "nod /dev/ttyS0 0660 0 0 c 4 64"
    for d in /bin /proc /sys /tmp /root /etc /usr; do echo "dir $d 0755 0 0"; done
    echo "slink /sbin bin 0777 0 0"
    echo "slink /usr/bin ../bin 0777 0 0"
    echo "slink /usr/sbin ../bin 0777 0 0"
    echo "file /bin/krr-guest $TMP_OUT/initramfs/krr-guest 0755 0 0"
    echo "slink /init bin/krr-guest 0777 0 0"
    echo "file /bin/busybox $BUSYBOX 0755 0 0"
    for w in krr-exit "${WORKLOADS[@]}"; do echo "slink /bin/$w krr-guest 0777 0 0"; done
    # busybox applets as symlinks, all in /bin (workloads and krr-exit take precedence).
    for a in $("$BUSYBOX" --list | LC_ALL=C sort); do
        case " init krr-exit krr-guest busybox ${WORKLOADS[*]} " in *" $a "*) continue ;; esac
        [[ $a =~ ^[A-Za-z0-9._-]+$ ]] || continue
        echo "slink /bin/$a busybox 0777 0 0"
    done
    printf 'file /etc/passwd %s 0644 0 0\n' "$TMP_OUT/passwd"
    printf 'file /etc/group %s 0644 0 0\n' "$TMP_OUT/group"
} > "$LIST"
echo "root:x:0:0:root:/root:/bin/sh" > "$TMP_OUT/passwd"
echo "root:x:0:" > "$TMP_OUT/group"
"$GEN" -t 0 "$LIST" > "$TMP_OUT/initramfs.cpio"
sed -i "s|$TMP_OUT/initramfs/|<build>/|g; s|$TMP_OUT/|<build>/|g" "$LIST" # keep the list readable
rm -rf "$TMP_OUT/initramfs" "$TMP_OUT/passwd" "$TMP_OUT/group"

# --- outputs -----------------------------------------------------------------------------------------
cp "$TREE/vmlinux" "$TMP_OUT/vmlinux"
cp "$TREE/arch/x86/boot/bzImage" "$TMP_OUT/bzImage"
cp "$TREE/System.map" "$TMP_OUT/System.map"
cp "$TREE/.config" "$TMP_OUT/config"
cp "$GUEST_DIR/config" "$TMP_OUT/config.fragment"
[ -z "$USER_CONFIG" ] || cp "$USER_CONFIG" "$TMP_OUT/config.user"
if [ ${#USER_PATCHES[@]} -gt 0 ]; then
    mkdir -p "$TMP_OUT/patches"
    for i in "${!PATCH_NAMES[@]}"; do
        [ "$i" -lt "$AGENT_PATCHES" ] || cp "${PATCH_FILES[$i]}" "$TMP_OUT/patches/${PATCH_NAMES[$i]}"
    done
fi
# The kernel's gdb scripts (lx-dmesg, lx-ps, ...), laid out as in the tree: gdb auto-loads
# vmlinux-gdb.py beside vmlinux, and it finds its modules in scripts/gdb beside itself.
[ -f "$TREE/vmlinux-gdb.py" ] || die "the kernel build made no vmlinux-gdb.py (CONFIG_GDB_SCRIPTS)"
mkdir -p "$TMP_OUT/scripts"
cp -L "$TREE/vmlinux-gdb.py" "$TMP_OUT/"
cp -rL "$TREE/scripts/gdb" "$TMP_OUT/scripts/"
BUILD_ID=$(readelf -n "$TMP_OUT/vmlinux" | awk '/Build ID:/ && !n++ {print $3}')
[ -n "$BUILD_ID" ] || die "vmlinux has no GNU build-id note"
echo "$BUILD_ID" > "$TMP_OUT/build-id"
RELEASE=$(cat "$TREE/include/config/kernel.release")
echo "$RELEASE ($SRC_DESC)" > "$TMP_OUT/linux-version"
[ "$(readelf -S "$TMP_OUT/vmlinux" | grep -c '\.debug_info')" -gt 0 ] || die "vmlinux has no .debug_info"
ENTRY=$(readelf -h "$TMP_OUT/vmlinux" | awk '/Entry point address:/ {print $4}')
printf '%s\n' "$key_text" > "$TMP_OUT/inputs"
cp "$BUILD_LOG" "$TMP_OUT/build.log"
TOTAL_SECS=$(( $(date +%s) - T0 ))
cat > "$TMP_OUT/manifest" <<EOF
cache_key=$key_full
cache_dir=$OUT
kernel_release=$RELEASE
kernel_source=$SRC_DESC
debian_linux_source_version=${LINUX_DIR:+(not used: --linux)}${LINUX_DIR:-$SRC_VER}
user_config=${USER_CONFIG:+$USER_CONFIG ($(config_kind "$USER_CONFIG"))}
profile=$PROFILE${PROFILE_FRAGS[*]:+ (${PROFILE_FRAGS[*]##*/})}
busybox_static_version=$BB_VER
libc6_dev_version=$LIBC_VER
gcc=$GCC_VER
build_id=$BUILD_ID
vmlinux=vmlinux
vmlinux_entry=$ENTRY
vmlinux_sha256=$(sha256sum < "$TMP_OUT/vmlinux" | cut -d' ' -f1)
bzimage=bzImage
initramfs=initramfs.cpio
initramfs_format=cpio newc, uncompressed
initramfs_sha256=$(sha256sum < "$TMP_OUT/initramfs.cpio" | cut -d' ' -f1)
system_map=System.map
config=config
patches=${PATCH_NAMES[*]}
guest_binary=krr-guest
workloads=${WORKLOADS[*]}
exit_port=0xf4
kernel_build_seconds=$KBUILD_SECS
total_build_seconds=$TOTAL_SECS
built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
echo "$key_full" > "$TMP_OUT/done"
# Publish atomically: the directory appears complete or not at all.
rm -rf "$OUT"
mv "$TMP_OUT" "$OUT"
trap - EXIT
rm -f "$BUILD_LOG"
log "done in ${TOTAL_SECS}s (kernel ${KBUILD_SECS}s): vmlinux $RELEASE build-id $BUILD_ID"
echo "$OUT"
exit 0
}
