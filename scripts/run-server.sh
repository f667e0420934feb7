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
# Rust first (install-deps.sh runs cargo too): Debian 12's own rustc (1.63) is far older than this code needs,
# and would fail with pages of cargo errors about the manifest's edition instead of saying what to install.
[ -x "$HOME/.cargo/bin/cargo" ] && PATH="$HOME/.cargo/bin:$PATH"
need_rust=$(sed -n 's/^rust-version = "\([0-9.]*\)".*/\1/p' Cargo.toml)
have_rust=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if [ -z "$have_rust" ] || ! command -v cargo >/dev/null 2>&1 \
  || [ "$(printf '%s\n%s\n' "$need_rust" "${have_rust%%-*}" | sort -V | head -1)" != "$need_rust" ]; then
  echo "run-server.sh: SoulBox needs Rust >= $need_rust (found: ${have_rust:-none}); install it with rustup (https://rustup.rs: curl --proto '=https' -sSf https://sh.rustup.rs | sh), not Debian's rustc/cargo packages, then run this again" >&2
  exit 1
fi
missing=0
for tool in runc mmdebstrap nft ip; do command -v "$tool" >/dev/null 2>&1 || missing=1; done
if [ "$missing" -eq 1 ]; then scripts/install-deps.sh; fi
scripts/build-envd.sh >/dev/null
cargo build --release -p soulbox-cli
# The server looks for the static agent next to its own binary.
install -m 0755 target/static/x86_64-unknown-linux-gnu/release/soulbox-envd target/release/soulbox-envd-static
exec target/release/soulbox server "$@"
