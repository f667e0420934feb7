#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer, nightly) for a bounded time each, starting from the
# checked-in seeds (fuzz/corpus/<target>) plus the corpus earlier runs on this machine grew (kept outside the
# checkout). Fails on the first crash, panic, leak or timeout, naming the input that caused it.
#
# Usage: scripts/fuzz.sh [target...]          (default: every target)
# Environment:
#   SOULBOX_FUZZ_SECONDS=45                    time per target
#   SOULBOX_FUZZ_DIR=/var/tmp/soulbox-fuzz     build dir, grown corpora and crash artifacts (warm runs reuse it)
# Reproduce a failure: cargo +nightly fuzz run --target-dir "$SOULBOX_FUZZ_DIR/target" <target> <artifact>
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${SOULBOX_FUZZ_SECONDS:-45}"
DIR="${SOULBOX_FUZZ_DIR:-/var/tmp/soulbox-fuzz}"
CARGO_FUZZ_VERSION=0.13.2

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly --profile minimal)" >&2
  exit 1
fi
if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
mkdir -p "$DIR/artifacts"
# Run as root, a target that writes files (layer_unpack) sees every mount but this dir read-only.
export SOULBOX_FUZZ_SCRATCH="$DIR"
cargo +nightly fuzz build --target-dir "$DIR/target"
for t in "${targets[@]}"; do
  mkdir -p "$DIR/corpus/$t"
  echo "=== fuzz $t for ${SECONDS_PER_TARGET}s" >&2
  # New inputs go into the first (machine-local) corpus dir; the checked-in seeds are only read.
  if ! cargo +nightly fuzz run --target-dir "$DIR/target" "$t" "$DIR/corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$DIR/artifacts/$t-" -print_final_stats=1 2>"$DIR/$t.log"; then
    tail -n 40 "$DIR/$t.log" >&2
    echo "fuzz target $t failed; inputs that broke it: $(ls "$DIR"/artifacts/"$t"-* 2>/dev/null | tr '\n' ' ')" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$DIR/$t.log" | tr '\n' ' ' >&2
  echo >&2
done
