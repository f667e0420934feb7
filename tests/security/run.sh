#!/usr/bin/env bash
# The attack suite (issue 11): a real `soulbox server` attacked as root inside its sandboxes (through the official
# e2b SDK) and with ordinary API keys of two teams; one test per attack and per defence, each failing when its
# defence is removed. Root only (the node runtime needs mounts, netns, cgroups, nftables).
#
# Usage: tests/security/run.sh [pytest args, e.g. -k takeover -x]
# Environment:
#   SOULBOX_SECURITY_DIR=/var/tmp/soulbox-e2e   data dir; by default the e2e suite's, so the `base` template it
#                                               built is reused (the suites run one after the other)
#   SOULBOX_SECURITY_PREFIX=sbsec, SOULBOX_SECURITY_POOL=10.217.0.0/16
#                                               runtime prefix and address pool (this suite's host objects); the
#                                               suite's server takes the pool's lower half, the upper half is
#                                               for servers that tests start themselves (test_netstate.py)
#   SOULBOX_SECURITY_SPARE_PREFIX=z<prefix[1:]>  prefix of those servers (must not start with the suite's prefix
#                                               nor the other way round: prefixes select links and nft rules)
#   SOULBOX_SECURITY_SKIP_BUILD=1               use the existing target/debug/soulbox and static envd
# Server settings the attacks need are in server.toml beside this file. Server log: target/security/server.log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh" # log, die, ensure_venv

DATA_DIR="${SOULBOX_SECURITY_DIR:-/var/tmp/soulbox-e2e}"
PREFIX="${SOULBOX_SECURITY_PREFIX:-sbsec}"
FULL_POOL="${SOULBOX_SECURITY_POOL:-10.217.0.0/16}"
# halves of the pool: "<lower> <upper>"
read -r POOL SPARE_POOL < <(python3 -c '
import ipaddress, sys
lower, upper = ipaddress.ip_network(sys.argv[1], strict=False).subnets(1)
print(lower, upper)' "$FULL_POOL")
SPARE_PREFIX="${SOULBOX_SECURITY_SPARE_PREFIX:-z${PREFIX:1}}"
DOMAIN=security.soulbox.test
MAX_LIFETIME_S=600
SERVER_LOG="$ROOT/target/security/server.log"
SOULBOX="$ROOT/target/debug/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
# Keys: team A's member key (E2B_API_KEY, made by start_server), team B's member key, the admin (default team).
KEY_NAME=security-a
KEY_ARGS="--team security-a"
# server.toml may name paths in the data dir as @DATA_DIR@.
SERVER_CONFIG_EXTRA="$(sed "s|@DATA_DIR@|$DATA_DIR|g" "$HERE/server.toml")"
# shellcheck source=../lib/server.sh
. "$ROOT/tests/lib/server.sh"

[ "$(id -u)" = 0 ] || die "must run as root (the node runtime needs mounts, netns, cgroups, nftables)"

EXTRA_KEY_IDS=()
# new_key NAME [keys create args...]: sets NEW_KEY to the secret and remembers the id for revocation (not in a
# subshell, so the id is kept).
new_key() {
  local name="$1" out id
  shift
  out="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name "$name-$(date +%s)" "$@")"
  id="$(sed -n 's/^created key \([^ ]*\) .*/\1/p' <<<"$out")"
  [ -n "$id" ] || die "could not create key $name: $out"
  EXTRA_KEY_IDS+=("$id")
  NEW_KEY="$(sed -n 's/^export E2B_API_KEY=\([^ ]*\).*/\1/p' <<<"$out")"
}

# After the server stops (trap_suite_exit): the run's extra keys are revoked.
suite_cleanup() {
  local id
  for id in "${EXTRA_KEY_IDS[@]}"; do "$SOULBOX" --data-dir "$DATA_DIR" keys revoke "$id" >/dev/null 2>&1; done
  return 0
}
trap_suite_exit

build_server_unless "${SOULBOX_SECURITY_SKIP_BUILD:-}"
ensure_venv latest

# The usual soft open-file limit (systemd's default): the server must raise its own to hold many connections
# (test_abuse.py); the test process raises its own too.
ulimit -Sn 1024
start_server
new_key security-b --team security-b
KEY_B="$NEW_KEY"
new_key security-admin --admin
ADMIN_KEY="$NEW_KEY"
CLEANUP_KEYS="$KEY_B"
kill_all_sandboxes

py="$ROOT/tests/compat/.venv-latest/bin/python"
log "attack suite: e2b $("$py" -c 'from importlib.metadata import version; print(version("e2b"))') against $API_URL"
cd "$HERE"
E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_API_KEY="$API_KEY" E2B_DOMAIN="$DOMAIN" \
SOULBOX_SEC_KEY_B="$KEY_B" SOULBOX_SEC_ADMIN_KEY="$ADMIN_KEY" SOULBOX_SEC_DATA_DIR="$DATA_DIR" \
SOULBOX_SEC_PREFIX="$PREFIX" SOULBOX_SEC_SPARE_PREFIX="$SPARE_PREFIX" SOULBOX_SEC_SPARE_POOL="$SPARE_POOL" \
SOULBOX_SEC_SERVER_LOG="$SERVER_LOG" SOULBOX_SEC_BIN="$SOULBOX" SOULBOX_SEC_ENVD="$ENVD" \
NO_PROXY='*' PYTHONDONTWRITEBYTECODE=1 \
  "$py" -m pytest "$@"
