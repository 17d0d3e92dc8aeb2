#!/usr/bin/env bash
# An installed krr works from any directory, without the source tree: `cargo install --path
# crates/krr` into a temporary root (reusing this checkout's release build), then, from another
# directory, the installed binary unpacks its embedded guest sources (identical to guest/), finds
# the default guest build under the same cache key as guest/build.sh, and runs a program in it.
# Needs the default guest built (scripts/test.sh builds it first). Exit 0 when all of that holds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(mktemp -d /tmp/krr-install.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT
fail() { echo "install-check: FAIL: $*" >&2; exit 1; }

echo "install-check: cargo install --path crates/krr --root $ROOT" >&2
cargo install --quiet --locked --path crates/krr --root "$ROOT" --target-dir target
KRR=$ROOT/bin/krr
want=$(guest/build.sh --print-dir) || fail "the default guest is not built (run guest/build.sh)"
checkout=$PWD
cd "$ROOT"
unset KRR_GUEST_DIR KRR_GUEST_SRC

# 1. The guest sources come out of the binary, byte for byte the checkout's guest/.
src=$(KRR_CACHE_DIR=$ROOT/cache "$KRR" guest dir --sources)
case $src in "$ROOT/cache/guest/src/"*) ;; *) fail "guest sources unpacked at $src, not under the cache";; esac
diff -r --exclude=.complete "$checkout/guest" "$src" >&2 || fail "the embedded guest sources differ from guest/"
# 2. The installed krr finds the checkout's default guest build: the same cache key.
got=$("$KRR" guest dir) || fail "the installed krr does not find the default guest build"
[ "$got" = "$want" ] || fail "the installed krr's guest is $got, guest/build.sh's is $want"
# 3. And runs it from here.
out=$("$KRR" run --quiet --accel emu --timeout 600 -- /bin/hello) || fail "krr run -- /bin/hello failed: $out"
grep -q "hello" <<<"$out" || fail "no greeting from /bin/hello: $out"
echo "install-check: ok: installed krr ($(du -h "$KRR" | cut -f1)) unpacked its guest sources, found $got and ran /bin/hello from $ROOT" >&2
