"""The strict default profile (issue 11, Build item 2): attacked as root inside a sandbox through the official SDK.

Seccomp denials (escape syscalls, rare socket families, 32-bit socketcall), no_new_privs for root's processes,
masked and read-only /proc and /sys, no host file writable from inside (/etc/hosts & co., envd's stdout/stderr),
disk and inode exhaustion staying inside, and what the host keeps of a sandbox (records and database 0600,
nosuid/nodev mounts). Each test fails when its defence is removed.
"""

from __future__ import annotations

import json
import os
import stat

from conftest import DATA_DIR, root_run, runc_only, wait_until

HERE = os.path.dirname(__file__)
PROBE = "/tmp/profile_probe.py"
MIB = 1 << 20


def run_as(sbx, user: str, cmd: str, **kwargs):
    from e2b import CommandExitException

    try:
        return sbx.commands.run(cmd, user=user, **kwargs)
    except CommandExitException as e:
        return e


def probe(sbx, what: str, user: str = "root") -> dict:
    with open(os.path.join(HERE, "profile_probe.py"), "rb") as f:
        sbx.files.write(PROBE, f.read(), user="root")
    r = run_as(sbx, user, f"python3 {PROBE} {what}")
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def sandbox_dir(sbx) -> str:
    return os.path.join(DATA_DIR, "node", "sandboxes", sbx.sandbox_id)


def host_files(root: str) -> dict:
    """Regular files below a sandbox's directory on the host, without descending into its mounts (its rootfs and
    disk), with the bytes they occupy."""
    dev = os.stat(root).st_dev
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.lstat(os.path.join(dirpath, d)).st_dev == dev]
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                out[os.path.relpath(os.path.join(dirpath, name), root)] = st.st_blocks * 512
    return out


def outside_the_disk(root: str) -> int:
    """Bytes a sandbox holds on the host outside its own disk image."""
    return sum(b for name, b in host_files(root).items() if name != "disk.img")


# ---------------------------------------------------------------------------------------------------------------
# seccomp


ESCAPE_SYSCALLS = [
    "keyctl", "add_key", "request_key", "bpf", "userfaultfd", "perf_event_open", "init_module", "finit_module",
    "kexec_load", "kexec_file_load", "mount", "fsopen", "open_tree", "move_mount", "pivot_root", "unshare_user",
    "clone_newuser", "setns", "io_uring_setup", "ptrace_pid1", "process_vm_readv", "name_to_handle_at",
    "open_by_handle_at", "iopl", "personality_no_aslr",
]


@runc_only("gVisor's Sentry serves these syscalls itself (most unimplemented or refused; namespaces it makes are its own), under gVisor's own host seccomp filter")
def test_profile_seccomp_denies_escape_syscalls_to_root(victim):
    got = probe(victim, "syscalls")
    wrong = {name: got.get(name) for name in ESCAPE_SYSCALLS if got.get(name) != "EPERM"}
    assert not wrong, f"expected EPERM from the seccomp filter, got {wrong}"


@runc_only("mounts and namespaces made by root inside exist only in the Sentry, not in the host kernel")
def test_profile_unshare_dash_u_and_mount_fail_as_root(victim):
    r = root_run(victim, "unshare -U true; echo rc=$?; mount -t tmpfs none /mnt; echo rc=$?")
    out = r.stdout + r.stderr
    assert "rc=0" not in out, out


@runc_only("the Sentry implements only Unix, IPv4/6 and netlink sockets itself")
def test_profile_rare_socket_families_are_refused(victim):
    got = probe(victim, "sockets")
    for name in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"]:
        assert got["socket " + name] == "ok", (name, got)
    refused = {k: v for k, v in got.items() if k.startswith("socket ") and k.split()[1] not in
               ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK")}
    wrong = {k: v for k, v in refused.items() if v != "EAFNOSUPPORT"}
    assert not wrong, f"expected EAFNOSUPPORT, got {wrong}"
    assert got["socketpair AF_UNIX"] == "ok"
    assert got["socketpair AF_INET"] == "EAFNOSUPPORT" and got["socketpair AF_VSOCK"] == "EAFNOSUPPORT", got


@runc_only("gVisor runs no 32-bit x86 code and has no vsock")
def test_profile_a_32_bit_process_cannot_open_vsock_through_socketcall(victim):
    """On 32-bit x86 the family is behind socketcall's pointer, where no filter sees it: 32-bit syscalls are
    not allowed at all. The program exits with the socket's fd number if it got one."""
    probe(victim, "sockets")  # uploads the probe
    root_run(victim, f"python3 {PROBE} i386 /tmp/vsock32")
    r = root_run(victim, "/tmp/vsock32; echo rc=$?")
    rc = int((r.stdout + r.stderr).rsplit("rc=", 1)[1].split()[0])
    # a socket would be fd 3..127; killed by seccomp = 128 + SIGSYS; an error = 256 - errno
    assert not 0 <= rc < 128, f"socketcall(AF_VSOCK) of a 32-bit process returned {rc}: {r.stdout} {r.stderr}"


def test_profile_ptrace_of_pid1_fails_for_root_and_user(victim):
    assert probe(victim, "ptrace")["ptrace_pid1"] == "EPERM"
    assert probe(victim, "ptrace", user="user")["ptrace_pid1"] == "EPERM"


# ---------------------------------------------------------------------------------------------------------------
# no_new_privs


@runc_only("envd still sets it, but gVisor's /proc/<pid>/status does not report NoNewPrivs")
def test_profile_no_new_privs_for_root_processes_and_sudo_for_user(victim):
    nnp = "sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status"
    assert root_run(victim, nnp).stdout.strip() == "1"
    assert run_as(victim, "user", nnp).stdout.strip() == "0"
    r = run_as(victim, "user", "sudo -n id -u")
    assert r.exit_code == 0 and r.stdout.strip() == "0", (r.stdout, r.stderr)
    # a chain root started cannot climb back through a setuid binary after dropping to a user
    r = root_run(victim, "su user -s /bin/sh -c 'sudo -n id -u'")
    assert r.exit_code != 0 and r.stdout.strip() != "0", (r.stdout, r.stderr)


# ---------------------------------------------------------------------------------------------------------------
# /proc and /sys

MASKED_FILES = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/interrupts",
                "/proc/latency_stats"]
MASKED_DIRS = ["/proc/acpi", "/proc/scsi", "/sys/firmware"]
# (sysctls scoped to the sandbox's own namespaces, so a write that got through would change nothing outside)
READ_ONLY = ["/proc/sys/kernel/hostname", "/proc/sys/kernel/domainname", "/proc/sys/net/ipv4/ip_forward"]
# (never written by the test: a write that got through would act on the host — they must be read-only mounts)
READ_ONLY_MOUNTS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys"]

KERNEL_SURFACES = """
import errno, json, os, stat
out = {}
for p in %r:
    try:
        st = os.stat(p)
        with open(p, "rb") as f:
            data = f.read(4096)
        out[p] = "masked" if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3 and not data else "readable %%d bytes" %% len(data)
    except FileNotFoundError:
        out[p] = "absent"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
for p in %r:
    try:
        out[p] = "masked" if os.listdir(p) == [] else "listed %%d entries" %% len(os.listdir(p))
    except FileNotFoundError:
        out[p] = "absent"
for p in %r + ["/sys/kernel/soulbox-probe", "/sys/fs/cgroup/x"]:
    try:
        with open(p, "w") as f:
            f.write("1")
        out[p] = "written"
    except OSError as e:
        out[p] = errno.errorcode[e.errno]
print(json.dumps(out))
""" % (MASKED_FILES, MASKED_DIRS, READ_ONLY)


@runc_only("gVisor's /proc and /sys are its own and lack these host files entirely")
def test_profile_proc_and_sys_are_masked_and_read_only(victim):
    victim.files.write("/tmp/surfaces.py", KERNEL_SURFACES, user="root")
    r = root_run(victim, "python3 /tmp/surfaces.py")
    got = json.loads(r.stdout)
    for p in MASKED_FILES + MASKED_DIRS:
        assert got[p] in ("masked", "absent"), (p, got[p])
    assert got["/proc/interrupts"] == "masked", got  # (kcore, sched_debug: absent on kernels without them)
    for p in READ_ONLY + ["/sys/kernel/soulbox-probe", "/sys/fs/cgroup/x"]:
        assert got[p] in ("EROFS", "EACCES", "EPERM", "ENOENT"), (p, got[p])
    assert got["/proc/sys/kernel/hostname"] == "EROFS", got
    mounts = {line.split()[4]: line.split()[5].split(",") for line in root_run(victim, "cat /proc/self/mountinfo").stdout.splitlines()}
    present = root_run(victim, "for p in %s; do test -e $p && echo $p; done" % " ".join(READ_ONLY_MOUNTS)).stdout.split()
    assert "/proc/sys" in present and "/sys" in present, present
    for p in present:  # (runc skips what this kernel lacks, e.g. /proc/sysrq-trigger without magic SysRq)
        assert "ro" in mounts.get(p, []), (p, mounts.get(p))


# ---------------------------------------------------------------------------------------------------------------
# host files


def test_profile_no_host_file_is_bound_writable_into_the_sandbox(victim):
    mounts = root_run(victim, "cat /proc/self/mountinfo").stdout.splitlines()
    by_target = {line.split()[4]: line for line in mounts}
    for path in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]:
        assert path not in by_target, f"{path} is a mount: {by_target.get(path)}"
    envd = by_target.get("/.soulbox/envd", "")
    assert envd and " ro," in f" {envd.split()[5]},", f"envd's bind is not read-only: {envd}"
    r = root_run(victim, "echo x >> /.soulbox/envd; echo rc=$?")
    assert "rc=0" not in r.stdout, r.stdout
    # the files are right: this sandbox's name and address
    hosts = root_run(victim, "cat /etc/hosts /etc/hostname").stdout
    assert victim.sandbox_id in hosts, hosts


def test_profile_appending_to_etc_hosts_lands_in_the_sandboxs_disk(sandboxes):
    sbx = sandboxes.create()
    root = sandbox_dir(sbx)
    before = outside_the_disk(root)
    r = root_run(sbx, "head -c 50M /dev/zero >> /etc/hosts; echo rc=$?; wc -c < /etc/hosts")
    assert "rc=0" in r.stdout, (r.stdout, r.stderr)
    assert int(r.stdout.split()[-1]) >= 50 * MIB, r.stdout
    grown = outside_the_disk(root) - before
    assert grown < 2 * MIB, f"a host file grew by {grown} bytes: {host_files(root)}"
    # past the sandbox's disk it stops: the server's default disk limit (server.toml) holds
    r = root_run(sbx, "head -c 300M /dev/zero >> /etc/hosts; echo rc=$?")
    assert "No space left on device" in r.stderr + r.stdout and "rc=0" not in r.stdout, (r.stdout, r.stderr)
    assert outside_the_disk(root) - before < 2 * MIB, host_files(root)


def test_profile_envds_stdout_and_stderr_cannot_grow_a_host_file(sandboxes, api):
    sbx = sandboxes.create()
    root = sandbox_dir(sbx)
    # 40 MB into envd's stdout and stderr, as root; `timeout`: the host paces what it stores, so the writer waits
    r = root_run(sbx, "for fd in 1 2; do timeout 8 head -c 20M /dev/zero > /proc/1/fd/$fd; done; echo done", timeout=60)
    assert "done" in r.stdout, (r.stdout, r.stderr)
    held = outside_the_disk(root)
    assert held < 3 * MIB, f"the sandbox holds {held} bytes on the host outside its disk: {host_files(root)}"
    # the agent still answers, and its log reads in ranges
    assert root_run(sbx, "echo alive").stdout.strip() == "alive"
    logs = api.get(f"/sandboxes/{sbx.sandbox_id}/logs", params={"limit": 5})
    assert logs.status_code == 200, logs.text
    assert len(logs.json()["logs"]) <= 5
    assert api.get(f"/sandboxes/{sbx.sandbox_id}/logs", params={"start": -1}).status_code == 400


# ---------------------------------------------------------------------------------------------------------------
# disk and inodes

FILL_INODES = """
import errno, os
os.makedirs("/var/many", exist_ok=True)
n = 0
try:
    while True:
        os.close(os.open("/var/many/f%d" % n, os.O_CREAT | os.O_WRONLY, 0o644))
        n += 1
except OSError as e:
    print(n, errno.errorcode[e.errno])
"""


def test_profile_disk_and_inode_exhaustion_stay_inside(sandboxes):
    full, neighbour = sandboxes.create(), sandboxes.create()
    full.files.write("/tmp/fill_inodes.py", FILL_INODES, user="root")
    r = root_run(full, "python3 /tmp/fill_inodes.py", timeout=120)
    count, err = r.stdout.split()
    assert err in ("ENOSPC", "EDQUOT") and int(count) > 1000, r.stdout
    r = root_run(full, "rm -rf /var/many; dd if=/dev/zero of=/var/big bs=1M count=100000 2>&1; echo rc=$?", timeout=120)
    assert "No space left on device" in r.stdout and "rc=0" not in r.stdout, r.stdout
    # its agent, a neighbour and the host keep working
    assert root_run(full, "echo alive").stdout.strip() == "alive"
    r = root_run(neighbour, "mkdir -p /var/t && for i in $(seq 100); do touch /var/t/f$i; done && "
                            "dd if=/dev/zero of=/var/t/big bs=1M count=16 2>&1; echo rc=$?")
    assert "rc=0" in r.stdout, r.stdout
    probe_file = os.path.join(DATA_DIR, "host-write-probe")
    with open(probe_file, "wb") as f:
        f.write(b"\0" * MIB)
    os.remove(probe_file)


# ---------------------------------------------------------------------------------------------------------------
# what the host keeps


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_profile_database_and_sandbox_records_are_owner_only(victim):
    for name in ["soulbox.db", "soulbox.db-wal", "soulbox.db-shm"]:
        path = os.path.join(DATA_DIR, name)
        if os.path.exists(path):
            assert mode(path) & 0o077 == 0, f"{path} is {oct(mode(path))}"
    root = sandbox_dir(victim)
    for name in ["sandbox.json", "config.json", "net.json", "sandbox.log", "sandbox.log.fifo"]:
        assert mode(os.path.join(root, name)) == 0o600, (name, oct(mode(os.path.join(root, name))))


def test_profile_host_side_mounts_are_nosuid_nodev(victim):
    root = sandbox_dir(victim)
    mounts = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, fstype = line.split(), line.split(" - ", 1)[1].split()[0]
            # (a pinned namespace, an nsfs file, holds no files: its flags mean nothing)
            if fstype != "nsfs":
                mounts[fields[4]] = fields[5].split(",")
    below = {mp: opts for mp, opts in mounts.items() if mp.startswith(DATA_DIR + "/")}
    assert os.path.join(root, "rootfs") in below, sorted(below)
    for mp, opts in below.items():
        assert "nodev" in opts, (mp, opts)
        if not mp.endswith("/rootfs"):  # the root stays suid: sudo inside needs it (data dir 0700)
            assert "nosuid" in opts, (mp, opts)


def test_profile_sandbox_logs_are_read_in_ranges(victim, api):
    lines = wait_until(lambda: api.get(f"/sandboxes/{victim.sandbox_id}/logs").json()["logs"], 30, "the first log line")
    assert any("envd listening" in entry["line"] for entry in lines), lines
    later = api.get(f"/sandboxes/{victim.sandbox_id}/logs", params={"start": 32503680000000}).json()
    assert later["logs"] == [] and later["logEntries"] == []
    one = api.get(f"/sandboxes/{victim.sandbox_id}/logs", params={"limit": 1}).json()
    assert len(one["logs"]) == 1
