"""The egress gateway (issue 14), attacked from inside a sandbox whose policy allows one host name and denies every
address: a `Host` or TLS SNI of another name, two `Host` headers, bytes that name nothing, and a connection straight
to the gateway's own port all get nothing from the fake outside world; a connection the address rules allow gets
its answer, so the path itself works.

Network rule: the sandboxes talk only to a fake outside world this file builds (a netns on 203.0.113.108/30) and to
their node. No allowed name is ever asked for, so the gateway never resolves a name (which would query the node's
real DNS servers).
"""

from __future__ import annotations

import socket
import textwrap

import pytest

from conftest import root_run
from sbtest import outside_world

pytestmark = pytest.mark.timeout(300)

HOST_ADDR, OUTSIDE_ADDR = "203.0.113.109", "203.0.113.110"

# Sends what argv[1] names to OUTSIDE:port and prints what came back (nothing when refused).
PROBE = textwrap.dedent(
    f"""
    import socket, ssl, sys
    kind, arg, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "tls":
        ctx = ssl.create_default_context()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=arg)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        payload = outgoing.read()
    else:
        payload = arg.encode().decode("unicode_escape").encode()
    try:
        s = socket.create_connection(("{OUTSIDE_ADDR}", port), timeout=3)
        s.sendall(payload)
        s.settimeout(3)
        print(s.recv(100).decode(errors="replace"))
    except OSError as e:
        print("refused:", type(e).__name__)
    """
)


@pytest.fixture
def outside():
    services = {80: ["/bin/echo", "http-ok"], 443: ["/bin/echo", "tls-ok"]}
    yield from outside_world("sbns-secgw", "sbnssecgw0", HOST_ADDR, OUTSIDE_ADDR, services)


def probe(sbx, kind: str, arg: str, port: int) -> str:
    return root_run(sbx, f"python3 /tmp/probe.py {kind} '{arg}' {port}").stdout


def test_names_the_policy_does_not_allow_get_nothing_through_the_gateway(sandboxes, outside):
    sbx = sandboxes.create(network={"allow_out": ["api.allowed.test", OUTSIDE_ADDR], "deny_out": ["0.0.0.0/0"]})
    sbx.files.write("/tmp/probe.py", PROBE)
    # The path works: a request that names nothing is judged by its (allowed) address.
    assert "http-ok" in probe(sbx, "raw", "GET / HTTP/1.0\\r\\n\\r\\n", 80), "precondition: the gateway passes"

    closed = sandboxes.create(network={"allow_out": ["api.allowed.test"], "deny_out": ["0.0.0.0/0"]})
    closed.files.write("/tmp/probe.py", PROBE)
    attacks = [
        ("raw", "GET / HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n", 80, "http-ok"),
        ("raw", "GET / HTTP/1.1\\r\\nHost: api.allowed.test\\r\\nHost: evil.test\\r\\n\\r\\n", 80, "http-ok"),
        ("raw", "GET / HTTP/1.0\\r\\n\\r\\n", 80, "http-ok"),
        ("raw", "\\x00\\x01not http at all\\r\\n\\r\\n", 80, "http-ok"),
        ("tls", "evil.test", 443, "tls-ok"),
        ("tls", "api.allowed.test.evil.test", 443, "tls-ok"),
    ]
    for kind, arg, port, answer in attacks:
        got = probe(closed, kind, arg, port)
        assert answer not in got, f"{kind} {arg!r} got through: {got}"
    # The gateway's own port, straight from the sandbox (not through the redirect): dropped.
    gateway = root_run(closed, "ip route | awk '/default/ {print $3}'").stdout.strip()
    r = root_run(closed, f"timeout 3 bash -c 'echo x >/dev/tcp/{gateway}/49980' && echo connected; true")
    assert "connected" not in r.stdout, f"the gateway port answered directly: {r.stdout}"


def test_the_gateway_does_not_hand_a_sandbox_the_nodes_own_addresses(sandboxes, outside):
    """The gateway connects from the node: an address of the node itself (here its end of the fake world's link,
    where this test listens) must stay as closed as the firewall's input chain keeps it, even when allowOut names
    it."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST_ADDR, 80))
    listener.listen(8)
    listener.setblocking(False)
    try:
        sbx = sandboxes.create(network={"allow_out": ["api.allowed.test", HOST_ADDR], "deny_out": ["0.0.0.0/0"]})
        sbx.files.write("/tmp/probe.py", PROBE.replace(OUTSIDE_ADDR, HOST_ADDR))
        probe(sbx, "raw", "GET / HTTP/1.0\\r\\n\\r\\n", 80)
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()
