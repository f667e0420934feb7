"""The REST API by raw HTTP: system endpoints, auth, create response shapes (v1/v2), errors, refresh, logs."""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timezone

import httpx
import pytest
from packaging.version import Version

from conftest import API_KEY, API_URL, MAX_LIFETIME_S, RUN_ID, envd_headers

ID_RE = re.compile(r"^[a-z0-9]+$")


def assert_e2b_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["code"] == status, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def parse_time(s: str) -> datetime:
    t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    assert t.tzinfo is not None, s
    return t


def count_sandboxes(api: httpx.Client) -> int:
    r = api.get("/v2/sandboxes", params={"metadata": f"e2e-run={RUN_ID}"})
    assert r.status_code == 200, r.text
    return len(r.json())


# --- system endpoints -----------------------------------------------------------------------------------------


def test_health(anon):
    r = anon.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy", body


def test_prometheus_metrics(anon):
    r = anon.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert "# TYPE soulbox_sandboxes gauge" in text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert 'soulbox_sandboxes{state="running"}' in samples
    assert samples["soulbox_uptime_seconds"] >= 0


def test_openapi_parses(anon):
    r = anon.get("/openapi.json")
    assert r.status_code == 200
    doc = json.loads(r.text)
    assert "openapi" in doc and "paths" in doc
    assert "/v2/sandboxes" in doc["paths"]


def test_nodes(api, anon):
    assert_e2b_error(anon.get("/nodes"), 401)
    r = api.get("/nodes")
    assert r.status_code == 200
    nodes = r.json()
    assert len(nodes) == 1
    node = nodes[0]
    assert node["status"] == "healthy", node
    assert node["cpuCount"] >= 1 and node["memoryMB"] > 0
    parse_time(node["lastHealthCheck"])


# --- auth -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [None, "", "e2b_" + "0" * 40, API_KEY + "x"])
def test_auth_missing_or_invalid_key_is_401(anon, key):
    headers = {} if key is None else {"X-API-Key": key}
    for method, path in [("GET", "/v2/sandboxes"), ("POST", "/v2/sandboxes"), ("GET", "/sandboxes/abc")]:
        r = anon.request(method, path, headers=headers, json={"templateID": "base"} if method == "POST" else None)
        assert_e2b_error(r, 401)


def test_sdk_with_bad_key_raises_authentication():
    from e2b import Sandbox
    from e2b.exceptions import AuthenticationException

    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_" + "0" * 40).next_items()


# --- create shapes --------------------------------------------------------------------------------------------


def check_sandbox_response(data: dict, want_token: bool):
    assert ID_RE.match(data["sandboxID"]), data
    assert data["templateID"]
    assert data["clientID"]
    assert Version(data["envdVersion"]) >= Version("0.6.4"), data
    if want_token:
        assert data.get("envdAccessToken"), data
    else:
        assert not data.get("envdAccessToken"), data


@pytest.mark.parametrize(
    "path,secure,want_token",
    [("/sandboxes", False, False), ("/sandboxes", True, True), ("/v2/sandboxes", None, True)],
    ids=["v1", "v1-secure", "v2"],
)
def test_create_response_fields(api, sandboxes, path, secure, want_token):
    extra = {} if secure is None else {"secure": secure}
    data = sandboxes.create_raw(path, timeout=60, **extra)
    check_sandbox_response(data, want_token)
    sid = data["sandboxID"]
    # envd answers through the proxy with the issued token
    r = api.get("/health", headers=envd_headers(sid, data.get("envdAccessToken")))
    assert r.status_code in (200, 204), r.text
    detail = api.get(f"/sandboxes/{sid}").json()
    assert detail["state"] == "running"
    assert detail.get("envdAccessToken") == data.get("envdAccessToken")
    started, end = parse_time(detail["startedAt"]), parse_time(detail["endAt"])
    assert 55 <= (end - started).total_seconds() <= 65, detail
    assert detail["cpuCount"] >= 1 and detail["memoryMB"] > 0 and "diskSizeMB" in detail


# --- errors ---------------------------------------------------------------------------------------------------


def test_unknown_template_is_404_and_leaves_nothing(api):
    before = count_sandboxes(api)
    for path in ("/sandboxes", "/v2/sandboxes"):
        body = assert_e2b_error(api.post(path, json={"templateID": "no-such-template-e2e", "timeout": 30}), 404)
        assert "no-such-template-e2e" in body["message"]
    assert count_sandboxes(api) == before


def test_unknown_template_sdk_raises():
    from e2b import Sandbox

    with pytest.raises(Exception) as info:
        Sandbox.create("no-such-template-e2e", timeout=30)
    assert "no-such-template-e2e" in str(info.value) or "404" in str(info.value), repr(info.value)


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 400),
        (b'{"templateID": 42}', 400),
        (b'{"templateID": "base", "timeout": 0}', 400),
        (b'{"templateID": "base", "timeout": -5}', 400),
        (b'{"templateID": "base", "timeout": 99999999}', 400),
        (b'{"templateID": "base", "metadata": "x"}', 400),
    ],
    ids=["malformed", "wrong-type", "timeout-0", "timeout-negative", "timeout-too-big", "metadata-type"],
)
def test_bad_create_input(api, body, status):
    before = count_sandboxes(api)
    r = api.post("/v2/sandboxes", content=body, headers={"Content-Type": "application/json"})
    assert_e2b_error(r, status)
    assert count_sandboxes(api) == before


def test_huge_body_is_413_before_reading_it(api):
    """A body over the limit is refused from its Content-Length (no sandbox, no body read): sent with
    `Expect: 100-continue` over a raw socket so the answer cannot race the upload."""
    before = count_sandboxes(api)
    url = httpx.URL(API_URL)
    with socket.create_connection((url.host, url.port), timeout=30) as s:
        s.sendall(
            (
                "POST /v2/sandboxes HTTP/1.1\r\n"
                f"Host: {url.host}:{url.port}\r\nX-API-Key: {API_KEY}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {64 * 1024 * 1024}\r\nExpect: 100-continue\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), head
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
        while len(rest) < length:
            rest += s.recv(65536)
    body = json.loads(rest[:length])
    assert body["code"] == 413 and body["message"], body
    assert count_sandboxes(api) == before


def test_unknown_route_and_sandbox(api):
    assert_e2b_error(api.get("/no/such/route"), 404)
    assert_e2b_error(api.get("/sandboxes/nosuchsandbox0000000"), 404)
    assert_e2b_error(api.delete("/sandboxes/nosuchsandbox0000000"), 404)
    assert_e2b_error(api.post("/sandboxes/nosuchsandbox0000000/pause"), 404)


def test_invalid_list_filters(api):
    assert_e2b_error(api.get("/v2/sandboxes", params={"metadata": "novalue"}), 400)
    assert_e2b_error(api.get("/v2/sandboxes", params={"state": "sleeping"}), 400)
    assert_e2b_error(api.get("/v2/sandboxes", params={"limit": "0"}), 400)
    assert_e2b_error(api.get("/v2/sandboxes", params={"nextToken": "garbage!!"}), 400)


# --- refresh, timeout, logs -----------------------------------------------------------------------------------


def test_refresh_extends_and_is_capped(api, sandboxes):
    sid = sandboxes.create_raw(timeout=30)["sandboxID"]
    end0 = parse_time(api.get(f"/sandboxes/{sid}").json()["endAt"])
    r = api.post(f"/sandboxes/{sid}/refreshes", json={"duration": 120})
    assert r.status_code == 204, r.text
    end1 = parse_time(api.get(f"/sandboxes/{sid}").json()["endAt"])
    assert (end1 - end0).total_seconds() >= 80, (end0, end1)
    # a shorter refresh never shortens
    assert api.post(f"/sandboxes/{sid}/refreshes", json={"duration": 5}).status_code == 204
    assert parse_time(api.get(f"/sandboxes/{sid}").json()["endAt"]) >= end1
    # past the maximum total lifetime: refused, end unchanged
    body = assert_e2b_error(api.post(f"/sandboxes/{sid}/refreshes", json={"duration": MAX_LIFETIME_S + 60}), 400)
    assert "lifetime" in body["message"], body
    assert parse_time(api.get(f"/sandboxes/{sid}").json()["endAt"]) >= end1
    assert_e2b_error(api.post(f"/sandboxes/{sid}/refreshes", json={"duration": 0}), 400)
    assert_e2b_error(api.post("/sandboxes/nosuchsandbox0000000/refreshes", json={"duration": 10}), 404)


def test_set_timeout_bounds(api, sandboxes):
    sid = sandboxes.create_raw(timeout=30)["sandboxID"]
    assert_e2b_error(api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 0}), 400)
    assert_e2b_error(api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 99999999}), 400)
    assert_e2b_error(api.post(f"/sandboxes/{sid}/timeout", json={}), 400)
    r = api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 200})
    assert r.status_code == 204, r.text
    d = api.get(f"/sandboxes/{sid}").json()
    left = (parse_time(d["endAt"]) - datetime.now(timezone.utc)).total_seconds()
    assert 150 < left <= 201, d


def test_logs(api, sandboxes):
    sid = sandboxes.create_raw(timeout=60)["sandboxID"]
    r = api.get(f"/sandboxes/{sid}/logs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["logs"], list) and isinstance(body["logEntries"], list)
    for entry in body["logs"]:
        parse_time(entry["timestamp"])
        assert isinstance(entry["line"], str)
    assert_e2b_error(api.get("/sandboxes/nosuchsandbox0000000/logs"), 404)


def test_v1_list_and_connect_shapes(api, sandboxes):
    sid = sandboxes.create_raw("/sandboxes", timeout=60, secure=True, metadata={"v1list": "yes"})["sandboxID"]
    r = api.get("/sandboxes", params={"metadata": f"e2e-run={RUN_ID}&v1list=yes"})
    assert r.status_code == 200
    assert [s["sandboxID"] for s in r.json()] == [sid]
    # v1 connect requires a timeout; running sandbox → 200
    assert_e2b_error(api.post(f"/sandboxes/{sid}/connect", json={}), 400)
    r = api.post(f"/sandboxes/{sid}/connect", json={"timeout": 30})
    assert r.status_code == 200, r.text
    assert r.json()["sandboxID"] == sid
    r = api.post(f"/v2/sandboxes/{sid}/connect", json={})
    assert r.status_code == 200, r.text
    # v1 resume of a running sandbox: 409
    assert_e2b_error(api.post(f"/sandboxes/{sid}/resume", json={}), 409)
