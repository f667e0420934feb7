"""Server restart (kill -9) in the middle: run.sh runs phase `before`, kills the server with SIGKILL, starts it
again on the same port and data dir, then runs phase `after`. Running and paused sandboxes must survive with
their files, processes and state. On runsc with pause to disk the paused sandbox is on disk only (its memory
image, no process of it on the host), so what a host reboot leaves is enough to resume it. Skipped unless SOULBOX_E2E_RESTART_PHASE is
set."""

from __future__ import annotations

import json
import os

import pytest

import e2b
from e2b import Sandbox
from e2b.sandbox.sandbox_api import SandboxState

from conftest import RUN_ID, wait_until

PHASE = os.environ.get("SOULBOX_E2E_RESTART_PHASE")
RUNTIME = os.environ.get("SOULBOX_RUNTIME", "runc")
# runsc (unless SOULBOX_E2E_CONFIG_EXTRA says `runsc_pause_to_disk = false`): the pause writes the memory to disk.
PAUSE_TO_DISK = RUNTIME == "runsc" and "runsc_pause_to_disk = false" not in os.environ.get("SOULBOX_E2E_CONFIG_EXTRA", "")
DATA_DIR = os.environ.get("SOULBOX_E2E_DATA_DIR", "")
STATE_FILE = os.environ.get("SOULBOX_E2E_RESTART_STATE", "/tmp/soulbox-e2e-restart.json")

pytestmark = pytest.mark.skipif(PHASE is None, reason="run by tests/e2e/run.sh around a server restart")

COUNTER = "i=0; while true; do echo $i > /tmp/counter; i=$((i+1)); sleep 0.2; done"


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def counter(sbx: Sandbox) -> int:
    text = sbx.commands.run("cat /tmp/counter 2>/dev/null || true").stdout.strip()
    return int(text) if text.isdigit() else -1


@pytest.mark.skipif(PHASE != "before", reason="phase before")
def test_before_restart():
    running = Sandbox.create(timeout=300, metadata={"e2e-run": RUN_ID, "restart": "running"})
    running.files.write("/home/user/restart.txt", "kept across restart")
    pid = running.commands.run(COUNTER, background=True).pid
    wait_until(lambda: counter(running) >= 5, 30, "the counter to start")
    paused = Sandbox.create(timeout=300, metadata={"e2e-run": RUN_ID, "restart": "paused"})
    paused.files.write("/home/user/restart.txt", "paused across restart")
    paused_pid = paused.commands.run(COUNTER, background=True).pid
    wait_until(lambda: counter(paused) >= 5, 30, "the paused sandbox's counter to start")
    at_pause = counter(paused)
    assert paused.pause() is True
    if PAUSE_TO_DISK:
        # Paused to disk: its memory image in its dir when the pause answers, and soon no process on the host names
        # it any more (the release, gVisor's teardown of ~1.3 s, follows the answer: lifecycle/settle.rs).
        assert os.path.isfile(f"{DATA_DIR}/node/sandboxes/{paused.sandbox_id}/memory/checkpoint.img")
        holders = lambda: [
            pid for pid in os.listdir("/proc") if pid.isdigit() and paused.sandbox_id.encode() in _cmdline(pid)
        ]
        wait_until(lambda: not holders(), 30, "the paused sandbox's processes to leave the host")
    state = {
        "running": running.sandbox_id,
        "pid": pid,
        "paused": paused.sandbox_id,
        "paused_pid": paused_pid,
        "at_pause": at_pause,
    }
    # A volume mounted by a paused sandbox, written by it and through the content API (SDKs that have volumes).
    if hasattr(e2b, "Volume"):
        volume = e2b.Volume.create(f"restart-{RUN_ID.replace('.', '-')}")
        volume.write_file("/from-api.txt", "api wrote this")
        mounting = Sandbox.create(timeout=300, metadata={"e2e-run": RUN_ID}, volume_mounts={"/data": volume})
        mounting.commands.run("echo sandbox wrote this > /data/from-sandbox.txt")
        assert mounting.pause() is True
        state.update(volume=volume.volume_id, mounting=mounting.sandbox_id)
    with open(STATE_FILE, "w") as f:
        json.dump(state, f)


@pytest.mark.skipif(PHASE != "after", reason="phase after")
def test_after_restart():
    with open(STATE_FILE) as f:
        state = json.load(f)
    running = Sandbox.connect(state["running"], timeout=120)
    assert Sandbox.get_info(state["running"]).state == SandboxState.RUNNING
    assert running.files.read("/home/user/restart.txt") == "kept across restart"
    assert running.commands.run(f"kill -0 {state['pid']} && echo alive").stdout == "alive\n"
    n = counter(running)
    wait_until(lambda: counter(running) > n, 30, "the counter to keep counting after the restart")

    assert Sandbox.get_info(state["paused"]).state == SandboxState.PAUSED
    resumed = Sandbox.connect(state["paused"], timeout=120)
    assert resumed.files.read("/home/user/restart.txt") == "paused across restart"
    # Its memory came back: the same process, counting on from where the pause stopped it.
    assert resumed.commands.run(f"kill -0 {state['paused_pid']} && echo alive").stdout == "alive\n"
    n = counter(resumed)
    assert n >= state["at_pause"], f"the counter went back from {state['at_pause']} to {n}"
    wait_until(lambda: counter(resumed) > n, 30, "the paused sandbox's counter to go on after the restart")
    assert running.kill() is True and resumed.kill() is True
    if "volume" in state:
        volume = e2b.Volume.connect(state["volume"])
        assert volume.read_file("/from-sandbox.txt") == "sandbox wrote this\n"
        mounting = Sandbox.connect(state["mounting"], timeout=120)
        assert mounting.commands.run("cat /data/from-api.txt").stdout == "api wrote this"
        assert mounting.kill() is True
        assert e2b.Volume.destroy(state["volume"])
