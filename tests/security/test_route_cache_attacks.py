"""The proxy's route cache (crates/soulbox-server/src/route_cache.rs) attacked: a running sandbox's route is kept
in memory so that a proxied request costs no store query. Once a route is warm:

- a pause stops its traffic at once: every request from the moment the pause answers is E2B's 502 "not found",
  and no request answered that way reached the sandbox (its service logs every request it gets; read after a
  resume) — also requests sent while the pause runs;
- a kill the same, for good;
- a private sandbox (`allowPublicTraffic: false`) still wants its traffic access token on every request: one
  without it (or with another sandbox's) right after requests with it, on the same connection, is 403 and never
  reaches the service;
- a warm route serves only the sandbox it was made for: requests naming two sandboxes alternately on one
  connection each reach the sandbox they name, and a killed one's id reaches nothing.

Routes are fresh for one second (route_cache::MAX_AGE): each attack follows requests that warmed the route within
that second. A server of this module's own (ownserver.py), so nothing else's traffic refreshes or evicts routes.
"""

from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest
from e2b import Sandbox

from conftest import ENVD_PORT, RUN_ID, wait_until
from ownserver import module_server, sdk_opts

pytestmark = pytest.mark.timeout(300)

PORT = 8040
TOKEN_HEADER = "e2b-traffic-access-token"
NOT_FOUND = "The sandbox was not found"
# Answers `<hostname (the sandbox id)> <path>` and appends the path to /tmp/seen.log before answering.
SERVICE = f"""
import http.server, socket
ME = socket.gethostname()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        with open("/tmp/seen.log", "a") as f:
            f.write(self.path + "\\n")
        body = f"{{ME}} {{self.path}}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", {PORT}), H).serve_forever()
"""


@pytest.fixture(scope="module")
def server():
    yield from module_server("hg-routes")


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}, timeout=60, trust_env=False) as c:
        yield c


@pytest.fixture
def made(api):
    ids: list[str] = []
    yield ids
    for sid in ids:
        api.delete(f"/sandboxes/{sid}")


def serving(server, made, **kwargs) -> Sandbox:
    sbx = Sandbox.create(timeout=300, metadata={"sec-run": RUN_ID}, **sdk_opts(server), **kwargs)
    made.append(sbx.sandbox_id)
    sbx.files.write("/tmp/service.py", SERVICE)
    sbx.commands.run("python3 /tmp/service.py", background=True)
    # Waited for from inside: the proxy has never routed to the sandbox when a test starts.
    wait = f"for i in $(seq 100); do curl -sf http://127.0.0.1:{PORT}/ready && exit 0; sleep 0.1; done; exit 1"
    sbx.commands.run(wait)
    return sbx


def client(server) -> httpx.Client:
    """One keep-alive connection to the proxy (a pool of one)."""
    return httpx.Client(base_url=server.url, timeout=5, trust_env=False, limits=httpx.Limits(max_connections=1))


def route(sandbox_id: str, port: int = PORT) -> dict:
    return {"E2b-Sandbox-Id": sandbox_id, "E2b-Sandbox-Port": str(port)}


def by_host(sandbox_id: str, port: int = PORT) -> dict:
    # The module's server has no domain: any `<port>-<id>.<host>` routes.
    return {"Host": f"{port}-{sandbox_id}.localhost"}


def assert_not_found(r: httpx.Response, sandbox_id: str, what: str):
    assert r.status_code == 502, f"{what}: {r.status_code} {r.text}"
    assert r.json() == {"sandboxId": sandbox_id, "message": NOT_FOUND, "code": 502}, f"{what}: {r.text}"


def seen(sbx: Sandbox) -> list[str]:
    return sbx.files.read("/tmp/seen.log").split()


class Hammer:
    """Requests for one sandbox in a loop on its own connection, each to a unique path, until stopped: what each got
    (status, JSON body or None, or the exception's name) and when it was sent."""

    def __init__(self, server, sandbox_id: str, mark: str):
        self.server, self.id, self.mark = server, sandbox_id, mark
        self.results: list[tuple[float, str, object]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        with client(self.server) as c:
            n = 0
            while not self.stop.is_set():
                path = f"/{self.mark}-{n}"
                n += 1
                sent = time.monotonic()
                try:
                    r = c.get(path, headers=route(self.id))
                    body = r.json() if r.status_code == 502 else None
                    self.results.append((sent, path, (r.status_code, body)))
                except httpx.HTTPError as e:
                    self.results.append((sent, path, type(e).__name__))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def stop_under_traffic(server, api, sbx: Sandbox, how: str) -> tuple[list, float]:
    """Warms the sandbox's route, then pauses or kills it while requests run; returns the requests' results and
    when the stop answered."""
    mark = f"{how}-{uuid.uuid4().hex[:8]}"
    with client(server) as c:
        time.sleep(1.1)  # the route below is read now: fresh for the whole attack
        for i in range(3):
            assert c.get(f"/warm-{i}", headers=route(sbx.sandbox_id)).status_code == 200
    with Hammer(server, sbx.sandbox_id, mark) as hammer:
        time.sleep(0.2)
        if how == "pause":
            r = api.post(f"/sandboxes/{sbx.sandbox_id}/pause", json={})
        else:
            r = api.delete(f"/sandboxes/{sbx.sandbox_id}")
        assert r.status_code == 204, r.text
        stopped = time.monotonic()
        # (a request in flight when the sandbox froze waits for the client's timeout: give the loop time)
        wait_until(lambda: sum(x[0] >= stopped for x in hammer.results) >= 5, 30, f"requests after the {how}")
    assert len(hammer.results) > 5, hammer.results
    after = [x for x in hammer.results if x[0] >= stopped]
    for sent, path, got in after:
        assert isinstance(got, tuple) and got[0] == 502, f"{path} after the {how}: {got}"
        assert got[1] == {"sandboxId": sbx.sandbox_id, "message": NOT_FOUND, "code": 502}, f"{path}: {got}"
    return hammer.results, stopped


def test_a_paused_sandboxs_warm_route_passes_nothing(server, api, made):
    sbx = serving(server, made)
    results, _ = stop_under_traffic(server, api, sbx, "pause")
    with client(server) as c:
        for headers, port in ((route(sbx.sandbox_id), PORT), (by_host(sbx.sandbox_id), PORT),
                              (route(sbx.sandbox_id, ENVD_PORT), ENVD_PORT)):
            assert_not_found(c.get("/after", headers=headers), sbx.sandbox_id, f"port {port} while paused")
    r = api.post(f"/sandboxes/{sbx.sandbox_id}/resume", json={"timeout": 300})
    assert r.status_code in (200, 201), r.text
    got = set(seen(sbx))
    # What the proxy answered itself (502) never reached the sandbox. (A request that was on its way when the
    # sandbox froze is answered by the service after the resume, too late for the client: neither counts.)
    for _, path, answer in results:
        if isinstance(answer, tuple) and answer[0] == 200:
            assert path in got, f"{path} was answered 200 but the service has no record of it"
        elif isinstance(answer, tuple):
            assert path not in got, f"{path} got {answer} but reached the paused sandbox"
    assert "/after" not in got
    with client(server) as c:
        assert c.get("/back", headers=route(sbx.sandbox_id)).text == f"{sbx.sandbox_id} /back"


def test_a_killed_sandboxs_warm_route_passes_nothing(server, api, made):
    sbx = serving(server, made)
    stop_under_traffic(server, api, sbx, "kill")
    made.remove(sbx.sandbox_id)
    # Later too, and by every route; a new sandbox (which may get the old address) is never reached by the old id.
    other = serving(server, made)
    with client(server) as c:
        for headers, port in ((route(sbx.sandbox_id), PORT), (by_host(sbx.sandbox_id), PORT),
                              (route(sbx.sandbox_id, ENVD_PORT), ENVD_PORT)):
            assert_not_found(c.get("/after-kill", headers=headers), sbx.sandbox_id, f"port {port} after the kill")
    assert "/after-kill" not in seen(other)


def test_a_warm_private_route_still_wants_the_token_on_every_request(server, made):
    sbx = serving(server, made, network={"allow_public_traffic": False})
    other = serving(server, made, network={"allow_public_traffic": False})
    token, other_token = sbx.traffic_access_token, other.traffic_access_token
    assert token and other_token and token != other_token
    refused = []
    with client(server) as c:
        for round_ in range(3):
            # Each refused request right after accepted ones on the same connection: the route is warm.
            for i in range(2):
                r = c.get(f"/ok-{round_}-{i}", headers=route(sbx.sandbox_id) | {TOKEN_HEADER: token})
                assert r.status_code == 200 and r.text == f"{sbx.sandbox_id} /ok-{round_}-{i}", r.text
            for name, headers in (
                ("none", route(sbx.sandbox_id)),
                ("empty", route(sbx.sandbox_id) | {TOKEN_HEADER: ""}),
                ("other", route(sbx.sandbox_id) | {TOKEN_HEADER: other_token}),
                ("host", by_host(sbx.sandbox_id)),
            ):
                path = f"/no-{round_}-{name}"
                r = c.get(path, headers=headers)
                assert r.status_code == 403 and r.json()["code"] == 403, f"{path}: {r.status_code} {r.text}"
                refused.append(path)
    got = seen(sbx)
    assert [p for p in got if p.startswith("/ok-")] == [f"/ok-{r}-{i}" for r in range(3) for i in range(2)], got
    assert not set(refused) & set(got), f"refused requests reached the service: {set(refused) & set(got)}"


def test_a_warm_route_serves_only_the_sandbox_it_names(server, api, made):
    a, b = serving(server, made), serving(server, made)
    with client(server) as c:
        # b's first request comes while only a's route is known.
        assert c.get("/first", headers=route(a.sandbox_id)).text == f"{a.sandbox_id} /first"
        assert c.get("/first", headers=route(b.sandbox_id)).text == f"{b.sandbox_id} /first"
        for i in range(10):
            for sbx in (a, b):
                for how, headers in (("header", route(sbx.sandbox_id)), ("host", by_host(sbx.sandbox_id))):
                    r = c.get(f"/n{i}", headers=headers)
                    assert r.text == f"{sbx.sandbox_id} /n{i}", f"{how} request for {sbx.sandbox_id}: {r.text}"
        assert api.delete(f"/sandboxes/{b.sandbox_id}").status_code == 204
        made.remove(b.sandbox_id)
        for i in range(5):
            assert_not_found(c.get(f"/gone{i}", headers=route(b.sandbox_id)), b.sandbox_id, "killed b")
            assert c.get(f"/still{i}", headers=route(a.sandbox_id)).text == f"{a.sandbox_id} /still{i}"
