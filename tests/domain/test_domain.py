"""E2B cloud users' setup against SoulBox: only E2B_DOMAIN and E2B_API_KEY are set (no E2B_API_URL or
E2B_SANDBOX_URL), so the official SDK goes to https://api.<domain> and https://<port>-<id>.<domain> like it does
to E2B. Run by tests/domain/run.sh inside a network namespace whose DNS (tests/domain/dns.py) answers the
test's domain with the server's address and whose TLS trust is the test CA through SSL_CERT_FILE.
"""

import os
import time

import httpx
import pytest
from e2b import Sandbox

DOMAIN = os.environ["E2B_DOMAIN"]


def test_only_the_domain_is_configured():
    for name in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_DEBUG"):
        assert name not in os.environ, f"{name} would bypass the domain"
    assert os.environ.get("SSL_CERT_FILE"), "the test CA is trusted through SSL_CERT_FILE"


def test_health_over_https_by_name():
    r = httpx.get(f"https://api.{DOMAIN}/health", timeout=10)
    assert r.status_code == 200, r.text
    assert r.url.scheme == "https"


def test_sdk_by_domain_commands_files_and_a_port_url():
    sbx = Sandbox.create(timeout=120)
    try:
        # The SDK's envd traffic goes to https://49983-<id>.<domain>.
        run = sbx.commands.run("echo hello from $(hostname)")
        assert run.exit_code == 0
        assert run.stdout.startswith("hello from")

        sbx.files.write("/tmp/domain.txt", "over TLS by name\n")
        assert sbx.files.read("/tmp/domain.txt") == "over TLS by name\n"

        sbx.commands.run("mkdir -p /tmp/www && echo served-by-port-8080 > /tmp/www/index.html")
        sbx.commands.run("cd /tmp/www && python3 -m http.server 8080", background=True)
        host = sbx.get_host(8080)
        assert host == f"8080-{sbx.sandbox_id}.{DOMAIN}", host
        url = f"https://{host}/index.html"
        deadline = time.monotonic() + 30
        while True:
            r = httpx.get(url, timeout=10)
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)  # 502 until http.server listens
        assert r.status_code == 200, r.text
        assert r.text == "served-by-port-8080\n"
    finally:
        sbx.kill()


def test_an_unknown_name_does_not_resolve():
    # The namespace's DNS answers the test's domain only: nothing leaks to real DNS.
    with pytest.raises(httpx.ConnectError):
        httpx.get("https://api.soulbox-domain-test.invalid/health", timeout=5)
