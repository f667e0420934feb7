#!/usr/bin/env bash
# Brings a Debian 12 machine to a running `soulbox server` with its defaults: installs the system packages,
# builds the static agent and the server, and starts it (the first start builds the `base` template).
# Extra arguments go to `soulbox server` (e.g. --listen 0.0.0.0:3000 --domain sandbox.example.com).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "run-server.sh needs root (namespaces, cgroups, runc, nftables)" >&2
  exit 1
fi
missing=0
for tool in runc mmdebstrap nft protoc ip; do command -v "$tool" >/dev/null 2>&1 || missing=1; done
if [ "$missing" -eq 1 ]; then scripts/install-deps.sh; fi
scripts/build-envd.sh >/dev/null
cargo build --release -p soulbox-cli
# The server looks for the static agent next to its own binary.
install -m 0755 target/static/x86_64-unknown-linux-gnu/release/soulbox-envd target/release/soulbox-envd-static
exec target/release/soulbox server "$@"
