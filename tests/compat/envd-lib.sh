# Shared by tests/compat/run.sh and bench/envd.sh (sourced, not executed): the sandbox user, the cached SDK
# venvs and a locally started soulbox-envd.
#
# Callers set ROOT (repo root) and may set PORT, PYTHON, SANDBOX_USER, SANDBOX_HOME before sourcing.

COMPAT_DIR="$ROOT/tests/compat"
PORT="${PORT:-49983}"
PYTHON="${PYTHON:-python3}"
SANDBOX_USER="${SANDBOX_USER:-user}"
SANDBOX_HOME="${SANDBOX_HOME:-/home/user}"
ENVD_BIN="${SOULBOX_ENVD_BIN:-$ROOT/target/release/soulbox-envd}"
LOG_DIR="$ROOT/target/compat"
ENVD_PID=""

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 2; }

require_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (creates user '$SANDBOX_USER', starts envd as root)"
}

# The sandbox user of E2B's base template (spec §5, §6.2): `user`, home /home/user, bash, passwordless sudo.
# The umask 022 default comes from envd's own umask, which start_envd sets.
ensure_user() {
  if ! id -u "$SANDBOX_USER" >/dev/null 2>&1; then
    log "creating user $SANDBOX_USER"
    useradd --create-home --home-dir "$SANDBOX_HOME" --shell /bin/bash --user-group "$SANDBOX_USER"
  fi
  mkdir -p "$SANDBOX_HOME"
  chown "$SANDBOX_USER:$SANDBOX_USER" "$SANDBOX_HOME"
  command -v sudo >/dev/null || die "sudo is not installed (apt-get install -y sudo)"
  local sudoers=/etc/sudoers.d/90-soulbox-compat-user
  if [ ! -f "$sudoers" ]; then
    printf '%s ALL=(ALL:ALL) NOPASSWD: ALL\n' "$SANDBOX_USER" >"$sudoers"
    chmod 0440 "$sudoers"
  fi
}

# Cached under tests/compat/.venv-<ver>; rebuilt when requirements-<ver>.txt changes.
ensure_venv() {
  local ver="$1" req="$COMPAT_DIR/requirements-$1.txt" venv="$COMPAT_DIR/.venv-$1"
  [ -f "$req" ] || die "no $req"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
    log "creating venv $venv from $(basename "$req")"
    "$PYTHON" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req"
    echo "$want" >"$venv/.requirements.sha256"
  fi
}

health_ok() {
  "$PYTHON" - "$PORT" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1) as r:
    sys.exit(0 if 200 <= r.status < 300 else 1)
EOF
}

new_token() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

# start_envd <log-name> <token> <envVars JSON object>: envd as root in the background, configured through
# SOULBOX_ENVD_INIT (E2B's POST /init body), then waits for GET /health.
start_envd() {
  local name="$1" token="$2" init_envs="$3"
  [ -x "$ENVD_BIN" ] || die "no $ENVD_BIN (cargo build -p soulbox-envd --release)"
  if health_ok; then die "something already answers on port $PORT; stop it first"; fi
  local init
  init="$(printf '{"defaultUser":"%s","defaultWorkdir":"%s","accessToken":"%s","envVars":%s}' \
    "$SANDBOX_USER" "$SANDBOX_HOME" "$token" "$init_envs")"
  mkdir -p "$LOG_DIR"
  ENVD_LOG="$LOG_DIR/envd-$name.log"
  (umask 022; SOULBOX_ENVD_INIT="$init" exec "$ENVD_BIN" --port "$PORT") >"$ENVD_LOG" 2>&1 &
  ENVD_PID=$!
  local _
  for _ in $(seq 1 100); do
    if health_ok; then return 0; fi
    kill -0 "$ENVD_PID" 2>/dev/null || { cat "$ENVD_LOG" >&2; ENVD_PID=""; die "envd exited during start"; }
    sleep 0.1
  done
  cat "$ENVD_LOG" >&2
  die "envd did not answer GET /health within 10 s"
}

# Children of a pid from /proc (no procps needed on a minimal machine).
children_of() {
  local target="$1" f line rest
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    rest="${line##*) }"            # after the command name: "<state> <ppid> ..."
    set -- $rest
    [ "${2:-}" = "$target" ] || continue
    f="${f#/proc/}"
    echo "${f%/stat}"
  done
}

descendants() {
  local pid="$1" child
  for child in $(children_of "$pid"); do
    descendants "$child"
    echo "$child"
  done
}

# Stops the envd this script started, then any process it left behind (background commands, PTYs), by pid.
stop_envd() {
  [ -n "$ENVD_PID" ] || return 0
  local kids k _
  kids="$(descendants "$ENVD_PID" || true)"
  kill -TERM "$ENVD_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$ENVD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$ENVD_PID" 2>/dev/null || true
  wait "$ENVD_PID" 2>/dev/null || true
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  ENVD_PID=""
}
