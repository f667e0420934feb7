#!/usr/bin/env bash
# Create/kill throughput at concurrency 8 (not a test; issue 18 goal 3): builds the release server and static envd,
# then in one run starts `soulbox server` twice on the same loopback port and data dir — first with the host
# firewall's constant sets written inline in every sandbox chain as before (SOULBOX_BENCH_INLINE_NFT_SETS=1), then
# with the named sets (the default) — and runs bench/throughput_bench.py against each: creates/s and kills/s with
# 10 and with 300 sandboxes running, and a per-stage breakdown from the server's debug log. Both side by side.
# Usage (as root, under the heavy lock): flock /tmp/soulbox-heavy.lock bench/throughput.sh
#   env: LEVELS=10,300 TOTAL=48 PORT=3192 SOULBOX_BENCH_DATA=/var/tmp/soulbox-bench-throughput PREFIX=sbtp
#        NETWORK_POOL=10.234.0.0/16 TEMPLATE_DIR=<a template store with base built> MODES="inline named"
#        (a mode is a server setting: `inline` the old inline nft sets, any other name the defaults)
#        SOULBOX_BIN=<a built soulbox binary: skips the build> PERF=1 (perf record -a during the create phases;
#        the top processes and kernel symbols are printed)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PORT="${PORT:-3192}"
DATA="${SOULBOX_BENCH_DATA:-/var/tmp/soulbox-bench-throughput}"
PREFIX="${PREFIX:-sbtp}"
NETWORK_POOL="${NETWORK_POOL:-10.234.0.0/16}"
MODES="${MODES:-inline named}"
VENV="$ROOT/tests/compat/.venv-latest"
[ -x "$VENV/bin/python" ] || { echo "missing $VENV: run tests/compat/run.sh once" >&2; exit 1; }

source bench/lib.sh
BIN="${SOULBOX_BIN:-}"
[ -n "$BIN" ] || bench_build
mkdir -p "$DATA"
{
  [ -z "${TEMPLATE_DIR:-}" ] || printf 'template_dir = "%s"\n' "$TEMPLATE_DIR"
  printf '[teams]\nmax_sandboxes = 1000\nmax_vcpus = 100000\nmax_memory_mb = 100000000\n'
} >"$DATA/config.toml"
LOG="$DATA/server.log"
trap 'bench_stop' EXIT

# start <inline 0|1>: the server, until its key line is printed.
start() {
  SERVER_ENV=(SOULBOX_BENCH_INLINE_NFT_SETS="$1" SOULBOX_LOG="info,soulbox_runtime=debug"
    NO_COLOR=1)
  bench_start "$LOG" --prefix "$PREFIX" --network-pool "$NETWORK_POOL"
}

PERF_DIR=""
[ -z "${PERF:-}" ] || PERF_DIR="$DATA"
OUT=()
for mode in $MODES; do
  inline=0
  [ "$mode" = inline ] && inline=1
  start "$inline"
  OUT+=("$(E2B_API_URL="http://127.0.0.1:$PORT" E2B_API_KEY="$KEY" SERVER_LOG="$LOG" PERF_DIR="$PERF_DIR" \
    LABEL="$mode" "$VENV/bin/python" bench/throughput_bench.py)")
  bench_stop
done

"$VENV/bin/python" - "$MODES" "${OUT[@]}" <<'PY'
import json, sys
modes, runs = sys.argv[1].split(), [json.loads(a) for a in sys.argv[2:]]
levels = [k for k in runs[0] if k != "cleanup"]
for level in levels:
    print(f"--- {level} sandboxes running ---")
    print(f"{'':34}" + "".join(f"{m:>22}" for m in modes))
    for what in ("create", "kill"):
        row = lambda f: "".join(f"{f(r[level][what]):>22}" for r in runs)
        print(f"{what + 's/s at c8 (errors)':<34}" + row(lambda x: f"{x['rate']:.1f} ({x['errors']})"))
        print(f"{what + ' p50 / p90 ms':<34}" + row(lambda x: f"{x['p50_ms']:.0f} / {x['p90_ms']:.0f}"))
        for stage in runs[0][level][what]["stages"]:
            cell = lambda x: (lambda s: f"{s['p50_ms']:.1f} (n={s['n']})" if s else "-")(x["stages"].get(stage))
            print(f"  {stage[:32]:<32}" + row(cell))
for m, r in zip(modes, runs):
    print(f"cleanup {m}: {r['cleanup']}")
PY
if [ -n "$PERF_DIR" ]; then
  for f in "$PERF_DIR"/perf-*.data; do
    echo "--- $f: CPU by process (all CPUs, the create phase) ---"
    perf report -i "$f" --no-children --sort comm --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -14 || true
    echo "--- $f: top symbols ---"
    perf report -i "$f" --no-children --sort comm,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -20 || true
  done
fi
