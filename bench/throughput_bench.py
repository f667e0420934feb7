"""soulbox create/kill throughput at concurrency 8 (issue 18 goal 3; not a test): run by bench/throughput.sh.

For each LEVEL (default 10 and 300): first tops the node up to LEVEL running `base` sandboxes (untimed, kept),
then TOTAL creates through the REST API (raw HTTP, CONCURRENCY at once; the created ones are kept while the rest
of the phase runs), then kills those TOTAL (CONCURRENCY at once). Reports creates/s and kills/s, request p50/p90,
errors, and a per-stage breakdown of one create and one kill from the server's debug log (SERVER_LOG, written with
SOULBOX_LOG=info,soulbox_runtime=debug): each request's start and end as the client saw them, the runtime's stage
lines for that sandbox in between. PERF_DIR set: `perf record -a -g` runs during each timed create phase.
Every sandbox is killed at the end, also on failure. Prints one JSON object.
"""
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

from benchlib import all_ids, pct, request  # noqa: E402
import benchlib  # noqa: E402

LEVELS = [int(x) for x in os.environ.get("LEVELS", "10,300").split(",")]
TOTAL = int(os.environ.get("TOTAL", "48"))
CONCURRENCY = int(os.environ.get("CONCURRENCY", "8"))
TEMPLATE = os.environ.get("TEMPLATE", "base")
SERVER_LOG = os.environ.get("SERVER_LOG", "")
PERF_DIR = os.environ.get("PERF_DIR", "")
LABEL = os.environ.get("LABEL", "run")


def conn():
    return benchlib.conn(timeout=300)


def in_parallel(items, work):
    return benchlib.in_parallel(items, work, CONCURRENCY, conn)


def create_one(c, _):
    t0 = time.time()
    status, data = request(c, "POST", "/sandboxes", {"templateID": TEMPLATE, "timeout": 3600})
    if status >= 300:
        raise RuntimeError(f"create: {status} {data[:200]!r}")
    return json.loads(data)["sandboxID"], t0, time.time()


def kill_one(c, sid):
    t0 = time.perf_counter(), time.time()
    status, data = request(c, "DELETE", f"/sandboxes/{sid}")
    if status not in (200, 204, 404):
        raise RuntimeError(f"kill {sid}: {status} {data[:200]!r}")
    return sid, t0[1], time.time()


def timed(items, work):
    t = time.perf_counter()
    done, errors = in_parallel(items, work)
    wall = time.perf_counter() - t
    lat = [(end - start) * 1000 for _, start, end in done]
    return done, {"n": len(done), "errors": len(errors), "first_errors": errors[:3], "rate": len(done) / wall,
                  "wall_s": wall, "p50_ms": pct(lat, 0.5), "p90_ms": pct(lat, 0.9)}


CREATE_STAGES = ["network: namespace and links set up", "firewall: sandbox added", "rootfs mounted, bundle written",
                 "runtime create done", "runtime start done", "envd ready"]
KILL_STAGES = ["release: runtime state deleted", "release: log drained", "release: cgroups removed",
               "firewall: sandbox removed", "release: firewall and network gone"]


ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELD = re.compile(r'\s(\w+)=("[^"]*"|\S+)')


def log_events():
    """sandbox -> [(time, stage, fields)] for every stage line of the runtime's debug log."""
    if not SERVER_LOG:
        return {}
    events, stages = {}, CREATE_STAGES + KILL_STAGES
    for raw in open(SERVER_LOG, errors="replace"):
        line = ANSI.sub("", raw.rstrip("\n"))
        # The message exactly: "envd ready" is not "envd ready or not, …".
        found = next((m for m in (re.search(f" {re.escape(s)}(?= \\w+=|$)", line) for s in stages) if m), None)
        if not found:
            continue
        stage = found.group(0).strip()
        fields = {k: v.strip('"') for k, v in FIELD.findall(line[found.end():])}
        if "sandbox" not in fields:
            continue
        try:
            t = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        events.setdefault(fields["sandbox"], []).append((t, stage, fields))
    return events


def breakdown(done, stages, events):
    """Median ms from the previous stage (the request's start first) to each stage, and to the response; the
    firewall's own wait for its lock and `nft` run; how many requests had each stage."""
    gaps, extra = {s: [] for s in stages + ["(response)"]}, {"firewall lock wait": [], "firewall nft run": []}
    for sid, start, end in done:
        prev = start
        for t, msg, f in sorted(events.get(sid, [])):
            if not start <= t <= end + 0.001 or msg not in stages:
                continue
            gaps[msg].append((t - prev) * 1000)
            prev = t
            if msg.startswith("firewall:"):
                extra["firewall lock wait"].append(int(f.get("wait_us", 0)) / 1000)
                extra["firewall nft run"].append(int(f.get("nft_us", 0)) / 1000)
        gaps["(response)"].append((end - prev) * 1000)
    out = {k: {"p50_ms": round(statistics.median(v), 1), "n": len(v)} for k, v in gaps.items() if v}
    out.update({k: {"p50_ms": round(statistics.median(v), 1), "n": len(v)} for k, v in extra.items() if v})
    return out


def perf_start(name):
    if not PERF_DIR:
        return None
    path = os.path.join(PERF_DIR, f"perf-{LABEL}-{name}.data")
    p = subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", path],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return p


def perf_stop(p):
    if p:
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)


def main():
    results = {}
    try:
        for level in LEVELS:
            have = len(all_ids(conn))
            _, errors = in_parallel(range(max(0, level - have)), create_one)
            if errors:
                raise RuntimeError(f"topping up to {level}: {errors[:3]}")
            time.sleep(3)  # the warm pool refills
            p = perf_start(str(level))
            created, creates = timed(range(TOTAL), create_one)
            perf_stop(p)
            time.sleep(1)
            killed, kills = timed([sid for sid, _, _ in created], kill_one)
            time.sleep(1)  # the log lines of the last requests are written
            events = log_events()
            creates["stages"] = breakdown(created, CREATE_STAGES, events)
            kills["stages"] = breakdown(killed, KILL_STAGES, events)
            results[str(level)] = {"running_after_kills": len(all_ids(conn)), "create": creates, "kill": kills}
            print(f"{LABEL} at {level}: {creates['rate']:.1f} creates/s, {kills['rate']:.1f} kills/s", file=sys.stderr)
    finally:
        left = all_ids(conn)
        t = time.perf_counter()
        _, errors = in_parallel(left, lambda c, sid: kill_one(c, sid))
        results["cleanup"] = {"killed": len(left), "errors": len(errors), "wall_s": time.perf_counter() - t}
        print(json.dumps(results))


main()
