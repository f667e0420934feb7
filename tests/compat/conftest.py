"""Fixtures for the E2B compatibility suite.

The official `e2b` SDK runs in debug mode (`E2B_DEBUG=true`): `Sandbox.create()` makes no API call and talks to
envd at http://localhost:49983 with envd version 99.99.99 and *no* access token. SoulBox's envd is started by
`run.sh` with an access token, so the fixtures hand the token to the SDK the way the SDK itself does when a
create/connect response carries `envdAccessToken` (`sandbox_sync/main.py:_create`): the public (deprecated)
`Sandbox(**SandboxOpts)` constructor with `envd_access_token=<token>` and a `ConnectionConfig` whose
`extra_sandbox_headers` hold `X-Access-Token`, `E2b-Sandbox-Id` and `E2b-Sandbox-Port`. That route is identical
in e2b 2.45.1 and 2.63.0 and touches no private attribute.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from importlib.metadata import version as pkg_version
from typing import Dict, Optional

import pytest
import pytest_asyncio
from packaging.version import Version

from e2b import AsyncSandbox, ConnectionConfig, Sandbox

ENVD_PORT = 49983
# Raw requests go to the loopback address directly (the SDK uses "localhost").
ENVD_URL = os.environ.get("SOULBOX_ENVD_URL", f"http://127.0.0.1:{ENVD_PORT}")
# The version the SDK assumes for envd in debug mode (`ENVD_DEBUG_FALLBACK`).
DEBUG_ENVD_VERSION = Version("99.99.99")
HOME = "/home/user"

SDK_VERSION = Version(pkg_version("e2b"))


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise pytest.UsageError(f"{name} is not set; run the suite through tests/compat/run.sh")
    return value


TOKEN = _required_env("SOULBOX_ENVD_TOKEN")
# Sandbox-level env vars given to envd through the init JSON (SOULBOX_ENVD_INIT's "envVars").
INIT_ENVS: Dict[str, str] = json.loads(os.environ.get("SOULBOX_COMPAT_INIT_ENVS", "{}"))
INIT_SANDBOX_ID: Optional[str] = os.environ.get("SOULBOX_COMPAT_SANDBOX_ID")


def _tokened_opts(sandbox_id: str) -> dict:
    headers = {
        "E2b-Sandbox-Id": sandbox_id,
        "E2b-Sandbox-Port": str(ConnectionConfig.envd_port),
        "X-Access-Token": TOKEN,
    }
    return dict(
        sandbox_id=sandbox_id,
        sandbox_domain=None,
        envd_version=DEBUG_ENVD_VERSION,
        envd_access_token=TOKEN,
        connection_config=ConnectionConfig(extra_sandbox_headers=headers),
    )


@pytest.fixture
def untokened_sandbox() -> Sandbox:
    """Exactly what `Sandbox.create()` gives in debug mode: no access token."""
    sbx = Sandbox.create()
    assert sbx.sandbox_id == "debug_sandbox_id", "the SDK is not in debug mode (E2B_DEBUG=true)"
    return sbx


@pytest.fixture
def sandbox(untokened_sandbox: Sandbox) -> Sandbox:
    """A debug-mode sandbox that carries envd's access token, as after a real create with `secure=True`."""
    return Sandbox(**_tokened_opts(untokened_sandbox.sandbox_id))


@pytest_asyncio.fixture
async def async_sandbox() -> AsyncSandbox:
    created = await AsyncSandbox.create()
    assert created.sandbox_id == "debug_sandbox_id"
    return AsyncSandbox(**_tokened_opts(created.sandbox_id))


@pytest.fixture
def name(request, sandbox: Sandbox):
    """A unique relative name under /home/user, removed after the test."""
    base = f"compat_{request.node.name.split('[')[0]}_{uuid.uuid4().hex[:8]}"
    yield base
    try:
        sandbox.files.remove(base)
    except Exception:
        pass


@dataclass
class RawResponse:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def raw_request(
    method: str,
    path_and_query: str,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
    url: Optional[str] = None,
    timeout: float = 30,
) -> RawResponse:
    """A plain HTTP request with no SDK involved (no token unless given in `headers`)."""
    req = urllib.request.Request(
        url or f"{ENVD_URL}{path_and_query}", data=body, method=method, headers=headers or {}
    )
    try:
        with _opener.open(req, timeout=timeout) as resp:
            return RawResponse(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
    except urllib.error.HTTPError as err:
        return RawResponse(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


@pytest.fixture
def raw():
    return raw_request
