"""Per-template runtime (issue 13): a template built with SoulBox's `runtime` option (`POST /v3/templates`
`{"runtime": "runsc"}`) runs its build steps and its sandboxes on gVisor, while the server's other templates keep
the server's runtime. Created and used through the official SDK; the option itself is raw HTTP (the SDK has no
field for it). Needs runsc installed (CI installs it; a runc server offers it by default)."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest
from e2b import Sandbox

from conftest import RUN_ID, Sandboxes

pytestmark = pytest.mark.timeout(300)


def on_gvisor(sbx) -> bool:
    out = sbx.commands.run("dmesg 2>&1 | head -3", user="root").stdout
    return "gVisor" in out


def build_with_runtime(api, name: str, runtime: str, run: str) -> None:
    r = api.post("/v3/templates", json={"name": name, "runtime": runtime})
    assert r.status_code == 202, r.text
    build_id = r.json()["buildID"]
    recipe = {"fromTemplate": "base", "force": True, "steps": [{"type": "RUN", "args": [run, "root"], "force": True}]}
    r = api.post(f"/v2/templates/{name}/builds/{build_id}", json=recipe)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        st = api.get(f"/templates/{name}/builds/{build_id}/status").json()
        if st["status"] in ("ready", "error"):
            assert st["status"] == "ready", st
            return
        time.sleep(0.5)
    pytest.fail(f"build {build_id} did not finish")


def test_a_template_that_asks_for_runsc_runs_on_gvisor_beside_the_servers_runtime(api, sandboxes: Sandboxes):
    name = f"e2e-gvisor-{RUN_ID}-{uuid.uuid4().hex[:6]}".replace("+", "-").replace(".", "-")
    try:
        # The build step itself runs on gVisor: what it records is gVisor's kernel.
        build_with_runtime(api, name, "runsc", "dmesg 2>&1 | head -3 > /built-on")
        sbx = sandboxes.create(template=name)
        assert "gVisor" in sbx.files.read("/built-on"), "the build step did not run on gVisor"
        assert on_gvisor(sbx), "the template's sandbox is not on gVisor"
        assert sbx.commands.run("echo hi").stdout == "hi\n"
        # Pause and resume keep it on its runtime; the SDK drives them as for any sandbox.
        sbx.files.write("/home/user/kept", "kept")
        sbx.pause()
        sbx = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert sbx.files.read("/home/user/kept") == "kept" and on_gvisor(sbx)
        # The server's own templates keep its runtime: gVisor only on a runsc server.
        plain = sandboxes.create()
        assert on_gvisor(plain) == (os.environ.get("SOULBOX_RUNTIME", "runc") == "runsc")
    finally:
        api.delete(f"/templates/{name}")


def test_an_unknown_runtime_is_refused_before_anything_is_made(api):
    name = f"e2e-badrt-{uuid.uuid4().hex[:6]}"
    r = api.post("/v3/templates", json={"name": name, "runtime": "kata"})
    assert r.status_code == 400, r.text
    assert "unknown runtime 'kata'" in r.json()["message"], r.text
    assert api.get(f"/templates/aliases/{name}").status_code == 404


@pytest.mark.skipif(os.environ.get("SOULBOX_RUNTIME", "runc") != "runsc", reason="the runsc server's check")
def test_a_team_cannot_move_its_template_off_a_runsc_server_to_runc(api):
    """Attack: on a gVisor server, asking for `runc` would take a caller's code to the host kernel. No runc runs
    beside a runsc default, so the build fails at its first sandbox and registers nothing."""
    name = f"e2e-downgrade-{uuid.uuid4().hex[:6]}"
    try:
        r = api.post("/v3/templates", json={"name": name, "runtime": "runc"})
        assert r.status_code == 202, r.text
        build_id = r.json()["buildID"]
        recipe = {"fromTemplate": "base", "force": True, "steps": [{"type": "RUN", "args": ["true", "root"]}]}
        assert api.post(f"/v2/templates/{name}/builds/{build_id}", json=recipe).status_code == 202
        deadline = time.monotonic() + 120
        st = {}
        while time.monotonic() < deadline:
            st = api.get(f"/templates/{name}/builds/{build_id}/status").json()
            if st["status"] in ("ready", "error"):
                break
            time.sleep(0.5)
        assert st.get("status") == "error", st
        assert "not available on this node" in json.dumps(st), st
        assert api.get(f"/templates/aliases/{name}").status_code == 404
    finally:
        api.delete(f"/templates/{name}")
