#!/usr/bin/env bash
# Runs every SoulBox test: the Rust workspace (unit + integration; root-only tests need root) and the
# compatibility suite that drives envd with the official e2b Python SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lint.sh   # rustfmt, clippy -D warnings, module/crate dependency rules, cargo-deny (licenses, bans, sources; advisories when the DB is present)
cargo build --workspace --all-targets
scripts/build-envd.sh   # the static agent the runtime and server tests run in sandboxes
# Packaging: the .deb's contents, units and conffiles (with the debug binary: CI makes no release build; the
# release package is scripts/package-deb.sh) and run-server.sh's Rust check (needs root).
tests/packaging/check-deb.sh --no-build --debug
[ "$(id -u)" != 0 ] || tests/packaging/check-run-server.sh
# The same package's units under a real systemd: a Debian 12 tree booted with systemd-nspawn (~1.5 min; needs root).
[ "$(id -u)" != 0 ] || tests/packaging/boot-in-nspawn.sh target/deb-debug/soulbox_*.deb
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
SOULBOX_E2E_SKIP_BUILD=1 tests/dashboard/run.sh   # the web dashboard in a real headless Chromium (reuses the e2e base template)
SOULBOX_E2E_SKIP_BUILD=1 tests/domain/run.sh   # E2B_DOMAIN only: the SDK by name over the server's own HTTPS, in a netns with its own DNS (reuses the e2e base template)
# gVisor (runsc): the same server end to end (newest Python SDK) and the attack suite, on their own data dir,
# prefix and pool, sharing the e2e template store (no second `base` build). The attack suite skips runc-profile
# checks there, naming what gVisor does instead. The runtime's own runsc tests ran with nextest above.
runsc_env=(SOULBOX_RUNTIME=runsc SOULBOX_TEMPLATE_DIR=/var/tmp/soulbox-e2e/node)
env "${runsc_env[@]}" SOULBOX_E2E_DIR=/var/tmp/soulbox-e2e-runsc SOULBOX_E2E_PREFIX=sbgv SOULBOX_E2E_POOL=10.219.0.0/16 \
  SOULBOX_E2E_VERSIONS=latest SOULBOX_E2E_SKIP_JS=1 SOULBOX_E2E_SKIP_BUILD=1 tests/e2e/run.sh
env "${runsc_env[@]}" SOULBOX_SECURITY_DIR=/var/tmp/soulbox-e2e-runsc SOULBOX_SECURITY_PREFIX=sbgs \
  SOULBOX_SECURITY_POOL=10.214.0.0/16 SOULBOX_SECURITY_SKIP_BUILD=1 tests/security/run.sh
