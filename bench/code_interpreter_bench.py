"""Code Interpreter benchmark (not a test; issue 16), against a running `soulbox server` whose
`code-interpreter-v1` is built (run tests/e2e/test_code_interpreter.py once, or create one sandbox first):

    E2B_API_URL=… E2B_SANDBOX_URL=… E2B_API_KEY=… E2B_DOMAIN=… NO_PROXY='*' python bench/code_interpreter_bench.py

With the official `e2b_code_interpreter` SDK: create → first `run_code("1+1")` result (CREATES sandboxes, cold
kernel each), `run_code("1+1")` round trip (N runs, one warm sandbox), throughput of small executions in one
context, and the idle sandbox's memory (its cgroup, from the metrics API) and largest processes."""
import os
import statistics
import time

from e2b_code_interpreter import Sandbox

N = int(os.environ.get("N", "200"))
CREATES = int(os.environ.get("CREATES", "5"))
LOOP = int(os.environ.get("LOOP", "500"))


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
    finally:
        sbx.kill()


if __name__ == "__main__":
    main()
