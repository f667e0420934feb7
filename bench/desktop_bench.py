"""Desktop benchmark (not a test; issue 16), against a running `soulbox server` whose `desktop` is built (run
tests/e2e/test_desktop.py once, or create one sandbox first):

    E2B_API_URL=… E2B_SANDBOX_URL=… E2B_API_KEY=… E2B_DOMAIN=… NO_PROXY='*' python bench/desktop_bench.py

With the official `e2b_desktop` SDK: `Sandbox.create()` until it returns (the sandbox, then the SDK's own Xvfb and
Xfce start, CREATES times), the round trips of a screenshot and of a mouse move (N each, one sandbox), and the
idle desktop's memory (its cgroup, from the metrics API) and largest processes."""
import os
import statistics
import time

from e2b_desktop import Sandbox

N = int(os.environ.get("N", "50"))
CREATES = int(os.environ.get("CREATES", "3"))


def quantile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def timed(action, n):
    lat = []
    for _ in range(n):
        started = time.perf_counter()
        action()
        lat.append((time.perf_counter() - started) * 1000)
    return f"p50 {statistics.median(lat):.0f} ms, p90 {quantile(lat, .9):.0f} (N={n})"


def main():
    creates = []
    sbx = None
    for i in range(CREATES):
        started = time.perf_counter()
        sbx = Sandbox.create(timeout=300)
        creates.append((time.perf_counter() - started) * 1000)
        if i < CREATES - 1:
            sbx.kill()
    print(f"create (Xvfb + Xfce up): p50 {statistics.median(creates):.0f} ms (min {min(creates):.0f}, max {max(creates):.0f})")
    try:
        print(f"screenshot (1024x768 PNG): {timed(sbx.screenshot, N)}")
        # a different place each time: `xdotool mousemove --sync` to where the pointer already is never returns
        places = iter(range(10**6))
        print(f"move_mouse: {timed(lambda: sbx.move_mouse(100 + next(places) % 500, 100), N)}")
        # Metrics are sampled by the server every metrics_interval_s: wait for a sample of the idle desktop.
        metrics = []
        for _ in range(60):
            metrics = sbx.get_metrics()
            if metrics:
                break
            time.sleep(1)
        if metrics:
            print(f"memory in use (sandbox cgroup, last sample): {metrics[-1].mem_used / 2**20:.0f} MiB")
        print(sbx.commands.run("ps -eo rss,args --sort=-rss | head -6").stdout)
    finally:
        sbx.kill()


if __name__ == "__main__":
    main()
