"""Where a booted pool hit's time goes (issue 18 goal 1; not a test): run by bench/pool.sh on the log of the server
with the pool (JSON lines, SOULBOX_LOG with soulbox_server::lifecycle::create=debug).

Pairs each create's `create stages` line (the control plane's stages, µs) with the access log line of its
`POST /v2/sandboxes` (the whole request inside the server; by request id) and the runtime's `claimed from the
booted pool` line (the claim's stages; by sandbox id). Only hits served alone count (no other create overlapped
them: the sequential phases). Prints one JSON object: medians and p90s in ms.

    python3 bench/pool_stages.py SERVER_LOG
"""
import datetime
import json
import statistics
import sys

from benchlib import pct

CLAIM_STAGES = ("prep_us", "record_us", "clock_us", "fw_us", "envd_us", "saved_us")


def records(path):
    with open(path, errors="replace") as f:
        for line in f:
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict):
                yield r


def is_create_answer(r):
    return (r.get("target") == "soulbox::access" and r.get("method") == "POST"
            and r.get("path") in ("/sandboxes", "/v2/sandboxes") and int(r.get("status", 0)) == 201)


def start_end(r):
    """The request's (start, end) in seconds from its access line (logged at the end, with its duration)."""
    end = datetime.datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00")).timestamp()
    return end - float(r["duration_ms"]) / 1000, end


def hits(path):
    """(access ms, create stages record, claim record) per hit served alone (no other create at the same time)."""
    claims, stages, answers = {}, {}, []
    for r in records(path):
        msg = r.get("message", "")
        if msg == "claimed from the booted pool":
            claims[r.get("sandbox")] = r
        elif msg == "create stages":
            stages[r.get("request_id")] = r
        elif is_create_answer(r):
            answers.append((start_end(r), r))
    answers.sort(key=lambda a: a[0])
    out = []
    for i, ((start, end), r) in enumerate(answers):
        alone = (i == 0 or answers[i - 1][0][1] <= start) and (i + 1 == len(answers) or answers[i + 1][0][0] >= end)
        s = stages.get(r.get("request_id"))
        if alone and s is not None and s.get("sandbox") in claims:
            out.append((float(r["duration_ms"]), s, claims[s["sandbox"]]))
    return out


def summary(values):
    return {"p50_ms": round(statistics.median(values), 3), "p90_ms": round(pct(values, 0.9), 3)}


def main():
    found = hits(sys.argv[1])
    if not found:
        print(json.dumps({"hits": 0}))
        return
    rows = {}

    def add(name, ms):
        rows.setdefault(name, []).append(ms)

    for access_ms, stages, claim in found:
        create_ms = int(stages["us"]) / 1000
        add("server: whole request (access log)", access_ms)
        add("server: outside the lifecycle (auth, body, JSON answer)", access_ms - create_ms)
        add("lifecycle create", create_ms)
        parts = dict(p.split("=", 1) for p in str(stages.get("stages", "")).split())
        for name, us in parts.items():
            add(f"  {name}", int(us) / 1000)
        claim_ms = int(claim["us"]) / 1000
        add("    runtime claim", claim_ms)
        for k in CLAIM_STAGES:
            add(f"      {k[:-3]}", int(claim.get(k, 0)) / 1000)
        if "node_create" in parts:
            add("    node create outside the claim", int(parts["node_create"]) / 1000 - claim_ms)
    print(json.dumps({"hits": len(found), "stages": {k: summary(v) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
