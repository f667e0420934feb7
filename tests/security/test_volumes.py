"""Volumes across teams and their tokens (issue 15), attacked with ordinary keys of two teams and with volume tokens.

Team B must get exactly what it gets for a volume that does not exist (E2B's 404), on the catalogue (`/volumes`), on
the content API (`/volumecontent/{id}/...`) and when naming A's volume in a create's `volumeMounts`; a volume's
token opens that volume's content and nothing else (not another volume, not the REST API). Path attacks on the
content API: test_volume_content.py; volumes inside sandboxes: test_volume_mounts.py.
"""

from __future__ import annotations

import os

import pytest
from e2b import Sandbox, Volume
from e2b.exceptions import NotFoundException, VolumeNotFoundException

from conftest import DATA_DIR, KEY_A, KEY_B, RUN_ID
from refusals import e2b_error, same_as_unknown
from vols import CONTENT_OPS, UNKNOWN_VOLUME, bearer, content_client, content_url, host_dir, volumes  # noqa: F401

pytestmark = pytest.mark.timeout(300)

SECRET = f"team-a-volume-secret-{RUN_ID}"


def planted(volume: Volume) -> Volume:
    """Gives team A's volume a secret file and a directory, through its own token."""
    volume.make_dir("/dir")
    volume.write_file("/dir/secret.txt", SECRET)
    return volume


def assert_untouched(volume: Volume):
    """The planted volume as planted: nothing changed, removed, added or chmodded by the attacks."""
    assert volume.read_file("/dir/secret.txt") == SECRET
    assert [e.path for e in volume.list("/", depth=3)] == ["/dir", "/dir/secret.txt"]
    assert volume.get_info("/dir/secret.txt").mode == 0o666, "the attack changed its mode"
    assert sorted(os.listdir(host_dir(volume.volume_id))) == ["dir"]


def test_team_b_gets_the_unknown_volume_404_for_team_a_volume(api, api_b, volumes):
    mine = planted(volumes("cross"))
    vid = mine.volume_id
    for method in ("GET", "DELETE"):
        r = same_as_unknown(api_b, method, f"/volumes/{vid}", vid, UNKNOWN_VOLUME)
        assert mine.token not in r.text
    listed = api_b.get("/volumes")
    assert listed.status_code == 200 and vid not in listed.text and mine.name not in listed.text, listed.text
    # The same through the official SDK with team B's key.
    with pytest.raises(VolumeNotFoundException):
        Volume.get_info(vid, api_key=KEY_B)
    with pytest.raises(VolumeNotFoundException):
        Volume.connect(vid, api_key=KEY_B)
    assert Volume.destroy(vid, api_key=KEY_B) is False, "destroy reports 'not found'"
    assert vid not in [v.volume_id for v in Volume.list(api_key=KEY_B)]
    # The content API with team B's key: every operation, like an unknown volume.
    for method, route, kw in CONTENT_OPS:
        for path in ("/dir/secret.txt", "/dir", "/"):
            r = same_as_unknown(api_b, method, content_url(vid, route), vid, UNKNOWN_VOLUME, params={"path": path}, **kw)
            assert SECRET not in r.text
    # Team A still has all of it, and still sees its token.
    assert_untouched(mine)
    assert api.get(f"/volumes/{vid}").json()["token"] == mine.token
    assert vid in [v.volume_id for v in Volume.list(api_key=KEY_A)]


def test_a_volume_token_opens_its_own_volume_and_nothing_else(volumes):
    mine, sibling, theirs = volumes("tok-a1"), planted(volumes("tok-a2")), planted(volumes("tok-b", team="b"))
    # Its own volume: everything works (so the refusals below are about the token, not the requests).
    with bearer(mine.token) as c:
        r = c.put(content_url(mine.volume_id, "file"), params={"path": "/own.txt"}, content=b"own")
        assert r.status_code == 201, r.text
        assert c.get(content_url(mine.volume_id, "file"), params={"path": "/own.txt"}).content == b"own"
        # Another volume of the same team, and one of another team: the unknown volume's answer, for every op.
        for other in (sibling, theirs):
            for method, route, kw in CONTENT_OPS:
                url = content_url(other.volume_id, route)
                r = same_as_unknown(c, method, url, other.volume_id, UNKNOWN_VOLUME, params={"path": "/dir/secret.txt"}, **kw)
                assert SECRET not in r.text
    # Team B's own volume token against team A's volume: the same.
    with bearer(theirs.token) as c:
        for method, route, kw in CONTENT_OPS:
            url = content_url(sibling.volume_id, route)
            same_as_unknown(c, method, url, sibling.volume_id, UNKNOWN_VOLUME, params={"path": "/dir"}, **kw)
    # Through the SDK: A's volume object carrying B's token gets "not found".
    with pytest.raises(NotFoundException):
        Volume(sibling.volume_id, sibling.name, token=theirs.token).read_file("/dir/secret.txt")
    assert_untouched(sibling)
    assert_untouched(theirs)


def test_a_volume_token_is_not_an_api_key(api, volumes, sandboxes):
    vol = volumes("not-a-key")
    before = {s["sandboxID"] for s in api.get("/v2/sandboxes").json()}
    body = {"templateID": "base", "timeout": 60, "metadata": {"sec-run": RUN_ID}}
    routes = [
        ("POST", "/v2/sandboxes", body),
        ("POST", "/sandboxes", body),
        ("GET", "/v2/sandboxes", None),
        ("GET", "/volumes", None),
        ("POST", "/volumes", {"name": f"sec-by-token-{RUN_ID}"}),
        ("GET", f"/volumes/{vol.volume_id}", None),
        ("DELETE", f"/volumes/{vol.volume_id}", None),
        ("GET", "/teams", None),
    ]
    for header, expected in (("Authorization", "invalid access token"), ("X-API-Key", "invalid API key")):
        value = f"Bearer {vol.token}" if header == "Authorization" else vol.token
        with content_client({header: value}) as c:
            for method, path, json_body in routes:
                r = c.request(method, path, json=json_body)
                assert e2b_error(r, 401) == expected, f"{header} {method} {path}: {r.text}"
    # The SDK with the token as its key: refused, and nothing was made.
    with pytest.raises(Exception) as e:
        Sandbox.create(api_key=vol.token, timeout=60, metadata={"sec-run": RUN_ID})
    assert "401" in str(e.value) or "invalid" in str(e.value).lower(), str(e.value)
    assert {s["sandboxID"] for s in api.get("/v2/sandboxes").json()} == before, "a volume token created a sandbox"
    names = [v["name"] for v in api.get("/volumes").json()]
    assert vol.name in names and f"sec-by-token-{RUN_ID}" not in names, names


def test_no_or_garbage_credentials_get_401_in_e2b_shape(anon, volumes):
    vol = planted(volumes("creds"))
    vid = vol.volume_id
    for method, route, kw in CONTENT_OPS:
        url = content_url(vid, route)
        # No credentials at all: 401, the same for a real and an unknown volume.
        with content_client() as c:
            r = same_as_unknown(c, method, url, vid, UNKNOWN_VOLUME, status=401, params={"path": "/dir"}, **kw)
            assert "token" in r.json()["message"], r.text
        # A key that is no key: 401.
        with content_client({"X-API-Key": "e2b_" + "0" * 40}) as c:
            r = same_as_unknown(c, method, url, vid, UNKNOWN_VOLUME, status=401, params={"path": "/dir"}, **kw)
            assert r.json()["message"] == "invalid API key", r.text
        # A bearer token that opens nothing: the unknown volume's 404 (by design a wrong token never confirms that
        # an id exists; E2B's JWTs answer 401 here, docs/SECURITY.md 5b).
        for garbage in ("sbvol_" + "0" * 40, "e2b_" + "0" * 40, KEY_B):
            with content_client({"Authorization": f"Bearer {garbage}"}) as c:
                r = same_as_unknown(c, method, url, vid, UNKNOWN_VOLUME, params={"path": "/dir/secret.txt"}, **kw)
                assert SECRET not in r.text
    # The catalogue: no key, a made-up key, a made-up access token.
    for headers in ({}, {"X-API-Key": "e2b_" + "0" * 40}, {"Authorization": "Bearer sk_e2b_" + "0" * 40}):
        with content_client(headers) as c:
            for method, path in (("GET", "/volumes"), ("GET", f"/volumes/{vid}"), ("DELETE", f"/volumes/{vid}")):
                e2b_error(c.request(method, path), 401)
            e2b_error(c.post("/volumes", json={"name": f"sec-anon-{RUN_ID}"}), 401)
    assert_untouched(vol)


def test_team_b_cannot_mount_team_a_volume_by_name_or_id(api, api_b, volumes, sandboxes_b):
    mine = planted(volumes("mount-a"))
    sandboxes_dir = os.path.join(DATA_DIR, "node", "sandboxes")
    dirs_before = set(os.listdir(sandboxes_dir))
    b_before = {s["sandboxID"] for s in api_b.get("/v2/sandboxes").json()}
    unknown_name = f"sec-nosuch-{RUN_ID}"
    for path in ("/v2/sandboxes", "/sandboxes"):
        for named in (mine.name, mine.volume_id):
            body = {"templateID": "base", "timeout": 60, "metadata": {"sec-run": RUN_ID}}
            # The name is in the body, not the URL: the two answers are compared here.
            got = api_b.post(path, json={**body, "volumeMounts": [{"name": named, "path": "/data"}]})
            missing = api_b.post(path, json={**body, "volumeMounts": [{"name": unknown_name, "path": "/data"}]})
            message = e2b_error(got, 400)
            assert message.replace(named, unknown_name) == e2b_error(missing, 400), (got.text, missing.text)
    with pytest.raises(Exception):
        sandboxes_b.create(volume_mounts={"/data": mine.name}, timeout=60)
    assert {s["sandboxID"] for s in api_b.get("/v2/sandboxes").json()} == b_before, "a refused create left a sandbox"
    assert set(os.listdir(sandboxes_dir)) <= dirs_before, "a refused create left a sandbox directory"
    # Names are per team: B's own volume of that name is another volume, and B's sandbox sees only B's files.
    theirs = volumes("mount-a", team="b")
    assert theirs.name == mine.name and theirs.volume_id != mine.volume_id
    sbx = sandboxes_b.create(volume_mounts={"/data": mine.name}, timeout=120)
    r = sbx.commands.run("ls -A /data; cat /data/dir/secret.txt 2>/dev/null; echo end")
    assert r.stdout.split() == ["end"], f"team B's sandbox sees team A's volume: {r.stdout}"
    assert_untouched(mine)
