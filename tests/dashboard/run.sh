#!/usr/bin/env bash
# The web dashboard (issue 17 item 6) in a real headless Chromium against a real `soulbox server`: Debian's
# /usr/bin/chromium driven by playwright-core from npm (no browser download), see dashboard.test.mjs.
#
# Usage (as root, under the heavy-suite lock like tests/e2e):
#   flock /tmp/soulbox-heavy.lock tests/dashboard/run.sh
# Environment:
#   SOULBOX_DASHBOARD_DIR=/var/tmp/soulbox-dashboard   data dir (store, sandboxes)
#   SOULBOX_TEMPLATE_DIR=/var/tmp/soulbox-e2e/node     shared built templates (the e2e suite's: no second base
#                                                      build); set it empty to keep templates in the data dir
#   SOULBOX_DASHBOARD_PREFIX=sbdsh, SOULBOX_DASHBOARD_POOL=10.237.0.0/16   runtime prefix and address pool
#   SOULBOX_E2E_SKIP_BUILD=1                           use the existing target/debug/soulbox and static envd
# npm's cache stays in ~/.npm (outside the checkout); node_modules is ignored by git.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../compat/envd-lib.sh
. "$ROOT/tests/compat/envd-lib.sh" # log, die

PYTHON="${PYTHON:-python3}"
DATA_DIR="${SOULBOX_DASHBOARD_DIR:-/var/tmp/soulbox-dashboard}"
PREFIX="${SOULBOX_DASHBOARD_PREFIX:-sbdsh}"
POOL="${SOULBOX_DASHBOARD_POOL:-10.237.0.0/16}"
export SOULBOX_TEMPLATE_DIR="${SOULBOX_TEMPLATE_DIR-/var/tmp/soulbox-e2e/node}"
[ -n "$SOULBOX_TEMPLATE_DIR" ] || unset SOULBOX_TEMPLATE_DIR
KEY_NAME=dashboard
KEY_ARGS=--admin # the nodes page needs an admin key
DOMAIN=dashboard.soulbox.test
MAX_LIFETIME_S=900
SERVER_LOG="$ROOT/target/dashboard/server.log"
SOULBOX="$ROOT/target/debug/soulbox"
ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"

[ "$(id -u)" = 0 ] || die "must run as root (the node runtime needs mounts, netns, cgroups, nftables)"
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || die "no /usr/bin/chromium (scripts/install-deps.sh installs it)"

# shellcheck source=../lib/server.sh
. "$ROOT/tests/lib/server.sh" # start_server, shutdown_server, check_leaks

trap_suite_exit

build_server_unless "${SOULBOX_E2E_SKIP_BUILD:-}"

(cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)

start_server
log "dashboard tests in headless $(${CHROMIUM:-/usr/bin/chromium} --version 2>/dev/null) against $API_URL"
(cd "$HERE" && SOULBOX_URL="$API_URL" SOULBOX_API_KEY="$API_KEY" NO_PROXY='*' npm test --silent)
