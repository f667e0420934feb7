#!/usr/bin/env bash
# soulbox server benchmark (not a test): builds the release server and static envd, starts `soulbox server` on a
# loopback port with its own data dir (the base template is cached in /var/tmp/soulbox-bench-server), runs
# bench/server_bench.py with the official Python SDK, then kills every sandbox and stops the server.
# Usage (as root): bench/server.sh          env: N=30 SIZE_MIB=256 PORT=3190
#   BENCH=bench/snapshot_bench.py bench/server.sh   pause, snapshot and fork (issue 13)
#   BENCH=bench/volume_bench.py bench/server.sh     volumes vs the sandbox's own disk (issue 15)
#   BENCH=bench/density_bench.py N=1000 bench/server.sh   1,000 idle sandboxes: memory, latencies, CPU (issue 18)
#   RUNTIME=runsc                              the server's OCI runtime (default runc)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-3190}"
DATA="${SOULBOX_BENCH_DATA:-/var/tmp/soulbox-bench-server}"
VENV="$ROOT/tests/compat/.venv-latest"
[ -x "$VENV/bin/python" ] || { echo "missing $VENV: run tests/compat/run.sh once" >&2; exit 1; }

scripts/build-envd.sh >/dev/null
cargo build --release -p soulbox-cli
install -m 0755 target/static/x86_64-unknown-linux-gnu/release/soulbox-envd target/release/soulbox-envd-static
mkdir -p "$DATA"
LOG="$(mktemp)"
target/release/soulbox --data-dir "$DATA" server --listen "127.0.0.1:$PORT" --runtime "${RUNTIME:-runc}" >"$LOG" 2>&1 &
SERVER=$!
KEY=""
cleanup() {
  if [ -n "$KEY" ]; then
    # The listing pages by 100: list again until nothing is left (bounded, in case kills keep failing).
    for _ in $(seq 1 50); do
      ids="$(curl -s -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/v2/sandboxes" | "$VENV/bin/python" -c 'import json,sys; print(" ".join(s["sandboxID"] for s in json.load(sys.stdin)))' || true)"
      [ -n "$ids" ] || break
      for id in $ids; do
        curl -s -o /dev/null -X DELETE -H "X-API-Key: $KEY" "http://127.0.0.1:$PORT/sandboxes/$id"
      done
    done
  fi
  kill "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  rm -f "$LOG"
}
trap cleanup EXIT
for _ in $(seq 1 600); do grep -q '^export E2B_API_KEY' "$LOG" && break; kill -0 "$SERVER" || { cat "$LOG"; exit 1; }; sleep 0.5; done
# Off a terminal the first admin key is written to <data-dir>/admin-key, not printed.
KEY="$(cat "$DATA/admin-key" 2>/dev/null || true)"
if [ -z "$KEY" ]; then
  KEY="$(target/release/soulbox --data-dir "$DATA" keys create --name bench | grep -o 'e2b_[0-9a-f]*')"
fi
E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_VOLUME_API_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$KEY" \
  SOULBOX_DATA_DIR="$DATA" "$VENV/bin/python" "${BENCH:-bench/server_bench.py}"
