"""Header rules and secrets (issue 14), attacked: team B's sandbox naming team A's secret in its rules gets a 502 and
the destination never sees the value (team A's own sandbox, with the same rules, does: the control); the
installation's egress CA key is readable only by its owner on the host and no byte of it is anywhere in a sandbox
(the certificate is, as it must be: the control that the scan finds things).

Network rule: the sandboxes talk only to a fake outside world this file builds (a netns on 203.0.113.112/30) and to
their node; rules are keyed by that address, so no name is ever resolved.
"""

from __future__ import annotations

import os
import stat
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
    key_path = os.path.join(DATA_DIR, "egress-ca.key")
    mode = stat.S_IMODE(os.stat(key_path).st_mode)
    assert mode == 0o600, f"{key_path} is mode {oct(mode)}"
    key_lines = [l for l in open(key_path).read().splitlines() if l and not l.startswith("-----")]
    cert_lines = [l for l in open(os.path.join(DATA_DIR, "egress-ca.crt")).read().splitlines() if not l.startswith("-----")]
    sbx = sandboxes.create()

    def scan(*needles: str) -> list:
        patterns = " ".join(f"-e '{n}'" for n in needles)
        # (Not /proc/*/cmdline: grep's own holds the patterns.)
        out = root_run(
            sbx,
            f"grep -rlsF {patterns} / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; "
            f"grep -lsF {patterns} /proc/[0-9]*/environ; true",
            timeout=300,
        ).stdout
        return [p for p in out.splitlines() if p.strip()]

    assert "/usr/local/share/soulbox/ca-bundle.pem" in scan(cert_lines[1]), "the control failed: the scan finds nothing"
    found = scan(*key_lines)
    assert not found, f"a line of the egress CA key is in the sandbox: {found}"
