"""Pause, snapshot and fork benchmark (issue 13; not a test): run by `BENCH=bench/snapshot_bench.py
bench/server.sh` against a running server. Raw HTTP, so the numbers are the server's and the runtime's.

Prints, for this server's runtime (runc unless the server was started with another):
  - baseline: create from `base` (POST /v2/sandboxes) p50/p99
  - pause and resume with memory (freeze/thaw) and filesystem-only pause and resume (stop to disk/cold boot), of
    a sandbox holding 64 and then 256 MiB of touched memory in /dev/shm
  - pause and resume with memory of a sandbox whose process holds 512 MiB and then 2 GiB of touched memory (a
    template `bench-big`, 4 GiB and 2 vCPUs, built from `base` for it and deleted after)
  - snapshot of a sandbox with 64 MiB written to its disk, create from that snapshot, fork (1 and 4 at once)
Environment: N (samples per measure, default 15), SETTLE_S (seconds between a pause and its resume, default 3).

A pause answers before the sandbox has released what it held on the host (on gVisor its Sentry takes ~1.3 s to
exit: crates/soulbox-runtime/src/lifecycle/settle.rs), and a resume waits for that release. Sandboxes are resumed
later, not at once, so the bench waits SETTLE_S before each resume (SETTLE_S=0: the resume absorbs the release).
"""
import os
import statistics
import sys
import time

# The server bench's HTTP helpers (one keep-alive connection, the key, JSON in and out) and percentiles.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_bench  # noqa: E402
from server_bench import pct  # noqa: E402

N = int(os.environ.get("N", "15"))
SETTLE_S = float(os.environ.get("SETTLE_S", "3"))
C = None


def api(method, path, body=None):
    return server_bench.api(C, method, path, body)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def run(sandbox, cmd):
    """A command through the proxy (Process/Start), waited for."""
    server_bench.raw_run(C, sandbox, cmd)


def create(template="base"):
    return api("POST", "/v2/sandboxes", {"templateID": template, "timeout": 600})


def kill(sandbox_id):
    api("DELETE", f"/sandboxes/{sandbox_id}")


def row(name, samples):
    print(f"{name:<58} p50 {pct(samples, 0.5):8.1f} ms   p99 {pct(samples, 0.99):8.1f} ms   (n={len(samples)})")


def main():
    global C
    C = server_bench.conn()
    creates = []
    for _ in range(N):
        ms, s = timed(create)
        creates.append(ms)
        kill(s["sandboxID"])
    row("baseline: create from base", creates)

    for mib in (64, 256):
        sbx = create()
        try:
            run(sbx, f"head -c {mib}M /dev/urandom > /dev/shm/touched")
            pause_and_resume_with_memory(sbx, f"{mib} MiB touched")
            pauses, resumes = [], []
            for _ in range(max(3, N // 3)):
                pauses.append(timed(lambda: api("POST", f"/sandboxes/{sbx['sandboxID']}/pause", {"memory": False}))[0])
                time.sleep(SETTLE_S)
                resumes.append(timed(lambda: api("POST", f"/sandboxes/{sbx['sandboxID']}/connect", {"timeout": 600}))[0])
            row(f"filesystem-only pause, {mib} MiB in /dev/shm (dropped)", pauses)
            row("resume after a filesystem-only pause (cold boot)", resumes)
        finally:
            kill(sbx["sandboxID"])

    big_memory()

    source = create()
    try:
        run(source, "head -c 64M /dev/urandom > /home/user/disk64")
        snaps, made = [], []
        for i in range(max(3, N // 3)):
            ms, info = timed(lambda: api("POST", f"/sandboxes/{source['sandboxID']}/snapshots", {"name": f"bench-{i}"}))
            snaps.append(ms)
            made.append(info["snapshotID"])
        row("snapshot, 64 MiB written to the disk", snaps)
        from_snapshot = []
        for _ in range(N):
            ms, s = timed(lambda: create(made[0]))
            from_snapshot.append(ms)
            kill(s["sandboxID"])
        row("create from a snapshot", from_snapshot)
        print(f"  ratio create-from-snapshot / create-from-base p50: "
              f"{statistics.median(from_snapshot) / statistics.median(creates):.2f}")
        for count in (1, 4):
            forks = []
            for _ in range(max(3, N // 3)):
                ms, results = timed(lambda: api("POST", f"/sandboxes/{source['sandboxID']}/fork", {"count": count, "timeout": 600}))
                forks.append(ms)
                for r in results:
                    if "sandbox" in r:
                        kill(r["sandbox"]["sandboxID"])
                    else:
                        raise RuntimeError(f"fork failed: {r}")
            row(f"fork, count {count} (all started)", forks)
        for snapshot_id in made:
            api("DELETE", f"/templates/{snapshot_id.replace(':', '%3A')}")
    finally:
        kill(source["sandboxID"])


def pause_and_resume_with_memory(sbx, what):
    """N pauses with memory and resumes (connect) of `sbx`, one row each."""
    pauses, resumes = [], []
    for _ in range(N):
        pauses.append(timed(lambda: api("POST", f"/sandboxes/{sbx['sandboxID']}/pause", {}))[0])
        time.sleep(SETTLE_S)
        resumes.append(timed(lambda: api("POST", f"/sandboxes/{sbx['sandboxID']}/connect", {"timeout": 600}))[0])
    row(f"pause with memory, {what}", pauses)
    row(f"resume with memory, {what}", resumes)


def big_memory():
    """Pause/resume with memory of a sandbox whose process holds 512 MiB, then 2 GiB (E2B's anchors)."""
    built = api("POST", "/v3/templates", {"name": "bench-big", "memoryMB": 4096, "cpuCount": 2})
    api("POST", f"/v2/templates/bench-big/builds/{built['buildID']}",
        {"fromTemplate": "base", "steps": [{"type": "RUN", "args": ["true", "root"]}]})
    while (status := api("GET", f"/templates/bench-big/builds/{built['buildID']}/status")["status"]) not in ("ready", "error"):
        time.sleep(0.5)
    if status != "ready":
        raise RuntimeError("building bench-big failed")
    try:
        for mib in (512, 2048):
            sbx = create("bench-big")
            try:
                # A process writes every page of its buffer and keeps it (python3 from `base`).
                hold = f"b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nopen('/tmp/held', 'w').close()\nimport time\ntime.sleep(10**9)"
                run(sbx, f"nohup python3 -c \"{hold}\" > /dev/null 2>&1 & while [ ! -e /tmp/held ]; do sleep 0.1; done")
                pause_and_resume_with_memory(sbx, f"a process holding {mib} MiB")
            finally:
                kill(sbx["sandboxID"])
    finally:
        api("DELETE", "/templates/bench-big")


if __name__ == "__main__":
    sys.exit(main())
