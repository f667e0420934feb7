#!/usr/bin/env bash
# Issue 6's benchmark in one run: `commands.run("true")` round trip and create → first command through the Rust
# SDK (crates/soulbox/examples/bench.rs, which also times raw HTTP and plain reqwest) and then through the
# official e2b Python SDK (crates/soulbox/examples/bench_python.py), against one release `soulbox server`.
#
#   sudo bench/sdk.sh          # BENCH_N=300 BENCH_CREATES=20 (passed to both sides)
#
# Data dir /var/tmp/soulbox-sdk-test (shared with crates/soulbox/tests/run.sh, so a built `base` is reused),
# runtime prefix sbsdb, pool 10.216.0.0/16; server log target/sdk-bench/server.log. Root only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
DATA_DIR="${SOULBOX_SDK_TEST_DIR:-/var/tmp/soulbox-sdk-test}"
LOG_DIR="$ROOT/target/sdk-bench"
PY="$ROOT/tests/compat/.venv-latest/bin/python"
[ -x "$PY" ] || { echo "no $PY: run tests/compat/run.sh once (it builds the venv)" >&2; exit 1; }
scripts/build-envd.sh >/dev/null
cargo build --release -p soulbox-cli --bin soulbox -p soulbox --example bench
SOULBOX="$ROOT/target/release/soulbox"
mkdir -p "$DATA_DIR" "$LOG_DIR"
SERVER_PID=""
cleanup() {
  [ -z "$SERVER_PID" ] || kill -TERM "$SERVER_PID" 2>/dev/null || true
  [ -z "$SERVER_PID" ] || wait "$SERVER_PID" 2>/dev/null || true
  nft delete table inet soulbox_sbsdb 2>/dev/null || true
  [ -z "${KEY_ID:-}" ] || "$SOULBOX" --data-dir "$DATA_DIR" keys revoke "$KEY_ID" >/dev/null 2>&1 || true
}
trap cleanup EXIT
. scripts/lib/local-server.sh
start_local_server "$SOULBOX" "$DATA_DIR" sbsdb 10.216.0.0/16 "$LOG_DIR/server.log"
export E2B_API_URL="$API" E2B_SANDBOX_URL="$API" E2B_API_KEY="$KEY"
echo "== Rust SDK (and raw HTTP, plain reqwest)"
target/release/examples/bench
echo "== official e2b Python SDK ($("$PY" -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
"$PY" crates/soulbox/examples/bench_python.py
