"""The templates SoulBox ships (issue 16) as an attacker meets them: their names cannot be taken by a team's own
template or snapshot (a create naming `code-interpreter-v1` would otherwise start the attacker's image for every
other team), and `POST /templates/{name}/prepare` answers only for shipped names and only to API keys. Without the
reservation (`soulbox_templates::is_shipped_template` in the server's template and snapshot checks) the 409s
become 202/201. The code interpreter's own access check is attacked in tests/e2e/test_code_interpreter_access.py,
where its template is built."""

from __future__ import annotations

import pytest

SHIPPED = ("code-interpreter-v1", "desktop")


@pytest.mark.parametrize("name", SHIPPED)
def test_a_team_cannot_take_a_shipped_templates_name(api, name):
    r = api.post("/v3/templates", json={"name": name, "cpuCount": 1, "memoryMB": 512})
    assert r.status_code == 409, (r.status_code, r.text)
    assert "taken by a server template" in r.json()["message"]
    # Nor with a tag: the name before the colon is what a create resolves.
    r = api.post("/v3/templates", json={"name": f"{name}:latest", "cpuCount": 1, "memoryMB": 512})
    assert r.status_code in (400, 409), (r.status_code, r.text)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_snapshot_cannot_take_a_shipped_templates_name(api, victim, name):
    r = api.post(f"/sandboxes/{victim.sandbox_id}/snapshots", json={"name": name}, timeout=300)
    assert r.status_code == 409, (r.status_code, r.text)
    names = [s.get("name") for s in api.get("/snapshots", params={"sandboxID": victim.sandbox_id}).json()]
    assert name not in names


def test_prepare_needs_an_api_key_and_a_shipped_name(api, anon):
    assert anon.post("/templates/code-interpreter-v1/prepare").status_code == 401
    r = api.post("/templates/no-such-shipped-template/prepare")
    assert r.status_code == 404, (r.status_code, r.text)
    r = api.post("/templates/..%2F..%2Fetc/prepare")
    assert r.status_code in (400, 404), (r.status_code, r.text)
