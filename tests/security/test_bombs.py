"""Fork and memory bombs as root inside one sandbox leave a neighbour and the server responsive, and the bombed
sandbox can still be killed cleanly. The defences are the sandbox's cgroup limits (pids, memory with no swap,
CPU quota) and envd's own OOM score (user code dies first); remove a limit and the host, not the sandbox, runs
out of pids or memory.
"""

import glob
import time

import httpx

from conftest import API_URL, PREFIX, root_run, runc_only, wait_until

FORK_BOMB = "bash -c ':(){ :|:& };:' >/dev/null 2>&1"
# Grows by 64 MiB steps until the kernel kills it; its last line says how far it got.
MEMORY_BOMB = (
    "python3 -c \"\n"
    "import sys\n"
    "hold = []\n"
    "while True:\n"
    "    hold.append(bytearray(64 << 20))\n"
    "    print(len(hold) * 64, flush=True)\n"
    "\""
)


def pids_cgroup(sandbox_id: str) -> str:
    """The sandbox's pids cgroup directory on this host (cgroup v1 or v2)."""
    found = glob.glob(f"/sys/fs/cgroup/pids/soulbox_{PREFIX}/{sandbox_id}") + glob.glob(
        f"/sys/fs/cgroup/soulbox_{PREFIX}/{sandbox_id}"
    )
    assert found, f"no pids cgroup for {sandbox_id}"
    return found[0]


def counter(path: str, key: str) -> int:
    """The value of `key` in a cgroup file of "key value" lines (0 when absent)."""
    for line in read(path).splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return 0


def times_a_limit_stopped_it(sandbox_id: str) -> int:
    """Forks refused at the sandbox's pids limit plus processes its own OOM killer ended (cgroup v1 and v2).
    Both counters only grow, so a wait on them does not depend on catching the bomb at its peak."""
    pids = pids_cgroup(sandbox_id)
    v1_memory = f"/sys/fs/cgroup/memory/soulbox_{PREFIX}/{sandbox_id}"
    if glob.glob(v1_memory):
        oom_kills = counter(f"{v1_memory}/memory.oom_control", "oom_kill")
    else:
        oom_kills = counter(f"{pids}/memory.events", "oom_kill")
    return counter(f"{pids}/pids.events", "max") + oom_kills


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def neighbour_answers(sbx, timeout: float = 60) -> float:
    """Seconds a trivial command takes in `sbx` (fails past `timeout`)."""
    t0 = time.monotonic()
    r = root_run(sbx, "echo alive", timeout=timeout)
    assert r.stdout.strip() == "alive", r
    return time.monotonic() - t0


@runc_only("gVisor has no OOM killer of its own: the host kills the sandbox's Sentry, so the whole sandbox ends (neighbours unaffected)")
def test_memory_bomb_is_killed_inside_its_sandbox(sandboxes):
    bomber, neighbour = sandboxes.create(), sandboxes.create()
    r = root_run(bomber, MEMORY_BOMB, timeout=120)
    # Killed by the sandbox's own OOM killer, before the host's memory was at stake.
    assert r.exit_code != 0, r
    reached_mib = int((r.stdout.strip().splitlines() or ["0"])[-1])
    assert reached_mib < 1024, f"grew to {reached_mib} MiB in a 512 MiB sandbox"
    # Its agent survived the OOM (user code dies first), and the neighbour never noticed.
    assert root_run(bomber, "echo alive").stdout.strip() == "alive"
    neighbour_answers(neighbour)


def test_fork_bomb_leaves_the_neighbour_and_the_server_responsive(sandboxes, api):
    bomber, neighbour = sandboxes.create(), sandboxes.create()
    bomber.commands.run(FORK_BOMB, user="root", background=True)
    # Seen from the host: the sandbox has its own pids limit, far below the host's, and the bomb runs into its
    # limits: forks refused at the pids limit, or, when its ~2,700 shells fill the 512 MiB first (which one binds
    # first depends on how fast it grows on a loaded host), its own OOM killer.
    cgroup = pids_cgroup(bomber.sandbox_id)
    limit = read(f"{cgroup}/pids.max")
    assert limit != "max" and int(limit) <= 65536, f"pids.max is {limit}"
    wait_until(lambda: times_a_limit_stopped_it(bomber.sandbox_id) > 0, 120, "the bomb to run into its limits")
    if glob.glob(f"{cgroup}/pids.peak"):
        assert int(read(f"{cgroup}/pids.peak")) <= int(limit), "the bomb went past its pids limit"
    # Meanwhile the rest of the machine keeps working.
    took = [neighbour_answers(neighbour) for _ in range(3)]
    assert max(took) < 30, took
    with httpx.Client(base_url=API_URL, timeout=30, trust_env=False) as anon:
        assert anon.get("/health").status_code == 200
    assert api.get(f"/sandboxes/{neighbour.sandbox_id}").status_code == 200
    # The bombed sandbox is killed cleanly, every one of its processes with it.
    r = api.delete(f"/sandboxes/{bomber.sandbox_id}")
    assert r.status_code == 204, r.text
    sandboxes.created.remove(bomber.sandbox_id)
    assert api.get(f"/sandboxes/{bomber.sandbox_id}").status_code == 404
    neighbour_answers(neighbour)
