#!/usr/bin/env bash
# The package path on a fresh Debian 12, without touching this machine's systemd: mmdebstrap makes a minimal
# bookworm tree, `apt install ./soulbox_*.deb` runs in it (so Depends resolve from Debian and the maintainer
# scripts run), then the installed files are checked: the binary runs from /usr/bin, finds the agent beside
# itself, `soulbox keys` reads /etc/soulbox/config.toml through the data dir's link, and the units verify
# against the tree's own systemd. No service is started (there is no init in the tree). As root; needs the
# Debian mirror. Prints `N passed, N failed`.
#
# Usage: tests/packaging/install-in-chroot.sh [PATH.deb]   (default: target/deb/soulbox_*.deb)
set -uo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "install-in-chroot: needs root"; exit 1; }
deb=$(realpath -e "${1:-$(ls target/deb/soulbox_*.deb | head -1)}") || exit 1
tree=$(mktemp -d /var/tmp/deb-install-test.XXXXXX)
trap 'rm -rf "$tree" "$tree.log"' EXIT
log=$tree.log

started=$(date +%s)
# systemd in the tree only for `systemd-analyze verify`; it is not started.
if ! mmdebstrap --variant=apt --include=systemd bookworm "$tree" \
  --customize-hook="copy-in $deb /tmp" \
  --customize-hook="chroot \"\$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/$(basename "$deb")" \
  >"$log" 2>&1; then
  tail -30 "$log"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "mmdebstrap + apt install: $(($(date +%s) - started)) s"

passed=0
failed=0
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then passed=$((passed + 1)); echo "ok   $name"; else
    failed=$((failed + 1)); echo "FAIL $name"; sed 's/^/     /' <<<"$out"; fi
}
in_tree() { chroot "$tree" "$@"; }
check "installed, with its dependencies" in_tree dpkg-query -W -f='${Status}\n' soulbox runc mmdebstrap nftables iproute2
check "soulbox on PATH runs" in_tree soulbox --version
check "the agent is beside the binary" test -x "$tree/usr/lib/soulbox/soulbox-envd-static"
check "conffiles registered" bash -c "chroot '$tree' dpkg-query -W -f='\${Conffiles}\n' soulbox | grep -q /etc/soulbox/config.toml"
check "config.toml root-only" bash -c "[ \"\$(stat -c %a '$tree/etc/soulbox/config.toml')\" = 600 ]"
# soulbox keys with no flags: the data dir's config.toml link must lead it to the config's database_url
check "soulbox keys follows /var/lib/soulbox/config.toml" bash -c "
  printf 'database_url = \"sqlite:///tmp/keys-from-config.db?mode=rwc\"\n' >>'$tree/etc/soulbox/config.toml'
  chroot '$tree' soulbox keys list && test -f '$tree/tmp/keys-from-config.db'"
check "units verify with the tree's systemd" in_tree systemd-analyze verify --man=no \
  /lib/systemd/system/soulbox.service /lib/systemd/system/soulbox-node.service
check "enable works (links only, nothing started)" bash -c \
  "chroot '$tree' systemctl enable soulbox.service && test -L '$tree/etc/systemd/system/multi-user.target.wants/soulbox.service'"
# dpkg drops a package's directories on purge only when empty: an installation's data (here a stand-in
# database) stays.
check "purge keeps the data" bash -c "echo data >'$tree/var/lib/soulbox/soulbox.db' &&
  chroot '$tree' dpkg --purge soulbox >/dev/null && test -f '$tree/var/lib/soulbox/soulbox.db' &&
  ! test -e '$tree/usr/bin/soulbox' && ! test -e '$tree/etc/soulbox/config.toml'"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
