"""Header rules and secrets (issue 14), attacked: team B's sandbox naming team A's secret in its rules gets a 502 and
the destination never sees the value (team A's own sandbox, with the same rules, does: the control); the
installation's egress CA key is sealed in the store and never put into a sandbox (the certificate is, as it must
be: the control).

Network rule: the sandboxes talk only to a fake outside world this file builds (a netns on 203.0.113.112/30) and to
their node; rules are keyed by that address, so no name is ever resolved.
"""

from __future__ import annotations

import os
import uuid

import pytest

from conftest import DATA_DIR, root_run
from sbtest import outside_world

pytestmark = pytest.mark.timeout(300)

HOST_ADDR, OUTSIDE_ADDR = "203.0.113.113", "203.0.113.114"
ECHO = os.path.join(os.path.dirname(__file__), "..", "lib", "header_echo.py")


@pytest.fixture
def outside():
    yield from outside_world("sbns-secrl", "sbnssecrl0", HOST_ADDR, OUTSIDE_ADDR, {})


@pytest.fixture
def team_a_secret(api):
    name, value = f"sec-rules-{uuid.uuid4().hex[:8]}", f"team-a-value-{uuid.uuid4().hex}"
    r = api.post("/secrets", json={"name": name, "value": value})
    assert r.status_code in (200, 201), r.text
    yield name, value
    api.delete(f"/secrets/{name}")


def rules_naming(secret: str) -> dict:
    return {"rules": {OUTSIDE_ADDR: [{"transform": {"headers": {"X-Key": f"${{e2b.secrets.{secret}}}"}}}]}}


def fetch(sbx) -> str:
    return root_run(sbx, f"curl -sS -i --max-time 10 http://{OUTSIDE_ADDR}/").stdout


def test_another_teams_secret_cannot_be_named_in_rules(outside, sandboxes, sandboxes_b, team_a_secret):
    outside.run(80, ["python3", ECHO, "80"])
    name, value = team_a_secret
    own = fetch(sandboxes.create(network=rules_naming(name)))
    assert f"x-key: {value}" in own.lower(), f"the control failed: team A's own sandbox did not get its secret: {own}"
    stolen = fetch(sandboxes_b.create(network=rules_naming(name)))
    assert value not in stolen, "team B's sandbox got team A's secret"
    assert "502" in stolen and "does not exist" in stolen, stolen


def test_the_egress_ca_key_stays_on_the_host(sandboxes):
    """The CA key is sealed in the store (never plaintext in the database file) and SoulBox puts only the certificate
    into a sandbox. (The runtime's `header_rules_inject_secrets_over_http_and_https` scans a sandbox's whole tree
    for the key itself, which only the runtime test holds.)"""
    for name in ("soulbox.db", "soulbox.db-wal"):
        path = os.path.join(DATA_DIR, name)
        if os.path.exists(path):
            assert b"PRIVATE KEY" not in open(path, "rb").read(), f"{path} holds a plaintext private key"
    sbx = sandboxes.create()
    cert = root_run(sbx, "cat /usr/local/share/ca-certificates/soulbox-egress.crt").stdout
    assert "BEGIN CERTIFICATE" in cert, f"the control failed: no egress CA certificate in the sandbox: {cert}"
    found = root_run(
        sbx,
        "grep -rlsF 'PRIVATE KEY' /usr/local/share /etc/ssl/certs /etc/pki /.soulbox 2>/dev/null; "
        "grep -lsF 'PRIVATE KEY' /proc/[0-9]*/environ; true",
    ).stdout
    assert not found.strip(), f"a private key where SoulBox writes: {found}"
