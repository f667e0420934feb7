#!/usr/bin/env bash
# E2B compatibility suite: the official `e2b` Python SDK (pinned 2.45.1 and the newest release) in debug mode
# (E2B_DEBUG=true, envd at http://localhost:49983) against a locally started soulbox-envd.
#
# Usage (as root: it creates the sandbox user `user` and runs envd as root so it can switch users):
#   tests/compat/run.sh                   # both SDK versions
#   tests/compat/run.sh -k watch -x       # extra args go to pytest
# Environment:
#   SOULBOX_COMPAT_VERSIONS="2.45 latest" which requirements-<v>.txt to run
#   SOULBOX_COMPAT_SKIP_BUILD=1           use the existing target/release/soulbox-envd
#   PYTHON=python3                        interpreter for the venvs
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PORT=49983
VERSIONS="${SOULBOX_COMPAT_VERSIONS:-2.45 latest}"
PYTHON="${PYTHON:-python3}"
ENVD_BIN="$ROOT/target/release/soulbox-envd"
LOG_DIR="$ROOT/target/compat"
SANDBOX_USER=user
SANDBOX_HOME=/home/user

log() { printf '\n=== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "must run as root (creates user '$SANDBOX_USER', starts envd as root)"

# --- sandbox user: like E2B's base template (spec §5, §6.2) ----------------------------------------------------------
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

# --- venvs, cached under tests/compat/.venv-<ver> and rebuilt when the requirements change ---------------------------
ensure_venv() {
  local ver="$1" req="$HERE/requirements-$1.txt" venv="$HERE/.venv-$1"
  [ -f "$req" ] || die "no $req"
  local want; want="$(sha256sum "$req" | cut -d' ' -f1)"
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

# --- envd lifecycle --------------------------------------------------------------------------------------------------
ENVD_PID=""
HOME_BEFORE=""

descendants() {
  local pid="$1" child
  for child in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
    descendants "$child"
    echo "$child"
  done
}

stop_envd() {
  [ -n "$ENVD_PID" ] || return 0
  local kids
  kids="$(descendants "$ENVD_PID" || true)"
  kill -TERM "$ENVD_PID" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$ENVD_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$ENVD_PID" 2>/dev/null || true
  wait "$ENVD_PID" 2>/dev/null || true
  # processes the tests left running (background commands, PTYs), by pid
  for k in $kids; do kill -KILL "$k" 2>/dev/null || true; done
  ENVD_PID=""
}

clean_home() {
  # remove whatever the tests created in the sandbox user's home
  [ -n "$HOME_BEFORE" ] || return 0
  local entry
  while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    grep -qxF -- "$entry" "$HOME_BEFORE" || rm -rf -- "${SANDBOX_HOME:?}/$entry"
  done < <(ls -A "$SANDBOX_HOME")
}

cleanup() {
  stop_envd
  clean_home
  [ -z "$HOME_BEFORE" ] || rm -f "$HOME_BEFORE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_envd() {
  local ver="$1" token="$2" init_envs="$3"
  health_ok && die "something already answers on port $PORT; stop it first"
  local init
  init="$(printf '{"defaultUser":"%s","defaultWorkdir":"%s","accessToken":"%s","envVars":%s}' \
    "$SANDBOX_USER" "$SANDBOX_HOME" "$token" "$init_envs")"
  mkdir -p "$LOG_DIR"
  (umask 022; SOULBOX_ENVD_INIT="$init" exec "$ENVD_BIN" --port "$PORT") >"$LOG_DIR/envd-$ver.log" 2>&1 &
  ENVD_PID=$!
  for _ in $(seq 1 100); do
    health_ok && return 0
    kill -0 "$ENVD_PID" 2>/dev/null || { cat "$LOG_DIR/envd-$ver.log" >&2; die "envd exited during start"; }
    sleep 0.1
  done
  cat "$LOG_DIR/envd-$ver.log" >&2
  die "envd did not answer GET /health within 10 s"
}

# --- main ------------------------------------------------------------------------------------------------------------
ensure_user
if [ -z "${SOULBOX_COMPAT_SKIP_BUILD:-}" ]; then
  log "building soulbox-envd (release)"
  (cd "$ROOT" && cargo build -p soulbox-envd --release)
fi
[ -x "$ENVD_BIN" ] || die "no $ENVD_BIN"

INIT_ENVS='{"SOULBOX_COMPAT_SANDBOX_VAR":"from-init","SOULBOX_COMPAT_SPACED":"a value with spaces"}'
HOME_BEFORE="$(mktemp)"
ls -A "$SANDBOX_HOME" >"$HOME_BEFORE"

status=0
summary=""
for ver in $VERSIONS; do
  ensure_venv "$ver"
  token="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
  log "e2b SDK $("$HERE/.venv-$ver/bin/python" -c 'from importlib.metadata import version; print(version("e2b"))') against soulbox-envd (log: target/compat/envd-$ver.log)"
  start_envd "$ver" "$token" "$INIT_ENVS"
  rc=0
  (
    cd "$HERE"
    umask 022
    E2B_DEBUG=true \
    SOULBOX_ENVD_TOKEN="$token" \
    SOULBOX_COMPAT_INIT_ENVS="$INIT_ENVS" \
    SOULBOX_ENVD_PID="$ENVD_PID" \
    PYTHONDONTWRITEBYTECODE=1 \
      "$HERE/.venv-$ver/bin/python" -m pytest "$@"
  ) || rc=$?
  stop_envd
  clean_home
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+="  e2b $ver: FAILED (pytest exit $rc)"$'\n'
  else
    summary+="  e2b $ver: passed"$'\n'
  fi
done

log "compat summary"
printf '%s' "$summary"
exit "$status"
