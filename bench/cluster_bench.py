"""Create throughput with three node agents vs one (issue 7). Not a test: run through tests/cluster/run.sh, which
builds, seeds the template store, provides the database and cleans up every host object afterwards:

    SOULBOX_CLUSTER_PY=bench/cluster_bench.py SOULBOX_CLUSTER_DB=sqlite tests/cluster/run.sh

All agents run on this one machine, so three nodes share the same cores as one: the number shows what the control
plane and placement cost with more nodes, not what three hosts would give. Environment: N (creates per round,
default 48), CONCURRENCY (default 8).
"""

import os
import signal
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cluster"))
import cluster_test as c  # noqa: E402 - reuses the test's process helpers and HTTP client

N = int(os.environ.get("N", "48"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))


def one_create():
    started = time.monotonic()
    status, body = c.call("POST", "/sandboxes", {"templateID": "base", "timeout": 600})
    assert status == 201, (status, body)
    return body["sandboxID"], time.monotonic() - started


def cycle(_):
    """Create (timed) then kill: at most CONCURRENCY sandboxes live at once, so one node's capacity (8 base
    sandboxes: 2 vCPU each against 2 host CPUs × 8 overcommit) never caps the round."""
    sid, took = one_create()
    node = c.placement([sid])[sid]
    c.call("DELETE", f"/sandboxes/{sid}", expect=204)
    return node, took


def round_with(nodes):
    for name, prefix, pool in nodes:
        c.start_node(name, prefix, pool)
    c.wait_for(f"{len(nodes)} healthy nodes", lambda: all(c.status_of(n) == "healthy" for n, _, _ in nodes), 60)
    one_create()  # warm-up: first create on a fresh agent pays for its warm pool
    c.call("DELETE", "/sandboxes/" + c.call("GET", "/sandboxes")[1][0]["sandboxID"], expect=204)
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        started = time.monotonic()
        results = list(pool.map(cycle, range(N)))
        elapsed = time.monotonic() - started
    latencies = sorted(r[1] * 1000 for r in results)
    spread = {n: [r[0] for r in results].count(n) for n, _, _ in nodes}
    for name, _, _ in nodes:
        c.procs[name].send_signal(signal.SIGTERM)
        c.procs[name].wait(timeout=60)
        c.call("DELETE", f"/nodes/{name}?force=true")
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{len(nodes)} node(s): {N / elapsed:6.1f} create+kill cycles/s at concurrency {CONCURRENCY}   "
          f"create p50 {p50:6.1f} ms  p99 {p99:6.1f} ms   spread {spread}", flush=True)
    return N / elapsed


def main():
    c.api_url, c.api_key = c.start_server("server")
    c.agent_server = c.api_url
    one = round_with(c.NODES[:1])
    three = round_with(c.NODES)
    print(f"three nodes vs one: {three / one:.2f}x (same machine, same two cores)")


if __name__ == "__main__":
    try:
        main()
    finally:
        c.stop_all()
