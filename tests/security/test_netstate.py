"""State that cannot point at the wrong sandbox (issue 11, item 7) and the firewall that repairs itself.

- The suite server's nft table deleted (and, separately, flushed) while a sandbox without internet runs: the
  server rebuilds it, says so in its log, and the sandbox is as isolated as before.
- A sandbox whose processes are SIGKILLed from the host, then a crashed and restarted server: its record becomes
  paused without an address, traffic for it answers E2B's 502, no new sandbox gets its address while the record
  exists, and connect starts it again on that address.
- A server that fails to start (port taken, a broken OCI runtime, the base template failing after the runtime
  opened) exits non-zero and leaves no netns, link, nft table, mount or cgroup of its prefix.

Servers of its own use the suite's spare prefix and pool (run.sh) and share the suite's template store. Network
rule: sandboxes only talk to a fake outside world this file builds (a netns on 203.0.113.100/30).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest

from conftest import DATA_DIR, ENVD_BIN, PREFIX, SERVER_LOG, SOULBOX_BIN, root_run, wait_until

SPARE_PREFIX = os.environ.get("SOULBOX_SEC_SPARE_PREFIX", "")
SPARE_POOL = os.environ.get("SOULBOX_SEC_SPARE_POOL", "")
TEMPLATE_DIR = os.path.join(DATA_DIR, "node")
OUT_NS, OUT_LINK = "sbns-secout", "sbnssec0"
HOST_ADDR, OUTSIDE_ADDR = "203.0.113.101", "203.0.113.102"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------------------
# The fake outside world


@pytest.fixture
def outside():
    """A netns on 203.0.113.100/30 routed from the host, answering `outside-ok` on TCP 8080."""

    def teardown():
        sh("ip", "link", "del", OUT_LINK, check=False)
        sh("ip", "netns", "del", OUT_NS, check=False)

    teardown()
    sh("ip", "netns", "add", OUT_NS)
    proc = None
    try:
        sh("ip", "link", "add", OUT_LINK, "type", "veth", "peer", "name", "eth0", "netns", OUT_NS)
        sh("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", OUT_LINK)
        sh("ip", "link", "set", OUT_LINK, "up")
        sh("ip", "-n", OUT_NS, "addr", "add", f"{OUTSIDE_ADDR}/30", "dev", "eth0")
        sh("ip", "-n", OUT_NS, "link", "set", "eth0", "up")
        sh("ip", "-n", OUT_NS, "link", "set", "lo", "up")
        proc = subprocess.Popen(
            # The netns only (sbtest.OutsideWorld.run says why not `ip netns exec`).
            ["nsenter", f"--net=/run/netns/{OUT_NS}", "busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/echo", "outside-ok"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: ":8080" in sh("ip", "netns", "exec", OUT_NS, "ss", "-ltnH").stdout, 10, "the outside listener")
        yield OUTSIDE_ADDR
    finally:
        if proc:
            proc.kill()
            proc.wait()
        teardown()


def reaches_outside(sbx) -> bool:
    r = root_run(sbx, f"timeout 3 bash -c 'cat </dev/tcp/{OUTSIDE_ADDR}/8080' 2>&1; true")
    return "outside-ok" in r.stdout


# ---------------------------------------------------------------------------------------------------------------
# The firewall repairs itself


def log_size() -> int:
    return os.path.getsize(SERVER_LOG) if SERVER_LOG and os.path.exists(SERVER_LOG) else 0


def log_since(offset: int) -> str:
    with open(SERVER_LOG, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        return f.read()


@pytest.mark.parametrize("how", ["delete", "flush"])
def test_nft_table_deleted_or_flushed_is_restored(sandboxes, outside, how):
    table = f"soulbox_{PREFIX}"
    offline = sandboxes.create(allow_internet_access=False)
    online = sandboxes.create()
    assert not reaches_outside(offline), "precondition: internet off holds"
    assert reaches_outside(online), "precondition: the open sandbox reaches the fake outside world"

    offset = log_size()
    sh("nft", how, "table", "inet", table)
    # Event-driven on the server's side; the bound is generous.
    wait_until(lambda: "firewall table restored" in log_since(offset), 30, "the server's log to report the repair")
    logged = log_since(offset)
    assert table in logged and "changed from outside" in logged, logged[-2000:]
    assert sh("nft", "list", "table", "inet", table, check=False).returncode == 0

    assert not reaches_outside(offline), "the internet-off sandbox reached the outside after the repair"
    assert reaches_outside(online), "the open sandbox lost its NAT after the repair"


# ---------------------------------------------------------------------------------------------------------------
# Servers of the test's own


def host_leftovers(prefix: str, data_dir: str) -> list[str]:
    """Everything of `prefix` on the host: netns, links, nft table, mounts below `data_dir`, cgroups."""
    left = [f"netns {n}" for n in sh("ip", "netns", "list").stdout.split() if n.startswith(f"{prefix}-")]
    for line in sh("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(prefix):
            left.append(f"link {name}")
    if sh("nft", "list", "table", "inet", f"soulbox_{prefix}", check=False).returncode == 0:
        left.append(f"nft table soulbox_{prefix}")
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {m}" for m in (line.split()[4] for line in f) if m.startswith(data_dir.rstrip("/") + "/")]
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        if f"soulbox_{prefix}" in dirs:
            left.append(f"cgroup {os.path.join(root, f'soulbox_{prefix}')}")
        if root.count("/") >= 4:
            dirs.clear()
    return left


class OwnServer:
    """A `soulbox server` of the test's own: spare prefix and pool, the suite's template store."""

    def __init__(self, name: str, template_dir: str | None = TEMPLATE_DIR, extra: tuple[str, ...] = ()):
        if not (SPARE_PREFIX and SPARE_POOL and SOULBOX_BIN and ENVD_BIN):
            pytest.skip("run through tests/security/run.sh (spare prefix and pool, binaries)")
        self.data_dir = f"{DATA_DIR}.netstate-{name}"
        self.template_dir = template_dir
        self.extra = extra
        self.proc: subprocess.Popen | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.data_dir, "server.log")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        os.makedirs(self.data_dir)
        out = sh(SOULBOX_BIN, "--data-dir", self.data_dir, "keys", "create", "--name", "netstate").stdout
        self.key = next(line.split("=", 1)[1].split()[0] for line in out.splitlines() if line.startswith("export E2B_API_KEY="))
        self.api = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=60, trust_env=False)

    def args(self) -> list[str]:
        a = [SOULBOX_BIN, "--data-dir", self.data_dir, "server", "--listen", f"127.0.0.1:{self.port}",
             "--envd-path", ENVD_BIN, "--prefix", SPARE_PREFIX, "--network-pool", SPARE_POOL, "--warm-pool", "2"]
        if self.template_dir:
            a += ["--template-dir", self.template_dir]
        return a + list(self.extra)

    def spawn(self) -> subprocess.Popen:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        return self.proc

    def start(self):
        self.spawn()

        def ready():
            assert self.proc.poll() is None, f"server exited during start:\n{self.log()[-4000:]}"
            try:
                return self.api.get("/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 180, "the test's own server to answer /health")

    def wait_exit(self, timeout: float = 180) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit within {timeout} s:\n{self.log()[-4000:]}")

    def crash(self):
        """SIGKILL: no shutdown path runs."""
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def sandbox_ip(self, sandbox_id: str) -> str:
        with open(os.path.join(self.data_dir, "node", "sandboxes", sandbox_id, "net.json")) as f:
            return json.load(f)["ip"]

    def cleanup(self):
        """Kill what it runs (through a server on the same data dir), stop it, and remove its data dir."""
        if self.proc and self.proc.poll() is None:
            try:
                for s in self.api.get("/v2/sandboxes", params={"state": "running,paused"}).json():
                    self.api.delete(f"/sandboxes/{s['sandboxID']}")
            except (httpx.HTTPError, ValueError):
                pass
        self.stop()
        self.api.close()
        # Never delete through a mount that is still there (a sandbox's rootfs): the leak check reports it instead.
        if not any(item.startswith("mount ") for item in host_leftovers(SPARE_PREFIX, self.data_dir)):
            shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def own_servers():
    made: list[OwnServer] = []

    def make(*args, **kwargs) -> OwnServer:
        s = OwnServer(*args, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.cleanup()
    for s in made:
        assert host_leftovers(SPARE_PREFIX, s.data_dir) == [], "the test's own server left host objects behind"


def kill_sandbox_processes(server: OwnServer, sandbox_id: str):
    """SIGKILL the sandbox's init from the host (its pid namespace dies with it) and wait for it through a pidfd."""
    oci = os.environ.get("SOULBOX_RUNTIME", "runc")
    state = json.loads(sh(oci, "--root", os.path.join(server.data_dir, "node", "oci"), "state", sandbox_id).stdout)
    pid = state["pid"]
    fd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, "the sandbox's init did not die"
    finally:
        os.close(fd)


def proxied(server: OwnServer, sandbox_id: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/health",
        headers={"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": "49983"},
        timeout=30,
        trust_env=False,
    )


def test_dead_sandbox_answers_502_and_its_address_is_not_reused(own_servers):
    from e2b import Sandbox

    server = own_servers("dead")
    server.start()
    r = server.api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 300})
    assert r.status_code == 201, r.text
    dead = r.json()["sandboxID"]
    dead_ip = server.sandbox_ip(dead)
    assert proxied(server, dead).status_code == 200

    kill_sandbox_processes(server, dead)
    # The server has not noticed: the address is still the dead sandbox's, nothing else answers there.
    r = proxied(server, dead)
    assert r.status_code == 502 and r.json()["code"] == 502, r.text

    # The node crashes and comes back.
    server.crash()
    server.start()
    r = server.api.get(f"/sandboxes/{dead}")
    assert r.status_code == 200 and r.json()["state"] == "paused", r.text
    r = proxied(server, dead)
    assert r.status_code == 502, r.text
    assert r.json() == {"sandboxId": dead, "message": "The sandbox was not found", "code": 502}

    for _ in range(8):
        r = server.api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 300})
        assert r.status_code == 201, r.text
        new = r.json()["sandboxID"]
        assert server.sandbox_ip(new) != dead_ip, f"{new} got the dead sandbox's address {dead_ip}"

    # Its files were kept: connect starts it again, on its own address.
    sbx = Sandbox.connect(dead, api_key=server.key, api_url=server.url, sandbox_url=server.url, timeout=120)
    assert sbx.commands.run("echo back").stdout.strip() == "back"
    assert server.sandbox_ip(dead) == dead_ip


# ---------------------------------------------------------------------------------------------------------------
# A failed start leaves nothing behind


def assert_failed_start_left_nothing(server: OwnServer):
    code = server.wait_exit()
    assert code != 0, f"the server should have failed to start:\n{server.log()[-4000:]}"
    assert host_leftovers(SPARE_PREFIX, server.data_dir) == [], server.log()[-4000:]


def test_start_with_the_port_taken_leaves_nothing(own_servers):
    server = own_servers("port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", server.port))
        taken.listen(1)
        server.spawn()
        assert_failed_start_left_nothing(server)
    assert "binding" in server.log()


def test_start_with_a_broken_runtime_leaves_nothing(own_servers):
    server = own_servers("runtime", extra=("--runtime", "/nonexistent/runc"))
    server.spawn()
    assert_failed_start_left_nothing(server)
    assert "/nonexistent/runc" in server.log()


def test_base_template_failure_after_the_runtime_opened_leaves_nothing(own_servers):
    # An empty template store and a mirror nobody serves (a closed loopback port): the runtime opens and fills
    # its warm pool, then building `base` fails.
    server = own_servers("base", template_dir=None, extra=("--debian-mirror", f"http://127.0.0.1:{free_port()}/debian"))
    server.spawn()
    assert_failed_start_left_nothing(server)
    assert "building the base template failed" in server.log(), server.log()[-4000:]
