"""Fixtures for the attack suite (tests/security/run.sh): a running `soulbox server`, API keys of two teams
(`E2B_API_KEY` is team A's, `SOULBOX_SEC_KEY_B` team B's) and an admin key, the official e2b SDK.

Every test attacks one defence and must fail when that defence is removed. Sandboxes a test creates carry the
metadata `sec-run=<RUN_ID>` and are killed at teardown; the runner checks that nothing leaked on the host.
"""

from __future__ import annotations

import os
import sys
import uuid

import httpx
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sbtest import ENVD_PORT, Sandboxes, envd_headers, log_tail, wait_until  # noqa: E402,F401


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set; run the suite through tests/security/run.sh")
    return value


API_URL = _required_env("E2B_API_URL").rstrip("/")
KEY_A = _required_env("E2B_API_KEY")
KEY_B = _required_env("SOULBOX_SEC_KEY_B")
ADMIN_KEY = _required_env("SOULBOX_SEC_ADMIN_KEY")
DATA_DIR = _required_env("SOULBOX_SEC_DATA_DIR")
PREFIX = _required_env("SOULBOX_SEC_PREFIX")
SERVER_LOG = os.environ.get("SOULBOX_SEC_SERVER_LOG", "")
SOULBOX_BIN = os.environ.get("SOULBOX_SEC_BIN", "")
ENVD_BIN = os.environ.get("SOULBOX_SEC_ENVD", "")
RUN_ID = uuid.uuid4().hex[:10]
# The server's OCI runtime (tests/lib/server.sh passes it on; the CLI reads the same variable).
RUNTIME = os.environ.get("SOULBOX_RUNTIME", "runc")
# The SDK's Volume sends content requests to `https://api.<E2B_DOMAIN>` unless told otherwise: this server.
os.environ.setdefault("E2B_VOLUME_API_URL", API_URL)


def runc_only(why: str):
    """A defence of runc's profile that gVisor replaces with its own (README, "Choosing a runtime"): skipped on
    runsc, with what gVisor does instead."""
    return pytest.mark.skipif(RUNTIME == "runsc", reason=f"runc's profile; on runsc: {why}")


def _client(key: str | None) -> httpx.Client:
    headers = {"X-API-Key": key} if key else {}
    return httpx.Client(base_url=API_URL, headers=headers, timeout=60, trust_env=False)


@pytest.fixture(scope="session")
def api() -> httpx.Client:
    """Raw HTTP with team A's (ordinary) key."""
    with _client(KEY_A) as c:
        yield c


@pytest.fixture(scope="session")
def api_b() -> httpx.Client:
    """Raw HTTP with team B's (ordinary) key."""
    with _client(KEY_B) as c:
        yield c


@pytest.fixture(scope="session")
def admin() -> httpx.Client:
    """Raw HTTP with the admin key."""
    with _client(ADMIN_KEY) as c:
        yield c


@pytest.fixture(scope="session")
def anon() -> httpx.Client:
    """Raw HTTP without any key."""
    with _client(None) as c:
        yield c


@pytest.fixture
def sandboxes(api) -> Sandboxes:
    """Team A's sandboxes for one test."""
    s = Sandboxes(api, "sec-run", RUN_ID)
    yield s
    s.cleanup()


@pytest.fixture
def sandboxes_b(api_b) -> Sandboxes:
    """Team B's sandboxes for one test."""
    s = Sandboxes(api_b, "sec-run", RUN_ID, sdk_opts={"api_key": KEY_B})
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def victim(api):
    """One running sandbox of team A, shared by a module's read-mostly attacks."""
    s = Sandboxes(api, "sec-run", RUN_ID)
    sbx = s.create(metadata={"role": "victim"})
    yield sbx
    s.cleanup()


def root_run(sbx, cmd: str, **kwargs):
    """Runs `cmd` as root inside the sandbox; returns the SDK's result without raising on a non-zero exit."""
    from e2b import CommandExitException

    try:
        return sbx.commands.run(cmd, user="root", **kwargs)
    except CommandExitException as e:
        return e


def server_log_tail(n: int = 40) -> str:
    return log_tail(SERVER_LOG, n)
