"""Fixtures for the end-to-end suite: a running `soulbox server` (started by tests/e2e/run.sh) driven by the
official `e2b` SDK through E2B_API_URL + E2B_SANDBOX_URL, and by raw HTTP.

Every sandbox a test creates carries the metadata `e2e-run=<RUN_ID>` and is killed at teardown (the runner also
kills whatever is left and checks that nothing leaked on the host).
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from importlib.metadata import version as pkg_version

import httpx
import pytest
from packaging.version import Version

from e2b import Sandbox

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
from sbtest import ENVD_PORT, Sandboxes, envd_headers, log_tail, wait_until  # noqa: E402,F401


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set; run the suite through tests/e2e/run.sh")
    return value


API_URL = _required_env("E2B_API_URL").rstrip("/")
SANDBOX_URL = _required_env("E2B_SANDBOX_URL").rstrip("/")
API_KEY = _required_env("E2B_API_KEY")
DOMAIN = os.environ.get("SOULBOX_E2E_DOMAIN", "")
MAX_LIFETIME_S = int(os.environ.get("SOULBOX_E2E_MAX_LIFETIME_S", "600"))
SERVER_LOG = os.environ.get("SOULBOX_E2E_SERVER_LOG", "")

SDK_VERSION = Version(pkg_version("e2b"))
# 2.45.x creates through `POST /sandboxes` and connects through `/sandboxes/{id}/connect` (v1); newer through v2.
SDK_USES_V1 = SDK_VERSION < Version("2.46")
RUN_ID = f"{SDK_VERSION}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def api() -> httpx.Client:
    """Raw HTTP to the API with the key."""
    with httpx.Client(base_url=API_URL, headers={"X-API-Key": API_KEY}, timeout=60, trust_env=False) as c:
        yield c


@pytest.fixture(scope="session")
def anon() -> httpx.Client:
    """Raw HTTP to the server without any key."""
    with httpx.Client(base_url=API_URL, timeout=60, trust_env=False) as c:
        yield c


@pytest.fixture
def sandboxes(api) -> Sandboxes:
    s = Sandboxes(api, "e2e-run", RUN_ID)
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def shared(api) -> Sandbox:
    """One running sandbox for the read-mostly tests of a module."""
    s = Sandboxes(api, "e2e-run", RUN_ID)
    sbx = s.create(metadata={"role": "shared"})
    yield sbx
    s.cleanup()


def server_log_tail(n: int = 40) -> str:
    return log_tail(SERVER_LOG, n)


def jdump(x) -> str:
    return json.dumps(x, indent=1, default=str)
