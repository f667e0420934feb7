"""soulbox proxy benchmark (not a test): run by `BENCH=bench/proxy_bench.py bench/server.sh` against a running
server (issue 18, goal 5).

One sandbox; every measure compares the server's proxy with a client that goes straight to envd at the
sandbox's address (as the node does: with the envd secret from the node's record), in the same run, alternated:
  (a) added latency per small request, kept-alive connections: GET /health and GET /files of a 1 KiB file,
      p50 through the proxy minus p50 direct (goal <= 0.3 ms)
  (b) a SIZE_MIB (256) MiB download with curl, ROUNDS rounds alternated, median and best MiB/s of each side and
      their ratio (goal >= 0.9)
env: SMALL_N=2000 ROUNDS=9 SIZE_MIB=256 (SMALL_N=0: downloads only)
"""
import json
import os
import statistics
import struct
import subprocess
import sys
import time
import urllib.parse

from benchlib import api, conn, pct  # noqa: E402

API = urllib.parse.urlparse(os.environ["E2B_API_URL"])
KEY = os.environ["E2B_API_KEY"]
SIZE_MIB = int(os.environ.get("SIZE_MIB", "256"))
SMALL_N = int(os.environ.get("SMALL_N", "2000"))
ROUNDS = int(os.environ.get("ROUNDS", "9"))
ENVD_PORT = 49983


def run(c, sandbox, cmd):
    payload = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-c", cmd]}, "stdin": False}).encode()
    c.request("POST", "/process.Process/Start", body=b"\0" + struct.pack(">I", len(payload)) + payload, headers={
        "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
        "E2b-Sandbox-Id": sandbox["sandboxID"], "E2b-Sandbox-Port": str(ENVD_PORT),
        "X-Access-Token": sandbox.get("envdAccessToken") or "",
    })
    r = c.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"Process/Start: {r.status}")


def node_record(sandbox_id, name):
    path = os.path.join(os.environ.get("SOULBOX_DATA_DIR", ""), "node", "sandboxes", sandbox_id, name)
    with open(path) as f:
        return json.load(f)


def timed_get(c, path, headers):
    t = time.perf_counter()
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    body = r.read()
    elapsed = time.perf_counter() - t
    if r.status >= 300:
        raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
    return elapsed * 1000


def small_requests(path, proxy_c, proxy_h, direct_c, direct_h):
    for _ in range(200):  # warm both connections and the server's upstream pool
        timed_get(proxy_c, path, proxy_h)
        timed_get(direct_c, path, direct_h)
    via, direct = [], []
    for _ in range(SMALL_N):
        via.append(timed_get(proxy_c, path, proxy_h))
        direct.append(timed_get(direct_c, path, direct_h))
    return via, direct


def speed(url, headers):
    cmd = ["curl", "-sS", "--fail", "-o", "/dev/null", "-w", "%{speed_download}", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    return float(subprocess.check_output(cmd)) / (1 << 20)


def main():
    c = conn(API.hostname, API.port)
    sbx = api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 600})
    sid = sbx["sandboxID"]
    try:
        run(c, sbx, f"head -c {SIZE_MIB}M /dev/urandom > /tmp/big && head -c 1024 /dev/urandom > /tmp/small")
        token = {"X-Access-Token": sbx["envdAccessToken"]}
        proxy_h = {**token, "E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(ENVD_PORT)}
        addr = node_record(sid, "net.json")["ip"]
        direct_h = {**token, "X-Soulbox-Envd-Secret": node_record(sid, "sandbox.json")["envdSecret"]}

        proxy_c, direct_c = conn(API.hostname, API.port), conn(addr, ENVD_PORT)
        for label, path in (("GET /health", "/health"), ("GET 1 KiB file", "/files?path=/tmp/small"))[:2 if SMALL_N else 0]:
            via, direct = small_requests(path, proxy_c, proxy_h, direct_c, direct_h)
            p50v, p50d = pct(via, 0.5), pct(direct, 0.5)
            print(f"{label:<16} proxy p50 {p50v:6.3f} ms p99 {pct(via, 0.99):6.3f}   "
                  f"direct p50 {p50d:6.3f} ms p99 {pct(direct, 0.99):6.3f}   added p50 {p50v - p50d:6.3f} ms  (n={SMALL_N})")

        via, direct = [], []
        for _ in range(ROUNDS):
            via.append(speed(f"http://{API.hostname}:{API.port}/files?path=/tmp/big", proxy_h))
            direct.append(speed(f"http://{addr}:{ENVD_PORT}/files?path=/tmp/big", direct_h))
        mv, md = statistics.median(via), statistics.median(direct)
        print(f"{SIZE_MIB} MiB download  proxy median {mv:7.1f} best {max(via):7.1f} MiB/s   "
              f"direct median {md:7.1f} best {max(direct):7.1f} MiB/s   ratio median {mv / md:4.2f} "
              f"best {max(via) / max(direct):4.2f}  (rounds={ROUNDS})")
    finally:
        api(c, "DELETE", f"/sandboxes/{sid}")


if __name__ == "__main__":
    sys.exit(main())
