"""Private sandbox ports (issue 14), attacked from outside: a caller without the sandbox's traffic access token —
no key, another team's key, the sandbox's own envd access token, another private sandbox's traffic token, the token
twice, a near miss — gets 403 from every route to a user port, and cannot wake the sandbox when it is paused with
auto-resume. The sandbox's service never sees the token, and a client cannot pick the Host a node agent sends.
"""

from __future__ import annotations

import pytest

from conftest import wait_until

pytestmark = pytest.mark.timeout(300)

PORT = 8020
TOKEN_HEADER = "e2b-traffic-access-token"


def serve_headers(sbx) -> None:
    """A server in the sandbox that answers with every request header it got."""
    sbx.files.write(
        "/tmp/headers.py",
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = str(self.headers).encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        f"http.server.HTTPServer(('0.0.0.0', {PORT}), H).serve_forever()\n",
    )
    sbx.commands.run("python3 /tmp/headers.py", background=True)


def get(client, sbx, token=None, extra=None):
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": str(PORT)}
    if token is not None:
        headers[TOKEN_HEADER] = token
    headers.update(extra or {})
    return client.get("/", headers=headers)


def test_no_token_no_port(sandboxes, api, anon, api_b):
    sbx = sandboxes.create(network={"allow_public_traffic": False})
    other = sandboxes.create(network={"allow_public_traffic": False})
    token = sbx.traffic_access_token
    assert token and other.traffic_access_token and token != other.traffic_access_token
    serve_headers(sbx)
    wait_until(lambda: get(anon, sbx, token).status_code == 200, 30, "the sandbox's port")

    envd_token = api.get(f"/sandboxes/{sbx.sandbox_id}").json().get("envdAccessToken")
    attempts = [None, "", token[:-1], token + "a", token.upper() if token.upper() != token else token + "B",
                other.traffic_access_token]
    if envd_token:
        attempts.append(envd_token)
    for client in (anon, api_b):
        for attempt in attempts:
            r = get(client, sbx, attempt)
            assert r.status_code == 403, (attempt, r.status_code, r.text)
            assert r.json()["code"] == 403
        # The token twice (which one counts is the kind of ambiguity an attacker looks for).
        r = client.get("/", headers=[("E2b-Sandbox-Id", sbx.sandbox_id), ("E2b-Sandbox-Port", str(PORT)),
                                     (TOKEN_HEADER, token), (TOKEN_HEADER, token)])
        assert r.status_code == 403, r.text

    # With the token: the service answers, and never sees the token; a client-chosen node-agent Host is dropped.
    r = get(anon, sbx, token, {"x-soulbox-sandbox-host": "evil.test"})
    assert r.status_code == 200, r.text
    assert token not in r.text and TOKEN_HEADER not in r.text.lower(), r.text
    assert "evil.test" not in r.text and "x-soulbox-sandbox-host" not in r.text.lower(), r.text


def test_a_stranger_cannot_wake_a_paused_private_sandbox(api, anon):
    r = api.post("/v2/sandboxes", json={"templateID": "base", "timeout": 120, "autoResume": {"enabled": True},
                                        "network": {"allowPublicTraffic": False}, "metadata": {"sec": "private"}})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        assert api.post(f"/sandboxes/{sid}/pause", json={}).status_code == 204
        for _ in range(3):
            r = anon.get("/", headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": str(PORT)})
            assert r.status_code == 403, r.text
        assert api.get(f"/sandboxes/{sid}").json()["state"] == "paused", "a request without the token woke it"
    finally:
        api.delete(f"/sandboxes/{sid}")
