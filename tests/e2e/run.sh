#!/usr/bin/env bash
# End-to-end proof of issue 4: a real `soulbox server` (runc, the in-process node runtime, the static envd) driven
# by the official e2b Python SDK — pinned 2.45.1 (v1 create/connect paths) and the newest release (v2 paths) —
# plus raw HTTP, through E2B_API_URL + E2B_SANDBOX_URL; then a server restart (kill -9) with a running and a paused
# sandbox (test_restart.py, newest SDK); then cleanup through the API and a host leak check (also on failure).
#
# Usage (as root: the node runtime needs mounts, netns, cgroups, nftables):
#   tests/e2e/run.sh                      # both SDK versions
#   tests/e2e/run.sh -k pause -x          # extra args go to pytest
# Environment:
#   SOULBOX_E2E_VERSIONS="2.45 latest"    which tests/compat/requirements-<v>.txt venvs to run
#   SOULBOX_E2E_DIR=/var/tmp/soulbox-e2e  persistent data dir. It keeps the built `base` template (the first run
#                                         builds it with mmdebstrap, ~1 min; later runs reuse it) and the SQLite
#                                         store; every run creates a fresh API key and kills every sandbox it
#                                         finds before and after the tests. `rm -rf` it to start from scratch.
#   SOULBOX_E2E_SKIP_BUILD=1              use the existing target/debug/soulbox and static envd
#   SOULBOX_E2E_SKIP_JS=1                 skip the e2b npm SDK tests (tests/e2e/js)
#   PYTHON=python3                        interpreter for the venvs (shared with tests/compat)
# Isolation on a shared machine: the server runs with its own runtime prefix (`sbe2e`: netns `sbe2e-<id>`, nft
# table `soulbox_sbe2e`, cgroup parent `soulbox_sbe2e`) and address pool (10.213.0.0/16), so it never touches
# another SoulBox instance's host objects. Server log: target/e2e/server.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh" # log, die, ensure_venv

VERSIONS="${SOULBOX_E2E_VERSIONS:-2.45 latest}"
DATA_DIR="${SOULBOX_E2E_DIR:-/var/tmp/soulbox-e2e}"
PREFIX=sbe2e
POOL=10.213.0.0/16
DOMAIN=e2e.soulbox.test
MAX_LIFETIME_S=600
E2E_LOG_DIR="$ROOT/target/e2e"
SERVER_LOG="$E2E_LOG_DIR/server.log"
SOULBOX="$ROOT/target/debug/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
SERVER_PID=""
API_URL=""
API_KEY=""
KEY_ID=""

[ "$(id -u)" = 0 ] || die "must run as root (the node runtime needs mounts, netns, cgroups, nftables)"

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# api <method> <path>: prints the body; fails on a transport error only.
api() {
  "$PYTHON" - "$API_URL" "$API_KEY" "$1" "$2" <<'EOF'
import sys, urllib.request, urllib.error
url, key, method, path = sys.argv[1:]
req = urllib.request.Request(url + path, method=method, headers={"X-API-Key": key})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=60) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(e.read().decode())
EOF
}

sandbox_ids() {
  api GET "/v2/sandboxes?state=running,paused" \
    | "$PYTHON" -c 'import json,sys; [print(s["sandboxID"]) for s in json.load(sys.stdin)]'
}

kill_all_sandboxes() {
  local id ids
  ids="$(sandbox_ids)" || { echo "could not list sandboxes" >&2; return 1; }
  for id in $ids; do
    echo "killing sandbox $id" >&2
    api DELETE "/sandboxes/$id" >/dev/null || true
  done
}

start_server() {
  local port="${1:-}"
  [ -n "$port" ] || port="$(free_port)"
  API_URL="http://127.0.0.1:$port"
  mkdir -p "$E2E_LOG_DIR" "$DATA_DIR"
  [ -n "$API_KEY" ] || : >"$SERVER_LOG"
  # Metrics every second so get_metrics has samples quickly; the rest comes from flags below.
  cat >"$DATA_DIR/config.toml" <<EOF
metrics_interval_s = 1
warm_pool = 2
EOF
  # A fresh key per run (the admin key is printed only on the store's first start); a restart keeps it.
  if [ -z "$API_KEY" ]; then
    local out
    out="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name "e2e-$(date +%s)")"
    KEY_ID="$(sed -n 's/^created key \([^ ]*\) .*/\1/p' <<<"$out")"
    API_KEY="$(sed -n 's/^export E2B_API_KEY=\([^ ]*\).*/\1/p' <<<"$out")"
    [ -n "$API_KEY" ] || die "could not create an API key: $out"
  fi
  log "starting soulbox server on $API_URL (data dir $DATA_DIR, log $SERVER_LOG)"
  SOULBOX_LOG="${SOULBOX_LOG:-info}" "$SOULBOX" --data-dir "$DATA_DIR" server --listen "127.0.0.1:$port" \
    --envd-path "$ENVD" --domain "$DOMAIN" --max-lifetime-s "$MAX_LIFETIME_S" \
    --prefix "$PREFIX" --network-pool "$POOL" >>"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local _
  # First start builds the base template (minutes); later starts take seconds.
  local starts
  starts="$(grep -c '^export E2B_API_KEY=' "$SERVER_LOG" 2>/dev/null || true)"
  for _ in $(seq 1 1800); do
    [ "$(grep -c '^export E2B_API_KEY=' "$SERVER_LOG" 2>/dev/null || true)" -gt "$starts" ] && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -50 "$SERVER_LOG" >&2; SERVER_PID=""; die "server exited during start"; }
    sleep 0.2
  done
  tail -50 "$SERVER_LOG" >&2
  die "server did not become ready within 6 minutes"
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  local _
  for _ in $(seq 1 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "server did not stop within 30 s; killing it" >&2
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# Everything the runtime creates on the host for this instance; prints leftovers, returns 1 if any.
check_leaks() {
  local leaks="" out
  out="$(runc --root "$DATA_DIR/node/oci" list -q 2>/dev/null || true)"
  [ -z "$out" ] || leaks+="runc containers (runc --root $DATA_DIR/node/oci list):"$'\n'"$out"$'\n'
  out="$(ip netns list | grep -E "^$PREFIX-" || true)"
  [ -z "$out" ] || leaks+="network namespaces:"$'\n'"$out"$'\n'
  out="$(ip -o link show | grep -oE ": $PREFIX[a-z0-9]*[@:]" || true)"
  [ -z "$out" ] || leaks+="veth links:"$'\n'"$out"$'\n'
  out="$(awk -v d="$DATA_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo)"
  [ -z "$out" ] || leaks+="mounts under $DATA_DIR:"$'\n'"$out"$'\n'
  out="$(ls -A "$DATA_DIR/node/sandboxes" 2>/dev/null || true)"
  [ -z "$out" ] || leaks+="sandbox directories in $DATA_DIR/node/sandboxes:"$'\n'"$out"$'\n'
  out="$(find "/sys/fs/cgroup/soulbox_$PREFIX" -mindepth 1 -type d 2>/dev/null || true)"
  [ -z "$out" ] || leaks+="cgroups:"$'\n'"$out"$'\n'
  out="$(nft list table inet "soulbox_$PREFIX" 2>/dev/null | grep -E '^\s*chain sb_' || true)"
  [ -z "$out" ] || leaks+="nft sandbox chains (table inet soulbox_$PREFIX):"$'\n'"$out"$'\n'
  if [ -n "$leaks" ]; then
    printf 'LEAKED after the e2e run:\n%s' "$leaks" >&2
    return 1
  fi
  echo "leak check: nothing left behind (runc, netns, veths, mounts, sandbox dirs, cgroups, nft chains)" >&2
}

cleanup() {
  local rc=$?
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "cleanup: killing remaining sandboxes through the API"
    kill_all_sandboxes
    # Kills are synchronous; a sandbox the lifecycle was still pausing/resuming shows up on a second look.
    [ -z "$(sandbox_ids)" ] || kill_all_sandboxes
  fi
  stop_server
  [ -z "$KEY_ID" ] || "$SOULBOX" --data-dir "$DATA_DIR" keys revoke "$KEY_ID" >/dev/null 2>&1
  log "leak check"
  if ! check_leaks; then
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${SOULBOX_E2E_SKIP_BUILD:-}" ]; then
  log "building the static envd and the server (debug)"
  (cd "$ROOT" && scripts/build-envd.sh >/dev/null && cargo build -p soulbox-server)
fi
[ -x "$SOULBOX" ] || die "no $SOULBOX"
[ -x "$ENVD" ] || die "no $ENVD"
for ver in $VERSIONS; do ensure_venv "$ver"; done

start_server
stale="$(sandbox_ids)"
if [ -n "$stale" ]; then
  log "killing sandboxes left by an earlier run: $(echo $stale)"
  kill_all_sandboxes
fi

status=0
summary=""
for ver in $VERSIONS; do
  py="$ROOT/tests/compat/.venv-$ver/bin/python"
  sdk="$("$py" -c 'from importlib.metadata import version; print(version("e2b"))')"
  log "e2b $sdk against soulbox server $API_URL"
  rc=0
  (
    cd "$HERE"
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
    SOULBOX_E2E_DOMAIN="$DOMAIN" SOULBOX_E2E_MAX_LIFETIME_S="$MAX_LIFETIME_S" SOULBOX_E2E_SERVER_LOG="$SERVER_LOG" \
    NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
      "$py" -m pytest "$@"
  ) || rc=$?
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+="  e2b $sdk: FAILED (pytest exit $rc)"$'\n'
  else
    summary+="  e2b $sdk: passed"$'\n'
  fi
done

# The official e2b npm SDK through Node (tests/e2e/js, pinned in its package-lock.json).
if [ -z "${SOULBOX_E2E_SKIP_JS:-}" ]; then
  log "e2b npm SDK against soulbox server $API_URL"
  rc=0
  (
    cd "$HERE/js"
    npm ci --no-audit --no-fund --silent
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" npm test --silent
  ) || rc=$?
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+="  e2b npm SDK: FAILED (exit $rc)"$'\n'
  else
    summary+="  e2b npm SDK: passed"$'\n'
  fi
fi

# A server restart (kill -9) in the middle: running and paused sandboxes survive it (newest SDK).
last="${VERSIONS##* }"
py="$ROOT/tests/compat/.venv-$last/bin/python"
state_file="$E2E_LOG_DIR/restart-state.json"
run_phase() {
  (
    cd "$HERE"
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
    SOULBOX_E2E_RESTART_PHASE="$1" SOULBOX_E2E_RESTART_STATE="$state_file" NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
      "$py" -m pytest -q test_restart.py
  )
}
log "server restart (kill -9) with a running and a paused sandbox"
rc=0
run_phase before || rc=$?
if [ "$rc" -eq 0 ]; then
  port="${API_URL##*:}"
  kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  start_server "$port"
  run_phase after || rc=$?
fi
if [ "$rc" -ne 0 ]; then
  status=1
  summary+="  server restart: FAILED"$'\n'
else
  summary+="  server restart: passed"$'\n'
fi

log "e2e summary"
printf '%s' "$summary"
exit "$status"
