"""Helpers shared by the Python suites that drive a real `soulbox server` (tests/e2e, tests/security)."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import httpx
import pytest

from e2b import Sandbox

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


class Sandboxes:
    """Creates sandboxes for one test (tagged `<run_key>=<run_id>`) and kills them afterwards."""

    def __init__(self, api: httpx.Client, run_key: str, run_id: str, sdk_opts: Optional[dict] = None):
        self.api = api
        self.run_key = run_key
        self.run_id = run_id
        # Passed to every SDK call (e.g. `api_key` of another team).
        self.sdk_opts = sdk_opts or {}
        self.created: List[str] = []

    def create(self, metadata: Optional[Dict[str, str]] = None, **kwargs) -> Sandbox:
        meta = {self.run_key: self.run_id, **(metadata or {})}
        kwargs.setdefault("timeout", 300)
        sbx = Sandbox.create(metadata=meta, **self.sdk_opts, **kwargs)
        self.created.append(sbx.sandbox_id)
        return sbx

    def create_raw(self, path: str = "/v2/sandboxes", **body) -> dict:
        body.setdefault("templateID", "base")
        body.setdefault("timeout", 300)
        body["metadata"] = {self.run_key: self.run_id, **body.get("metadata", {})}
        r = self.api.post(path, json=body)
        assert r.status_code == 201, r.text
        data = r.json()
        self.created.append(data["sandboxID"])
        return data

    def cleanup(self):
        for sid in self.created:
            self.api.delete(f"/sandboxes/{sid}")


def envd_headers(sandbox_id: str, token: Optional[str] = None, port: int = ENVD_PORT) -> Dict[str, str]:
    h = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token:
        h["X-Access-Token"] = token
    return h


def log_tail(path: str, n: int = 40) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""
