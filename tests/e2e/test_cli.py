"""The official E2B CLI (npm `@e2b/cli`, pinned in tests/e2e/cli/package-lock.json, unmodified) against SoulBox:
every command a user runs on sandboxes and templates exits 0 with sensible output.

The CLI takes the server from `E2B_API_URL` and the key from `E2B_API_KEY` (the runner's), like the SDKs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid

import pytest

from conftest import API_KEY, API_URL, DOMAIN, SANDBOX_URL, wait_until

CLI_DIR = os.path.join(os.path.dirname(__file__), "cli")
CLI = os.path.join(CLI_DIR, "node_modules", ".bin", "e2b")


@pytest.fixture(scope="session")
def cli():
    """Installs the pinned CLI (`npm ci`) once, then runs `e2b <args>`; returns (exit code, stdout, stderr)."""
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    if not os.path.exists(CLI):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=CLI_DIR, check=True, timeout=600)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/root"),
        "E2B_API_URL": API_URL,
        "E2B_SANDBOX_URL": SANDBOX_URL,
        "E2B_API_KEY": API_KEY,
        "E2B_DOMAIN": DOMAIN,
        "NO_COLOR": "1",
        "NO_PROXY": "*",
        # The CLI's update check would ask the npm registry; tests talk to loopback only.
        "NO_UPDATE_NOTIFIER": "1",
    }

    def run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
        p = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr

    return run


def ok(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 0, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def test_sandbox_commands(cli, sandboxes, api):
    sbx = sandboxes.create(metadata={"cli": "yes"})
    sid = sbx.sandbox_id

    listed = json.loads(ok(cli("sandbox", "list", "--format", "json", "--metadata", "cli=yes")))
    assert [s["sandboxId"] for s in listed] == [sid], listed
    pretty = ok(cli("sandbox", "list"))
    assert sid in pretty and "Invalid Date" not in pretty, pretty

    info = json.loads(ok(cli("sandbox", "info", sid, "--format", "json")))
    assert info["sandboxId"] == sid and info["state"] == "running", info
    assert "Invalid Date" not in ok(cli("sandbox", "info", sid))

    assert ok(cli("sandbox", "exec", sid, "sh", "-c", "echo hello-from-cli; id -un")).split() == ["hello-from-cli", "user"]
    code, _, _ = cli("sandbox", "exec", sid, "sh", "-c", "exit 3")
    assert code == 3, "the remote exit code is the CLI's"

    # Logs: E2B's line shape (the CLI parses each line as JSON and prints its level); JSON output too.
    logs = ok(cli("sandbox", "logs", sid, "--level", "debug"))
    assert f"Logs for sandbox {sid}" in logs and "INFO" in logs, logs
    lines = [json.loads(line) for line in ok(cli("sandbox", "logs", sid, "--format", "json")).splitlines() if line.startswith("{")]
    assert lines and all(line["level"] in ("debug", "info", "warn", "error") for line in lines), lines
    assert any(line["message"].startswith("envd listening") for line in lines), lines

    metrics = ok(cli("sandbox", "metrics", sid))
    assert f"Metrics for sandbox {sid}" in metrics, metrics

    assert f"Sandbox {sid} has been paused" in ok(cli("sandbox", "pause", sid))
    assert api.get(f"/sandboxes/{sid}").json()["state"] == "paused"
    assert f"Sandbox {sid} has been resumed" in ok(cli("sandbox", "resume", sid))
    assert api.get(f"/sandboxes/{sid}").json()["state"] == "running"

    ok(cli("sandbox", "kill", sid))
    wait_until(lambda: api.get(f"/sandboxes/{sid}").status_code == 404, 30, "the killed sandbox to be gone")


def test_sandbox_snapshot_commands(cli, sandboxes, api):
    sbx = sandboxes.create()
    name = f"cli-snap-{uuid.uuid4().hex[:6]}"
    try:
        created = ok(cli("sandbox", "snapshot", "create", sbx.sandbox_id, "--name", name, timeout=300))
        assert "Created snapshot" in created, created
        listed = ok(cli("sandbox", "snapshot", "list", sbx.sandbox_id))
        assert name in listed, listed
    finally:
        for snap in api.get("/snapshots", params={"sandboxID": sbx.sandbox_id}).json():
            api.delete(f"/templates/{snap['snapshotID'].replace(':', '%3A')}")


def test_js_sdk_api_client_v2_logs_and_team_metrics(cli, sandboxes, api):
    """The npm SDK the CLI pins (its typed `ApiClient`) on the v2 logs filters and team metrics."""
    sandboxes.create()
    sid = sandboxes.create().sandbox_id
    team_id = api.get("/teams").json()[0]["teamID"]
    env = {"PATH": os.environ["PATH"], "E2B_API_URL": API_URL, "E2B_API_KEY": API_KEY, "E2B_DOMAIN": DOMAIN, "NO_PROXY": "*"}
    wait_until(lambda: api.get(f"/v2/sandboxes/{sid}/logs").json()["logs"], 30, "the sandbox's first log line")
    p = subprocess.run(["node", "rest_api.mjs", sid, team_id], cwd=CLI_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    messages = lambda name: [e["message"] for e in out[name]["data"]["logs"]]  # noqa: E731
    assert out["all"]["status"] == 200 and messages("all"), out["all"]
    assert any(m.startswith("envd listening") for m in messages("info")), out["info"]
    assert not any(m.startswith("envd listening") for m in messages("error")), out["error"]
    assert messages("backward") == messages("all")[-1:], out["backward"]
    assert messages("future") == [], out["future"]
    assert out["badDirection"]["status"] == 400 and out["badDirection"]["data"]["code"] == 400, out["badDirection"]
    assert out["metrics"]["status"] == 200 and out["metrics"]["data"][-1]["concurrentSandboxes"] >= 2, out["metrics"]
    assert out["max"]["status"] == 200 and out["max"]["data"]["value"] >= 2, out["max"]
    assert out["otherTeam"]["status"] == 403, out["otherTeam"]


def test_template_list_shows_real_dates(cli):
    templates = json.loads(ok(cli("template", "list", "--format", "json")))
    base = next(t for t in templates if t["templateID"] == "base")
    for field in ("createdAt", "updatedAt"):
        assert base[field], base
    assert base["diskSizeMB"] > 0, "the real disk limit"
    pretty = ok(cli("template", "list"))
    assert "base" in pretty and "Invalid Date" not in pretty, pretty


def test_template_create_from_dockerfile_and_delete(cli, tmp_path, api):
    name = f"cli-tpl-{uuid.uuid4().hex[:6]}"
    (tmp_path / "e2b.Dockerfile").write_text("FROM e2bdev/base\nRUN echo built-by-cli > /tmp/cli.txt\n")
    try:
        out = ok(cli("template", "create", name, "--path", str(tmp_path), "--cpu-count", "1", "--memory-mb", "512", timeout=900))
        assert "finished" in out, out
        listed = ok(cli("template", "list"))
        assert name in listed, listed
        deleted = ok(cli("template", "delete", name, "--yes"))
        assert name in deleted, deleted
        assert name not in ok(cli("template", "list"))
    finally:
        api.delete(f"/templates/{name}")
