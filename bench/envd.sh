#!/usr/bin/env bash
# envd benchmark (not a test). Builds soulbox-envd (release), starts it as tests/compat/run.sh does, and prints:
#   (a) commands.run("true") round trip through the official Python SDK, p50/p99
#   (b) the same through a raw HTTP/1.1 client (crates/soulbox-envd/examples/envd_bench.rs), p50/p99: Process/Start
#       of /bin/true (envd's own cost) and of `/bin/bash -l -c true` (exactly what (a) sends)
#   (c) a plain posix_spawn of /bin/true, p50/p99, for the ratio; and a spawn of `bash -l -c true` as the sandbox
#       user, which is what (a) runs (the SDK always wraps commands in a login shell)
#   (d) download/upload throughput of a 256 MiB file (SDK and curl against /files) vs a local `cp`
#   (e) envd RSS idle (VmRSS from /proc/<pid>/status), before and after the workload
# Goals: raw round trip p50 < 2 ms; transfer >= 1/2 of a local copy; RSS < 10 MiB idle.
#
# Usage (as root): bench/envd.sh          env: N=200 WARMUP=20 SIZE_MIB=256 RUNS=3 SKIP_BUILD=1
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=../tests/compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh"

N="${N:-200}"
WARMUP="${WARMUP:-20}"
SIZE_MIB="${SIZE_MIB:-256}"
RUNS="${RUNS:-3}"
VENV_VER=latest
BENCH_DIR=""

cleanup() {
  stop_envd
  [ -z "$BENCH_DIR" ] || rm -rf -- "$BENCH_DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

require_root
ensure_user
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building soulbox-envd and the envd_bench example (release)"
  (cd "$ROOT" && cargo build -p soulbox-envd --release --bin soulbox-envd --example envd_bench)
fi
RAW_BENCH="$ROOT/target/release/examples/envd_bench"
[ -x "$RAW_BENCH" ] || die "no $RAW_BENCH"
ensure_venv "$VENV_VER"
PY="$COMPAT_DIR/.venv-$VENV_VER/bin/python"

TOKEN="$(new_token)"
export SOULBOX_ENVD_TOKEN="$TOKEN" E2B_DEBUG=true
start_envd bench "$TOKEN" '{}'

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$ENVD_PID/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$ENVD_PID/status"; }
now() { date +%s.%N; }
# median of the numbers on stdin
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1" | head -n1; }

sleep 1
RSS_START="$(rss_kib)"

log "raw HTTP client + posix_spawn baseline (n=$N, warmup=$WARMUP)"
RAW_OUT="$("$RAW_BENCH" --addr "127.0.0.1:$PORT" --token "$TOKEN" -n "$N" --warmup "$WARMUP")"
echo "$RAW_OUT"

log "Python SDK commands.run(\"true\") (n=$N)"
SDK_OUT="$(cd "$HERE" && "$PY" sdk_bench.py roundtrip "$N" "$WARMUP")"
echo "$SDK_OUT"

log "file transfer: ${SIZE_MIB} MiB, median of $RUNS runs"
BENCH_DIR="$(mktemp -d "$SANDBOX_HOME/.soulbox-bench.XXXXXX")"
chown "$SANDBOX_USER:$SANDBOX_USER" "$BENCH_DIR"
SRC="$BENCH_DIR/src.bin"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
chown "$SANDBOX_USER:$SANDBOX_USER" "$SRC"
BYTES="$(stat -c %s "$SRC")"
SRC_SUM="$(sha256sum "$SRC" | cut -d' ' -f1)"

timed() { local t0 t1; t0="$(now)"; "$@" >/dev/null; t1="$(now)"; awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f\n", b-a}'; }
sdk_seconds() { field "$("$PY" "$HERE/sdk_bench.py" "$@")" seconds; }
check_sum() { [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SRC_SUM" ] || die "$2: content differs"; rm -f "$1"; }

CP_T=(); CAT_T=(); CURL_DL_T=(); CURL_NULL_T=(); CURL_UL_T=(); SDK_DL_T=(); SDK_UL_T=()
HAVE_CURL=""; command -v curl >/dev/null && HAVE_CURL=1
for _ in $(seq 1 "$RUNS"); do
  sync
  CP_T+=("$(timed cp "$SRC" "$BENCH_DIR/cp.bin")"); check_sum "$BENCH_DIR/cp.bin" cp
  # cp may copy in the kernel (copy_file_range); a userspace read+write copy for reference
  CAT_T+=("$(timed dd if="$SRC" of="$BENCH_DIR/dd.bin" bs=1M status=none)"); check_sum "$BENCH_DIR/dd.bin" dd
  if [ -n "$HAVE_CURL" ]; then
    CURL_DL_T+=("$(curl -sS --fail -o "$BENCH_DIR/dl.bin" -w '%{time_total}' -H "X-Access-Token: $TOKEN" \
      "http://127.0.0.1:$PORT/files?path=$SRC")"); check_sum "$BENCH_DIR/dl.bin" "curl download"
    CURL_NULL_T+=("$(curl -sS --fail -o /dev/null -w '%{time_total}' -H "X-Access-Token: $TOKEN" \
      "http://127.0.0.1:$PORT/files?path=$SRC")")
    CURL_UL_T+=("$(curl -sS --fail -o /dev/null -w '%{time_total}' -X POST -T "$SRC" \
      -H 'Content-Type: application/octet-stream' -H "X-Access-Token: $TOKEN" \
      "http://127.0.0.1:$PORT/files?path=$BENCH_DIR/ul.bin")"); check_sum "$BENCH_DIR/ul.bin" "curl upload"
  fi
  SDK_DL_T+=("$(sdk_seconds download "$SRC" "$BENCH_DIR/sdl.bin")"); check_sum "$BENCH_DIR/sdl.bin" "SDK download"
  SDK_UL_T+=("$(sdk_seconds upload "$SRC" "$BENCH_DIR/sul.bin")"); check_sum "$BENCH_DIR/sul.bin" "SDK upload"
done

sleep 2
RSS_END="$(rss_kib)"
HWM="$(hwm_kib)"

# ---- table ----------------------------------------------------------------------------------------------------------
mibps() { awk -v b="$BYTES" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b / 1048576 / s; else print "n/a" }'; }
med() { printf '%s\n' "$@" | median; }
CP_S="$(med "${CP_T[@]}")"
CP_MIBPS="$(mibps "$CP_S")"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { awk -v v="$1" -v g="$2" -v op="$3" 'BEGIN { ok = (op == "<") ? (v < g) : (v >= g); print ok ? "ok" : "MISSED" }'; }

RAW_P50="$(field "$(grep raw_http_start_true <<<"$RAW_OUT")" p50_ms)"
RAW_P99="$(field "$(grep raw_http_start_true <<<"$RAW_OUT")" p99_ms)"
RAWB_P50="$(field "$(grep 'raw_http_start_bash_login ' <<<"$RAW_OUT")" p50_ms)"
RAWB_P99="$(field "$(grep 'raw_http_start_bash_login ' <<<"$RAW_OUT")" p99_ms)"
SP_P50="$(field "$(grep '^posix_spawn_true' <<<"$RAW_OUT")" p50_ms)"
SP_P99="$(field "$(grep '^posix_spawn_true' <<<"$RAW_OUT")" p99_ms)"
BASH_P50="$(field "$(grep spawn_bash_login_true <<<"$RAW_OUT")" p50_ms)"
BASH_P99="$(field "$(grep spawn_bash_login_true <<<"$RAW_OUT")" p99_ms)"
BASH_USER="$(sed -n 's/^spawn_bash_login_user=//p' <<<"$RAW_OUT")"
SDK_P50="$(field "$SDK_OUT" p50_ms)"
SDK_P99="$(field "$SDK_OUT" p99_ms)"

row() { printf '%-44s %12s %12s %14s  %s\n' "$@"; }
echo
echo "soulbox-envd benchmark  ($(uname -srm), $(nproc) CPUs; n=$N, ${SIZE_MIB} MiB x $RUNS runs, median)"
row "measurement" "p50 / MiB/s" "p99" "vs baseline" "goal"
row "--------------------------------------------" "------------" "------------" "--------------" "----"
row "(c) posix_spawn /bin/true" "${SP_P50} ms" "${SP_P99} ms" "1.00x" ""
row "(c) spawn bash -l -c true (as $BASH_USER)" "${BASH_P50} ms" "${BASH_P99} ms" "$(ratio "$BASH_P50" "$SP_P50")x" ""
row "(b) raw HTTP Process/Start /bin/true" "${RAW_P50} ms" "${RAW_P99} ms" "$(ratio "$RAW_P50" "$SP_P50")x spawn" "p50 < 2 ms: $(verdict "$RAW_P50" 2 "<")"
row "(b) raw HTTP Process/Start bash -l -c true" "${RAWB_P50} ms" "${RAWB_P99} ms" "$(ratio "$RAWB_P50" "$BASH_P50")x bash" ""
row "(a) SDK commands.run(\"true\") (bash -l)" "${SDK_P50} ms" "${SDK_P99} ms" "$(ratio "$SDK_P50" "$BASH_P50")x bash" ""
row "(d) local cp" "$CP_MIBPS MiB/s" "" "1.00x" ""
v="$(mibps "$(med "${CAT_T[@]}")")"; row "(d) local dd bs=1M (userspace copy)" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" ""
if [ -n "$HAVE_CURL" ]; then
  v="$(mibps "$(med "${CURL_DL_T[@]}")")"; row "(d) download, curl GET /files" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" ">= 0.5x: $(verdict "$(ratio "$v" "$CP_MIBPS")" 0.5 ">=")"
  v="$(mibps "$(med "${CURL_NULL_T[@]}")")"; row "(d) download, curl GET /files > /dev/null" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" "(envd serving rate)"
  v="$(mibps "$(med "${CURL_UL_T[@]}")")"; row "(d) upload, curl POST /files (octet-stream)" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" ">= 0.5x: $(verdict "$(ratio "$v" "$CP_MIBPS")" 0.5 ">=")"
fi
v="$(mibps "$(med "${SDK_DL_T[@]}")")"; row "(d) download, SDK files.read(stream)" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" ">= 0.5x: $(verdict "$(ratio "$v" "$CP_MIBPS")" 0.5 ">=")"
v="$(mibps "$(med "${SDK_UL_T[@]}")")"; row "(d) upload, SDK files.write(file)" "$v MiB/s" "" "$(ratio "$v" "$CP_MIBPS")x cp" ">= 0.5x: $(verdict "$(ratio "$v" "$CP_MIBPS")" 0.5 ">=")"
row "(e) envd RSS idle at start" "$(awk -v k="$RSS_START" 'BEGIN{printf "%.1f MiB", k/1024}')" "" "" "< 10 MiB: $(verdict "$RSS_START" 10240 "<")"
row "(e) envd RSS idle after workload" "$(awk -v k="$RSS_END" 'BEGIN{printf "%.1f MiB", k/1024}')" "" "peak $(awk -v k="$HWM" 'BEGIN{printf "%.1f MiB", k/1024}')" "< 10 MiB: $(verdict "$RSS_END" 10240 "<")"
