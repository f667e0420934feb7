"""The volume content API against hostile paths (issue 15): it runs as root on the host, so every path must stay
inside its volume — `..`, relative and absolute host paths, percent-encoded traversal, and symlinks that root inside
a sandbox plants in a volume it mounts (`ln -s / root`, `ln -s /etc/shadow shadow`, links to a canary directory the
test makes on the host) and then reads, writes, lists, chmods, chowns and removes through the API.

Destructive operations (write, chmod, chown, remove) only ever go through links to the canary, so that a broken
defence damages nothing but the canary; `/etc/shadow` and `/` are only read, stat'ed and listed through. The canary
and the host's `/etc/shadow` and `/etc/passwd` must be exactly as they were.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat

import httpx
import pytest

from conftest import API_URL, DATA_DIR, KEY_A, RUN_ID, root_run
from refusals import e2b_error
from vols import CONTENT_OPS, bearer, content_url, host_dir, volumes  # noqa: F401

pytestmark = pytest.mark.timeout(300)

CANARY = f"canary-{RUN_ID}"
PASSWD_LINE = "root:x:0:0"


def state(path: str) -> dict:
    """Everything about `path` (and below it, not following links) that an attack could change."""
    out = {}
    targets = [path]
    if os.path.isdir(path) and not os.path.islink(path):
        for dirpath, dirnames, filenames in os.walk(path):
            targets += [os.path.join(dirpath, n) for n in dirnames + filenames]
    for p in targets:
        st = os.lstat(p)
        entry = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                entry += (hashlib.sha256(f.read()).hexdigest(),)
        out[p] = entry
    return out


@pytest.fixture
def canary(tmp_path):
    """A directory on the host, outside any volume, with a file: what the planted links point at."""
    root = tmp_path / "canary"
    (root / "inner").mkdir(parents=True)
    (root / "canary.txt").write_text(CANARY)
    (root / "inner" / "deep.txt").write_text(CANARY)
    os.chmod(root / "canary.txt", 0o640)
    return str(root)


def host_files_state(canary_dir: str) -> dict:
    return {**state(canary_dir), **state("/etc/shadow"), **state("/etc/passwd")}


# --- paths -----------------------------------------------------------------------------------------------------

TRAVERSALS = ["/../../../../etc/passwd", "/dir/../../../etc/passwd", "..", "/..", "/./../etc/passwd", "/dir/.."]
RELATIVE = ["etc/passwd", "dir/secret.txt", "./etc/passwd"]
# Host paths: inside the API they are paths of the volume, where nothing of that name exists.
HOST_PATHS = ["/etc/passwd", "//etc/passwd", "/./etc/passwd", "/proc/self/environ", "/proc/1/root/etc/passwd"]
# Percent-encoded in the URL itself (the server decodes the query once: `..` must be refused after decoding).
ENCODED = [
    ("%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400),
    ("%2F..%2F..%2F..%2Fetc%2Fpasswd", 400),
    ("%2F%2e%2e%2F%2e%2e%2Fetc%2Fpasswd", 400),
    ("/%2e%2e/%2e%2e/etc/passwd", 400),
    ("/dir/%00/../../etc/passwd", 400),
    # Encoded twice: decoded once it is a name like any other (`%2e%2e`), which does not exist here.
    ("/%252e%252e/%252e%252e/etc/passwd", 404),
]


def test_traversal_relative_and_host_paths_stay_in_the_volume(volumes):
    vol = volumes("paths")
    vol.make_dir("/dir")
    vid = vol.volume_id
    escape = f"escape-{RUN_ID}"
    with bearer(vol.token) as c:
        for method, route, kw in CONTENT_OPS:
            for path, status in [(p, 400) for p in TRAVERSALS + RELATIVE] + [(p, 404) for p in HOST_PATHS]:
                if method == "PUT":
                    path = path.replace("passwd", escape)
                r = c.request(method, content_url(vid, route), params={"path": path}, **kw)
                e2b_error(r, status)
                assert PASSWD_LINE not in r.text, f"{method} {route} {path}: {r.text}"
            for raw, status in ENCODED:
                url = httpx.URL(f"{API_URL}{content_url(vid, route)}?path={raw.replace('passwd', escape)}")
                r = c.request(method, url, **kw)
                e2b_error(r, status)
                assert PASSWD_LINE not in r.text, f"{method} {route} {raw}: {r.text}"
    # Nothing was written anywhere above the volume, nor inside it under a traversal's name.
    for base in (DATA_DIR, os.path.join(DATA_DIR, "volumes"), "/", "/etc", host_dir(vid)):
        assert not os.path.exists(os.path.join(base, escape)), f"an upload escaped to {base}"
    assert sorted(os.listdir(host_dir(vid))) == ["dir"], os.listdir(host_dir(vid))
    assert os.listdir(os.path.join(host_dir(vid), "dir")) == []


def test_a_traversal_in_the_volume_id_reaches_no_volume(api, volumes):
    vol = volumes("idpath")
    vol.write_file("/f.txt", "mine")
    other = volumes("idpath-2")
    other.write_file("/f.txt", "other")
    ids = [
        "..%2F..%2F..%2Fetc",
        "%2e%2e",
        f"{vol.volume_id}%2F..%2F{other.volume_id}",
        f"..%2F{other.volume_id}",
        f"{vol.volume_id}%2F..",
    ]
    for client in (bearer(vol.token), httpx.Client(base_url=API_URL, headers={"X-API-Key": KEY_A}, trust_env=False)):
        with client:
            for raw_id in ids:
                for path in ("/f.txt", "/passwd", "/etc/passwd"):
                    url = httpx.URL(f"{API_URL}/volumecontent/{raw_id}/file?path={path}")
                    r = client.get(url)
                    assert r.status_code in (400, 404), f"{raw_id} {path}: {r.status_code} {r.text}"
                    assert b"other" not in r.content and PASSWD_LINE not in r.text, (raw_id, path, r.text)
    assert other.read_file("/f.txt") == "other" and vol.read_file("/f.txt") == "mine"


# --- links planted from inside a sandbox ----------------------------------------------------------------------


def plant(sbx, canary_dir: str):
    """Root inside the sandbox plants links in the volume mounted at /vol."""
    c = shlex.quote(canary_dir)
    script = " && ".join(
        [
            "cd /vol",
            "ln -s / root",
            "ln -s /etc/shadow shadow",
            f"ln -s {c} canary",
            f"ln -s {c}/canary.txt canary.txt",
            f"ln -s {c}/canary.txt chown-me",
            f"ln -s {c} remove-me",
            "ln -s ../../../../../../../.. up",
            "mkdir d",
            f"ln -s {c} d/in",
            f"ln -s {c}/canary.txt d/file",
            "echo planted",
        ]
    )
    r = root_run(sbx, script)
    assert r.stdout.strip() == "planted", (r.stdout, r.stderr)


def refused(call, *args, **kwargs) -> str:
    """The call fails; returns its error's text (which must not carry the canary or a host file)."""
    with pytest.raises(Exception) as e:
        call(*args, **kwargs)
    text = str(e.value)
    assert CANARY not in text and PASSWD_LINE not in text, text
    return text


def kind(entry) -> str:
    return str(entry.type).lower().split(".")[-1]


def test_links_planted_by_sandbox_root_keep_every_operation_in_the_volume(volumes, sandboxes, canary):
    vol = volumes("links")
    sbx = sandboxes.create(volume_mounts={"/vol": vol})
    plant(sbx, canary)
    before = host_files_state(canary)
    via_root, via_up = f"/root{canary}", f"/up{canary}"

    # Read: a link is never downloaded through, and an absolute link resolves inside the volume.
    for path in ["/shadow", "/canary.txt", "/d/file", f"{via_root}/canary.txt", f"{via_up}/canary.txt",
                 "/canary/canary.txt", "/d/in/canary.txt", "/root/etc/shadow", "/up/etc/shadow", "/root/etc/passwd"]:
        refused(vol.read_file, path)
        refused(vol.read_file, path, format="bytes")
    # Stat: the link itself (lstat), never its target.
    for path, target in [("/shadow", "/etc/shadow"), ("/canary.txt", f"{canary}/canary.txt"), ("/canary", canary)]:
        info = vol.get_info(path)
        assert kind(info) == "symlink", (path, info)
        assert getattr(info, "target", target) == target, info
    for path in [f"{via_root}/canary.txt", "/canary/inner", f"{via_up}/inner/deep.txt", "/root/etc/shadow"]:
        refused(vol.get_info, path)
    # List: links are entries, not directories to walk; through `/root` the volume is `/`.
    listed = sorted(e.path for e in vol.list("/", depth=3))
    planted_names = ["/canary", "/canary.txt", "/chown-me", "/d", "/d/file", "/d/in", "/remove-me", "/root", "/shadow", "/up"]
    assert listed == planted_names, listed
    through_root = sorted(e.path for e in vol.list("/root"))
    assert all(p.split("/")[-1] in {n.split("/")[1] for n in planted_names} for p in through_root), through_root
    for path in ["/canary", "/d/in", f"{via_root}", f"{via_up}/inner"]:
        try:
            entries = vol.list(path, depth=2)
        except Exception as e:  # noqa: BLE001 - a refusal is fine, only its text is checked
            assert CANARY not in str(e)
            continue
        names = [e.path for e in entries]
        assert not any(n.endswith(("canary.txt", "deep.txt", "inner")) for n in names), (path, names)
    # Chmod: refused on a link and on paths through links; chown: the link itself (lchown), never its target.
    for path in ["/canary.txt", "/canary", "/d/file", "/d/in", "/canary/canary.txt", f"{via_root}/canary.txt"]:
        refused(vol.update_metadata, path, mode=0o777)
    changed = vol.update_metadata("/chown-me", uid=4242, gid=4242)
    assert (kind(changed), changed.uid, changed.gid) == ("symlink", 4242, 4242), changed
    for path in ["/canary/canary.txt", f"{via_root}/canary.txt", f"{via_up}/canary.txt", "/d/in/inner"]:
        refused(vol.update_metadata, path, uid=4242, gid=4242)
    # Write: never through a link; over a link (force) the link is replaced inside the volume.
    through_links = [("/canary/new.txt", "new.txt"), ("/d/in/new.txt", "new.txt"), (f"{via_root}/new.txt", "new.txt"),
                     (f"{via_up}/new.txt", "new.txt"), ("/canary/inner/deep.txt", "inner/deep.txt")]
    for path, _ in through_links:
        refused(vol.write_file, path, "pwned")
    refused(vol.write_file, "/d/file", "pwned")  # exists (the link), no force
    for path in ["/canary.txt", "/d/file"]:
        written = vol.write_file(path, "pwned", force=True)
        assert (kind(written), written.size) == ("file", 5), written
    # Mkdir: never below a link's target.
    for path in ["/canary/sub", "/d/in/sub", f"{via_root}/sub"]:
        refused(vol.make_dir, path)
    # Remove: a link is removed itself; nothing is removed through one.
    vol.remove("/remove-me")
    for path in [f"{via_root}/canary.txt", f"{via_up}/inner", "/canary/canary.txt", "/canary/inner"]:
        refused(vol.remove, path)
    # With force, missing parents are made (or a link in the way refused): inside the volume, where the link
    # resolves there (as if the volume were `/`), never at the link's target on the host.
    inside = host_dir(vol.volume_id) + canary
    for path, lands in through_links:
        try:
            vol.write_file(path, "pwned", force=True)
        except Exception as e:  # noqa: BLE001 - a refusal is fine too
            assert CANARY not in str(e)
            continue
        with open(os.path.join(inside, lands)) as f:
            assert f.read() == "pwned", path
    try:
        vol.make_dir("/d/in/forced/sub", force=True)
    except Exception as e:  # noqa: BLE001 - a refusal is fine too
        assert CANARY not in str(e)
    else:
        assert os.path.isdir(os.path.join(inside, "forced", "sub"))
    # A directory's links are unlinked, not walked.
    vol.remove("/d")

    assert host_files_state(canary) == before, "the content API changed a file outside the volume"
    assert sorted(os.listdir(canary)) == ["canary.txt", "inner"]
    # The sandbox sees what the API did inside the volume: the replaced links are files now.
    r = sbx.commands.run("cat /vol/canary.txt; echo; test -e /vol/remove-me || echo removed; test -e /vol/d || echo gone")
    assert r.stdout.split() == ["pwned", "removed", "gone"], r.stdout
