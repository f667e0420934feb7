"""A sandbox sees its own machine (issue 15, item 5), through the official SDK as agent code runs it: `free`,
`/proc/meminfo`, `nproc`, `/proc/cpuinfo`, `/proc/stat`, `uptime` and Python's and Node's own probes show the
sandbox's memory and CPU limits and its own uptime, not the host's; `df /` shows its own disk; its boot id is its
own, kept by a pause and resume, new after a filesystem-only pause (a cold boot). Works on runc through the
runtime's proc view (`crates/soulbox-runtime/src/procview.rs`). Nothing here needs the network."""

from __future__ import annotations

import inspect
import os
import uuid

import pytest

from e2b import Sandbox, Template

from conftest import RUN_ID, Sandboxes

pytestmark = pytest.mark.timeout(300)

SDK_PAUSE_HAS_MODE = "mode" in inspect.signature(Sandbox.pause).parameters
FILESYSTEM_ONLY = {"mode": "filesystem"} if SDK_PAUSE_HAS_MODE else {"keep_memory": False}


def run(sbx, cmd: str) -> str:
    r = sbx.commands.run(cmd, timeout=120)
    assert r.exit_code == 0, (cmd, r.stdout, r.stderr)
    return r.stdout.strip()


def meminfo_kb(text: str, key: str) -> int:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in {text}")


@pytest.fixture
def small_template(api):
    """`base` with 1 CPU and 256 MiB (smaller than this host on both counts), deleted at teardown."""
    name = f"e2e-own-machine-{RUN_ID}-{uuid.uuid4().hex[:6]}".replace("+", "-").replace(".", "-")
    Template.build(Template().from_template("base").run_cmd("true"), name, cpu_count=1, memory_mb=256)
    yield name
    api.delete(f"/templates/{name}")


def host_boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def test_free_nproc_uptime_and_df_show_the_sandbox(sandboxes: Sandboxes, api, small_template):
    sbx = sandboxes.create(template=small_template)
    info = sbx.get_info()
    memory_mb, cpus = info.memory_mb, info.cpu_count
    assert (memory_mb, cpus) == (256, 1)
    assert (os.cpu_count() or 1) > 1, "the CPU checks need a host of more than 1 CPU"
    if "gVisor" in sbx.commands.run("dmesg 2>&1 | head -3", user="root").stdout:
        # gVisor's --cpu-num-from-quota shows at least 2 CPUs (and at most the host's): runtime README.
        cpus = min(os.cpu_count() or 2, max(2, cpus))

    assert meminfo_kb(run(sbx, "cat /proc/meminfo"), "MemTotal") == memory_mb * 1024
    mem_line = run(sbx, "free -m | grep ^Mem:").split()
    assert int(mem_line[1]) == memory_mb, f"procps free: {mem_line}"
    assert int(mem_line[2]) + int(mem_line[3]) <= memory_mb
    assert run(sbx, "free -m | grep ^Swap:").split()[1] == "0"
    # What programs size themselves from: Node's libuv reads /proc/meminfo and the affinity mask, Python's
    # os.cpu_count() reads /sys/devices/system/cpu/online.
    assert int(run(sbx, "node -e 'console.log(require(\"os\").totalmem())'")) == memory_mb << 20
    assert run(sbx, "node -e 'console.log(require(\"os\").availableParallelism())'") == str(cpus)
    assert run(sbx, "python -c 'import os; print(os.cpu_count(), len(os.sched_getaffinity(0)))'") == f"{cpus} {cpus}"

    assert run(sbx, "nproc") == str(cpus)
    assert run(sbx, "grep -c ^processor /proc/cpuinfo") == str(cpus)
    cpu_lines = run(sbx, "grep ^cpu /proc/stat").splitlines()
    assert len(cpu_lines) == cpus + 1 and cpu_lines[0].startswith("cpu "), cpu_lines

    up = float(run(sbx, "cut -d' ' -f1 /proc/uptime"))
    with open("/proc/uptime") as f:
        host_up = float(f.read().split()[0])
    assert up < 120 and up < host_up, (up, host_up)
    assert "up " in run(sbx, "uptime")
    assert run(sbx, "uptime -s")  # procps computes the boot time from /proc/uptime

    # `df /` is the sandbox's disk (its limit, as the API reports it), not the host filesystem's.
    disk_mb = api.get(f"/sandboxes/{sbx.sandbox_id}").json()["diskSizeMB"]
    size_kb = int(run(sbx, "df -k --output=size / | tail -1"))
    assert 0 < disk_mb and disk_mb * 1024 * 0.9 <= size_kb <= disk_mb * 1024, (size_kb, disk_mb)


def test_boot_id_is_the_sandboxs_own_and_new_at_every_cold_boot(sandboxes: Sandboxes):
    sbx = sandboxes.create()
    other = sandboxes.create()
    boot = run(sbx, "cat /proc/sys/kernel/random/boot_id")
    assert len(boot) == 36 and boot != host_boot_id()
    assert run(other, "cat /proc/sys/kernel/random/boot_id") != boot

    assert sbx.pause() is True
    resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
    assert run(resumed, "cat /proc/sys/kernel/random/boot_id") == boot, "a pause and resume is the same boot"

    assert resumed.pause(**FILESYSTEM_ONLY) is True
    cold = Sandbox.connect(sbx.sandbox_id, timeout=120)
    again = run(cold, "cat /proc/sys/kernel/random/boot_id")
    assert len(again) == 36 and again != boot, "a filesystem-only resume is a cold boot"
    assert float(run(cold, "cut -d' ' -f1 /proc/uptime")) < 120
