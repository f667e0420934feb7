"""The booted pool (issue 18 goal 1) through the official SDK: run.sh restarts the server with
`[pool] booted = { base = 2 }` and runs this file in phases (SOULBOX_E2E_POOL_PHASE):

- `identity`: sandboxes handed out by the pool (the server log names each claim) have the create's identity and
  share nothing with each other or with earlier pool members; the pool's envd secret is dead after the claim; a
  closed network policy from the pool is closed; the pool refills after a burst.
- `before-kill` / `after-kill`: the server is killed (-9) with a full pool; after the restart nothing of the old
  pool is left (its netns, veths, sandbox directories), and none of it shows up as a user sandbox.

Network rule: sandboxes only talk to a fake outside world this file builds (a netns on 203.0.113.124/30).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re

import httpx
import pytest
from e2b import Sandbox

from conftest import RUN_ID, SERVER_LOG, wait_until
from sbtest import ENVD_PORT, outside_world

PHASE = os.environ.get("SOULBOX_E2E_POOL_PHASE")
DATA_DIR = os.environ.get("SOULBOX_E2E_DATA_DIR", "")
PREFIX = os.environ.get("SOULBOX_E2E_PREFIX", "")
STATE_FILE = os.environ.get("SOULBOX_E2E_POOL_STATE", "/tmp/soulbox-e2e-pool.json")
HOST_ADDR, OUTSIDE_ADDR = "203.0.113.125", "203.0.113.126"
SECRET_HEADER = "X-Soulbox-Envd-Secret"

pytestmark = pytest.mark.skipif(PHASE is None, reason="run by tests/e2e/run.sh with the booted pool on")


def server_log() -> str:
    with open(SERVER_LOG, errors="replace") as f:
        return f.read()


def booted_count() -> int:
    return server_log().count("booted a sandbox for the pool")


def from_pool(sandbox_id: str) -> bool:
    return re.search(rf"claimed from the booted pool sandbox={sandbox_id}\b", server_log()) is not None


def listed(api) -> set[str]:
    r = api.get("/v2/sandboxes", params={"state": "running,paused"})
    assert r.status_code == 200, r.text
    return {s["sandboxID"] for s in r.json()}


def sandboxes_dir() -> str:
    return os.path.join(DATA_DIR, "node", "sandboxes")


def pooled_records() -> dict[str, dict]:
    """id -> {secret, ip} of every sandbox the runtime holds in its pool now (its records on disk, as root)."""
    out = {}
    for sid in os.listdir(sandboxes_dir()):
        try:
            with open(os.path.join(sandboxes_dir(), sid, "sandbox.json")) as f:
                rec = json.load(f)
            with open(os.path.join(sandboxes_dir(), sid, "net.json")) as f:
                ip = json.load(f)["ip"]
        except (OSError, ValueError, KeyError):
            continue
        if rec.get("status") == "pooled" and rec.get("spec"):
            out[sid] = {"secret": rec["envdSecret"], "ip": ip}
    return out


def ready_records() -> dict[str, dict]:
    """The pooled records whose boot has finished: a record is on disk from the start of its boot, but a create
    only takes a sandbox the runtime has logged as booted (a slower runtime, gVisor, shows the difference)."""
    log = server_log()
    return {
        sid: rec
        for sid, rec in pooled_records().items()
        if re.search(rf"booted a sandbox for the pool .*sandbox={sid}\b", log)
    }


def wait_for_pool(n: int) -> dict[str, dict]:
    wait_until(lambda: len(ready_records()) >= n, 60, f"{n} booted sandboxes in the pool")
    return ready_records()


def create(tag: str, **kwargs) -> Sandbox:
    return Sandbox.create(
        timeout=300, envs={"WHO": tag}, metadata={"e2e-run": RUN_ID, "owner": tag}, **kwargs
    )


def envd_health(ip: str, secret: str) -> int:
    with httpx.Client(trust_env=False, timeout=10) as c:
        return c.get(f"http://{ip}:{ENVD_PORT}/health", headers={SECRET_HEADER: secret}).status_code


@pytest.fixture
def outside():
    yield from outside_world("sbns-e2epool", "sbnse2epool", HOST_ADDR, OUTSIDE_ADDR, {8080: ["/bin/echo", "outside-ok"]})


def reaches(sbx: Sandbox) -> bool:
    r = sbx.commands.run(f"timeout 3 bash -c 'cat </dev/tcp/{OUTSIDE_ADDR}/8080' 2>&1; true", user="root")
    return "outside-ok" in r.stdout


@pytest.mark.skipif(PHASE != "identity", reason="phase identity")
def test_pooled_sandboxes_have_the_creates_identity_and_share_nothing(outside, api):
    made: list[Sandbox] = []
    try:
        pool = wait_for_pool(1)
        a = create("a")
        made.append(a)
        assert from_pool(a.sandbox_id), "a came from the pool"
        assert a.sandbox_id in pool, "a is the sandbox the pool held"
        # The pool's secret of a died with its claim.
        assert envd_health(pool[a.sandbox_id]["ip"], pool[a.sandbox_id]["secret"]) == 403
        marker = a.commands.run("sleep 7777", background=True)
        a.files.write("/tmp/mark", "a was here")
        a.commands.run("echo a-home > ~/mark")

        pool = wait_for_pool(1)
        b = create("b")
        made.append(b)
        assert from_pool(b.sandbox_id), "b came from the pool"
        assert envd_health(pool[b.sandbox_id]["ip"], pool[b.sandbox_id]["secret"]) == 403

        assert a.sandbox_id != b.sandbox_id
        ips = [s.commands.run("hostname -i").stdout.split() for s in (a, b)]
        assert ips[0] != ips[1], ips
        for sbx, tag in ((a, "a"), (b, "b")):
            assert sbx.commands.run("echo $WHO $E2B_SANDBOX").stdout.strip() == f"{tag} true"
            assert sbx.commands.run("hostname").stdout.strip() == sbx.sandbox_id
            assert Sandbox.get_info(sbx.sandbox_id).metadata.get("owner") == tag
        # b sees nothing of a: files, processes.
        assert b.commands.run("cat /tmp/mark ~/mark 2>&1; true").stdout.count("No such file") == 2
        assert "7777" not in b.commands.run("ps -eo args").stdout
        assert "7777" in a.commands.run("ps -eo args").stdout
        # Each sandbox's access token is its own: a's token opens nothing in b.
        a_token = getattr(a, "_envd_access_token", None)
        if a_token:
            r = httpx.get(
                f"{os.environ['E2B_SANDBOX_URL']}/envs",
                headers={"E2b-Sandbox-Id": b.sandbox_id, "E2b-Sandbox-Port": str(ENVD_PORT), "X-Access-Token": a_token},
                timeout=10,
            )
            assert r.status_code == 401, r.text
        a.commands.kill(marker.pid)
        a.kill()
        made.remove(a)

        # A later pool member after a is gone: nothing of a either.
        wait_for_pool(1)
        c = create("c")
        made.append(c)
        assert from_pool(c.sandbox_id)
        assert c.commands.run("cat /tmp/mark 2>&1; true").stdout.count("No such file") == 1

        # Network rules from the pool: closed is closed, the default is open.
        wait_for_pool(1)
        closed = create("closed", allow_internet_access=False)
        made.append(closed)
        assert from_pool(closed.sandbox_id)
        assert not reaches(closed), "a closed sandbox from the pool reaches the outside"
        assert reaches(c), "an open sandbox from the pool reaches the outside"

        # A burst of creates (more than the pool holds) all succeed; the pool refills afterwards.
        before = booted_count()
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            burst = list(ex.map(lambda i: create(f"burst{i}"), range(4)))
        made.extend(burst)
        assert len({s.sandbox_id for s in burst}) == 4
        for i, sbx in enumerate(burst):
            assert sbx.commands.run("echo $WHO").stdout.strip() == f"burst{i}"
        wait_until(lambda: booted_count() >= before + 2 and len(ready_records()) >= 2, 60, "the pool to refill")
        assert not listed(api) & set(pooled_records()), "pooled sandboxes are listed"
    finally:
        for sbx in made:
            sbx.kill()


def host_objects() -> set[str]:
    names = {f"netns:{n}" for n in os.listdir("/run/netns") if n.startswith(PREFIX + "-")}
    names |= {f"dir:{n}" for n in os.listdir(sandboxes_dir())}
    return names


@pytest.mark.skipif(PHASE != "before-kill", reason="phase before-kill")
def test_before_kill_the_pool_is_full():
    pool = wait_for_pool(1)
    with open(STATE_FILE, "w") as f:
        json.dump({"pooled": sorted(pool), "objects": sorted(host_objects())}, f)


@pytest.mark.skipif(PHASE != "after-kill", reason="phase after-kill")
def test_after_kill_nothing_of_the_old_pool_is_left(api):
    with open(STATE_FILE) as f:
        state = json.load(f)
    assert state["pooled"], "the pool was full before the kill"
    now = host_objects()
    for sid in state["pooled"]:
        assert f"dir:{sid}" not in now and f"netns:{PREFIX}-{sid}" not in now, f"pooled {sid} survived the restart"
    assert not listed(api) & set(state["pooled"]), "a pooled sandbox became a user sandbox"
    # The new server fills a new pool, which the final leak check (after shutdown) also covers.
    wait_for_pool(1)
