"""Keys, access tokens and the admin routes over REST (issue 15), attacked with ordinary credentials of two teams.

Keys are managed with an access token of the team (made here by the admin, `X-Team-ID`) or an admin key; a member
key manages nothing. Team B's token gets exactly the unknown key's answer for team A's keys and tokens; a revoked
key or token stops working at once; no ordinary caller reaches an `/admin` route; `X-Team-ID` and `X-Admin-Token`
from an ordinary caller grant nothing; a new key's secret is shown once, in the create's answer, never again.
"""

from __future__ import annotations

import os

import httpx
import pytest

from conftest import API_URL, KEY_A, KEY_B, RUN_ID, SERVER_LOG
from refusals import e2b_error, same_as_unknown

pytestmark = pytest.mark.timeout(300)

UNKNOWN_KEY = "key_000000000000"
UNKNOWN_TOKEN = "tok_000000000000"


def client(headers: dict) -> httpx.Client:
    return httpx.Client(base_url=API_URL, headers=headers, timeout=60, trust_env=False)


def with_token(token: str) -> httpx.Client:
    return client({"Authorization": f"Bearer {token}"})


def team_id(c: httpx.Client) -> str:
    return c.get("/teams").json()[0]["teamID"]


@pytest.fixture(scope="module")
def teams(api, api_b, admin):
    """Both teams' ids and an access token of each, made by the admin for that team (deleted afterwards)."""
    made = {}
    for label, c in (("a", api), ("b", api_b)):
        tid = team_id(c)
        r = admin.post("/access-tokens", json={"name": f"sec-{label}-{RUN_ID}"}, headers={"X-Team-ID": tid})
        assert r.status_code == 201, r.text
        made[label] = {"team": tid, "token": r.json()["token"], "token_id": r.json()["id"]}
    yield made
    for t in made.values():
        admin.delete(f"/access-tokens/{t['token_id']}", headers={"X-Team-ID": t["team"]})


@pytest.fixture
def new_key(admin):
    """`make(token)` → (id, secret) of a member key made with an access token; revoked at teardown."""
    made = []

    def make(token: str) -> tuple:
        with with_token(token) as c:
            r = c.post("/api-keys", json={"name": f"sec-key-{RUN_ID}"})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return r.json()["id"], r.json()["key"]

    yield make
    for key_id in made:
        admin.delete(f"/api-keys/{key_id}")


def works(key: str) -> bool:
    with client({"X-API-Key": key}) as c:
        return c.get("/volumes").status_code == 200


def test_team_b_cannot_list_rename_or_revoke_team_a_keys_and_tokens(teams, new_key, admin):
    a, b = teams["a"], teams["b"]
    key_id, key = new_key(a["token"])
    with with_token(a["token"]) as mine:
        listed = mine.get("/api-keys").json()
        assert key_id in [k["id"] for k in listed] and all(k["teamID"] == a["team"] for k in listed), listed
    with with_token(b["token"]) as theirs:
        listed = theirs.get("/api-keys")
        assert listed.status_code == 200 and key_id not in listed.text and a["team"] not in listed.text, listed.text
        same_as_unknown(theirs, "PATCH", f"/api-keys/{key_id}", key_id, UNKNOWN_KEY, json={"name": "pwned"})
        same_as_unknown(theirs, "DELETE", f"/api-keys/{key_id}", key_id, UNKNOWN_KEY)
        same_as_unknown(theirs, "DELETE", f"/access-tokens/{a['token_id']}", a["token_id"], UNKNOWN_TOKEN)
        # Naming team A's id does not make B's token A's.
        for method, path, body in (
            ("GET", "/api-keys", None),
            ("POST", "/api-keys", {"name": "pwned"}),
            ("DELETE", f"/api-keys/{key_id}", None),
            ("PATCH", f"/api-keys/{key_id}", {"name": "pwned"}),
            ("POST", "/access-tokens", {"name": "pwned"}),
            ("DELETE", f"/access-tokens/{a['token_id']}", None),
        ):
            e2b_error(theirs.request(method, path, json=body, headers={"X-Team-ID": a["team"]}), 403)
    # Team A's key and token still work, under their names.
    assert works(key)
    with with_token(a["token"]) as mine:
        names = {k["id"]: k["name"] for k in mine.get("/api-keys").json()}
    assert names[key_id] == f"sec-key-{RUN_ID}", names
    all_keys = admin.get("/api-keys").json()
    assert "pwned" not in [k["name"] for k in all_keys], "team B made or renamed a key"


def test_a_revoked_key_or_token_stops_working_at_once(teams, new_key, admin):
    a = teams["a"]
    key_id, key = new_key(a["token"])
    assert works(key)
    with with_token(a["token"]) as mine:
        assert mine.delete(f"/api-keys/{key_id}").status_code == 204
    # The very next request, on every kind of route.
    with client({"X-API-Key": key}) as c:
        for method, path in (("GET", "/volumes"), ("GET", "/v2/sandboxes"), ("GET", "/teams"), ("GET", "/templates")):
            assert e2b_error(c.request(method, path), 401) == "invalid API key"
        e2b_error(c.post("/volumes", json={"name": f"sec-revoked-{RUN_ID}"}), 401)
    # A token too.
    r = admin.post("/access-tokens", json={"name": f"sec-short-{RUN_ID}"}, headers={"X-Team-ID": a["team"]})
    assert r.status_code == 201, r.text
    token, token_id = r.json()["token"], r.json()["id"]
    with with_token(token) as c:
        assert c.get("/api-keys").status_code == 200
    with with_token(a["token"]) as mine:
        assert mine.delete(f"/access-tokens/{token_id}").status_code == 204
    with with_token(token) as c:
        for path in ("/api-keys", "/volumes", "/v2/sandboxes"):
            assert e2b_error(c.get(path), 401) == "invalid access token"
        e2b_error(c.post("/api-keys", json={"name": "after-revoke"}), 401)


ADMIN_ROUTES = [
    ("POST", "/admin/teams/{team}/api-keys", {"name": "attacker"}),
    ("DELETE", "/admin/teams/{team}/api-keys/{key}", None),
    ("POST", "/admin/teams/{team}/sandboxes/kill", None),
    ("POST", "/admin/teams/{team}/builds/cancel", None),
    ("GET", "/admin/sandboxes/running-counts", None),
]


def admin_routes(team: str, key: str):
    for method, path, body in ADMIN_ROUTES:
        yield method, path.format(team=team, key=key), body


def test_no_ordinary_caller_reaches_an_admin_route(api, api_b, anon, admin, teams, victim):
    a, b = teams["a"], teams["b"]
    keys_before = sorted(k["id"] for k in admin.get("/api-keys").json())
    a_key_id = next(k["id"] for k in admin.get("/api-keys").json() if k.get("teamID") == a["team"])
    callers = [
        ("team A's key", api),
        ("team B's key", api_b),
        ("team A's token", with_token(a["token"])),
        ("team B's token", with_token(b["token"])),
    ]
    for who, c in callers:
        for team in (a["team"], b["team"]):
            for method, path, body in admin_routes(team, a_key_id):
                message = e2b_error(c.request(method, path, json=body), 403)
                assert "admin" in message, f"{who} {method} {path}: {message}"
    for method, path, body in admin_routes(a["team"], a_key_id):
        e2b_error(anon.request(method, path, json=body), 401)
    # Nothing happened: A's sandbox runs, A's key works, no key was made or revoked.
    assert victim.commands.run("echo alive").stdout.strip() == "alive"
    assert works(KEY_A) and works(KEY_B)
    assert sorted(k["id"] for k in admin.get("/api-keys").json()) == keys_before
    # The admin does reach them (so the 403s above are the role check): a read-only one.
    r = admin.get("/admin/sandboxes/running-counts")
    assert r.status_code == 200 and r.json().get(a["team"], 0) >= 1, r.text


def test_team_and_admin_headers_from_an_ordinary_caller_grant_nothing(api, api_b, teams):
    a, b = teams["a"], teams["b"]
    r = api_b.post("/volumes", json={"name": f"sec-hdr-b-{RUN_ID}"})
    assert r.status_code == 201, r.text
    b_volume = r.json()["volumeID"]
    made_by_a = None
    try:
        other_team = {"X-Team-ID": b["team"]}
        # Team A's member key naming team B: still team A, still a member.
        assert b_volume not in api.get("/volumes", headers=other_team).text
        same_as_unknown(api, "GET", f"/volumes/{b_volume}", b_volume, "00000000-0000-4000-8000-000000000000", headers=other_team)
        e2b_error(api.get("/api-keys", headers=other_team), 403)
        r = api.post("/volumes", json={"name": f"sec-hdr-a-{RUN_ID}"}, headers=other_team)
        assert r.status_code == 201, r.text
        made_by_a = r.json()["volumeID"]
        assert made_by_a not in api_b.get("/volumes").text, "X-Team-ID put A's volume in team B"
        # E2B's admin header carrying a member key: not an admin (401 alone, ignored next to X-API-Key).
        with client({"X-Admin-Token": KEY_A}) as c:
            for method, path, body in [*admin_routes(a["team"], UNKNOWN_KEY), ("GET", "/nodes", None), ("GET", "/api-keys", None)]:
                assert e2b_error(c.request(method, path, json=body), 401) == "invalid admin token"
        with client({"X-API-Key": KEY_A, "X-Admin-Token": KEY_A}) as c:
            for method, path, body in admin_routes(a["team"], UNKNOWN_KEY):
                e2b_error(c.request(method, path, json=body), 403)
            e2b_error(c.get("/api-keys"), 403)
        # A token naming both headers: its own team, no admin.
        with client({"Authorization": f"Bearer {a['token']}", "X-Team-ID": a["team"]}) as c:
            e2b_error(c.get("/admin/sandboxes/running-counts"), 403)
            keys = c.get("/api-keys").json()
            assert keys and all(k["teamID"] == a["team"] for k in keys), keys
    finally:
        api_b.delete(f"/volumes/{b_volume}")
        if made_by_a:
            api.delete(f"/volumes/{made_by_a}")


def test_a_new_key_secret_is_shown_once(teams, new_key, admin, api_b):
    a, b = teams["a"], teams["b"]
    key_id, key = new_key(a["token"])
    assert key.startswith("e2b_") and len(key) == 44, "the create's answer has the whole secret"
    secret_part = key[len("e2b_"):]
    listings = []
    with with_token(a["token"]) as c:
        listings.append(c.get("/api-keys"))
    with with_token(b["token"]) as c:
        listings.append(c.get("/api-keys"))
    listings.append(admin.get("/api-keys"))
    listings.append(admin.get("/api-keys", headers={"X-Team-ID": a["team"]}))
    for r in listings:
        assert r.status_code == 200, r.text
        # Not the secret, nor any 12 characters of its random part (the mask shows a short prefix only).
        for i in range(len(secret_part) - 11):
            assert secret_part[i : i + 12] not in r.text, f"{r.request.url} shows the secret: {r.text}"
    entry = next(k for k in listings[0].json() if k["id"] == key_id)
    assert "key" not in entry and len(entry["mask"]["maskedValuePrefix"]) < 12, entry
    # An access token's secret: in its create's answer only, never in the server's log either.
    r = admin.post("/access-tokens", json={"name": f"sec-once-{RUN_ID}"}, headers={"X-Team-ID": a["team"]})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    admin.delete(f"/access-tokens/{r.json()['id']}", headers={"X-Team-ID": a["team"]})
    if SERVER_LOG and os.path.exists(SERVER_LOG):
        with open(SERVER_LOG, errors="replace") as f:
            log = f.read()
        assert key not in log and secret_part not in log, "a new key's secret is in the server log"
        assert token not in log, "a new access token is in the server log"
