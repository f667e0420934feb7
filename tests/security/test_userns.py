"""Issue 11, item 1: every sandbox runs in its own user namespace.

Root inside is an unprivileged host uid of the sandbox's own range (65536 ids), never host 0: whatever of the host
root inside can still reach (a host file bound into the sandbox, a host file envd got as its stdout) it cannot
write. File owners inside look as they always did, also for files written and read through envd.

Each attack fails with `user_namespaces = false` in the server's config.

Where the kernel lacks overlayfs on idmapped layers (or with `userns_mode = "shared"`) every sandbox shares one
range instead (Docker's userns-remap): still never host 0, but not disjoint; the range test asserts that mode's
property then.
"""

import re

from conftest import SERVER_LOG, root_run, runc_only

# Run inside the sandbox as root: every host file root can reach, and whether it can open it for writing. Opening
# is the attack; nothing is written.
PROBE_HOST_FILES = r"""
import os, stat
virtual = {"overlay", "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs", "nsfs"}
candidates = []
for line in open("/proc/self/mountinfo"):
    fields, rest = line.split(" - ", 1)
    mount_point, fstype = fields.split()[4], rest.split()[0]
    if fstype not in virtual and os.path.isfile(mount_point):
        candidates.append(mount_point)  # a host file bound into the sandbox
for fd in ("1", "2"):
    path = "/proc/1/fd/" + fd  # what envd (PID 1) writes its log to
    try:
        if stat.S_ISREG(os.stat(path).st_mode):
            candidates.append(path)
    except OSError:
        pass
for path in candidates:
    try:
        with open(path, "ab") as f:
            f.write(b"")
        print("WRITABLE", path)
    except OSError as e:
        print("DENIED", path, e.errno)
"""


def _map(sbx, which: str):
    r = root_run(sbx, f"cat /proc/self/{which}")
    assert r.exit_code == 0, r
    return [line.split() for line in r.stdout.strip().splitlines()]


@runc_only("no user namespaces of ours: the Sentry is the sandbox's kernel and runs unprivileged on the host (README)")
def test_uid_and_gid_maps_are_an_unprivileged_range_not_the_host(victim):
    for which in ("uid_map", "gid_map"):
        rows = _map(victim, which)
        assert rows != [["0", "0", "4294967295"]], f"{which}: root inside is host root"
        assert len(rows) == 1, rows
        inside, host, size = (int(v) for v in rows[0])
        assert inside == 0 and size == 65536, rows
        assert host >= 65536, f"{which}: maps to the host's system ids: {rows}"


def _userns_mode() -> str:
    """The mode the server's runtime chose at open, from its log line (`userns_mode=...`, maybe with colours)."""
    with open(SERVER_LOG, errors="replace") as f:
        found = re.findall(r'userns_mode(?:\x1b\[[0-9;]*m|[=" ])*(shared|per-sandbox|off)', f.read())
    assert found, f"the server log {SERVER_LOG} names no user namespace mode"
    return found[-1]


@runc_only("no user namespaces of ours: the Sentry is the sandbox's kernel and runs unprivileged on the host (README)")
def test_two_sandboxes_get_disjoint_ranges(victim, sandboxes):
    other = sandboxes.create()
    a, b = int(_map(victim, "uid_map")[0][1]), int(_map(other, "uid_map")[0][1])
    if _userns_mode() == "shared":
        # the shared mode's property: one unprivileged range for every sandbox (ranges are not disjoint there)
        assert a == b and a >= 65536, f"shared mode: ranges {a} and {b}"
        return
    assert abs(a - b) >= 65536, f"ranges overlap: {a} and {b}"


def test_root_inside_cannot_write_host_files_it_can_reach(victim):
    r = root_run(victim, f"python3 -c '{PROBE_HOST_FILES}'")
    assert r.exit_code == 0, r
    lines = r.stdout.strip().splitlines()
    # envd's own binary is always bound from the host: the probe cannot come back empty
    assert any(line.endswith(" /.soulbox/envd") or " /.soulbox/envd " in line for line in lines), lines
    writable = [line for line in lines if line.startswith("WRITABLE")]
    assert not writable, f"root inside can write host files: {writable}"


@runc_only("no user namespaces of ours: the Sentry is the sandbox's kernel and runs unprivileged on the host (README)")
def test_files_written_through_envd_keep_their_owners(victim):
    victim.files.write("/tmp/owned-by-root", "r", user="root")
    victim.files.write("/home/user/owned-by-user", "u", user="user")
    victim.commands.run("echo c > /home/user/made-by-a-command")
    for path, owner in (
        ("/tmp/owned-by-root", "root"),
        ("/home/user/owned-by-user", "user"),
        ("/home/user/made-by-a-command", "user"),
    ):
        info = victim.files.get_info(path)
        assert (info.owner, info.group) == (owner, owner), (path, info)
    r = root_run(victim, "stat -c '%u:%g' /tmp/owned-by-root /home/user/owned-by-user")
    assert r.stdout.split() == ["0:0", "1000:1000"], r
    assert victim.files.read("/home/user/owned-by-user", user="user") == "u"
    assert victim.files.read("/home/user/made-by-a-command") == "c\n"
    # the default user cannot overwrite root's file
    r = victim.commands.run("echo x > /tmp/owned-by-root 2>&1 || echo denied")
    assert "denied" in r.stdout, r
