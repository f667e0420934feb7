#!/usr/bin/env bash
# Builds the SoulBox Debian package: target/deb/soulbox_<version>_<arch>.deb with the release `soulbox` binary,
# the static sandbox agent, systemd units for the server and for a node agent, /etc/soulbox/config.toml and
# /etc/soulbox/node.env (conffiles) and /var/lib/soulbox. Sources of the non-binary files: packaging/deb/.
#
# Plain `dpkg-deb --build` rather than cargo-deb: the package holds two binaries from two builds (the static
# agent has its own target dir and RUSTFLAGS), a symlink and maintainer scripts, which is as short to say here
# as in cargo-deb metadata, and it needs no extra tool built from crates.io on every machine that packages.
#
# Usage: scripts/package-deb.sh [--no-build] [--debug] [--out DIR]
#   --no-build  package the binaries already in target/ (scripts/build-envd.sh and
#               `cargo build --release -p soulbox-cli` ran before)
#   --debug     package target/debug/soulbox instead (with --no-build: CI checks the package's layout without a
#               release build; never ship it) into target/deb-debug
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
profile=release
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --debug) profile=debug ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--no-build] [--debug] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

started=$(date +%s)
if [ "$build" = 1 ]; then
  scripts/build-envd.sh >/dev/null
  if [ "$profile" = release ]; then cargo build --release -p soulbox-cli; else cargo build -p soulbox-cli; fi
fi
built=$(date +%s)
bin=target/$profile/soulbox
[ -n "$out" ] || { [ "$profile" = release ] && out=target/deb || out=target/deb-debug; }
envd=target/static/x86_64-unknown-linux-gnu/release/soulbox-envd
for f in "$bin" "$envd"; do
  [ -x "$f" ] || { echo "package-deb: $f is missing (run without --no-build)" >&2; exit 1; }
done

version=$("$bin" --version | awk '{print $2}')
# build-envd.sh builds for x86_64 only.
arch=amd64
root=$(mktemp -d "${TMPDIR:-/tmp}/soulbox-deb.XXXXXX")
# mktemp makes it 0700: the tree's root is the package's `./`, which must not ask for a root-only `/`.
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
src=packaging/deb

# The binary and the agent side by side: the server looks for `soulbox-envd-static` next to its own executable
# (config.rs, default_envd_path), and /usr/bin/soulbox is a symlink, which current_exe() resolves. Stripped:
# symbols are most of the size, and release builds abort on panic (no unwinding that would print them).
install -d -m 0755 "$root/usr/lib/soulbox" "$root/usr/bin" "$root/usr/share/doc/soulbox"
install -m 0755 "$bin" "$root/usr/lib/soulbox/soulbox"
install -m 0755 "$envd" "$root/usr/lib/soulbox/soulbox-envd-static"
strip "$root/usr/lib/soulbox/soulbox" "$root/usr/lib/soulbox/soulbox-envd-static"
ln -s ../lib/soulbox/soulbox "$root/usr/bin/soulbox"

install -d -m 0755 "$root/lib/systemd/system"
install -m 0644 "$src/soulbox.service" "$src/soulbox-node.service" "$root/lib/systemd/system/"

# Settings hold the node token and maybe a database password: root-only.
install -d -m 0755 "$root/etc/soulbox"
install -m 0600 "$src/config.toml" "$root/etc/soulbox/config.toml"
install -m 0600 "$src/node.env" "$root/etc/soulbox/node.env"

# Data dirs 0711 (traversable, not listable): the runtime's store is <data-dir>/node, and with user namespaces
# (the default) runc's init walks to each sandbox's rootfs as the sandbox's mapped root, so the server refuses to
# start below a 0700 directory (perms.rs, check_traversable; found by tests/packaging/boot-in-nspawn.sh). Every
# file the server writes here (database, secrets key, admin key) is 0600 itself. The link lets
# `soulbox keys`/`teams` (which read <data-dir>/config.toml) find the database the service uses.
install -d -m 0711 "$root/var/lib/soulbox" "$root/var/lib/soulbox-node"
ln -s /etc/soulbox/config.toml "$root/var/lib/soulbox/config.toml"

install -m 0644 README.md "$root/usr/share/doc/soulbox/README.md"
cat >"$root/usr/share/doc/soulbox/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: soulbox

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
COPYRIGHT

# glibc: the newest symbol version the dynamically linked binary needs (the agent is static).
glibc=$(objdump -T "$root/usr/lib/soulbox/soulbox" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
install -d -m 0755 "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: soulbox
Version: $version
Architecture: $arch
Maintainer: SoulBox developers <soulbox@localhost>
Section: admin
Priority: optional
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Depends: libc6 (>= ${glibc:-2.36}), runc, mmdebstrap, nftables, iproute2, e2fsprogs, xfsprogs, ca-certificates
Recommends: runsc
Suggests: postgresql
Description: self-hosted E2B-compatible sandboxes for AI agents
 SoulBox serves the E2B API: the official e2b SDKs (Python, JavaScript) and
 CLI create, control and connect to sandboxes (runc or gVisor containers with
 their own network, disk and user namespace) on this machine, or on a cluster
 of node agents.
 .
 Units: soulbox.service (one machine, or a cluster's control plane) and
 soulbox-node.service (a cluster's node agent). Neither is started on install.
CONTROL
printf '/etc/soulbox/config.toml\n/etc/soulbox/node.env\n' >"$root/DEBIAN/conffiles"
install -m 0755 "$src/postinst" "$src/prerm" "$src/postrm" "$root/DEBIAN/"

mkdir -p "$out"
deb="$out/soulbox_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
done_at=$(date +%s)
echo "package-deb: $deb ($(du -h "$deb" | cut -f1)); build $((built - started)) s, package $((done_at - built)) s" >&2
echo "$deb"
