#!/usr/bin/env bash
# Runs the `soulbox` SDK's tests (and the CLI tests in soulbox-server that use the SDK) against a real
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
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
LOG_DIR="$ROOT/target/sdk-test"
[ "$(id -u)" = 0 ] || { echo "must run as root" >&2; exit 1; }
if [ -z "${SOULBOX_SDK_TEST_SKIP_BUILD:-}" ]; then
  scripts/build-envd.sh >/dev/null
  cargo build -p soulbox-server
fi
mkdir -p "$DATA_DIR" "$LOG_DIR"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
API="http://127.0.0.1:$PORT"
KEY="$("$SOULBOX" --data-dir "$DATA_DIR" keys create --name sdk-test | sed -n 's/^export E2B_API_KEY=//p')"
[ -n "$KEY" ] || { echo "could not create an API key" >&2; exit 1; }

"$SOULBOX" --data-dir "$DATA_DIR" server --listen "127.0.0.1:$PORT" --prefix sbsdt --network-pool 10.215.0.0/16 \
  --envd-path "$ENVD" --max-lifetime-s 3600 >"$LOG_DIR/server.log" 2>&1 &
SERVER_PID=$!

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
  # The server keeps its (then empty) nftables table for the next start; this test's prefix is ours alone.
  if command -v nft >/dev/null; then nft delete table inet soulbox_sbsdt 2>/dev/null || true; fi
}
trap cleanup EXIT

# The first start builds the base template (~1 min).
for _ in $(seq 1 600); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$API/health" 2>/dev/null; then break; fi
  kill -0 "$SERVER_PID" 2>/dev/null || { head -n 20 "$LOG_DIR/server.log" >&2; exit 1; }
  sleep 0.5
done
kill_sandboxes

export SOULBOX_TEST_API_URL="$API" SOULBOX_TEST_SANDBOX_URL="$API" SOULBOX_TEST_API_KEY="$KEY"
export SOULBOX_TEST_BIN="$SOULBOX"
cargo test -p soulbox "$@"
if grep -q '^name = "soulbox-server"' crates/soulbox-server/Cargo.toml && [ -f crates/soulbox-server/tests/cli.rs ]; then
  cargo test -p soulbox-server --test cli "$@"
fi
