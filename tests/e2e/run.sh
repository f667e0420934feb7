#!/usr/bin/env bash
# End-to-end proof of issue 4: a real `soulbox server` (runc, the in-process node runtime, the static envd) driven
# by the official e2b Python SDK — pinned 2.45.1 (v1 create/connect paths) and the newest release (v2 paths) —
# plus raw HTTP, through E2B_API_URL + E2B_SANDBOX_URL; the official npm SDKs (tests/e2e/js: e2b,
# @e2b/code-interpreter newest and pinned, @e2b/desktop); then a server restart (kill -9) with a running and a
# paused sandbox (test_restart.py, newest SDK); then cleanup through the API and a host leak check (also on failure).
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
#   SOULBOX_E2E_ONLY_JS=1                 only the npm SDK tests: no Python venvs, pytest or restart phase
#   SOULBOX_E2E_ONLY_POOL=1               only the booted pool phase (test_booted_pool.py; newest SDK)
#   SOULBOX_E2E_CONFIG_EXTRA='...'        more top-level lines for the server's config.toml (e.g. a template_dir
#                                         shared with another data dir whose templates are built)
#   SOULBOX_E2E_PREFIX=sbe2e, SOULBOX_E2E_POOL=10.213.0.0/16
#                                         runtime prefix and address pool (to run beside another instance)
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
PREFIX="${SOULBOX_E2E_PREFIX:-sbe2e}"
POOL="${SOULBOX_E2E_POOL:-10.213.0.0/16}"
KEY_NAME=e2e
KEY_ARGS=--admin # test_nodes uses the admin routes
DOMAIN=e2e.soulbox.test
MAX_LIFETIME_S=600
E2E_LOG_DIR="$ROOT/target/e2e"
SERVER_LOG="$E2E_LOG_DIR/server.log"
SOULBOX="$ROOT/target/debug/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"

[ "$(id -u)" = 0 ] || die "must run as root (the node runtime needs mounts, netns, cgroups, nftables)"

# shellcheck source=../lib/server.sh
. "$ROOT/tests/lib/server.sh" # start_server, stop_server, shutdown_server, kill_all_sandboxes, check_leaks

trap_suite_exit

build_server_unless "${SOULBOX_E2E_SKIP_BUILD:-}"
ONLY_JS="${SOULBOX_E2E_ONLY_JS:-}"
[ -z "$ONLY_JS" ] || [ -z "${SOULBOX_E2E_SKIP_JS:-}" ] || die "SOULBOX_E2E_ONLY_JS and SOULBOX_E2E_SKIP_JS together run nothing"
[ -z "$ONLY_JS" ] || VERSIONS=""
ONLY_POOL="${SOULBOX_E2E_ONLY_POOL:-}"
[ -z "$ONLY_POOL" ] || VERSIONS="${VERSIONS##* }"
for ver in $VERSIONS; do ensure_venv "$ver"; done

# The fake outside world's HTTPS (tests/e2e/test_network.py): a CA of its own, which the server's egress gateway
# trusts upstream (`egress_trusted_ca`), and a certificate for the outside's address.
OUTSIDE_TLS="$DATA_DIR/outside-tls"
if [ ! -s "$OUTSIDE_TLS/cert.pem" ]; then
  mkdir -p "$OUTSIDE_TLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=the outside world's CA" \
    -keyout "$OUTSIDE_TLS/ca.key" -out "$OUTSIDE_TLS/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=203.0.113.122" \
    -keyout "$OUTSIDE_TLS/key.pem" -out "$OUTSIDE_TLS/cert.csr" 2>/dev/null
  openssl x509 -req -in "$OUTSIDE_TLS/cert.csr" -CA "$OUTSIDE_TLS/ca.pem" -CAkey "$OUTSIDE_TLS/ca.key" -CAcreateserial \
    -days 3650 -extfile <(printf 'subjectAltName=IP:203.0.113.122') -out "$OUTSIDE_TLS/cert.pem" 2>/dev/null
fi
# Small volumes, so test_volumes.py can fill one.
SERVER_CONFIG_EXTRA="egress_trusted_ca = \"$OUTSIDE_TLS/ca.pem\"
volume_size_mb = 64
${SOULBOX_E2E_CONFIG_EXTRA:-}"

start_server
stale="$(sandbox_ids)"
if [ -n "$stale" ]; then
  log "killing sandboxes left by an earlier run: $(echo $stale)"
  kill_all_sandboxes
fi

# The shipped templates test_code_interpreter.py and test_desktop.py use are built on their first use (minutes
# when cold: apt): build them here, once per data dir, so no test's timeout includes a build. Their logs go to
# the server log.
SHIPPED="code-interpreter-v1 desktop"
[ -z "$ONLY_POOL" ] || SHIPPED=""
for shipped in $SHIPPED; do
  log "making sure $shipped is built (its first use builds it)"
  built_in="$SECONDS"
  made="$(curl -sS --noproxy '*' --max-time 1800 -H "X-API-Key: $API_KEY" -H 'Content-Type: application/json' \
    -d "{\"templateID\":\"$shipped\",\"timeout\":60}" "$API_URL/sandboxes")" || die "creating a $shipped sandbox failed"
  made_id="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxID"])' <<<"$made")" ||
    die "creating a $shipped sandbox: $made"
  api DELETE "/sandboxes/$made_id" >/dev/null
  log "$shipped ready after $((SECONDS - built_in)) s"
done

status=0
summary=""
[ -z "$ONLY_POOL" ] || SOULBOX_E2E_SKIP_JS=1
PYTEST_VERSIONS="$VERSIONS"
[ -z "$ONLY_POOL" ] || PYTEST_VERSIONS=""
for ver in $PYTEST_VERSIONS; do
  py="$ROOT/tests/compat/.venv-$ver/bin/python"
  sdk="$("$py" -c 'from importlib.metadata import version; print(version("e2b"))')"
  log "e2b $sdk against soulbox server $API_URL"
  rc=0
  (
    cd "$HERE"
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_VOLUME_API_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
    SOULBOX_E2E_DOMAIN="$DOMAIN" SOULBOX_E2E_MAX_LIFETIME_S="$MAX_LIFETIME_S" SOULBOX_E2E_SERVER_LOG="$SERVER_LOG" \
    SOULBOX_E2E_OUTSIDE_TLS="$OUTSIDE_TLS" NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
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
  js_started="$SECONDS"
  rc=0
  (
    cd "$HERE/js"
    npm ci --no-audit --no-fund --silent
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_VOLUME_API_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" npm test --silent
  ) || rc=$?
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+="  e2b npm SDK: FAILED (exit $rc)"$'\n'
  else
    summary+="  e2b npm SDK: passed ($((SECONDS - js_started)) s)"$'\n'
  fi
fi

if [ -n "$ONLY_JS" ]; then
  log "e2e summary (npm SDKs only)"
  printf '%s' "$summary"
  exit "$status"
fi

# A server restart (kill -9) in the middle: running and paused sandboxes survive it (newest SDK).
last="${VERSIONS##* }"
py="$ROOT/tests/compat/.venv-$last/bin/python"
state_file="$E2E_LOG_DIR/restart-state.json"
run_phase() {
  (
    cd "$HERE"
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_VOLUME_API_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
    SOULBOX_E2E_RESTART_PHASE="$1" SOULBOX_E2E_RESTART_STATE="$state_file" SOULBOX_E2E_DATA_DIR="$DATA_DIR" \
    NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
      "$py" -m pytest -q test_restart.py
  )
}
if [ -z "$ONLY_POOL" ]; then
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
fi

# The booted pool (issue 18): the server restarted with `[pool] booted = { base = 2 }`; pooled sandboxes get their
# create's identity and share nothing (test_booted_pool.py), and a kill -9 with a full pool leaks nothing (the
# after-kill phase, then the final leak check after the server with its new pool shut down).
pool_phase() {
  (
    cd "$HERE"
    E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_VOLUME_API_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
    SOULBOX_E2E_SERVER_LOG="$SERVER_LOG" SOULBOX_E2E_DATA_DIR="$DATA_DIR" SOULBOX_E2E_PREFIX="$PREFIX" \
    SOULBOX_E2E_POOL_PHASE="$1" SOULBOX_E2E_POOL_STATE="$E2E_LOG_DIR/pool-state.json" NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
      "$py" -m pytest -q test_booted_pool.py
  )
}
log "booted pool: the server restarted with [pool] booted = { base = 2 }"
rc=0
port="${API_URL##*:}"
stop_server
SERVER_CONFIG_EXTRA+=$'\n[pool]\nbooted = { base = 2 }'
start_server "$port"
pool_phase identity || rc=$?
if [ "$rc" -eq 0 ]; then
  pool_phase before-kill || rc=$?
fi
if [ "$rc" -eq 0 ]; then
  kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  start_server "$port"
  pool_phase after-kill || rc=$?
fi
if [ "$rc" -ne 0 ]; then
  status=1
  summary+="  booted pool: FAILED"$'\n'
else
  summary+="  booted pool: passed"$'\n'
fi

log "e2e summary"
printf '%s' "$summary"
exit "$status"
