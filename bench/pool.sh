#!/usr/bin/env bash
# Booted pool benchmark (not a test; issue 18 goal 1): builds the release server and static envd, then in one run
# starts `soulbox server` once per RUNS entry on the same loopback port and data dir (by default without a booted
# pool, with `--booted-pool base=$POOL` and SQLite's synchronous=full, then with the pool and the store's
# defaults) and runs bench/pool_bench.py against each (raw HTTP and the official Python SDK), printing them side
# by side; for each pooled run, its hits counted in the server log and where a hit's time goes
# (bench/pool_stages.py on that server's log: its stage lines are debug, the log JSON lines). Every sandbox is
# killed at the end.
# Usage (as root, under the heavy lock): flock /tmp/soulbox-heavy.lock bench/pool.sh
#   env: RUNS="off full on" (which servers, see below; also `now`) N=30 (sequential creates per measure)
#        TOTAL=48 (sustained creates at concurrency 8) POOL=8 PORT=3191
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
SERVER_ENV=(SOULBOX_LOG_FORMAT=json "SOULBOX_LOG=info,soulbox_server::lifecycle::create=debug")
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

# One server per run in RUNS, each measured the same way; the pooled ones also give their hits and where a hit's
# time goes. off: no pool. full: the pool with SQLite waiting for the disk on every commit (the store's default
# before 2026-12-07). on: the pool. now: the pool refilling at once after a create (before 2026-12-07: a hit's
# insert and answer waited for the CPU the refill's boot took).
RUNS="${RUNS:-off full on}"
declare -a RESULTS=()
for run in $RUNS; do
  saved_env=("${SERVER_ENV[@]}")
  case "$run" in
    off) start ;;
    full) start --booted-pool "base=$POOL" --database-url "sqlite://$DATA/soulbox.db?mode=rwc&synchronous=full" ;;
    on) start --booted-pool "base=$POOL" ;;
    now) SERVER_ENV+=(SOULBOX_BENCH_BOOTED_REFILL_DELAY_MS=0); start --booted-pool "base=$POOL" ;;
    *) echo "unknown run $run (off, full, on, now)" >&2; exit 2 ;;
  esac
  SERVER_ENV=("${saved_env[@]}")
  pool=$POOL; [ "$run" = off ] && pool=0
  result="$(measure "$pool")"
  hits="$(grep -c 'claimed from the booted pool' "$LOG" || true)"
  bench_stop
  stages="$(cd bench && "$VENV/bin/python" pool_stages.py "$LOG")"
  RESULTS+=("{\"run\": \"$run\", \"result\": $result, \"hits\": $hits, \"stages\": $stages}")
done

"$VENV/bin/python" - "$POOL" "${RESULTS[@]}" <<'PY'
import json, sys
pool, runs = sys.argv[1], [json.loads(a) for a in sys.argv[2:]]
names = {"off": "pool off", "full": "pool, sync=full", "on": f"booted pool (base={pool})", "now": "pool, refill at once"}
cols = [r["result"] for r in runs]
print(f"{'':28}" + "".join(f"{names[r['run']]:>26}" for r in runs))
for k, label in (("raw_create", "raw HTTP create"), ("raw_create_cmd", "raw HTTP create + cmd"),
                 ("sdk_create", "Python SDK create"), ("sdk_create_cmd", "Python SDK create + cmd")):
    print(f"{label:<28}" + "".join(f"{c[k]['p50']:>15.1f} / {c[k]['p90']:<6.1f} ms" for c in cols) + "   (p50 / p90)")
for k, label in (("burst8", "8 creates at once"), ("sustained8", f"{cols[0]['sustained8']['total']} creates, conc. 8")):
    print(f"{label:<28}" + "".join(f"{c[k]['rate']:>14.1f} /s (err {c[k]['errors']})" for c in cols))
for r in runs:
    if r["run"] == "off":
        continue
    st = r["stages"]
    print(f"\n{names[r['run']]}: {r['hits']} pool hits, pooled before the burst: {r['result']['pooled_before_burst']}; "
          f"where a hit's time goes ({st['hits']} hits served alone; p50 / p90 ms):")
    for name, v in st.get("stages", {}).items():
        print(f"  {name:<58}{v['p50_ms']:>8.3f} / {v['p90_ms']:.3f}")
PY
