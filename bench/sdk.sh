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
cargo build --release -p soulbox-server --bin soulbox -p soulbox --example bench
SOULBOX="$ROOT/target/release/soulbox"
mkdir -p "$DATA_DIR" "$LOG_DIR"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
API="http://127.0.0.1:$PORT"
KEY="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name sdk-bench | sed -n 's/^export E2B_API_KEY=//p')"
[ -n "$KEY" ] || { echo "could not create an API key" >&2; exit 1; }
"$SOULBOX" --data-dir "$DATA_DIR" server --listen "127.0.0.1:$PORT" --prefix sbsdb --network-pool 10.216.0.0/16 \
  --envd-path "$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd" >"$LOG_DIR/server.log" 2>&1 &
SERVER_PID=$!
cleanup() {
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  nft delete table inet soulbox_sbsdb 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 1 600); do   # the first start on an empty data dir builds `base` (~1 min)
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$API/health" 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$LOG_DIR/server.log" >&2; exit 1; }
  sleep 0.5
done
export E2B_API_URL="$API" E2B_SANDBOX_URL="$API" E2B_API_KEY="$KEY"
echo "== Rust SDK (and raw HTTP, plain reqwest)"
target/release/examples/bench
echo "== official e2b Python SDK ($("$PY" -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
"$PY" crates/soulbox/examples/bench_python.py
