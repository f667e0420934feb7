#!/usr/bin/env bash
# Runs the `soulbox` SDK's tests (and the CLI tests in soulbox-cli that use the SDK) against a real
# `soulbox server` started here. Root only (the node runtime needs mounts, netns, cgroups, nftables).
#
# Usage: crates/soulbox/tests/run.sh [extra cargo test args, e.g. -- --test-threads 2]
# Environment:
#   SOULBOX_SDK_TEST_DIR=/var/tmp/soulbox-sdk-test  persistent data dir (keeps the built `base` template)
#   SOULBOX_SDK_TEST_SKIP_BUILD=1                  use the existing binary and static envd
#   SOULBOX_BIN=target/debug/soulbox               server binary
# Isolation: runtime prefix `sbsdt`, address pool 10.215.0.0/16. Server log: target/sdk-test/server.log.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
DATA_DIR="${SOULBOX_SDK_TEST_DIR:-/var/tmp/soulbox-sdk-test}"
SOULBOX="${SOULBOX_BIN:-$ROOT/target/debug/soulbox}"
LOG_DIR="$ROOT/target/sdk-test"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
if [ -z "${SOULBOX_SDK_TEST_SKIP_BUILD:-}" ]; then
  scripts/build-envd.sh >/dev/null
  cargo build -p soulbox-cli
fi
mkdir -p "$DATA_DIR" "$LOG_DIR"
SERVER_PID="" API="" KEY="" KEY_ID=""
# Through the CLI under test (no curl needed).
kill_sandboxes() {
  local ids
  ids="$(SOULBOX_API_URL="$API" SOULBOX_API_KEY="$KEY" "$SOULBOX" sandbox list --json 2>/dev/null \
    | python3 -c 'import json,sys; [print(s["sandboxID"]) for s in json.load(sys.stdin)]' 2>/dev/null)" || true
  if [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    SOULBOX_API_URL="$API" SOULBOX_API_KEY="$KEY" "$SOULBOX" sandbox kill $ids >/dev/null 2>&1 || true
  fi
}
cleanup() {
  kill_sandboxes || true
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  # The run's key is an admin: it does not outlive the run.
  [ -z "${KEY_ID:-}" ] || "$SOULBOX" --data-dir "$DATA_DIR" keys revoke "$KEY_ID" >/dev/null 2>&1 || true
  # The server keeps its (then empty) nftables table for the next start; this test's prefix is ours alone.
  if command -v nft >/dev/null; then nft delete table inet soulbox_sbsdt 2>/dev/null || true; fi
}
trap cleanup EXIT

. scripts/lib/local-server.sh
start_local_server "$SOULBOX" "$DATA_DIR" sbsdt 10.215.0.0/16 "$LOG_DIR/server.log" --max-lifetime-s 3600
kill_sandboxes

export SOULBOX_TEST_API_URL="$API" SOULBOX_TEST_SANDBOX_URL="$API" SOULBOX_TEST_API_KEY="$KEY"
export SOULBOX_TEST_BIN="$SOULBOX"
# The CLI's admin tests create (and revoke) a key with `soulbox keys` on the running server's data dir.
export SOULBOX_TEST_DATA_DIR="$DATA_DIR"
cargo test -p soulbox "$@"
cargo test -p soulbox-cli --test cli "$@"
