#!/usr/bin/env bash
# The .deb's units under a real systemd: a fresh Debian 12 tree (mmdebstrap, the package installed with apt as
# install-in-chroot.sh does) booted with `systemd-nspawn --boot`, then, inside: soulbox.service starts and
# serves /health, the journal names the admin-key file and never holds the key, the key file is 0600, a
# sandbox is created and runs a command (sudo too: the unit sets no NoNewPrivileges), `systemctl stop` ends the
# unit's processes cleanly while the sandbox lives on and is re-adopted by the next start, and
# soulbox-node.service joins a cluster-mode soulbox.service from its node.env and runs a sandbox.
#
# As root, on a host without systemd as PID 1 (this one); needs systemd-container, mmdebstrap and socat from
# Debian and the Debian mirror (for the tree and for the server's base template). Prints `N passed, N failed`.
# About 1.5 minutes (the tree ~20 s, the first start's base bootstrap ~1 min); CI runs it (scripts/test.sh) on
# the debug-binary package. By hand, run it under `flock /tmp/soulbox-heavy.lock`.
#
# What the harness does that a real host would not need (each is nesting, not the unit):
# - --register=no --keep-unit: no systemd/machined on the host to register with; the container runs in a cgroup
#   of this script's own (made and removed here), not at the root of the host's hierarchies.
# - --private-network: the container gets its own network namespace and CAP_NET_ADMIN in it. Its only way out is
#   a relay for the Debian mirror: the server's mmdebstrap uses http_proxy=127.0.0.1:3142 (a drop-in), a socat
#   in the container passes that to a socket bound from the host, where a socat connects to the mirror.
# - --system-call-filter=@keyring @mount: nspawn's own seccomp filter refuses keyctl (runc makes a session
#   keyring per container) and the new mount API.
# - cgroup v1 controllers remounted read-write inside (nspawn mounts them read-only on a hybrid host; runc needs
#   them to place sandboxes). Sandbox cgroups then appear in the host's hierarchies as .../soulbox_<prefix>: they
#   are removed at the end.
# - /dev/fuse bound in (the sandboxes' /proc view); no loop devices, so no disk size limit inside.
#
# Usage: tests/packaging/boot-in-nspawn.sh [PATH.deb]   (default: target/deb/soulbox_*.deb)
#   SOULBOX_NSPAWN_PREFIX (qg) and SOULBOX_NSPAWN_POOL (10.236.128.0/17): the runtime's prefix and address pool.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "boot-in-nspawn: needs root"; exit 1; }
for tool in systemd-nspawn mmdebstrap socat nsenter curl python3; do
  command -v "$tool" >/dev/null || { echo "boot-in-nspawn: needs $tool (apt-get install systemd-container mmdebstrap socat)"; exit 1; }
done
deb=$(realpath -e "${1:-$(ls target/deb/soulbox_*.deb | head -1)}") || exit 1
prefix=${SOULBOX_NSPAWN_PREFIX:-qg}
pool=${SOULBOX_NSPAWN_POOL:-10.236.128.0/17}
mirror_host=deb.debian.org

work=$(mktemp -d /var/tmp/soulbox-nspawn.XXXXXX)
tree=$work/tree
relay=$work/relay
name=soulbox-nspawn-$$
log=$work/log
mkdir -p "$relay"
nspawn_pid=
relay_pid=

# Our own cgroup in each hierarchy nspawn uses (name=systemd and the cgroup2 one on a hybrid host, the cgroup2
# root on a unified one): --keep-unit puts the container below the cgroup nspawn runs in.
cgdirs=()
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
  cgdirs=("/sys/fs/cgroup/$name")
else
  for h in systemd unified; do [ -d "/sys/fs/cgroup/$h" ] && cgdirs+=("/sys/fs/cgroup/$h/$name"); done
fi

cleanup() {
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # SIGTERM asks the container's systemd to power off; its PID namespace takes every sandbox with it.
    kill -TERM "$nspawn_pid" 2>/dev/null
    for _ in $(seq 60); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    wait "$nspawn_pid" 2>/dev/null
  fi
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null && wait "$relay_pid" 2>/dev/null
  # The sandboxes' cgroups in the host's v1 hierarchies (the container saw its own cgroup as their root), then
  # ours, deepest first. Only names of this run's prefix and of this script.
  local dirs=()
  mapfile -t dirs < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 5 -type d \( -name "soulbox_$prefix" -o -name "$name" \) 2>/dev/null)
  for d in "${dirs[@]}"; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
    [ -d "$d" ] && echo "boot-in-nspawn: could not remove the cgroup $d" >&2
  done
  # nspawn leaves this on a host whose /run is not a tmpfs.
  rmdir "/run/systemd/nspawn/propagate/$name" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

started=$(date +%s)
if ! mmdebstrap --variant=apt --include=systemd,systemd-sysv,dbus,socat bookworm "$tree" \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/$(basename "$deb")" \
  >"$log" 2>&1; then
  tail -30 "$log"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "mmdebstrap + apt install: $(($(date +%s) - started)) s"

# The harness's settings, as an operator would add them: drop-ins (`systemctl edit`) and node.env.
mkdir -p "$tree/etc/systemd/system/soulbox.service.d" "$tree/etc/systemd/system/soulbox-node.service.d"
cat >"$tree/etc/systemd/system/mirror-relay.service" <<EOF
[Unit]
Description=test harness: the Debian mirror through a socket bound from the host
[Service]
ExecStart=/usr/bin/socat TCP-LISTEN:3142,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/run/mirror/mirror.sock
EOF
for unit in soulbox soulbox-node; do
  cat >"$tree/etc/systemd/system/$unit.service.d/test.conf" <<EOF
[Unit]
Wants=mirror-relay.service
After=mirror-relay.service
[Service]
Environment=SOULBOX_PREFIX=$prefix SOULBOX_NETWORK_POOL=$pool SOULBOX_WARM_POOL=1
Environment=http_proxy=http://127.0.0.1:3142 no_proxy=127.0.0.1,localhost
EOF
done

socat "UNIX-LISTEN:$relay/mirror.sock,fork,unlink-early" "TCP:$mirror_host:80" 2>>"$log" &
relay_pid=$!

(
  for d in "${cgdirs[@]}"; do mkdir -p "$d" && echo "$BASHPID" >"$d/cgroup.procs"; done
  exec systemd-nspawn -D "$tree" -M "$name" --boot --register=no --keep-unit --private-network \
    --console=passive --capability=all --system-call-filter="@keyring @mount" \
    --bind="$relay:/run/mirror" --bind=/dev/fuse
) >"$work/console.log" 2>&1 &
nspawn_pid=$!

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' <<<"$2"; return 0; }
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$out"; fi
}
finish() {
  echo "total: $(($(date +%s) - started)) s"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

leader=
for _ in $(seq 30); do
  leader=$(pgrep -P "$nspawn_pid" | head -1)
  [ -n "$leader" ] && break
  sleep 1
done
in_ct() { nsenter -t "$leader" -a "$@"; }
# curl from the host's binaries, in the container's network namespace.
ct_curl() { nsenter -t "$leader" -n curl -sS --noproxy '*' -m 60 "$@"; }
state=
for _ in $(seq 60); do
  [ -n "$leader" ] && state=$(in_ct systemctl is-system-running 2>/dev/null)
  case "$state" in running | degraded) break ;; esac
  sleep 1
done
case "$state" in
  running | degraded) ok "the tree boots under systemd-nspawn (system $state)" ;;
  *) fail "the tree boots under systemd-nspawn" "state: ${state:-no leader}; $(tail -20 "$work/console.log")"; finish ;;
esac
while read -r _ mnt type opts; do
  [ "$type" = cgroup ] && [[ $opts != *name=systemd* ]] && in_ct mount -o remount,bind,rw "$mnt"
done < <(in_ct cat /proc/1/mounts)

data_dirs_open() { [ "$(stat -c %a "$tree/var/lib/soulbox" "$tree/var/lib/soulbox-node" | sort -u)" = 711 ]; }
check "the data dirs are 0711 as packaged (the runtime walks through them)" data_dirs_open

# The first start bootstraps the base template from the mirror: minutes.
in_ct systemctl start soulbox
healthy=
for _ in $(seq 300); do
  ct_curl -f -o /dev/null http://127.0.0.1:3000/health 2>/dev/null && { healthy=1; break; }
  [ "$(in_ct systemctl show -p NRestarts --value soulbox)" = 0 ] || break
  sleep 2
done
if [ -n "$healthy" ] && [ "$(in_ct systemctl is-active soulbox)" = active ]; then
  ok "soulbox.service is active and /health answers ($(($(date +%s) - started)) s from the start)"
else
  fail "soulbox.service is active and /health answers" "$(in_ct journalctl -u soulbox --no-pager -n 30)"
  finish
fi

keyfile=$tree/var/lib/soulbox/admin-key
key=$(cat "$keyfile" 2>/dev/null)
journal() { in_ct journalctl --no-pager -o cat "$@"; }
check "the journal names the admin-key file" bash -c "nsenter -t $leader -a journalctl --no-pager -u soulbox -o cat | grep -F 'cat /var/lib/soulbox/admin-key'"
if [ -n "$key" ] && ! journal | grep -qF "$key"; then ok "the journal does not hold the key"; else
  fail "the journal does not hold the key" "key file: ${key:+present}"; fi
key_private() { [ "$(stat -c '%a %U' "$keyfile")" = '600 root' ]; }
check "admin-key is root's, 0600" key_private

create() {
  ct_curl -X POST -H "X-API-Key: $key" -H 'Content-Type: application/json' \
    -d '{"templateID":"base","timeout":300}' http://127.0.0.1:3000/sandboxes |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxID"])'
}
ct_exec() { in_ct env E2B_API_KEY="$key" E2B_API_URL=http://127.0.0.1:3000 soulbox exec "$@"; }
kill_sandbox() { [ "$(ct_curl -o /dev/null -w '%{http_code}' -X DELETE -H "X-API-Key: $key" "http://127.0.0.1:3000/sandboxes/$1")" = 204 ]; }
# Host pids of a sandbox's processes (its cgroup path names it).
sandbox_pids() { grep -l "soulbox_$prefix/$1\$" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3; }
# soulbox processes of the container's own (a unit's), from the host: the container's PID namespace, by path.
unit_procs() {
  local ns p
  ns=$(readlink "/proc/$leader/ns/pid")
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q '^/usr/lib/soulbox/soulbox ' && echo "${p#/proc/}"
  done
}

sbx=$(create)
if [ -n "$sbx" ]; then ok "a sandbox is created with the admin key ($sbx)"; else fail "a sandbox is created"; fi
user_and_sudo() {
  local out
  out=$(ct_exec "$sbx" -- 'id -u; sudo -n id -u') || { echo "$out"; return 1; }
  echo "$out"
  [ "$(echo $out)" = '1000 0' ]
}
check "a command runs in it as user, and sudo works (no NoNewPrivileges)" user_and_sudo

in_ct systemctl stop soulbox
stopped_clean() {
  local u
  for u in "$@"; do
    [ "$(in_ct systemctl show -p ActiveState --value "$u")" = inactive ] &&
      [ "$(in_ct systemctl show -p Result --value "$u")" = success ] || { in_ct systemctl status "$u" --no-pager; return 1; }
  done
  local left
  left=$(unit_procs)
  [ -z "$left" ] || { echo "left: $left"; return 1; }
}
check "systemctl stop: inactive, result success, no soulbox process left" stopped_clean soulbox
check "the sandbox outlives the stop (its own cgroup, not the unit's)" test -n "$(sandbox_pids "$sbx")"
in_ct systemctl start soulbox
for _ in $(seq 60); do ct_curl -f -o /dev/null http://127.0.0.1:3000/health 2>/dev/null && break; sleep 1; done
check "the next start re-adopts it" ct_exec "$sbx" -- echo re-adopted
check "it is killed through the API" kill_sandbox "$sbx"

# Cluster mode: the server runs no sandboxes and soulbox-node.service, configured only by node.env, does. It
# shares the server's template store (built above), as agents and servers on one host may.
token=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
in_ct systemctl stop soulbox
printf '\nnode_token = "%s"\n' "$token" >>"$tree/etc/soulbox/config.toml"
cat >>"$tree/etc/soulbox/node.env" <<EOF
SOULBOX_SERVER=http://127.0.0.1:3000
SOULBOX_NODE_TOKEN=$token
SOULBOX_NODE_ID=nspawn-node
SOULBOX_LISTEN=127.0.0.1:3001
SOULBOX_ADVERTISE_URL=http://127.0.0.1:3001
SOULBOX_TEMPLATE_DIR=/var/lib/soulbox/node
EOF
in_ct systemctl daemon-reload
in_ct systemctl start soulbox soulbox-node
node_up=
for _ in $(seq 120); do
  ct_curl -H "X-API-Key: $key" http://127.0.0.1:3000/nodes 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if any(n.get("status") == "healthy" for n in json.load(sys.stdin)) else 1)' \
      2>/dev/null && { node_up=1; break; }
  [ "$(in_ct systemctl is-failed soulbox-node)" = failed ] && break
  sleep 2
done
if [ -n "$node_up" ] && [ "$(in_ct systemctl is-active soulbox-node)" = active ]; then
  ok "soulbox-node.service joins the cluster-mode server from node.env (healthy)"
  sbx=$(create)
  if [ -n "$sbx" ] && ct_exec "$sbx" -- true; then ok "the node agent runs a sandbox ($sbx)"; else
    fail "the node agent runs a sandbox" "$(in_ct journalctl -u soulbox-node --no-pager -n 20)"; fi
  [ -n "$sbx" ] && kill_sandbox "$sbx"
else
  fail "soulbox-node.service joins the cluster-mode server from node.env" \
    "$(in_ct journalctl -u soulbox-node -u soulbox --no-pager -n 30)"
fi
in_ct systemctl stop soulbox-node soulbox
check "both units stop cleanly" stopped_clean soulbox soulbox-node
finish
