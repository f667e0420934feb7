"""Code Interpreter benchmark (not a test; issue 16), against a running `soulbox server` whose
`code-interpreter-v1` is built (run tests/e2e/test_code_interpreter.py once, or create one sandbox first):

    E2B_API_URL=… E2B_SANDBOX_URL=… E2B_API_KEY=… E2B_DOMAIN=… NO_PROXY='*' python bench/code_interpreter_bench.py

With the official `e2b_code_interpreter` SDK: create → first `run_code("1+1")` result (CREATES sandboxes, cold
kernel each), `run_code("1+1")` round trip (N runs, one warm sandbox), throughput of small executions in one
context, the idle sandbox's memory (its cgroup, from the metrics API) and largest processes, the service's and the
kernel's RSS over MEMORY_EXECS small executions in one context (does anything grow per execution?), and a warm
sandbox: memory pause, then connect (resume) → first `run_code` result, the kernel already up (PAUSES times)."""
import os
import re
import statistics
import time

from e2b_code_interpreter import Sandbox

N = int(os.environ.get("N", "200"))
CREATES = int(os.environ.get("CREATES", "5"))
LOOP = int(os.environ.get("LOOP", "500"))
MEMORY_EXECS = int(os.environ.get("MEMORY_EXECS", "3000"))
PAUSES = int(os.environ.get("PAUSES", "3"))


def rss_mib(sbx, pid):
    status = sbx.commands.run(f"cat /proc/{pid}/status").stdout
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


def memory_over_executions(sbx):
    ctx = sbx.create_code_context()
    kernel = int(sbx.run_code("import os; os.getpid()", context=ctx).text)
    service = int(sbx.commands.run("pgrep -of code-interpreter/main.py").stdout.split()[0])
    for i in range(200):  # warm-up: imports and caches in
        sbx.run_code(f"x = {i}\nprint(x)\nx", context=ctx)
    rows = [(0, rss_mib(sbx, service), rss_mib(sbx, kernel))]
    step = max(1, MEMORY_EXECS // 3)
    for i in range(1, MEMORY_EXECS + 1):
        sbx.run_code(f"x = {i}\nprint(x)\nx", context=ctx)
        if i % step == 0 or i == MEMORY_EXECS:
            rows.append((i, rss_mib(sbx, service), rss_mib(sbx, kernel)))
    sbx.remove_code_context(ctx)
    print("RSS over small executions in one context (after 200 warm-up ones):")
    for i, svc, ker in rows:
        print(f"  after {i:5d}: service {svc:.1f} MiB, kernel {ker:.1f} MiB")


def warm_first_results():
    """Memory pause keeps the kernels: connect (the resume) → first result is the warm-sandbox path."""
    firsts = []
    sbx = Sandbox.create(timeout=300)
    try:
        sbx.run_code("warm = 1")
        for _ in range(PAUSES):
            assert sbx.pause() is True
            started = time.perf_counter()
            sbx = Sandbox.connect(sbx.sandbox_id, timeout=300)
            assert sbx.run_code("warm + 1").text == "2"
            firsts.append((time.perf_counter() - started) * 1000)
    finally:
        sbx.kill()
    print(f"resume (connect) of a memory-paused sandbox → first run_code result: p50 {statistics.median(firsts):.0f} ms "
          f"(min {min(firsts):.0f}, max {max(firsts):.0f}, {PAUSES} runs)")


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    firsts = []
    sbx = None
    for i in range(CREATES):
        started = time.perf_counter()
        sbx = Sandbox.create(timeout=300)
        assert sbx.run_code("1+1").text == "2"
        firsts.append((time.perf_counter() - started) * 1000)
        if i < CREATES - 1:
            sbx.kill()
    print(f"create → first run_code result: p50 {statistics.median(firsts):.0f} ms (min {min(firsts):.0f}, max {max(firsts):.0f})")
    try:
        lat = []
        for _ in range(N):
            started = time.perf_counter()
            sbx.run_code("1+1")
            lat.append((time.perf_counter() - started) * 1000)
        print(f"run_code('1+1'): p50 {statistics.median(lat):.1f} ms, p90 {quantile(lat, .9):.1f}, p99 {quantile(lat, .99):.1f} (N={N})")
        started = time.perf_counter()
        for i in range(LOOP):
            sbx.run_code(f"x = {i}")
        print(f"throughput: {LOOP / (time.perf_counter() - started):.0f} executions/s in one context")
        # Metrics are sampled by the server every metrics_interval_s: wait for a sample after the loop.
        for _ in range(60):
            metrics = sbx.get_metrics()
            if metrics:
                break
            time.sleep(1)
        if metrics:
            print(f"memory in use (sandbox cgroup, last sample): {metrics[-1].mem_used / 2**20:.0f} MiB")
        print(sbx.commands.run("ps -eo rss,args --sort=-rss | head -4").stdout)
        if MEMORY_EXECS:
            memory_over_executions(sbx)
    finally:
        sbx.kill()
    if PAUSES:
        warm_first_results()


if __name__ == "__main__":
    main()
