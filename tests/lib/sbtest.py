"""Helpers shared by the Python suites that drive a real `soulbox server` (tests/e2e, tests/security)."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import httpx
import pytest

from e2b import Sandbox

ENVD_PORT = 49983


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
    """Polls `predicate` until it returns something truthy (returned) or `timeout` seconds pass (fails)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)


class Sandboxes:
    """Creates sandboxes for one test (tagged `<run_key>=<run_id>`) and kills them afterwards."""

    def __init__(self, api: httpx.Client, run_key: str, run_id: str, sdk_opts: Optional[dict] = None):
        self.api = api
        self.run_key = run_key
        self.run_id = run_id
        # Passed to every SDK call (e.g. `api_key` of another team).
        self.sdk_opts = sdk_opts or {}
        self.created: List[str] = []

    def create(self, metadata: Optional[Dict[str, str]] = None, **kwargs) -> Sandbox:
        meta = {self.run_key: self.run_id, **(metadata or {})}
        kwargs.setdefault("timeout", 300)
        sbx = Sandbox.create(metadata=meta, **self.sdk_opts, **kwargs)
        self.created.append(sbx.sandbox_id)
        return sbx

    def create_raw(self, path: str = "/v2/sandboxes", **body) -> dict:
        body.setdefault("templateID", "base")
        body.setdefault("timeout", 300)
        body["metadata"] = {self.run_key: self.run_id, **body.get("metadata", {})}
        r = self.api.post(path, json=body)
        assert r.status_code == 201, r.text
        data = r.json()
        self.created.append(data["sandboxID"])
        return data

    def cleanup(self):
        for sid in self.created:
            self.api.delete(f"/sandboxes/{sid}")


def envd_headers(sandbox_id: str, token: Optional[str] = None, port: int = ENVD_PORT) -> Dict[str, str]:
    h = {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token:
        h["X-Access-Token"] = token
    return h


def log_tail(path: str, n: int = 40) -> str:
    if not path:
        return ""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def outside_world(ns: str, link: str, host_addr: str, addr: str, services: Dict[int, List[str]]):
    """A pytest fixture body: an `OutsideWorld` serving `services` (port → program argv for busybox nc -e), or a
    skip when not root."""
    import os

    if os.geteuid() != 0:
        pytest.skip("the fake outside world needs root")
    with OutsideWorld(ns, link, host_addr, addr) as world:
        for port, program in services.items():
            world.serve(port, *program)
        yield world


class OutsideWorld:
    """A fake "outside world" for sandboxes: netns `ns` behind host link `link` on a /30 of 203.0.113.0/24
    (`host_addr` on the host, `addr` inside), routed back through the host, with TCP services started by
    `serve(port, program...)` (busybox nc, one child per connection). Cleans up the netns, the link and every
    process in it (also what a test left behind). Root only."""

    def __init__(self, ns: str, link: str, host_addr: str, addr: str):
        self.ns, self.link, self.host_addr, self.addr = ns, link, host_addr, addr
        self.procs: list = []

    def _sh(self, *args: str, check: bool = True):
        import subprocess

        return subprocess.run(args, check=check, capture_output=True, text=True)

    def __enter__(self) -> "OutsideWorld":
        self.close()
        sh = self._sh
        sh("ip", "netns", "add", self.ns)
        try:
            sh("ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", self.ns)
            sh("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.link)
            sh("ip", "link", "set", self.link, "up")
            sh("ip", "-n", self.ns, "addr", "add", f"{self.addr}/30", "dev", "eth0")
            sh("ip", "-n", self.ns, "link", "set", "eth0", "up")
            sh("ip", "-n", self.ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.ns, "route", "add", "default", "via", self.host_addr)
        except BaseException:
            self.close()
            raise
        return self

    def serve(self, port: int, *program: str) -> None:
        self.run(port, ["busybox", "nc", "-ll", "-p", str(port), "-e", *program])

    def run(self, port: int, argv: list, udp: bool = False) -> None:
        """Starts `argv` inside the netns and waits until something listens on `port` there (TCP, or UDP)."""
        import subprocess

        # nsenter joins the netns only: `ip netns exec` would also give the program a mount namespace of its own,
        # a copy of the host's mounts that (on a host whose / is not shared) pins every sandbox mount of that
        # moment for as long as the program runs — a sandbox stopped meanwhile could not mount its disk again.
        self.procs.append(
            subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", *argv],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        listening = "-lunH" if udp else "-ltnH"
        wait_until(
            lambda: f":{port} " in self._sh("ip", "netns", "exec", self.ns, "ss", listening).stdout, 10, f"port {port} outside"
        )

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs = []
        pids = self._sh("ip", "netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            self._sh("kill", "-9", pid, check=False)
        self._sh("ip", "link", "del", self.link, check=False)
        self._sh("ip", "netns", "del", self.ns, check=False)

    def __exit__(self, *exc) -> None:
        self.close()
