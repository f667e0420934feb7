"""Agent takeover (issue 11, Build item 3): only the node that started a sandbox talks to its envd.

Attacks: `POST /init` through the proxy (by `E2b-Sandbox-Id` header and by `49983-<id>.<domain>` host routing) to
install the attacker's access token, on an insecure sandbox and on a secure one; requests straight from the host
to the sandbox's address:49983 (as a local unprivileged user could send them); smuggling a secret header through
the proxy; reading the node's secret from a user's service on another port; another sandbox's secret.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
from e2b import Sandbox

from conftest import API_URL, DATA_DIR, ENVD_PORT, RUNTIME, SERVER_LOG, envd_headers, root_run, wait_until

DOMAIN = os.environ.get("E2B_DOMAIN", "security.soulbox.test")
SECRET_HEADER = "X-Soulbox-Envd-Secret"
REFUSED_HEADER = "x-soulbox-envd-refused"
ATTACKER_TOKEN = "attacker-token-0123456789"
ECHO_PORT = 8000

# Serves every request with the request's headers as JSON (what a user's service on another port would see).
ECHO_SERVER = """
import json, http.server
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = json.dumps([[k, v] for k, v in self.headers.items()]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", %d), H).serve_forever()
""" % ECHO_PORT


def sandbox_dir(sandbox_id: str) -> str:
    return os.path.join(DATA_DIR, "node", "sandboxes", sandbox_id)


def node_secret(sandbox_id: str) -> str:
    """The sandbox's envd secret as the node keeps it (the test runs as root on the node)."""
    with open(os.path.join(sandbox_dir(sandbox_id), "sandbox.json")) as f:
        secret = json.load(f).get("envdSecret")
    assert secret, f"sandbox {sandbox_id} has no envd secret in its record"
    return secret


def address(sandbox_id: str) -> str:
    with open(os.path.join(sandbox_dir(sandbox_id), "net.json")) as f:
        return json.load(f)["ip"]


def direct() -> httpx.Client:
    """A client on the host that talks to sandbox addresses without the server (no proxy settings). A connection
    per request: envd may close one after refusing a request whose body it did not read, and a reused connection
    then races that close ("Server disconnected without sending a response", seen under gVisor)."""
    return httpx.Client(timeout=15, trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))


def proxied(headers: dict | None = None) -> httpx.Client:
    return httpx.Client(base_url=API_URL, timeout=30, trust_env=False, headers=headers or {})


def by_host(sandbox_id: str, port: int = ENVD_PORT) -> dict:
    return {"Host": f"{port}-{sandbox_id}.{DOMAIN}"}


INIT_BODY = {"accessToken": ATTACKER_TOKEN, "envVars": {"PWNED": "1"}, "defaultUser": "root"}


def init_attempts(sandbox_id: str, token: str | None = None):
    """Every way a client can address envd's /init through the server."""
    extra = {"X-Access-Token": token} if token else {}
    yield "header", {"E2b-Sandbox-Id": sandbox_id, **extra}, "/init"
    yield "header+port", {**envd_headers(sandbox_id, token)}, "/init"
    yield "host", {**by_host(sandbox_id), **extra}, "/init"
    yield "header, other spelling", {**envd_headers(sandbox_id, token)}, "//init/"
    yield "host, other spelling", {**by_host(sandbox_id), **extra}, "/%69nit"


def assert_init_refused(sandbox_id: str, token: str | None = None):
    with proxied() as c:
        for how, headers, path in init_attempts(sandbox_id, token):
            # The full URL, so that the client sends the path exactly as written ("//init/" is not a host).
            r = c.post(httpx.URL(API_URL + path), headers=headers, json=INIT_BODY)
            assert r.status_code == 403, f"/init by {how} ({path}) answered {r.status_code}: {r.text}"
            body = r.json()
            assert body["code"] == 403 and "/init" in body["message"], body


def run_as_owner(sbx: Sandbox) -> str:
    r = sbx.commands.run("echo owner-ok; echo ${PWNED:-clean}; id -un")
    return r.stdout


def test_init_through_the_proxy_cannot_take_over_an_insecure_sandbox(sandboxes):
    # The v1 API's default: no access token.
    created = sandboxes.create_raw(path="/sandboxes")
    sid = created["sandboxID"]
    assert not created.get("envdAccessToken"), created
    assert_init_refused(sid)
    # No token was installed: the owner (no token either) still runs commands, as the default user, without PWNED.
    sbx = Sandbox.connect(sid)
    assert run_as_owner(sbx).split() == ["owner-ok", "clean", "user"]
    with proxied(envd_headers(sid)) as c:
        r = c.post("/process.Process/List", json={}, headers={"Content-Type": "application/json"})
        assert r.status_code == 200, f"a token got installed after all: {r.status_code} {r.text}"


def test_init_through_the_proxy_cannot_reconfigure_a_secure_sandbox(sandboxes):
    created = sandboxes.create_raw(path="/sandboxes", secure=True)
    sid, token = created["sandboxID"], created["envdAccessToken"]
    assert token
    # Not even with the sandbox's own token: the node configures envd, nobody else.
    assert_init_refused(sid, token)
    assert_init_refused(sid)
    sbx = Sandbox.connect(sid)
    assert run_as_owner(sbx).split() == ["owner-ok", "clean", "user"]


def test_nothing_on_the_host_reaches_envd_directly(sandboxes):
    created = sandboxes.create_raw(path="/sandboxes")
    sid = created["sandboxID"]
    secure = sandboxes.create_raw(path="/sandboxes", secure=True)
    base = f"http://{address(sid)}:{ENVD_PORT}"
    start = b"\x00" + len(b'{"process":{"cmd":"/bin/touch","args":["/tmp/pwned"]}}').to_bytes(4, "big")
    start += b'{"process":{"cmd":"/bin/touch","args":["/tmp/pwned"]}}'
    attacks = [
        ("POST", "/init", {"json": INIT_BODY}),
        ("GET", "/health", {}),
        ("POST", "/process.Process/Start", {"content": start, "headers": {"Content-Type": "application/connect+json"}}),
        ("GET", "/files", {"params": {"path": "/etc/passwd"}}),
        ("POST", "/files", {"params": {"path": "/tmp/pwned"}, "content": b"x"}),
        ("GET", "/envs", {}),
    ]
    with direct() as c:
        for method, path, kwargs in attacks:
            for presented in (None, "guess", node_secret(secure["sandboxID"])):
                kw = {**kwargs, "headers": {**kwargs.get("headers", {})}}
                if presented:
                    kw["headers"][SECRET_HEADER] = presented
                r = c.request(method, base + path, **kw)
                assert r.status_code == 403, f"{method} {path} with {presented!r}: {r.status_code} {r.text}"
                assert r.headers.get(REFUSED_HEADER) == "secret", r.headers
        # The secure sandbox: its access token without the node's secret gets nothing either.
        token = secure["envdAccessToken"]
        r = c.get(f"http://{address(secure['sandboxID'])}:{ENVD_PORT}/health", headers={"X-Access-Token": token})
        assert r.status_code == 403, r.text
        # Only the node's secret opens it (what the proxy adds).
        r = c.get(base + "/health", headers={SECRET_HEADER: node_secret(sid)})
        assert r.status_code == 200, r.text
    sbx = Sandbox.connect(sid)
    assert root_run(sbx, "test -e /tmp/pwned").exit_code != 0, "a direct request changed the sandbox"


@pytest.fixture
def echo_sandbox(sandboxes):
    sbx = sandboxes.create()
    sbx.files.write("/tmp/echo.py", ECHO_SERVER)
    sbx.commands.run("python3 /tmp/echo.py", background=True)
    with proxied(envd_headers(sbx.sandbox_id, port=ECHO_PORT)) as c:
        wait_until(lambda: _get_ok(c, "/"), 60, "the echo server inside the sandbox")
    return sbx


def _get_ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_users_service_never_sees_a_secret_and_none_can_be_smuggled(echo_sandbox):
    sid = echo_sandbox.sandbox_id
    secret = node_secret(sid)
    routes = [
        ("header", envd_headers(sid, port=ECHO_PORT)),
        ("host", by_host(sid, ECHO_PORT)),
    ]
    with proxied() as c:
        for how, headers in routes:
            for method in ("GET", "POST"):
                r = c.request(method, "/anything", headers={**headers, SECRET_HEADER: "smuggled"})
                assert r.status_code == 200, f"{how}: {r.status_code} {r.text}"
                seen = r.json()
                names = [k.lower() for k, _ in seen]
                assert SECRET_HEADER.lower() not in names, f"{how} {method}: the service saw {seen}"
                assert all(secret not in v for _, v in seen), f"{how} {method}: the node's secret reached a user port"
        # On envd's port a smuggled value is replaced by the node's own: envd still answers the owner.
        r = c.get("/health", headers={**envd_headers(sid), SECRET_HEADER: "smuggled"})
        assert r.status_code == 200, r.text


def test_signed_file_urls_reach_envd_through_the_proxy(sandboxes):
    # Signature routing (no routing headers, no API key) is the third way to envd: it must carry the secret too.
    sbx = sandboxes.create()  # v2: secure, so its file URLs are signed
    sbx.files.write("/home/user/signed.txt", "signed content")
    url = sbx.download_url("/home/user/signed.txt", user="user")
    assert "signature=" in url, url
    with httpx.Client(timeout=30, trust_env=False) as c:
        r = c.get(url)
        assert r.status_code == 200 and r.text == "signed content", f"{r.status_code} {r.text}"


def test_another_sandboxs_secret_is_refused(sandboxes):
    a = sandboxes.create_raw(path="/sandboxes")["sandboxID"]
    b = sandboxes.create_raw(path="/sandboxes")["sandboxID"]
    with direct() as c:
        # What a request meant for A gets if it reaches B's envd (an address reused while A's record exists).
        r = c.get(f"http://{address(b)}:{ENVD_PORT}/health", headers={SECRET_HEADER: node_secret(a)})
        assert r.status_code == 403 and r.headers.get(REFUSED_HEADER) == "secret", r.text


def test_the_secret_never_reaches_a_client(api, sandboxes):
    created = sandboxes.create_raw(path="/sandboxes", secure=True)
    sid = created["sandboxID"]
    secret = node_secret(sid)
    texts = [json.dumps(created)]
    for path in (f"/sandboxes/{sid}", "/sandboxes", "/v2/sandboxes", f"/sandboxes/{sid}/logs", f"/v2/sandboxes/{sid}/logs"):
        r = api.get(path)
        texts.append(r.text)
    # Through the proxy, envd's answers.
    with proxied(envd_headers(sid, created["envdAccessToken"])) as c:
        texts.append(c.get("/health").text)
        texts.append(c.get("/envs").text)
    # And the server's log.
    if SERVER_LOG and os.path.exists(SERVER_LOG):
        with open(SERVER_LOG, errors="replace") as f:
            texts.append(f.read())
    leaked = [t[:200] for t in texts if secret in t]
    assert not leaked, f"the envd secret leaked: {leaked}"


def test_processes_inside_cannot_read_the_secret(sandboxes):
    sbx = sandboxes.create()
    secret = node_secret(sbx.sandbox_id)
    # The secret never appears whole on a command line here (that would find itself): printf joins two halves
    # into a needle file outside the searched directories.
    half = len(secret) // 2
    # Under runc envd is not dumpable, so root inside cannot even open envd's environ. gVisor lets root read it:
    # there what counts is that the secret is gone from it (envd wipes it at start, env_scrub.rs).
    readable = "cat /proc/1/environ >/dev/null 2>&1 && echo READABLE; " if RUNTIME == "runc" else ""
    script = (
        f"printf '%s%s\\n%s%s\\n' {secret[:half]} {secret[half:]} SOULBOX_ENVD _INIT > /dev/shm/needle; "
        "for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do cat $f 2>/dev/null; echo; done | tr '\\0' '\\n' "
        "| grep -c -F -f /dev/shm/needle; "
        + readable
        + "grep -rl -F -f /dev/shm/needle /etc /home /tmp /root 2>/dev/null | head -3; rm -f /dev/shm/needle; true"
    )
    for user in ("root", "user"):
        r = root_run(sbx, script) if user == "root" else sbx.commands.run(script)
        assert r.stdout.split() == ["0"], f"as {user}: {r.stdout} {r.stderr}"


def test_the_nodes_own_envd_routes_are_refused_through_the_proxy(sandboxes):
    """`/soulbox/quiesce` (before a gVisor checkpoint) resets every other connection of envd and, when it refuses,
    names the sandbox's processes. The proxy adds the node secret to what it forwards, so only its refusal keeps a
    client from cutting the owner's streams; a stream open meanwhile must come through whole."""
    created = sandboxes.create_raw(path="/sandboxes")
    sid = created["sandboxID"]
    sbx = Sandbox.connect(sid)
    streaming = sbx.commands.run("sleep 2; echo survived", background=True)
    attempts = [
        ("header", envd_headers(sid), "/soulbox/quiesce"),
        ("host", by_host(sid), "/soulbox/quiesce"),
        ("header, other case", envd_headers(sid), "/SoulBox//quiesce/"),
        ("host, encoded", by_host(sid), "/%73oulbox/quiesce"),
        ("header, dot segments", envd_headers(sid), "/x/../soulbox/./quiesce"),
        ("host, a future route", by_host(sid), "/soulbox/anything"),
    ]
    with proxied() as c:
        for how, headers, path in attempts:
            r = c.post(httpx.URL(API_URL + path), headers=headers)
            assert r.status_code == 403, f"{path} by {how} answered {r.status_code}: {r.text}"
            assert "/soulbox/" in r.json()["message"], r.text
    result = streaming.wait()
    assert result.stdout == "survived\n", result
