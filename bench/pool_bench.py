"""Booted pool benchmark (not a test; issue 18 goal 1): run by bench/pool.sh once against a server without a booted
pool and once with `--booted-pool base=K`, on the same machine and data dir.

Measures (raw HTTP with http.client, and the official Python SDK):
  raw create p50/p90         POST /v2/sandboxes (base) until the 201, sequential, killed after each
  raw create+cmd p50         the same, then `true` through Process/Start via the proxy
  sdk create p50             Sandbox.create
  sdk create+cmd p50         Sandbox.create + commands.run("true")
  burst8 creates/s           8 creates at once (with the pool on: a full pool, every one a hit)
  sustained8 creates/s       TOTAL creates at concurrency 8 (with the pool on it drains: mostly misses)
With the pool on, every sequential create waits (untimed) until the pool holds a sandbox again, so each is a hit;
bench/pool.sh counts the hits in the server log. Prints one JSON object.
"""
import json
import os
import threading
import time

import server_bench as sb  # conn, api, raw_run, pct
from e2b import Sandbox

N = int(os.environ.get("N", "30"))
TOTAL = int(os.environ.get("TOTAL", "48"))
POOL = int(os.environ.get("POOL", "0"))
DATA = os.environ["SOULBOX_DATA_DIR"]


def pooled() -> int:
    """Sandboxes the runtime holds booted in its pool now (their records on disk)."""
    d = os.path.join(DATA, "node", "sandboxes")
    n = 0
    for sid in os.listdir(d):
        try:
            with open(os.path.join(d, sid, "sandbox.json")) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            continue
        n += rec.get("status") == "pooled" and rec.get("spec") is not None
    return n


def wait_pool(k: int) -> None:
    if POOL == 0:
        return
    deadline = time.time() + 30
    while pooled() < k and time.time() < deadline:
        time.sleep(0.01)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def raw(with_cmd: bool):
    c = sb.conn()
    times = []
    for _ in range(N):
        wait_pool(1)
        def one():
            s = sb.api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 120})
            if with_cmd:
                sb.raw_run(c, s, "true")
            return s
        ms, s = timed(one)
        times.append(ms)
        sb.api(c, "DELETE", f"/sandboxes/{s['sandboxID']}")
    return times


def sdk(with_cmd: bool):
    times = []
    for _ in range(N):
        wait_pool(1)
        def one():
            s = Sandbox.create(timeout=120)
            if with_cmd:
                s.commands.run("true")
            return s
        ms, s = timed(one)
        times.append(ms)
        s.kill()
    return times


def concurrent(total: int, conc: int = 8):
    ids, errors, lock = [], [], threading.Lock()

    def worker(k):
        c = sb.conn()
        for _ in range(k):
            try:
                s = sb.api(c, "POST", "/v2/sandboxes", {"templateID": "base", "timeout": 120})
                with lock:
                    ids.append(s["sandboxID"])
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=worker, args=(total // conc,)) for _ in range(conc)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    c = sb.conn()
    for i in ids:
        sb.api(c, "DELETE", f"/sandboxes/{i}")
    return len(ids) / elapsed, len(errors)


def main():
    # Warm-up (and, with the pool on, demand: the pool grows with the creates of the last minute).
    for _ in range(3):
        wait_pool(1)
        Sandbox.create(timeout=60).kill()
    out = {}
    for name, fn in (("raw_create", lambda: raw(False)), ("raw_create_cmd", lambda: raw(True)),
                     ("sdk_create", lambda: sdk(False)), ("sdk_create_cmd", lambda: sdk(True))):
        t = fn()
        out[name] = {"p50": round(sb.pct(t, 0.5), 1), "p90": round(sb.pct(t, 0.9), 1)}
    wait_pool(min(POOL, 8))
    out["pooled_before_burst"] = pooled() if POOL else 0
    rate, errors = concurrent(8)
    out["burst8"] = {"rate": round(rate, 1), "errors": errors}
    wait_pool(min(POOL, 8))
    rate, errors = concurrent(TOTAL)
    out["sustained8"] = {"rate": round(rate, 1), "errors": errors, "total": TOTAL}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
