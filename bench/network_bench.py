"""Network control benchmark (issue 14; not a test): run by `BENCH=bench/network_bench.py bench/server.sh` against
a running server. Raw HTTP, so the numbers are the server's, the node's and the firewall's.

Prints, for this server's runtime:
  - baseline: GET /sandboxes/{id} (an authenticated API round trip) p50/p99
  - PUT /sandboxes/{id}/network (a live update: both firewall chains, the in-netns guard, cutting what it forbids)
    on a running sandbox, alternating a tight and an open policy; and its ratio to the baseline
  - a small request to a port of a public sandbox through the proxy vs one to a private sandbox with its traffic
    access token (the token check's cost)
Environment: N (samples per measure, default 30).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_bench  # noqa: E402
from server_bench import pct  # noqa: E402

N = int(os.environ.get("N", "30"))
PORT = 8000


def timed(fn):
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def row(name, samples):
    print(f"{name:<58} p50 {pct(samples, 0.5):8.2f} ms   p99 {pct(samples, 0.99):8.2f} ms   (n={len(samples)})")


def port_get(c, sandbox, token=None):
    headers = {"E2b-Sandbox-Id": sandbox["sandboxID"], "E2b-Sandbox-Port": str(PORT)}
    if token:
        headers["e2b-traffic-access-token"] = token
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"port request: {r.status}")


def serving(c, sandbox, token=None):
    server_bench.raw_run(c, sandbox, f"nohup python3 -m http.server {PORT} >/dev/null 2>&1 &")
    for _ in range(200):
        try:
            port_get(c, sandbox, token)
            return
        except RuntimeError:
            time.sleep(0.05)
    raise RuntimeError("the sandbox's http.server did not start")


def main():
    c = server_bench.conn()
    api = lambda method, path, body=None: server_bench.api(c, method, path, body)  # noqa: E731
    public = api("POST", "/v2/sandboxes", {"templateID": "base", "timeout": 600})
    private = api("POST", "/v2/sandboxes", {"templateID": "base", "timeout": 600,
                                            "network": {"allowPublicTraffic": False}})
    try:
        sid = public["sandboxID"]
        base = [timed(lambda: api("GET", f"/sandboxes/{sid}")) for _ in range(N)]
        row("baseline: GET /sandboxes/{id}", base)
        tight = {"denyOut": ["203.0.113.0/24"], "allowOut": ["203.0.113.7"]}
        updates = [timed(lambda i=i: api("PUT", f"/sandboxes/{sid}/network", tight if i % 2 == 0 else {}))
                   for i in range(N)]
        row("PUT /sandboxes/{id}/network (running sandbox)", updates)
        print(f"{'  update / baseline (p50)':<58} {pct(updates, 0.5) / pct(base, 0.5):8.1f}x")

        serving(c, public)
        serving(c, private, private["trafficAccessToken"])
        plain = [timed(lambda: port_get(c, public)) for _ in range(N)]
        guarded = [timed(lambda: port_get(c, private, private["trafficAccessToken"])) for _ in range(N)]
        row("port request, public sandbox", plain)
        row("port request, private sandbox with its token", guarded)
        print(f"{'  private / public (p50)':<58} {pct(guarded, 0.5) / pct(plain, 0.5):8.2f}x")
    finally:
        for s in (public, private):
            api("DELETE", f"/sandboxes/{s['sandboxID']}")


if __name__ == "__main__":
    main()
