"""Network control through the official SDK (issue 14): private ports with a traffic access token, masked hosts,
and live `update_network` on a running and on a paused sandbox.

Network rule: sandboxes only talk to a fake outside world this file builds (a netns on 203.0.113.120/30, routed
back through the host) and to themselves.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import textwrap
from dataclasses import dataclass

import pytest
from e2b import Sandbox

from conftest import DOMAIN, wait_until
from sbtest import outside_world

TOKEN_HEADER = "e2b-traffic-access-token"
HOST_ADDR, OUTSIDE_ADDR = "203.0.113.121", "203.0.113.122"

# A sandbox process that opens a connection to the outside's echo, proves it works, waits for /tmp/go, sends again
# and writes what happened to /tmp/conn: `echo:…` (the connection outlived the update), else how it ended.
HOLD_CONNECTION = textwrap.dedent(
    f"""
    import os, socket, time
    s = socket.create_connection(("{OUTSIDE_ADDR}", 7), timeout=10)
    s.sendall(b"first\\n")
    open("/tmp/conn", "w").write("first:" + s.recv(100).decode())
    while not os.path.exists("/tmp/go"):
        time.sleep(0.05)
    try:
        s.sendall(b"second\\n")
        s.settimeout(30)
        data = s.recv(100)
        result = "echo:" + data.decode() if data else "closed"
    except Exception as e:
        result = "error:" + type(e).__name__
    open("/tmp/conn", "a").write("|" + result)
    """
)


def port_get(anon, sbx: Sandbox, port: int, path: str = "/", token: str | None = None):
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(port)}
    if token is not None:
        headers[TOKEN_HEADER] = token
    return anon.get(path, headers=headers)


def serve_host_echo(sbx: Sandbox, port: int) -> None:
    """A server in the sandbox that answers with the Host header it got."""
    script = textwrap.dedent(
        f"""
        import http.server
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = (self.headers.get("Host") or "").encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
        http.server.HTTPServer(("0.0.0.0", {port}), H).serve_forever()
        """
    )
    sbx.files.write("/tmp/host_echo.py", script)
    sbx.commands.run("python3 /tmp/host_echo.py", background=True)


def test_private_ports_need_the_traffic_access_token(sandboxes, anon):
    sbx = sandboxes.create(network={"allow_public_traffic": False})
    token = sbx.traffic_access_token
    assert token, "a private sandbox gets a traffic access token"
    serve_host_echo(sbx, 8010)
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(port_get(anon, sbx, 8010, token=token)), 30, "the port")
    assert r.status_code == 200
    for wrong in (None, "", "not-the-token", token + "x"):
        r = port_get(anon, sbx, 8010, token=wrong)
        assert r.status_code == 403, (wrong, r.status_code, r.text)
        assert r.json()["code"] == 403
    if DOMAIN:
        r = anon.get("/", headers={"Host": f"8010-{sbx.sandbox_id}.{DOMAIN}"})
        assert r.status_code == 403, r.text
        r = anon.get("/", headers={"Host": f"8010-{sbx.sandbox_id}.{DOMAIN}", TOKEN_HEADER: token})
        assert r.status_code == 200, r.text
    # envd keeps its own token: the SDK's own calls work as before.
    assert sbx.commands.run("echo ok").stdout.strip() == "ok"
    # connect hands out the same token; a public sandbox has none.
    assert Sandbox.connect(sbx.sandbox_id).traffic_access_token == token
    public = sandboxes.create()
    assert not public.traffic_access_token


def test_mask_request_host_is_the_host_a_port_sees(sandboxes, anon):
    sbx = sandboxes.create(network={"mask_request_host": "${PORT}-masked.example.test"})
    serve_host_echo(sbx, 8011)
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(port_get(anon, sbx, 8011)), 30, "the port")
    assert r.text == "8011-masked.example.test"


def sdk_sends_proxy_tls() -> bool:
    """Older SDKs (2.45) have no `tls` in `egress_proxy` and drop it."""
    try:
        from e2b.api.client.models import sandbox_egress_proxy_tls_config_type_0  # noqa: F401
    except ImportError:
        return False
    return True


def test_bad_entries_rules_and_proxy_tls_are_refused_clearly_and_host_names_read_back(sandboxes):
    sbx = sandboxes.create()
    refused = [
        ({"allow_out": ["api.*.example.com"]}, "neither"),
        ({"rules": {"api.*.example.com": [{"transform": {"headers": {"X-Key": "v"}}}]}}, "rules host"),
        ({"rules": {"api.example.com": [{"transform": {"headers": {"bad header": "v"}}}]}}, "header name"),
        ({"rules": {"api.example.com": [{"transform": {"headers": {"X": "${e2b.identity.tokens.aws}"}}}]}}, "only"),
        ({"egress_proxy": {"address": "169.254.169.254:1080"}}, "private"),
    ]
    if sdk_sends_proxy_tls():
        refused.append(({"egress_proxy": {"address": "203.0.113.9:1080", "tls": True}}, "tls"))
    for network, words in refused:
        with pytest.raises(Exception) as info:
            sbx.update_network(network)
        assert words in str(info.value), (network, str(info.value))
    # Host names are taken (the node's egress gateway matches them; tested on a fake internet in the runtime's
    # `host_rules_pass_named_http_and_tls_through_the_gateway`): no connection is made here.
    sbx.update_network({"allow_out": ["api.example.com", "*.example.org"], "deny_out": ["0.0.0.0/0"]})
    assert sbx.commands.run("echo still-fine").stdout.strip() == "still-fine"


def sdk_sends_dns_servers() -> bool:
    """Older SDKs (2.45) have no `dns_servers` and drop it (names would then be looked up on the node's real DNS
    servers: the test must not run)."""
    import inspect

    try:
        from e2b.sandbox import sandbox_api
    except ImportError:
        return False
    return "dns_servers" in inspect.getsource(sandbox_api)


@pytest.mark.skipif(not sdk_sends_dns_servers(), reason="this e2b SDK has no dns_servers")
def test_host_names_allow_deny_wildcards_and_precedence(sandboxes, outside):
    """Host names in `allow_out`/`deny_out` through the official SDK: allow over a deny-all lets only that name,
    wildcards, deny by name with internet on, header rules by name. The names resolve through the sandbox's own
    `dns_servers`: a fake DNS in the outside world answers `*.e2e.test` (nothing is looked up anywhere else)."""
    echo = os.path.join(os.path.dirname(__file__), "..", "lib", "header_echo.py")
    fake_dns = os.path.join(os.path.dirname(__file__), "..", "lib", "fake_dns.py")
    outside.run(80, ["python3", echo, "80"])
    outside.run(53, ["python3", fake_dns, OUTSIDE_ADDR, "e2e.test"], udp=True)
    dns = {"dns_servers": [OUTSIDE_ADDR]}

    def reached(sbx, name: str) -> bool:
        # The body only (curl's own errors name the host too): the echo's lines are `Header: value`.
        got = sbx.commands.run(f"curl -s --max-time 5 http://{name}/; true").stdout.lower()
        return f"host: {name}" in got.splitlines()

    sbx = sandboxes.create(network={"allow_out": ["good.e2e.test"], "deny_out": ["0.0.0.0/0"], **dns})
    assert reached(sbx, "good.e2e.test"), "the allowed name"
    assert not reached(sbx, "bad.e2e.test"), "another name under the deny-all"
    looked_up = sbx.commands.run("getent hosts bad.e2e.test good.e2e.test; true").stdout
    assert "good.e2e.test" in looked_up and "bad.e2e.test" not in looked_up, looked_up
    info = sbx.get_info()
    assert "good.e2e.test" in repr(info), "the host name reads back"

    sbx.update_network({"allow_out": ["*.wild.e2e.test"], "deny_out": ["0.0.0.0/0"], **dns})
    assert reached(sbx, "a.wild.e2e.test"), "a wildcard"
    assert not reached(sbx, "wild.e2e.test") and not reached(sbx, "good.e2e.test")

    sbx.update_network({"deny_out": ["bad.e2e.test"], **dns})
    assert not reached(sbx, "bad.e2e.test"), "a denied name with internet on"
    assert reached(sbx, "good.e2e.test"), "other names with internet on"

    rules = {"good.e2e.test": [{"transform": {"headers": {"X-Named": "yes"}}}]}
    sbx.update_network({"rules": rules, **dns})
    assert "x-named: yes" in sbx.commands.run("curl -sS --max-time 5 http://good.e2e.test/").stdout.lower()
    assert "x-named" not in sbx.commands.run("curl -sS --max-time 5 http://other.e2e.test/").stdout.lower()


@dataclass(frozen=True)
class RuleSecret:
    """A team secret for the header-rule tests; `rules` puts it in an Authorization header to the outside world."""

    name: str
    value: str

    def rules(self, extra_headers: dict[str, str] | None = None) -> dict:
        headers = {"Authorization": f"Bearer ${{e2b.secrets.{self.name}}}", **(extra_headers or {})}
        return {OUTSIDE_ADDR: [{"transform": {"headers": headers}}]}


@pytest.fixture
def rule_secret(outside, api):
    """The header-rule tests' setup: the outside world's header echo on 80 (HTTP) and 443 (HTTPS, the outside
    world's certificate), and a secret that is deleted afterwards, also when the test fails."""
    tls = os.environ.get("SOULBOX_E2E_OUTSIDE_TLS")
    if not tls:
        pytest.skip("run through tests/e2e/run.sh (it makes the outside world's TLS certificate)")
    echo = os.path.join(os.path.dirname(__file__), "..", "lib", "header_echo.py")
    outside.run(80, ["python3", echo, "80"])
    outside.run(443, ["python3", echo, "443", f"{tls}/cert.pem", f"{tls}/key.pem"])
    secret = RuleSecret(f"e2e-rules-{os.getpid()}", f"rules-secret-{os.urandom(12).hex()}")
    r = api.post("/secrets", json={"name": secret.name, "value": secret.value})
    assert r.status_code in (200, 201), r.text
    try:
        yield secret
    finally:
        api.delete(f"/secrets/{secret.name}")


def test_header_rules_put_a_secret_on_http_and_https_requests(sandboxes, rule_secret):
    """E2B's `rules`: requests to a host with rules carry its headers, `${e2b.secrets.NAME}` filled in by the node's
    egress gateway as the request leaves. Over HTTPS the gateway terminates TLS with the installation's CA, which the
    sandbox trusts by default (curl, Python); it verifies the destination with the outside world's own CA
    (`egress_trusted_ca`). The sandbox never holds the secret; an unknown secret fails the request with a message."""
    value = rule_secret.value
    sbx = sandboxes.create(network={"rules": rule_secret.rules({"X-Plain": "yes"})})
    for url in (f"http://{OUTSIDE_ADDR}/", f"https://{OUTSIDE_ADDR}/"):
        got = sbx.commands.run(f"curl -sS --max-time 10 {url}").stdout.lower()
        assert f"authorization: bearer {value}" in got and "x-plain: yes" in got, (url, got)
    py = f"import urllib.request; print(urllib.request.urlopen('https://{OUTSIDE_ADDR}/', timeout=10).read().decode())"
    assert f"Bearer {value}" in sbx.commands.run(f'python3 -c "{py}"').stdout
    env = sbx.commands.run("echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS").stdout
    assert "/usr/local/share/soulbox/ca-bundle.pem" in env and "soulbox-egress.crt" in env, env
    # The value exists only in requests on their way out (the echo above sent it back; nothing kept it).
    leaked = sbx.commands.run(
        f"grep -rlsF '{value}' /etc /home /root /tmp /usr/local /var 2>/dev/null; "
        f"cat /proc/[0-9]*/environ 2>/dev/null | grep -c '{value}'; true",
        user="root",
    ).stdout
    assert leaked.strip() == "0", f"the secret is in the sandbox: {leaked}"
    shown = repr(sbx.get_info())
    assert value not in shown, "the secret's value came back in the sandbox's info"
    # A secret that does not exist: the request fails with a message, nothing is sent with a bad credential.
    sbx.update_network({"rules": {OUTSIDE_ADDR: [{"transform": {"headers": {"X-Key": "${e2b.secrets.no-such-secret}"}}}]}})
    got = sbx.commands.run(f"curl -sS -i --max-time 10 http://{OUTSIDE_ADDR}/").stdout
    assert "502" in got and "no-such-secret" in got and "x-key" not in got.lower(), got
    # Rules cleared: requests pass untouched (over TLS with the outside world's certificate, which the sandbox
    # does not trust, so -k).
    sbx.update_network({})
    got = sbx.commands.run(f"curl -sS -k --max-time 10 https://{OUTSIDE_ADDR}/").stdout.lower()
    assert "host:" in got and "authorization" not in got, got


# Runs in the sandbox as `user`: a child process makes the ruled requests (HTTP and HTTPS, under /hashed so the
# echo sends back only hashes) and keeps the answers and its connections' buffers; the parent, allowed to read a
# child's memory, then searches every readable mapping of it and of every other process it may read for the
# secret. The secret arrives reversed (argv, envd's memory) and is turned round only inside the scanner, which
# skips itself.
MEMORY_SCAN = textwrap.dedent(
    """
    import os, subprocess, sys
    needle = sys.argv[1][::-1].encode()
    requester = subprocess.Popen([sys.executable, "-c", sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    answers = requester.stdout.readline().decode().strip()
    scanned, found = [], []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            maps = open(f"/proc/{pid}/maps").read().splitlines()
            mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
        except OSError:
            continue
        with mem:
            for line in maps:
                span, perms = line.split()[:2]
                if not perms.startswith("r"):
                    continue
                start, end = (int(x, 16) for x in span.split("-"))
                try:
                    mem.seek(start)
                    chunk = mem.read(end - start)
                except (OSError, ValueError, OverflowError):
                    continue
                if needle in chunk:
                    found.append(pid)
        scanned.append(pid)
    print("ANSWERS", answers)
    print("SCANNED", str(requester.pid) in scanned, len(scanned))
    print("FOUND", sorted(set(found)))
    requester.stdin.close()
    requester.wait()
    """
)

REQUESTER = textwrap.dedent(
    """
    import hashlib, sys, urllib.request
    got = [urllib.request.urlopen(u + "/hashed", timeout=10).read().decode() for u in ("http://{addr}", "https://{addr}")]
    auth = [l.split(": ", 1)[1] for g in got for l in g.splitlines() if l.lower().startswith("authorization:")]
    print(",".join(auth), flush=True)
    sys.stdin.read()
    """
)


def test_a_sandbox_that_used_a_secret_holds_it_nowhere_in_memory(sandboxes, rule_secret):
    """The secret a header rule injects is added outside the sandbox: after requests that carried it (the upstream
    proves it by answering the value's hash), no memory of the requesting process — nor of any process the sandbox's
    user can read — holds it. Fails if the gateway handed the value to the sandbox in any form its client keeps."""
    value = rule_secret.value
    sbx = sandboxes.create(network={"rules": rule_secret.rules()})
    sbx.files.write("/tmp/scan.py", MEMORY_SCAN)
    requester = REQUESTER.replace("{addr}", OUTSIDE_ADDR)
    out = sbx.commands.run(f"python3 /tmp/scan.py {value[::-1]} {shlex.quote(requester)}", timeout=120).stdout
    report = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    sent = hashlib.sha256(f"Bearer {value}".encode()).hexdigest()
    assert report.get("ANSWERS") == f"{sent},{sent}", f"the upstream did not get the secret over HTTP and HTTPS: {out}"
    assert report.get("SCANNED", "").startswith("True"), f"the requester's memory could not be read: {out}"
    assert report.get("FOUND") == "[]", f"the secret is in the memory of sandbox processes: {out}"


@pytest.fixture
def outside():
    services = {8080: ["/bin/echo", "outside-ok"], 7: ["/bin/cat"]}
    yield from outside_world("sbns-e2enet", "sbnse2enet", HOST_ADDR, OUTSIDE_ADDR, services)


def reaches(sbx: Sandbox) -> bool:
    r = sbx.commands.run(f"timeout 3 bash -c 'cat </dev/tcp/{OUTSIDE_ADDR}/8080' 2>&1; true", user="root")
    return "outside-ok" in r.stdout


def test_update_network_cuts_tightens_loosens_and_clears(sandboxes, outside):
    sbx = sandboxes.create()
    assert reaches(sbx)
    sbx.files.write("/tmp/hold.py", HOLD_CONNECTION)
    sbx.commands.run("python3 /tmp/hold.py", background=True)
    wait_until(lambda: "first:first" in sbx.files.read("/tmp/conn") if sbx.files.exists("/tmp/conn") else None, 30, "the open connection")

    sbx.update_network({"deny_out": ["203.0.113.0/24"]})
    sbx.files.write("/tmp/go", "")
    result = wait_until(lambda: (lambda t: t if "|" in t else None)(sbx.files.read("/tmp/conn")), 60, "the connection's end")
    assert "echo:" not in result, f"an open connection outlived the update: {result}"
    assert not reaches(sbx), "a new connection ignored the update"
    info = sbx.get_info()
    network = getattr(info, "network", None)
    if network is not None:
        assert (network.get("deny_out") if isinstance(network, dict) else getattr(network, "deny_out", None)) in (["203.0.113.0/24"], None)

    # Allow wins over deny, as at create: only that host.
    sbx.update_network({"allow_out": [OUTSIDE_ADDR], "deny_out": ["0.0.0.0/0"]})
    assert reaches(sbx)
    # Cleared: omitted fields reset.
    sbx.update_network({})
    assert reaches(sbx)
    sbx.update_network({"allow_internet_access": False})
    assert not reaches(sbx)


def test_a_paused_sandbox_takes_the_update_on_resume(sandboxes, outside):
    sbx = sandboxes.create()
    assert reaches(sbx)
    sbx.pause()
    Sandbox.update_network(sbx.sandbox_id, {"deny_out": [f"{OUTSIDE_ADDR}/32"]})
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert not reaches(resumed), "the resumed sandbox ignored the update it got while paused"
    resumed.update_network({})
    assert reaches(resumed)


def test_an_egress_proxy_tunnels_the_sandboxs_tcp_and_fails_closed(sandboxes, outside, tmp_path):
    """E2B's `egress_proxy`: a real SOCKS5 server in the fake outside world carries the sandbox's TCP (its log shows
    the tunnel); with the wrong password nothing goes out, directly or otherwise; the password is never returned."""
    log = tmp_path / "socks.log"
    log.touch()
    script = os.path.join(os.path.dirname(__file__), "..", "lib", "socks5_server.py")
    outside.run(1080, ["python3", script, "1080", str(log), "agent", "s3cret-pw"])
    proxy = {"address": f"{OUTSIDE_ADDR}:1080", "username": "agent", "password": "s3cret-pw"}
    sbx = sandboxes.create(network={"egress_proxy": proxy})
    assert reaches(sbx), "the sandbox's TCP did not get through the proxy"
    assert f"CONNECT {OUTSIDE_ADDR}:8080" in log.read_text(), log.read_text()
    info = sbx.get_info()
    assert "s3cret-pw" not in repr(info), "the password came back"
    sbx.update_network({"egress_proxy": {**proxy, "password": "wrong"}})
    assert not reaches(sbx), "with bad credentials the sandbox still got out"
    assert "auth refused" in log.read_text(), log.read_text()
    # Replace semantics: an update without the proxy sends traffic straight out.
    before = log.read_text()
    sbx.update_network({})
    assert reaches(sbx)
    assert log.read_text() == before, "traffic still went through the proxy"
