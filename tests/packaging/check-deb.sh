#!/usr/bin/env bash
# Checks the SoulBox .deb without installing it: builds it (scripts/package-deb.sh; or takes one with --deb
# PATH), then reads it with `dpkg-deb -c/-I/-x` and checks the binaries, units, conffiles, data dirs and
# maintainer scripts are there as the README's package path needs them, that the agent is static and the
# binary runs, and `systemd-analyze verify` on the units against the unpacked tree. Installs nothing and starts
# no service. Prints `N passed, N failed`; exits 1 on any failure.
#
# Usage: tests/packaging/check-deb.sh [--deb PATH] [package-deb.sh options, e.g. --no-build]
set -uo pipefail

deb=
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deb) deb=$(realpath -e "$2") || exit 1; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
cd "$(dirname "$0")/../.."
if [ -z "$deb" ]; then
  deb=$(scripts/package-deb.sh "${args[@]}") || { echo "check-deb: building the package failed"; exit 1; }
fi

passed=0
failed=0
check() {
  local name=$1
  shift
  if "$@" >/tmp/check-deb.$$.out 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
    sed 's/^/     /' /tmp/check-deb.$$.out
  fi
}
tree=$(mktemp -d "${TMPDIR:-/tmp}/check-deb.XXXXXX")
trap 'rm -rf "$tree" /tmp/check-deb.$$.out' EXIT

contents=$(dpkg-deb -c "$deb")
info=$(dpkg-deb -I "$deb")
# `dpkg-deb -c` lines: mode owner/group size date time path [-> target]
has() { # has MODE-PREFIX PATH [LINK-TARGET]: PATH is in the package with a mode starting MODE-PREFIX
  local line
  line=$(awk -v p="./$2" '$6 == p' <<<"$contents")
  [ -n "$line" ] || { echo "$2 is not in the package"; return 1; }
  [[ "$line" == "$1"* ]] || { echo "$2: $line (want mode $1...)"; return 1; }
  [[ "$line" == *" root/root "* ]] || { echo "$2 is not owned by root: $line"; return 1; }
  [ $# -lt 3 ] || [[ "$line" == *" -> $3" ]] || { echo "$2 does not link to $3: $line"; return 1; }
}
field() { grep -q "^ $1: .*$2" <<<"$info" || { echo "control field $1 lacks $2"; return 1; }; }

check "the package's / is 0755" has drwxr-xr-x ""
check "binary /usr/lib/soulbox/soulbox" has -rwxr-xr-x usr/lib/soulbox/soulbox
check "static agent beside it" has -rwxr-xr-x usr/lib/soulbox/soulbox-envd-static
check "/usr/bin/soulbox links to it" has lrwxrwxrwx usr/bin/soulbox ../lib/soulbox/soulbox
check "server unit" has -rw-r--r-- lib/systemd/system/soulbox.service
check "node agent unit" has -rw-r--r-- lib/systemd/system/soulbox-node.service
check "config.toml root-only" has -rw------- etc/soulbox/config.toml
check "node.env root-only" has -rw------- etc/soulbox/node.env
check "data dir /var/lib/soulbox (traversable: runc walks to rootfs as a mapped root)" has drwx--x--x var/lib/soulbox/
check "node data dir /var/lib/soulbox-node (traversable)" has drwx--x--x var/lib/soulbox-node/
check "keys find the config" has lrwxrwxrwx var/lib/soulbox/config.toml /etc/soulbox/config.toml
check "README in the docs" has -rw-r--r-- usr/share/doc/soulbox/README.md
check "control: package name" field Package soulbox
check "control: runtime dependencies" field Depends 'runc, mmdebstrap, nftables, iproute2'
conffiles() {
  local got
  got=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
  [ "$got" = "$(printf '/etc/soulbox/config.toml\n/etc/soulbox/node.env')" ] || { echo "conffiles: $got"; return 1; }
}
check "control: both conffiles" conffiles
# `dpkg-deb -I` lists each control member as "<size> bytes, <n> lines [*] <name> <interpreter>" (* = executable).
check "maintainer scripts, executable" bash -c \
  'for s in postinst prerm postrm; do grep -qE "\* +$s +#!/bin/sh" <<<"$1" || { echo "no executable $s"; exit 1; }; done' _ "$info"

dpkg-deb -x "$deb" "$tree"
check "the binary runs and names the package version" bash -c \
  'v=$("$1/usr/lib/soulbox/soulbox" --version) && dpkg-deb -f "$2" Version | grep -qx "${v#soulbox }"' _ "$tree" "$deb"
check "the agent is statically linked" bash -c \
  'out=$(file -L "$1/usr/lib/soulbox/soulbox-envd-static"); grep -q "statically linked\|static-pie" <<<"$out" || { echo "$out"; exit 1; }' _ "$tree"
check "the server unit runs the packaged binary with the packaged config" \
  grep -qx 'ExecStart=/usr/lib/soulbox/soulbox --data-dir /var/lib/soulbox server --config /etc/soulbox/config.toml' \
  "$tree/lib/systemd/system/soulbox.service"
check "the node unit reads node.env" grep -qx 'EnvironmentFile=/etc/soulbox/node.env' \
  "$tree/lib/systemd/system/soulbox-node.service"
# No option that gives the service a mount namespace of its own or a seccomp filter (the sandboxes inherit
# them; see the unit's comments): a regression here breaks sandboxes only after a restart, so check the text.
check "no namespacing or seccomp hardening in the units" bash -c \
  '! grep -hE "^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|ProtectKernel[A-Za-z]*|ProtectProc|ReadOnlyPaths|NoNewPrivileges|SystemCallFilter|RestrictNamespaces|MemoryDenyWriteExecute|StateDirectory)=" "$1"/lib/systemd/system/soulbox*.service' _ "$tree"
# The shipped config.toml must parse as the server's config (every key commented out is still valid TOML).
check "config.toml is accepted by the server's parser" bash -c \
  'SOULBOX_DATA_DIR="$1/var/lib/soulbox" "$1/usr/lib/soulbox/soulbox" keys --config "$1/etc/soulbox/config.toml" \
     --database-url "sqlite://$1/keys-check.db?mode=rwc" list' _ "$tree"

verify_units() {
  # Copies whose paths point into the unpacked package (its binary, its node.env), verified against this
  # machine's units (`--root=` would need a whole systemd tree there). verify exits 0 on mere warnings
  # (a misspelt value is "ignoring"), so any output fails too.
  local u out
  mkdir -p "$tree/verify"
  for u in soulbox soulbox-node; do
    sed "s|/usr/lib/soulbox/|$tree/usr/lib/soulbox/|g; s|/etc/soulbox/|$tree/etc/soulbox/|g" \
      "$tree/lib/systemd/system/$u.service" >"$tree/verify/$u.service"
  done
  out=$(systemd-analyze verify --man=no "$tree/verify/soulbox.service" "$tree/verify/soulbox-node.service" 2>&1) \
    && [ -z "$out" ] || { echo "$out"; return 1; }
}
if command -v systemd-analyze >/dev/null 2>&1; then
  check "systemd-analyze verify (no warnings)" verify_units
else
  echo "skip systemd-analyze verify (not installed)"
fi

echo "check-deb: $deb"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
