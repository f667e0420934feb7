"""Persistent volumes with the official e2b SDK's `Volume` against `soulbox server` (issue 15): create, list, get,
the content API without any sandbox (write, make_dir, list, stat, read, update metadata, remove), one volume
mounted by two sandboxes at once (written in one as `user`, read in the other, owned right in both), delete
refused while mounted, destroy, and the size limit (run.sh sets `volume_size_mb = 64`) for sandboxes and the API.

The volume content API is reached through `E2B_VOLUME_API_URL` (run.sh sets it to the server; E2B's default is
`https://api.<E2B_DOMAIN>`)."""

from __future__ import annotations

import e2b
import pytest

from conftest import RUN_ID

Volume = getattr(e2b, "Volume", None)
pytestmark = pytest.mark.skipif(Volume is None, reason="this e2b SDK has no Volume class (volumes came later)")


@pytest.fixture
def volume(api):
    vol = Volume.create(f"e2e-{RUN_ID.replace('.', '-')}")
    yield vol
    # Raw HTTP, so a failed SDK call cannot skip it (sandboxes are killed before: fixtures tear down in reverse).
    api.delete(f"/volumes/{vol.volume_id}")


def test_volume_catalogue_and_content_without_a_sandbox(volume):
    assert volume.name.startswith("e2e-") and volume.token
    assert volume.volume_id in [v.volume_id for v in Volume.list()]
    info = Volume.get_info(volume.volume_id)
    assert (info.volume_id, info.name, info.token) == (volume.volume_id, volume.name, volume.token)
    with pytest.raises(Exception, match="already exists"):
        Volume.create(volume.name)

    made = volume.make_dir("/work/deep", force=True)
    assert (made.path, str(made.type).lower().split(".")[-1]) == ("/work/deep", "directory")
    wrote = volume.write_file("/work/deep/hello.txt", "hello volume")
    assert (wrote.size, wrote.uid, wrote.gid) == (12, 1000, 1000), wrote
    with pytest.raises(Exception):
        volume.write_file("/work/deep/hello.txt", "again")  # exists, no force
    volume.write_file("/work/deep/hello.txt", "hello again", force=True)
    assert volume.read_file("/work/deep/hello.txt") == "hello again"
    names = [e.path for e in volume.list("/", depth=3)]
    assert names == ["/work", "/work/deep", "/work/deep/hello.txt"], names
    assert volume.exists("/work/deep/hello.txt") and not volume.exists("/nope")
    changed = volume.update_metadata("/work/deep/hello.txt", mode=0o600)
    assert changed.mode == 0o600, changed
    volume.remove("/work")
    assert volume.list("/") == []
    # A traversal is refused, never resolved outside the volume.
    with pytest.raises(Exception):
        volume.read_file("/../../../etc/passwd")


def test_one_volume_in_two_sandboxes_and_delete_refused_while_mounted(volume, sandboxes, api):
    a = sandboxes.create(volume_mounts={"/data": volume})
    b = sandboxes.create(volume_mounts={"/mnt/shared": volume.name})
    # (find -printf, not stat: coreutils' stat fails under Debian 12's gVisor, README)
    r = a.commands.run("echo from-a > /data/note && find /data/note -printf '%u %g\\n'")
    assert r.stdout.strip() == "user user", r.stdout
    r = b.commands.run("cat /mnt/shared/note && find /mnt/shared/note -printf '%u\\n' && touch /mnt/shared/from-b")
    assert r.stdout == "from-a\nuser\n", r.stdout
    r = b.commands.run("echo root-wrote > /mnt/shared/root.txt && find /mnt/shared/root.txt -printf '%u'", user="root")
    assert r.stdout.strip() == "root"
    # The content API sees what the sandboxes wrote, with the owners they saw.
    stat = volume.get_info("/note")
    assert (stat.uid, stat.size) == (1000, 7)
    assert volume.get_info("/root.txt").uid == 0
    detail = api.get(f"/sandboxes/{a.sandbox_id}").json()
    assert detail.get("volumeMounts") == [{"name": volume.name, "path": "/data"}], detail

    refused = api.delete(f"/volumes/{volume.volume_id}")
    assert refused.status_code == 409 and "mounted" in refused.json()["message"], refused.text
    a.kill()
    b.kill()
    assert Volume.destroy(volume.volume_id)
    assert volume.volume_id not in [v.volume_id for v in Volume.list()]
    assert not Volume.destroy(volume.volume_id)


def test_bad_volume_mounts_are_refused_clearly(sandboxes, api):
    r = api.post("/sandboxes", json={"templateID": "base", "volumeMounts": [{"name": "no-such-volume", "path": "/d"}]})
    assert r.status_code == 400 and "no-such-volume" in r.json()["message"], r.text
    name = f"e2e-bad-{RUN_ID.replace('.', '-')}"
    created = api.post("/volumes", json={"name": name}).json()
    try:
        for path in ["/proc/x", "relative", "/", "/a/../etc"]:
            r = api.post("/sandboxes", json={"templateID": "base", "volumeMounts": [{"name": name, "path": path}]})
            assert r.status_code == 400, (path, r.text)
        bad_name = api.post("/volumes", json={"name": "../etc"})
        assert bad_name.status_code == 400, bad_name.text
    finally:
        api.delete(f"/volumes/{created['volumeID']}")


def test_a_volume_is_full_at_its_size_for_sandboxes_and_the_api(volume, sandboxes):
    sbx = sandboxes.create(volume_mounts={"/data": volume})
    # dd fails past the size; the command's exit code is df's.
    out = sbx.commands.run("dd if=/dev/zero of=/data/big bs=1M count=100 2>&1; df -k /data | tail -1").stdout
    assert "No space left on device" in out, out
    size_kib = int(out.strip().splitlines()[-1].split()[1])
    assert 32 * 1024 <= size_kib <= 64 * 1024, out
    # The content API meets the same limit, and a failed upload leaves nothing behind.
    with pytest.raises(Exception, match="full"):
        volume.write_file("/more.bin", b"x" * (8 << 20))
    assert [e.name for e in volume.list("/")] == ["big"]
    # Room again once the sandbox frees it.
    sbx.commands.run("rm /data/big")
    assert volume.write_file("/more.bin", b"x" * (8 << 20)).size == 8 << 20
