#!/usr/bin/env bash
# Install everything krr needs on a fresh Debian 12 machine, build krr, build the guest kernel and
# initramfs (cached outside the repository), then run the demo.
#
#   scripts/setup.sh            install + build + demo
#   scripts/setup.sh --no-demo  install + build only (what CI uses)
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
for a in "$@"; do
    case "$a" in
        --no-demo) demo=0 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done

step() { printf '\n==> %s\n' "$*"; }

# Debian packages: the guest build installs its own (guest/build.sh); these are for krr itself and
# its tests (gdb for the debugger tests, qemu-system-x86 for cross-checks and benchmarks only,
# stress-ng: a dynamically linked third-party program the tests and the soak suite put into the
# guest with --add-bin).
pkgs=(build-essential pkg-config gdb qemu-system-x86 stress-ng)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "installing Debian packages: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup.sh: need root to install ${missing[*]} (run with sudo, or install them yourself)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
    echo "setup.sh: cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi

# cargo-fuzz runs the fuzz targets; it needs nightly flags, which scripts/fuzz.sh enables on the
# stable toolchain with RUSTC_BOOTSTRAP=1.
if ! command -v cargo-fuzz >/dev/null; then
    step "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

step "building krr"
cargo build --release --workspace

if [ -x guest/build.sh ]; then
    step "building the guest kernel and initramfs (cached; about 4 minutes the first time)"
    guest/build.sh
fi

step "the nested-KVM harness's L1 kernel (Debian's distribution kernel, cached)"
scripts/nested-kvm.sh --prepare

if [ "$demo" = 1 ]; then
    step "demo"
    scripts/demo.sh
fi
