"""Volumes inside sandboxes (issue 15), attacked by root inside and through the content API.

A volume is bound into a sandbox `nosuid,nodev`, its files stored unshifted (a file root writes inside is owned by
host root), under a volumes directory only host root can enter (crates/soulbox-runtime/src/volumes.rs). So: a
set-uid root binary left in a volume runs as its caller in the next sandbox; a device node there opens nothing; the
set-uid root files a sandbox can make on the host are out of every host user's reach; and a mount path cannot put a
volume over /proc, /sys, /dev or SoulBox's own paths — not by name, and not through a link planted in the
sandbox's own filesystem.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from conftest import DATA_DIR, RUN_ID, RUNTIME, root_run
from refusals import e2b_error
from vols import host_dir, volumes  # noqa: F401

pytestmark = pytest.mark.timeout(300)

# `id -u` prints the effective uid: what a set-uid root binary would make 0.
ID_BINARY = "/usr/bin/id"


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    """Runs `argv` on the host as an unprivileged host user (nobody). runuser, not setpriv: setpriv keeps its
    capabilities until its own exec, so the exec's path lookup still passed directories only root may enter."""
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )


def mount_options(sbx, path: str) -> list:
    r = sbx.commands.run(f"grep ' {path} ' /proc/mounts")
    fields = r.stdout.split()
    assert len(fields) >= 4, r.stdout
    return fields[3].split(",")


def test_a_setuid_root_binary_in_a_volume_runs_as_its_caller(volumes, sandboxes):
    vol = volumes("suid")
    writer = sandboxes.create(volume_mounts={"/vol": vol})
    runner = sandboxes.create(volume_mounts={"/mnt/v": vol})
    # Root inside sandbox 1 leaves one there.
    r = root_run(writer, f"cp {ID_BINARY} /vol/root-id && chmod 4755 /vol/root-id && find /vol/root-id -printf '%U %m'")
    assert r.stdout.strip() == "0 4755", (r.stdout, r.stderr)
    # The content API makes another: the same binary uploaded, given to root, then set-uid.
    vol.write_file("/api-id", bytes(writer.files.read(ID_BINARY, format="bytes")))
    vol.update_metadata("/api-id", uid=0, gid=0)
    changed = vol.update_metadata("/api-id", mode=0o4755)
    assert (changed.uid, changed.gid) == (0, 0), changed
    for name in ("root-id", "api-id"):
        st = os.stat(os.path.join(host_dir(vol.volume_id), name))
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o4755), f"precondition: {name} is set-uid root on disk"
    if RUNTIME == "runc":  # gVisor's mount table does not show the flags of its gofer mounts
        assert {"nosuid", "nodev"} <= set(mount_options(runner, "/mnt/v"))
    # Control: the same binary set-uid root in the sandbox's own filesystem does run as root, so the refusals
    # below are the volume's nosuid and nothing else.
    root_run(runner, f"cp {ID_BINARY} /usr/local/bin/ctl-id && chmod 4755 /usr/local/bin/ctl-id")
    control = runner.commands.run("/usr/local/bin/ctl-id -u").stdout.strip()
    if RUNTIME == "runsc" and control != "0":
        pytest.skip(f"set-uid runs as {control} in this runsc sandbox's own filesystem too: nosuid cannot be seen")
    assert control == "0", "control: set-uid works here"
    for path in ("/mnt/v/root-id", "/mnt/v/api-id"):
        r = runner.commands.run(f"{path} -u")
        assert r.stdout.strip() == "1000", f"{path} from a volume ran as uid {r.stdout.strip()}"
    # And in the sandbox that wrote it.
    assert writer.commands.run("/vol/root-id -u").stdout.strip() == "1000"


def test_device_nodes_in_a_volume_open_nothing(volumes, sandboxes):
    vol = volumes("dev")
    sbx = sandboxes.create(volume_mounts={"/vol": vol})
    # Root inside cannot make one (no CAP_MKNOD under runc; gVisor makes them only in its own tmpfs).
    r = root_run(sbx, "mknod /vol/null c 1 3; mknod /vol/loop b 7 0; ls -A /vol; echo end")
    assert r.stdout.split() == ["end"], f"root made device nodes in a volume: {r.stdout}"
    # One that got there anyway (the host's root makes it here, with /dev/zero's numbers: a device the sandbox's
    # device rules allow, so only the mount's nodev stands between the sandbox and it).
    os.mknod(os.path.join(host_dir(vol.volume_id), "zero"), 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    probe = (
        "python3 -c \"import sys\nfor p in sys.argv[1:]:\n"
        "    try:\n        print(p, len(open(p, 'rb').read(4)))\n"
        "    except OSError as e:\n        print(p, 'errno', e.errno)\" /dev/zero /vol/zero"
    )
    for who in ("root", "user"):
        r = root_run(sbx, probe) if who == "root" else sbx.commands.run(probe)
        lines = r.stdout.strip().splitlines()
        assert lines[0] == "/dev/zero 4", f"control: the sandbox's own /dev/zero ({who}): {r.stdout} {r.stderr}"
        assert lines[1].startswith("/vol/zero errno"), f"a device node in a volume opened ({who}): {lines}"
    if RUNTIME == "runc":
        assert {"nosuid", "nodev"} <= set(mount_options(sbx, "/vol"))


def test_files_a_sandbox_leaves_in_a_volume_are_out_of_host_users_reach(volumes, sandboxes):
    vol = volumes("hostside")
    sbx = sandboxes.create(volume_mounts={"/vol": vol})
    r = root_run(
        sbx,
        f"echo r > /vol/by-root && cp {ID_BINARY} /vol/root-id && chmod 4755 /vol/root-id && "
        f"mkdir /vol/open && chmod 777 /vol/open && cp {ID_BINARY} /vol/open/id && chmod 4755 /vol/open/id && echo ok",
    )
    assert r.stdout.strip() == "ok", (r.stdout, r.stderr)
    sbx.commands.run("echo u > /vol/by-user")
    here = host_dir(vol.volume_id)
    # Stored unshifted (the design): the owners the sandbox saw, so root's set-uid file is host root's.
    owners = {n: os.stat(os.path.join(here, n)).st_uid for n in ("by-root", "by-user", "root-id")}
    assert owners == {"by-root": 0, "by-user": 1000, "root-id": 0}, owners
    st = os.stat(os.path.join(here, "open", "id"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o4755), "precondition: a host-root set-uid file"
    # What keeps host users from it: the volumes directory is root's alone.
    top = os.stat(os.path.join(DATA_DIR, "volumes"))
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (0, 0o700), oct(top.st_mode)
    control = as_nobody(ID_BINARY, "-u")
    assert control.stdout.strip() == "65534", f"control: setpriv runs as nobody: {control}"
    for argv in ([f"{here}/open/id", "-u"], [f"{here}/root-id", "-u"], ["ls", here], ["cat", f"{here}/by-root"]):
        r = as_nobody(*argv)
        assert r.returncode != 0 and "Permission denied" in r.stderr, f"{argv} as nobody: {r}"
        assert r.stdout.strip() != "0"
    # Nor through the sandbox's own view of it (a process of the sandbox, seen from the host).
    if RUNTIME == "runc":
        state = subprocess.run(
            ["runc", "--root", os.path.join(DATA_DIR, "node", "oci"), "state", sbx.sandbox_id],
            capture_output=True,
            text=True,
            check=True,
        )
        pid = json.loads(state.stdout)["pid"]
        for argv in ([f"/proc/{pid}/root/vol/open/id", "-u"], ["ls", f"/proc/{pid}/root/vol"]):
            r = as_nobody(*argv)
            assert r.returncode != 0 and "Permission denied" in r.stderr, f"{argv} as nobody: {r}"


RESERVED_PATHS = [
    "/proc",
    "/proc/self",
    "/proc/sys/kernel",
    "/sys",
    "/sys/fs/cgroup",
    "/dev",
    "/dev/shm",
    "/dev/pts",
    "/.soulbox",
    "/.soulbox/envd",
    "/run/soulbox",
    "/run/soulbox/x",
]
MALFORMED_PATHS = ["/", "", "relative", "/a/../proc", "/a/./b", "//proc", "/proc/", "/data/", "/x\u0000y"]


def test_mount_paths_over_the_system_are_refused_and_leave_nothing(api, volumes, sandboxes):
    vol = volumes("reserved")
    sandboxes_dir = os.path.join(DATA_DIR, "node", "sandboxes")
    dirs_before = set(os.listdir(sandboxes_dir))
    before = {s["sandboxID"] for s in api.get("/v2/sandboxes").json()}
    body = {"templateID": "base", "timeout": 60, "metadata": {"sec-run": RUN_ID}}
    for path in RESERVED_PATHS + MALFORMED_PATHS:
        for route in ("/v2/sandboxes", "/sandboxes"):
            r = api.post(route, json={**body, "volumeMounts": [{"name": vol.name, "path": path}]})
            message = e2b_error(r, 400)
            assert "volume mount path" in message, f"{path!r}: {message}"
        # Next to a good mount too: the whole create is refused.
        mounts = [{"name": vol.name, "path": "/data"}, {"name": vol.name, "path": path}]
        e2b_error(api.post("/v2/sandboxes", json={**body, "volumeMounts": mounts}), 400)
    for path in ("/proc", "/.soulbox"):
        with pytest.raises(Exception):
            sandboxes.create(volume_mounts={path: vol}, timeout=60)
    assert {s["sandboxID"] for s in api.get("/v2/sandboxes").json()} == before, "a refused create left a sandbox"
    assert set(os.listdir(sandboxes_dir)) <= dirs_before, "a refused create left a sandbox directory"
    assert os.listdir(host_dir(vol.volume_id)) == [], "a refused create wrote into the volume"


# Links root plants in a sandbox that is then snapshotted: a later create mounting a volume at the link's path.
PLANTED_LINKS = {"/agent": "/.soulbox", "/procfs": "/proc", "/devices": "/dev", "/sysfs": "/sys"}


def volume_mount_points(sbx, marker: str) -> list:
    """The sandbox's mount points that show the volume (its marker file at their top)."""
    script = "awk '{print $5}' /proc/self/mountinfo | while read -r m; do test -f \"$m/%s\" && echo \"$m\"; done" % marker
    return root_run(sbx, script).stdout.split()


def test_a_mount_path_through_a_planted_link_cannot_cover_the_system(api, volumes, sandboxes):
    vol = volumes("linked")
    marker = f"marker-{RUN_ID}"
    vol.write_file(f"/{marker}", "volume")
    source = sandboxes.create()
    links = " && ".join(f"ln -s {target} {link}" for link, target in PLANTED_LINKS.items())
    assert root_run(source, f"{links} && echo ok").stdout.strip() == "ok"
    name = f"sec-linked-{RUN_ID}"
    r = api.post(f"/sandboxes/{source.sandbox_id}/snapshots", json={"name": name})
    assert r.status_code == 201, r.text
    snapshot = r.json()["snapshotID"]
    try:
        before = {s["sandboxID"] for s in api.get("/v2/sandboxes").json()}
        body = {"templateID": snapshot, "timeout": 120, "metadata": {"sec-run": RUN_ID}}
        for link, target in PLANTED_LINKS.items():
            r = api.post("/v2/sandboxes", json={**body, "volumeMounts": [{"name": vol.name, "path": link}]})
            if r.status_code == 201:
                sandboxes.created.append(r.json()["sandboxID"])
            message = e2b_error(r, 400)
            assert link in message and "symbolic link" in message, f"{link} -> {target}: {message}"
        assert {s["sandboxID"] for s in api.get("/v2/sandboxes").json()} == before, "a refused create left a sandbox"
        # Control: the snapshot mounts the volume at a path without a link, where it shows.
        sbx = sandboxes.create(template=snapshot, volume_mounts={"/plain": vol}, timeout=120)
        assert volume_mount_points(sbx, marker) == ["/plain"]
        out = root_run(sbx, "test -x /.soulbox/envd && echo envd; head -c 9 /proc/meminfo; echo").stdout
        assert out.split() == ["envd", "MemTotal:"], out
        sbx.kill()
    finally:
        api.delete(f"/templates/{name}%3Adefault")
