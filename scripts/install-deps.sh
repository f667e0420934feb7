#!/usr/bin/env bash
# Installs the Debian packages SoulBox needs to build, run and test on a fresh Debian 12 machine.
set -euo pipefail
packages=(
  runc                # default OCI runtime
  runsc               # gVisor, the second OCI runtime (runtime_bin = "runsc"; its tests require it)
  mmdebstrap          # builds the base template from Debian's packages, no registry needed
  nftables iptables iproute2  # sandbox networks and firewall
  attr sudo           # xattr tools for tests; sudo for the `user` account in sandboxes and the compat suite
  busybox-static      # the tiny test template
  xfsprogs            # mkfs.xfs for the sandboxes disk image (disk limits via project quotas)
  e2fsprogs           # mkfs.ext4/e2fsck for per-sandbox disk images (disk limits without kernel quotas)
  python3-venv        # compat suite virtualenvs (harmless where python3 already has venv)
  postgresql          # store + replica tests start throwaway PostgreSQL clusters (initdb/postgres binaries)
  docker-registry     # a real OCI registry the template tests start on a loopback port (FROM <image> pulls)
  tmux                # the CLI test drives `soulbox shell` (a PTY) in tmux
  chromium            # tests/dashboard: the web dashboard in a real headless browser (playwright-core drives it)
  systemd-container socat  # tests/packaging/boot-in-nspawn.sh: the .deb's units under a real systemd (systemd-nspawn)
)
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps.sh must run as root (it calls apt-get)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"

# Rust tools the scripts use, built from crates.io (cached in ~/.cargo/bin; rebuilt only for another version).
CARGO_DENY_VERSION=0.20.2   # scripts/lint.sh: the dependency audit (deny.toml)
if command -v cargo >/dev/null 2>&1 \
  && [ "$(cargo deny --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DENY_VERSION" ]; then
  cargo install cargo-deny --locked --version "$CARGO_DENY_VERSION"
fi
