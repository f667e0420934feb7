"""Fixtures for the end-to-end suite: a running `soulbox server` (started by tests/e2e/run.sh) driven by the
official `e2b` SDK through E2B_API_URL + E2B_SANDBOX_URL, and by raw HTTP.

Every sandbox a test creates carries the metadata `e2e-run=<RUN_ID>` and is killed at teardown (the runner also
kills whatever is left and checks that nothing leaked on the host).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from importlib.metadata import version as pkg_version
from typing import Callable, Dict, List, Optional

import httpx
import pytest
from packaging.version import Version

from e2b import Sandbox


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
ENVD_PORT = 49983


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
    """Polls `predicate` until it returns something truthy (returned) or `timeout` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


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


class Sandboxes:
    """Creates sandboxes for one test (tagged with the run id) and kills them afterwards."""

    def __init__(self, api: httpx.Client):
        self.api = api
        self.created: List[str] = []

    def create(self, metadata: Optional[Dict[str, str]] = None, **kwargs) -> Sandbox:
        meta = {"e2e-run": RUN_ID, **(metadata or {})}
        kwargs.setdefault("timeout", 300)
        sbx = Sandbox.create(metadata=meta, **kwargs)
        self.created.append(sbx.sandbox_id)
        return sbx

    def create_raw(self, path: str = "/v2/sandboxes", **body) -> dict:
        body.setdefault("templateID", "base")
        body.setdefault("timeout", 300)
        body["metadata"] = {"e2e-run": RUN_ID, **body.get("metadata", {})}
        r = self.api.post(path, json=body)
        assert r.status_code == 201, r.text
        data = r.json()
        self.created.append(data["sandboxID"])
        return data

    def cleanup(self):
        for sid in self.created:
            self.api.delete(f"/sandboxes/{sid}")


@pytest.fixture
def sandboxes(api) -> Sandboxes:
    s = Sandboxes(api)
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def shared(api) -> Sandbox:
    """One running sandbox for the read-mostly tests of a module."""
    s = Sandboxes(api)
    sbx = s.create(metadata={"role": "shared"})
    yield sbx
    s.cleanup()


def envd_headers(sandbox_id: str, token: Optional[str] = None, port: int = ENVD_PORT) -> Dict[str, str]:
    h = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token:
        h["X-Access-Token"] = token
    return h


def server_log_tail(n: int = 40) -> str:
    if not SERVER_LOG:
        return ""
    try:
        with open(SERVER_LOG, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def jdump(x) -> str:
    return json.dumps(x, indent=1, default=str)
