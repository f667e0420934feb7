"""Issue 16, attack: the code interpreter's port is reachable by anyone who knows the sandbox id (E2B's rule for
sandbox ports), so its `/execute` must demand the sandbox's access token, as E2B's own server does. The official
SDK sends it (`X-Access-Token`); a raw request without it, or with a wrong one, runs nothing. run.sh builds
`code-interpreter-v1` before the tests."""

from __future__ import annotations

import os

import httpx
import pytest
from e2b_code_interpreter import Sandbox as CodeInterpreter

from conftest import RUN_ID


@pytest.fixture(scope="module")
def secured(api):
    sbx = CodeInterpreter.create(timeout=300, secure=True, metadata={"e2e-run": RUN_ID, "role": "ci-access"})
    try:
        yield sbx
    finally:
        api.delete(f"/sandboxes/{sbx.sandbox_id}")


def raw_execute(sbx, code: str, token: str | None) -> httpx.Response:
    headers = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49999"}
    if token is not None:
        headers["X-Access-Token"] = token
    return httpx.post(f"{sbx._jupyter_url}/execute", json={"code": code}, headers=headers, timeout=60)


def test_execute_runs_only_for_the_sandboxs_access_token(secured):
    assert secured.run_code("1+1").text == "2", "the SDK sends the token"
    marker = f"/tmp/pwned-{os.getpid()}"
    for token in (None, "", "not-the-token"):
        r = raw_execute(secured, f"open({marker!r}, 'w').write('x')", token)
        assert r.status_code == 401, (token, r.status_code, r.text)
    assert not secured.files.exists(marker), "code ran without the access token"
    # The token the SDK holds opens it, over raw HTTP too.
    r = raw_execute(secured, "print('with the token')", secured._envd_access_token)
    assert r.status_code == 200 and "with the token" in r.text, r.text


def test_contexts_take_no_token_but_nothing_runs_in_them_without_it(secured):
    """E2B's SDKs send X-Access-Token with /execute only (Python 2.11, JS 2.8: not with /contexts), so the service
    cannot demand it on /contexts without breaking their context calls: a context can be made, listed and removed
    without the token, but code runs in it only with the token."""
    ctx = secured.create_code_context()  # the SDK sends no token here
    try:
        assert ctx.id in [c.id for c in secured.list_code_contexts()]
        headers = {"E2b-Sandbox-Id": secured.sandbox_id, "E2b-Sandbox-Port": "49999"}
        marker = f"/tmp/pwned-ctx-{os.getpid()}"
        r = httpx.post(
            f"{secured._jupyter_url}/execute",
            json={"code": f"open({marker!r}, 'w').write('x')", "context_id": ctx.id},
            headers=headers,
            timeout=60,
        )
        assert r.status_code == 401, (r.status_code, r.text)
        assert not secured.files.exists(marker), "code ran in a context without the access token"
        assert secured.run_code("6 * 7", context=ctx).text == "42"
    finally:
        secured.remove_code_context(ctx)
