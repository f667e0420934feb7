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

source bench/lib.sh
SERVER_ENV=()
bench_build
mkdir -p "$DATA"
LOG="$(mktemp)"
trap 'bench_stop; rm -f "$LOG"' EXIT
bench_start "$LOG" --runtime "${RUNTIME:-runc}"
E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_VOLUME_API_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$KEY" \
  SOULBOX_DATA_DIR="$DATA" "$VENV/bin/python" "${BENCH:-bench/server_bench.py}"
