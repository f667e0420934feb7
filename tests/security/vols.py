"""Volumes for the volume attack files (issue 15): made through the REST API as team A or B, deleted at teardown
(sandboxes still mounting one are killed first, so a failed test leaves nothing), plus the content API's
operations and raw clients for it."""

from __future__ import annotations

import os
import re

import httpx
import pytest
from e2b import Volume

from conftest import API_URL, DATA_DIR, RUN_ID

# A volume id that exists nowhere (ids are UUID-like).
UNKNOWN_VOLUME = "00000000-0000-4000-8000-000000000000"

# Every operation of E2B's volume content API (openapi-volumecontent.yml): (method, route, request arguments).
CONTENT_OPS = [
    ("GET", "path", {}),
    ("PATCH", "path", {"json": {"mode": 0o777, "uid": 0}}),
    ("DELETE", "path", {}),
    ("GET", "dir", {}),
    ("POST", "dir", {}),
    ("GET", "file", {}),
    ("PUT", "file", {"content": b"pwned"}),
]


def host_dir(volume_id: str) -> str:
    """Where the server keeps the volume's files (`<data dir>/volumes/<id>`, the default `volumes_dir`)."""
    return os.path.join(DATA_DIR, "volumes", volume_id)


def content_client(headers: dict | None = None) -> httpx.Client:
    """Raw HTTP to the content API with exactly `headers` (no API key unless given)."""
    return httpx.Client(base_url=API_URL, headers=headers or {}, timeout=60, trust_env=False)


def bearer(token: str) -> httpx.Client:
    return content_client({"Authorization": f"Bearer {token}"})


def content_url(volume_id: str, route: str) -> str:
    return f"/volumecontent/{volume_id}/{route}"


@pytest.fixture
def volumes(api, api_b):
    """`make(tag, team="a"|"b")` → an SDK `Volume` (with its token) of that team, named `sec-<tag>-<run>`."""
    made = []

    def make(tag: str, team: str = "a") -> Volume:
        client = api if team == "a" else api_b
        r = client.post("/volumes", json={"name": f"sec-{tag}-{RUN_ID}"})
        assert r.status_code == 201, r.text
        body = r.json()
        made.append((client, body["volumeID"]))
        return Volume(body["volumeID"], body["name"], token=body["token"])

    yield make
    for client, volume_id in reversed(made):
        # A delete names one sandbox still mounting the volume at a time (a bounded number of them).
        for _ in range(20):
            r = client.delete(f"/volumes/{volume_id}")
            mounted = re.search(r"mounted by sandbox ([A-Za-z0-9_-]+)", r.text) if r.status_code == 409 else None
            if not mounted:
                break
            client.delete(f"/sandboxes/{mounted.group(1)}")
