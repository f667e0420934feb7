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
#   SOULBOX_ENVD_BIN=path                 run this envd binary instead (implies no build)
#   PYTHON=python3                        interpreter for the venvs
# envd logs: target/compat/envd-<version>.log
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=envd-lib.sh
. "$HERE/envd-lib.sh"

VERSIONS="${SOULBOX_COMPAT_VERSIONS:-2.45 latest}"
INIT_ENVS='{"SOULBOX_COMPAT_SANDBOX_VAR":"from-init","SOULBOX_COMPAT_SPACED":"a value with spaces"}'
HOME_BEFORE=""

# Removes whatever the tests created in the sandbox user's home.
clean_home() {
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

require_root
ensure_user
if [ -z "${SOULBOX_COMPAT_SKIP_BUILD:-}" ] && [ -z "${SOULBOX_ENVD_BIN:-}" ]; then
  log "building soulbox-envd (release)"
  (cd "$ROOT" && cargo build -p soulbox-envd --release)
fi

HOME_BEFORE="$(mktemp)"
ls -A "$SANDBOX_HOME" >"$HOME_BEFORE"

status=0
summary=""
for ver in $VERSIONS; do
  ensure_venv "$ver"
  token="$(new_token)"
  sdk="$("$HERE/.venv-$ver/bin/python" -c 'from importlib.metadata import version; print(version("e2b"))')"
  log "e2b $sdk against soulbox-envd (log: target/compat/envd-$ver.log)"
  start_envd "$ver" "$token" "$INIT_ENVS"
  rc=0
  (
    cd "$HERE"
    umask 022
    E2B_DEBUG=true \
    SOULBOX_ENVD_TOKEN="$token" \
    SOULBOX_COMPAT_INIT_ENVS="$INIT_ENVS" \
    PYTHONDONTWRITEBYTECODE=1 \
      "$HERE/.venv-$ver/bin/python" -m pytest "$@"
  ) || rc=$?
  stop_envd
  clean_home
  if [ "$rc" -ne 0 ]; then
    status=1
    summary+="  e2b $sdk: FAILED (pytest exit $rc)"$'\n'
  else
    summary+="  e2b $sdk: passed"$'\n'
  fi
done

log "compat summary"
printf '%s' "$summary"
exit "$status"
