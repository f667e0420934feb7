"""Issue 7 proof: one `soulbox server` in cluster mode and three `soulbox node` agents as separate processes on
this machine (own data dirs, prefixes sbc1..sbc3, pools 10.81/10.82/10.83.0.0/16), driven through the server's
HTTP API, the `soulbox` CLI and the official e2b Python SDK. Phases add agents: node4 (sbc4, 10.84.0.0/16,
moving off a drained node), a second, small cluster for shared volumes (its own control plane on SQLite with
`volumes_shared = true`, node5/node6 on sbc5/sbc6, 10.85/10.86.0.0/16), node7 (sbc7, 10.87.0.0/16, a booted pool)
and node8 (sbc8, 10.88.0.0/16, gVisor: pause to disk across a kill -9 of the agent).

Run through tests/cluster/run.sh (root; it builds, seeds the template store and cleans up host objects even when
this script dies). Environment: SOULBOX_BIN, SOULBOX_ENVD, SOULBOX_CLUSTER_DIR (run dir), SOULBOX_TEMPLATE_DIR,
SOULBOX_CLUSTER_DATABASE_URL (default SQLite in the run dir; a postgres:// URL plugs in a shared database).
"""

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import urllib.error
import urllib.request

BIN = os.environ["SOULBOX_BIN"]
ENVD = os.environ["SOULBOX_ENVD"]
RUN_DIR = os.environ["SOULBOX_CLUSTER_DIR"]
TEMPLATE_DIR = os.environ["SOULBOX_TEMPLATE_DIR"]
DB_URL = os.environ.get("SOULBOX_CLUSTER_DATABASE_URL") or f"sqlite://{RUN_DIR}/server/soulbox.db?mode=rwc"
NODES = [("node1", "sbc1", "10.81.0.0/16"), ("node2", "sbc2", "10.82.0.0/16"), ("node3", "sbc3", "10.83.0.0/16")]
HEARTBEAT_TIMEOUT_S = 3
LOST_AFTER_S = 3
TOKEN = secrets.token_hex(20)
# Replicas on one database share the secrets key (README): it seals team secrets and the egress CA's key.
SECRETS_KEY = __import__("base64").b64encode(secrets.token_bytes(32)).decode()
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

procs = {}
ports = {}
api_url = ""
api_key = ""
agent_server = ""


def log(msg):
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def call(method, path, body=None, expect=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(api_url + path, data=data, method=method, headers={"X-API-Key": api_key, "Content-Type": "application/json"})
    try:
        with OPENER.open(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    value = json.loads(text) if text.strip() else None
    if expect is not None:
        assert status == expect, f"{method} {path}: expected {expect}, got {status}: {text}"
    return status, value


def wait_for(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def remember(proc):
    """run.sh kills what a crashed test left running, by these pids."""
    with open(f"{RUN_DIR}/pids", "a") as f:
        f.write(f"{proc.pid}\n")
    return proc


REPLICATED = DB_URL.startswith("postgres")
replica_urls = {}


def start_server(name="server", database_url=DB_URL):
    """Starts a control-plane replica; returns its URL and the admin key it printed (None after the first start).
    A `config.toml` already in `<RUN_DIR>/<name>` is its config file."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    replica_urls[name] = url
    os.makedirs(f"{RUN_DIR}/{name}", exist_ok=True)
    out = open(f"{RUN_DIR}/{name}.log", "ab")
    procs[name] = remember(subprocess.Popen(
        [BIN, "--data-dir", f"{RUN_DIR}/{name}", "server", "--listen", f"127.0.0.1:{port}", "--database-url", database_url,
         "--node-token", TOKEN, "--node-heartbeat-timeout-s", str(HEARTBEAT_TIMEOUT_S), "--node-lost-after-s", str(LOST_AFTER_S)],
        stdout=subprocess.PIPE, stderr=out, env={**os.environ, "SOULBOX_LOG": "info", "SOULBOX_SECRETS_KEY": SECRETS_KEY}))
    for line in procs[name].stdout:
        line = line.decode()
        # Off a terminal the first admin key goes to <data-dir>/admin-key (0600); the line names the file.
        key_file = f"{RUN_DIR}/{name}/admin-key"
        if line.startswith("export E2B_API_KEY=") and key_file in line:
            with open(key_file) as f:
                return url, f.read().strip()
        if line.startswith("export E2B_API_KEY=<"):
            return url, None
    raise AssertionError(f"{name} exited during start; see {name}.log")


def start_node(name, prefix, pool, template_dir=TEMPLATE_DIR, server=None, volumes_dir=None, extra=()):
    port = ports.setdefault(name, free_port())
    out = open(f"{RUN_DIR}/{name}.log", "ab")
    extra = [*(["--volumes-dir", volumes_dir] if volumes_dir else []), *extra]
    procs[name] = remember(subprocess.Popen(
        [BIN, "--data-dir", f"{RUN_DIR}/{name}", "node", "--server", server or agent_server, "--token", TOKEN, "--node-id", name,
         "--listen", f"127.0.0.1:{port}", "--region", "test", "--heartbeat-interval-s", "1", "--template-dir", template_dir,
         "--envd-path", ENVD, "--prefix", prefix, "--network-pool", pool, "--warm-pool", "1", *extra],
        stdout=out, stderr=out, env={**os.environ, "SOULBOX_LOG": "info"}))


def nodes():
    return {n["nodeID"]: n for n in call("GET", "/nodes", expect=200)[1]}


def status_of(name):
    return nodes().get(name, {}).get("status")


def runc_ids(name):
    """Sandboxes that really run on a node: its runtime's OCI containers."""
    out = subprocess.run(["runc", "--root", f"{RUN_DIR}/{name}/node/oci", "list", "-q"], capture_output=True, text=True)
    return set(out.stdout.split())


def create(expect=201):
    status, body = call("POST", "/sandboxes", {"templateID": "base", "timeout": 600})
    assert status == expect, f"create: expected {expect}, got {status}: {body}"
    return body


def placement(ids):
    return {sid: next((n for n, _, _ in NODES if sid in runc_ids(n)), None) for sid in ids}


def run_in(sandbox_id, cmd):
    from e2b import Sandbox
    sbx = Sandbox.connect(sandbox_id)
    return sbx.commands.run(cmd).stdout


def cli(*args):
    env = {**os.environ, "SOULBOX_API_URL": api_url, "SOULBOX_API_KEY": api_key}
    r = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"soulbox {' '.join(args)}: exit {r.returncode}: {r.stderr}"
    return r.stdout


def main():
    global api_key, api_url, agent_server
    api_url, api_key = start_server("server")
    assert api_key, "the cluster test needs a fresh store (the admin key is printed on first start only)"
    agent_server = api_url
    if REPLICATED:
        # A second replica on the same database; the agents heartbeat to it while the test talks to the first, so
        # every check below also shows the first replica seeing nodes, placements and sandboxes through the database.
        agent_server, second_key = start_server("replica2")
        assert second_key is None, "the second replica found the first one's admin key in the shared database"
    os.environ.update({"E2B_API_URL": api_url, "E2B_SANDBOX_URL": api_url, "E2B_API_KEY": api_key, "NO_PROXY": "*"})
    log(f"server on {api_url}" + (f", replica on {agent_server} (PostgreSQL)" if REPLICATED else "") + "; starting three node agents")
    for name, prefix, pool in NODES:
        start_node(name, prefix, pool)
    wait_for("three healthy nodes", lambda: all(status_of(n) == "healthy" for n, _, _ in NODES))
    listed = nodes()
    assert listed["node1"]["region"] == "test" and listed["node1"]["cpuCount"] >= 1 and listed["node1"]["address"], listed
    assert "NODE" in cli("nodes", "list") and "node2" in cli("nodes", "list")

    log("spread: six creates over three equal nodes → two each")
    first = [create()["sandboxID"] for _ in range(6)]
    where = placement(first)
    counts = {n: list(where.values()).count(n) for n, _, _ in NODES}
    assert counts == {"node1": 2, "node2": 2, "node3": 2}, f"placement {where}"
    for sid in first[:3]:
        assert run_in(sid, "echo hi from $(hostname)").startswith("hi from"), sid

    log("sandbox logs through the node agent's wire: E2B's start/limit select on the node")
    lines = wait_for("the first log line", lambda: call("GET", f"/sandboxes/{first[0]}/logs", expect=200)[1]["logs"], 30)
    assert any("envd listening" in entry["line"] for entry in lines), lines
    assert len(call("GET", f"/sandboxes/{first[0]}/logs?limit=1", expect=200)[1]["logs"]) == 1
    assert call("GET", f"/sandboxes/{first[0]}/logs?start=32503680000000", expect=200)[1]["logs"] == []

    admin_commands_on_the_database()

    log("drain: node3 gets no new sandboxes")
    assert json.loads(cli("nodes", "drain", "node3", "--json"))["status"] == "draining"
    more = [create()["sandboxID"] for _ in range(4)]
    where_more = placement(more)
    assert "node3" not in where_more.values() and None not in where_more.values(), f"placement after drain {where_more}"
    assert run_in(more[0], "echo drained-ok").strip() == "drained-ok"
    cli("nodes", "undrain", "node3")
    wait_for("node3 healthy again", lambda: status_of("node3") == "healthy", 10)

    log("no capacity: every node drained → 503 in E2B's error shape")
    for n, _, _ in NODES:
        call("POST", f"/nodes/{n}/drain", expect=200)
    status, body = call("POST", "/sandboxes", {"templateID": "base"})
    assert status == 503 and body["code"] == 503 and "no healthy node" in body["message"], (status, body)
    for n, _, _ in NODES:
        call("POST", f"/nodes/{n}/undrain", expect=200)
    status, body = call("DELETE", "/nodes/node1")
    assert status == 409 and "still has" in body["message"], (status, body)

    log("kill -9 node2: Unhealthy, its running sandboxes lost (404), its paused ones kept, the others keep working")
    from e2b import Sandbox
    everything = first + more
    on_node2 = [s for s, n in {**where, **where_more}.items() if n == "node2"]
    elsewhere = [s for s, n in {**where, **where_more}.items() if n != "node2"]
    assert len(on_node2) >= 3, f"node2 has too few sandboxes: {on_node2}"
    # Two of node2's sandboxes are paused first: one resumes when node2 is back, one is killed while it is down.
    kept, killed_while_down = on_node2.pop(), on_node2.pop()
    everything = [s for s in everything if s not in (kept, killed_while_down)]
    Sandbox.connect(kept).files.write("/home/user/kept.txt", "kept through the outage")
    for sid in (kept, killed_while_down):
        call("POST", f"/sandboxes/{sid}/pause", expect=204)
    procs["node2"].send_signal(signal.SIGKILL)
    procs["node2"].wait()
    wait_for("node2 unhealthy", lambda: status_of("node2") == "unhealthy", HEARTBEAT_TIMEOUT_S + 10)
    wait_for("node2's sandboxes lost", lambda: all(call("GET", f"/sandboxes/{s}")[0] == 404 for s in on_node2), LOST_AFTER_S + 10)
    listed_ids = {s["sandboxID"] for s in call("GET", "/sandboxes", expect=200)[1]}
    assert not (listed_ids & set(on_node2)) and set(elsewhere) <= listed_ids, listed_ids
    assert run_in(elsewhere[0], "echo still-here").strip() == "still-here"
    status, body = call("POST", "/sandboxes", {"templateID": "base", "timeout": 600})
    assert status == 201, (status, body)
    assert placement([body["sandboxID"]])[body["sandboxID"]] in ("node1", "node3")
    everything.append(body["sandboxID"])
    assert runc_ids("node2") >= set(on_node2), "the lost sandboxes still run on the dead node's host"
    status, body = call("GET", f"/sandboxes/{kept}")
    assert status == 200 and body["state"] == "paused", ("a paused sandbox was lost with its node", status, body)
    status, body = call("POST", f"/sandboxes/{kept}/connect", {"timeout": 600})
    assert status == 503, ("a resume on a node that is down", status, body)
    assert call("GET", f"/sandboxes/{kept}", expect=200)[1]["state"] == "paused", "a failed resume changed the record"
    call("DELETE", f"/sandboxes/{killed_while_down}", expect=204)
    assert call("GET", f"/sandboxes/{killed_while_down}")[0] == 404

    log("node2 returns: it reconciles — the sandboxes the control plane forgot are killed, the paused one resumes")
    start_node(*NODES[1])
    wait_for("node2 healthy", lambda: status_of("node2") == "healthy", 30)
    forgotten = set(on_node2) | {killed_while_down}
    wait_for("node2's forgotten sandboxes killed", lambda: not (runc_ids("node2") & forgotten), 30)
    resumed = Sandbox.connect(kept)
    assert resumed.files.read("/home/user/kept.txt") == "kept through the outage"
    assert placement([kept])[kept] == "node2"
    resumed.kill()

    log("official e2b SDK: create and run a command through the server")
    sbx = Sandbox.create(timeout=120)
    try:
        r = sbx.commands.run("echo sdk-ok && id -un")
        assert r.stdout.split() == ["sdk-ok", "user"], r.stdout
        sbx.files.write("/tmp/x.txt", "cluster")
        assert sbx.files.read("/tmp/x.txt") == "cluster"
        # Nobody installs an access token through the proxy (issue 11): /init is the node's, not a client's.
        req = urllib.request.Request(
            api_url + "/init", data=b'{"accessToken":"attacker"}', method="POST",
            headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983", "Content-Type": "application/json"},
        )
        status = http_status(req)
        assert status == 403, f"/init through the cluster's proxy answered {status}"
        assert sbx.commands.run("echo still-mine").stdout.strip() == "still-mine"
    finally:
        sbx.kill()

    egress_rules_across_the_cluster()

    node_local_volumes()

    shared_volumes()

    log("snapshots and forks start on the node that holds the snapshot's layers")
    source = create()["sandboxID"]
    everything.append(source)
    home = placement([source])[source]
    run_in(source, "echo snapped > /tmp/snap.txt")
    snap_name = f"cluster-snap-{uuid.uuid4().hex[:8]}"  # the template store outlives a failed run
    status, snap = call("POST", f"/sandboxes/{source}/snapshots", {"name": snap_name})
    assert status == 201 and snap["snapshotID"] == f"{snap_name}:default", (status, snap)
    from_snapshot = []
    for _ in range(2):
        status, body = call("POST", "/sandboxes", {"templateID": snap["snapshotID"], "timeout": 600})
        assert status == 201, (status, body)
        from_snapshot.append(body["sandboxID"])
    status, forks = call("POST", f"/sandboxes/{source}/fork", {"count": 2, "timeout": 600})
    assert status == 201 and all("sandbox" in f for f in forks), (status, forks)
    from_snapshot += [f["sandbox"]["sandboxID"] for f in forks]
    everything.extend(from_snapshot)
    assert set(placement(from_snapshot).values()) == {home}, (home, placement(from_snapshot))
    for sid in from_snapshot:
        assert run_in(sid, "cat /tmp/snap.txt").strip() == "snapped", sid
    node_api_refuses_strangers(home, source)
    call("DELETE", f"/templates/{snap_name}%3Adefault", expect=204)
    assert run_in(from_snapshot[0], "cat /tmp/snap.txt").strip() == "snapped", "deleting a snapshot in use is safe"

    moves_off_a_drained_node()
    booted_pool_on_a_node()
    runsc_pause_survives_its_node_agent()

    if REPLICATED:
        replicas(everything, on_node2)

    log("kill everything through the API; remove a stopped node")
    for sid in everything:
        if sid not in on_node2:
            call("DELETE", f"/sandboxes/{sid}", expect=204)
    assert all(not runc_ids(n) for n, _, _ in NODES), {n: runc_ids(n) for n, _, _ in NODES}
    procs["node3"].send_signal(signal.SIGTERM)
    procs["node3"].wait(timeout=30)
    out = cli("nodes", "remove", "node3")
    assert "removed node node3" in out
    assert call("GET", "/nodes/node3")[0] == 404
    log("all cluster checks passed")


def moves_off_a_drained_node():
    """Issue 13 part 5: a sandbox paused to disk and a snapshot on a node that is then drained resume and start on
    another node — node4, whose template store is its own and lacks their layers, so the layers travel (through the
    control plane, checked against their digests where they land). Official e2b SDK for pause and connect."""
    from e2b import Sandbox
    log("drain: a paused sandbox and a snapshot move to a node with a template store of its own")
    store = f"{RUN_DIR}/node4-templates"
    seed_base_only(store)
    start_node("node4", "sbc4", "10.84.0.0/16", template_dir=store)
    wait_for("node4 healthy", lambda: status_of("node4") == "healthy", 60)
    for n in ["node2", "node3", "node4"]:
        call("POST", f"/nodes/{n}/drain", expect=200)
    # Two of each on node1: one moves when it is next used, one when the operator evacuates node1.
    paused, snaps, made = [], [], []
    for which in ["lazy", "evacuated"]:
        sbx = Sandbox.create(timeout=600)
        made.append(sbx.sandbox_id)
        assert sbx.sandbox_id in runc_ids("node1"), "the only undrained node runs it"
        sbx.files.write("/home/user/moved.txt", f"{which}: moved with me")
        if which == "lazy":
            # 64 MiB that must travel: the move's time below is mostly this layer (docs/BENCHMARKS.md).
            sbx.commands.run("head -c 64M /dev/urandom > /home/user/big && md5sum /home/user/big > /home/user/big.md5")
        name = f"cluster-move-{which}-{uuid.uuid4().hex[:8]}"
        status, snap = call("POST", f"/sandboxes/{sbx.sandbox_id}/snapshots", {"name": name})
        assert status == 201, (status, snap)
        sbx.pause(mode="filesystem")
        paused.append(sbx.sandbox_id)
        snaps.append(snap["snapshotID"])
    sid, snap = paused[0], {"snapshotID": snaps[0]}
    layers_before = set(os.listdir(f"{store}/layers"))
    call("POST", "/nodes/node4/undrain", expect=200)
    call("POST", "/nodes/node1/drain", expect=200)
    wait_for("only node4 takes sandboxes", lambda: status_of("node4") == "healthy" and status_of("node1") == "draining", 10)
    try:
        started = time.monotonic()
        resumed = Sandbox.connect(sid, timeout=600)
        log(f"  a paused sandbox moved off drained node1 and resumed on node4 in {time.monotonic() - started:.2f} s")
        assert sid in runc_ids("node4") and sid not in runc_ids("node1"), "the paused sandbox resumed on node4"
        assert not os.path.exists(f"{RUN_DIR}/node1/node/sandboxes/{sid}"), "its old copy stayed on node1"
        assert resumed.files.read("/home/user/moved.txt") == "lazy: moved with me"
        assert resumed.commands.run("md5sum -c /home/user/big.md5").exit_code == 0, "the 64 MiB file arrived changed"
        assert resumed.commands.run("echo runs-on-node4").stdout.strip() == "runs-on-node4"
        assert call("GET", f"/sandboxes/{sid}", expect=200)[1]["state"] == "running"
        status, body = call("POST", "/sandboxes", {"templateID": snap["snapshotID"], "timeout": 600})
        assert status == 201, (status, body)
        made.append(body["sandboxID"])
        assert body["sandboxID"] in runc_ids("node4"), "the drained node's snapshot starts on node4"
        assert run_in(body["sandboxID"], "cat /home/user/moved.txt") == "lazy: moved with me"
        arrived = set(os.listdir(f"{store}/layers")) - layers_before
        assert arrived, "no layer arrived in node4's own store"

        log("evacuate: the rest of what node1 holds on disk moves now, and stays paused")
        status, body = call("POST", "/nodes/node4/evacuate")
        assert status == 409 and "not draining" in body["message"], (status, body)
        started = time.monotonic()
        done = json.loads(cli("nodes", "evacuate", "node1", "--json"))
        log(f"  evacuated node1 in {time.monotonic() - started:.2f} s: {done}")
        assert done["failed"] == [], done
        assert done["movedSandboxes"] == [paused[1]] and done["movedSnapshots"] == [snaps[1]], done
        assert call("GET", f"/sandboxes/{paused[1]}", expect=200)[1]["state"] == "paused"
        assert os.path.isdir(f"{RUN_DIR}/node4/node/sandboxes/{paused[1]}"), "its files are on node4"
        assert not os.path.exists(f"{RUN_DIR}/node1/node/sandboxes/{paused[1]}"), "its files left node1"
        again = Sandbox.connect(paused[1], timeout=600)
        assert paused[1] in runc_ids("node4")
        assert again.files.read("/home/user/moved.txt") == "evacuated: moved with me"
        status, body = call("POST", "/sandboxes", {"templateID": snaps[1], "timeout": 600})
        assert status == 201 and body["sandboxID"] in runc_ids("node4"), (status, body)
        made.append(body["sandboxID"])
        assert not {t for t in os.listdir(f"{store}/templates") if t.startswith("sbmove-")}, "a move template was left"
    finally:
        for s in made:
            call("DELETE", f"/sandboxes/{s}")
        for s in snaps:
            call("DELETE", f"/templates/{s.replace(':', '%3A')}")
        for n in ["node1", "node2", "node3"]:
            call("POST", f"/nodes/{n}/undrain", expect=200)
    procs["node4"].send_signal(signal.SIGTERM)
    procs["node4"].wait(timeout=30)
    cli("nodes", "remove", "node4")


def booted_pool_on_a_node():
    """Issue 18 goal 1 in cluster mode: a node agent with `--booted-pool base=1` hands a sandbox booted ahead to a
    create the control plane places on it, with the create's identity (node7, sbc7, 10.87.0.0/16; the other nodes
    drained so that the create lands there)."""
    from e2b import Sandbox
    log("booted pool on a node agent: a create placed there takes the sandbox booted ahead")
    node_log = f"{RUN_DIR}/node7.log"

    def logged(pattern):
        with open(node_log, errors="replace") as f:
            return re.search(pattern, f.read())

    start_node("node7", "sbc7", "10.87.0.0/16", extra=["--booted-pool", "base=1"])
    wait_for("node7 healthy", lambda: status_of("node7") == "healthy", 60)
    wait_for("node7's pool to hold a booted sandbox", lambda: logged(r"booted a sandbox for the pool"), 120)
    for n in ["node1", "node2", "node3"]:
        call("POST", f"/nodes/{n}/drain", expect=200)
    sbx = None
    try:
        sbx = Sandbox.create(timeout=600, envs={"WHO": "cluster-pool"}, metadata={"owner": "cluster-pool"})
        assert sbx.sandbox_id in runc_ids("node7"), "the only undrained node runs it"
        assert logged(rf"claimed from the booted pool sandbox={sbx.sandbox_id}\b"), "the create was not a pool hit"
        assert sbx.commands.run("echo $WHO; cat /etc/hostname").stdout.split() == ["cluster-pool", sbx.sandbox_id]
        listed = call("GET", f"/sandboxes/{sbx.sandbox_id}", expect=200)[1]
        assert listed["metadata"] == {"owner": "cluster-pool"}, listed
    finally:
        if sbx is not None:
            call("DELETE", f"/sandboxes/{sbx.sandbox_id}")
        for n in ["node1", "node2", "node3"]:
            call("POST", f"/nodes/{n}/undrain", expect=200)
    procs["node7"].send_signal(signal.SIGTERM)
    procs["node7"].wait(timeout=30)
    assert not runc_ids("node7"), "node7's pooled sandboxes outlived it"
    cli("nodes", "remove", "node7")


COUNTER = "i=0; while true; do echo $i > /tmp/counter; i=$((i+1)); sleep 0.2; done"


def runsc_pause_survives_its_node_agent():
    """Issue 13 in cluster mode: a node agent on gVisor (`--runtime runsc`) pauses to disk by default — the memory
    image in its data dir, no process of the sandbox left on the host — and after a `kill -9` of the agent and its
    restart, `connect` resumes the same process, counting on from where it stopped (node8, sbc8, 10.88.0.0/16; the
    other nodes drained so that the create lands there). The restart must beat the lost-node grace period
    (HEARTBEAT_TIMEOUT_S + LOST_AFTER_S): an agent takes about a second to come back."""
    from e2b import Sandbox
    if shutil.which("runsc") is None:
        log("SKIPPED the runsc node agent phase: runsc is not installed")
        return
    log("runsc node agent: pause to disk, kill -9 the agent, restart it, resume the same process")

    def counter(sbx):
        text = sbx.commands.run("cat /tmp/counter 2>/dev/null || true").stdout.strip()
        return int(text) if text else -1

    start_node("node8", "sbc8", "10.88.0.0/16", extra=["--runtime", "runsc"])
    wait_for("node8 healthy", lambda: status_of("node8") == "healthy", 60)
    others = ["node1", "node2", "node3"]
    for n in others:
        call("POST", f"/nodes/{n}/drain", expect=200)
    sbx, sandbox_dir = None, None
    try:
        sbx = Sandbox.create(timeout=600)
        sandbox_dir = f"{RUN_DIR}/node8/node/sandboxes/{sbx.sandbox_id}"
        pid = sbx.commands.run(COUNTER, background=True).pid
        wait_for("the counter to start", lambda: counter(sbx) >= 3, 30)
        at_pause = counter(sbx)
        sbx.pause()
        assert os.path.isfile(f"{sandbox_dir}/memory/checkpoint.img"), "the pause wrote no memory image"
        # The pause answers once the image is whole; the sandbox's processes (the Sentry's teardown) go right after.
        holders = lambda: [p for p in os.listdir("/proc") if p.isdigit() and sbx.sandbox_id.encode() in cmdline(p)]
        wait_for("no process to name the paused sandbox", lambda: not holders(), 30)
        # The secret the control plane holds for node8 (the agent saves it in its data dir).
        with open(f"{RUN_DIR}/node8/node-secret") as f:
            secret = f.read().strip()
        procs["node8"].send_signal(signal.SIGKILL)
        procs["node8"].wait()
        killed = time.monotonic()
        start_node("node8", "sbc8", "10.88.0.0/16", extra=["--runtime", "runsc"])
        # Still "healthy" from before the kill (the heartbeat timeout has not passed): wait for the new agent's API.
        wait_for("node8's new agent to listen", lambda: listening(ports["node8"]), 60)
        log(f"node8 serving again {time.monotonic() - killed:.1f} s after its kill -9")
        # The restarted agent takes the secret from before its kill: the control plane's calls work at once, with
        # no window (before its first heartbeat) in which they are refused. CI once lost that race with a secret
        # made anew at every start.
        info = urllib.request.Request(f"http://127.0.0.1:{ports['node8']}/node/v1/info",
                                      headers={"X-Soulbox-Node-Secret": secret})
        assert http_status(info) == 200, "the restarted agent refused the secret the control plane holds"
        resumed = Sandbox.connect(sbx.sandbox_id)
        assert resumed.commands.run(f"kill -0 {pid} && echo alive").stdout == "alive\n", "the process did not survive"
        n = counter(resumed)
        assert n >= at_pause, f"the counter went back from {at_pause} to {n}"
        wait_for("the counter to go on", lambda: counter(resumed) > n, 30)
    finally:
        if sbx is not None:
            call("DELETE", f"/sandboxes/{sbx.sandbox_id}")
        for n in others:
            call("POST", f"/nodes/{n}/undrain", expect=200)
    procs["node8"].send_signal(signal.SIGTERM)
    procs["node8"].wait(timeout=30)
    assert not os.path.exists(sandbox_dir), "the killed sandbox's directory (and memory image) outlived it"
    cli("nodes", "remove", "node8")


def listening(port):
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def node_local_volumes():
    """Issue 15: without a shared volumes directory (the default, `volumes_shared = false`) each volume lives on one
    node. Official e2b SDK `Volume`: its content API is forwarded to that node, sandboxes mounting it are placed
    there (and see what the content API wrote), volumes of two nodes in one sandbox are refused, the home node
    drained means 503, and a node holding volumes is not removed without --force."""
    from e2b import Sandbox, Volume
    log("volumes: a node-local volume, its content forwarded to its node, its sandboxes placed there")
    os.environ["E2B_VOLUME_API_URL"] = api_url
    on = lambda n, vid: os.path.isdir(f"{RUN_DIR}/{n}/volumes/{vid}")
    vol = Volume.create(f"cluster-{uuid.uuid4().hex[:8]}")
    volumes, made = [vol], []
    try:
        homes = [n for n, _, _ in NODES if on(n, vol.volume_id)]
        assert len(homes) == 1, f"the volume's directory is on {homes}"
        home = homes[0]
        assert not os.path.exists(f"{RUN_DIR}/server/volumes/{vol.volume_id}"), "made in the control plane's dir"
        vol.write_file("/data/hello.txt", "hello from the content API", force=True)
        assert vol.read_file("/data/hello.txt") == "hello from the content API"
        assert [e.path for e in vol.list("/", depth=2)] == ["/data", "/data/hello.txt"]
        with open(f"{RUN_DIR}/{home}/volumes/{vol.volume_id}/data/hello.txt") as f:
            assert f.read() == "hello from the content API", "the file is not in the home node's directory"
        for _ in range(3):
            made.append(Sandbox.create(timeout=120, volume_mounts={"/mnt/vol": vol}))
            assert made[-1].sandbox_id in runc_ids(home), f"a sandbox mounting the volume runs off {home}"
        r = made[0].commands.run("cat /mnt/vol/data/hello.txt && echo from-sandbox > /mnt/vol/data/back.txt")
        assert r.stdout == "hello from the content API", r.stdout
        assert made[1].commands.run("cat /mnt/vol/data/back.txt").stdout == "from-sandbox\n"
        assert vol.read_file("/data/back.txt") == "from-sandbox\n"

        log("volumes: home drained → 503; volumes of two nodes → 400; remove refused while it holds volumes")
        mount = lambda *vs: {"templateID": "base", "volumeMounts": [{"name": v.name, "path": f"/v{i}"} for i, v in enumerate(vs)]}
        call("POST", f"/nodes/{home}/drain", expect=200)
        try:
            status, body = call("POST", "/sandboxes", mount(vol))
            assert status == 503 and home in body["message"], (status, body)
            other = Volume.create(f"cluster-{uuid.uuid4().hex[:8]}")  # a drained node gets no volume either
            volumes.append(other)
        finally:
            call("POST", f"/nodes/{home}/undrain", expect=200)
        assert not on(home, other.volume_id) and any(on(n, other.volume_id) for n, _, _ in NODES)
        status, body = call("POST", "/sandboxes", mount(vol, other))
        assert status == 400 and "different nodes" in body["message"], (status, body)
        status, body = call("DELETE", f"/volumes/{vol.volume_id}")
        assert status == 409 and "mounted" in body["message"], (status, body)
        for sbx in made:
            sbx.kill()
        made = []
        status, body = call("DELETE", f"/nodes/{home}")
        assert status == 409 and "volumes" in body["message"], (status, body)
        assert Volume.destroy(vol.volume_id)
        assert not on(home, vol.volume_id), "the volume's directory stayed on its node"
    finally:
        for sbx in made:
            sbx.kill()
        for v in volumes:
            call("DELETE", f"/volumes/{v.volume_id}")


SHARED_NODES = [("node5", "sbc5", "10.85.0.0/16"), ("node6", "sbc6", "10.86.0.0/16")]


def shared_volumes():
    """Issue 15 with `volumes_shared = true`: a second, small cluster — its own control plane (own data dir and
    SQLite database, `volumes_dir` shared) and two node agents given the same directory with `--volumes-dir`.
    In production that directory is one NFS or CephFS mounted at the same path everywhere; this machine's kernel
    has no NFS, so here it is one local directory all three processes use. What is proven: the control plane
    makes a volume as a plain directory there (no `<id>.img`: two nodes must never mount one image), sandboxes
    mounting it run on either node (steered by draining the other) and see each other's writes with the owners a
    sandbox sees, the content API reads it on the control plane with no sandbox running, and delete is refused
    while mounted. Not proven: NFS/CephFS semantics themselves (caching, locking, idmapped mounts on them)."""
    from e2b import Sandbox, Volume
    log("shared volumes: a second control plane with volumes_shared = true, node5 and node6 on its volumes directory")
    started = time.monotonic()
    shared = f"{RUN_DIR}/shared-volumes"
    os.makedirs(f"{RUN_DIR}/shared-server", exist_ok=True)
    with open(f"{RUN_DIR}/shared-server/config.toml", "w") as f:
        f.write(f'volumes_dir = "{shared}"\nvolumes_shared = true\n')
    url, key = start_server("shared-server", database_url=f"sqlite://{RUN_DIR}/shared-server/soulbox.db?mode=rwc")
    assert key, "the shared-volumes control plane has a store of its own (it prints its first admin key)"
    for name, prefix, pool in SHARED_NODES:
        start_node(name, prefix, pool, server=url, volumes_dir=shared)
    images = lambda: [f for f in os.listdir(shared) if f.endswith(".img")]
    made, vol = [], None
    with talking_to(url, key):
        try:
            wait_for("node5 and node6 healthy", lambda: all(status_of(n) == "healthy" for n, _, _ in SHARED_NODES), 60)
            vol = Volume.create(f"shared-{uuid.uuid4().hex[:8]}")
            files = f"{shared}/{vol.volume_id}"
            assert os.path.isdir(files) and images() == [], f"not a plain directory in {shared}: {os.listdir(shared)}"
            vol.write_file("/from-api.txt", "written on the control plane")

            for here, other in [("node5", "node6"), ("node6", "node5")]:
                call("POST", f"/nodes/{other}/drain", expect=200)
                try:
                    made.append(Sandbox.create(timeout=120, volume_mounts={"/mnt/shared": vol}))
                finally:
                    call("POST", f"/nodes/{other}/undrain", expect=200)
                assert made[-1].sandbox_id in runc_ids(here), f"the sandbox is not on {here}"
            a, b = made
            log("shared volumes: written on node5 as user, read on node6")
            r = a.commands.run("id -un && echo from-node5 > /mnt/shared/from-a.txt && cat /mnt/shared/from-api.txt")
            assert r.stdout == "user\nwritten on the control plane", r.stdout
            r = b.commands.run("cat /mnt/shared/from-a.txt && stat -c %U:%G /mnt/shared/from-a.txt")
            assert r.stdout == "from-node5\nuser:user\n", r.stdout
            b.commands.run("echo from-node6 > /mnt/shared/from-b.txt")
            assert a.commands.run("cat /mnt/shared/from-b.txt").stdout == "from-node6\n"
            on_disk = os.stat(f"{files}/from-a.txt")
            assert (on_disk.st_uid, on_disk.st_gid) == (1000, 1000), "stored unshifted: the ids a sandbox sees"

            status, body = call("DELETE", f"/volumes/{vol.volume_id}")
            assert status == 409 and "mounted" in body["message"], (status, body)
            for sbx in made:
                sbx.kill()
            made = []
            assert not (runc_ids("node5") | runc_ids("node6")), "a killed sandbox still runs"
            log("shared volumes: the content API with no sandbox, then delete")
            assert vol.read_file("/from-a.txt") == "from-node5\n"
            entry = vol.get_info("/from-b.txt")
            assert (entry.uid, entry.gid, entry.size) == (1000, 1000, len("from-node6\n")), entry
            assert sorted(e.path for e in vol.list("/")) == ["/from-a.txt", "/from-api.txt", "/from-b.txt"]
            assert images() == [], f"a volume image appeared in the shared directory: {images()}"
            assert Volume.destroy(vol.volume_id)
            assert not os.path.exists(files), "the volume's directory stayed"
            assert call("GET", f"/volumes/{vol.volume_id}")[0] == 404
            vol = None
        finally:
            for sbx in made:
                sbx.kill()
            if vol is not None:
                call("DELETE", f"/volumes/{vol.volume_id}")
    for name in ["node5", "node6", "shared-server"]:
        procs[name].send_signal(signal.SIGTERM)
        procs[name].wait(timeout=30)
    log(f"  the shared-volumes cluster started, proved and stopped in {time.monotonic() - started:.1f} s")


@contextlib.contextmanager
def talking_to(url, key):
    """`call` and the e2b SDK (through its environment variables) use the control plane at `url` for a while."""
    global api_url, api_key
    names = ["E2B_API_URL", "E2B_SANDBOX_URL", "E2B_VOLUME_API_URL", "E2B_API_KEY"]
    saved_env, saved = {n: os.environ.get(n) for n in names}, (api_url, api_key)
    api_url, api_key = url, key
    os.environ.update({"E2B_API_URL": url, "E2B_SANDBOX_URL": url, "E2B_VOLUME_API_URL": url, "E2B_API_KEY": key})
    try:
        yield
    finally:
        api_url, api_key = saved
        for n, v in saved_env.items():
            if v is None:
                os.environ.pop(n, None)
            else:
                os.environ[n] = v


def seed_base_only(store):
    """A template store of its own holding only `base` (hard links of the shared store's layers)."""
    base = json.load(open(f"{TEMPLATE_DIR}/templates/base/template.json"))
    os.makedirs(f"{store}/layers", exist_ok=True)
    os.makedirs(f"{store}/templates/base", exist_ok=True)
    for layer in base["layers"]:
        if not os.path.exists(f"{store}/layers/{layer}"):
            subprocess.run(["cp", "-al", f"{TEMPLATE_DIR}/layers/{layer}", f"{store}/layers/{layer}"], check=True)
    shutil.copy(f"{TEMPLATE_DIR}/templates/base/template.json", f"{store}/templates/base/template.json")
    # The build engine's caches name layers: with them, the agent finds `base` built and builds nothing.
    if os.path.isdir(f"{TEMPLATE_DIR}/cache"):
        subprocess.run(["cp", "-a", f"{TEMPLATE_DIR}/cache", f"{store}/"], check=True)


def egress_rules_across_the_cluster():
    """Header rules in a cluster: every node signs with the installation's CA (handed out only for the node token)
    and its egress gateway asks the control plane for a rule's secret as the request leaves. Network rule: the
    sandbox talks only to a fake outside world on 203.0.113.116/30."""
    log("header rules: the installation's CA on every node, secrets asked of the control plane")
    from e2b import Sandbox
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
    from sbtest import OutsideWorld

    def cluster_call(path, token, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        return urllib.request.Request(agent_server + path, data=data, headers=headers, method="POST" if data else "GET")

    with OPENER.open(cluster_call("/cluster/egress-ca", TOKEN), timeout=30) as r:
        ca = json.loads(r.read())
    assert http_status(cluster_call("/cluster/egress-ca", "not-the-token")) == 401
    name, value = f"cluster-{uuid.uuid4().hex[:8]}", f"cluster-secret-{uuid.uuid4().hex}"
    status, _ = call("POST", "/secrets", {"name": name, "value": value})
    assert status in (200, 201), status
    echo = os.path.join(os.path.dirname(__file__), "..", "lib", "header_echo.py")
    outside_addr = "203.0.113.118"
    try:
        with OutsideWorld("sbns-clrules", "sbnsclrul0", "203.0.113.117", outside_addr) as world:
            world.run(80, ["python3", echo, "80"])
            rules = {outside_addr: [{"transform": {"headers": {"X-Key": f"${{e2b.secrets.{name}}}"}}}]}
            sbx = Sandbox.create(timeout=120, network={"rules": rules})
            try:
                bundle = sbx.files.read("/usr/local/share/soulbox/ca-bundle.pem")
                assert ca["certPem"].strip() in bundle, "the node's sandbox does not trust the installation's CA"
                got = sbx.commands.run(f"curl -sS --max-time 10 http://{outside_addr}/").stdout.lower()
                assert f"x-key: {value}" in got, got
                # A node asking for a sandbox that is not placed on it gets nothing.
                wrong = cluster_call("/cluster/secret", TOKEN, {"nodeId": "node-x", "sandboxId": sbx.sandbox_id, "name": name})
                assert http_status(wrong) == 403
                stranger = cluster_call("/cluster/secret", "not-the-token", {"nodeId": "node1", "sandboxId": sbx.sandbox_id, "name": name})
                assert http_status(stranger) == 401
            finally:
                sbx.kill()
    finally:
        call("DELETE", f"/secrets/{name}")


def http_status(req):
    """The status a raw request gets (an error status too, without raising)."""
    try:
        with OPENER.open(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def node_api_refuses_strangers(node, sandbox_id):
    """A node agent's API answers only its control plane (the node secret): without it, or with a wrong one, every
    route is 401 and nothing happens — the snapshot, template-delete and layer-moving routes included."""
    base = f"http://127.0.0.1:{ports[node]}/node/v1"
    base_layer = json.load(open(f"{TEMPLATE_DIR}/templates/base/template.json"))["layers"][0]
    attempts = [
        ("GET", "/templates/base", None),
        ("PUT", "/templates/stolen", {"name": "stolen", "layers": [base_layer]}),
        ("GET", f"/layers/{base_layer}", None),
        ("PUT", f"/layers/{'0' * 64}", "not a tar"),
        ("POST", "/layers/missing", {"layers": [base_layer]}),
        ("POST", f"/sandboxes/{sandbox_id}/snapshot", {"name": "stolen"}),
        ("DELETE", "/templates/base", None),
        ("POST", f"/sandboxes/{sandbox_id}/pause", {"keepMemory": True}),
        ("DELETE", f"/sandboxes/{sandbox_id}", None),
        ("POST", "/sandboxes", {"templateId": "base"}),
        ("GET", "/templates", None),
        ("PUT", "/volumes/stolen", None),
        ("GET", "/volumes/stolen/dir?path=/", None),
        ("DELETE", "/volumes/stolen", None),
    ]
    for secret in (None, "not-the-secret"):
        for method, path, body in attempts:
            headers = {"Content-Type": "application/json"}
            if secret:
                headers["X-Soulbox-Node-Secret"] = secret
            data = json.dumps(body).encode() if body is not None else None
            status = http_status(urllib.request.Request(base + path, data=data, method=method, headers=headers))
            assert status == 401, f"{method} {path} with secret {secret!r}: {status}"
    assert call("GET", f"/sandboxes/{sandbox_id}", expect=200)[1]["state"] == "running"
    templates = {t["templateID"] for t in call("GET", "/templates", expect=200)[1]}
    assert "base" in templates and "stolen" not in templates, templates


def admin_commands_on_the_database():
    """`soulbox keys`/`teams` open the database the server resolves (`--database-url`; in CI the shared
    PostgreSQL), not a SQLite file in their own data dir: a key made there works against the running server at
    once, and so does its revocation."""
    log("admin commands on the server's database: keys create/list/revoke, teams list")
    empty = f"{RUN_DIR}/admin-cli"
    os.makedirs(empty, exist_ok=True)

    def admin(*args):
        r = subprocess.run([BIN, "--data-dir", empty, *args, "--database-url", DB_URL, "--json"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"soulbox {' '.join(args)}: exit {r.returncode}: {r.stderr}"
        return json.loads(r.stdout)

    def status_with(key):
        req = urllib.request.Request(api_url + "/v2/sandboxes", headers={"X-API-Key": key})
        try:
            with OPENER.open(req, timeout=60) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    made = admin("keys", "create", "--name", "cli-on-the-database")
    assert made["team"] == "default" and made["key"].startswith("e2b_"), made
    assert status_with(made["key"]) == 200, "a key the CLI made is not known to the server"
    assert any(k["id"] == made["id"] and not k["revoked"] for k in admin("keys", "list"))
    assert any(t["name"] == "default" for t in admin("teams", "list"))
    assert admin("keys", "revoke", made["id"])["revoked"] is True
    assert status_with(made["key"]) == 401, "a key the CLI revoked still works"
    assert not os.path.exists(f"{empty}/soulbox.db"), "the CLI opened a SQLite file of its own"


def replicas(everything, gone):
    """Two API replicas on one PostgreSQL database act as one control plane (the official SDK through either)."""
    global api_url
    from e2b import Sandbox
    first, second = replica_urls["server"], replica_urls["replica2"]
    log("two replicas: a sandbox created through one is used and managed through the other")
    a = Sandbox.create(timeout=300, api_url=first, sandbox_url=first)
    everything.append(a.sandbox_id)
    via_b = Sandbox.connect(a.sandbox_id, api_url=second, sandbox_url=second)
    assert via_b.commands.run("echo through-b").stdout == "through-b\n"
    via_b.files.write("/tmp/replica.txt", "written through b")
    assert a.files.read("/tmp/replica.txt") == "written through b"
    listed = {s.sandbox_id for s in Sandbox.list(api_url=second).next_items()}
    assert a.sandbox_id in listed, listed

    log("two replicas: a timeout set through one fires once while both run")
    short = Sandbox.create(timeout=300, api_url=second, sandbox_url=second)
    Sandbox.set_timeout(short.sandbox_id, 2, api_url=first)
    for url in (first, second):
        wait_for(f"the timed-out sandbox gone on {url}", lambda: call_at(url, "GET", f"/sandboxes/{short.sandbox_id}")[0] == 404, 30)
    wait_for("the timed-out sandbox gone from its node", lambda: all(short.sandbox_id not in runc_ids(n) for n, _, _ in NODES), 30)

    log("two replicas: kill -9 the first; the second serves every sandbox and creates new ones")
    procs["server"].send_signal(signal.SIGKILL)
    procs["server"].wait()
    api_url = second
    os.environ.update({"E2B_API_URL": second, "E2B_SANDBOX_URL": second})
    survivors = [sid for sid in everything if sid not in gone]
    listed = {s["sandboxID"] for s in call("GET", "/sandboxes", expect=200)[1]}
    assert set(survivors) <= listed, (survivors, listed)
    assert run_in(a.sandbox_id, "cat /tmp/replica.txt") == "written through b"
    c = Sandbox.create(timeout=300)
    everything.append(c.sandbox_id)
    assert c.commands.run("echo after-failover").stdout == "after-failover\n"
    assert status_of("node1") == "healthy"


def call_at(url, method, path):
    global api_url
    saved, api_url = api_url, url
    try:
        return call(method, path)
    finally:
        api_url = saved


def stop_all():
    for name in ["node1", "node2", "node3", "node4", "node5", "node6", "node7", "node8", "server", "replica2", "shared-server"]:
        p = procs.get(name)
        if p and p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


if __name__ == "__main__":
    ok = False
    try:
        main()
        ok = True
    finally:
        if not ok and api_key:
            # Kill what the API still knows; run.sh collects the rest by prefix.
            try:
                for s in call("GET", "/sandboxes")[1] or []:
                    call("DELETE", f"/sandboxes/{s['sandboxID']}")
            except Exception as e:  # noqa: BLE001 - best effort on the failure path
                log(f"cleanup through the API failed: {e}")
        stop_all()
    sys.exit(0 if ok else 1)
