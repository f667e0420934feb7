"""Assertions on refusals shared by the issue 15 attack files (volumes, keys and tokens): E2B's error shape, and
"another team's resource reads exactly like a missing one"."""

from __future__ import annotations

import httpx


def e2b_error(r: httpx.Response, status: int) -> str:
    """Asserts `r` is E2B's `{"code", "message"}` error with `status`; returns the message."""
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    body = r.json()
    assert body.get("code") == status and isinstance(body.get("message"), str) and body["message"], r.text
    return body["message"]


def same_as_unknown(client: httpx.Client, method: str, url: str, real: str, unknown: str, status: int = 404, **kw):
    """`client`'s answer for `url` naming someone else's `real` resource: exactly the answer for `unknown` (a
    resource that does not exist), an E2B error with `status`, so nothing confirms that `real` exists."""
    r = client.request(method, url, **kw)
    missing = client.request(method, url.replace(real, unknown), **kw)
    message = e2b_error(r, status)
    assert e2b_error(missing, status) == message.replace(real, unknown), (r.text, missing.text)
    return r
