"""A `soulbox server` of a test module's own for the attack files that need settings the suite's server does not
have (the booted pool) or a server nothing else touches meanwhile (the route cache's timing): `OwnServer` from
test_netstate.py on the suite's spare prefix and pool, started once per module and always cleaned up."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from conftest import wait_until
from test_netstate import SPARE_PREFIX, TEMPLATE_DIR, OwnServer, host_leftovers

# The template store: the suite's (run.sh's data dir), or the one SOULBOX_TEMPLATE_DIR names (a run that borrows
# another suite's built templates, as the suite's own server does then).
TEMPLATES = os.environ.get("SOULBOX_TEMPLATE_DIR") or TEMPLATE_DIR
SECRET_HEADER = "X-Soulbox-Envd-Secret"
REFUSED_HEADER = "x-soulbox-envd-refused"


def module_server(name: str, *extra: str):
    """A pytest fixture body: an `OwnServer` started with `extra` flags; stopped, its data dir removed and the host
    checked for leftovers of its prefix afterwards, also when a test failed."""
    server = OwnServer(name, template_dir=TEMPLATES, extra=extra)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
        left = host_leftovers(SPARE_PREFIX, server.data_dir)
        assert left == [], f"the module's own server left host objects behind: {left}"


def sandbox_record(server: OwnServer, sandbox_id: str) -> dict:
    """The node's record of a sandbox (sandbox.json) and its address, as root on the node reads them."""
    d = os.path.join(server.data_dir, "node", "sandboxes", sandbox_id)
    with open(os.path.join(d, "sandbox.json")) as f:
        rec = json.load(f)
    with open(os.path.join(d, "net.json")) as f:
        rec["ip"] = json.load(f)["ip"]
    return rec


def direct() -> httpx.Client:
    """The host talking to sandbox addresses without the server; a connection per request (test_takeover.py)."""
    return httpx.Client(timeout=15, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def sdk_opts(server: OwnServer, key: str | None = None) -> dict:
    return {"api_key": key or server.key, "api_url": server.url, "sandbox_url": server.url}


def new_key(server: OwnServer, name: str, team: str) -> str:
    """An ordinary API key of `team` on the server's store (made while it runs, like run.sh's team B key)."""
    import subprocess

    from conftest import SOULBOX_BIN

    out = subprocess.run(
        [SOULBOX_BIN, "--data-dir", server.data_dir, "keys", "create", "--name", name, "--team", team],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("export E2B_API_KEY="):
            return line.split("=", 1)[1].split()[0]
    pytest.fail(f"no key in: {out}")


def wait_log(server: OwnServer, needle: str, timeout: float = 60) -> None:
    wait_until(lambda: needle in server.log(), timeout, f"{needle!r} in the server's log")
