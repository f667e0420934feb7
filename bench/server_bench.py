"""soulbox server benchmark (not a test): run by bench/server.sh against a running server.

Prints:
  (a) Sandbox.create -> first command result, through the official Python SDK, p50/p99
  (b) the same through a raw HTTP client (http.client: POST /v2/sandboxes, then Process/Start via the proxy)
  (c) creates per second at concurrency 1, 8 and 32 (raw HTTP; every sandbox is killed afterwards)
  (d) a 256 MiB download through the server's proxy vs straight from envd at the sandbox's address
Goals: create p50 < 60 ms end to end; proxy throughput >= 80 % of direct.
"""
import base64
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

from benchlib import api, conn, pct  # noqa: F401 (pool_bench uses them through this module)
from e2b import Sandbox

API = urllib.parse.urlparse(os.environ["E2B_API_URL"])
KEY = os.environ["E2B_API_KEY"]
N = int(os.environ.get("N", "30"))
SIZE_MIB = int(os.environ.get("SIZE_MIB", "256"))


def raw_run(c, sandbox, cmd):
    payload = json.dumps({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", cmd]}, "stdin": False}).encode()
    c.request("POST", "/process.Process/Start", body=b"\0" + struct.pack(">I", len(payload)) + payload, headers={
        "Content-Type": "application/connect+json", "Connect-Protocol-Version": "1",
        "E2b-Sandbox-Id": sandbox["sandboxID"], "E2b-Sandbox-Port": "49983",
        "X-Access-Token": sandbox.get("envdAccessToken") or "",
    })
    r = c.getresponse()
    body = r.read()
    out, pos = b"", 0
    while pos + 5 <= len(body):
        flags, length = body[pos], struct.unpack(">I", body[pos + 1:pos + 5])[0]
        msg = json.loads(body[pos + 5:pos + 5 + length])
        pos += 5 + length
        data = msg.get("event", {}).get("data", {})
        if "stdout" in data:
            out += base64.b64decode(data["stdout"])
    return out


def bench_sdk():
    times = []
    for _ in range(N):
        t = time.perf_counter()
        sbx = Sandbox.create(timeout=120)
        sbx.commands.run("true")
        times.append((time.perf_counter() - t) * 1000)
        sbx.kill()
    return times


def bench_raw():
    times = []
    c = conn()
    for _ in range(N):
        t = time.perf_counter()
        sbx = api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 120})
        raw_run(c, sbx, "true")
        times.append((time.perf_counter() - t) * 1000)
        api(c, "DELETE", f"/sandboxes/{sbx['sandboxID']}")
    return times


def creates_per_second(concurrency, total):
    ids, errors, lock = [], [], threading.Lock()
    per_thread = total // concurrency

    def worker():
        c = conn()
        for _ in range(per_thread):
            try:
                sbx = api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 120})
                with lock:
                    ids.append(sbx["sandboxID"])
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    c = conn()
    for i in ids:
        api(c, "DELETE", f"/sandboxes/{i}")
    return len(ids) / elapsed, len(errors)


def throughput(url, headers):
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{speed_download}", url]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    best = 0.0
    for _ in range(3):
        best = max(best, float(subprocess.check_output(cmd)) / (1 << 20))
    return best


def bench_proxy():
    c = conn()
    sbx = api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 300})
    try:
        raw_run(c, sbx, f"head -c {SIZE_MIB}M /dev/urandom > /tmp/big")
        headers = {"X-Access-Token": sbx["envdAccessToken"]}
        via_proxy = throughput(f"http://{API.hostname}:{API.port}/files?path=/tmp/big",
                               {**headers, "E2b-Sandbox-Id": sbx["sandboxID"], "E2b-Sandbox-Port": "49983"})
        # Straight to envd at the sandbox's address (recorded by the node runtime), bypassing the proxy: as the
        # node, with the envd secret from the sandbox's record (envd answers nothing else).
        addr, secret = sandbox_address(sbx["sandboxID"]), sandbox_secret(sbx["sandboxID"])
        direct_headers = {**headers, "X-Soulbox-Envd-Secret": secret or ""}
        direct = throughput(f"http://{addr}:49983/files?path=/tmp/big", direct_headers) if addr else None
        return via_proxy, direct
    finally:
        api(c, "DELETE", f"/sandboxes/{sbx['sandboxID']}")


def sandbox_address(sandbox_id):
    data_dir = os.environ.get("SOULBOX_DATA_DIR", "")
    lease = os.path.join(data_dir, "node", "sandboxes", sandbox_id, "net.json")
    try:
        with open(lease) as f:
            return json.load(f).get("ip")
    except OSError:
        return None


def sandbox_secret(sandbox_id):
    data_dir = os.environ.get("SOULBOX_DATA_DIR", "")
    record = os.path.join(data_dir, "node", "sandboxes", sandbox_id, "sandbox.json")
    try:
        with open(record) as f:
            return json.load(f).get("envdSecret")
    except OSError:
        return None


def main():
    rows = []
    sdk = bench_sdk()
    rows.append(("create -> first command, Python SDK", pct(sdk, 0.5), pct(sdk, 0.99), "ms"))
    raw = bench_raw()
    rows.append(("create -> first command, raw HTTP", pct(raw, 0.5), pct(raw, 0.99), "ms"))
    for name, p50, p99, unit in rows:
        print(f"{name:<40} p50 {p50:8.1f} {unit}   p99 {p99:8.1f} {unit}   (n={N})")
    for conc in (1, 8, 32):
        rate, errors = creates_per_second(conc, 64 if conc > 1 else 32)
        print(f"creates/s at concurrency {conc:<2}               {rate:8.1f} /s   errors {errors}")
    via_proxy, direct = bench_proxy()
    if direct:
        print(f"{SIZE_MIB} MiB download: proxy {via_proxy:8.1f} MiB/s   direct {direct:8.1f} MiB/s   ratio {via_proxy / direct:5.2f}")
    else:
        print(f"{SIZE_MIB} MiB download: proxy {via_proxy:8.1f} MiB/s   direct: sandbox address not found")


if __name__ == "__main__":
    sys.exit(main())
