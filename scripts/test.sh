#!/usr/bin/env bash
# Runs every SoulBox test: the Rust workspace (unit + integration; root-only tests need root) and the
# compatibility suite that drives envd with the official e2b Python SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh   # rustfmt, clippy -D warnings, module/crate dependency rules, cargo-deny (licenses, bans, sources; advisories when the DB is present)
cargo build --workspace --all-targets
scripts/build-envd.sh   # the static agent the runtime and server tests run in sandboxes
# The store and replica tests run on SQLite and on a throwaway PostgreSQL (install-deps.sh installs it); here
# a missing PostgreSQL is a failure, not a skip. SOULBOX_REQUIRE_POSTGRES=0 to allow skipping.
# Likewise gVisor: the runtime's runsc tests (crates/soulbox-runtime/tests/runsc.rs) fail instead of skipping without
# runsc. SOULBOX_REQUIRE_RUNSC=0 to allow skipping.
SOULBOX_REQUIRE_POSTGRES="${SOULBOX_REQUIRE_POSTGRES:-1}" SOULBOX_REQUIRE_RUNSC="${SOULBOX_REQUIRE_RUNSC:-1}" \
  cargo nextest run --workspace --no-fail-fast
cargo test --doc --workspace   # the examples in the API docs (nextest does not run doctests)
scripts/fuzz.sh   # every fuzz target for a bounded time from the checked-in seeds (cargo-fuzz, nightly)
[ "$(id -u)" != 0 ] || SOULBOX_SDK_TEST_SKIP_BUILD=1 crates/soulbox/tests/run.sh   # SDK + CLI against a real server
if [ -x tests/compat/run.sh ]; then
  tests/compat/run.sh
fi
tests/e2e/run.sh   # soulbox server end to end with the official e2b Python SDK (2.45.1 and latest)
SOULBOX_SECURITY_SKIP_BUILD=1 tests/security/run.sh   # the attack suite (reuses the e2e data dir and its base)
SOULBOX_CLUSTER_SKIP_BUILD=1 tests/cluster/run.sh   # cluster mode: server + three node agents (reuses the e2e base template)
