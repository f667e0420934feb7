"""Two things issue 15 added inside sandboxes, attacked by root inside:

- envd making an upload's missing parent folders as root for the user (E2B's behaviour): a link that root planted
  in the user's home (`/home/user/x -> /etc`) must not steer that root walk — nothing appears under the link's
  target, owned by root or writable by the user (crates/soulbox-envd/src/http/files/parents.rs).
- the read-only proc view mounted over /proc/meminfo, cpuinfo, stat, uptime, ... (runc; gVisor shows its own):
  root cannot write it, cannot unmount it, and each sandbox's view is its own (its memory limit, its boot id), also
  while its neighbour exhausts its open-file budget of the view.
"""

from __future__ import annotations

import pytest
from e2b import Template

from conftest import KEY_A, RUN_ID, RUNTIME, _client, root_run, runc_only, wait_until

pytestmark = pytest.mark.timeout(300)

# --- envd: missing parents made for the user ------------------------------------------------------------------

# (link planted by root in the user's home, its target, the file the user then writes through it)
PLANTED = [
    ("/home/user/x", "/etc", "/home/user/x/newdir/file"),
    ("/home/user/y", "/etc/cron.d", "/home/user/y/a/b/file"),
    ("/home/user/z", "../../root", "/home/user/z/newdir/file"),
    ("/home/user/w", "/", "/home/user/w/etc/sudoers.d/newdir/file"),
    ("/home/user/deep/v", "/usr/lib", "/home/user/deep/v/newdir/file"),
]
if RUNTIME == "runsc":
    # This runsc answers EINVAL for paths through a link to / (and then for lookups in /etc as well), so what
    # that link would steer cannot be told apart there; runc checks it.
    PLANTED = [p for p in PLANTED if p[1] != "/"]


def test_an_upload_through_a_planted_link_makes_nothing_outside(sandboxes):
    sbx = sandboxes.create()
    links = " && ".join(f"mkdir -p $(dirname {link}) && ln -s {target} {link}" for link, target, _ in PLANTED)
    r = root_run(sbx, f"{links} && touch /tmp/before-upload && echo ok")
    assert r.stdout.strip() == "ok", (r.stdout, r.stderr)
    # Precondition: the user may not write where the links point (else writing there is no attack).
    r = sbx.commands.run("; ".join(f"test -w {link}/. && echo {link}" for link, _, _ in PLANTED) + "; echo end")
    assert r.stdout.split() == ["end"], f"the user may write there: {r.stdout}"
    # Control: a missing parent under a root-owned directory is made for the user (E2B's behaviour), so the
    # refusals below are about the links, not about the feature being off.
    sbx.files.write("/opt/made-for-user/file", "ok")
    sbx.files.write("/home/user/mine.txt", "mine")
    r = root_run(sbx, "find /opt/made-for-user -maxdepth 0 -printf '%u %m'")
    assert r.stdout.strip() == "user 755", r.stdout
    attempts = []
    for _, _, path in PLANTED:
        attempts += [
            ("write", path, lambda p=path: sbx.files.write(p, "pwned")),
            ("write_files", path, lambda p=path: sbx.files.write_files([{"path": p.replace("file", "multi"), "data": "x"}])),
            ("make_dir", path, lambda p=path: sbx.files.make_dir(p.rsplit("/", 1)[0])),
            ("rename", path, lambda p=path: sbx.files.rename("/home/user/mine.txt", p.replace("file", "moved"))),
        ]
    done = []
    for what, path, attempt in attempts:
        try:
            attempt()
            done.append(f"{what} {path}")
        except Exception as e:  # noqa: BLE001 - every refusal must say it is one
            if "permission" not in str(e).lower():
                done.append(f"{what} {path}: not a permission refusal: {e}")
    assert not done, "through planted links:\n" + "\n".join(done)
    # Nothing new anywhere outside the user's home (the links' targets included: a new entry changes its
    # directory too), nothing owned by the user outside it but the control.
    r = root_run(
        sbx,
        "find / -xdev -newer /tmp/before-upload -not -path '/home/user*' -not -path '/tmp*' "
        "-not -path '/opt' -not -path '/opt/made-for-user*' -print 2>/dev/null; "
        "find /etc /root /usr -xdev -user user -print 2>/dev/null; echo end",
    )
    assert r.stdout.split() == ["end"], f"an upload through a planted link left:\n{r.stdout}"


# --- the proc view --------------------------------------------------------------------------------------------

VIEW = ["/proc/meminfo", "/proc/cpuinfo", "/proc/stat", "/proc/uptime", "/proc/swaps", "/sys/devices/system/cpu/online",
        "/proc/sys/kernel/random/boot_id"]
BIGGER_MB = 768


def mem_total_kb(sbx) -> int:
    r = sbx.commands.run("grep MemTotal: /proc/meminfo")
    return int(r.stdout.split()[1])


def boot_id(sbx) -> str:
    return sbx.commands.run("cat /proc/sys/kernel/random/boot_id").stdout.strip()


@pytest.fixture(scope="module")
def bigger_template():
    """A template of team A like `base` but with more memory than base's own limit."""
    with _client(KEY_A) as a:
        base = next(t for t in a.get("/templates").json() if "base" in (t.get("aliases") or []) or t["templateID"] == "base")
    memory = BIGGER_MB if base["memoryMB"] != BIGGER_MB else BIGGER_MB + 256
    name = f"sec-mem-{RUN_ID}"
    Template.build(Template().from_template("base").run_cmd("true"), name, memory_mb=memory, api_key=KEY_A)
    yield {"name": name, "memory": memory, "base_memory": base["memoryMB"]}
    with _client(KEY_A) as a:
        a.delete(f"/templates/{name}")


WRITE_PROBE = r"""
import os, sys
for path in sys.argv[1:]:
    for how in ("open", "chmod", "truncate"):
        try:
            if how == "open":
                with open(path, "w") as f:
                    f.write("MemTotal: 1 kB\n")
            elif how == "chmod":
                os.chmod(path, 0o666)
            else:
                os.truncate(path, 0)
            print("CHANGED", how, path)
        except OSError as e:
            print("refused", how, path, e.errno)
"""


def test_root_cannot_write_or_unmount_its_proc_view(sandboxes):
    # gVisor renders /proc in its own kernel (root's chmod there changes that sandbox's view only); what the node
    # gives a runsc sandbox is its boot id, a file bound from the sandbox's directory.
    view = VIEW if RUNTIME == "runc" else ["/proc/sys/kernel/random/boot_id"]
    sbx = sandboxes.create()
    neighbour = sandboxes.create()
    before = (mem_total_kb(sbx), boot_id(sbx), mem_total_kb(neighbour), boot_id(neighbour))
    sbx.files.write("/tmp/write_probe.py", WRITE_PROBE, user="root")
    r = root_run(sbx, "python3 /tmp/write_probe.py " + " ".join(view))
    assert "CHANGED" not in r.stdout and r.stdout.count("refused") == 3 * len(view), r.stdout
    # Unmount, lazily unmount, cover: refused (seccomp under runc; CAP_SYS_ADMIN under both).
    attacks = []
    for path in view:
        attacks += [f"umount {path}", f"umount -l {path}", f"mount --bind /tmp/write_probe.py {path}"]
    r = root_run(sbx, "; ".join(f"{a} 2>/dev/null && echo 'DONE {a}'" for a in attacks) + "; echo end")
    assert r.stdout.split() == ["end"], f"root changed its proc view: {r.stdout}"
    after = (mem_total_kb(sbx), boot_id(sbx), mem_total_kb(neighbour), boot_id(neighbour))
    assert after == before, (before, after)


@runc_only("gVisor renders /proc itself (the view serves runc sandboxes; runsc gets only its own boot id bound)")
def test_each_sandbox_sees_its_own_limits_and_boot_not_a_neighbours(sandboxes, bigger_template):
    small = sandboxes.create()  # base
    big = sandboxes.create(template=bigger_template["name"])
    assert mem_total_kb(small) == bigger_template["base_memory"] * 1024
    assert mem_total_kb(big) == bigger_template["memory"] * 1024
    with open("/proc/sys/kernel/random/boot_id") as f:
        host = f.read().strip()
    ids = {boot_id(small), boot_id(big), host}
    assert len(ids) == 3, f"boot ids shared: {ids}"
    # The view is served per sandbox: exhausting one sandbox's budget of open view files (1024) changes
    # nothing for its neighbour.
    holder = (
        "import resource, time\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "held, err = [], None\n"
        "for _ in range(1100):\n"
        "    try:\n        held.append(open('/proc/meminfo'))\n"
        "    except OSError as e:\n        err = e.errno\n        break\n"
        "open('/tmp/held', 'w').write(f'{len(held)} {err}')\n"
        "time.sleep(600)\n"
    )
    small.files.write("/tmp/holder.py", holder, user="root")
    handle = small.commands.run("python3 /tmp/holder.py", user="root", background=True)
    try:
        held = wait_until(lambda: small.files.exists("/tmp/held") and small.files.read("/tmp/held"), 60, "the holder")
        count, err = held.split()
        # ENFILE (23) is the view's own refusal (a process's fd limit would be EMFILE).
        assert int(count) <= 1024 and err == "23", f"one sandbox held {count} view files (error {err})"
        assert mem_total_kb(big) == bigger_template["memory"] * 1024, "the neighbour's view broke"
        assert boot_id(big) in ids
    finally:
        handle.kill()
    assert mem_total_kb(small) == bigger_template["base_memory"] * 1024, "the view recovers once the files close"
