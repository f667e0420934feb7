"""Templates (issue 5) through the official SDK's `Template` builder and raw HTTP: build from the local `base`
template with RUN/ENV/COPY steps, create a sandbox from the result, the step cache, a failing step, the live NDJSON
log stream, aliases and delete. Every template a test builds is deleted at teardown."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import List

import httpx
import pytest

from e2b import Template
from e2b.exceptions import BuildException

from conftest import API_KEY, API_URL, RUN_ID, Sandboxes

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def names(api):
    made: List[str] = []

    def make(kind: str) -> str:
        n = f"e2e-{kind}-{RUN_ID}-{uuid.uuid4().hex[:6]}".replace("+", "-")
        made.append(n)
        return n

    yield make
    for n in made:
        api.delete(f"/templates/{n}")


def build(tpl, name: str, **kw):
    logs: List[str] = []
    started = time.monotonic()
    info = Template.build(tpl, name, on_build_logs=lambda e: logs.append(e.message), **kw)
    return info, logs, time.monotonic() - started


def recipe(ctx, marker: str = "built"):
    return (
        Template(file_context_path=str(ctx))
        .from_template("base")
        .run_cmd(f"echo {marker} > /home/user/marker && echo run-output-line")
        .set_envs({"TPL_VAR": "from-template"})
        .copy("app/", "/home/user/app/")
        .run_cmd("cat /home/user/app/hello.txt && echo TPL_VAR=$TPL_VAR")
    )


@pytest.fixture
def ctx(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.txt").write_text("hello from the context\n")
    return tmp_path


def test_build_then_create_a_sandbox_from_it(ctx, names, sandboxes: Sandboxes, api):
    name = names("basic")
    info, logs, _ = build(recipe(ctx), name, skip_cache=True)
    assert info.template_id == name
    text = "\n".join(logs)
    assert "run-output-line" in text and "hello from the context" in text and "TPL_VAR=from-template" in text, text
    assert Template.exists(name)
    sbx = sandboxes.create(template=name)
    assert sbx.files.read("/home/user/marker") == "built\n"
    assert sbx.files.read("/home/user/app/hello.txt") == "hello from the context\n"
    # `find -printf`, not `stat`: coreutils' statx call fails under Debian 12's gVisor (README, runsc).
    r = sbx.commands.run("echo $TPL_VAR; whoami; pwd; find /home/user/app/hello.txt -printf %u:%g")
    assert r.stdout.split() == ["from-template", "user", "/home/user", "user:user"], r.stdout


def test_rebuild_is_served_from_the_cache_and_a_changed_step_reruns_alone(ctx, names):
    first, second, third = names("cache-a"), names("cache-b"), names("cache-c")
    _, logs1, t1 = build(recipe(ctx, marker="cache-" + RUN_ID), first)
    _, logs2, t2 = build(recipe(ctx, marker="cache-" + RUN_ID), second)
    cached = [l for l in logs2 if l.startswith("CACHED ")]
    assert len(cached) == 3, logs2  # RUN, COPY, RUN (ENV is metadata only)
    assert "run-output-line" not in logs2, "a cached step does not run (its output would be a line of its own)"
    # change only the last step: the first three are cached, the last one runs
    tpl3 = recipe(ctx, marker="cache-" + RUN_ID).run_cmd("echo only-this-step-ran")
    _, logs3, _ = build(tpl3, third)
    assert sum(l.startswith("CACHED ") for l in logs3) == 3, logs3
    assert "only-this-step-ran" in logs3 and "run-output-line" not in logs3, logs3
    print(f"cold {t1:.2f}s, cached {t2:.2f}s")


def test_a_failing_run_fails_the_build_with_its_step(names, api):
    name = names("fail")
    tpl = Template().from_template("base").run_cmd("echo fine").run_cmd("echo about-to-fail && exit 3")
    with pytest.raises(BuildException) as e:
        build(tpl, name)
    msg = str(e.value)
    assert "step 2 failed" in msg and "code 3" in msg and "about-to-fail" in msg, msg
    assert not Template.exists(name), "a failed build registers no template"
    # the failed step poisoned no cache: the same recipe runs (and fails) again, its good step comes from the cache
    logs: List[str] = []
    with pytest.raises(BuildException):
        Template.build(tpl, name, on_build_logs=lambda e: logs.append(e.message))
    assert any(l.startswith("CACHED [1/2]") for l in logs) and "about-to-fail" in logs, logs
    fixed = Template().from_template("base").run_cmd("echo fine").run_cmd("echo fixed-now")
    _, logs, _ = build(fixed, name, skip_cache=True)
    assert "fixed-now" in logs and Template.exists(name)


def test_an_unreachable_registry_fails_the_base_step_clearly_and_e2bdev_base_maps_to_base(names):
    # Loopback port 9 (discard): nothing listens, so the pull is refused without any traffic leaving the host.
    with pytest.raises(BuildException) as e:
        build(Template().from_image("127.0.0.1:9/some/image:1").run_cmd("true"), names("img"))
    assert "127.0.0.1:9/some/image:1" in str(e.value)
    _, logs, _ = build(Template().from_base_image().run_cmd("echo on-e2bdev-base"), names("e2bbase"), skip_cache=True)
    assert "on-e2bdev-base" in logs


def test_live_log_stream_delivers_lines_while_the_build_runs(names, api):
    name = names("stream")
    tpl = Template().from_template("base").run_cmd(f"echo tick-1-{RUN_ID}; sleep 2; echo tick-2").skip_cache()
    info = Template.build_in_background(tpl, name)
    seen = []
    status_at_first_tick = None
    with httpx.Client(base_url=API_URL, headers={"X-API-Key": API_KEY}, timeout=120, trust_env=False) as c:
        with c.stream("GET", f"/templates/{info.template_id}/builds/{info.build_id}/logs/stream") as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("application/x-ndjson")
            for line in r.iter_lines():
                if not line:
                    continue
                obj = json.loads(line)
                seen.append(obj)
                if "tick-1" in obj.get("message", "") and status_at_first_tick is None:
                    st = api.get(f"/templates/{info.template_id}/builds/{info.build_id}/status").json()
                    status_at_first_tick = st["status"]
    assert seen[-1] == {"status": "ready"}, seen[-3:]
    msgs = [o.get("message", "") for o in seen]
    assert any(m == "tick-2" for m in msgs), msgs
    assert status_at_first_tick == "building", "the first line arrived while the build was still running"
    assert all({"timestamp", "level", "message"} <= set(o) for o in seen[:-1])
    # the status endpoint pages the same entries
    page = api.get(f"/templates/{name}/builds/{info.build_id}/status", params={"logsOffset": 0, "limit": 2}).json()
    assert page["status"] == "ready" and len(page["logEntries"]) == 2 and page["logs"]


def test_aliases_and_delete(names, api):
    name = names("del")
    build(Template().from_template("base").run_cmd("true"), name)
    r = api.get(f"/templates/aliases/{name}")
    assert r.status_code == 200 and r.json()["templateID"] == name
    assert name in [t["templateID"] for t in api.get("/templates").json()]
    assert api.delete(f"/templates/{name}").status_code == 204
    assert api.get(f"/templates/aliases/{name}").status_code == 404
    assert api.delete(f"/templates/{name}").status_code == 404
    assert not Template.exists(name)


def test_start_command_runs_and_create_waits_for_the_ready_command(names, sandboxes: Sandboxes):
    from e2b import wait_for_file

    name = names("start")
    tpl = (
        Template()
        .from_template("base")
        .run_cmd("true")
        .set_start_cmd("sleep 1; echo started > /tmp/started; exec sleep infinity", wait_for_file("/tmp/started"))
    )
    build(tpl, name)
    t0 = time.monotonic()
    sbx = sandboxes.create(template=name)
    assert time.monotonic() - t0 >= 0.9, "create waited for the ready command"
    assert sbx.files.read("/tmp/started") == "started\n"
    assert "sleep infinity" in sbx.commands.run("ps -eo args").stdout
