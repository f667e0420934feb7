# Sourced by the suites that drive one real `soulbox server` on this machine (tests/e2e, tests/security): start,
# stop, list and kill its sandboxes through the API, and check that nothing of the runtime's prefix is left on
# the host.
#
# The caller sets, before sourcing: ROOT, PYTHON, DATA_DIR, PREFIX, POOL, DOMAIN, MAX_LIFETIME_S, SOULBOX, ENVD,
# SERVER_LOG, and optionally KEY_NAME (the run's API key name), KEY_ARGS (more `soulbox keys create` arguments for
# it, e.g. `--admin` or `--team NAME`) and SERVER_CONFIG_EXTRA (lines appended to the server's config.toml).
# SOULBOX_RUNTIME (runc by default) is the server's OCI runtime; the leak check lists that runtime's containers.
# start_server sets API_URL, API_KEY, KEY_ID, SERVER_PID. A suite that makes keys of other teams adds them to
# CLEANUP_KEYS (space-separated) so the cleanup also kills their sandboxes (a key sees only its team's).
SERVER_PID="${SERVER_PID:-}"
API_URL="${API_URL:-}"
API_KEY="${API_KEY:-}"
KEY_ID="${KEY_ID:-}"
CLEANUP_KEYS="${CLEANUP_KEYS:-}"

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# api <method> <path>: prints the body; fails on a transport error only. API_KEY overrides the run's key.
api() {
  "$PYTHON" - "$API_URL" "$API_KEY" "$1" "$2" <<'PY'
import sys, urllib.request, urllib.error
url, key, method, path = sys.argv[1:]
req = urllib.request.Request(url + path, method=method, headers={"X-API-Key": key})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(req, timeout=60) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write(e.read().decode())
PY
}

sandbox_ids() {
  api GET "/v2/sandboxes?state=running,paused" \
    | "$PYTHON" -c 'import json,sys; [print(s["sandboxID"]) for s in json.load(sys.stdin)]'
}

# Kills the sandboxes of the run's key's team and of every team in CLEANUP_KEYS.
kill_all_sandboxes() {
  local id ids key rc=0
  for key in "$API_KEY" $CLEANUP_KEYS; do
    ids="$(API_KEY="$key" sandbox_ids)" || { echo "could not list sandboxes" >&2; rc=1; continue; }
    for id in $ids; do
      echo "killing sandbox $id" >&2
      API_KEY="$key" api DELETE "/sandboxes/$id" >/dev/null || true
    done
  done
  return "$rc"
}

# Sandbox ids of every team the cleanup knows about.
all_sandbox_ids() {
  local key
  for key in "$API_KEY" $CLEANUP_KEYS; do API_KEY="$key" sandbox_ids; done
}

# start_server [port]: (re)starts the server on the port (a free one by default) and waits until it is ready.
start_server() {
  local port="${1:-}"
  [ -n "$port" ] || port="$(free_port)"
  API_URL="http://127.0.0.1:$port"
  mkdir -p "$(dirname "$SERVER_LOG")" "$DATA_DIR"
  [ -n "$API_KEY" ] || : >"$SERVER_LOG"
  # Metrics every second so get_metrics has samples quickly; the rest comes from flags below.
  cat >"$DATA_DIR/config.toml" <<TOML
metrics_interval_s = 1
warm_pool = 2
${SERVER_CONFIG_EXTRA:-}
TOML
  # A fresh key per run (the admin key is printed only on the store's first start); a restart keeps it.
  if [ -z "$API_KEY" ]; then
    local out
    # shellcheck disable=SC2086 # KEY_ARGS is a list of arguments
    out="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name "${KEY_NAME:-run}-$(date +%s)" ${KEY_ARGS:-})"
    KEY_ID="$(sed -n 's/^created key \([^ ]*\) .*/\1/p' <<<"$out")"
    API_KEY="$(sed -n 's/^export E2B_API_KEY=\([^ ]*\).*/\1/p' <<<"$out")"
    [ -n "$API_KEY" ] || die "could not create an API key: $out"
  fi
  log "starting soulbox server on $API_URL (data dir $DATA_DIR, log $SERVER_LOG)"
  SOULBOX_LOG="${SOULBOX_LOG:-info}" "$SOULBOX" --data-dir "$DATA_DIR" server --listen "127.0.0.1:$port" \
    --envd-path "$ENVD" --domain "$DOMAIN" --max-lifetime-s "$MAX_LIFETIME_S" \
    --prefix "$PREFIX" --network-pool "$POOL" --runtime "${SOULBOX_RUNTIME:-runc}" >>"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  local _ starts
  # First start builds the base template (minutes); later starts take seconds.
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

# Kills what the server still runs (through the API) and stops it.
shutdown_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "cleanup: killing remaining sandboxes through the API"
    kill_all_sandboxes
    # Kills are synchronous; a sandbox the lifecycle was still pausing/resuming shows up on a second look.
    [ -z "$(all_sandbox_ids)" ] || kill_all_sandboxes
  fi
  stop_server
  [ -z "$KEY_ID" ] || "$SOULBOX" --data-dir "$DATA_DIR" keys revoke "$KEY_ID" >/dev/null 2>&1
}

# Everything the runtime creates on the host for this instance; prints leftovers, returns 1 if any.
check_leaks() {
  local leaks="" out
  local oci="${SOULBOX_RUNTIME:-runc}"
  # `--quiet`, which both runc and runsc take (runsc refuses `-q`: this check once listed nothing on gVisor).
  if [ -d "$DATA_DIR/node/oci" ]; then
    out="$("$oci" --root "$DATA_DIR/node/oci" list --quiet 2>&1)" || out="(the listing failed) $out"
    [ -z "$out" ] || leaks+="$oci containers ($oci --root $DATA_DIR/node/oci list):"$'\n'"$out"$'\n'
  fi
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
    printf 'LEAKED after the run:\n%s' "$leaks" >&2
    return 1
  fi
  echo "leak check: nothing left behind (${SOULBOX_RUNTIME:-runc}, netns, veths, mounts, sandbox dirs, cgroups, nft chains)" >&2
}

# build_server_unless SKIP: builds the static envd and the debug server unless SKIP (the suite's *_SKIP_BUILD
# variable) is set, then checks that both are there.
build_server_unless() {
  if [ -z "${1:-}" ]; then
    log "building the static envd and the server (debug)"
    (cd "$ROOT" && scripts/build-envd.sh >/dev/null && cargo build -p soulbox-cli)
  fi
  [ -x "$SOULBOX" ] || die "no $SOULBOX"
  [ -x "$ENVD" ] || die "no $ENVD"
}

# trap_suite_exit: on any exit (a failure, Ctrl-C) stop the server, run the suite's own `suite_cleanup` if it
# defines one, then the leak check. A failing suite_cleanup or a leak fails the run.
trap_suite_exit() {
  trap _suite_exit EXIT
  trap 'exit 130' INT TERM
}

_suite_exit() {
  local rc=$?
  set +e
  shutdown_server
  if declare -F suite_cleanup >/dev/null && ! suite_cleanup; then
    [ "$rc" -ne 0 ] || rc=1
  fi
  log "leak check"
  if ! check_leaks; then
    [ "$rc" -ne 0 ] || rc=1
  fi
  exit "$rc"
}
