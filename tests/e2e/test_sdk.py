"""The official e2b SDK against `soulbox server`: create/connect/list/get_info/kill/set_timeout/pause/resume/
is_running/get_metrics, commands and files through the proxy, signed URLs, port traffic, kill cutting a stream,
expiry, auto-pause and auto-resume."""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from packaging.version import Version

from e2b import Sandbox
from e2b.exceptions import NotFoundException, TimeoutException
from e2b.sandbox.sandbox_api import SandboxQuery, SandboxState

from conftest import API_URL, DOMAIN, RUN_ID, SANDBOX_URL, SDK_USES_V1, envd_headers, server_log_tail, wait_until

ID_RE = re.compile(r"^[a-z0-9]+$")
NOT_FOUND = {"message": "The sandbox was not found", "code": 502}
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def state_of(api: httpx.Client, sid: str):
    r = api.get(f"/sandboxes/{sid}")
    return r.json()["state"] if r.status_code == 200 else r.status_code


def list_all(query: SandboxQuery, limit=None) -> list:
    paginator = Sandbox.list(query=query, limit=limit)
    items = []
    while True:
        items.extend(paginator.next_items())
        if not paginator.has_next:
            return items


# --- create, info, commands, files ---------------------------------------------------------------------------


def test_create_and_fields(shared: Sandbox):
    assert ID_RE.match(shared.sandbox_id), shared.sandbox_id
    assert Version(str(shared._envd_version)) >= Version("0.6.4")
    assert shared._envd_access_token, "create returned no envdAccessToken (2.45 sends secure=true, v2 always secures)"
    assert shared.is_running()


def test_commands_and_files_through_proxy(shared: Sandbox):
    r = shared.commands.run("echo hello from $(whoami) in $PWD")
    assert r.exit_code == 0
    assert r.stdout.strip() == "hello from user in /home/user"
    shared.files.write("e2e/note.txt", "written by the sdk")
    assert shared.files.read("/home/user/e2e/note.txt") == "written by the sdk"
    names = [e.name for e in shared.files.list("/home/user/e2e")]
    assert "note.txt" in names


def test_command_exit_code_and_env(shared: Sandbox):
    from e2b.sandbox.commands.command_handle import CommandExitException

    with pytest.raises(CommandExitException) as info:
        shared.commands.run("echo out; echo err >&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "out\n" and info.value.stderr == "err\n"
    r = shared.commands.run("echo $E2E_VAR", envs={"E2E_VAR": "v1"})
    assert r.stdout == "v1\n"


def test_get_info_fields(shared: Sandbox):
    info = shared.get_info()
    assert info.sandbox_id == shared.sandbox_id
    assert info.template_id
    assert info.state == SandboxState.RUNNING
    assert info.cpu_count >= 1 and info.memory_mb > 0
    assert info.metadata["e2e-run"] == RUN_ID
    assert info.started_at.tzinfo is not None and info.end_at.tzinfo is not None
    assert info.started_at <= datetime.now(timezone.utc) < info.end_at
    assert Version(info.envd_version) >= Version("0.6.4")


def test_create_with_envs(sandboxes):
    sbx = sandboxes.create(envs={"E2E_SANDBOX_VAR": "from-create"}, timeout=60)
    assert sbx.commands.run("echo $E2E_SANDBOX_VAR").stdout == "from-create\n"


# --- list -----------------------------------------------------------------------------------------------------


def test_list_filters_and_pagination(sandboxes, api):
    tag = uuid.uuid4().hex[:8]
    created = [sandboxes.create(metadata={"listtag": tag, "n": str(i)}, timeout=120) for i in range(3)]
    ids = {s.sandbox_id for s in created}
    q = SandboxQuery(metadata={"listtag": tag})
    assert {s.sandbox_id for s in list_all(q)} == ids
    one = list_all(SandboxQuery(metadata={"listtag": tag, "n": "1"}))
    assert [s.sandbox_id for s in one] == [created[1].sandbox_id]
    assert one[0].metadata["n"] == "1"
    assert list_all(SandboxQuery(metadata={"listtag": "nope-" + tag})) == []

    # pagination: limit=1, next tokens, each sandbox once, newest first by default
    paginator = Sandbox.list(query=q, limit=1)
    pages = []
    while True:
        page = paginator.next_items()
        pages.append([s.sandbox_id for s in page])
        if not paginator.has_next:
            break
        assert paginator.next_token
    assert [len(p) for p in pages] == [1, 1, 1], pages
    assert [p[0] for p in pages] == [s.sandbox_id for s in reversed(created)]
    # raw: X-Next-Token present while more pages, absent on the last
    r = api.get("/v2/sandboxes", params={"metadata": f"listtag={tag}", "limit": 2, "order": "asc"})
    assert [s["sandboxID"] for s in r.json()] == [created[0].sandbox_id, created[1].sandbox_id]
    token = r.headers["x-next-token"]
    r = api.get("/v2/sandboxes", params={"metadata": f"listtag={tag}", "limit": 2, "order": "asc", "nextToken": token})
    assert [s["sandboxID"] for s in r.json()] == [created[2].sandbox_id]
    assert "x-next-token" not in r.headers

    # template filter: by alias; unknown template → empty list, not an error
    assert {s.sandbox_id for s in list_all(SandboxQuery(metadata={"listtag": tag}, template="base"))} == ids
    assert list_all(SandboxQuery(metadata={"listtag": tag}, template="no-such-template-e2e")) == []

    # started_after: inclusive at the startedAt read back
    first_started = created[0].get_info().started_at
    after = list_all(SandboxQuery(metadata={"listtag": tag}, started_after=first_started))
    assert created[0].sandbox_id in {s.sandbox_id for s in after}

    # state filter
    assert created[0].pause() is True
    running = list_all(SandboxQuery(metadata={"listtag": tag}, state=[SandboxState.RUNNING]))
    paused = list_all(SandboxQuery(metadata={"listtag": tag}, state=[SandboxState.PAUSED]))
    assert {s.sandbox_id for s in running} == ids - {created[0].sandbox_id}
    assert [s.sandbox_id for s in paused] == [created[0].sandbox_id]
    assert paused[0].state == SandboxState.PAUSED
    both = list_all(SandboxQuery(metadata={"listtag": tag}, state=[SandboxState.RUNNING, SandboxState.PAUSED]))
    assert {s.sandbox_id for s in both} == ids


# --- kill, is_running, timeouts -------------------------------------------------------------------------------


def test_kill_semantics(sandboxes, api):
    sbx = sandboxes.create(timeout=60)
    sid = sbx.sandbox_id
    assert sbx.kill() is True
    assert Sandbox.kill(sid) is False
    assert api.delete(f"/sandboxes/{sid}").status_code == 404
    assert sbx.is_running() is False
    r = api.get("/health", headers=envd_headers(sid))
    assert r.status_code == 502
    assert r.json() == {"sandboxId": sid, **NOT_FOUND}
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sid)
    assert sid not in {s.sandbox_id for s in list_all(SandboxQuery(metadata={"e2e-run": RUN_ID}))}


def test_set_timeout_expiry(sandboxes, api):
    sbx = sandboxes.create(timeout=300)
    sbx.set_timeout(3)
    info = sbx.get_info()
    assert (info.end_at - datetime.now(timezone.utc)).total_seconds() <= 3.5
    wait_until(lambda: not sbx.is_running(), 60, "the sandbox to expire after set_timeout(3)")
    wait_until(lambda: state_of(api, sbx.sandbox_id) == 404, 30, "the expired sandbox to be gone from the API")
    assert Sandbox.kill(sbx.sandbox_id) is False


def test_connect_on_running_only_extends(sandboxes):
    sbx = sandboxes.create(timeout=120)
    end0 = sbx.get_info().end_at
    same = Sandbox.connect(sbx.sandbox_id, timeout=10)
    assert same.sandbox_id == sbx.sandbox_id
    assert sbx.get_info().end_at >= end0, "connect shortened a running sandbox"
    Sandbox.connect(sbx.sandbox_id, timeout=600)
    end2 = sbx.get_info().end_at
    assert end2 - end0 > timedelta(seconds=400), (end0, end2)
    assert same.commands.run("echo connected").stdout == "connected\n"


def test_connect_unknown_sandbox_raises():
    with pytest.raises(NotFoundException):
        Sandbox.connect("nosuchsandbox0000000", timeout=30)


# --- pause / resume -------------------------------------------------------------------------------------------

COUNTER = "i=0; while true; do echo $i > /tmp/counter; i=$((i+1)); sleep 0.2; done"


def read_counter(sbx: Sandbox) -> int:
    r = sbx.commands.run("cat /tmp/counter 2>/dev/null || true")
    text = r.stdout.strip()
    return int(text) if text.isdigit() else -1


def test_pause_and_resume_keep_files_and_processes(sandboxes, api):
    sbx = sandboxes.create(timeout=120)
    sid = sbx.sandbox_id
    sbx.files.write("/home/user/kept.txt", "before pause")
    handle = sbx.commands.run(COUNTER, background=True)
    pid = handle.pid
    before = wait_until(lambda: (lambda n: n if n >= 10 else 0)(read_counter(sbx)), 30, "the counter to reach 10")

    assert sbx.pause() is True
    assert sbx.pause() is False, "second pause must report already paused (409)"
    assert api.post(f"/sandboxes/{sid}/pause").status_code == 409
    assert sbx.is_running() is False
    r = api.get("/health", headers=envd_headers(sid))
    assert r.status_code == 502 and r.json() == {"sandboxId": sid, **NOT_FOUND}
    assert Sandbox.get_info(sid).state == SandboxState.PAUSED

    resumed = Sandbox.connect(sid, timeout=120)
    assert resumed.sandbox_id == sid
    assert resumed.is_running()
    assert Sandbox.get_info(sid).state == SandboxState.RUNNING
    assert resumed.files.read("/home/user/kept.txt") == "before pause"
    # the same process is alive and keeps counting from where it was (not restarted from 0)
    assert resumed.commands.run(f"kill -0 {pid} && echo alive").stdout == "alive\n"
    after = read_counter(resumed)
    assert after >= before, (before, after)
    wait_until(lambda: read_counter(resumed) > after, 30, "the counter to keep counting after resume")
    assert pid in [p.pid for p in resumed.commands.list()]


def test_auto_pause_on_timeout_then_connect(sandboxes, api):
    sbx = sandboxes.create(timeout=4, lifecycle={"on_timeout": "pause"})
    sid = sbx.sandbox_id
    sbx.files.write("/home/user/auto.txt", "survives auto-pause")
    assert Sandbox.get_info(sid).lifecycle is None or Sandbox.get_info(sid).lifecycle["on_timeout"] == "pause"
    wait_until(lambda: state_of(api, sid) == "paused", 60, "auto-pause after the timeout")
    assert sbx.is_running() is False
    resumed = Sandbox.connect(sid, timeout=60)
    assert Sandbox.get_info(sid).state == SandboxState.RUNNING
    assert resumed.files.read("/home/user/auto.txt") == "survives auto-pause"


def test_auto_resume_on_traffic(sandboxes, api):
    sbx = sandboxes.create(timeout=4, lifecycle={"on_timeout": "pause", "auto_resume": True})
    sid = sbx.sandbox_id
    sbx.files.write("/home/user/wake.txt", "woken by traffic")
    wait_until(lambda: state_of(api, sid) == "paused", 60, "auto-pause after the timeout")
    # plain traffic through the proxy wakes it
    assert sbx.files.read("/home/user/wake.txt") == "woken by traffic"
    assert state_of(api, sid) == "running"


# --- kill cuts streams --------------------------------------------------------------------------------------


def test_kill_while_command_is_running(sandboxes):
    sbx = sandboxes.create(timeout=120)
    outcome = {}

    def run():
        try:
            outcome["result"] = sbx.commands.run("echo started; sleep 60; echo finished", timeout=90)
        except BaseException as e:  # noqa: BLE001 - recorded for the assertion
            outcome["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(
        lambda: any("sleep 60" in " ".join([p.cmd, *p.args]) for p in sbx.commands.list()), 30, "the command to start"
    )
    assert Sandbox.kill(sbx.sandbox_id) is True
    t.join(60)
    assert not t.is_alive(), "the stream was not cut when the sandbox was killed"
    err = outcome.get("error")
    assert isinstance(err, TimeoutException), repr(outcome)
    assert "sandbox was killed" in str(err), str(err)


# --- signed URLs ----------------------------------------------------------------------------------------------


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_signed_urls_without_headers(shared: Sandbox):
    shared.files.write("/home/user/signed.txt", "signed content")
    url = shared.download_url("/home/user/signed.txt")
    assert url.startswith(SANDBOX_URL + "/files?") and "signature=" in url
    with opener.open(url, timeout=30) as r:
        assert r.read() == b"signed content"

    url = shared.download_url("/home/user/signed.txt", use_signature_expiration=120)
    with opener.open(url, timeout=30) as r:
        assert r.read() == b"signed content"

    up = shared.upload_url("/home/user/uploaded.bin")
    body, ctype = multipart("uploaded.bin", b"\x00uploaded\xff")
    req = urllib.request.Request(up, data=body, method="POST", headers={"Content-Type": ctype})
    with opener.open(req, timeout=30) as r:
        assert 200 <= r.status < 300
    assert shared.files.read("/home/user/uploaded.bin", format="bytes") == b"\x00uploaded\xff"

    # expired: envd's exact answer
    url = shared.download_url("/home/user/signed.txt", use_signature_expiration=-10)
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(url, timeout=30)
    assert info.value.code == 401
    assert json.loads(info.value.read()) == {"code": 401, "message": "signature is already expired"}
    # a forged signature routes nowhere
    forged = url.split("&signature=")[0] + "&signature=v1_forged"
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(forged, timeout=30)
    assert info.value.code == 401


# --- port traffic ---------------------------------------------------------------------------------------------


def test_port_traffic_by_headers_and_host(shared: Sandbox, anon):
    shared.files.write("/home/user/www/index.html", "<h1>served from the sandbox</h1>")
    shared.commands.run("python3 -m http.server 8001 --directory /home/user/www", background=True)
    sid = shared.sandbox_id

    def get_by_headers():
        r = anon.get("/index.html", headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "8001"})
        return r if r.status_code == 200 else None

    r = wait_until(get_by_headers, 30, "the sandbox's http.server on port 8001")
    assert r.text == "<h1>served from the sandbox</h1>"
    if DOMAIN:
        r = anon.get("/index.html", headers={"Host": f"8001-{sid}.{DOMAIN}"})
        assert r.status_code == 200, r.text
        assert r.text == "<h1>served from the sandbox</h1>"
    # a port nothing listens on: 502, but not "sandbox was not found"
    r = anon.get("/", headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "8002"})
    assert r.status_code == 502
    assert "was not found" not in r.json()["message"]
    # an unknown sandbox
    r = anon.get("/", headers={"E2b-Sandbox-Id": "nosuchsandbox0000000", "E2b-Sandbox-Port": "8001"})
    assert r.status_code == 502 and r.json()["message"] == "The sandbox was not found"


# --- metrics --------------------------------------------------------------------------------------------------


def test_get_metrics_eventually_has_samples(shared: Sandbox, api):
    metrics = wait_until(lambda: shared.get_metrics(), 60, "metric samples (metrics_interval_s = 1)")
    m = metrics[-1]
    assert m.cpu_count >= 1
    assert m.mem_total > 0 and m.mem_used > 0
    assert 0 <= m.cpu_used_pct
    assert m.timestamp.tzinfo is not None
    r = api.get("/sandboxes/metrics", params={"sandbox_ids": shared.sandbox_id})
    assert r.status_code == 200
    assert shared.sandbox_id in r.json()["sandboxes"]


def test_sdk_path_version():
    """Documents which API paths this SDK uses (asserted server-side by both paths working above)."""
    import e2b.sandbox_sync.sandbox_api as mod

    src = open(mod.__file__).read()
    if SDK_USES_V1:
        assert "post_sandboxes," in src and "post_v2_sandboxes" not in src
    else:
        assert "post_v2_sandboxes" in src
