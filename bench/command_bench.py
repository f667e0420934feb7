"""Command round trip benchmark (issue 18 goal 2; not a test): run by bench/command.sh against a running server.

One sandbox from `base`. In the same run, in alternating blocks (so load from other work on the machine falls on
every measurement alike), it times:
  (a) the official Python SDK's `commands.run("true")` through the server (what an agent loop pays), p50/p99
  (b) the same straight to envd at the sandbox's address (the server's proxy left out; as the node, with the
      sandbox's envd secret)
  (c) the baseline: a plain spawn of `bash -l -c true` as `user` inside the sandbox — a bash loop timing each
      spawn with $EPOCHREALTIME (no process of its own) — and, for context, of `bash -c true` and `/bin/true`
Goals: (a) p50 <= 3 ms and <= 1.5x (c)'s bash -l spawn.

Environment: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY (the server), SOULBOX_DATA_DIR (its data dir: the sandbox's
address and envd secret for (b)), N (samples per measurement, default 300), BLOCKS (default 6).
"""

import json
import os
import statistics
import time

from e2b import ConnectionConfig, Sandbox

N = int(os.environ.get("N", "300"))
BLOCKS = int(os.environ.get("BLOCKS", "6"))
WARMUP = 20

# Each iteration prints one spawn's duration in microseconds; $EPOCHREALTIME is read by the shell itself.
SPAWN_LOOP = r"""
t() {
  local a b
  for ((i = 0; i < $1; i++)); do a=${EPOCHREALTIME/./}; "${@:2}"; b=${EPOCHREALTIME/./}; echo $((b - a)); done
}
t {n} bash -l -c true | sed 's/^/login /'
t {n} bash -c true | sed 's/^/plain /'
t {n} /bin/true | sed 's/^/true /'
"""


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, -(-len(values) * p // 100) - 1))]


def record(sandbox_id, name):
    path = os.path.join(os.environ.get("SOULBOX_DATA_DIR", ""), "node", "sandboxes", sandbox_id, name)
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:
        return {}


def direct(sbx):
    """The same sandbox, its envd reached at the sandbox's own address (None if that is not known)."""
    ip = record(sbx.sandbox_id, "net.json").get("ip")
    secret = record(sbx.sandbox_id, "sandbox.json").get("envdSecret")
    if not ip or not secret:
        return None
    token = sbx._envd_access_token  # noqa: SLF001 — the SDK keeps it; the direct client needs it too
    headers = {"X-Soulbox-Envd-Secret": secret}
    if token:
        headers["X-Access-Token"] = token
    return Sandbox(
        sandbox_id=sbx.sandbox_id,
        sandbox_domain=None,
        envd_version=sbx._envd_version,  # noqa: SLF001
        envd_access_token=token,
        connection_config=ConnectionConfig(sandbox_url=f"http://{ip}:49983", extra_sandbox_headers=headers),
    )


def sdk_samples(sbx, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = sbx.commands.run("true")
        out.append((time.perf_counter() - t) * 1e3)
        assert r.exit_code == 0
    return out


def spawn_samples(sbx, n):
    r = sbx.commands.run(SPAWN_LOOP.replace("{n}", str(n)), timeout=600)
    assert r.exit_code == 0, r.stderr
    got = {"login": [], "plain": [], "true": []}
    for line in r.stdout.splitlines():
        kind, us = line.split()
        got[kind].append(int(us) / 1e3)
    return got


def main():
    sbx = Sandbox.create(timeout=600)
    try:
        near = direct(sbx)
        sdk_samples(sbx, WARMUP)
        if near:
            sdk_samples(near, WARMUP)
        spawn_samples(sbx, WARMUP)
        per_block = max(1, N // BLOCKS)
        proxied, straight, spawns = [], [], {"login": [], "plain": [], "true": []}
        for _ in range(BLOCKS):
            proxied += sdk_samples(sbx, per_block)
            if near:
                straight += sdk_samples(near, per_block)
            for kind, values in spawn_samples(sbx, per_block).items():
                spawns[kind] += values
    finally:
        sbx.kill()

    login = pct(spawns["login"], 50)
    rows = [
        ("(c) in-sandbox spawn: /bin/true", spawns["true"]),
        ("(c) in-sandbox spawn: bash -c true", spawns["plain"]),
        ("(c) in-sandbox spawn: bash -l -c true (user)", spawns["login"]),
        ("(a) SDK commands.run(\"true\") via the server", proxied),
    ]
    if straight:
        rows.append(("(b) SDK commands.run(\"true\") straight to envd", straight))
    print(f"\ncommand round trip  (n={len(proxied)} per row, {BLOCKS} alternating blocks; {os.uname().release}, "
          f"{os.cpu_count()} CPUs)")
    print(f"{'measurement':48} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'vs bash -l':>10}")
    for name, values in rows:
        p50 = pct(values, 50)
        print(f"{name:48} {p50:8.3f} {pct(values, 99):8.3f} {statistics.mean(values):8.3f} {p50 / login:9.2f}x")
    p50 = pct(proxied, 50)
    print(f"goal: SDK p50 <= 3 ms: {'ok' if p50 <= 3 else 'MISSED'} ({p50:.3f} ms); "
          f"<= 1.5x bash -l spawn: {'ok' if p50 <= 1.5 * login else 'MISSED'} ({p50 / login:.2f}x)")


if __name__ == "__main__":
    main()
