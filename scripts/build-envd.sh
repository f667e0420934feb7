#!/usr/bin/env bash
# Builds soulbox-envd as a static binary (glibc, crt-static) so it runs inside any rootfs.
# A separate target dir keeps the static RUSTFLAGS from invalidating the normal build cache.
set -euo pipefail
cd "$(dirname "$0")/.."
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p soulbox-envd \
  --target x86_64-unknown-linux-gnu --target-dir target/static "$@"
echo "target/static/x86_64-unknown-linux-gnu/release/soulbox-envd"
