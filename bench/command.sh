#!/usr/bin/env bash
# Command round trip benchmark (issue 18 goal 2; not a test): starts `soulbox server` (release build, the static
# envd) with its own data dir, runtime prefix and address pool, then runs bench/command_bench.py with the official
# Python SDK: `commands.run("true")` through the server and straight to envd, next to a plain `bash -l -c true`
# spawn inside the same sandbox, in one run. Cleans up (sandboxes, server, leak check) also on failure.
#
# Usage (as root, under the heavy-test lock):  flock /tmp/soulbox-heavy.lock bench/command.sh
# Environment: N=300 BLOCKS=6; SKIP_BUILD=1 (use the built target/release/soulbox and static envd);
#   SOULBOX_BENCH_DATA=/var/tmp/soulbox-bench-command (its own base build: the first run bootstraps it, minutes);
#   SOULBOX_TEMPLATE_DIR (share built templates instead); PREFIX=sbcmd POOL=10.214.0.0/16
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../tests/compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh" # log, die
PYTHON="${PYTHON:-python3}"
DATA_DIR="${SOULBOX_BENCH_DATA:-/var/tmp/soulbox-bench-command}"
PREFIX="${PREFIX:-sbcmd}"
POOL="${POOL:-10.214.0.0/16}"
DOMAIN=bench.soulbox.test
MAX_LIFETIME_S=900
KEY_NAME=command-bench
SOULBOX="$ROOT/target/release/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
SERVER_LOG="$DATA_DIR/server.log"
VENV="$ROOT/tests/compat/.venv-latest"
[ -x "$VENV/bin/python" ] || die "missing $VENV: run tests/compat/run.sh once"
[ "$(id -u)" = 0 ] || die "must run as root (the node runtime)"

# shellcheck source=../tests/lib/server.sh
. "$ROOT/tests/lib/server.sh"
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building the static envd and the server (release)"
  (cd "$ROOT" && scripts/build-envd.sh >/dev/null && cargo build --release -p soulbox-cli)
fi
[ -x "$SOULBOX" ] && [ -x "$ENVD" ] || die "no $SOULBOX or $ENVD"
trap_suite_exit
start_server
E2B_API_URL="$API_URL" E2B_SANDBOX_URL="$API_URL" E2B_API_KEY="$API_KEY" SOULBOX_DATA_DIR="$DATA_DIR" NO_PROXY='*' \
  "$VENV/bin/python" "$ROOT/bench/command_bench.py"
