"""The rest of E2B's API (issue 15) through the official SDK's own API client (`e2b.api.ApiClient`: its HTTP
stack, its `X-API-Key` header; neither SDK version has methods for these routes) and, for access tokens,
`Authorization: Bearer` as E2B's clients send it: v2 logs filters, team metrics, API keys and access tokens.

Another team's calls being refused is proven per route by the Rust API tests (api/rest_tests.rs).
"""

from __future__ import annotations

import time

import httpx
import pytest

from e2b import AuthenticationException, ConnectionConfig, Sandbox
from e2b.api import ApiClient

from conftest import API_URL, wait_until


@pytest.fixture(scope="module")
def sdk_http() -> httpx.Client:
    """The SDK's own HTTP client, configured from the environment like every SDK call."""
    client = ApiClient(ConnectionConfig())
    return client.get_httpx_client()


@pytest.fixture(scope="module")
def team_id(sdk_http) -> str:
    r = sdk_http.get("/teams")
    assert r.status_code == 200, r.text
    return r.json()[0]["teamID"]


def test_v2_logs_filters(sdk_http, sandboxes):
    sbx = sandboxes.create()
    path = f"/v2/sandboxes/{sbx.sandbox_id}/logs"

    def messages(**params) -> list[str]:
        r = sdk_http.get(path, params=params)
        assert r.status_code == 200, r.text
        return [e["message"] for e in r.json()["logs"]]

    entries = wait_until(lambda: sdk_http.get(path).json()["logs"], 30, "the sandbox's first log line")
    first = entries[0]
    assert first["level"] in ("debug", "info", "warn", "error") and first["fields"]["logger"], first
    assert any(m.startswith("envd listening") for m in messages(level="info", search="envd listening"))
    assert messages(search="ENVD LISTENING") == [], "search is case-sensitive"
    assert not any(m.startswith("envd listening") for m in messages(level="error"))
    everything = messages()
    assert messages(direction="backward") == everything[::-1]
    assert messages(direction="backward", limit=1) == everything[-1:]
    stamp = int(time.time() * 1000) + 60_000
    assert messages(cursor=stamp) == [], "nothing is logged after a time in the future"
    assert messages(cursor=stamp, direction="backward") == everything[::-1]
    for bad in ({"direction": "sideways"}, {"level": "verbose"}, {"limit": 1001}, {"search": "x" * 257}):
        r = sdk_http.get(path, params=bad)
        assert r.status_code == 400 and r.json()["code"] == 400, (bad, r.text)
    assert sdk_http.get("/v2/sandboxes/inosuchsandbox/logs").status_code == 404


def test_team_metrics(sdk_http, sandboxes, team_id):
    sandboxes.create()
    sandboxes.create()
    r = sdk_http.get(f"/teams/{team_id}/metrics", params={"start": int(time.time()) - 600})
    assert r.status_code == 200, r.text
    points = r.json()
    assert points and {"timestamp", "timestampUnix", "concurrentSandboxes", "sandboxStartRate"} <= set(points[-1])
    assert points[-1]["concurrentSandboxes"] >= 2, points[-1]
    assert sum(p["sandboxStartRate"] for p in points) > 0, points
    r = sdk_http.get(f"/teams/{team_id}/metrics/max", params={"metric": "concurrent_sandboxes"})
    assert r.status_code == 200 and r.json()["value"] >= 2, r.text
    r = sdk_http.get(f"/teams/{team_id}/metrics/max", params={"metric": "sandbox_start_rate"})
    assert r.status_code == 200 and r.json()["value"] > 0, r.text
    assert sdk_http.get(f"/teams/{team_id}/metrics/max", params={"metric": "bogus"}).status_code == 400
    r = sdk_http.get("/teams/team_not_mine/metrics")
    assert r.status_code == 403 and r.json()["code"] == 403, r.text


def test_api_keys_over_rest(sdk_http):
    # The suite's key is the admin's: it manages its team's keys.
    r = sdk_http.post("/api-keys", json={"name": "e2e-rest"})
    assert r.status_code == 201, r.text
    created = r.json()
    key, key_id = created["key"], created["id"]
    try:
        assert key.startswith("e2b_") and created["mask"]["prefix"] == "e2b_", created
        # The new key works with the SDK.
        Sandbox.list(api_key=key).next_items()
        listed = sdk_http.get("/api-keys").json()
        mine = next(k for k in listed if k["id"] == key_id)
        assert key not in str(listed), "the secret is shown once"
        assert mine["mask"]["maskedValuePrefix"] and key.startswith("e2b_" + mine["mask"]["maskedValuePrefix"])
        assert sdk_http.patch(f"/api-keys/{key_id}", json={"name": "e2e-rest-2"}).status_code == 200
        assert any(k["name"] == "e2e-rest-2" for k in sdk_http.get("/api-keys").json())
        assert sdk_http.post("/api-keys", json={}).json()["code"] == 400
    finally:
        assert sdk_http.delete(f"/api-keys/{key_id}").status_code == 204
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=key).next_items()
    assert sdk_http.delete(f"/api-keys/{key_id}").status_code == 404


def test_access_tokens_act_for_their_team(sdk_http, team_id):
    r = sdk_http.post("/access-tokens", json={"name": "e2e-laptop"})
    assert r.status_code == 201, r.text
    token = r.json()
    assert token["token"].startswith("sk_e2b_") and token["mask"]["prefix"] == "sk_e2b_", token
    bearer = httpx.Client(base_url=API_URL, headers={"Authorization": f"Bearer {token['token']}"}, trust_env=False)
    with bearer:
        teams = bearer.get("/teams")
        assert teams.status_code == 200 and teams.json()[0]["teamID"] == team_id, teams.text
        made = bearer.post("/api-keys", json={"name": "made-by-token"})
        assert made.status_code == 201, made.text
        assert any(k["id"] == made.json()["id"] for k in bearer.get("/api-keys").json())
        assert bearer.delete(f"/api-keys/{made.json()['id']}").status_code == 204
        # A token is a member of its team: not an admin.
        assert bearer.get("/admin/sandboxes/running-counts").status_code == 403
        assert bearer.delete(f"/access-tokens/{token['id']}").status_code == 204
        r = bearer.get("/teams")
        assert r.status_code == 401 and r.json()["code"] == 401, r.text


def test_admin_routes(sdk_http, sandboxes, team_id, api):
    # The suite's key is an admin. Killing its team's sandboxes is safe here: every other test's sandboxes are
    # gone by now (each test kills its own at teardown; no module-shared sandbox in this file).
    sbx = sandboxes.create()
    counts = sdk_http.get("/admin/sandboxes/running-counts")
    assert counts.status_code == 200 and counts.json()[team_id] >= 1, counts.text
    cancelled = sdk_http.post(f"/admin/teams/{team_id}/builds/cancel")
    assert cancelled.status_code == 200 and set(cancelled.json()) == {"cancelledCount", "failedCount"}, cancelled.text
    killed = sdk_http.post(f"/admin/teams/{team_id}/sandboxes/kill")
    assert killed.status_code == 200 and killed.json()["killedCount"] >= 1, killed.text
    assert killed.json()["failedCount"] == 0, killed.text
    assert api.get(f"/sandboxes/{sbx.sandbox_id}").status_code == 404
    assert team_id not in sdk_http.get("/admin/sandboxes/running-counts").json()
    r = sdk_http.post("/admin/teams/team_nope/sandboxes/kill")
    assert r.status_code == 404 and r.json()["code"] == 404, r.text
