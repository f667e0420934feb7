#!/usr/bin/env bash
# scripts/run-server.sh on a machine without a new enough Rust: it must stop with one line naming the minimum
# version (Cargo.toml's rust-version) and rustup, before any cargo error; with a new enough one it must go on to
# build. Fake `rustc`/`cargo` on PATH stand in for Debian's old toolchain and for a new one (the fake cargo
# stops the script at its first build, so nothing is built or started). Needs root (run-server.sh checks it
# first) and the runtime tools (else run-server.sh would install packages). Prints `N passed, N failed`.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then echo "check-run-server: needs root"; exit 1; fi
for tool in runc mmdebstrap nft ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "check-run-server: $tool missing (scripts/install-deps.sh)"; exit 1; }
done
need=$(sed -n 's/^rust-version = "\([0-9.]*\)".*/\1/p' Cargo.toml)
fake=$(mktemp -d "${TMPDIR:-/tmp}/check-run-server.XXXXXX")
trap 'rm -rf "$fake"' EXIT
mkdir -p "$fake/old" "$fake/new" "$fake/none"
printf '#!/bin/sh\necho "rustc 1.63.0"\n' >"$fake/old/rustc"
printf '#!/bin/sh\necho "error: failed to parse manifest"; exit 101\n' >"$fake/old/cargo"
printf '#!/bin/sh\necho "rustc %s (fake 2099-01-01)"\n' "$need" >"$fake/new/rustc"
printf '#!/bin/sh\necho "fake cargo reached: $*" >&2; exit 42\n' >"$fake/new/cargo"
chmod +x "$fake"/*/*
sys=/usr/sbin:/usr/bin:/sbin:/bin

passed=0
failed=0
expect() { # expect NAME OUTPUT WANT-REGEX [UNWANTED-REGEX]
  if grep -qE "$3" <<<"$2" && { [ -z "${4:-}" ] || ! grep -qE "$4" <<<"$2"; }; then
    passed=$((passed + 1))
    echo "ok   $1"
  else
    failed=$((failed + 1))
    echo "FAIL $1"
    sed 's/^/     /' <<<"$2"
  fi
}
line="needs Rust >= $need \\(found: %s\\); install it with rustup"
# HOME elsewhere: run-server.sh would otherwise put root's own ~/.cargo/bin (this machine's Rust) first.
out=$(HOME="$fake" PATH="$fake/old:$sys" scripts/run-server.sh 2>&1; echo "exit $?")
expect "Debian's rustc 1.63: one line naming $need and rustup, exit 1" "$out" \
  "^run-server.sh: SoulBox $(printf "$line" 1.63.0)" "failed to parse manifest|exit [^1]"
# one line, then the `exit N` this test appends
expect "... and only that line" "$(wc -l <<<"$out")" "^2$"
if PATH=$sys command -v rustc >/dev/null; then
  echo "skip no Rust at all: this machine has a system rustc ($(PATH=$sys command -v rustc))"
else
  out=$(HOME="$fake" PATH="$fake/none:$sys" scripts/run-server.sh 2>&1; echo "exit $?")
  expect "no Rust at all: the same line" "$out" "$(printf "$line" none)" "exit [^1]"
fi
out=$(HOME="$fake" PATH="$fake/new:$sys" scripts/run-server.sh 2>&1; echo "exit $?")
expect "Rust $need: goes on to build" "$out" "fake cargo reached: build --release" "needs Rust"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
