"""Snapshots, create-from-snapshot, fork and filesystem-only pause with the official e2b SDK against `soulbox
server` (issue 13). On runc a snapshot holds the sandbox's files (the answer's `mode` says `filesystem`):
sandboxes started from it boot cold from those files, without the source's processes.

The newest SDK has `create_snapshot`, `list_snapshots`, `delete_snapshot`, `fork` and `pause(mode=...)`; the
pinned 2.45 has none of them, so there the same routes are driven over raw HTTP and the SDK starts sandboxes
from the snapshot (an ordinary template name to it)."""

from __future__ import annotations

import concurrent.futures
import inspect
import uuid

import httpx
import pytest

from e2b import Sandbox

from conftest import RUN_ID, wait_until

SDK_HAS_SNAPSHOTS = hasattr(Sandbox, "create_snapshot") and hasattr(Sandbox, "fork")
# Newer SDKs say `mode="filesystem"`; 2.45 says `keep_memory=False` (both send `memory: false`).
SDK_PAUSE_HAS_MODE = "mode" in inspect.signature(Sandbox.pause).parameters
FILESYSTEM_ONLY = {"mode": "filesystem"} if SDK_PAUSE_HAS_MODE else {"keep_memory": False}
COUNTER = "i=0; while true; do echo $i > /tmp/counter; i=$((i+1)); sleep 0.2; done"


def state_of(api: httpx.Client, sid: str):
    r = api.get(f"/sandboxes/{sid}")
    return r.json()["state"] if r.status_code == 200 else r.status_code


def counter_running(sbx: Sandbox) -> bool:
    return sbx.commands.run("pgrep -f 'echo \\$i' >/dev/null && echo yes || echo no").stdout.strip() == "yes"


@pytest.fixture
def snapshots(api):
    """Snapshot ids a test made; deleted at teardown (the SDK's way: `DELETE /templates/{id}`)."""
    made: list[str] = []
    yield made
    for snapshot_id in made:
        api.delete(f"/templates/{snapshot_id.replace(':', '%3A')}")


def take_snapshot(api: httpx.Client, sbx: Sandbox, name: str | None, made: list[str]) -> dict:
    if SDK_HAS_SNAPSHOTS:
        info = sbx.create_snapshot(name) if name else sbx.create_snapshot()
        got = {"snapshotID": info.snapshot_id, "names": info.names}
    else:
        r = api.post(f"/sandboxes/{sbx.sandbox_id}/snapshots", json={"name": name} if name else {})
        assert r.status_code == 201, r.text
        got = r.json()
    made.append(got["snapshotID"])
    return got


def test_snapshot_starts_many_sandboxes_and_outlives_deletion(sandboxes, snapshots, api):
    source = sandboxes.create(timeout=300)
    source.files.write("/home/user/state.txt", "captured")
    source.commands.run(COUNTER, background=True)
    wait_until(lambda: counter_running(source), 30, "the counter to run in the source")
    name = f"e2e-snap-{RUN_ID}"
    snap = take_snapshot(api, source, name, snapshots)
    assert snap["snapshotID"] == f"{name}:default"
    assert snap["names"] == [f"{name}:default"]
    raw = api.get("/snapshots", params={"sandboxID": source.sandbox_id}).json()
    assert [s["snapshotID"] for s in raw] == [snap["snapshotID"]]
    assert raw[0]["mode"] == "filesystem", "runc keeps files only, and the answer says so"

    # The source keeps running, and what it writes later is not in the snapshot.
    assert source.is_running()
    source.files.write("/home/user/state.txt", "changed after the snapshot")

    # Several sandboxes at once from one snapshot, each its own.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        started = list(pool.map(lambda _: sandboxes.create(template=snap["snapshotID"], timeout=120), range(3)))
    assert len({s.sandbox_id for s in started} | {source.sandbox_id}) == 4
    for sbx in started:
        assert sbx.files.read("/home/user/state.txt") == "captured"
        assert not counter_running(sbx), "a files-only snapshot boots cold: the source's processes are not there"
        assert sbx.commands.run("hostname").stdout.strip() != source.commands.run("hostname").stdout.strip()
    started[0].files.write("/home/user/state.txt", "mine")
    assert started[1].files.read("/home/user/state.txt") == "captured", "sandboxes from a snapshot share nothing"

    if SDK_HAS_SNAPSHOTS:
        listed = []
        paginator = Sandbox.list_snapshots(sandbox_id=source.sandbox_id)
        while paginator.has_next:
            listed.extend(paginator.next_items())
        assert [s.snapshot_id for s in listed] == [snap["snapshotID"]]
        assert Sandbox.delete_snapshot(snap["snapshotID"]) is True
        assert Sandbox.delete_snapshot(snap["snapshotID"]) is False
    else:
        assert api.delete(f"/templates/{name}%3Adefault").status_code == 204
    assert api.get("/snapshots", params={"name": name}).json() == []
    with pytest.raises(Exception):
        Sandbox.create(template=snap["snapshotID"], timeout=30)

    # Deleting it is safe for sandboxes started from it: they run, and stop/start from their files.
    survivor = started[2]
    assert survivor.commands.run("cat /home/user/state.txt").stdout == "captured"
    r = api.post(f"/sandboxes/{survivor.sandbox_id}/pause", json={"memory": False})
    assert r.status_code == 204, r.text
    resumed = Sandbox.connect(survivor.sandbox_id, timeout=120)
    assert resumed.files.read("/home/user/state.txt") == "captured"


def test_unnamed_snapshot_and_refused_names(sandboxes, snapshots, api):
    source = sandboxes.create(timeout=120)
    snap = take_snapshot(api, source, None, snapshots)
    assert snap["snapshotID"].endswith(":default") and snap["names"] == []
    r = api.post(f"/sandboxes/{source.sandbox_id}/snapshots", json={"name": "base"})
    assert r.status_code == 409 and r.json()["code"] == 409, r.text
    r = api.post(f"/sandboxes/{source.sandbox_id}/snapshots", json={"name": "not a name"})
    assert r.status_code == 400, r.text
    r = api.post(f"/sandboxes/{uuid.uuid4().hex}/snapshots", json={})
    assert r.status_code == 404, r.text


@pytest.mark.skipif(not SDK_HAS_SNAPSHOTS, reason="this SDK has no fork")
def test_fork_copies_files_and_settings_and_the_source_keeps_running(sandboxes, api):
    source = sandboxes.create(timeout=300, envs={"FORKED_ENV": "yes"})
    source.files.write("/home/user/forked.txt", "from the source")
    forks = source.fork(count=2, timeout=120)
    assert len(forks) == 2
    for fork in forks:
        assert isinstance(fork, Sandbox), fork
        sandboxes.created.append(fork.sandbox_id)
    assert len({f.sandbox_id for f in forks} | {source.sandbox_id}) == 3
    for fork in forks:
        assert fork.files.read("/home/user/forked.txt") == "from the source"
        assert fork.commands.run("echo $FORKED_ENV").stdout.strip() == "yes"
        info = Sandbox.get_info(fork.sandbox_id)
        assert info.metadata.get("e2e-run") == RUN_ID, "forks keep the source's metadata"
    forks[0].files.write("/home/user/forked.txt", "changed in a fork")
    assert source.files.read("/home/user/forked.txt") == "from the source"
    assert forks[1].files.read("/home/user/forked.txt") == "from the source"
    assert source.is_running()
    # Nothing of the fork's own snapshot is left for the team to see.
    assert api.get("/snapshots", params={"sandboxID": source.sandbox_id}).json() == []


def test_filesystem_pause_keeps_files_and_cold_boots(sandboxes, api):
    sbx = sandboxes.create(timeout=300)
    sid = sbx.sandbox_id
    sbx.files.write("/home/user/fs.txt", "kept on disk")
    sbx.commands.run(COUNTER, background=True)
    wait_until(lambda: counter_running(sbx), 30, "the counter to run")
    assert sbx.pause(**FILESYSTEM_ONLY) is True
    assert state_of(api, sid) == "paused"
    resumed = Sandbox.connect(sid, timeout=120)
    assert resumed.files.read("/home/user/fs.txt") == "kept on disk"
    assert not counter_running(resumed), "a filesystem-only pause drops the processes: resume boots cold"


def test_auto_pause_filesystem_mode_on_timeout(sandboxes, api):
    sbx = sandboxes.create(timeout=4, lifecycle={"on_timeout": {"action": "pause", **FILESYSTEM_ONLY}})
    sid = sbx.sandbox_id
    sbx.files.write("/home/user/auto-fs.txt", "files only")
    sbx.commands.run(COUNTER, background=True)
    wait_until(lambda: state_of(api, sid) == "paused", 60, "auto-pause after the timeout")
    resumed = Sandbox.connect(sid, timeout=120)
    assert resumed.files.read("/home/user/auto-fs.txt") == "files only"
    assert not counter_running(resumed), "the timeout's filesystem-only pause boots cold on resume"
