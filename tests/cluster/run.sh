#!/usr/bin/env bash
# Cluster proof (issue 7): `soulbox server` in cluster mode + three `soulbox node` agents as separate processes
# on this machine, driven by cluster_test.py (HTTP API, the soulbox CLI, the official e2b Python SDK).
#
# Usage (root: node runtimes need mounts, netns, cgroups, nftables):
#   tests/cluster/run.sh
# Environment:
#   SOULBOX_CLUSTER_DB=postgres    (default when PostgreSQL's binaries are installed) a throwaway PostgreSQL
#                                  cluster (initdb in the run dir, unix socket only, removed at the end) and TWO
#                                  `soulbox server` replicas on it; `sqlite`: one server on SQLite
#   SOULBOX_CLUSTER_DATABASE_URL   use this database instead (one replica unless it is postgres://)
#   SOULBOX_CLUSTER_STORE=/var/tmp/soulbox-cluster/templates
#                                  template store shared by the three agents (kept between runs). When it has no
#                                  `base`, it is seeded with hard links from SOULBOX_CLUSTER_SEED (default: the e2e
#                                  store /var/tmp/soulbox-e2e/node: its layers and the engine's caches) when that has
#                                  one, else the first agent builds it (the others wait on the store's base lock)
#   SOULBOX_BIN, SOULBOX_ENVD      binaries (default: target/debug/soulbox, the static envd)
#   SOULBOX_CLUSTER_PY             the driver (default cluster_test.py; bench/cluster_bench.py reuses this setup)
#   SOULBOX_CLUSTER_SKIP_BUILD=1   do not build
# Host objects are this test's own: prefixes sbc1..sbc8 (netns sbcN-*, nft tables soulbox_sbcN, cgroups
# soulbox_sbcN), pools 10.81..10.88.0.0/16, a fresh run dir; all removed at the end, also on failure. (sbc4 is the
# drained-node phase's fourth agent; sbc5/sbc6 are the agents of the shared-volumes phase's second control plane;
# sbc7 the agent with a booted pool; sbc8 the gVisor agent, skipped without runsc.)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PREFIXES="sbc1 sbc2 sbc3 sbc4 sbc5 sbc6 sbc7 sbc8"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${SOULBOX_BIN:-$TARGET/debug/soulbox}"
ENVD="${SOULBOX_ENVD:-$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd}"
STORE="${SOULBOX_CLUSTER_STORE:-/var/tmp/soulbox-cluster/templates}"
SEED="${SOULBOX_CLUSTER_SEED:-/var/tmp/soulbox-e2e/node}"
PY="${PYTHON_E2B:-$ROOT/tests/compat/.venv-latest/bin/python}"

log() { echo "[cluster] $*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

RUN_DIR="$(mktemp -d /var/tmp/soulbox-cluster-run.XXXXXX)"
# The agents' data dirs are below it: sandboxes' mapped root users (user namespaces) must pass through (mktemp: 0700).
chmod 0711 "$RUN_DIR"

# Removes every host object of this test's prefixes and run dir (whatever the test left, e.g. after a crash).
collect() {
  local dir prefix c ns oci leaks=""
  for dir in "$RUN_DIR"/node*; do
    [ -d "$dir/node/oci" ] || continue
    # node8 runs gVisor; the others runc (`--quiet`: runsc refuses `-q`).
    oci=runc
    [ "$(basename "$dir")" = node8 ] && oci=runsc
    for c in $("$oci" --root "$dir/node/oci" list --quiet 2>/dev/null); do
      leaks+="$oci $c; "
      "$oci" --root "$dir/node/oci" delete --force "$c" >/dev/null 2>&1 || true
    done
  done
  for prefix in $PREFIXES; do
    for ns in $(ip netns list | awk '{print $1}' | grep -E "^$prefix-" || true); do
      leaks+="netns $ns; "
      ip netns delete "$ns" 2>/dev/null || true
    done
    if nft list table inet "soulbox_$prefix" 2>/dev/null | grep -qE '^\s*chain sb_'; then leaks+="nft chains of $prefix; "; fi
    nft delete table inet "soulbox_$prefix" 2>/dev/null || true
    # Every hierarchy: the v2 root, or each v1 controller plus hybrid's empty v2 mount (`unified`).
    for cg in /sys/fs/cgroup/soulbox_"$prefix" /sys/fs/cgroup/*/soulbox_"$prefix"; do
      [ -d "$cg" ] && { find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
    done
  done
  awk -v d="$RUN_DIR/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  if [ -n "$leaks" ]; then log "collected leftovers: $leaks"; return 1; fi
  return 0
}

cleanup() {
  local rc=$?
  set +e
  # cluster_test.py stops its processes itself and records their pids; any still running (it crashed) go now.
  local pid
  for pid in $(cat "$RUN_DIR/pids" 2>/dev/null); do
    grep -qF "$RUN_DIR" "/proc/$pid/cmdline" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  done
  if [ -n "${PG_DATA:-}" ] && [ -f "$PG_DATA/postmaster.pid" ]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w stop >/dev/null 2>&1
  fi
  if ! collect && [ "$rc" -eq 0 ]; then
    log "the test passed but left host objects behind"
    rc=1
  fi
  if [ "$rc" -eq 0 ]; then rm -rf "$RUN_DIR"; else log "logs kept in $RUN_DIR (server.log, nodeN.log)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${SOULBOX_CLUSTER_SKIP_BUILD:-}" ]; then
  log "building soulbox (debug)"
  (cd "$ROOT" && cargo build -p soulbox-cli --bin soulbox)
fi
[ -x "$BIN" ] || die "no $BIN"
[ -x "$ENVD" ] || die "no static envd at $ENVD (scripts/build-envd.sh)"
[ -x "$PY" ] || die "no e2b venv at $PY (tests/compat sets it up)"

mkdir -p "$STORE/templates" "$STORE/layers"
if [ ! -f "$STORE/templates/base/template.json" ] && [ -f "$SEED/templates/base/template.json" ]; then
  log "seeding the shared template store from $SEED (hard links; layers are read-only)"
  # Every layer and the build engine's cache entries (which name layers): the agents build `base` with the same
  # engine recipe as the server, so with its bootstrap and step caches they find every layer already made.
  mkdir -p "$STORE/layers" "$STORE/cache"
  for layer in "$SEED"/layers/*; do
    name="$(basename "$layer")"
    if [ ! -e "$STORE/layers/$name" ]; then
      cp -al "$layer" "$STORE/layers/$name" 2>/dev/null || cp -a "$layer" "$STORE/layers/$name"
    fi
  done
  for entry in "$SEED"/cache/*; do
    if [ -f "$entry" ] && [ ! -e "$STORE/cache/$(basename "$entry")" ]; then cp -a "$entry" "$STORE/cache/"; fi
  done
  mkdir -p "$STORE/templates/base" && cp "$SEED/templates/base/template.json" "$STORE/templates/base/template.json"
fi

log "run dir $RUN_DIR"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
DB_KIND="${SOULBOX_CLUSTER_DB:-$([ -x "$PG_BIN/initdb" ] && echo postgres || echo sqlite)}"
if [ -z "${SOULBOX_CLUSTER_DATABASE_URL:-}" ] && [ "$DB_KIND" = postgres ]; then
  [ -x "$PG_BIN/initdb" ] || die "SOULBOX_CLUSTER_DB=postgres but no initdb (apt-get install postgresql)"
  # A private cluster: data and socket in the run dir (owned by postgres, which refuses to run as root), no TCP.
  PG_DIR="$RUN_DIR/pg"; PG_DATA="$PG_DIR/data"
  mkdir -p "$PG_DIR" && chmod 755 "$RUN_DIR" && chown postgres: "$PG_DIR"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres >"$RUN_DIR/pg-initdb.log" 2>&1 \
    || die "initdb failed: $(tail -n 5 "$RUN_DIR/pg-initdb.log")"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/postgres.log" -w \
    -o "-c listen_addresses='' -k $PG_DIR -c fsync=off" start >/dev/null || die "postgres did not start: $(tail -n 5 "$PG_DIR/postgres.log")"
  export SOULBOX_CLUSTER_DATABASE_URL="postgres://postgres@localhost:5432/postgres?host=$PG_DIR"
  log "PostgreSQL at $PG_DIR (two API replicas share it)"
fi
SOULBOX_BIN="$BIN" SOULBOX_ENVD="$ENVD" SOULBOX_CLUSTER_DIR="$RUN_DIR" SOULBOX_TEMPLATE_DIR="$STORE" \
  PYTHONDONTWRITEBYTECODE=1 "$PY" "${SOULBOX_CLUSTER_PY:-$HERE/cluster_test.py}"
