"""The same measurements as examples/bench.rs through the official e2b Python SDK (for comparison).

tests/compat/.venv-latest/bin/python crates/soulbox/examples/bench_python.py   (E2B_API_URL, E2B_SANDBOX_URL,
E2B_API_KEY set; BENCH_N, BENCH_CREATES as for bench.rs)
"""
import os
import time

from e2b import Sandbox
from e2b.exceptions import SandboxUnreachableException

failures = 0


def run_true(s):
    """One timed run; a transient proxy 502 ("port is not open", seen with this SDK under load) is counted and retried."""
    global failures
    while True:
        t = time.perf_counter()
        try:
            s.commands.run("true")
            return time.perf_counter() - t
        except SandboxUnreachableException:
            failures += 1


def pct(v):
    v = sorted(v)
    at = lambda p: v[round((len(v) - 1) * p)] * 1000
    return at(0.5), at(0.99)


n = int(os.environ.get("BENCH_N", "300"))
creates = int(os.environ.get("BENCH_CREATES", "20"))
sbx = Sandbox.create("base", timeout=600)
for _ in range(20):
    run_true(sbx)
runs = [run_true(sbx) for _ in range(n)]
sbx.kill()
cr = []
for _ in range(creates):
    t = time.perf_counter()
    s = Sandbox.create("base")
    run_true(s)
    cr.append(time.perf_counter() - t)
    s.kill()
print("%-34s %9.3f %9.3f" % ('Python SDK run("true") n=%d' % n, *pct(runs)))
print("%-34s %9.3f %9.3f" % ("Python SDK create->first cmd n=%d" % creates, *pct(cr)))
print("transient 'port is not open' failures retried: %d" % failures)
