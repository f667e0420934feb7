"""Teams and roles (issue 11, Build item 5), attacked with ordinary keys of two teams: team B's key against team A's
sandboxes, templates, builds, logs and uploads; ordinary keys against the admin routes; `allowOut` to private and
metadata ranges without the server setting (no traffic is ever sent there); team limits.

Team B must get exactly what it gets for something that does not exist (E2B's 404), so it learns nothing.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from e2b import Sandbox, Template
from e2b.exceptions import BuildException, NotFoundException, RateLimitException, SandboxException

from conftest import DATA_DIR, KEY_A, KEY_B, RUN_ID, SOULBOX_BIN, _client

pytestmark = pytest.mark.timeout(300)

UNKNOWN_SANDBOX = "inosuchsandbox0000000"


def same_as_unknown(client, method, path, real_id, unknown_id, **kw):
    """Team B's answer for another team's resource: a 404 that reads exactly like the one for a missing resource."""
    r = client.request(method, path, **kw)
    missing = client.request(method, path.replace(real_id, unknown_id), **kw)
    assert r.status_code == 404, f"{method} {path}: {r.status_code} {r.text}"
    assert missing.status_code == 404, f"{method} {path} (unknown): {missing.status_code} {missing.text}"
    assert r.json()["code"] == 404
    assert r.json()["message"].replace(real_id, unknown_id) == missing.json()["message"], (r.text, missing.text)
    return r


# --- sandboxes -------------------------------------------------------------------------------------------------


def test_team_b_cannot_touch_team_a_sandbox_through_the_sdk(victim):
    sid = victim.sandbox_id
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sid, api_key=KEY_B)
    with pytest.raises(NotFoundException):
        Sandbox.set_timeout(sid, 5, api_key=KEY_B)
    with pytest.raises(NotFoundException):
        Sandbox.get_metrics(sid, api_key=KEY_B)
    with pytest.raises(SandboxException):
        Sandbox.pause(sid, api_key=KEY_B)
    with pytest.raises(SandboxException):
        Sandbox.connect(sid, api_key=KEY_B)
    assert Sandbox.kill(sid, api_key=KEY_B) is False, "kill reports 'not found'"
    listed = Sandbox.list(api_key=KEY_B).next_items()
    assert sid not in [s.sandbox_id for s in listed]
    # Nothing happened to it: still running, its timeout not shortened to 5 s.
    info = Sandbox.get_info(sid, api_key=KEY_A)
    assert info.state.value == "running", info
    assert (info.end_at - info.started_at).total_seconds() > 60, info
    assert victim.commands.run("echo alive").stdout.strip() == "alive"


def test_team_b_gets_the_unknown_sandbox_404_on_every_route_and_never_the_token(api, api_b, victim):
    sid = victim.sandbox_id
    token = api.get(f"/sandboxes/{sid}").json()["envdAccessToken"]
    assert token, "team A sees its own sandbox's token"
    routes = [
        ("GET", f"/sandboxes/{sid}", None),
        ("POST", f"/sandboxes/{sid}/connect", {"timeout": 60}),
        ("POST", f"/v2/sandboxes/{sid}/connect", {"timeout": 60}),
        ("POST", f"/sandboxes/{sid}/timeout", {"timeout": 5}),
        ("POST", f"/sandboxes/{sid}/refreshes", {"duration": 60}),
        ("POST", f"/sandboxes/{sid}/pause", {}),
        ("POST", f"/sandboxes/{sid}/resume", {}),
        ("GET", f"/sandboxes/{sid}/metrics", None),
        ("GET", f"/sandboxes/{sid}/logs", None),
        ("PUT", f"/sandboxes/{sid}/network", {"allow_internet_access": False}),
        ("DELETE", f"/sandboxes/{sid}", None),
    ]
    for method, path, body in routes:
        r = same_as_unknown(api_b, method, path, sid, UNKNOWN_SANDBOX, json=body)
        assert token not in r.text
    for path in ["/v2/sandboxes?state=running,paused", "/sandboxes"]:
        r = api_b.get(path)
        assert r.status_code == 200 and sid not in r.text and token not in r.text, r.text
    r = api_b.get("/sandboxes/metrics", params={"sandbox_ids": sid})
    assert r.status_code == 200 and sid not in r.text, r.text
    detail = api.get(f"/sandboxes/{sid}").json()
    assert detail["state"] == "running"
    assert detail["allowInternetAccess"] is True, "team B changed team A's network"


def test_anonymous_prometheus_metrics_name_no_sandbox(anon, victim):
    r = anon.get("/metrics")
    assert r.status_code == 200
    assert victim.sandbox_id not in r.text and "security-a" not in r.text


# --- roles -----------------------------------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/nodes", None),
    ("GET", "/nodes/local", None),
    ("POST", "/nodes/local/drain", None),
    ("POST", "/nodes/local/undrain", None),
    ("DELETE", "/nodes/local", None),
    ("GET", "/api-keys", None),
    ("POST", "/api-keys", {"name": "attacker"}),
    ("DELETE", "/api-keys/key_000000000000", None),
]


def test_ordinary_keys_get_403_on_node_and_key_management(api, api_b, admin, anon):
    for client in (api, api_b):
        for method, path, body in ADMIN_ROUTES:
            r = client.request(method, path, json=body)
            assert r.status_code == 403, f"{method} {path}: {r.status_code} {r.text}"
            assert r.json()["code"] == 403 and "admin" in r.json()["message"], r.text
    for method, path, body in ADMIN_ROUTES:
        assert anon.request(method, path, json=body).status_code == 401
    assert admin.get("/nodes").status_code == 200
    keys = admin.get("/api-keys")
    assert keys.status_code == 200
    assert {"member", "admin"} <= {k["role"] for k in keys.json()}, keys.text
    assert KEY_A not in keys.text and KEY_B not in keys.text, "secrets are never listed"


def test_each_key_sees_its_own_team(api, api_b):
    a, b = api.get("/teams").json(), api_b.get("/teams").json()
    assert [t["name"] for t in a] == ["security-a"] and [t["name"] for t in b] == ["security-b"], (a, b)
    assert a[0]["teamID"] != b[0]["teamID"]
    assert a[0]["apiKey"] == KEY_A and b[0]["apiKey"] == KEY_B
    r = api.get("/templates", params={"teamID": b[0]["teamID"]})
    assert r.status_code == 403, r.text


# --- private egress --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cidr", ["169.254.169.254/32", "10.0.0.0/8", "192.168.0.0/16", "100.100.100.200/32"])
def test_allow_out_to_private_or_metadata_ranges_needs_the_setting(api, cidr):
    # Only the create is attempted: no sandbox exists afterwards, so no packet can go anywhere.
    before = {s["sandboxID"] for s in api.get("/v2/sandboxes").json()}
    for path in ["/v2/sandboxes", "/sandboxes"]:
        r = api.post(path, json={"templateID": "base", "network": {"allowOut": [cidr]}, "metadata": {"sec-run": RUN_ID}})
        assert r.status_code == 400, f"{path} {cidr}: {r.status_code} {r.text}"
        assert "allow_private_egress" in r.json()["message"] and cidr in r.json()["message"], r.text
    assert {s["sandboxID"] for s in api.get("/v2/sandboxes").json()} == before, "nothing was created"


@pytest.mark.parametrize("cidr", ["169.254.169.254/32", "10.0.0.0/8", "172.16.0.0/12", "127.0.0.1"])
def test_a_live_update_cannot_open_private_or_metadata_ranges_either(api, victim, cidr):
    sid = victim.sandbox_id
    r = api.put(f"/sandboxes/{sid}/network", json={"allowOut": [cidr]})
    assert r.status_code == 400, f"{cidr}: {r.status_code} {r.text}"
    assert "allow_private_egress" in r.json()["message"], r.text
    assert api.get(f"/sandboxes/{sid}").json()["network"]["allowOut"] == [], "a refused update changed the record"


# --- templates -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def team_a_template(tmp_path_factory):
    """A template of team A with a secret file copied in (uploaded by the SDK), its build id and the upload's hash."""
    ctx = tmp_path_factory.mktemp("ctx-a")
    secret = f"team-a-secret-{uuid.uuid4().hex}"
    (ctx / "secret.txt").write_text(secret + "\n")
    name = f"sec-a-{RUN_ID}"
    tpl = Template(file_context_path=str(ctx)).from_template("base").copy("secret.txt", "/home/user/secret.txt").run_cmd("true")
    files_hash = next(s["filesHash"] for s in json.loads(Template.to_json(tpl))["steps"] if s["type"] == "COPY")
    info = Template.build(tpl, name, tags=["default", "v1"], api_key=KEY_A)
    yield {"name": name, "build": info.build_id, "hash": files_hash, "secret": secret}
    with _client(KEY_A) as a:
        a.delete(f"/templates/{name}")


def raw_build(client, name, recipe):
    """Requests and starts a build as `client`; returns (start response, template id, build id)."""
    r = client.post("/v3/templates", json={"name": name})
    assert r.status_code == 202, r.text
    tid, bid = r.json()["templateID"], r.json()["buildID"]
    return client.post(f"/v2/templates/{tid}/builds/{bid}", json=recipe), tid, bid


def build_end(client, tid, bid):
    """The final status line of the build's NDJSON log stream (it ends when the build does)."""
    last = None
    with client.stream("GET", f"/templates/{tid}/builds/{bid}/logs/stream", timeout=240) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.strip():
                last = json.loads(line)
    return last


def test_team_b_cannot_use_read_tag_or_delete_team_a_template(api, api_b, team_a_template, sandboxes_b):
    name, build = team_a_template["name"], team_a_template["build"]
    unknown = f"sec-nosuch-{RUN_ID}"
    # Start a sandbox from it: the unknown-template 404, through raw HTTP and the SDK.
    r = api_b.post("/v2/sandboxes", json={"templateID": name})
    missing = api_b.post("/v2/sandboxes", json={"templateID": unknown})
    assert r.status_code == missing.status_code == 404, (r.text, missing.text)
    assert r.json()["message"].replace(name, unknown) == missing.json()["message"]
    for wanted in [name, f"{name}:v1", f"{name}:default"]:
        assert api_b.post("/v2/sandboxes", json={"templateID": wanted}).status_code == 404, wanted
    with pytest.raises(SandboxException):
        sandboxes_b.create(template=name)
    assert Template.exists(name, api_key=KEY_B) is False
    assert Template.exists(name, api_key=KEY_A) is True
    assert name not in api_b.get("/templates").text
    # Its builds, logs, tags: 404.
    same_as_unknown(api_b, "GET", f"/templates/{name}/builds/{build}/status", name, unknown)
    same_as_unknown(api_b, "GET", f"/templates/{name}/builds/{build}/logs/stream", name, unknown)
    same_as_unknown(api_b, "GET", f"/templates/{name}/tags", name, unknown)
    same_as_unknown(api_b, "GET", f"/templates/aliases/{name}", name, unknown)
    assert api_b.post("/templates/tags", json={"target": f"{name}:v1", "tags": ["pwned"]}).status_code == 404
    assert api_b.request("DELETE", "/templates/tags", json={"name": name, "tags": ["v1"]}).status_code == 404
    same_as_unknown(api_b, "DELETE", f"/templates/{name}", name, unknown)
    # Its name cannot be taken over, nor the server's `base`.
    for taken in [name, "base"]:
        r = api_b.post("/v3/templates", json={"name": taken})
        assert r.status_code == 409, f"{taken}: {r.text}"
    # Team A still has all of it.
    tags = {t["tag"] for t in api.get(f"/templates/{name}/tags").json()}
    assert tags == {"default", "v1"}, tags
    assert api.get(f"/templates/{name}/builds/{build}/status").json()["status"] == "ready"


def test_team_b_cannot_use_fork_or_take_over_team_a_snapshots(api, api_b, victim, sandboxes_b):
    """Snapshots and forks (issue 13) are team A's like its templates: team B gets the unknown's 404 for them and
    for A's sandbox, cannot reuse the snapshot's name, and never sees a fork's internal template."""
    name, unknown = f"sec-snap-{RUN_ID}", f"sec-nosnap-{RUN_ID}"
    r = api.post(f"/sandboxes/{victim.sandbox_id}/snapshots", json={"name": name})
    assert r.status_code == 201, r.text
    try:
        snapshot_id = r.json()["snapshotID"]
        r = api_b.post("/v2/sandboxes", json={"templateID": snapshot_id})
        missing = api_b.post("/v2/sandboxes", json={"templateID": f"{unknown}:default"})
        assert r.status_code == missing.status_code == 404, (r.text, missing.text)
        assert r.json()["message"].replace(name, unknown) == missing.json()["message"]
        with pytest.raises(SandboxException):
            sandboxes_b.create(template=snapshot_id)
        same_as_unknown(api_b, "DELETE", f"/templates/{name}%3Adefault", name, unknown)
        same_as_unknown(api_b, "GET", f"/templates/aliases/{name}", name, unknown)
        assert api_b.get("/snapshots").json() == []
        assert name not in api_b.get("/templates").text
        # A's sandbox cannot be snapshotted or forked by B.
        same_as_unknown(api_b, "POST", f"/sandboxes/{victim.sandbox_id}/snapshots", victim.sandbox_id, UNKNOWN_SANDBOX, json={})
        same_as_unknown(api_b, "POST", f"/sandboxes/{victim.sandbox_id}/fork", victim.sandbox_id, UNKNOWN_SANDBOX, json={})
        # The name is A's: B cannot snapshot its own sandbox over it or build a template under it.
        mine = sandboxes_b.create(timeout=60)
        r = api_b.post(f"/sandboxes/{mine.sandbox_id}/snapshots", json={"name": name})
        assert r.status_code == 409, r.text
        assert api_b.post("/v3/templates", json={"name": name}).status_code == 409
        # A fork's snapshot is internal: never listed, never started by name.
        r = api.post(f"/sandboxes/{victim.sandbox_id}/fork", json={"count": 1, "timeout": 30})
        assert r.status_code == 201 and "sandbox" in r.json()[0], r.text
        api.delete(f"/sandboxes/{r.json()[0]['sandbox']['sandboxID']}")
        assert "sbfork-" not in api.get("/templates").text + api_b.get("/templates").text
        assert api.post("/v2/sandboxes", json={"templateID": "sbfork-0"}).status_code == 404
        # Team A still has it and can start from it.
        assert [s["snapshotID"] for s in api.get("/snapshots", params={"name": name}).json()] == [snapshot_id]
    finally:
        api.delete(f"/templates/{name}%3Adefault")


def test_team_b_cannot_build_from_team_a_template(api_b, team_a_template):
    name = team_a_template["name"]
    for base in [name, f"{name}:v1"]:
        with pytest.raises(BuildException) as e:
            Template.build(Template().from_template(base).run_cmd("cat /home/user/secret.txt"), f"sec-b-from-{uuid.uuid4().hex[:8]}", api_key=KEY_B)
        assert team_a_template["secret"] not in str(e.value)
        assert "not found" in str(e.value), str(e.value)
    # Raw, with the build's own runtime template name (`sbb-<buildID>`), which is never a base for another team.
    target = f"sec-b-sbb-{RUN_ID}"
    try:
        start, tid, bid = raw_build(api_b, target, {"fromTemplate": f"sbb-{team_a_template['build']}", "steps": []})
        if start.status_code == 202:
            end = build_end(api_b, tid, bid)
            assert end["status"] == "error" and "not found" in json.dumps(end), end
        else:
            assert start.status_code in (400, 404), start.text
    finally:
        api_b.delete(f"/templates/{target}")


def test_team_b_cannot_read_team_a_uploads(api_b, team_a_template, sandboxes_b):
    name, files_hash = team_a_template["name"], team_a_template["hash"]
    unknown = f"sec-nosuch-{RUN_ID}"
    same_as_unknown(api_b, "GET", f"/templates/{name}/files/{files_hash}", name, unknown)
    # Team B knows the hash (not the content) and builds a COPY of it into its own template without uploading.
    target = f"sec-b-steal-{RUN_ID}"
    try:
        r = api_b.post("/v3/templates", json={"name": target})
        assert r.status_code == 202, r.text
        tid, bid = r.json()["templateID"], r.json()["buildID"]
        link = api_b.get(f"/templates/{tid}/files/{files_hash}")
        assert link.status_code == 201 and link.json()["present"] is False, f"team A's upload is visible to team B: {link.text}"
        copy = {"type": "COPY", "args": ["secret.txt", "/home/user/stolen.txt", "", ""], "filesHash": files_hash, "force": False}
        start = api_b.post(f"/v2/templates/{tid}/builds/{bid}", json={"fromTemplate": "base", "steps": [copy]})
        assert start.status_code == 202, start.text
        end = build_end(api_b, tid, bid)
        assert end["status"] == "error" and "not uploaded" in json.dumps(end), end
        assert team_a_template["secret"] not in json.dumps(end)
        r = api_b.post("/v2/sandboxes", json={"templateID": target})
        assert r.status_code == 404, f"a template with team A's upload exists: {r.text}"
    finally:
        api_b.delete(f"/templates/{target}")


# --- limits ----------------------------------------------------------------------------------------------------


@pytest.fixture
def limited_team():
    """A key of the team `security-limits`, whose limits the test sets through the CLI (reset afterwards)."""
    out = subprocess.run(
        [SOULBOX_BIN, "--data-dir", DATA_DIR, "keys", "create", "--name", f"limits-{RUN_ID}", "--team", "security-limits"],
        check=True, capture_output=True, text=True,
    ).stdout
    key_id = out.split()[2]
    key = next(line.split("=", 1)[1].split()[0] for line in out.splitlines() if line.startswith("export E2B_API_KEY="))

    def limits(*args):
        subprocess.run([SOULBOX_BIN, "--data-dir", DATA_DIR, "teams", "limits", "security-limits", *args], check=True, capture_output=True)

    with _client(key) as client:
        yield key, client, limits
        for s in client.get("/v2/sandboxes?state=running,paused").json():
            client.delete(f"/sandboxes/{s['sandboxID']}")
    limits("--max-sandboxes", "default", "--max-vcpus", "default", "--max-memory-mb", "default", "--max-builds", "default")
    subprocess.run([SOULBOX_BIN, "--data-dir", DATA_DIR, "keys", "revoke", key_id], check=True, capture_output=True)


def test_team_limits_answer_429_naming_the_limit(limited_team, api):
    key, client, limits = limited_team
    limits("--max-sandboxes", "1")
    body = {"templateID": "base", "timeout": 120, "metadata": {"sec-run": RUN_ID}}
    first = client.post("/v2/sandboxes", json=body)
    assert first.status_code == 201, first.text
    r = client.post("/v2/sandboxes", json=body)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == 429 and "teams.max_sandboxes" in r.json()["message"], r.text
    with pytest.raises(RateLimitException):
        Sandbox.create(api_key=key, timeout=120, metadata={"sec-run": RUN_ID})
    assert len(client.get("/v2/sandboxes").json()) == 1, "the refused creates left nothing"
    # Another team is not limited by it.
    other = api.post("/v2/sandboxes", json=body)
    assert other.status_code == 201, other.text
    api.delete(f"/sandboxes/{other.json()['sandboxID']}")

    limits("--max-sandboxes", "default", "--max-vcpus", "1")
    r = client.post("/v2/sandboxes", json=body)
    assert r.status_code == 429 and "teams.max_vcpus" in r.json()["message"], r.text

    limits("--max-vcpus", "default", "--max-builds", "0")
    start, tid, _ = raw_build(client, f"sec-limits-{RUN_ID}", {"fromTemplate": "base", "steps": []})
    try:
        assert start.status_code == 429 and "teams.max_builds" in start.json()["message"], start.text
    finally:
        client.delete(f"/templates/{tid}")


# --- secrets ---------------------------------------------------------------------------------------------------


def test_team_b_cannot_read_change_or_delete_team_a_secrets(api, api_b):
    name = f"sec-{RUN_ID}".lower()
    r = api.post("/secrets", json={"name": name, "value": "team-a-value", "metadata": {"k": "v"}})
    assert r.status_code == 201, r.text
    sid = r.json()["secretID"]
    try:
        for ref in (sid, name):
            for method, body in (("GET", None), ("POST", {"value": "stolen"}), ("DELETE", None)):
                unknown = "sec_nosuchsecret0000" if ref == sid else "no-such-secret-name"
                r = same_as_unknown(api_b, method, f"/secrets/{ref}", ref, unknown, json=body)
                assert "team-a-value" not in r.text
        listed = api_b.get("/secrets")
        assert listed.status_code == 200 and sid not in listed.text and name not in listed.text, listed.text
        # Names are per team: team B's own secret of that name is a different one, and A's is untouched.
        r = api_b.post("/secrets", json={"name": name, "value": "team-b-value"})
        assert r.status_code == 201 and r.json()["secretID"] != sid, r.text
        assert api_b.delete(f"/secrets/{r.json()['secretID']}").status_code == 204
        mine = api.get(f"/secrets/{sid}")
        assert mine.status_code == 200 and mine.json()["currentVersion"] == 1, mine.text
        assert "team-a-value" not in mine.text
    finally:
        api.delete(f"/secrets/{sid}")
