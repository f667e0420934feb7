#!/usr/bin/env bash
# Template benchmark (not a test): the `base` template built cold (empty store: mmdebstrap from the Debian mirror)
# and fully cached, and create→envd-ready p50/p99 of sandboxes from a 1-layer vs a 20-layer template (19 small
# RUN/COPY steps through the build engine), with `base` (2 layers) for reference; then a `soulbox server` start
# on a data dir whose base is cached (the time the server prints until it serves).
# Usage (as root): bench/templates.sh      env: N=30 COLD=1 (0: reuse the store) PROFILE=release|dev
#   DATA=/var/tmp/soulbox-bench-templates  SOULBOX_DEBIAN_MIRROR=http://deb.debian.org/debian
# Isolation: runtime prefix sbtb (netns/veth/nft/cgroup names), address pool 10.244.0.0/16, its own data dir.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
N="${N:-30}"
COLD="${COLD:-1}"
PROFILE="${PROFILE:-release}"
DATA="${DATA:-/var/tmp/soulbox-bench-templates}"
MIRROR="${SOULBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
[ "$(id -u)" = 0 ] || { echo "needs root (runc, mounts, netns, cgroups)" >&2; exit 1; }

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
ENVD="${SOULBOX_ENVD:-$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd}"
[ -x "$ENVD" ] || { scripts/build-envd.sh >/dev/null; ENVD="$ROOT/target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"; }
flag=(); dir=debug
if [ "$PROFILE" = release ]; then flag=(--release); dir=release; fi
cargo build "${flag[@]}" -p soulbox-templates --example templates_bench
cargo build "${flag[@]}" -p soulbox-cli --bin soulbox
BIN="$(mktemp -d)"
# Copies: a shared target dir may be rebuilt by someone else while this runs.
cp "$TARGET/$dir/examples/templates_bench" "$TARGET/$dir/soulbox" "$BIN/"
trap 'rm -rf "$BIN"' EXIT

cold=(); [ "$COLD" = 1 ] && cold=(--cold)
"$BIN/templates_bench" --data-dir "$DATA" --envd "$ENVD" --mirror "$MIRROR" --iterations "$N" "${cold[@]}"

# A server start on a data dir with a cached base: the time until it serves (its "ready in" line).
SDATA="$DATA/server"
mkdir -p "$SDATA/node"
# Share the bench's layers and caches so the server finds base cached (its template registry stays its own).
for d in layers cache; do [ -e "$SDATA/node/$d" ] || ln -s "$DATA/store/$d" "$SDATA/node/$d"; done
for run in 1 2; do
  LOG="$BIN/server-$run.log"
  "$BIN/soulbox" --data-dir "$SDATA" server --listen 127.0.0.1:0 --prefix sbtb --network-pool 10.244.0.0/16 \
    --warm-pool 0 --envd-path "$ENVD" --debian-mirror "$MIRROR" >"$LOG" 2>&1 &
  PID=$!
  for _ in $(seq 1 1200); do grep -q 'SoulBox is running' "$LOG" && break; kill -0 "$PID" 2>/dev/null || { cat "$LOG"; exit 1; }; sleep 0.5; done
  kill "$PID"; wait "$PID" 2>/dev/null || true
  echo "server start $run: $(grep -o 'base template ready in [0-9]* ms' "$LOG"), serving $(grep -o 'ready in [0-9]* ms' "$LOG" | tail -1)"
done
# The server keeps its nftables table and cgroup parents for its next start; this prefix is the bench's alone.
nft delete table inet soulbox_sbtb 2>/dev/null || true
for d in /sys/fs/cgroup/*/soulbox_sbtb; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
true
