#!/usr/bin/env bash
# What the seccomp profile costs a container start (issue 11), in one run: `runc run` of /bin/true in a sandbox's
# own bundle (rootfs, namespaces, cgroups, mounts as the runtime writes them; no network, no envd) with
#   (a) no filter, (b) the deny-list the runtime used before issue 11, (c) the allow-list profile it writes now,
# interleaved, N rounds; prints p50/p90 and the ratios. The difference is runc compiling the filter (libseccomp)
# at every start; the filter's per-syscall cost afterwards is cached by the kernel.
#
#   sudo bench/seccomp.sh            # N=60; data dir /var/tmp/soulbox-seccomp-bench, prefix sbscb, pool 10.214.0.0/24
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
DATA_DIR=/var/tmp/soulbox-seccomp-bench
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
[ -x "$ENVD" ] || bash scripts/build-envd.sh >/dev/null
cargo build -q -p soulbox-runtime --bin soulbox-runtime
driver() {
  target/debug/soulbox-runtime --data-dir "$DATA_DIR" --store /var/tmp/soulbox-test-store --envd "$ENVD" \
    --prefix sbscb --pool 10.214.0.0/24 "$@"
}
driver template test >/dev/null 2>&1
id="$(driver create --template test 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
cleanup() { driver destroy-all >/dev/null 2>&1 || true; rm -rf "$DATA_DIR"; }
trap cleanup EXIT
python3 bench/seccomp_bench.py "$DATA_DIR/sandboxes/$id" "${N:-60}"
