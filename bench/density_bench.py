"""soulbox density benchmark (issue 18 goal 4; not a test): run by bench/server.sh against a running server.

    BENCH=bench/density_bench.py N=1000 SOULBOX_BENCH_DATA=/var/tmp/soulbox-<you> PORT=<port> bench/server.sh

N idle `base` sandboxes created through the REST API (raw HTTP, CONCURRENCY at once), then:
  (a) host memory per idle sandbox: MemAvailable, Slab, Shmem and the kernel's page tables / stacks before and
      after, the sandboxes' own cgroups (memory.current and its memory.stat breakdown), the server's RSS — each
      divided by the sandboxes added (the marginal cost: the fixed cost of the server and the warm pool is in the
      baseline taken with BASE sandboxes running)
  (b) latencies with BASE and with N running: GET /v2/sandboxes?limit=BASE (the same page size, so the answer is
      the same size), the default page (100), GET /sandboxes/{id}, and envd's GET /health through the proxy
  (c) the server's CPU while idle over IDLE_S seconds (/proc/<pid>/stat), its threads by name, and the metrics
      sampler's share (soulbox_metrics_sampler_* from GET /metrics)
Every sandbox the run made is killed at the end, also when it fails (CONCURRENCY kills at once, every page of the
listing); bench/server.sh then kills whatever is left.
Goals: ≤ 5 MiB of host memory per idle sandbox; latencies at N ≤ 1.5× at BASE; the sampler < 10 % of one core.
"""
import os
import statistics
import sys
import time
import tomllib
import urllib.parse

import benchlib  # noqa: E402
from benchlib import all_ids, api, pct, request  # noqa: E402,F401

API = urllib.parse.urlparse(os.environ["E2B_API_URL"])
N = int(os.environ.get("N", "1000"))
BASE = int(os.environ.get("BASE", "10"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
REPS = int(os.environ.get("REPS", "300"))
IDLE_S = float(os.environ.get("IDLE_S", "30"))
TEMPLATE = os.environ.get("TEMPLATE", "base")
def server_prefix():
    """The server's prefix: SOULBOX_PREFIX, else the bench data dir's config.toml (which names its cgroups)."""
    if os.environ.get("SOULBOX_PREFIX"):
        return os.environ["SOULBOX_PREFIX"]
    config = os.path.join(os.environ.get("SOULBOX_BENCH_DATA", "/var/tmp/soulbox-bench-server"), "config.toml")
    try:
        with open(config, "rb") as f:
            return tomllib.load(f).get("prefix", "sbx")
    except FileNotFoundError:
        return "sbx"


PREFIX = server_prefix()
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024


def conn():
    return benchlib.conn(timeout=120)


def in_parallel(items, work):
    return benchlib.in_parallel(items, work, CONCURRENCY, conn)


def create_many(count):
    def one(c, _):
        return api(c, "POST", "/sandboxes", {"templateID": TEMPLATE, "timeout": 3600})["sandboxID"]
    t = time.perf_counter()
    ids, errors = in_parallel(range(count), one)
    return ids, errors, time.perf_counter() - t


def kill_all(ids):
    def one(c, sid):
        status, data = request(c, "DELETE", f"/sandboxes/{sid}")
        if status not in (200, 204, 404):
            raise RuntimeError(f"{status} {data[:200]!r}")
    t = time.perf_counter()
    _, errors = in_parallel(ids, one)
    return errors, time.perf_counter() - t


def meminfo():
    out = {}
    for line in open("/proc/meminfo"):
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def server_pid():
    needle = f"127.0.0.1:{API.port}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if needle in argv and b"server" in argv:
            return int(d)
    raise RuntimeError("no server process listening on " + needle.decode())


def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_ticks(stat_path, children=False):
    fields = open(stat_path).read().rsplit(")", 1)[1].split()
    own = int(fields[11]) + int(fields[12])  # utime + stime
    # cutime + cstime: the helpers it ran and reaped (nft, runc, mount tools)
    return own + (int(fields[13]) + int(fields[14]) if children else 0)


def threads(pid):
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            out[tid] = (name, cpu_ticks(f"/proc/{pid}/task/{tid}/stat"))
        except OSError:
            pass
    return out


def cgroup_dirs():
    """The sandboxes' memory cgroups (v2, else v1's memory hierarchy)."""
    name = "soulbox" if PREFIX == "sbx" else f"soulbox_{PREFIX}"  # RuntimeConfig's cgroup parent
    parent = f"/sys/fs/cgroup/{name}"
    if not os.path.exists(os.path.join(parent, "cgroup.controllers")):
        parent = f"/sys/fs/cgroup/memory/{name}"
    try:
        return [os.path.join(parent, d) for d in os.listdir(parent) if os.path.isdir(os.path.join(parent, d))]
    except FileNotFoundError:
        return []


# memory.stat keys worth showing (v2 names, then v1's), and the file with the total.
CG_KEYS = ("anon", "file", "kernel", "kernel_stack", "pagetables", "sock", "shmem", "slab", "percpu",
           "rss", "cache", "mapped_file")


def cgroups():
    """Sum over the sandboxes' cgroups: the charged total and memory.stat's main keys."""
    total = {"count": 0, "current": 0, "kmem": 0, **{k: 0 for k in CG_KEYS}}
    for d in cgroup_dirs():
        try:
            v2 = os.path.exists(os.path.join(d, "memory.current"))
            total["current"] += int(open(os.path.join(d, "memory.current" if v2 else "memory.usage_in_bytes")).read())
            if not v2 and os.path.exists(os.path.join(d, "memory.kmem.usage_in_bytes")):
                total["kmem"] += int(open(os.path.join(d, "memory.kmem.usage_in_bytes")).read())
            for line in open(os.path.join(d, "memory.stat")):
                k, v = line.split()
                if k in CG_KEYS:
                    total[k] += int(v)
            total["count"] += 1
        except (OSError, ValueError):
            pass
    return total


def slabs():
    """Bytes per slab cache (/proc/slabinfo: active objects x object size)."""
    out = {}
    try:
        for line in open("/proc/slabinfo").readlines()[2:]:
            f = line.split()
            out[f[0]] = int(f[2]) * int(f[3])
    except OSError:
        pass
    return out


def sampler_metrics(c):
    status, data = request(c, "GET", "/metrics")
    out = {}
    if status == 200:
        for line in data.decode().splitlines():
            if line.startswith("soulbox_metrics_sampler_"):
                name, value = line.split()[:2]
                out[name] = float(value)
    return out


def snapshot(pid):
    return {"mem": meminfo(), "rss": rss(pid), "cg": cgroups(), "slab": slabs(), "nofile": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": len(os.listdir(f"/proc/{pid}/task"))}


def latencies(c, ids):
    sid = ids[0]
    token = api(c, "GET", f"/sandboxes/{sid}").get("envdAccessToken") or ""
    out = {}

    def timed(name, method, path, headers=None):
        times = []
        for _ in range(REPS):
            t = time.perf_counter()
            status, _ = request(c, method, path, headers=headers)
            times.append((time.perf_counter() - t) * 1000)
            if status != 200:
                raise RuntimeError(f"{name}: {status}")
        out[name] = (statistics.median(times), pct(times, 0.99))

    timed(f"list (limit={BASE})", "GET", f"/v2/sandboxes?limit={BASE}")
    timed("list (default page)", "GET", "/v2/sandboxes")
    timed("get", "GET", f"/sandboxes/{sid}")
    timed("proxy /health", "GET", "/health", {"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983",
                                              "X-Access-Token": token})
    return out


def idle_cpu(pid, c):
    stat = f"/proc/{pid}/stat"
    before_proc, before_all = cpu_ticks(stat), cpu_ticks(stat, children=True)
    before_threads, before_sampler = threads(pid), sampler_metrics(c)
    t = time.perf_counter()
    time.sleep(IDLE_S)
    wall = time.perf_counter() - t
    after_proc, after_all = cpu_ticks(stat), cpu_ticks(stat, children=True)
    after_threads, after_sampler = threads(pid), sampler_metrics(c)
    by_name = {}
    for tid, (name, ticks) in after_threads.items():
        by_name[name] = by_name.get(name, 0) + ticks - before_threads.get(tid, (name, 0))[1]
    core_pct = lambda ticks: ticks / TICK / wall * 100  # noqa: E731
    sampler = None
    key = "soulbox_metrics_sampler_cpu_seconds_total"
    if key in after_sampler:
        sampler = (after_sampler[key] - before_sampler.get(key, 0)) / wall * 100
    rounds = after_sampler.get("soulbox_metrics_sampler_rounds_total", 0) - before_sampler.get(
        "soulbox_metrics_sampler_rounds_total", 0)
    top = sorted(((core_pct(v), k) for k, v in by_name.items() if v > 0), reverse=True)[:6]
    children = core_pct((after_all - before_all) - (after_proc - before_proc))
    return core_pct(after_proc - before_proc), children, sampler, rounds, top


def main():
    sys.stdout.reconfigure(line_buffering=True)  # the results show while the kills still run
    pid = server_pid()
    c = conn()
    made, failures = [], []
    try:
        ids, errors, _ = create_many(BASE)
        made += ids
        failures += errors
        if errors:
            raise RuntimeError(f"{len(errors)} of {BASE} creates failed: {errors[:3]}")
        time.sleep(3)
        at_base = snapshot(pid)
        lat_base = latencies(c, made)
        cpu_base = idle_cpu(pid, c)

        ids, errors, took = create_many(N - BASE)
        made += ids
        failures += errors
        print(f"created {len(made)} sandboxes ({len(ids)} in {took:.1f} s, {len(ids) / took:.1f}/s), "
              f"{len(errors)} errors{': ' + '; '.join(errors[:3]) if errors else ''}", flush=True)
        time.sleep(10)  # let the creates' transient memory (page cache of writes, buffers) settle
        at_n = snapshot(pid)
        c.close()
        c = conn()  # the first one sat idle through the creates: the server may have closed it
        lat_n = latencies(c, made)
        cpu_n = idle_cpu(pid, c)
        added = len(made) - BASE

        print(f"\n(a) host memory per idle sandbox ({added} added to {BASE}; MiB per sandbox)")
        m0, m1 = at_base["mem"], at_n["mem"]
        rows = [("MemAvailable (drop)", m0["MemAvailable"] - m1["MemAvailable"]),
                ("MemFree (drop)", m0["MemFree"] - m1["MemFree"]),
                ("Slab", m1["Slab"] - m0["Slab"]), ("  SUnreclaim", m1["SUnreclaim"] - m0["SUnreclaim"]),
                ("AnonPages", m1["AnonPages"] - m0["AnonPages"]), ("Buffers", m1["Buffers"] - m0["Buffers"]),
                ("Cached", m1["Cached"] - m0["Cached"]), ("Shmem", m1["Shmem"] - m0["Shmem"]),
                ("VmallocUsed", m1["VmallocUsed"] - m0["VmallocUsed"]), ("PageTables", m1["PageTables"] - m0["PageTables"]),
                ("KernelStack", m1["KernelStack"] - m0["KernelStack"]),
                ("Percpu", m1.get("Percpu", 0) - m0.get("Percpu", 0)),
                ("server RSS", at_n["rss"] - at_base["rss"])]
        cg0, cg1 = at_base["cg"], at_n["cg"]
        cg_added = max(1, cg1["count"] - cg0["count"])
        for k in ("current", "kmem") + CG_KEYS:
            if cg1[k] or cg0[k]:
                rows.append((f"cgroups {k}", (cg1[k] - cg0[k]) * added / cg_added))
        for name, delta in rows:
            print(f"  {name:24} {delta / added / MIB:8.2f}")
        # MemAvailable moves with everything else on the host (other builds on a shared machine); this sum counts
        # only what the sandboxes are charged or what the kernel holds for them and cannot reclaim.
        held = dict(rows)
        attributable = (held["cgroups current"] if "cgroups current" in held else 0) + held["  SUnreclaim"] + \
            held["KernelStack"] + held["PageTables"] + held["VmallocUsed"] + held["Percpu"] + held["server RSS"]
        print(f"  {'ATTRIBUTABLE':24} {attributable / added / MIB:8.2f}   (cgroups + unreclaimable slab + kernel "
              "stacks + page tables + vmalloc + percpu + server RSS)")
        s0, s1 = at_base["slab"], at_n["slab"]
        grown = sorted(((s1[k] - s0.get(k, 0), k) for k in s1), reverse=True)[:12]
        print("  slab caches that grew: " + ", ".join(f"{k} {d / added / 1024:.0f} KiB" for d, k in grown if d > 0))
        print(f"  (cgroups counted: {cg0['count']} -> {cg1['count']}; server fds {at_base['nofile']} -> "
              f"{at_n['nofile']}, threads {at_base['threads']} -> {at_n['threads']})")

        print(f"\n(b) latency p50 / p99 ms, {REPS} sequential requests each")
        print(f"  {'request':24} {'at ' + str(BASE):>18} {'at ' + str(len(made)):>18} {'ratio p50':>10}")
        for name in lat_base:
            (b50, b99), (n50, n99) = lat_base[name], lat_n[name]
            print(f"  {name:24} {b50:8.2f} / {b99:7.2f} {n50:8.2f} / {n99:7.2f} {n50 / b50:9.2f}x")

        print(f"\n(c) server CPU while idle over {IDLE_S:.0f} s (% of one core)")
        for label, (total, children, sampler, rounds, top) in ((f"at {BASE}", cpu_base), (f"at {len(made)}", cpu_n)):
            s = f"{sampler:.2f} % in {rounds:.0f} rounds" if sampler is not None else "n/a (no sampler metrics)"
            print(f"  {label:8} server {total:6.2f} % (+ {children:.2f} % in helper processes it ran), "
                  f"metrics sampler {s}")
            print("           threads: " + ", ".join(f"{name} {p:.1f} %" for p, name in top))
    finally:
        c.close()
        left = all_ids(conn)
        errors, took = kill_all(left)
        print(f"\nkilled {len(left) - len(errors)} of {len(left)} sandboxes in {took:.1f} s"
              + (f", errors: {errors[:3]}" if errors else ""), flush=True)
        remaining = all_ids(conn)
        if remaining:
            print(f"{len(remaining)} sandboxes still listed after the kills", file=sys.stderr)
        if failures:
            print(f"{len(failures)} creates failed: {failures[:5]}", file=sys.stderr)
    if failures or remaining:
        sys.exit(1)


if __name__ == "__main__":
    main()
