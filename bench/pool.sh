#!/usr/bin/env bash
# Booted pool benchmark (not a test; issue 18 goal 1): builds the release server and static envd, then in one run
# starts `soulbox server` three times on the same loopback port and data dir — without a booted pool, with
# `--booted-pool base=$POOL` and SQLite's synchronous=full, then with the pool and the store's defaults — and
# runs bench/pool_bench.py against each (raw HTTP and the official Python SDK),
# printing both side by side with the pool's hits counted in the server log. Every sandbox is killed at the end.
# Usage (as root, under the heavy lock): flock /tmp/soulbox-heavy.lock bench/pool.sh
#   env: N=30 (sequential creates per measure) TOTAL=48 (sustained creates at concurrency 8) POOL=8 PORT=3191
#        SOULBOX_BENCH_DATA=/var/tmp/soulbox-bench-pool PREFIX=sbbp NETWORK_POOL=10.232.0.0/16
#        TEMPLATE_DIR=<a template store with base built> (default: the data dir's own, built on first start)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-3191}"
DATA="${SOULBOX_BENCH_DATA:-/var/tmp/soulbox-bench-pool}"
POOL="${POOL:-8}"
PREFIX="${PREFIX:-sbbp}"
NETWORK_POOL="${NETWORK_POOL:-10.232.0.0/16}"
VENV="$ROOT/tests/compat/.venv-latest"
[ -x "$VENV/bin/python" ] || { echo "missing $VENV: run tests/compat/run.sh once" >&2; exit 1; }

source bench/lib.sh
SERVER_ENV=()
bench_build
mkdir -p "$DATA"
if [ -n "${TEMPLATE_DIR:-}" ]; then printf 'template_dir = "%s"\n' "$TEMPLATE_DIR" >"$DATA/config.toml"; else : >"$DATA/config.toml"; fi
LOG="$(mktemp)"
trap 'bench_stop; rm -f "$LOG"' EXIT

# start [flags...]: the server with extra flags, until its key line is printed.
start() {
  bench_start "$LOG" --prefix "$PREFIX" --network-pool "$NETWORK_POOL" "$@"
}

measure() {
  E2B_API_URL="http://127.0.0.1:$PORT" E2B_SANDBOX_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$KEY" \
    SOULBOX_DATA_DIR="$DATA" POOL="$1" "$VENV/bin/python" bench/pool_bench.py
}

start
off="$(measure 0)"
bench_stop
# The same pool with SQLite waiting for the disk on every commit (the store's default before 2026-12-07).
start --booted-pool "base=$POOL" --database-url "sqlite://$DATA/soulbox.db?mode=rwc&synchronous=full"
full="$(measure "$POOL")"
bench_stop
start --booted-pool "base=$POOL"
on="$(measure "$POOL")"
hits="$(grep -c 'claimed from the booted pool' "$LOG" || true)"
bench_stop

"$VENV/bin/python" - "$off" "$full" "$on" "$hits" "$POOL" <<'PY'
import json, sys
off, full, on = (json.loads(a) for a in sys.argv[1:4])
hits, pool = sys.argv[4], sys.argv[5]
cols = (off, full, on)
print(f"{'':28}{'pool off':>22}{'pool, sync=full':>22}{'booted pool (base=' + pool + ')':>26}")
for k, label in (("raw_create", "raw HTTP create"), ("raw_create_cmd", "raw HTTP create + cmd"),
                 ("sdk_create", "Python SDK create"), ("sdk_create_cmd", "Python SDK create + cmd")):
    print(f"{label:<28}" + "".join(f"{c[k]['p50']:>11.1f} / {c[k]['p90']:<6.1f} ms" for c in cols) + "   (p50 / p90)")
for k, label in (("burst8", "8 creates at once"), ("sustained8", f"{on['sustained8']['total']} creates, concurrency 8")):
    print(f"{label:<28}" + "".join(f"{c[k]['rate']:>10.1f} /s (err {c[k]['errors']})" for c in cols))
print(f"pool hits in the last server log: {hits}; pooled before the burst: {on['pooled_before_burst']}")
PY
