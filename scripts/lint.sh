#!/usr/bin/env bash
# Static checks of the workspace: formatting, clippy (warnings are errors), the module and crate dependency rules
# (scripts/check-deps.py), the Kubernetes manifests (scripts/check-k8s.sh) and a dependency audit with cargo-deny
# (deny.toml: licenses, banned and duplicate crates, sources, and RustSec advisories). Runs every check, then
# fails if any failed.
#
# Advisories need the RustSec advisory DB, a git repository this script never fetches by itself. It is checked
# when a copy is present in deny.toml's db-path ($CARGO_HOME/advisory-dbs, e.g. after `cargo deny fetch db` on a
# machine that reaches it); without one the check is reported as SKIPPED, never as passed.
# SOULBOX_LINT_FETCH_ADVISORIES=1 lets cargo-deny fetch the DB first.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
skipped=()
step() {
  local name=$1
  shift
  echo "== $name: $*"
  if "$@"; then
    echo "-- $name: ok"
  else
    echo "-- $name: FAILED"
    failed+=("$name")
  fi
}

step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step check-deps python3 scripts/check-deps.py
# Kubernetes manifests: rendered and validated against the Kubernetes schemas offline (scripts/check-k8s.sh).
step k8s scripts/check-k8s.sh
if command -v cargo-deny >/dev/null 2>&1; then
  step "deny licenses/bans/sources" cargo deny --offline check licenses bans sources
  db_path="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
  if [ "${SOULBOX_LINT_FETCH_ADVISORIES:-0}" = 1 ]; then
    step "deny advisories" cargo deny check advisories
  elif compgen -G "$db_path/advisory-db-*/crates" >/dev/null; then
    step "deny advisories" cargo deny --offline check advisories
  else
    echo "== deny advisories: SKIPPED, no RustSec advisory DB in $db_path (see the top of this script)"
    skipped+=("deny advisories")
  fi
else
  echo "== cargo-deny: not installed (scripts/install-deps.sh installs it)"
  failed+=("cargo-deny missing")
fi

echo
[ ${#skipped[@]} -eq 0 ] || echo "lint: skipped: ${skipped[*]}"
if [ ${#failed[@]} -ne 0 ]; then
  echo "lint: FAILED: ${failed[*]}"
  exit 1
fi
echo "lint: ok"
